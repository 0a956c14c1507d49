/* blas.h: choosing and reporting OpenBLAS's kernels, and the threads of a process.
 *
 * OpenBLAS picks its kernels once, when the library loads, from the CPU model; on a
 * CPU it does not know (a virtualised or newer model) it falls back to generic SSE3
 * kernels ("Prescott") that run sgemm at a quarter of the AVX-512 speed. The only
 * control is the OPENBLAS_CORETYPE variable read at load time, so when the user has
 * not set it and detection fell back, blas_select_core() sets it from the CPU's
 * features and re-executes the program before anything else has happened. */
#ifndef GPT_BLAS_H
#define GPT_BLAS_H

/* Call first thing in main(). Returns only if no re-execution was needed. */
void blas_select_core(char **argv);
/* The core type in use, and how it was chosen: "detected", "auto-selected" or "set by
 * OPENBLAS_CORETYPE". */
const char *blas_core_name(void);
const char *blas_core_origin(void);
/* The CPU's model name (/proc/cpuinfo's first "model name"), or "unknown CPU": what a
 * speed measurement is kept under (gpt bench --json, gpt plan's calibration cache). */
const char *cpu_model_name(void);
/* The one thread count of this process, set once at start-up (--threads): OpenBLAS is
 * the OpenMP build, so sgemm and the kernels of kernels.h share one OpenMP team of n
 * threads and never compete for cores. */
void compute_threads_set(int n);
int compute_threads(void);
/* OpenBLAS's own count (openblas_get_num_threads), which compute_threads_set sets too. */
int blas_threads(void);
/* Best GFLOP/s of product(ctx, a, b, c, n), which writes into c (n,n) a product of a and
 * b (n,n each, in the layout it chooses), for n = 2048 on random a and b (best of 4 after
 * a warm-up) with the current threads. */
double product_peak_gflops(void (*product)(void *ctx, const float *a, const float *b, float *c, int n), void *ctx);
/* That of cblas_sgemm: the matrix-multiply limit that fp32's MFU is measured against. */
double blas_sgemm_peak_gflops(void);

#endif
