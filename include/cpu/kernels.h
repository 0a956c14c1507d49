/* kernels.h: the numeric building blocks of the model, pure functions on float arrays.
 *
 * No MPI, no HDF5, no allocation: callers pass every buffer. Dense products go through
 * cblas_sgemm; the rest are fused loops written so that GCC vectorises them (exp and
 * tanh are branch-free polynomial approximations to a few ulp, not libm calls).
 * Shapes use N for rows (N = B*T), C for features. Backward kernels accumulate (+=)
 * into parameter gradients and, where noted, into input gradients.
 *
 * Kernel sets. src/cpu/kernels.c is compiled twice, for AVX2+FMA (x86-64-v3) and for
 * AVX-512 (x86-64-v4); the functions below forward to the set chosen once, at the first
 * call, from the CPU (or from GPT_KERNELS=avx2|avx512), so one binary runs on every node
 * of a cluster with the best code for each.
 *
 * Threads. Every kernel runs on the OpenMP threads of the calling thread (the count set
 * by compute_threads_set in blas.h, which OpenBLAS shares); call them from outside a
 * parallel region. Work is split into pieces whose boundaries do not depend on the
 * thread count, and every sum over rows is taken in row order, so each kernel's result
 * is bit-identical for any thread count. The one exception is cblas_sgemm itself, which
 * OpenBLAS splits by rows and columns of the output, never along the inner dimension. */
#ifndef GPT_KERNELS_H
#define GPT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Rows of the attention score block processed at once. */
#define ATT_BLOCK 64

/* Chooses the kernel set: "avx2", "avx512", or NULL/"auto" for the best the CPU runs.
 * -1 with a message when the CPU cannot run the set asked for or the name is unknown.
 * Without a call, the first kernel call chooses from GPT_KERNELS, else the CPU. */
int kernels_select(const char *name);
/* kernels_select(GPT_KERNELS from the environment): what a program calls first. */
int kernels_select_from_env(void);
/* The set in use ("avx2" or "avx512"), choosing it first if needed. */
const char *kernels_name(void);
/* 1 when this CPU can run the named set. */
int kernels_supported(const char *name);

/* exp(x) for x in float range, relative error < 3e-7; NaN in, NaN out. */
float kern_expf(float x);
/* tanh(x) through kern_expf, absolute error < 3e-7. */
float kern_tanhf(float x);

/* out (N,Cout) = in (N,Cin) @ w^T (Cout,Cin) + bias (Cout); bias may be NULL. */
void matmul_forward(float *out, const float *in, const float *w, const float *bias,
                    int N, int Cin, int Cout);
/* dw (Cout,Cin) += dout^T @ in; dbias (Cout) += column sums of dout; din (N,Cin) =
 * dout @ w, or += when accumulate_din. Any of din, dw, dbias may be NULL (a frozen
 * weight needs only din). */
void matmul_backward(float *din, float *dw, float *dbias, const float *dout,
                     const float *in, const float *w, int N, int Cin, int Cout,
                     int accumulate_din);

/* out = (x - mean) * rstd * w + b per row; mean and rstd (N) saved for backward. */
void layernorm_forward(float *out, float *mean, float *rstd, const float *x,
                       const float *w, const float *b, int N, int C, float eps);
/* dx (N,C) = gradient w.r.t. x (overwritten); dw, db (C) accumulated unless dw is NULL
 * (frozen). dx may alias dout. */
void layernorm_backward(float *dx, float *dw, float *db, const float *dout,
                        const float *x, const float *w, const float *mean,
                        const float *rstd, int N, int C);

/* GELU, tanh form. */
void gelu_forward(float *out, const float *x, size_t n);
/* dx = dout * gelu'(x); dx may alias dout. */
void gelu_backward(float *dx, const float *dout, const float *x, size_t n);

/* Inverted dropout driven by the counter-based RNG: element i of row r is kept when
 * rng_bits24_at(rng_key(keys[r], site), i) >= (uint32_t)(p * 2^24) and then scaled by
 * 1/(1-p), else zeroed.
 * x (rows, n) is modified in place; the same call with the gradient applies the
 * same mask in the backward pass. keys NULL or p == 0: no-op. */
void dropout_apply(float *x, int rows, size_t n, const uint64_t *keys, uint64_t site,
                   float p);

/* out (B,T,C) = wte[tok] + wpe[t]. */
void embedding_forward(float *out, const int *tokens, const float *wte,
                       const float *wpe, int B, int T, int C);
/* dwte[tok] += dout, dwpe[t] += dout. */
void embedding_backward(float *dwte, float *dwpe, const float *dout, const int *tokens,
                        int B, int T, int C);

/* Causal multi-head attention over qkv (B,T,3C) into y (B,T,C); lse (B,H,T) saves each
 * row's log-sum-exp for the backward pass. s is scratch of `slots` blocks of
 * ATT_BLOCK*T floats: one per thread, so at most `slots` threads work on it.
 * Attention dropout (probability p, one key per batch row, site `site`) is applied to
 * the probabilities as dropout_apply does, probability (h, i, j) being element
 * (h T + i) T + j of its row's stream.
 * bf16 (docs/precision.md): the caller has rounded q, k and v to bf16 (qkv holds bf16
 * values); the probabilities are rounded before P V, so both products take bf16
 * operands and sum in fp32 (cblas_sgemm of bf16 values: every product is exact). */
void attention_forward(float *y, float *lse, const float *qkv, int B, int T, int C,
                       int H, float *s, int slots, const uint64_t *keys, uint64_t site,
                       float p, int bf16);
/* dqkv (B,T,3C) = gradient w.r.t. qkv (overwritten), recomputing the probabilities
 * from qkv and lse. s, dp: scratch of `slots` blocks of ATT_BLOCK*T floats each.
 * bf16: qkv and dy hold bf16 values (the caller rounded them); the probabilities and the
 * scores' gradient (scale dS, the gradient of q k^T) are rounded before their products. */
void attention_backward(float *dqkv, const float *dy, const float *qkv, const float *lse,
                        int B, int T, int C, int H, float *s, float *dp, int slots,
                        const uint64_t *keys, uint64_t site, float p, int bf16);
/* Attention of n new rows (positions pos0 .. pos0+n-1, their q in qkv (n,3C)) over a
 * key/value cache K, V (pos0+n, C) that already holds them: y (n,C). s is scratch of
 * `slots` blocks of pos0+n floats. bf16: q, K and V hold bf16 values; the probabilities
 * are rounded before they weight V. */
void attention_cached(float *y, const float *qkv, const float *K, const float *V,
                      int pos0, int n, int C, int H, float *s, int slots, int bf16);

/* Cross-entropy over rows of logits (N,V) in place: returns the sum of -log p[target]
 * and, when grad_scale != 0, overwrites logits with grad_scale * (softmax - onehot).
 * A row whose target is negative (padding) adds nothing and gets a zero gradient. */
double softmax_xent(float *logits, const int *targets, int N, int V, float grad_scale);

/* y += x */
void vec_add(float *y, const float *x, size_t n);
/* out = a + b; out may alias a or b. */
void vec_sum(float *out, const float *a, const float *b, size_t n);
/* Sum of squares, accumulated in double over blocks of float sums. */
double sum_squares(const float *x, size_t n);

/* bf16 rounding (docs/precision.md): round to nearest, ties to even, of the top 16 bits
 * of a float; NaN stays a quiet NaN of the same sign, infinities stay, and denormal
 * inputs become zero of their sign, as vcvtneps2bf16 and AMX treat them.
 * bf16_round: out (n) = the rounded values as floats (exact); out may alias x.
 * bf16_pack: out = the rounded values' 16 bits of x (rows, cols), row-major, or with
 * transpose its transpose (cols, rows).
 * bf16_unpack: out (n) = the floats of the bf16 bits x (exact: the bits become the top half). */
void bf16_round(float *out, const float *x, size_t n);
void bf16_pack(uint16_t *out, const float *x, int rows, int cols, int transpose);
void bf16_unpack(float *out, const uint16_t *x, size_t n);

/* One AdamW update of n parameters (optim.h has the formula). */
typedef struct {
    float grad_scale;            /* clipping factor applied to the gradient */
    float beta1, beta2, eps;
    float step_size;             /* lr / (1 - beta1^t) */
    float bc2_sqrt;              /* sqrt(1 - beta2^t) */
    float decay;                 /* 1 - lr * weight_decay, or 1 */
} AdamWCoeffs;
void adamw_update(float *p, float *m, float *v, const float *g, size_t n,
                  const AdamWCoeffs *k);

#endif
