/* model.h: the GPT model: parameters, gradients, activations, forward and backward.
 *
 * Shapes: B batch rows, T <= n_ctx positions, C = n_embd, H = n_head, F = n_ffn,
 * V = vocab_size, L = n_layer. Matrices follow the PyTorch nn.Linear convention,
 * weight [out, in], so y = x W^T + b.
 *
 * Memory: parameters, gradients and activations each live in one 64-byte aligned
 * flat buffer owned by the GPT; the structs below are named views into them. The
 * tensor table lists every parameter tensor in buffer order (wte, wpe, h.0 ... h.L-1,
 * ln_f) with the names and shapes of the model file. Activations are sized once by
 * gpt_create() for (max_batch, n_ctx); no step allocates.
 *
 * Training keeps, per layer, only what the backward pass cannot cheaply recompute:
 * the attention probabilities (B,H,T,T) are recomputed from q, k and the saved
 * log-sum-exp of each row, GELU outputs are recomputed from their inputs, dropout
 * masks are regenerated from counter-based keys, and the logits never exist for the
 * whole batch (the vocabulary projection and cross-entropy run in row chunks). */
#ifndef GPT_MODEL_H
#define GPT_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include "cpu/precision.h"
#include "model/config.h"

typedef struct {
    float *ln_1_w, *ln_1_b;          /* (C) */
    float *c_attn_w, *c_attn_b;      /* (3C, C), (3C): rows q, then k, then v */
    float *attn_proj_w, *attn_proj_b;/* (C, C), (C) */
    float *ln_2_w, *ln_2_b;          /* (C) */
    float *c_fc_w, *c_fc_b;          /* (F, C), (F) */
    float *mlp_proj_w, *mlp_proj_b;  /* (C, F), (C) */
} GPTLayerWeights;

typedef struct {
    float *wte;                      /* (V, C), also the output projection (tied) */
    float *wpe;                      /* (n_ctx, C) */
    GPTLayerWeights *h;              /* L entries, owned by the GPT */
    float *ln_f_w, *ln_f_b;          /* (C), pre-LN models only, else NULL */
} GPTWeights;

#define GPT_TENSOR_NAME_MAX 48
typedef struct {
    char name[GPT_TENSOR_NAME_MAX];  /* state-dict name, e.g. "h.3.mlp.c_fc.weight" */
    int ndim;                        /* 1 or 2 */
    int shape[2];
    size_t offset, numel;            /* position in the flat buffer */
    int decay;                       /* 1 for 2-D matrices: AdamW decays only these */
    enum { INIT_NORMAL, INIT_NORMAL_RESIDUAL, INIT_ONE, INIT_ZERO } init;
} GPTTensor;

/* Per-layer saved activations; every pointer is (B,T,x) with the row stride of
 * max_batch*n_ctx rows, so a smaller B or T uses the front of each buffer. */
typedef struct {
    float *attn_in;    /* (B,T,C) input of c_attn: post = the layer input, pre = LN1(x) */
    float *qkv;        /* (B,T,3C) */
    float *att_lse;    /* (B,H,T) log-sum-exp of each attention row's scaled scores */
    float *atty;       /* (B,T,C) attention output before attn.c_proj */
    float *res1;       /* (B,T,C) x + dropout(attn) */
    float *mlp_in;     /* (B,T,C) input of c_fc: post = LN1(res1), pre = LN2(res1) */
    float *fch;        /* (B,T,F) c_fc output, before GELU */
    float *res2;       /* (B,T,C) mlp_in (post) or res1 (pre) + dropout(mlp) */
    float *out;        /* (B,T,C) layer output: post = LN2(res2), pre = res2 */
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd;  /* (B,T) */
} GPTLayerActs;

typedef struct {
    float *x0;                  /* (B,T,C) dropout(wte[tok] + wpe[t]) */
    GPTLayerActs *h;            /* L entries */
    float *lnf_out;             /* (B,T,C) pre only */
    float *lnf_mean, *lnf_rstd; /* (B,T) pre only */
    /* scratch reused by every layer */
    float *buf_c;               /* (B,T,C) sublayer output before dropout / a gradient */
    float *buf_f;               /* (B,T,F) GELU output */
    float *dres;                /* (B,T,C) gradient flowing down the residual stream */
    float *dbuf_c;              /* (B,T,C) */
    float *dqkv;                /* (B,T,3C) */
    float *dbuf_f;              /* (B,T,F) */
    float *logits;              /* (head_rows, V) one chunk of logits / their gradient */
    float *att_s, *att_dp;      /* (att_slots, ATT_BLOCK, n_ctx) attention scores and their
                                   gradient, one block per thread */
    int head_rows;
    int att_slots;              /* compute_threads() when the model was created */
} GPTActs;

typedef struct GPT {
    GPTConfig cfg;
    int n_tensors;
    GPTTensor *tensors;         /* n_tensors entries in buffer order */
    size_t n_params;
    float *params, *grads;      /* n_params each; grads NULL for inference-only models */
    GPTWeights w, g;            /* views into params and grads */
    int max_batch;
    size_t n_acts;
    float *act_buf;
    GPTActs act;
    /* Called by the backward pass as soon as the parameter gradients from offset `from`
     * to the end of the buffer are final: the moment they can be sent. The calls come at
     * gpt_grad_ready_points(), in that order: after each layer's feed-forward half (from
     * its ln_2; layer L-1's also completes ln_f), after the whole layer, and with 0 once
     * wte and wpe are final. NULL: no calls. */
    void (*grad_ready)(void *ctx, size_t from);
    /* With token_grads attached: called (with grad_ready_ctx) when a backward pass's head
     * has added the output projection's part of wte's gradient, which g.wte then holds
     * alone, before any of grad_ready's calls. NULL: no calls. */
    void (*output_grad_ready)(void *ctx);
    void *grad_ready_ctx;
    /* Not owned; NULL: none. Set: the input embedding's part of wte's gradient goes
     * there as rows (token_grads.h) instead of into g.wte. */
    struct TokenGrads *token_grads;
    /* Called by a forward pass before it reads the parameters below offset `upto`: on its
     * return [0, upto) must be final (the parameters arriving by a sharded optimizer's
     * all-gather), but for wte [0, wte's end) while token_rows is set, which only the
     * call with n_params (the head) then covers. The calls come at
     * gpt_params_ready_points(), in that order: before the embeddings (up to layer 0),
     * before each layer's attention half (up to its ln_2) and its feed-forward half (up
     * to the next layer), and with n_params before ln_f and the head. NULL: no calls. */
    void (*params_ready)(void *ctx, size_t upto);
    /* Called (with params_ready_ctx) by a forward pass before its embedding lookup, with
     * its tokens (B*T): the rows the lookup reads instead of wte's, (N, C) with each
     * token's row index in *ids (both the callee's, until the next call); or NULL, wte's
     * rows having been made final. NULL hook: wte is read. */
    const float *(*token_rows)(void *ctx, const int *tokens, int n, const int **ids);
    void *params_ready_ctx;
    /* Low-rank adapters (lora.h), not owned; NULL: none. With grads NULL as well, the
     * base is frozen: the backward pass computes only the adapters' gradients. */
    struct GPTLora *lora;
    /* The bf16 products (precision.h), owned; NULL: fp32. Set by gpt_set_precision. */
    struct Bf16Products *bf16;
} GPT;

/* What a model allocates, from its configuration alone: gpt_create allocates exactly
 * params, grads and acts, gpt_set_precision(bf16) bf16_copy and bf16_scratch_bytes
 * (precision.h's bf16_products_bytes on this process's bf16 path), so that an estimate
 * (gpt plan) and the allocation cannot drift apart. threads: the compute threads the
 * model is created under (the attention scratch has a block for each). */
typedef struct {
    size_t n_params;        /* floats of the parameters (and of the gradients) */
    size_t n_acts;          /* floats of the activations */
    size_t bf16_scratch;    /* elements of each bf16 operand buffer; 0 in fp32 */
    size_t params, grads, acts, bf16_copy, bf16_scratch_bytes; /* bytes */
} GPTMemory;
GPTMemory gpt_memory(const GPTConfig *cfg, int max_batch, int with_grads, int threads, Precision p);
/* The tensor table of a configuration without any buffer (owned by the caller):
 * n_tensors entries, and the parameters' count in *n_params when not NULL. */
GPTTensor *gpt_tensor_table(const GPTConfig *cfg, int *n_tensors, size_t *n_params);

/* Creates a model of the given (validated) configuration with zeroed parameters.
 * with_grads = 0 gives an inference-only model (no gradient buffer); max_batch = 0 the
 * parameters alone, with no activations for a pass (file conversions). */
GPT *gpt_create(const GPTConfig *cfg, int max_batch, int with_grads);
void gpt_free(GPT *m);

/* The precision of the model's matrix products (precision.h): fp32, the default, or
 * bf16 with a copy of the weights and scratch for the rounded operands. Any time, any
 * number of times. */
void gpt_set_precision(GPT *m, Precision p);
Precision gpt_precision(const GPT *m);
/* After changing m->params other than by loading into a fresh model (an optimizer step,
 * pruning): the bf16 copy of the weights is remade before the next pass. */
void gpt_weights_changed(GPT *m);
/* out (N,Cout) = in (N,Cin) w^T + bias in the model's precision, w one of m's weights
 * (kernels.h's matmul_forward in fp32); the bf16 copy must be current (a pass refreshes
 * it: infer.c calls gpt_refresh_weights first). N * max(Cin, 3C, F) within the scratch of
 * (max(1, max_batch) * n_ctx) rows. */
void gpt_matmul_forward(const GPT *m, float *out, const float *in, const float *w, const float *bias, int N,
                        int Cin, int Cout);
void gpt_refresh_weights(const GPT *m);
/* bf16: x (n) rounded to bf16 in place, for an activation that is an operand of
 * attention's products only (q, k, v; dY), so that rounding it once where it is made is
 * rounding it at every product; fp32: nothing. */
void gpt_round_operands(const GPT *m, float *x, size_t n);

/* GPT-1 initialisation: matrices and embeddings N(0, std), LayerNorm gains 1, biases 0;
 * with scale_residual the two residual output projections per layer use
 * std / sqrt(2 L) (GPT-2). Deterministic in seed. */
void gpt_init_weights(GPT *m, uint64_t seed, float std, int scale_residual);

/* Offset in the flat buffers of layer l's first tensor; layer n_layer gives the end of
 * the last layer (where ln_f, if any, starts). Layers are contiguous. */
size_t gpt_layer_offset(const GPT *m, int l);
/* The offsets of grad_ready's calls, descending: 2 n_layer + 1 of them, into points. */
int gpt_grad_ready_points(const GPT *m, size_t *points);
/* The offsets of params_ready's calls, ascending: 2 n_layer + 2 of them, into points. */
int gpt_params_ready_points(const GPT *m, size_t *points);

/* A 64-bit hash of every parameter's bits: tells whether adapters meet the base they were
 * trained on. */
uint64_t gpt_params_fingerprint(const GPT *m);

/* The first of n tensors (a model's, an adapter set's, a head's) whose values in buf hold
 * a NaN or an infinity, or NULL: what loading and writing refuse. */
const GPTTensor *tensors_first_nonfinite(const GPTTensor *tensors, int n, const float *buf);

/* Parameters excluding wpe (the N of the FLOP count). */
size_t gpt_params_no_wpe(const GPTConfig *c);
/* Training FLOPs per token: 6 N + 12 L C n_ctx. */
double gpt_train_flops_per_token(const GPTConfig *c);

/* 0 if every id is in [0, V), else -1 naming `what`, the position and the id. */
int gpt_check_tokens(const GPT *m, const int *tokens, size_t n, const char *what);

/* Dropout keys: one per batch row, NULL for evaluation (no dropout). Masks are a pure
 * function of (key, layer, site, position), so equal keys give equal masks. */

/* Forward and backward of sum_i NLL_i over the B*T positions. Gradients are
 * accumulated: grads += grad_scale * d(sum NLL)/dparams (grad_scale = 1/(B*T) gives
 * the mean). Returns the mean NLL of this batch. inputs, targets: (B,T) ids in [0,V). */
double gpt_forward_backward(GPT *m, const int *inputs, const int *targets, int B, int T,
                            const uint64_t *dropout_keys, float grad_scale);
/* The same in pieces, for objectives other than next-token prediction on every position
 * (fine-tuning, finetune.c):
 *   hidden = gpt_forward_hidden(...)          final hidden states (B,T,C), valid until the next pass
 *   gpt_lm_loss(m, hidden, targets, ...)      summed NLL over N = B*T rows; targets < 0 are ignored;
 *                                             with dhidden (N,C) not NULL, dhidden = grad_scale *
 *                                             d(sum NLL)/dhidden (overwritten) and dwte accumulated
 *   gpt_hidden_grad(m)                        the (B,T,C) buffer the backward pass starts from: put
 *                                             dL/dhidden there (it may be passed as dhidden above)
 *   gpt_backward_hidden(...)                  the blocks' backward pass (same inputs, B, T and keys)
 * A model without a gradient buffer (with_grads 0) can run the backward pass too: then only
 * the adapters' gradients (m->lora) are computed. */
const float *gpt_forward_hidden(GPT *m, const int *inputs, int B, int T, const uint64_t *dropout_keys);
double gpt_lm_loss(GPT *m, const float *hidden, const int *targets, int N, float grad_scale, float *dhidden);
float *gpt_hidden_grad(GPT *m);
void gpt_backward_hidden(GPT *m, const int *inputs, int B, int T, const uint64_t *dropout_keys);
/* Mean NLL without gradients or dropout. */
double gpt_loss(GPT *m, const int *inputs, const int *targets, int B, int T);
/* Evaluation-mode logits: out (B,T,V), owned by the caller. */
void gpt_logits(GPT *m, const int *inputs, int B, int T, float *out);
void gpt_zero_grad(GPT *m);

#endif
