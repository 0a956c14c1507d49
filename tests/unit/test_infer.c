/* test_infer.c: the cached forward pass against the full one at every position (a
 * prompt in one pass, then a token at a time), and sampling. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/util.h"
#include "model/infer.h"

static void randomise(GPT *m, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < m->n_tensors; i++) {
        const GPTTensor *t = &m->tensors[i];
        for (size_t j = 0; j < t->numel; j++) {
            float z = rng_normal(&r);
            m->params[t->offset + j] = t->init == INIT_ONE ? 1.0f + 0.2f * z : t->ndim == 2 ? 0.3f * z : 0.1f * z;
        }
    }
}

static void check(GPTLayerNorm ln) {
    GPTConfig c = {.n_layer = 2, .n_head = 3, .n_embd = 24, .n_ctx = 20, .vocab_size = 37, .n_ffn = 40,
                   .ln = ln, .ln_eps = 1e-5f};
    GPT *m = gpt_create(&c, 1, 0);
    randomise(m, 3);
    enum { T = 17, PROMPT = 6 };
    int tok[T];
    for (int i = 0; i < T; i++) tok[i] = (i * 11 + 5) % 37;
    float *full = xalloc_floats((size_t)T * 37), *cached = xalloc_floats((size_t)T * 37);
    gpt_logits(m, tok, 1, T, full);
    GPTCache *kv = cache_create(&c);
    float last[37];
    gpt_forward_cached(m, kv, tok, PROMPT, last, cached);
    assert_memory_equal(last, cached + (PROMPT - 1) * 37, sizeof last);
    for (int t = PROMPT; t < T; t++) gpt_forward_cached(m, kv, tok + t, 1, cached + (size_t)t * 37, NULL);
    assert_int_equal(kv->len, T);
    double worst = 0, scale = 0;
    for (int i = 0; i < T * 37; i++) {
        worst = fmax(worst, fabs(full[i] - cached[i]));
        scale = fmax(scale, fabs(full[i]));
    }
    if (worst > 1e-5 * scale) fail_msg("ln %s: cached logits differ by %g (max |logit| %g)", config_ln_name(ln), worst, scale);
    free(full);
    free(cached);
    cache_free(kv);
    gpt_free(m);
}

static void cached_equals_full_post(void **s) { (void)s; check(GPT_LN_POST); }
static void cached_equals_full_pre(void **s) { (void)s; check(GPT_LN_PRE); }

static void sampling(void **state) {
    (void)state;
    enum { V = 50 };
    float base[V], z[V];
    for (int i = 0; i < V; i++) base[i] = sinf((float)i);
    int argmax = 0;
    for (int i = 1; i < V; i++) argmax = base[i] > base[argmax] ? i : argmax;
    Rng r;
    rng_seed(&r, 1);
    SampleOptions greedy = {0.0f, 0, 1.0f}, k1 = {1.0f, 1, 1.0f}, p_small = {1.0f, 0, 1e-6f}, plain = {1.0f, 0, 1.0f};
    memcpy(z, base, sizeof z);
    assert_int_equal(sample_token(z, V, &greedy, &r), argmax);
    memcpy(z, base, sizeof z);
    assert_int_equal(sample_token(z, V, &k1, &r), argmax);
    memcpy(z, base, sizeof z);
    assert_int_equal(sample_token(z, V, &p_small, &r), argmax);
    /* same seed, same draws; and a spread of draws without filtering */
    Rng a, b;
    rng_seed(&a, 9), rng_seed(&b, 9);
    int distinct[V] = {0}, n_distinct = 0;
    for (int i = 0; i < 200; i++) {
        memcpy(z, base, sizeof z);
        int x = sample_token(z, V, &plain, &a);
        memcpy(z, base, sizeof z);
        assert_int_equal(x, sample_token(z, V, &plain, &b));
        n_distinct += !distinct[x]++;
    }
    assert_true(n_distinct > 10);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cached_equals_full_post),
        cmocka_unit_test(cached_equals_full_pre),
        cmocka_unit_test(sampling),
    };
    return cmocka_run_group_tests_name("inference", tests, NULL, NULL);
}
