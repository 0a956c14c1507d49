/* finetune_step.c: a fine-tuning step (see finetune_tuner.h): its samples, the
 * gradients of everything that trains summed over the ranks, the update and the loss
 * it reports. Step s's samples j = 0..G-1 are global samples s G + j; rank r takes
 * those with j mod P = r. */
#include <math.h>
#include <string.h>

#include "base/util.h"
#include "cpu/kernels.h"
#include "dist/dist.h"
#include "dist/gradsync.h"
#include "files/data.h"
#include "finetune_tuner.h"
#include "model/prune.h"

int finetune_read_step(void *ctx, long s) {
    Tuner *t = ctx;
    const FinetuneOptions *o = t->o;
    int P = dist_size(), rank = dist_rank(), G = o->batch, T = t->m->cfg.n_ctx;
    int64_t *l1_tokens = &t->l1_tokens;
    t->mine = 0;
    *l1_tokens = 0;
    for (int j = 0; j < G; j++) {
        int64_t i = s * (int64_t)G + j, k;
        int c = 0;
        if (t->corpus) blend_sample(t->corpus, o->seed, i, &c, &k);
        else k = sampler_window(o->seed, t->n_train, i);
        if (t->corpus) *l1_tokens += T;
        else {
            TaskExample e;
            task_example(t->td, SPLIT_TRAIN, k, &e);
            *l1_tokens += finetune_lm_targets(&e);
        }
        if (j % P != rank) continue;
        t->step_keys[t->mine] = sampler_dropout_key(o->seed, i);
        t->step_idx[t->mine] = k;
        if (t->corpus &&
            corpus_read(t->corpus->corpus[c], SPLIT_TRAIN, k * T, T + 1, t->windows + (size_t)t->mine * (T + 1)))
            return -1;
        t->mine++;
    }
    return 0;
}

void finetune_backward(void *ctx, long s, StepGrads *g) {
    (void)s;
    Tuner *t = ctx;
    for (int i = 0; i < t->n_tr; i++) memset(t->tr[i].grads, 0, sizeof(float) * t->tr[i].n);
    if (t->corpus) finetune_run_windows(t, 1.0f / (float)t->l1_tokens, g->loss);
    else finetune_run_examples(t, SPLIT_TRAIN, t->step_idx, t->mine, t->step_keys, 1.0f / (float)t->o->batch,
                      t->o->lambda / (float)t->l1_tokens, g->loss, NULL);
    if (t->sync && t->mine == 0) gradsync_arm(t->sync); /* no pass: gradsync_finish sends its zeros */
    g->comm_wait_s = t->sync ? gradsync_finish(t->sync) : 0.0;
    for (int i = 0; i < t->n_tr; i++)
        if (!(t->sync && &t->tr[i] == finetune_model_trainable(t))) dist_sum_floats(t->tr[i].grads, t->tr[i].n);
    double sq = 0;
    for (int i = 0; i < t->n_tr; i++)
        sq += t->sync && &t->tr[i] == finetune_model_trainable(t) ? gradsync_norm_sq(t->sync)
                                                         : sum_squares(t->tr[i].grads, t->tr[i].n);
    g->grad_norm = sqrt(sq);
    g->tokens = (double)t->l1_tokens;
}

OptimStats finetune_update(void *ctx, double norm, int skip) {
    Tuner *t = ctx;
    OptimStats st = {optim_lr_at(&t->oc, t->tr[0].opt->step), norm, 1.0f};
    if (skip) return st;
    for (int i = 0; i < t->n_tr; i++)
        st = adamw_step_norm(t->tr[i].opt, t->tr[i].params, t->tr[i].grads, t->tr[i].tensors, t->tr[i].n_tensors, norm);
    /* the pruned zeros before the gather (the gathered shards carry them), which may go on
     * into the next forward pass */
    if (t->pruned) prune_mask_apply(t->pruned, t->m->params);
    /* wte first: a step's passes are many, their tokens made as they go */
    if (t->sync) gradsync_gather(t->sync, NULL, 0);
    if (finetune_model_trainable(t)) gpt_weights_changed(t->m); /* LoRA: the base is frozen, its bf16 copy stays */
    return st;
}

double finetune_loss(void *ctx, const double sum[RUN_LOSS_PARTS], double tokens, json_t *line, char *detail,
                     size_t size) {
    Tuner *t = ctx;
    double l2 = t->corpus ? 0.0 : sum[0] / t->o->batch, l1 = sum[1] / tokens;
    if (!t->corpus) {
        json_object_set_new(line, "task_loss", json_real_or_null(l2));
        snprintf(detail, size, " (task %.4f%s)", l2, t->lambda_on ? "" : ", no LM loss");
    }
    if (t->corpus || t->lambda_on) json_object_set_new(line, "lm_loss", json_real_or_null(l1));
    return t->corpus ? l1 : l2 + (t->lambda_on ? t->o->lambda * l1 : 0.0);
}
