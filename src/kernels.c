/* kernels.c: numeric building blocks (see kernels.h).
 *
 * Everything here is single-threaded and branch-light so that GCC vectorises the inner
 * loops (-O3 -march=native -fopenmp-simd for the reductions); parallelism comes from
 * one process per core, or from OpenBLAS threads inside sgemm. exp is a Cephes-style
 * polynomial instead of libm's expf because libm's scalar call would not vectorise and
 * dominated softmax, GELU and the vocabulary cross-entropy. */
#include "kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "rng.h"

static inline float bits_to_float(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
static inline uint32_t float_to_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }

static inline float expf_fast(float x) {
    /* Comparisons, not fminf/fmaxf, so that NaN propagates instead of being clamped. */
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    /* Adding 1.5*2^23 rounds x*log2(e) to the integer n held in the low mantissa bits. */
    const float shifter = 12582912.0f;
    float t = x * 1.44269504088896341f + shifter;
    float n = t - shifter;
    uint32_t n_bits = float_to_bits(t) - float_to_bits(shifter);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * bits_to_float((n_bits + 127u) << 23);
}

static inline float tanhf_fast(float x) {
    float e = expf_fast(2.0f * x);
    return 1.0f - 2.0f / (e + 1.0f);
}

float kern_expf(float x) { return expf_fast(x); }
float kern_tanhf(float x) { return tanhf_fast(x); }

void vec_add(float *restrict y, const float *restrict x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void matmul_forward(float *out, const float *in, const float *w, const float *bias,
                    int N, int Cin, int Cout) {
    float beta = 0.0f;
    if (N == 1) { /* one row (decoding a token): sgemv streams w once, sgemm would pack it */
        if (bias) memcpy(out, bias, (size_t)Cout * sizeof(float)), beta = 1.0f;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Cout, Cin, 1.0f, w, Cin, in, 1, beta, out, 1);
        return;
    }
    if (bias) {
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * Cout, bias, (size_t)Cout * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, Cout, Cin, 1.0f, in, Cin, w, Cin,
                beta, out, Cout);
}

void matmul_backward(float *din, float *dw, float *dbias, const float *dout,
                     const float *in, const float *w, int N, int Cin, int Cout,
                     int accumulate_din) {
    if (din)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, Cin, Cout, 1.0f, dout, Cout, w,
                    Cin, accumulate_din ? 1.0f : 0.0f, din, Cin);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Cout, Cin, N, 1.0f, dout, Cout, in,
                    Cin, 1.0f, dw, Cin);
    if (dbias)
        for (int n = 0; n < N; n++) vec_add(dbias, dout + (size_t)n * Cout, (size_t)Cout);
}

void layernorm_forward(float *restrict out, float *restrict mean, float *restrict rstd,
                       const float *restrict x, const float *restrict w,
                       const float *restrict b, int N, int C, float eps) {
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *o = out + (size_t)n * C;
        float m = 0.0f;
#pragma omp simd reduction(+ : m)
        for (int c = 0; c < C; c++) m += xr[c];
        m /= (float)C;
        float v = 0.0f;
#pragma omp simd reduction(+ : v)
        for (int c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
        v /= (float)C;
        float s = 1.0f / sqrtf(v + eps);
        for (int c = 0; c < C; c++) o[c] = (xr[c] - m) * s * w[c] + b[c];
        mean[n] = m;
        rstd[n] = s;
    }
}

void layernorm_backward(float *dx, float *restrict dw, float *restrict db,
                        const float *dout, const float *restrict x,
                        const float *restrict w, const float *restrict mean,
                        const float *restrict rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        const float *dor = dout + (size_t)n * C;
        float *dxr = dx + (size_t)n * C;
        float m = mean[n], s = rstd[n];
        float dnorm_mean = 0.0f, dnorm_xhat_mean = 0.0f;
#pragma omp simd reduction(+ : dnorm_mean, dnorm_xhat_mean)
        for (int c = 0; c < C; c++) {
            float dnorm = w[c] * dor[c];
            dnorm_mean += dnorm;
            dnorm_xhat_mean += dnorm * (xr[c] - m) * s;
        }
        dnorm_mean /= (float)C;
        dnorm_xhat_mean /= (float)C;
        for (int c = 0; c < C; c++) {
            float xhat = (xr[c] - m) * s;
            float d = dor[c];
            if (dw) { /* loop-invariant: GCC unswitches it */
                db[c] += d;
                dw[c] += xhat * d;
            }
            dxr[c] = (w[c] * d - dnorm_mean - xhat * dnorm_xhat_mean) * s;
        }
    }
}

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

void gelu_forward(float *restrict out, const float *restrict x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        out[i] = 0.5f * v * (1.0f + tanhf_fast(GELU_K * (v + GELU_A * v * v * v)));
    }
}

void gelu_backward(float *dx, const float *dout, const float *restrict x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float t = tanhf_fast(GELU_K * (v + GELU_A * v * v * v));
        float du = GELU_K * (1.0f + 3.0f * GELU_A * v * v);
        dx[i] = dout[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
    }
}

/* An element is kept when its 24 random bits reach `thresh`, then scaled by `keep_scale`. */
typedef struct {
    int on;
    uint32_t thresh;
    float keep_scale;
} Dropout;

static Dropout dropout_params(const uint64_t *keys, float p) {
    Dropout d = {keys && p > 0.0f, (uint32_t)(p * 16777216.0f), 1.0f};
    if (d.on) d.keep_scale = 1.0f / (1.0f - p);
    return d;
}

void dropout_apply(float *x, int rows, size_t n, const uint64_t *keys, uint64_t site,
                   float p) {
    Dropout d = dropout_params(keys, p);
    if (!d.on) return;
    for (int r = 0; r < rows; r++) {
        uint64_t key = rng_key(keys[r], site);
        float *xr = x + (size_t)r * n;
        for (size_t i = 0; i < n; i++)
            xr[i] = rng_bits24_at(key, i) >= d.thresh ? xr[i] * d.keep_scale : 0.0f;
    }
}

void embedding_forward(float *out, const int *tokens, const float *wte, const float *wpe,
                       int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *te = wte + (size_t)tokens[b * T + t] * C;
            const float *pe = wpe + (size_t)t * C;
            for (int c = 0; c < C; c++) o[c] = te[c] + pe[c];
        }
}

void embedding_backward(float *dwte, float *dwpe, const float *dout, const int *tokens,
                        int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *d = dout + ((size_t)b * T + t) * C;
            vec_add(dwte + (size_t)tokens[b * T + t] * C, d, (size_t)C);
            vec_add(dwpe + (size_t)t * C, d, (size_t)C);
        }
}

/* Index of attention probability (h, i, j) in its row's dropout stream. */
static inline uint64_t att_index(int h, int i, int T) { return ((uint64_t)h * T + i) * T; }

/* Scaled scores of query rows [r0, r0+rows) against keys [0, r0+rows), into s
 * (rows, ncols). Only the causal part j <= i is used afterwards. */
static void attention_scores(float *s, const float *q, const float *k, int r0, int rows,
                             int hs, int C3, float scale) {
    int ncols = r0 + rows;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, ncols, hs, scale,
                q + (size_t)r0 * C3, C3, k, C3, 0.0f, s, ncols);
}

void attention_forward(float *y, float *lse, const float *qkv, int B, int T, int C,
                       int H, float *s, const uint64_t *keys, uint64_t site, float p) {
    int hs = C / H, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    Dropout d = dropout_params(keys, p);
    for (int b = 0; b < B; b++) {
        uint64_t key = d.on ? rng_key(keys[b], site) : 0;
        for (int h = 0; h < H; h++) {
            const float *q = qkv + (size_t)b * T * C3 + h * hs;
            const float *k = q + C, *v = q + 2 * C;
            float *yb = y + (size_t)b * T * C + h * hs;
            float *l = lse + ((size_t)b * H + h) * T;
            for (int r0 = 0; r0 < T; r0 += ATT_BLOCK) {
                int rows = T - r0 < ATT_BLOCK ? T - r0 : ATT_BLOCK;
                int ncols = r0 + rows;
                attention_scores(s, q, k, r0, rows, hs, C3, scale);
                for (int i = 0; i < rows; i++) {
                    float *si = s + (size_t)i * ncols;
                    int len = r0 + i + 1;
                    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
                    for (int j = 0; j < len; j++) mx = si[j] > mx ? si[j] : mx;
                    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
                    for (int j = 0; j < len; j++) {
                        si[j] = expf_fast(si[j] - mx);
                        sum += si[j];
                    }
                    l[r0 + i] = mx + logf(sum);
                    float inv = d.keep_scale / sum;
                    if (d.on) {
                        uint64_t base = att_index(h, r0 + i, T);
                        for (int j = 0; j < len; j++)
                            si[j] = rng_bits24_at(key, base + j) >= d.thresh ? si[j] * inv : 0.0f;
                    } else {
                        for (int j = 0; j < len; j++) si[j] *= inv;
                    }
                    for (int j = len; j < ncols; j++) si[j] = 0.0f;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hs, ncols, 1.0f,
                            s, ncols, v, C3, 0.0f, yb + (size_t)r0 * C, C);
            }
        }
    }
}

void attention_backward(float *dqkv, const float *dy, const float *qkv, const float *lse,
                        int B, int T, int C, int H, float *s, float *dp,
                        const uint64_t *keys, uint64_t site, float p) {
    int hs = C / H, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    Dropout d = dropout_params(keys, p);
    memset(dqkv, 0, (size_t)B * T * C3 * sizeof(float));
    for (int b = 0; b < B; b++) {
        uint64_t key = d.on ? rng_key(keys[b], site) : 0;
        for (int h = 0; h < H; h++) {
            const float *q = qkv + (size_t)b * T * C3 + h * hs;
            const float *k = q + C, *v = q + 2 * C;
            float *dq = dqkv + (size_t)b * T * C3 + h * hs;
            float *dk = dq + C, *dv = dq + 2 * C;
            const float *dyb = dy + (size_t)b * T * C + h * hs;
            const float *l = lse + ((size_t)b * H + h) * T;
            for (int r0 = 0; r0 < T; r0 += ATT_BLOCK) {
                int rows = T - r0 < ATT_BLOCK ? T - r0 : ATT_BLOCK;
                int ncols = r0 + rows;
                attention_scores(s, q, k, r0, rows, hs, C3, scale);
                /* dp = dY V^T: gradient w.r.t. the (dropped-out) probabilities */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, ncols, hs, 1.0f,
                            dyb + (size_t)r0 * C, C, v, C3, 0.0f, dp, ncols);
                for (int i = 0; i < rows; i++) {
                    float *si = s + (size_t)i * ncols, *dpi = dp + (size_t)i * ncols;
                    int len = r0 + i + 1;
                    float li = l[r0 + i];
                    uint64_t base = att_index(h, r0 + i, T);
                    /* s <- P; dp <- dL/dP through the mask; D = sum_j P dL/dP */
                    float D = 0.0f;
                    if (d.on) {
#pragma omp simd reduction(+ : D)
                        for (int j = 0; j < len; j++) {
                            float pj = expf_fast(si[j] - li);
                            float m = rng_bits24_at(key, base + j) >= d.thresh ? d.keep_scale : 0.0f;
                            si[j] = pj;
                            dpi[j] *= m;
                            D += pj * dpi[j];
                        }
                    } else {
#pragma omp simd reduction(+ : D)
                        for (int j = 0; j < len; j++) {
                            float pj = expf_fast(si[j] - li);
                            si[j] = pj;
                            D += pj * dpi[j];
                        }
                    }
                    /* dp <- dS = P (dP - D); s <- the dropped-out P that multiplied V */
                    for (int j = 0; j < len; j++) dpi[j] = si[j] * (dpi[j] - D);
                    if (d.on)
                        for (int j = 0; j < len; j++)
                            si[j] = rng_bits24_at(key, base + j) >= d.thresh ? si[j] * d.keep_scale : 0.0f;
                    for (int j = len; j < ncols; j++) si[j] = dpi[j] = 0.0f;
                }
                /* dV += P_d^T dY, dQ = scale dS K, dK += scale dS^T Q */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ncols, hs, rows, 1.0f, s,
                            ncols, dyb + (size_t)r0 * C, C, 1.0f, dv, C3);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hs, ncols, scale,
                            dp, ncols, k, C3, 0.0f, dq + (size_t)r0 * C3, C3);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ncols, hs, rows, scale, dp,
                            ncols, q + (size_t)r0 * C3, C3, 1.0f, dk, C3);
            }
        }
    }
}

double softmax_xent(float *logits, const int *targets, int N, int V, float grad_scale) {
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        float *row = logits + (size_t)n * V;
        int t = targets[n];
        if (t < 0) { /* ignored position: no loss, no gradient */
            if (grad_scale != 0.0f) memset(row, 0, sizeof(float) * (size_t)V);
            continue;
        }
        float target_logit = row[t];
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int v = 0; v < V; v++) mx = row[v] > mx ? row[v] : mx;
        float sum = 0.0f;
        if (grad_scale != 0.0f) {
#pragma omp simd reduction(+ : sum)
            for (int v = 0; v < V; v++) {
                row[v] = expf_fast(row[v] - mx);
                sum += row[v];
            }
            float g = grad_scale / sum;
            for (int v = 0; v < V; v++) row[v] *= g;
            row[t] -= grad_scale;
        } else {
#pragma omp simd reduction(+ : sum)
            for (int v = 0; v < V; v++) sum += expf_fast(row[v] - mx);
        }
        total += (double)(mx + logf(sum) - target_logit);
    }
    return total;
}
