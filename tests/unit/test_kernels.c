/* test_kernels.c: the approximations and fused kernels against double-precision
 * references, and dropout's determinism and scale. */
#include <math.h>
#include <stdio.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernel_sets.h"

#include "base/rng.h"
#include "base/util.h"
#include "cpu/blas.h"
#include "cpu/kernels.h"
#include "model/config.h"
#include "model/infer.h"
#include "model/model.h"
#include "model/optim.h"

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

/* Every kernel whose work is split by the shapes alone, at sizes where each of them
 * splits, on `threads` threads: the outputs, in a fixed order, for a bitwise comparison.
 * (cblas_sgemm is not among them: OpenBLAS's Haswell kernels round differently when its
 * threads split the output differently.) */
enum { KB = 4, KT = 96, KC = 128, KH = 4, KF = 512, KV = 700, N_OUT = 32 };
typedef struct {
    const char *name[N_OUT];
    float *buf[N_OUT];
    size_t n[N_OUT];
    int count;
} Outputs;

static float *out_buf(Outputs *o, const char *name, size_t n) {
    assert_true(o->count < N_OUT);
    o->name[o->count] = name, o->n[o->count] = n;
    return o->buf[o->count++] = xalloc_floats(n);
}

static float *randn(size_t n, uint64_t seed) {
    float *x = xalloc_floats(n);
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&r);
    return x;
}

static void run_kernels(int threads, Outputs *o) {
    const size_t N = KB * KT, NC = N * KC, NF = N * KF, NQ = 3 * NC;
    int before = compute_threads();
    compute_threads_set(threads);
    float *x = randn(NC, 1), *w = randn(KC, 2), *b = randn(KC, 3), *dy = randn(NC, 4);
    float *f = randn(NF, 5), *qkv = randn(NQ, 6), *logits = randn(N * KV, 7);
    float *wte = randn((size_t)KV * KC, 8), *wpe = randn((size_t)KT * KC, 9);
    float *scratch = xalloc_floats(2 * 2 * ATT_BLOCK * KT);
    int tokens[KB * KT], targets[KB * KT];
    for (size_t i = 0; i < N; i++) tokens[i] = (int)(i * 7 % KV), targets[i] = i % 50 ? (int)(i * 13 % KV) : -1;
    uint64_t keys[KB] = {11, 12, 13, 14};

    float *ln = out_buf(o, "layernorm_forward", NC), *mean = out_buf(o, "mean", N), *rstd = out_buf(o, "rstd", N);
    layernorm_forward(ln, mean, rstd, x, w, b, (int)N, KC, 1e-5f);
    float *dx = out_buf(o, "layernorm_backward dx", NC), *dw = out_buf(o, "dw", KC), *db = out_buf(o, "db", KC);
    layernorm_backward(dx, dw, db, dy, x, w, mean, rstd, (int)N, KC);
    float *g = out_buf(o, "gelu_forward", NF), *dg = out_buf(o, "gelu_backward", NF);
    gelu_forward(g, f, NF);
    gelu_backward(dg, g, f, NF);
    float *drop = out_buf(o, "dropout_apply", NC);
    memcpy(drop, x, NC * sizeof(float));
    dropout_apply(drop, KB, (size_t)KT * KC, keys, 3, 0.1f);
    float *emb = out_buf(o, "embedding_forward", NC);
    embedding_forward(emb, tokens, wte, wpe, KB, KT, KC);
    float *dwte = out_buf(o, "embedding_backward dwte", (size_t)KV * KC), *dwpe = out_buf(o, "dwpe", (size_t)KT * KC);
    embedding_backward(dwte, dwpe, dy, tokens, KB, KT, KC);
    float *y = out_buf(o, "attention_forward", NC), *lse = out_buf(o, "lse", (size_t)KB * KH * KT);
    attention_forward(y, lse, qkv, KB, KT, KC, KH, scratch, 2, keys, 5, 0.1f, 0);
    float *dqkv = out_buf(o, "attention_backward", NQ);
    attention_backward(dqkv, dy, qkv, lse, KB, KT, KC, KH, scratch, scratch + 2 * ATT_BLOCK * KT, 2, keys, 5, 0.1f, 0);
    /* the cache: the keys and values of batch row 0, all KT positions, all of them new */
    float *K = xalloc_floats((size_t)KT * KC), *V = xalloc_floats((size_t)KT * KC);
    for (int t = 0; t < KT; t++) {
        memcpy(K + (size_t)t * KC, qkv + (size_t)t * 3 * KC + KC, KC * sizeof(float));
        memcpy(V + (size_t)t * KC, qkv + (size_t)t * 3 * KC + 2 * KC, KC * sizeof(float));
    }
    float *yc = out_buf(o, "attention_cached", (size_t)KT * KC);
    attention_cached(yc, qkv, K, V, 0, KT, KC, KH, scratch, 2, 0);
    float *xent = out_buf(o, "softmax_xent", N * KV), *loss = out_buf(o, "softmax_xent loss", 2);
    memcpy(xent, logits, N * KV * sizeof(float));
    double l = softmax_xent(xent, targets, (int)N, KV, 0.25f);
    memcpy(loss, &l, sizeof l);
    float *sum = out_buf(o, "vec_sum + vec_add", NC);
    vec_sum(sum, x, dy, NC);
    vec_add(sum, ln, NC);
    float *sq = out_buf(o, "sum_squares", 2);
    size_t n_big = 7 * 262144 + 123; /* seven groups of 64 blocks and a partial one */
    float *big = randn(n_big, 10);
    double ss = sum_squares(big, n_big);
    memcpy(sq, &ss, sizeof ss);
    free(big);
    float *p = out_buf(o, "adamw_update", N * KV);
    float *m = xalloc_floats(N * KV), *v = xalloc_floats(N * KV);
    memcpy(p, logits, N * KV * sizeof(float));
    AdamWCoeffs k = {.grad_scale = 0.5f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .step_size = 1e-3f,
                     .bc2_sqrt = 0.03f, .decay = 0.999f};
    adamw_update(p, m, v, xent, N * KV, &k);
    float *dbias = out_buf(o, "matmul_backward dbias", KF);
    matmul_backward(NULL, NULL, dbias, f, NULL, NULL, (int)N, 1, KF, 0);
    free(x), free(w), free(b), free(dy), free(f), free(qkv), free(logits), free(wte), free(wpe);
    free(scratch), free(K), free(V), free(m), free(v);
    compute_threads_set(before);
}

static void bit_identical_across_thread_counts(void **state) {
    (void)state;
    Outputs one = {0}, two = {0};
    run_kernels(1, &one);
    run_kernels(2, &two);
    assert_int_equal(one.count, two.count);
    for (int i = 0; i < one.count; i++) {
        if (memcmp(one.buf[i], two.buf[i], one.n[i] * sizeof(float)))
            fail_msg("%s: 1 and 2 threads differ (kernels %s)", one.name[i], kernels_name());
        free(one.buf[i]), free(two.buf[i]);
    }
}

static void unknown_kernel_set_is_an_error(void **state) {
    (void)state;
    const char *before = kernels_name();
    assert_int_equal(kernels_select("sse2"), -1);
    assert_non_null(strstr(gpt_last_error(), "expected avx2, avx512 or auto"));
    assert_string_equal(kernels_name(), before);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exp_and_tanh_accuracy),
        cmocka_unit_test(gelu_matches_reference_and_derivative),
        cmocka_unit_test(softmax_xent_matches_double),
        cmocka_unit_test(dropout_is_deterministic_and_scaled),
        cmocka_unit_test(model_dropout_reproducible),
        cmocka_unit_test(bit_identical_across_thread_counts),
        cmocka_unit_test(unknown_kernel_set_is_an_error),
    };
    return run_on_kernel_sets("kernels", tests, sizeof tests / sizeof tests[0]);
}
