/* lora.h: low-rank adapters (LoRA, Hu et al. 2021) on the weight matrices of the blocks.
 *
 * An adapted linear layer computes y = x W^T + b + s (x A^T) B^T with A (r, Cin),
 * B (Cout, r) and s = alpha / r. B starts at zero, so a fresh adapter leaves the model
 * exactly as it was, and A at U(-1/sqrt(Cin), 1/sqrt(Cin)) (PyTorch's nn.Linear init).
 * Targets: "attn" adapts attn.c_attn and attn.c_proj, "mlp" mlp.c_fc and mlp.c_proj.
 * Like the model, all adapters live in one flat buffer (and one gradient buffer) with a
 * tensor table, named after the matrix they adapt ("h.3.attn.c_attn.lora_A"), so the
 * optimizer and the files treat them as they treat the model's tensors. The forward
 * and backward passes of the model call lora_forward/lora_backward after each adapted
 * matmul (model.c); nothing here knows about MPI or files. */
#ifndef GPT_LORA_H
#define GPT_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "model/config.h"
#include "model/model.h"

enum { LORA_ATTN = 1, LORA_MLP = 2 };
/* The adapted matrices of a block, in buffer order. */
enum { LORA_C_ATTN = 0, LORA_ATTN_PROJ, LORA_C_FC, LORA_MLP_PROJ, LORA_SITES };

typedef struct { float *a, *b; } LoraPair; /* A (r, Cin), B (Cout, r); NULL: not adapted */

typedef struct GPTLora {
    int rank;                 /* r */
    float alpha;              /* s = alpha / r */
    unsigned targets;         /* LORA_ATTN | LORA_MLP */
    int n_layer;
    int n_tensors;
    GPTTensor *tensors;       /* A then B for each adapted matrix, layer by layer */
    size_t n_params;
    float *params, *grads;    /* n_params each */
    LoraPair (*w)[LORA_SITES], (*g)[LORA_SITES]; /* [layer][site] views */
    float *u, *du;            /* scratch (max_rows, r) */
} GPTLora;

/* "attn", "mlp", "attn,mlp"; -1 with gpt_error() otherwise. */
int lora_parse_targets(const char *s, unsigned *out);
/* "attn,mlp" etc. into buf. */
const char *lora_targets_name(unsigned targets, char *buf, size_t size);

/* Adapters for a model of configuration c, for up to max_rows = B*T rows a pass; zeroed. */
GPTLora *lora_create(const GPTConfig *c, int max_rows, int rank, float alpha, unsigned targets);
void lora_free(GPTLora *lo);
/* A uniform as above, B zero; deterministic in seed. */
void lora_init(GPTLora *lo, uint64_t seed);

/* out (N,Cout) += s * (in A^T) B^T for the adapter of (layer, site), if any. */
void lora_forward(GPTLora *lo, int layer, int site, float *out, const float *in, int N, int Cin, int Cout);
/* Gradients of A and B accumulated from dout (N,Cout); din (N,Cin) += its part
 * (din may be NULL). Recomputes in A^T rather than storing it. */
void lora_backward(GPTLora *lo, int layer, int site, float *din, const float *dout, const float *in, int N,
                   int Cin, int Cout);
/* W += s B A for every adapter: the merged model computes what the adapted one does. */
void lora_merge(const GPTLora *lo, GPT *m);

#endif
