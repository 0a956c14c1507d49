/* test_grad.c: the analytic gradient of every parameter tensor against central finite
 * differences, independent of PyTorch: both LayerNorm placements, with and without
 * dropout (masks are a pure function of the keys, so the loss stays differentiable),
 * and a window longer than one attention block; and wte's gradient split in two parts
 * (token_grads.h) against the whole. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernel_sets.h"

#include "base/rng.h"
#include "base/util.h"
#include "model/model.h"
#include "model/token_grads.h"

/* Weights large enough that attention is far from uniform and LayerNorm gains and
 * biases matter, so every branch of the backward pass carries signal. */
static void randomise(GPT *m, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < m->n_tensors; i++) {
        const GPTTensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        for (size_t j = 0; j < t->numel; j++) {
            float z = rng_normal(&r);
            p[j] = t->init == INIT_ONE ? 1.0f + 0.2f * z : t->ndim == 2 ? 0.3f * z : 0.1f * z;
        }
    }
}

typedef struct {
    GPTLayerNorm ln;
    float dropout;
    int n_ctx, T;
} Case;

static void check_case(const Case *k) {
    GPTConfig c = {.n_layer = 2, .n_head = 3, .n_embd = 12, .n_ctx = k->n_ctx, .vocab_size = 23,
                   .n_ffn = 20, .dropout_embd = k->dropout, .dropout_resid = k->dropout,
                   .dropout_attn = k->dropout, .ln = k->ln, .ln_eps = 1e-5f};
    assert_int_equal(config_validate(&c), 0);
    int B = 2, T = k->T;
    GPT *m = gpt_create(&c, B, 1);
    randomise(m, 42);
    int *in = xmalloc(sizeof(int) * B * T), *tgt = xmalloc(sizeof(int) * B * T);
    Rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < B * T; i++) in[i] = (int)(rng_next(&r) % 23), tgt[i] = (int)(rng_next(&r) % 23);
    uint64_t keys[2] = {1234, 5678};
    const uint64_t *kp = k->dropout > 0 ? keys : NULL;
    /* the summed loss, so that per-coordinate gradients are not tiny */
    gpt_zero_grad(m);
    gpt_forward_backward(m, in, tgt, B, T, kp, 1.0f);
    float *g = xalloc_floats(m->n_params);
    memcpy(g, m->grads, m->n_params * sizeof(float));

    const float h = 1e-2f;
    for (int ti = 0; ti < m->n_tensors; ti++) {
        const GPTTensor *t = &m->tensors[ti];
        double num = 0, den = 0;
        for (int s = 0; s < 6; s++) {
            size_t j = t->offset + (size_t)(rng_next(&r) % t->numel);
            if (!strcmp(t->name, "wpe")) j = t->offset + (size_t)(rng_next(&r) % ((size_t)T * c.n_embd));
            float p0 = m->params[j];
            m->params[j] = p0 + h;
            double lp = gpt_forward_backward(m, in, tgt, B, T, kp, 1.0f) * B * T;
            m->params[j] = p0 - h;
            double lm = gpt_forward_backward(m, in, tgt, B, T, kp, 1.0f) * B * T;
            m->params[j] = p0;
            double fd = (lp - lm) / (2.0 * h);
            num += (fd - g[j]) * (fd - g[j]);
            den += fd * fd + (double)g[j] * g[j];
        }
        double rel = sqrt(num / (den + 1e-12));
        if (rel > 5e-3 || den == 0) /* correct code: < 2e-3 here */
            fail_msg("%s (ln %s, dropout %g, T %d): relative error %.3g (|g|^2+|fd|^2 = %.3g)",
                     t->name, config_ln_name(k->ln), k->dropout, T, rel, den);
    }
    free(g);
    free(in);
    free(tgt);
    gpt_free(m);
}

static void post_no_dropout(void **s) { (void)s; check_case(&(Case){GPT_LN_POST, 0.0f, 7, 6}); }
static void pre_no_dropout(void **s) { (void)s; check_case(&(Case){GPT_LN_PRE, 0.0f, 7, 7}); }
static void post_dropout(void **s) { (void)s; check_case(&(Case){GPT_LN_POST, 0.2f, 7, 7}); }
static void pre_dropout(void **s) { (void)s; check_case(&(Case){GPT_LN_PRE, 0.2f, 7, 5}); }
static void two_attention_blocks(void **s) { (void)s; check_case(&(Case){GPT_LN_POST, 0.1f, 80, 70}); }

/* Records the hooks' calls: 'o' for the output part, 'g' for grad_ready. */
static char hook_calls[64];
static void on_output(void *ctx) { (void)ctx, strncat(hook_calls, "o", sizeof hook_calls - strlen(hook_calls) - 1); }
static void on_grads(void *ctx, size_t from) {
    (void)ctx, (void)from;
    strncat(hook_calls, "g", sizeof hook_calls - strlen(hook_calls) - 1);
}

/* Two accumulated passes with tokens repeated within and across them: with the token
 * rows apart, every gradient but wte's is the same bits; wte's rows no token touched
 * are too; a touched row plus its token row is the whole gradient to rounding. The
 * output part is announced once a pass, before the blocks' backward pass. */
static void split_embedding_gradient(void **state) {
    (void)state;
    GPTConfig c = {.n_layer = 2, .n_head = 2, .n_embd = 8, .n_ctx = 6, .vocab_size = 40, .n_ffn = 16,
                   .dropout_embd = 0.1f, .ln = GPT_LN_PRE, .ln_eps = 1e-5f};
    int B = 2, T = 6, V = c.vocab_size, C = c.n_embd;
    GPT *m = gpt_create(&c, B, 1);
    randomise(m, 3);
    int in[2][12], tgt[12];
    for (int i = 0; i < 12; i++) in[0][i] = (i * 7) % 11, in[1][i] = 5 + (i * 4) % 9, tgt[i] = (i * 5) % V;
    uint64_t keys[2] = {11, 12};
    float *whole = xalloc_floats(m->n_params);
    gpt_zero_grad(m);
    for (int p = 0; p < 2; p++) gpt_forward_backward(m, in[p], tgt, B, T, keys, 0.5f);
    memcpy(whole, m->grads, m->n_params * sizeof(float));

    TokenGrads *rows = token_grads_create(V, C);
    m->token_grads = rows;
    m->output_grad_ready = on_output;
    m->grad_ready = on_grads;
    hook_calls[0] = '\0';
    gpt_zero_grad(m);
    for (int p = 0; p < 2; p++) gpt_forward_backward(m, in[p], tgt, B, T, keys, 0.5f);
    assert_string_equal(hook_calls, "oggggg" "oggggg");
    size_t wte = (size_t)V * C;
    assert_memory_equal(m->grads + wte, whole + wte, (m->n_params - wte) * sizeof(float));
    int touched = 0;
    for (int t = 0; t < V; t++) {
        int row = rows->row_of[t];
        touched += row >= 0;
        for (int k = 0; k < C; k++) {
            float got = m->grads[(size_t)t * C + k], want = whole[(size_t)t * C + k];
            if (row < 0) assert_memory_equal(&got, &want, sizeof got);
            else assert_float_equal(got + rows->rows[(size_t)row * C + k], want, 1e-6f * (1.0f + fabsf(want)));
        }
    }
    assert_int_equal(touched, rows->n);
    assert_int_equal(touched, 14); /* 0..10 and 5..13 */
    gpt_zero_grad(m);
    assert_int_equal(rows->n, 0);
    m->token_grads = NULL;
    token_grads_free(rows);
    free(whole);
    gpt_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(post_no_dropout), cmocka_unit_test(pre_no_dropout),
        cmocka_unit_test(post_dropout), cmocka_unit_test(pre_dropout),
        cmocka_unit_test(two_attention_blocks), cmocka_unit_test(split_embedding_gradient),
    };
    return run_on_kernel_sets("finite differences", tests, sizeof tests / sizeof tests[0]);
}
