/* test_data.c: the sampler: each epoch visits every window exactly once, epochs differ,
 * and the order is a pure function of (seed, sample index). Blends: exact proportions
 * over any range, and each corpus's samples numbered 0, 1, 2, ... in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/util.h"
#include "files/data.h"

static void every_window_once_per_epoch(void **state) {
    (void)state;
    const int64_t sizes[] = {1, 2, 3, 7, 64, 1000, 4701, 65537};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int64_t n = sizes[k];
        char *seen = xcalloc((size_t)n, 1);
        for (int epoch = 0; epoch < 3; epoch++) {
            memset(seen, 0, (size_t)n);
            for (int64_t j = 0; j < n; j++) {
                int64_t w = sampler_window(42, n, epoch * n + j);
                assert_true(w >= 0 && w < n);
                assert_int_equal(seen[w], 0);
                seen[w] = 1;
            }
        }
        free(seen);
    }
}

static void epochs_and_seeds_differ_and_repeat(void **state) {
    (void)state;
    const int64_t n = 1000;
    int same_epoch = 0, same_seed = 0;
    for (int64_t j = 0; j < n; j++) {
        same_epoch += sampler_window(7, n, j) == sampler_window(7, n, n + j);
        same_seed += sampler_window(7, n, j) == sampler_window(8, n, j);
        assert_int_equal(sampler_window(7, n, j), sampler_window(7, n, j));
    }
    /* independent permutations agree on about one position in n */
    assert_true(same_epoch < 20 && same_seed < 20);
    assert_true(sampler_dropout_key(7, 5) != sampler_dropout_key(7, 6));
    assert_true(sampler_dropout_key(7, 5) == sampler_dropout_key(7, 5));
}

static void windows_count(void **state) {
    (void)state;
    assert_int_equal(windows_in(0, 64), 0);
    assert_int_equal(windows_in(64, 64), 0);  /* a window needs n_ctx + 1 tokens */
    assert_int_equal(windows_in(65, 64), 1);
    assert_int_equal(windows_in(129, 64), 2);
    assert_int_equal(windows_in(128, 64), 1);
}

/* Over samples [from, from + N): corpus c gets exactly N w_c when that is a whole number
 * (weights of few decimals), else less than one away; and its sample indices continue
 * its own count without gaps. */
static void check_blend(const double *w, int n, int64_t from, int64_t N) {
    uint64_t q[BLEND_MAX];
    blend_quotas(w, n, q);
    uint64_t total = 0;
    for (int c = 0; c < n; c++) total += q[c];
    assert_true(total == BLEND_QUOTA);
    int64_t count[BLEND_MAX] = {0}, next[BLEND_MAX];
    for (int c = 0; c < n; c++) { /* the index corpus c is at when the range starts */
        next[c] = -1;
        for (int64_t i = from; i < from + N && next[c] < 0; i++) {
            int k;
            int64_t j;
            blend_pick(q, n, i, &k, &j);
            if (k == c) next[c] = j;
        }
    }
    for (int64_t i = from; i < from + N; i++) {
        int c;
        int64_t j;
        blend_pick(q, n, i, &c, &j);
        assert_true(c >= 0 && c < n);
        assert_true(j == next[c]); /* in order, none skipped, none twice */
        next[c]++, count[c]++;
    }
    for (int c = 0; c < n; c++) {
        double want = (double)N * w[c], err = (double)count[c] - want;
        if (fabs(want - round(want)) < 1e-9) assert_int_equal(count[c], (int64_t)round(want));
        else assert_true(fabs(err) < 1.0);
    }
}

static void blend_proportions_exact(void **state) {
    (void)state;
    const double two[] = {0.7, 0.3}, three[] = {0.5, 0.3, 0.2}, thirds[] = {1.0 / 3, 1.0 / 3, 1.0 / 3},
                 skewed[] = {0.001, 0.999}, four[] = {0.1, 0.2, 0.3, 0.4};
    const int64_t starts[] = {0, 12345, (int64_t)1 << 40};
    for (size_t k = 0; k < sizeof starts / sizeof *starts; k++) {
        check_blend(two, 2, starts[k], 10000);
        check_blend(three, 3, starts[k], 10000);
        check_blend(thirds, 3, starts[k], 10000);
        check_blend(skewed, 2, starts[k], 10000);
        check_blend(four, 4, starts[k], 10000);
    }
}

static void one_corpus_is_the_identity(void **state) {
    (void)state;
    const double one[] = {1.0};
    uint64_t q[1];
    blend_quotas(one, 1, q);
    for (int64_t i = 0; i < 1000; i += 7) {
        int c;
        int64_t j;
        blend_pick(q, 1, i, &c, &j);
        assert_int_equal(c, 0);
        assert_int_equal(j, i);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_window_once_per_epoch),
        cmocka_unit_test(epochs_and_seeds_differ_and_repeat),
        cmocka_unit_test(windows_count),
        cmocka_unit_test(blend_proportions_exact),
        cmocka_unit_test(one_corpus_is_the_identity),
    };
    return cmocka_run_group_tests_name("sampler", tests, NULL, NULL);
}
