/* onednn.h: matrix products through oneDNN's matmul primitive (bf16 on AMX).
 *
 * C (M,N) = A (M,K) B (K,N), or C += A B with accumulate. A and B hold elements of type
 * t (bf16 as their 16 bits, or f32), row-major, each either as the matrix itself or,
 * with its trans flag, as the row-major storage of its transpose; C is f32, row-major.
 * The bf16 products are what precision.h's oneDNN path runs; f32 exists so that the
 * same code is tested on CPUs without bf16 matmul (tests/unit/test_onednn.c).
 *
 * Primitives are created once per shape and kept (a small table; oneDNN's own cache
 * would still pay for the primitive descriptor each call). oneDNN runs on the OpenMP
 * threads of the calling thread: call it from serial code. Main thread only: the
 * table is not locked. */
#ifndef GPT_ONEDNN_H
#define GPT_ONEDNN_H

typedef enum { ONEDNN_F32, ONEDNN_BF16 } OnednnType;

/* 1 when oneDNN implements this CPU's matmul of type t. */
int onednn_available(OnednnType t);
/* The implementation oneDNN chooses for a product of type t (its impl_info_str, e.g.
 * "brg:avx512_core_amx"), or NULL when it has none on this CPU. */
const char *onednn_impl(OnednnType t);
/* The product above. A shape oneDNN refuses after onednn_available said yes ends the
 * process with a message (exit 1): it is a bug, not an input error. */
void onednn_matmul(OnednnType t, int M, int N, int K, const void *A, int trans_a, const void *B, int trans_b,
                   float *C, int accumulate);

#endif
