/* finetune_tuner.h (private to src/run/finetune*.c): the state of a fine-tuning run,
 * shared by the files that make up the fine-tuning client of run.h.
 *
 * Everything that trains is a "trainable": a parameter buffer, its gradient, its tensor
 * table and its AdamW, so the model (full fine-tuning) or the adapters (LoRA) and the
 * head go through the same allreduce, clipping, update and checkpoint code. The model's
 * trainable, when the model trains, is always the first.
 *
 *   finetune.c       the run client: configuration, data, model, result file
 *   finetune_pass.c  the pass runner: examples or windows through model and head
 *   finetune_step.c  a step: its samples, gradients, update and loss
 *   finetune_eval.c  validation
 *   finetune_ckpt.c  checkpoints: what they hold, and the resume's checks
 * The RunClient callbacks (run.h) are the functions named finetune_<slot>. */
#ifndef GPT_FINETUNE_TUNER_H
#define GPT_FINETUNE_TUNER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dist/gradsync.h"
#include "files/checkpoint_writer.h"
#include "files/data.h"
#include "model/head.h"
#include "model/lora.h"
#include "model/prune.h"
#include "run/finetune.h"
#include "run/run.h"
#include "text/task.h"

typedef struct {
    const char *group;         /* in checkpoints: "model", "lora", "head" */
    const GPTTensor *tensors;
    int n_tensors;
    size_t n;
    float *params, *grads;
    AdamW *opt;
} Trainable;

enum { MAX_TRAINABLES = 2 };

typedef struct {
    /* what trains and on what */
    GPT *m;
    GPTLora *lora;
    TaskHead *head;
    TaskData *td;              /* the task, or */
    const TaskInfo *info;
    Blend *corpus;             /* corpora: continued pre-training */
    int64_t corpus_val[BLEND_MAX]; /* windows evaluated of each corpus's /val */
    Trainable tr[MAX_TRAINABLES];
    int n_tr;
    PruneMask *pruned;         /* a pruned model's zeros, kept through every update */
    GradSync *sync;            /* full fine-tuning on P > 1: the model's gradients, overlapped */
    uint64_t fingerprint, base_fingerprint;
    int64_t n_train, n_val;    /* examples or windows: of /train, and evaluated of /val */
    int lambda_on;             /* the LM loss is computed */
    /* the run */
    const FinetuneOptions *o;
    OptimConfig oc;            /* with the run's warm-up and length */
    long steps;
    Tokenizer *tok;            /* rank 0 */
    /* this rank's samples of the step */
    int64_t mine;
    int64_t l1_tokens;         /* the step's L1 targets over all ranks */
    int64_t *step_idx;         /* (batch) their examples or windows */
    uint64_t *step_keys;       /* (batch) their dropout keys */
    int32_t *windows;          /* (batch, n_ctx + 1) corpus: their tokens */
    /* pass buffers */
    int max_seqs;              /* sequences a pass */
    int *in, *tgt;             /* (max_seqs, n_ctx) */
    uint64_t *keys;            /* (max_seqs) */
    int *n_seqs;               /* (max_seqs) per example of the pass */
    double *labels;            /* (max_seqs) */
    float *feats, *dfeats;     /* (max_seqs, C) */
    float *out;                /* (max_seqs, K) head outputs */
} Tuner;

/* The model's trainable in a full fine-tuning, else NULL (LoRA: the model is frozen). */
static inline Trainable *finetune_model_trainable(Tuner *t) {
    return !strcmp(t->tr[0].group, "model") ? &t->tr[0] : NULL;
}

/* ---- finetune_pass.c ---- */

/* The next-token targets of an example for L1: every position but each extract token. */
int64_t finetune_lm_targets(const TaskExample *e);
/* The pass buffers for max_seqs sequences (in, tgt, keys, n_seqs, labels, feats, dfeats,
 * out), owned by the tuner until finetune_free_passes. */
void finetune_alloc_passes(Tuner *t);
void finetune_free_passes(Tuner *t);
/* Not collective. Runs examples idx[0..n) of a split through the model and head in
 * passes of up to max_seqs sequences. Training (l2_scale != 0): gradients accumulate
 * with dL/dhead scaled by l2_scale and the LM loss by l1_scale (with keys (n): dropout).
 * Sums: [0] head loss, [1] LM NLL. pred (n), if not NULL, receives the predictions. */
void finetune_run_examples(Tuner *t, int split, const int64_t *idx, int64_t n, const uint64_t *keys, float l2_scale,
                           float l1_scale, double sums[2], double *pred);
/* Not collective. Corpus: next-token prediction on this rank's windows of the step, in
 * passes of max_seqs, the loss scaled by scale; the NLL into sums[1]. */
void finetune_run_windows(Tuner *t, float scale, double sums[2]);

/* ---- finetune_step.c: RunClient's read_step, backward, update, loss ---- */

/* This rank's samples of step s. Task: the examples (and the step's L1 token count,
 * which needs them all). Corpus: the windows, read now so that a bad read is agreed on
 * before any collective. */
int finetune_read_step(void *ctx, long s);
/* Collective: the step's gradients of everything that trains, summed over the ranks. */
void finetune_backward(void *ctx, long s, StepGrads *g);
OptimStats finetune_update(void *ctx, double norm, int skip);
/* L3 = L2 + lambda L1 from the summed head loss and LM NLL (continued pre-training: L1). */
double finetune_loss(void *ctx, const double sum[RUN_LOSS_PARTS], double tokens, json_t *line, char *detail,
                     size_t size);

/* ---- finetune_eval.c: RunClient's evaluate ---- */

/* Collective: validation metrics (task) or the mean NLL over the first eval windows of /val. */
int finetune_evaluate(void *ctx, json_t *line, char *summary, size_t size);

/* ---- finetune_ckpt.c: RunClient's save and load ---- */

int finetune_save(void *ctx, CkptState *st, CkptWriter *w);
/* The resume loader: checks the checkpoint against the run and reads what trains. */
int finetune_load(void *ctx, const char *path, const GPTConfig *cfg, const CkptState *st);
/* The base fingerprint a LoRA run's config.json (kept in its checkpoints) records, as text. */
void finetune_fingerprint_text(uint64_t fp, char *buf, size_t size);

#endif
