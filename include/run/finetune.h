/* finetune.h: supervised fine-tuning (GPT-1, section 3.2) on the data-parallel engine.
 *
 * A step trains on G = --batch examples of the task file's /train split, global example
 * j of step s being sample s G + j of the same seeded per-epoch permutation as
 * pre-training (data.h); rank r takes the examples j with j mod P = r and runs their
 * sequences in passes of up to micro_batch sequences, each padded to its longest. The
 * objective is L3 = L2 + lambda L1: L2 the head's loss averaged over the G examples,
 * L1 the next-token NLL averaged over the step's real tokens (padding is ignored).
 * Gradients of everything that trains (the model or the LoRA adapters, and the head) are
 * summed over the ranks (the model's in buckets started during each rank's last backward
 * pass of the step, as in pre-training; the small rest after it), clipped by their joint
 * norm and applied by AdamW with a linear warm-up and linear decay. So a step's result
 * does not depend on P, and checkpoints, resume, signals and --time-limit behave as in
 * pre-training (train.h). Its validation reports task_metrics.h's measures. */
#ifndef GPT_FINETUNE_H
#define GPT_FINETUNE_H

#include <stddef.h>
#include <stdint.h>

#include "files/data.h"
#include "files/task_file.h"
#include "model/head.h"
#include "model/model.h"
#include "model/optim.h"
#include "run/run.h"

typedef struct {
    const char *init;         /* model file or checkpoint to start from */
    const char *data[BLEND_MAX]; /* a task file, or corpora ("PATH" or "WEIGHT:PATH", data.h) */
    int n_data;
    const char *out;          /* run directory */
    OptimConfig optim;        /* warmup and total_steps are derived */
    double epochs;
    double warmup_fraction;
    int batch;                /* examples a step, over all ranks */
    int micro_batch;          /* sequences a pass */
    float lambda;             /* weight of the auxiliary LM loss */
    uint64_t seed;
    RunOptions run;
    int lora_rank;            /* 0: full fine-tuning */
    float lora_alpha;
    unsigned lora_targets;
} FinetuneOptions;

/* Collective. Writes RUN_DIR/config.json, metrics.jsonl, checkpoints and model.h5 (a task
 * model, task_model.h). 0 when done, 1 when stopped early with a checkpoint, -1 on error. */
int finetune_run(const FinetuneOptions *o);

/* Not collective, for tests against a reference: L3 = L2 + lambda L1 over examples
 * idx[0..n) of a split without dropout (L2 averaged over the examples, L1 over their
 * tokens), its gradients accumulated into the model's (or, with m->lora, the adapters')
 * and the head's gradient buffers; l2 and l1 receive the parts. */
double finetune_loss_grad(GPT *m, TaskHead *h, const TaskData *d, int split, const int64_t *idx, int64_t n,
                          float lambda, double *l2, double *l1);
/* Not collective: the prediction for every example of a split (class index, value, or
 * answer index) into pred (n), and the head's mean loss (NAN without labels). -1 with
 * gpt_error() if the data is not of the head's task. */
int finetune_predict(GPT *m, TaskHead *h, const TaskData *d, int split, double *pred, double *loss);

#endif
