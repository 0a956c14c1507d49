/* test_tokenizer.c: the hash map, and the heap-based BPE merge of tokenizer.c against
 * GPT-2's plain loop (find the lowest-rank pair, merge its occurrences left to right,
 * repeat) on random merge tables over a tiny alphabet, where runs and overlapping
 * pairs are common. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/hashmap.h"
#include "base/rng.h"
#include "base/util.h"
#include "text/tokenizer.h"

static void hashmap_put_get_grow_and_duplicates(void **state) {
    (void)state;
    HashMap m;
    hm_init(&m, 4);
    for (uint64_t k = 0; k < 100000; k++) assert_int_equal(*hm_put(&m, k * 7919, (int64_t)k), (int64_t)k);
    assert_int_equal(m.n, 100000);
    for (uint64_t k = 0; k < 100000; k++) assert_int_equal(*hm_get(&m, k * 7919), (int64_t)k);
    assert_null(hm_get(&m, 3));
    assert_int_equal(*hm_put(&m, 7919, -5), 1); /* present: unchanged */
    hm_put_dup(&m, 42, 1);
    hm_put_dup(&m, 42, 2);
    int64_t seen = 0;
    for (int64_t *v = hm_get(&m, 42); v; v = hm_get_next(&m, 42, v)) seen += *v;
    assert_int_equal(seen, 3);
    hm_clear(&m);
    assert_null(hm_get(&m, 7919));
    hm_free(&m);
    uint8_t a[9] = "abcdefgh", b[9] = "abcdefgi";
    assert_true(hash_bytes(a, 8) != hash_bytes(b, 8));
    assert_true(hash_bytes(a, 7) != hash_bytes(a, 8));
}

/* GPT-2's bpe(): tokens are kept as merge results; ranks from the merge table. */
static size_t reference_bpe(const int32_t (*m)[2], int n_merges, const uint8_t *s, size_t n, int32_t *out) {
    for (size_t i = 0; i < n; i++) out[i] = s[i];
    for (;;) {
        int best = -1;
        for (size_t i = 0; i + 1 < n; i++)
            for (int k = 0; k < n_merges && (best < 0 || k < best); k++)
                if (m[k][0] == out[i] && m[k][1] == out[i + 1]) best = k;
        if (best < 0) return n;
        size_t w = 0;
        for (size_t i = 0; i < n; i++) {
            if (i + 1 < n && out[i] == m[best][0] && out[i + 1] == m[best][1]) {
                out[w++] = 256 + best;
                i++;
            } else {
                out[w++] = out[i];
            }
        }
        n = w;
    }
}

static void heap_merge_matches_gpt2_loop(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 99);
    for (int trial = 0; trial < 40; trial++) {
        /* random merges over 'a'..'c' and the tokens made so far, no repeated pair */
        enum { M = 60 };
        int32_t m[M][2];
        int n = 0;
        while (n < M) {
            int32_t pool[3 + M], np = 0;
            for (int c = 'a'; c <= 'c'; c++) pool[np++] = c;
            for (int k = 0; k < n; k++) pool[np++] = 256 + k;
            int32_t l = pool[rng_next(&r) % (uint64_t)np], rr = pool[rng_next(&r) % (uint64_t)np];
            int dup = 0;
            for (int k = 0; k < n; k++) dup |= m[k][0] == l && m[k][1] == rr;
            if (!dup) m[n][0] = l, m[n][1] = rr, n++;
        }
        Tokenizer *t = tokenizer_from_merges((const int32_t(*)[2])m, M);
        assert_non_null(t);
        for (int s = 0; s < 20; s++) {
            /* one piece: a run of letters (the pattern keeps letters together) */
            uint8_t text[64];
            size_t len = 2 + rng_next(&r) % 60;
            for (size_t i = 0; i < len; i++) text[i] = (uint8_t)('a' + rng_next(&r) % (trial % 2 ? 3 : 1 + i % 3));
            int32_t want[64];
            size_t nw = reference_bpe((const int32_t(*)[2])m, M, text, len, want);
            TokenVec got = {0};
            assert_int_equal(tokenizer_encode(t, text, len, 0, &got), 0);
            assert_int_equal(got.n, nw);
            assert_memory_equal(got.ids, want, nw * sizeof *want);
            free(got.ids);
        }
        tokenizer_free(t);
    }
}

static void special_tokens_only_when_allowed(void **state) {
    (void)state;
    int32_t m[1][2] = {{'a', 'b'}};
    Tokenizer *t = tokenizer_from_merges((const int32_t(*)[2])m, 1);
    const char *text = "ab<|endoftext|>ab";
    TokenVec plain = {0}, special = {0};
    assert_int_equal(tokenizer_encode(t, (const uint8_t *)text, strlen(text), 0, &plain), 0);
    assert_int_equal(tokenizer_encode(t, (const uint8_t *)text, strlen(text), 1, &special), 0);
    int32_t eot = tokenizer_special_id(t, TOK_EOT);
    assert_int_equal(eot, 257);
    for (size_t i = 0; i < plain.n; i++) assert_true(plain.ids[i] != eot);
    assert_int_equal(special.n, 3);
    assert_int_equal(special.ids[0], 256);
    assert_int_equal(special.ids[1], eot);
    assert_int_equal(special.ids[2], 256);
    free(plain.ids);
    free(special.ids);
    tokenizer_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hashmap_put_get_grow_and_duplicates),
        cmocka_unit_test(heap_merge_matches_gpt2_loop),
        cmocka_unit_test(special_tokens_only_when_allowed),
    };
    return cmocka_run_group_tests_name("tokenizer", tests, NULL, NULL);
}
