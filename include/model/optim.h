/* optim.h: AdamW with decoupled weight decay, the learning-rate schedule, and global
 * gradient-norm clipping.
 *
 * The update follows torch.optim.AdamW: p -= lr*wd*p (matrices only, the "modified
 * L2" of GPT-1), then p -= lr * m_hat / (sqrt(v_hat) + eps). Clipping scales the
 * gradient by max_norm / (norm + 1e-6) when the norm exceeds max_norm, folded into
 * the update instead of a separate pass. The optimizer owns its moment buffers,
 * which mirror its ranges of the flat parameters element for element, the ranges end to
 * end in buffer order: all the parameters (one range), or under --shard-optimizer this
 * rank's shard (shard.h), the only ones it updates. */
#ifndef GPT_OPTIM_H
#define GPT_OPTIM_H

#include <stddef.h>
#include "model/model.h"

typedef struct {
    float lr;            /* peak learning rate */
    float min_lr;        /* floor of the cosine decay */
    long warmup;         /* linear warm-up steps */
    long total_steps;    /* the cosine reaches min_lr here */
    float beta1, beta2, eps;
    float weight_decay;
    float clip;          /* max global gradient norm; 0 = off */
    int linear_decay;    /* after warm-up: 0 cosine (pre-training), 1 linear (GPT-1's fine-tuning) */
} OptimConfig;

/* GPT-1's settings: lr 2.5e-4, floor 0, 2000 warm-up steps, betas (0.9, 0.999),
 * eps 1e-8, weight decay 0.01, clipping 1.0. */
OptimConfig optim_defaults(long total_steps);
int optim_validate(const OptimConfig *c);

/* Learning rate for 0-based step s: lr*(s+1)/warmup during warm-up, then cosine (or
 * linear) from lr to min_lr over the remaining steps, min_lr after total_steps. */
float optim_lr_at(const OptimConfig *c, long step);

typedef struct {
    OptimConfig cfg;
    int n_ranges;        /* the parameters it updates: [begin[k], end[k]), ascending, disjoint */
    size_t *begin, *end;
    size_t n;            /* their count */
    float *m, *v;        /* (n) first and second moments of those, range after range */
    long step;           /* updates taken so far */
} AdamW;

AdamW *adamw_create(const OptimConfig *cfg, size_t n_params);
/* The optimizer of the parameters in n_ranges ranges [begin[k], end[k]) only (a rank's
 * shard); it copies them. */
AdamW *adamw_create_ranges(const OptimConfig *cfg, int n_ranges, const size_t *begin, const size_t *end);
/* Whether it holds every parameter of a buffer of n_params. */
int adamw_whole(const AdamW *o, size_t n_params);
/* What an optimizer of n parameters allocates (m and v): 8 bytes a parameter. */
size_t adamw_bytes(size_t n);
void adamw_free(AdamW *o);

/* L2 norm of a gradient buffer, accumulated in double. */
double optim_grad_norm(const float *g, size_t n);

typedef struct { float lr; double grad_norm; float clip_scale; } OptimStats;

/* One update of the optimizer's parameters (of the tensors, the parts in its range), with
 * the schedule's learning rate at o->step. params and grads are whole buffers, indexed
 * by the tensors' offsets. */
OptimStats adamw_step(AdamW *o, float *params, const float *grads,
                      const GPTTensor *tensors, int n_tensors);
/* The same, clipping by a given norm: that of all the gradients a step updates, when
 * they are split between optimizers (a model and a fine-tuning head). */
OptimStats adamw_step_norm(AdamW *o, float *params, const float *grads,
                           const GPTTensor *tensors, int n_tensors, double norm);

#endif
