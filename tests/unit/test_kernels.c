/* test_kernels.c: the approximations and fused kernels against double-precision
 * references, and dropout's determinism and scale. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels.h"
#include "model.h"
#include "rng.h"
#include "util.h"

static void exp_and_tanh_accuracy(void **state) {
    (void)state;
    double worst_exp = 0, worst_tanh = 0;
    for (float x = -87.0f; x <= 88.0f; x += 0.00731f) {
        double e = exp((double)x);
        worst_exp = fmax(worst_exp, fabs(kern_expf(x) - e) / e);
    }
    for (float x = -12.0f; x <= 12.0f; x += 0.0001f)
        worst_tanh = fmax(worst_tanh, fabs(kern_tanhf(x) - tanh((double)x)));
    assert_true(worst_exp < 3e-7);
    assert_true(worst_tanh < 3e-7);
    assert_true(isnan(kern_expf(NAN)));
    assert_true(kern_expf(-1000.0f) < 1e-37f);
    assert_true(kern_tanhf(100.0f) == 1.0f && kern_tanhf(-100.0f) == -1.0f);
}

static double gelu_ref(double x) {
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

static void gelu_matches_reference_and_derivative(void **state) {
    (void)state;
    enum { N = 2001 };
    float x[N], y[N], ones[N], dx[N];
    for (int i = 0; i < N; i++) x[i] = -10.0f + 0.01f * (float)i, ones[i] = 1.0f;
    gelu_forward(y, x, N);
    gelu_backward(dx, ones, x, N);
    for (int i = 0; i < N; i++) {
        double h = 1e-4, d = (gelu_ref(x[i] + h) - gelu_ref(x[i] - h)) / (2 * h);
        assert_true(fabs(y[i] - gelu_ref(x[i])) < 1e-6 * (1 + fabs(x[i])));
        assert_true(fabs(dx[i] - d) < 1e-5);
    }
}

static void softmax_xent_matches_double(void **state) {
    (void)state;
    enum { N = 3, V = 1000 };
    float *z = xalloc_floats(N * V), *g = xalloc_floats(N * V);
    int tgt[N] = {0, 517, 999};
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < N * V; i++) z[i] = 8.0f * rng_normal(&r);
    memcpy(g, z, sizeof(float) * N * V);
    double loss = softmax_xent(g, tgt, N, V, 0.5f);
    double ref = 0;
    for (int n = 0; n < N; n++) {
        double mx = -INFINITY, s = 0;
        for (int v = 0; v < V; v++) mx = fmax(mx, z[n * V + v]);
        for (int v = 0; v < V; v++) s += exp(z[n * V + v] - mx);
        ref += mx + log(s) - z[n * V + tgt[n]];
        for (int v = 0; v < V; v++) {
            double p = exp(z[n * V + v] - mx) / s, want = 0.5 * (p - (v == tgt[n]));
            assert_true(fabs(g[n * V + v] - want) < 1e-6);
        }
    }
    assert_true(fabs(loss - ref) < 1e-5 * fabs(ref));
    /* without a gradient the logits are left alone */
    memcpy(g, z, sizeof(float) * N * V);
    assert_true(fabs(softmax_xent(g, tgt, N, V, 0.0f) - ref) < 1e-5 * fabs(ref));
    assert_memory_equal(g, z, sizeof(float) * N * V);
    free(z);
    free(g);
}

static void dropout_is_deterministic_and_scaled(void **state) {
    (void)state;
    enum { ROWS = 2, N = 200000 };
    const float p = 0.1f;
    float *a = xalloc_floats(ROWS * N), *b = xalloc_floats(ROWS * N);
    uint64_t keys[ROWS] = {99, 100};
    for (int i = 0; i < ROWS * N; i++) a[i] = b[i] = 1.0f;
    dropout_apply(a, ROWS, N, keys, 5, p);
    dropout_apply(b, ROWS, N, keys, 5, p);
    assert_memory_equal(a, b, sizeof(float) * ROWS * N);
    size_t dropped = 0, same_mask = 0;
    for (int i = 0; i < ROWS * N; i++) {
        if (a[i] == 0.0f) dropped++;
        else assert_true(fabsf(a[i] - 1.0f / (1.0f - p)) < 1e-6f);
    }
    for (int i = 0; i < N; i++) same_mask += (a[i] == 0.0f) == (a[N + i] == 0.0f);
    /* binomial(400000, 0.1): sd 190, so 5 sd is 950 */
    assert_true(labs((long)dropped - (long)(p * ROWS * N)) < 950);
    /* rows with different keys get different masks (agreement 0.82 when independent) */
    assert_true(same_mask < (size_t)(0.85 * N));
    /* a different site gives a different mask */
    for (int i = 0; i < ROWS * N; i++) b[i] = 1.0f;
    dropout_apply(b, ROWS, N, keys, 6, p);
    assert_memory_not_equal(a, b, sizeof(float) * ROWS * N);
    free(a);
    free(b);
}

/* Whole-model dropout: same keys, same loss and gradients; other keys, other loss;
 * no keys, the deterministic evaluation loss. */
static void model_dropout_reproducible(void **state) {
    (void)state;
    GPTConfig c;
    assert_int_equal(config_preset("tiny", &c), 0);
    int B = 2, T = c.n_ctx;
    GPT *m = gpt_create(&c, B, 1);
    gpt_init_weights(m, 5, 0.02f, 0);
    int *in = xmalloc(sizeof(int) * B * T), *tgt = xmalloc(sizeof(int) * B * T);
    for (int i = 0; i < B * T; i++) in[i] = (i * 7) % c.vocab_size, tgt[i] = (i * 13) % c.vocab_size;
    uint64_t k1[2] = {1, 2}, k2[2] = {3, 4};
    float *g = xalloc_floats(m->n_params);
    gpt_zero_grad(m);
    double l1 = gpt_forward_backward(m, in, tgt, B, T, k1, 1.0f / (B * T));
    memcpy(g, m->grads, sizeof(float) * m->n_params);
    gpt_zero_grad(m);
    double l1b = gpt_forward_backward(m, in, tgt, B, T, k1, 1.0f / (B * T));
    assert_true(l1 == l1b);
    assert_memory_equal(g, m->grads, sizeof(float) * m->n_params);
    double l2 = gpt_forward_backward(m, in, tgt, B, T, k2, 1.0f / (B * T));
    double le = gpt_loss(m, in, tgt, B, T);
    double le_nokeys = gpt_forward_backward(m, in, tgt, B, T, NULL, 1.0f / (B * T));
    assert_true(l1 != l2);
    assert_true(fabs(le - le_nokeys) < 1e-6);
    free(g);
    free(in);
    free(tgt);
    gpt_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exp_and_tanh_accuracy),
        cmocka_unit_test(gelu_matches_reference_and_derivative),
        cmocka_unit_test(softmax_xent_matches_double),
        cmocka_unit_test(dropout_is_deterministic_and_scaled),
        cmocka_unit_test(model_dropout_reproducible),
    };
    return cmocka_run_group_tests_name("kernels", tests, NULL, NULL);
}
