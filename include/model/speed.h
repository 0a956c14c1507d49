/* speed.h: the time of a model's training steps on random tokens, in parts.
 *
 * One measurement for `gpt bench` (the whole model) and `gpt plan`'s calibration (one
 * layer of the model's shapes, run/plan.h): a step is timed as the three pieces
 * gpt_forward_backward is made of (model.h: the blocks' forward pass, the vocabulary head
 * forward and backward, the blocks' backward pass) and the update (zeroing the gradients
 * and AdamW's step). Everything but the head and the update grows with n_layer, so a
 * layer's time is (forward_s + backward_s) / n_layer (the embeddings, a few B T C adds,
 * counted in it), and the update's grows with the parameters. */
#ifndef GPT_SPEED_H
#define GPT_SPEED_H

#include <stdint.h>

#include "model/model.h"

typedef struct {
    int batch, steps;     /* B windows of n_ctx tokens a step; steps timed */
    double forward_s;     /* means over the timed steps */
    double head_s;
    double backward_s;
    double optim_s;
    double loss;          /* the last step's mean NLL */
} StepTimes;

/* Called after each step (warm-up ones included, `timed` 0 for those). */
typedef void (*StepTimesProgress)(void *ctx, int step, int total, double loss, double seconds, int timed);

/* Trains m (created with gradients for at least B windows; its weights are changed) for
 * warmup untimed steps and `steps` timed ones on random tokens drawn from seed, with
 * AdamW at its defaults and dropout as configured. */
StepTimes gpt_time_steps(GPT *m, int B, int warmup, int steps, uint64_t seed, StepTimesProgress progress, void *ctx);

#endif
