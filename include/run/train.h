/* train.h: data-parallel pre-training over MPI (its evaluation: eval.h).
 *
 * Every rank holds the whole model and takes its share of every step's windows
 * (data.h): with P ranks, batch B and A micro-steps, a step trains on G = P B A windows,
 * window j of step s being global sample s G + j, read by rank (j mod P B) / B in
 * micro-step j / (P B). Gradients are averaged with bucketed MPI_Iallreduce overlapping
 * the backward pass (gradsync.h) and every rank applies the same AdamW update, so the ranks'
 * parameters never diverge and a step's result does not depend on P.
 *
 * Checkpoints (checkpoint.h) hold everything a run needs to go on: resuming with the
 * same P continues bit for bit, with another P (same global batch) the same samples
 * continue. SIGTERM, SIGINT and SIGUSR1 only set a flag; the ranks agree on it at the
 * next step boundary (it rides in the step's one small allreduce), write a checkpoint
 * and stop, as they do before --time-limit runs out. */
#ifndef GPT_TRAIN_H
#define GPT_TRAIN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "files/data.h"
#include "model/config.h"
#include "model/model.h"
#include "model/optim.h"
#include "run/run.h"

typedef struct {
    const char *data[BLEND_MAX]; /* corpus files, each "PATH" or "WEIGHT:PATH" (data.h) */
    int n_data;
    const char *out;          /* run directory */
    GPTConfig model;          /* vocab_size 0: take the corpus's */
    const char *init;         /* a model file to start from (its shape and weights), or NULL */
    int scale_residual;       /* without init: the residual projections' std / sqrt(2 n_layer) (the gpt2 presets) */
    OptimConfig optim;
    long steps;
    int batch, accum;
    uint64_t seed;
    int eval_windows;
    size_t bucket_bytes;
    int batch_given, accum_given; /* on resume with another P, the other one is derived */
    RunOptions run;
} TrainOptions;

/* Collective: run.h's lifecycle with pre-training's steps. Writes RUN_DIR/config.json,
 * metrics.jsonl, checkpoints and, at the end, model.h5. Returns 0 when all steps are
 * done, 1 when stopped early with a checkpoint written, or -1 on every rank with the
 * same message. */
int train_run(const TrainOptions *o);

#endif
