/* kernel_set.h: the table of one compiled kernel set (internal to src/cpu/kernels.c and
 * src/cpu/kernel_set.c; everyone else includes kernels.h).
 *
 * KERNELS(V, R) lists every dispatched function once: V for those returning void,
 * R(type, ...) for the others, each with its parameter list and the argument list that
 * forwards it. The table type, each set's table and the public forwarding functions
 * are all generated from this list, so they cannot drift apart. */
#ifndef GPT_KERNEL_SET_H
#define GPT_KERNEL_SET_H

#include "cpu/kernels.h"

#define KERNELS(V, R)                                                                          \
    R(float, kern_expf, (float x), (x))                                                        \
    R(float, kern_tanhf, (float x), (x))                                                       \
    V(matmul_forward, (float *out, const float *in, const float *w, const float *bias, int N,  \
                       int Cin, int Cout), (out, in, w, bias, N, Cin, Cout))                   \
    V(matmul_backward, (float *din, float *dw, float *dbias, const float *dout,                \
                        const float *in, const float *w, int N, int Cin, int Cout,             \
                        int accumulate_din), (din, dw, dbias, dout, in, w, N, Cin, Cout,       \
                                              accumulate_din))                                 \
    V(layernorm_forward, (float *out, float *mean, float *rstd, const float *x,                \
                          const float *w, const float *b, int N, int C, float eps),            \
      (out, mean, rstd, x, w, b, N, C, eps))                                                   \
    V(layernorm_backward, (float *dx, float *dw, float *db, const float *dout, const float *x, \
                           const float *w, const float *mean, const float *rstd, int N,       \
                           int C), (dx, dw, db, dout, x, w, mean, rstd, N, C))                 \
    V(gelu_forward, (float *out, const float *x, size_t n), (out, x, n))                       \
    V(gelu_backward, (float *dx, const float *dout, const float *x, size_t n), (dx, dout, x, n)) \
    V(dropout_apply, (float *x, int rows, size_t n, const uint64_t *keys, uint64_t site,       \
                      float p), (x, rows, n, keys, site, p))                                   \
    V(embedding_forward, (float *out, const int *tokens, const float *wte, const float *wpe,   \
                          int B, int T, int C), (out, tokens, wte, wpe, B, T, C))              \
    V(embedding_backward, (float *dwte, float *dwpe, const float *dout, const int *tokens,     \
                           int B, int T, int C), (dwte, dwpe, dout, tokens, B, T, C))          \
    V(attention_forward, (float *y, float *lse, const float *qkv, int B, int T, int C, int H,  \
                          float *s, int slots, const uint64_t *keys, uint64_t site, float p,   \
                          int bf16), (y, lse, qkv, B, T, C, H, s, slots, keys, site, p, bf16))  \
    V(attention_backward, (float *dqkv, const float *dy, const float *qkv, const float *lse,   \
                           int B, int T, int C, int H, float *s, float *dp, int slots,         \
                           const uint64_t *keys, uint64_t site, float p, int bf16),            \
      (dqkv, dy, qkv, lse, B, T, C, H, s, dp, slots, keys, site, p, bf16))                     \
    V(attention_cached, (float *y, const float *qkv, const float *K, const float *V,           \
                         int pos0, int n, int C, int H, float *s, int slots, int bf16),        \
      (y, qkv, K, V, pos0, n, C, H, s, slots, bf16))                                           \
    R(double, softmax_xent, (float *logits, const int *targets, int N, int V, float grad_scale), \
      (logits, targets, N, V, grad_scale))                                                     \
    V(vec_add, (float *y, const float *x, size_t n), (y, x, n))                                \
    V(vec_sum, (float *out, const float *a, const float *b, size_t n), (out, a, b, n))         \
    R(double, sum_squares, (const float *x, size_t n), (x, n))                                 \
    V(bf16_round, (float *out, const float *x, size_t n), (out, x, n))                         \
    V(bf16_pack, (uint16_t *out, const float *x, int rows, int cols, int transpose),           \
      (out, x, rows, cols, transpose))                                                         \
    V(bf16_unpack, (float *out, const uint16_t *x, size_t n), (out, x, n))                     \
    V(adamw_update, (float *p, float *m, float *v, const float *g, size_t n,                   \
                     const AdamWCoeffs *k), (p, m, v, g, n, k))

#define KERNEL_SET_FIELD_V(name, params, args) void(*name) params;
#define KERNEL_SET_FIELD_R(type, name, params, args) type(*name) params;
typedef struct {
    const char *name;
    KERNELS(KERNEL_SET_FIELD_V, KERNEL_SET_FIELD_R)
} KernelSet;

extern const KernelSet kernels_avx2, kernels_avx512;

#endif
