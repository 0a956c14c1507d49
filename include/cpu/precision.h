/* precision.h: the precision of the model's matrix products, and how bf16 is computed.
 *
 * One numeric definition (docs/precision.md). In bf16 every matrix product takes its
 * operands rounded to bf16 (kernels.h's bf16_round: nearest, ties to even) and sums in
 * fp32; master weights, AdamW moments, gradients and every other operation stay fp32.
 * Two paths compute it, and a cluster may mix them:
 *   oneDNN    bf16 matmul on AMX tiles (Intel Xeon since Sapphire Rapids);
 *   emulated  the operands rounded into floats, then cblas_sgemm: the product of two
 *             bf16 values is exact in fp32, so only the order of the fp32 sums differs.
 * The path is chosen once per process: oneDNN where the CPU has AMX-BF16 and oneDNN
 * implements the product, else emulated (on AVX512_BF16 without AMX oneDNN's bf16 is
 * slower than fp32). GPT_MATMUL=onednn|emulate forces one.
 *
 * Bf16Products holds what one model needs: a copy of its weights in the path's format
 * (bf16 bits for oneDNN, rounded floats for the emulation), made from the fp32 master
 * weights when they have changed, so once per optimizer step and not once per product;
 * and scratch for the rounded activations of the largest product. Weights outside the
 * model's buffer (a task head, LoRA adapters) are not covered: their products stay fp32. */
#ifndef GPT_PRECISION_H
#define GPT_PRECISION_H

#include <stddef.h>

typedef enum { PRECISION_FP32 = 0, PRECISION_BF16 = 1 } Precision;

/* The precisions' names in Precision's order, NULL-terminated (the command line's choices). */
extern const char *const precision_names[];
const char *precision_name(Precision p);

typedef enum { BF16_EMULATED, BF16_ONEDNN } Bf16Path;

/* Chooses the bf16 path from GPT_MATMUL and the CPU; -1 with a message naming
 * GPT_MATMUL when it names an unknown path or one this CPU cannot run. Without a call
 * the first use chooses (and an impossible GPT_MATMUL falls back to the emulation). */
int bf16_path_select(void);
Bf16Path bf16_path(void);
/* For opening lines: "oneDNN AMX (brg:avx512_core_amx)", "emulated, no AMX on this CPU",
 * "emulated, GPT_MATMUL=emulate". */
const char *bf16_path_description(void);
/* "fp32", or "bf16: " and the path's description. */
const char *precision_description(Precision p);

typedef struct Bf16Products Bf16Products;

/* For a model whose n_params master weights are at params (not owned; they must stay
 * there), with scratch for operands of up to `scratch` elements. The copy is remade in
 * the order a forward pass reads the weights: [first, n_params), then [0, first) (a
 * model's tied head, wte, which its last product reads). */
Bf16Products *bf16_products_create(const float *params, size_t n_params, size_t first, size_t scratch);
void bf16_products_free(Bf16Products *p);
/* The bytes bf16_products_create allocates on a path: the copy of the weights (returned)
 * and, in *scratch_bytes when not NULL, the operand scratch. The one account of them, which
 * create allocates by (model.h's gpt_memory, gpt plan). */
size_t bf16_products_bytes(Bf16Path path, size_t n_params, size_t scratch, size_t *scratch_bytes);
/* The master weights have changed: the copy is remade before the next product. */
void bf16_products_stale(Bf16Products *p);
/* Remakes the copy if stale. Call before a pass (model.c and infer.c do). */
void bf16_products_refresh(Bf16Products *p);
/* Remakes the copy of the master weights [first, upto) where stale, and of all of them
 * with upto = n_params: a pass that receives its weights in order (gradsync.h's
 * overlapped all-gather, wte last) refreshes each range once it is final. The copy of
 * element i depends on element i alone, so in pieces or at once it is the same. */
void bf16_products_refresh_upto(Bf16Products *p, size_t upto);

/* kernels.h's matmul_forward and matmul_backward in bf16. w lies in the master weights;
 * in, dout: N x Cin and N x Cout at most `scratch` elements. The bias and its gradient
 * are fp32 (a sum of dout, not a product). */
void bf16_linear_forward(Bf16Products *p, float *out, const float *in, const float *w, const float *bias, int N,
                         int Cin, int Cout);
void bf16_linear_backward(Bf16Products *p, float *din, float *dw, float *dbias, const float *dout, const float *in,
                          const float *w, int N, int Cin, int Cout, int accumulate_din);

/* Best GFLOP/s of a square 2048 bf16 product on the chosen path (best of 4 after a
 * warm-up), with the current threads: bf16's MFU denominator. */
double bf16_peak_gflops(void);

#endif
