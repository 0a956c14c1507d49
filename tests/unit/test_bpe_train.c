/* test_bpe_train.c: the incremental merge learner against a brute-force recount on
 * random corpora, its tie-break, counting of runs, early stop, progress reports and
 * argument checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/rng.h"
#include "base/util.h"
#include "text/bpe_train.h"

/* Occurrences of (a, b) in t[0 .. n), found left to right without overlap. */
static uint64_t ref_occurrences(const int32_t *t, size_t n, int32_t a, int32_t b) {
    uint64_t k = 0;
    for (size_t i = 0; i + 1 < n;) {
        if (t[i] == a && t[i + 1] == b) {
            k++;
            i += 2;
        } else {
            i++;
        }
    }
    return k;
}

/* The reference learner: each step recounts every adjacent pair of every word over
 * the whole corpus, takes the highest count (smallest ids on ties), stops below 2,
 * and merges left to right. Slow and plainly right. */
static int ref_learn(const BpeWord *words, size_t n_words, int n_merges, int32_t (*merges)[2]) {
    int32_t **t = calloc(n_words, sizeof *t);
    size_t *n = calloc(n_words, sizeof *n);
    for (size_t w = 0; w < n_words; w++) {
        t[w] = malloc(words[w].len * sizeof **t);
        n[w] = words[w].len;
        for (size_t i = 0; i < n[w]; i++) t[w][i] = words[w].bytes[i];
    }
    int done = 0;
    for (; done < n_merges; done++) {
        uint64_t best = 0;
        int32_t ba = INT32_MAX, bb = INT32_MAX;
        for (size_t w = 0; w < n_words; w++)
            for (size_t i = 0; i + 1 < n[w]; i++) {
                int32_t a = t[w][i], b = t[w][i + 1];
                uint64_t count = 0;
                for (size_t v = 0; v < n_words; v++) count += words[v].count * ref_occurrences(t[v], n[v], a, b);
                if (count > best || (count == best && (a < ba || (a == ba && b < bb)))) {
                    best = count;
                    ba = a;
                    bb = b;
                }
            }
        if (best < 2) break;
        merges[done][0] = ba;
        merges[done][1] = bb;
        for (size_t w = 0; w < n_words; w++) {
            size_t o = 0;
            for (size_t i = 0; i < n[w];) {
                if (i + 1 < n[w] && t[w][i] == ba && t[w][i + 1] == bb) {
                    t[w][o++] = 256 + done;
                    i += 2;
                } else {
                    t[w][o++] = t[w][i++];
                }
            }
            n[w] = o;
        }
    }
    for (size_t w = 0; w < n_words; w++) free(t[w]);
    free(t);
    free(n);
    return done;
}

/* Random words over the first n_sym of {a, b, c, 0xff}: mostly short, some runs of
 * one letter (overlapping pairs), a few long ones (windows that span many occurrences
 * and overflow the delta list); counts mostly small so that ties are common, a few 0
 * and a few large. Bytes go to buf, which must hold 400 * n_words. */
static void random_corpus(Rng *r, int n_sym, size_t n_words, uint8_t *buf, BpeWord *words) {
    static const uint8_t sym[4] = {'a', 'b', 'c', 0xff};
    uint8_t *at = buf;
    for (size_t w = 0; w < n_words; w++) {
        uint64_t kind = rng_next(r) % 16;
        size_t len = kind < 12 ? 1 + rng_next(r) % 12 : kind < 15 ? 2 + rng_next(r) % 9 : 100 + rng_next(r) % 300;
        uint8_t run = sym[rng_next(r) % (uint64_t)n_sym];
        for (size_t i = 0; i < len; i++) at[i] = (kind >= 12 && kind < 15) ? run : sym[rng_next(r) % (uint64_t)n_sym];
        uint64_t ck = rng_next(r) % 16;
        words[w] = (BpeWord){at, len, ck == 0 ? 0 : ck == 1 ? 1000 + rng_next(r) % 100000 : 1 + rng_next(r) % 4};
        at += len;
    }
}

static void matches_brute_force(void **state) {
    (void)state;
    enum { MAX_WORDS = 40, MAX_MERGES = 400 };
    uint8_t *buf = malloc(400 * MAX_WORDS);
    BpeWord words[MAX_WORDS];
    int32_t got[MAX_MERGES][2], want[MAX_MERGES][2];
    Rng r;
    rng_seed(&r, 12345);
    int stopped_early = 0;
    for (int trial = 0; trial < 30; trial++) {
        size_t n_words = 3 + rng_next(&r) % (MAX_WORDS - 3);
        int n_sym = 2 + trial % 3, n_merges = trial % 2 ? 50 : MAX_MERGES;
        random_corpus(&r, n_sym, n_words, buf, words);
        int n_want = ref_learn(words, n_words, n_merges, want);
        int n_got = bpe_learn(words, n_words, n_merges, got, NULL, NULL);
        assert_int_equal(n_got, n_want);
        for (int k = 0; k < n_want; k++)
            if (got[k][0] != want[k][0] || got[k][1] != want[k][1])
                fail_msg("trial %d merge %d: got (%d, %d), want (%d, %d)", trial, k, got[k][0],
                         got[k][1], want[k][0], want[k][1]);
        stopped_early += n_want < n_merges;
    }
    assert_true(stopped_early > 0); /* the stopping rule was compared too */
    free(buf);
}

static BpeWord word(const char *s, uint64_t count) {
    return (BpeWord){(const uint8_t *)s, strlen(s), count};
}

static void ties_go_to_smallest_ids(void **state) {
    (void)state;
    int32_t m[8][2];
    /* (c, d), (a, c) and (a, b) all count 5; listed largest first */
    BpeWord w[] = {word("cd", 5), word("ac", 5), word("ab", 5)};
    assert_int_equal(bpe_learn(w, 3, 8, m, NULL, NULL), 3);
    assert_int_equal(m[0][0], 'a');
    assert_int_equal(m[0][1], 'b');
    assert_int_equal(m[1][0], 'a');
    assert_int_equal(m[1][1], 'c');
    assert_int_equal(m[2][0], 'c');
    assert_int_equal(m[2][1], 'd');
    /* a pair whose count fell to a tie keeps a stale, higher heap entry: it must not
     * win. After (x, b) merges, (b, c) falls from 6 to 4, level with (a, a). */
    BpeWord v[] = {word("xbc", 2), word("bc", 4), word("xb", 5), word("aa", 4)};
    assert_int_equal(bpe_learn(v, 4, 8, m, NULL, NULL), 4);
    const int32_t want[4][2] = {{'x', 'b'}, {'a', 'a'}, {'b', 'c'}, {256, 'c'}};
    for (int k = 0; k < 4; k++) {
        assert_int_equal(m[k][0], want[k][0]);
        assert_int_equal(m[k][1], want[k][1]);
    }
}

/* A run of r equal tokens holds floor(r/2) of its pair: aaa once (cannot be merged at
 * count 1), aaaa twice (merged), and the merge goes left to right. */
static void runs_count_without_overlap(void **state) {
    (void)state;
    int32_t m[4][2];
    BpeWord three[] = {word("aaa", 1)};
    assert_int_equal(bpe_learn(three, 1, 4, m, NULL, NULL), 0);
    BpeWord four[] = {word("aaaa", 1)};
    assert_int_equal(bpe_learn(four, 1, 4, m, NULL, NULL), 1); /* then (256, 256) counts 1 */
    assert_int_equal(m[0][0], 'a');
    assert_int_equal(m[0][1], 'a');
    /* aaab: left to right gives (aa) a b, so (a, b) survives and is merged next */
    BpeWord mixed[] = {word("aaab", 2)};
    assert_int_equal(bpe_learn(mixed, 1, 4, m, NULL, NULL), 3);
    assert_int_equal(m[0][0], 'a');
    assert_int_equal(m[0][1], 'a'); /* (a,a) 2 ties (a,b) 2, smaller wins */
    assert_int_equal(m[1][0], 'a');
    assert_int_equal(m[1][1], 'b');
    assert_int_equal(m[2][0], 256);
    assert_int_equal(m[2][1], 257);
}

typedef struct {
    int calls, done[8], total[8];
} Progress;

static void record(int done, int total, void *ctx) {
    Progress *p = ctx;
    if (p->calls < 8) {
        p->done[p->calls] = done;
        p->total[p->calls] = total;
    }
    p->calls++;
}

static void stops_when_nothing_repeats(void **state) {
    (void)state;
    int32_t m[10][2];
    Progress pr = {0};
    /* (a, b) counts 3; then (c, d) and (a, a) count 1 each */
    BpeWord w[] = {word("ab", 3), word("cd", 1), word("aaa", 1), word("e", 9)};
    assert_int_equal(bpe_learn(w, 4, 10, m, record, &pr), 1);
    assert_int_equal(m[0][0], 'a');
    assert_int_equal(m[0][1], 'b');
    assert_int_equal(pr.calls, 1);
    assert_int_equal(pr.done[0], 1);
    assert_int_equal(pr.total[0], 10);
    /* no words, or only words of one byte or count 0: nothing to learn */
    assert_int_equal(bpe_learn(NULL, 0, 10, m, NULL, NULL), 0);
    BpeWord v[] = {word("x", 100), word("ab", 0)};
    assert_int_equal(bpe_learn(v, 2, 10, m, NULL, NULL), 0);
}

/* One long word of random bytes seen twice: every pair counts at least 2, so merging
 * only stops at n_merges; progress comes every 1000 merges and at the end. */
static void reports_progress(void **state) {
    (void)state;
    enum { LEN = 3000, N = 2500 };
    uint8_t *bytes = malloc(LEN);
    Rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < LEN; i++) bytes[i] = (uint8_t)rng_next(&r);
    BpeWord w = {bytes, LEN, 2};
    int32_t (*m)[2] = malloc(sizeof(int32_t[2]) * N);
    Progress pr = {0};
    assert_int_equal(bpe_learn(&w, 1, N, m, record, &pr), N);
    assert_int_equal(pr.calls, 3);
    assert_int_equal(pr.done[0], 1000);
    assert_int_equal(pr.done[1], 2000);
    assert_int_equal(pr.done[2], N);
    assert_int_equal(pr.total[2], N);
    free(m);
    free(bytes);
}

static void expect_bad(const BpeWord *w, size_t n, int n_merges, int32_t (*m)[2], const char *fragment) {
    gpt_error("%s", "");
    assert_int_equal(bpe_learn(w, n, n_merges, m, NULL, NULL), -1);
    if (!strstr(gpt_last_error(), fragment)) fail_msg("error '%s' lacks '%s'", gpt_last_error(), fragment);
}

static void bad_arguments_are_named(void **state) {
    (void)state;
    int32_t m[4][2];
    BpeWord ok[] = {word("ab", 2)};
    expect_bad(ok, 1, -1, m, "n_merges");
    expect_bad(ok, 1, INT32_MAX, m, "n_merges");
    expect_bad(NULL, 2, 4, m, "words is NULL");
    expect_bad(ok, 1, 4, NULL, "merges is NULL");
    BpeWord empty[] = {word("ab", 2), {(const uint8_t *)"", 0, 3}};
    expect_bad(empty, 2, 4, m, "word 1 is empty");
    BpeWord null_bytes[] = {{NULL, 2, 1}};
    expect_bad(null_bytes, 1, 4, m, "NULL bytes");
    assert_int_equal(bpe_learn(ok, 1, 0, NULL, NULL, NULL), 0); /* nothing asked */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches_brute_force),
        cmocka_unit_test(ties_go_to_smallest_ids),
        cmocka_unit_test(runs_count_without_overlap),
        cmocka_unit_test(stops_when_nothing_repeats),
        cmocka_unit_test(reports_progress),
        cmocka_unit_test(bad_arguments_are_named),
    };
    return cmocka_run_group_tests_name("bpe merge learning", tests, NULL, NULL);
}
