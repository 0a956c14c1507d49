/* test_data.c: the sampler: each epoch visits every window exactly once, epochs differ,
 * and the order is a pure function of (seed, sample index). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "data.h"
#include "util.h"

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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_window_once_per_epoch),
        cmocka_unit_test(epochs_and_seeds_differ_and_repeat),
        cmocka_unit_test(windows_count),
    };
    return cmocka_run_group_tests_name("sampler", tests, NULL, NULL);
}
