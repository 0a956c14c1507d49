/* kernel_bench.c: what each fused kernel of src/cpu/kernels.c gains over the plain way of
 * computing the same thing, measured side by side in one process at GPT-1's shapes
 * (batch 4 x 512 tokens, C 768, H 12, F 3072, V 40478), one BLAS thread.
 *
 * The plain versions are what a straightforward port of the PyTorch module would do:
 * libm exp/tanh, separate passes with full-size temporaries, the whole (T,T) score
 * matrix per head with the probabilities stored for backward, and the logits of the
 * whole batch materialised before the cross-entropy. Each pair is checked to agree
 * before it is timed, so a fast wrong kernel cannot look good. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/util.h"
#include "cpu/blas.h"
#include "cpu/kernels.h"

enum { B = 4, T = 512, C = 768, H = 12, F = 3072, V = 40478, N = B * T, HEAD_ROWS = 207 };

static float *randn(size_t n, float std, uint64_t seed) {
    float *x = xalloc_floats(n);
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(&r);
    return x;
}

static double max_rel_diff(const float *a, const float *b, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return d / (m > 0 ? m : 1);
}

/* Best of `reps` wall times of fn(ctx). */
static double best_time(void (*fn)(void *), void *ctx, int reps) {
    double best = 1e30;
    for (int i = 0; i < reps; i++) {
        double t0 = now_seconds();
        fn(ctx);
        double t = now_seconds() - t0;
        if (t < best) best = t;
    }
    return best;
}

static void report(const char *what, double fused, double plain, double fused_mb,
                   double plain_mb, double err) {
    printf("%-34s %9.1f ms %9.1f ms %6.2fx %9.0f MB %9.0f MB   %.1e\n", what, fused * 1e3,
           plain * 1e3, plain / fused, fused_mb, plain_mb, err);
}

/* ---- GELU ---- */
typedef struct { float *x, *y, *dy, *dx; } GeluCtx;

static void gelu_fused(void *p) {
    GeluCtx *c = p;
    gelu_forward(c->y, c->x, (size_t)N * F);
    gelu_backward(c->dx, c->dy, c->x, (size_t)N * F);
}

static void gelu_plain(void *p) {
    GeluCtx *c = p;
    const float k = 0.7978845608028654f;
    for (size_t i = 0; i < (size_t)N * F; i++) {
        float v = c->x[i];
        c->y[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
    for (size_t i = 0; i < (size_t)N * F; i++) {
        float v = c->x[i], t = tanhf(k * (v + 0.044715f * v * v * v));
        c->dx[i] = c->dy[i] * (0.5f * (1 + t) + 0.5f * v * (1 - t * t) * k * (1 + 3 * 0.044715f * v * v));
    }
}

/* ---- LayerNorm ---- */
typedef struct { float *x, *w, *b, *y, *mean, *rstd, *dy, *dx, *dw, *db, *tmp; } LnCtx;

static void ln_fused(void *p) {
    LnCtx *c = p;
    layernorm_forward(c->y, c->mean, c->rstd, c->x, c->w, c->b, N, C, 1e-5f);
    layernorm_backward(c->dx, c->dw, c->db, c->dy, c->x, c->w, c->mean, c->rstd, N, C);
}

/* One pass per operation with a full-size temporary (xhat), as separate tensor ops. */
static void ln_plain(void *p) {
    LnCtx *c = p;
    for (int n = 0; n < N; n++) {
        double m = 0, v = 0;
        for (int i = 0; i < C; i++) m += c->x[n * C + i];
        m /= C;
        for (int i = 0; i < C; i++) v += (c->x[n * C + i] - m) * (c->x[n * C + i] - m);
        c->mean[n] = (float)m;
        c->rstd[n] = (float)(1.0 / sqrt(v / C + 1e-5));
    }
    for (size_t i = 0; i < (size_t)N * C; i++) c->tmp[i] = (c->x[i] - c->mean[i / C]) * c->rstd[i / C];
    for (size_t i = 0; i < (size_t)N * C; i++) c->y[i] = c->tmp[i] * c->w[i % C] + c->b[i % C];
    for (size_t i = 0; i < (size_t)N * C; i++) c->db[i % C] += c->dy[i], c->dw[i % C] += c->dy[i] * c->tmp[i];
    for (int n = 0; n < N; n++) {
        double a = 0, bsum = 0;
        for (int i = 0; i < C; i++) {
            double d = c->w[i] * c->dy[n * C + i];
            a += d;
            bsum += d * c->tmp[n * C + i];
        }
        a /= C, bsum /= C;
        for (int i = 0; i < C; i++)
            c->dx[n * C + i] = (float)((c->w[i] * c->dy[n * C + i] - a - c->tmp[n * C + i] * bsum) * c->rstd[n]);
    }
}

/* ---- attention ---- */
typedef struct { float *qkv, *y, *lse, *dy, *dqkv, *s, *dp, *P, *dS; } AttCtx;

static void att_fused(void *p) {
    AttCtx *c = p;
    attention_forward(c->y, c->lse, c->qkv, B, T, C, H, c->s, 1, NULL, 0, 0.0f, 0);
    attention_backward(c->dqkv, c->dy, c->qkv, c->lse, B, T, C, H, c->s, c->dp, 1, NULL, 0, 0.0f, 0);
}

/* Full (T,T) scores per head, causal mask by -inf, libm exp, probabilities stored. */
static void att_plain(void *p) {
    AttCtx *c = p;
    int hs = C / H, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    memset(c->dqkv, 0, sizeof(float) * N * C3);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *q = c->qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
            float *P = c->P + ((size_t)b * H + h) * T * T;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, C3, k, C3, 0.0f, P, T);
            for (int i = 0; i < T; i++) {
                float *r = P + (size_t)i * T, mx = -INFINITY, sum = 0;
                for (int j = i + 1; j < T; j++) r[j] = -INFINITY;
                for (int j = 0; j < T; j++) mx = fmaxf(mx, r[j]);
                for (int j = 0; j < T; j++) sum += (r[j] = expf(r[j] - mx));
                for (int j = 0; j < T; j++) r[j] /= sum;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, P, T, v, C3, 0.0f,
                        c->y + (size_t)b * T * C + h * hs, C);
        }
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *q = c->qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
            float *dq = c->dqkv + (size_t)b * T * C3 + h * hs, *dk = dq + C, *dv = dq + 2 * C;
            const float *dyb = c->dy + (size_t)b * T * C + h * hs;
            const float *P = c->P + ((size_t)b * H + h) * T * T;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, P, T, dyb, C, 1.0f, dv, C3);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f, dyb, C, v, C3, 0.0f, c->dS, T);
            for (int i = 0; i < T; i++) {
                float *d = c->dS + (size_t)i * T, D = 0;
                const float *r = P + (size_t)i * T;
                for (int j = 0; j < T; j++) D += r[j] * d[j];
                for (int j = 0; j < T; j++) d[j] = r[j] * (d[j] - D);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, scale, c->dS, T, k, C3, 0.0f, dq, C3);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, scale, c->dS, T, q, C3, 1.0f, dk, C3);
        }
}

/* ---- vocabulary projection + cross-entropy ---- */
typedef struct { float *h, *wte, *dh, *dwte, *logits; int *tgt; double loss; } HeadCtx;

static void head_rows(HeadCtx *c, int rows_per_chunk, float *logits) {
    c->loss = 0;
    for (int r0 = 0; r0 < N; r0 += rows_per_chunk) {
        int rows = N - r0 < rows_per_chunk ? N - r0 : rows_per_chunk;
        matmul_forward(logits, c->h + (size_t)r0 * C, c->wte, NULL, rows, C, V);
        c->loss += softmax_xent(logits, c->tgt + r0, rows, V, 1.0f / N);
        matmul_backward(c->dh + (size_t)r0 * C, c->dwte, NULL, logits, c->h + (size_t)r0 * C, c->wte,
                        rows, C, V, 0);
    }
}

static void head_fused(void *p) { HeadCtx *c = p; head_rows(c, HEAD_ROWS, c->logits); }

/* All logits at once, then max, libm exp, sum, log and gradient as separate passes. */
static void head_plain(void *p) {
    HeadCtx *c = p;
    float *z = c->logits;
    matmul_forward(z, c->h, c->wte, NULL, N, C, V);
    float *mx = xalloc_floats(N), *sum = xalloc_floats(N);
    for (int n = 0; n < N; n++) {
        mx[n] = -INFINITY;
        for (int v = 0; v < V; v++) mx[n] = fmaxf(mx[n], z[(size_t)n * V + v]);
    }
    c->loss = 0;
    for (int n = 0; n < N; n++) c->loss -= z[(size_t)n * V + c->tgt[n]] - mx[n];
    for (size_t i = 0; i < (size_t)N * V; i++) z[i] = expf(z[i] - mx[i / V]);
    for (size_t i = 0; i < (size_t)N * V; i++) sum[i / V] += z[i];
    for (int n = 0; n < N; n++) c->loss += log(sum[n]);
    for (size_t i = 0; i < (size_t)N * V; i++) z[i] = z[i] / sum[i / V] / N;
    for (int n = 0; n < N; n++) z[(size_t)n * V + c->tgt[n]] -= 1.0f / N;
    matmul_backward(c->dh, c->dwte, NULL, z, c->h, c->wte, N, C, V, 0);
    free(mx);
    free(sum);
}

int main(int argc, char **argv) {
    (void)argc;
    blas_select_core(argv);
    if (kernels_select_from_env()) {
        fprintf(stderr, "kernel_bench: %s\n", gpt_last_error());
        return 2;
    }
    compute_threads_set(1);
    const double MB = 1e6 / sizeof(float);
    printf("kernel_bench: GPT-1 shapes (B %d, T %d, C %d, H %d, F %d, V %d), 1 thread, kernels %s, OpenBLAS %s (%s)\n",
           B, T, C, H, F, V, kernels_name(), blas_core_name(), blas_core_origin());
    printf("%-34s %12s %12s %7s %12s %12s   %s\n", "forward+backward, one layer", "fused", "plain",
           "gain", "fused mem", "plain mem", "max rel diff");

    GeluCtx g = {randn((size_t)N * F, 1.5f, 1), xalloc_floats((size_t)N * F), randn((size_t)N * F, 1, 2),
                 xalloc_floats((size_t)N * F)};
    float *y2 = xalloc_floats((size_t)N * F), *dx2 = xalloc_floats((size_t)N * F);
    gelu_fused(&g);
    GeluCtx g2 = {g.x, y2, g.dy, dx2};
    gelu_plain(&g2);
    double err = fmax(max_rel_diff(g.y, y2, (size_t)N * F), max_rel_diff(g.dx, dx2, (size_t)N * F));
    /* the fused model keeps only the GELU input and recomputes the output in backward */
    report("GELU (N x F)", best_time(gelu_fused, &g, 3), best_time(gelu_plain, &g2, 3),
           (double)N * F / MB, 2.0 * N * F / MB, err);

    LnCtx l = {randn((size_t)N * C, 2, 3), randn(C, 1, 4), randn(C, 1, 5), xalloc_floats((size_t)N * C),
               xalloc_floats(N), xalloc_floats(N), randn((size_t)N * C, 1, 6), xalloc_floats((size_t)N * C),
               xalloc_floats(C), xalloc_floats(C), xalloc_floats((size_t)N * C)};
    LnCtx l2 = l;
    l2.y = xalloc_floats((size_t)N * C), l2.dx = xalloc_floats((size_t)N * C);
    ln_fused(&l);
    ln_plain(&l2);
    err = fmax(max_rel_diff(l.y, l2.y, (size_t)N * C), max_rel_diff(l.dx, l2.dx, (size_t)N * C));
    report("LayerNorm (N x C)", best_time(ln_fused, &l, 5), best_time(ln_plain, &l2, 5),
           2.0 * N * C / MB, 3.0 * N * C / MB, err);

    size_t att_P = (size_t)B * H * T * T;
    AttCtx a = {randn((size_t)N * 3 * C, 1, 7), xalloc_floats((size_t)N * C), xalloc_floats((size_t)B * H * T),
                randn((size_t)N * C, 1, 8), xalloc_floats((size_t)N * 3 * C), xalloc_floats((size_t)ATT_BLOCK * T),
                xalloc_floats((size_t)ATT_BLOCK * T), xalloc_floats(att_P), xalloc_floats((size_t)T * T)};
    AttCtx a2 = a;
    a2.y = xalloc_floats((size_t)N * C), a2.dqkv = xalloc_floats((size_t)N * 3 * C);
    att_fused(&a);
    att_plain(&a2);
    err = fmax(max_rel_diff(a.y, a2.y, (size_t)N * C), max_rel_diff(a.dqkv, a2.dqkv, (size_t)N * 3 * C));
    report("causal attention (B,H,T,T)", best_time(att_fused, &a, 2), best_time(att_plain, &a2, 2),
           (double)B * H * T / MB, (double)att_P / MB, err);

    HeadCtx hc = {randn((size_t)N * C, 1, 9), randn((size_t)V * C, 0.02f, 10), xalloc_floats((size_t)N * C),
                  xalloc_floats((size_t)V * C), xalloc_floats((size_t)HEAD_ROWS * V), xmalloc(sizeof(int) * N), 0};
    for (int n = 0; n < N; n++) hc.tgt[n] = (n * 7919) % V;
    HeadCtx hc2 = hc;
    hc2.dh = xalloc_floats((size_t)N * C), hc2.dwte = xalloc_floats((size_t)V * C);
    hc2.logits = xalloc_floats((size_t)N * V);
    head_fused(&hc);
    head_plain(&hc2);
    err = fmax(fabs(hc.loss - hc2.loss) / hc2.loss, max_rel_diff(hc.dh, hc2.dh, (size_t)N * C));
    report("logits + cross-entropy (N x V)", best_time(head_fused, &hc, 2), best_time(head_plain, &hc2, 2),
           (double)HEAD_ROWS * V / MB, (double)N * V / MB, err);
    printf("memory: what the kernel keeps between forward and backward, or its largest buffer\n");
    return 0;
}
