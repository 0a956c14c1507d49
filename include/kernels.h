/* kernels.h: the numeric building blocks of the model, pure functions on float arrays.
 *
 * No MPI, no HDF5, no allocation: callers pass every buffer. Dense products go through
 * cblas_sgemm; the rest are fused loops written so that GCC vectorises them
 * (exp and tanh are polynomial approximations to a few ulp, not libm calls).
 * Shapes use N for rows (N = B*T), C for features. Backward kernels accumulate (+=)
 * into parameter gradients and, where noted, into input gradients. */
#ifndef GPT_KERNELS_H
#define GPT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Rows of the attention score block processed at once. */
#define ATT_BLOCK 64

/* exp(x) for x in float range, relative error < 3e-7; vectorisable. */
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
 * row's log-sum-exp for the backward pass. s is scratch of ATT_BLOCK*T floats.
 * Attention dropout (probability p, one key per batch row, site `site`) is applied to
 * the probabilities as dropout_apply does, probability (h, i, j) being element
 * (h T + i) T + j of its row's stream. */
void attention_forward(float *y, float *lse, const float *qkv, int B, int T, int C,
                       int H, float *s, const uint64_t *keys, uint64_t site, float p);
/* dqkv (B,T,3C) = gradient w.r.t. qkv (overwritten), recomputing the probabilities
 * from qkv and lse. s, dp: scratch of ATT_BLOCK*T floats each. */
void attention_backward(float *dqkv, const float *dy, const float *qkv, const float *lse,
                        int B, int T, int C, int H, float *s, float *dp,
                        const uint64_t *keys, uint64_t site, float p);

/* Cross-entropy over rows of logits (N,V) in place: returns the sum of -log p[target]
 * and, when grad_scale != 0, overwrites logits with grad_scale * (softmax - onehot).
 * A row whose target is negative (padding) adds nothing and gets a zero gradient. */
double softmax_xent(float *logits, const int *targets, int N, int V, float grad_scale);

/* y += x */
void vec_add(float *y, const float *x, size_t n);

#endif
