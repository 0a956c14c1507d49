/* test_choice.c: the shots drawn for a record (distinct, never the record itself when
 * the pool is the evaluated set, the whole pool when K asks for it, every pool record
 * about equally often) and continuations of a shared prompt from a truncated cache. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/util.h"
#include "text/choice.h"

static ChoicePromptOptions options(ChoiceSet *pool, int shots, int pool_is_data) {
    return (ChoicePromptOptions){.shots = shots, .pool = pool, .pool_is_data = pool_is_data, .seed = 7, .n_ctx = 64};
}

static void shots_are_distinct_and_never_self(void **state) {
    (void)state;
    enum { N = 9 };
    ChoiceSet pool = {.n = N, .path = "pool.jsonl"};
    int64_t shots[N];
    for (int pool_is_data = 0; pool_is_data <= 1; pool_is_data++)
        for (int K = 0; K <= N - pool_is_data; K++) {
            ChoicePromptOptions o = options(&pool, K, pool_is_data);
            assert_int_equal(choice_check_shots(&o), 0);
            for (int64_t i = 0; i < N; i++) {
                int seen[N] = {0};
                choice_draw_shots(&o, i, shots);
                for (int k = 0; k < K; k++) {
                    assert_true(shots[k] >= 0 && shots[k] < N);
                    assert_false(pool_is_data && shots[k] == i);
                    assert_int_equal(seen[shots[k]]++, 0);
                }
            }
        }
    ChoicePromptOptions too_many = options(&pool, N, 1);
    assert_int_equal(choice_check_shots(&too_many), -1);
    assert_non_null(strstr(gpt_last_error(), "pool.jsonl: --shots 9, but the shot pool has 9 records"));
}

static void shots_cover_the_pool_evenly(void **state) {
    (void)state;
    enum { N = 10, K = 3, RECORDS = 20000 };
    ChoiceSet pool = {.n = N};
    ChoicePromptOptions o = options(&pool, K, 0);
    int64_t shots[K];
    long count[N] = {0}, first[N] = {0};
    for (int64_t i = 0; i < RECORDS; i++) {
        choice_draw_shots(&o, i, shots);
        for (int k = 0; k < K; k++) count[shots[k]]++;
        first[shots[0]]++;
    }
    for (int j = 0; j < N; j++) { /* expected 6000 and 2000; 5 standard deviations */
        assert_true(labs(count[j] - RECORDS * K / N) < 5 * 65);
        assert_true(labs(first[j] - RECORDS / N) < 5 * 43);
    }
}

/* Endings scored as branches of one prompt's cache (in two batches: their rows exceed
 * n_ctx) equal each scored after the prompt alone, and a full forward pass of the prompt
 * and the ending. */
static void shared_prompt_equals_fresh(void **state) {
    (void)state;
    enum { V = 29, CTX = 24, P = 5 };
    GPTConfig c = {.n_layer = 2, .n_head = 2, .n_embd = 16, .n_ctx = CTX, .vocab_size = V, .n_ffn = 32,
                   .ln = GPT_LN_PRE, .ln_eps = 1e-5f};
    GPT *m = gpt_create(&c, 1, 0);
    Rng r;
    rng_seed(&r, 5);
    for (size_t j = 0; j < m->n_params; j++) m->params[j] = 0.3f * rng_normal(&r);
    int32_t prompt[P] = {3, 17, 4, 4, 9}, ids[4][CTX];
    int lens[4] = {10, 1, 12, 15};
    TokenVec ends[4];
    for (int k = 0; k < 4; k++) {
        for (int j = 0; j < lens[k]; j++) ids[k][j] = (7 * k + 5 * j + 1) % V;
        ends[k] = (TokenVec){ids[k], (size_t)lens[k], (size_t)lens[k]};
    }
    ChoiceRecord rec = {.n_endings = 4, .endings = ends};
    ChoiceScorer *s = choice_scorer_create(&c);
    double shared[4], fresh[4];
    choice_score(m, s, prompt, P, &rec, 1, shared);
    choice_score(m, s, prompt, P, &rec, 0, fresh);
    float *logits = xalloc_floats((size_t)CTX * V);
    for (int k = 0; k < 4; k++) {
        int seq[CTX];
        memcpy(seq, prompt, sizeof prompt);
        for (int j = 0; j < lens[k]; j++) seq[P + j] = ids[k][j];
        gpt_logits(m, seq, 1, P + lens[k] - 1, logits);
        double want = 0.0;
        for (int j = 0; j < lens[k]; j++) want += logprob_of(logits + (size_t)(P - 1 + j) * V, V, ids[k][j]);
        assert_true(want < 0.0);
        assert_true(fabs(shared[k] - want) <= 1e-5 * fabs(want));
        assert_true(fabs(fresh[k] - want) <= 1e-5 * fabs(want));
    }
    free(logits);
    choice_scorer_free(s);
    gpt_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shots_are_distinct_and_never_self),
        cmocka_unit_test(shots_cover_the_pool_evenly),
        cmocka_unit_test(shared_prompt_equals_fresh),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
