/* kernels.c: numeric building blocks (see kernels.h), compiled once per kernel set.
 *
 * The Makefile builds this file twice, with -DKERNEL_ISA=avx2 -march=x86-64-v3 and with
 * -DKERNEL_ISA=avx512 -march=x86-64-v4; each object exports only its table
 * (kernels_avx2, kernels_avx512) and kernel_set.c forwards to one of them.
 *
 * The loops are branch-free so that GCC vectorises them with either instruction set:
 * exp is a Cephes-style polynomial instead of libm's expf (a scalar call that dominated
 * softmax, GELU and the cross-entropy), and its clamps are selects that GCC turns into
 * blends (-fno-trapping-math lets it: with trapping math a comparison that may raise
 * an exception is kept as a branch, and the loop stays scalar on AVX2).
 *
 * Threads: each kernel splits its work with OpenMP into pieces fixed by the shapes
 * alone (rows, column chunks, (batch, head) pairs, blocks), never by the thread
 * count, and sums over rows run in row order inside one piece; see kernels.h. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "base/rng.h"
#include "cpu/kernel_set.h"

#ifndef KERNEL_ISA
#error "build with -DKERNEL_ISA=avx2 or -DKERNEL_ISA=avx512 (see the Makefile)"
#endif
#define KERNEL_SET_TABLE_(isa) kernels_##isa
#define KERNEL_SET_TABLE(isa) KERNEL_SET_TABLE_(isa)
#define STR_(x) #x
#define STR(x) STR_(x)

/* Elementwise loops below this many elements stay on one thread: starting the team
 * costs about a microsecond, as much as a few thousand floats of work. */
#define PAR_MIN 16384
/* Column chunk of the kernels that sum over rows per column: 64 floats, a whole number
 * of cache lines and vector registers. */
#define COL_CHUNK 64
/* Elementwise work is split into chunks of this many floats. */
#define ELEM_CHUNK 8192

static inline float bits_to_float(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
static inline uint32_t float_to_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }

static inline float expf_fast(float x) {
    /* Selects, not fminf/fmaxf: NaN fails both comparisons and propagates. */
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

static float k_kern_expf(float x) { return expf_fast(x); }
static float k_kern_tanhf(float x) { return tanhf_fast(x); }

static inline size_t chunks(size_t n, size_t chunk) { return (n + chunk - 1) / chunk; }
/* One past the last element of elementwise chunk ch of n. */
static inline size_t chunk_end(size_t ch, size_t n) {
    return (ch + 1) * ELEM_CHUNK < n ? (ch + 1) * ELEM_CHUNK : n;
}

static void k_vec_add(float *restrict y, const float *restrict x, size_t n) {
    size_t n_chunks = chunks(n, ELEM_CHUNK);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t ch = 0; ch < n_chunks; ch++) {
        for (size_t i = ch * ELEM_CHUNK, end = chunk_end(ch, n); i < end; i++) y[i] += x[i];
    }
}

static void k_vec_sum(float *out, const float *a, const float *b, size_t n) {
    size_t n_chunks = chunks(n, ELEM_CHUNK);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t ch = 0; ch < n_chunks; ch++) {
        size_t end = chunk_end(ch, n);
#pragma omp simd
        for (size_t i = ch * ELEM_CHUNK; i < end; i++) out[i] = a[i] + b[i];
    }
}

/* 4096-float blocks summed in float (vectorised), blocks added in double. A group of
 * SUMSQ_GROUP blocks is one piece of work; groups are added in order. */
#define SUMSQ_BLOCK 4096
#define SUMSQ_GROUP 64
static double k_sum_squares(const float *x, size_t n) {
    size_t group = (size_t)SUMSQ_BLOCK * SUMSQ_GROUP, n_groups = chunks(n, group);
    double total = 0.0;
    enum { BATCH = 256 }; /* groups per parallel pass: a fixed array, no allocation */
    double part[BATCH];
    for (size_t g0 = 0; g0 < n_groups; g0 += BATCH) {
        size_t ng = n_groups - g0 < BATCH ? n_groups - g0 : BATCH;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t g = 0; g < ng; g++) {
            size_t start = (g0 + g) * group, stop = start + group < n ? start + group : n;
            double acc = 0.0;
            for (size_t i = start; i < stop; i += SUMSQ_BLOCK) {
                size_t end = i + SUMSQ_BLOCK < stop ? i + SUMSQ_BLOCK : stop;
                float s = 0.0f;
#pragma omp simd reduction(+ : s)
                for (size_t j = i; j < end; j++) s += x[j] * x[j];
                acc += s;
            }
            part[g] = acc;
        }
        for (size_t g = 0; g < ng; g++) total += part[g];
    }
    return total;
}

/* The bf16 bits of f (kernels.h): a branch-free select chain, so that GCC vectorises the
 * loops below with either instruction set. Adding 0x7fff plus the lowest kept bit rounds
 * to nearest even; a carry out of the mantissa correctly gives the next binade or inf. */
static inline uint32_t bf16_bits(float f) {
    uint32_t u = float_to_bits(f), exp = u & 0x7f800000u;
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    r = exp == 0x7f800000u && (u & 0x7fffffu) ? (u >> 16) | 0x40u : r; /* NaN: quiet, not inf */
    return exp == 0 ? (u >> 16) & 0x8000u : r;                          /* zero, denormal: +-0 */
}

static void k_bf16_round(float *out, const float *x, size_t n) {
    size_t n_chunks = chunks(n, ELEM_CHUNK);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t ch = 0; ch < n_chunks; ch++) {
        size_t end = chunk_end(ch, n);
#pragma omp simd
        for (size_t i = ch * ELEM_CHUNK; i < end; i++) out[i] = bits_to_float(bf16_bits(x[i]) << 16);
    }
}

/* Transposed packing goes in tiles of this many rows and columns, so that both the reads
 * and the writes stay within a few cache lines. */
#define PACK_TILE 64

static void k_bf16_pack(uint16_t *out, const float *x, int rows, int cols, int transpose) {
    size_t n = (size_t)rows * cols;
    if (!transpose) {
        size_t n_chunks = chunks(n, ELEM_CHUNK);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t ch = 0; ch < n_chunks; ch++) {
            size_t end = chunk_end(ch, n);
#pragma omp simd
            for (size_t i = ch * ELEM_CHUNK; i < end; i++) out[i] = (uint16_t)bf16_bits(x[i]);
        }
        return;
    }
    int row_tiles = (rows + PACK_TILE - 1) / PACK_TILE, col_tiles = (cols + PACK_TILE - 1) / PACK_TILE;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int t = 0; t < row_tiles * col_tiles; t++) {
        int r0 = t / col_tiles * PACK_TILE, c0 = t % col_tiles * PACK_TILE;
        int r1 = r0 + PACK_TILE < rows ? r0 + PACK_TILE : rows, c1 = c0 + PACK_TILE < cols ? c0 + PACK_TILE : cols;
        for (int c = c0; c < c1; c++)
            for (int r = r0; r < r1; r++) out[(size_t)c * rows + r] = (uint16_t)bf16_bits(x[(size_t)r * cols + c]);
    }
}

static void k_bf16_unpack(float *out, const uint16_t *x, size_t n) {
    size_t n_chunks = chunks(n, ELEM_CHUNK);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t ch = 0; ch < n_chunks; ch++) {
        size_t end = chunk_end(ch, n);
#pragma omp simd
        for (size_t i = ch * ELEM_CHUNK; i < end; i++) out[i] = bits_to_float((uint32_t)x[i] << 16);
    }
}

static inline void round_row(float *x, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) x[i] = bits_to_float(bf16_bits(x[i]) << 16);
}

static void k_adamw_update(float *restrict p, float *restrict m, float *restrict v,
                           const float *restrict g, size_t n, const AdamWCoeffs *k) {
    const float b1 = k->beta1, b2 = k->beta2, gs = k->grad_scale, eps = k->eps;
    const float step_size = k->step_size, bc2_sqrt = k->bc2_sqrt, decay = k->decay;
    size_t n_chunks = chunks(n, ELEM_CHUNK);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t ch = 0; ch < n_chunks; ch++) {
        for (size_t i = ch * ELEM_CHUNK, end = chunk_end(ch, n); i < end; i++) {
            float gi = g[i] * gs;
            m[i] = b1 * m[i] + (1.0f - b1) * gi;
            v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
            p[i] = p[i] * decay - step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
        }
    }
}

/* Matrix products above this many multiply-adds are split across the team by us. */
#define SGEMM_PAR_MIN (1 << 22)
/* Piece boundaries fall on multiples of this many rows or columns. */
#define SGEMM_ALIGN 64

/* C (M,N) = alpha op(A) op(B) + beta C, row-major, on the calling thread's team: each
 * thread makes one single-threaded cblas_sgemm on a slab of C's rows (or of its columns
 * when C is wider than tall). Independent slabs need no synchronisation inside the
 * product, which makes one rank of T threads as fast as T ranks of one; OpenBLAS's own
 * threads wait for each other at every block of the shared operand. */
static void sgemm_team(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
                       const float *A, int lda, const float *B, int ldb, float beta, float *C,
                       int ldc) {
    int team = omp_get_max_threads();
    if (team == 1 || omp_in_parallel() || (double)M * N * K < SGEMM_PAR_MIN) {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int by_rows = M >= N, len = by_rows ? M : N;
    int piece = (len + team - 1) / team;
    piece = (piece + SGEMM_ALIGN - 1) / SGEMM_ALIGN * SGEMM_ALIGN;
    int pieces = (len + piece - 1) / piece;
#pragma omp parallel num_threads(pieces < team ? pieces : team)
    {
        int start = omp_get_thread_num() * piece, count = len - start < piece ? len - start : piece;
        if (by_rows)
            cblas_sgemm(CblasRowMajor, ta, tb, count, N, K, alpha,
                        A + (ta == CblasNoTrans ? (size_t)start * lda : (size_t)start), lda, B, ldb,
                        beta, C + (size_t)start * ldc, ldc);
        else
            cblas_sgemm(CblasRowMajor, ta, tb, M, count, K, alpha, A, lda,
                        B + (tb == CblasNoTrans ? (size_t)start : (size_t)start * ldb), ldb, beta,
                        C + start, ldc);
    }
}

static void k_matmul_forward(float *out, const float *in, const float *w, const float *bias,
                             int N, int Cin, int Cout) {
    float beta = 0.0f;
    if (N == 1) { /* one row (decoding a token): sgemv streams w once, sgemm would pack it */
        if (bias) memcpy(out, bias, (size_t)Cout * sizeof(float)), beta = 1.0f;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Cout, Cin, 1.0f, w, Cin, in, 1, beta, out, 1);
        return;
    }
    if (bias) {
#pragma omp parallel for schedule(static) if ((size_t)N * Cout >= PAR_MIN)
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * Cout, bias, (size_t)Cout * sizeof(float));
        beta = 1.0f;
    }
    sgemm_team(CblasNoTrans, CblasTrans, N, Cout, Cin, 1.0f, in, Cin, w, Cin, beta, out, Cout);
}

static void k_matmul_backward(float *din, float *dw, float *dbias, const float *dout,
                              const float *in, const float *w, int N, int Cin, int Cout,
                              int accumulate_din) {
    if (din)
        sgemm_team(CblasNoTrans, CblasNoTrans, N, Cin, Cout, 1.0f, dout, Cout, w, Cin,
                   accumulate_din ? 1.0f : 0.0f, din, Cin);
    if (dw)
        sgemm_team(CblasTrans, CblasNoTrans, Cout, Cin, N, 1.0f, dout, Cout, in, Cin, 1.0f, dw, Cin);
    if (dbias) { /* by column chunks, each summing the rows in order */
#pragma omp parallel for schedule(static) if ((size_t)N * Cout >= PAR_MIN)
        for (int c0 = 0; c0 < Cout; c0 += COL_CHUNK) {
            int c1 = c0 + COL_CHUNK < Cout ? c0 + COL_CHUNK : Cout;
            for (int n = 0; n < N; n++) {
                const float *d = dout + (size_t)n * Cout;
                for (int c = c0; c < c1; c++) dbias[c] += d[c];
            }
        }
    }
}

static void k_layernorm_forward(float *restrict out, float *restrict mean, float *restrict rstd,
                                const float *restrict x, const float *restrict w,
                                const float *restrict b, int N, int C, float eps) {
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
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

static void k_layernorm_backward(float *dx, float *restrict dw, float *restrict db,
                                 const float *dout, const float *restrict x,
                                 const float *restrict w, const float *restrict mean,
                                 const float *restrict rstd, int N, int C) {
    int par = (size_t)N * C >= PAR_MIN;
    /* dw, db first, by column chunks over the rows in order: dx may overwrite dout. */
    if (dw) {
#pragma omp parallel for schedule(static) if (par)
        for (int c0 = 0; c0 < C; c0 += COL_CHUNK) {
            int c1 = c0 + COL_CHUNK < C ? c0 + COL_CHUNK : C;
            for (int n = 0; n < N; n++) {
                const float *xr = x + (size_t)n * C, *dor = dout + (size_t)n * C;
                float m = mean[n], s = rstd[n];
                for (int c = c0; c < c1; c++) {
                    db[c] += dor[c];
                    dw[c] += (xr[c] - m) * s * dor[c];
                }
            }
        }
    }
#pragma omp parallel for schedule(static) if (par)
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
            dxr[c] = (w[c] * dor[c] - dnorm_mean - xhat * dnorm_xhat_mean) * s;
        }
    }
}

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

static void k_gelu_forward(float *restrict out, const float *restrict x, size_t n) {
    size_t n_chunks = chunks(n, ELEM_CHUNK);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t ch = 0; ch < n_chunks; ch++) {
        for (size_t i = ch * ELEM_CHUNK, end = chunk_end(ch, n); i < end; i++) {
            float v = x[i];
            out[i] = 0.5f * v * (1.0f + tanhf_fast(GELU_K * (v + GELU_A * v * v * v)));
        }
    }
}

static void k_gelu_backward(float *dx, const float *dout, const float *restrict x, size_t n) {
    size_t n_chunks = chunks(n, ELEM_CHUNK);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t ch = 0; ch < n_chunks; ch++) {
        for (size_t i = ch * ELEM_CHUNK, end = chunk_end(ch, n); i < end; i++) {
            float v = x[i];
            float t = tanhf_fast(GELU_K * (v + GELU_A * v * v * v));
            float du = GELU_K * (1.0f + 3.0f * GELU_A * v * v);
            dx[i] = dout[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
        }
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

static void k_dropout_apply(float *x, int rows, size_t n, const uint64_t *keys, uint64_t site,
                            float p) {
    Dropout d = dropout_params(keys, p);
    if (!d.on) return;
    size_t per_row = chunks(n, ELEM_CHUNK);
#pragma omp parallel for schedule(static) if ((size_t)rows * n >= PAR_MIN)
    for (size_t piece = 0; piece < (size_t)rows * per_row; piece++) {
        size_t r = piece / per_row, i0 = piece % per_row * ELEM_CHUNK;
        size_t i1 = i0 + ELEM_CHUNK < n ? i0 + ELEM_CHUNK : n;
        uint64_t key = rng_key(keys[r], site);
        float *xr = x + r * n;
        for (size_t i = i0; i < i1; i++)
            xr[i] = rng_bits24_at(key, i) >= d.thresh ? xr[i] * d.keep_scale : 0.0f;
    }
}

static void k_embedding_forward(float *out, const int *tokens, const float *wte, const float *wpe,
                                int B, int T, int C) {
#pragma omp parallel for schedule(static) if ((size_t)B * T * C >= PAR_MIN)
    for (int bt = 0; bt < B * T; bt++) {
        float *o = out + (size_t)bt * C;
        const float *te = wte + (size_t)tokens[bt] * C;
        const float *pe = wpe + (size_t)(bt % T) * C;
        for (int c = 0; c < C; c++) o[c] = te[c] + pe[c];
    }
}

static void k_embedding_backward(float *dwte, float *dwpe, const float *dout, const int *tokens,
                                 int B, int T, int C) {
    /* By column chunks, each walking the rows in order: a token that repeats gets its
     * gradients added in the same order on any number of threads. */
#pragma omp parallel for schedule(static) if ((size_t)B * T * C >= PAR_MIN)
    for (int c0 = 0; c0 < C; c0 += COL_CHUNK) {
        int c1 = c0 + COL_CHUNK < C ? c0 + COL_CHUNK : C;
        for (int bt = 0; bt < B * T; bt++) {
            const float *d = dout + (size_t)bt * C;
            float *te = dwte + (size_t)tokens[bt] * C, *pe = dwpe + (size_t)(bt % T) * C;
            for (int c = c0; c < c1; c++) te[c] += d[c];
            for (int c = c0; c < c1; c++) pe[c] += d[c];
        }
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

/* Attention below this many multiply-adds stays on one thread (a team costs more). */
#define ATT_PAR_MIN (1 << 20)

/* Threads for a loop over `items` independent pieces with `slots` scratch blocks, doing
 * `work` multiply-adds in all. */
static inline int team_size(int items, int slots, size_t work) {
    if (work < ATT_PAR_MIN) return 1;
    int t = omp_get_max_threads();
    t = t < slots ? t : slots;
    return t < items ? t : items;
}

static void attention_forward_head(float *y, float *lse, const float *qkv, int b, int h, int T,
                                   int C, int H, float *s, const Dropout *d, uint64_t key, int bf16) {
    int hs = C / H, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
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
            float inv = d->keep_scale / sum;
            if (d->on) {
                uint64_t base = att_index(h, r0 + i, T);
                for (int j = 0; j < len; j++)
                    si[j] = rng_bits24_at(key, base + j) >= d->thresh ? si[j] * inv : 0.0f;
            } else {
                for (int j = 0; j < len; j++) si[j] *= inv;
            }
            for (int j = len; j < ncols; j++) si[j] = 0.0f;
            if (bf16) round_row(si, len);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hs, ncols, 1.0f, s, ncols,
                    v, C3, 0.0f, yb + (size_t)r0 * C, C);
    }
}

static void k_attention_forward(float *y, float *lse, const float *qkv, int B, int T, int C,
                                int H, float *s, int slots, const uint64_t *keys, uint64_t site,
                                float p, int bf16) {
    Dropout d = dropout_params(keys, p);
    size_t block = (size_t)ATT_BLOCK * T;
#pragma omp parallel num_threads(team_size(B * H, slots, (size_t)B * T * T * C))
    {
        float *mine = s + (size_t)omp_get_thread_num() * block;
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            int b = bh / H, h = bh % H;
            uint64_t key = d.on ? rng_key(keys[b], site) : 0;
            attention_forward_head(y, lse, qkv, b, h, T, C, H, mine, &d, key, bf16);
        }
    }
}

static void attention_backward_head(float *dqkv, const float *dy, const float *qkv,
                                    const float *lse, int b, int h, int T, int C, int H,
                                    float *s, float *dp, const Dropout *d, uint64_t key, int bf16) {
    int hs = C / H, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    const float *q = qkv + (size_t)b * T * C3 + h * hs;
    const float *k = q + C, *v = q + 2 * C;
    float *dq = dqkv + (size_t)b * T * C3 + h * hs;
    float *dk = dq + C, *dv = dq + 2 * C;
    const float *dyb = dy + (size_t)b * T * C + h * hs;
    const float *l = lse + ((size_t)b * H + h) * T;
    /* dq is overwritten block by block; dk and dv accumulate over blocks */
    for (int t = 0; t < T; t++) {
        memset(dk + (size_t)t * C3, 0, (size_t)hs * sizeof(float));
        memset(dv + (size_t)t * C3, 0, (size_t)hs * sizeof(float));
    }
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
            if (d->on) {
#pragma omp simd reduction(+ : D)
                for (int j = 0; j < len; j++) {
                    float pj = expf_fast(si[j] - li);
                    float m = rng_bits24_at(key, base + j) >= d->thresh ? d->keep_scale : 0.0f;
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
            if (d->on)
                for (int j = 0; j < len; j++)
                    si[j] = rng_bits24_at(key, base + j) >= d->thresh ? si[j] * d->keep_scale : 0.0f;
            for (int j = len; j < ncols; j++) si[j] = dpi[j] = 0.0f;
            if (bf16) { /* the operands of the three products below: P_d and scale dS */
                for (int j = 0; j < len; j++) dpi[j] *= scale;
                round_row(si, len);
                round_row(dpi, len);
            }
        }
        /* dV += P_d^T dY, dQ = scale dS K, dK += scale dS^T Q (bf16: dp holds scale dS) */
        float dscale = bf16 ? 1.0f : scale;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ncols, hs, rows, 1.0f, s, ncols,
                    dyb + (size_t)r0 * C, C, 1.0f, dv, C3);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hs, ncols, dscale, dp, ncols,
                    k, C3, 0.0f, dq + (size_t)r0 * C3, C3);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ncols, hs, rows, dscale, dp, ncols,
                    q + (size_t)r0 * C3, C3, 1.0f, dk, C3);
    }
}

static void k_attention_backward(float *dqkv, const float *dy, const float *qkv, const float *lse,
                                 int B, int T, int C, int H, float *s, float *dp, int slots,
                                 const uint64_t *keys, uint64_t site, float p, int bf16) {
    Dropout d = dropout_params(keys, p);
    size_t block = (size_t)ATT_BLOCK * T;
#pragma omp parallel num_threads(team_size(B * H, slots, (size_t)B * T * T * C))
    {
        size_t mine = (size_t)omp_get_thread_num() * block;
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            int b = bh / H, h = bh % H;
            uint64_t key = d.on ? rng_key(keys[b], site) : 0;
            attention_backward_head(dqkv, dy, qkv, lse, b, h, T, C, H, s + mine, dp + mine, &d,
                                    key, bf16);
        }
    }
}

static void k_attention_cached(float *y, const float *qkv, const float *K, const float *V,
                               int pos0, int n, int C, int H, float *s, int slots, int bf16) {
    int hs = C / H;
    float scale = 1.0f / sqrtf((float)hs);
    size_t block = (size_t)pos0 + n;
#pragma omp parallel num_threads(team_size(n * H, slots, (size_t)n * block * C))
    {
        float *att = s + (size_t)omp_get_thread_num() * block;
#pragma omp for schedule(static)
        for (int th = 0; th < n * H; th++) {
            int t = th / H, h = th % H;
            const float *q = qkv + (size_t)t * 3 * C + h * hs;
            int len = pos0 + t + 1;
            float mx = -INFINITY, sum = 0.0f;
            for (int j = 0; j < len; j++) {
                const float *k = K + (size_t)j * C + h * hs;
                float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                for (int e = 0; e < hs; e++) dot += q[e] * k[e];
                att[j] = dot * scale;
                mx = att[j] > mx ? att[j] : mx;
            }
#pragma omp simd reduction(+ : sum)
            for (int j = 0; j < len; j++) {
                att[j] = expf_fast(att[j] - mx);
                sum += att[j];
            }
            float *yr = y + (size_t)t * C + h * hs;
            memset(yr, 0, (size_t)hs * sizeof *yr);
            for (int j = 0; j < len; j++) att[j] /= sum;
            if (bf16) round_row(att, len);
            for (int j = 0; j < len; j++) {
                const float *v = V + (size_t)j * C + h * hs;
                float w = att[j];
                for (int e = 0; e < hs; e++) yr[e] += w * v[e];
            }
        }
    }
}

/* The loss of one row (and, when grad_scale != 0, its gradient in place). */
static double xent_row(float *row, int t, int V, float grad_scale) {
    if (t < 0) { /* ignored position: no loss, no gradient */
        if (grad_scale != 0.0f) memset(row, 0, sizeof(float) * (size_t)V);
        return 0.0;
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
    return (double)(mx + logf(sum) - target_logit);
}

static double k_softmax_xent(float *logits, const int *targets, int N, int V, float grad_scale) {
    enum { GROUP = 256 }; /* rows per parallel pass; their losses are added in row order */
    double loss[GROUP], total = 0.0;
    for (int r0 = 0; r0 < N; r0 += GROUP) {
        int rows = N - r0 < GROUP ? N - r0 : GROUP;
#pragma omp parallel for schedule(static) if ((size_t)rows * V >= PAR_MIN)
        for (int i = 0; i < rows; i++)
            loss[i] = xent_row(logits + (size_t)(r0 + i) * V, targets[r0 + i], V, grad_scale);
        for (int i = 0; i < rows; i++) total += loss[i];
    }
    return total;
}

#define SET_ENTRY_V(name, params, args) .name = k_##name,
#define SET_ENTRY_R(type, name, params, args) .name = k_##name,
const KernelSet KERNEL_SET_TABLE(KERNEL_ISA) = {.name = STR(KERNEL_ISA),
                                                KERNELS(SET_ENTRY_V, SET_ENTRY_R)};
