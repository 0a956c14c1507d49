/* prune.h: magnitude pruning of a GPT's weight matrices, and the mask that keeps a
 * pruned model's zeros through fine-tuning.
 *
 * Prunable are the four weight matrices of every block (h.i.attn.c_attn.weight,
 * h.i.attn.c_proj.weight, h.i.mlp.c_fc.weight, h.i.mlp.c_proj.weight): they hold almost
 * all of a model's multiply-adds. wte is not (it is also the tied output layer, so a
 * zero there removes a word from both ends), nor wpe, the biases or LayerNorm, which are
 * small and not redundant.
 *
 * Pruning to sparsity S zeroes exactly floor(S n) entries, those of smallest |w|: n is
 * every prunable entry pooled (global scope: matrices that matter less lose more) or
 * each matrix on its own (layer scope: every matrix at S). The k-th smallest magnitude
 * is found exactly by selection on one float copy of the magnitudes (quickselect,
 * expected linear time); entries tied with it are pruned in buffer order, so the
 * result is a pure function of the weights. Pure math: no MPI, no files. */
#ifndef GPT_PRUNE_H
#define GPT_PRUNE_H

#include <stddef.h>

#include "model/model.h"

typedef enum { PRUNE_GLOBAL, PRUNE_LAYER } PruneScope;

/* The scopes' names in PruneScope's order, NULL-terminated (the command line's choices). */
extern const char *const prune_scope_names[];
const char *prune_scope_name(PruneScope s);

/* 1 for the four weight matrices of a block, 0 for every other tensor. */
int prune_is_prunable(const GPTTensor *t);

typedef struct {
    size_t n_prunable;  /* entries of the prunable tensors */
    size_t n_pruned;    /* set to zero by prune_magnitude: floor(S n) over each pool */
    size_t n_zero;      /* exact zeros among the prunable entries afterwards */
    double sparsity;    /* n_zero / n_prunable */
    int n_tensors;      /* the model's: zeros has one entry per tensor */
    size_t *zeros;      /* zeros[i]: exact zeros of tensor i afterwards, 0 if not prunable */
} PruneStats;

/* Zeroes the floor(sparsity * n) smallest-magnitude entries of each pool (see above).
 * Entries that are zero already count among the smallest, so pruning a pruned model to
 * the same S changes nothing. -1 with gpt_error() if sparsity is not in [0, 1) or a
 * prunable entry is not finite (the model is then unchanged). out (may be NULL) is
 * filled on success; free it with prune_stats_free(). */
int prune_magnitude(GPT *m, double sparsity, PruneScope scope, PruneStats *out);
void prune_stats_free(PruneStats *s);

/* The fraction of exact zeros among the prunable entries. */
double prune_sparsity(const GPT *m);

/* The contract for fine-tuning a pruned model: create the mask once from the loaded
 * model, then call prune_mask_apply() after every optimizer update (on the parameters,
 * or on a gradient or moment buffer of the same layout) so the pruned entries stay
 * exactly zero. The mask holds one bit per parameter, set for each prunable entry that
 * was exactly zero at creation. */
typedef struct PruneMask PruneMask;
PruneMask *prune_mask_create(const GPT *m);
/* Zeroes the masked entries of params (m->n_params floats in m's layout); NULL: nothing. */
void prune_mask_apply(const PruneMask *k, float *params);
void prune_mask_free(PruneMask *k);

#endif
