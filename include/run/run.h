/* run.h: the one lifecycle of every training command (gpt train, gpt finetune, and
 * continued pre-training through gpt finetune --data CORPUS).
 *
 * run_training() drives it; a command supplies only what differs (a RunClient: reading
 * a step, computing its gradients, the update, the loss it reports, evaluation, what a
 * checkpoint holds, the result file):
 *
 *   lock RUN_DIR (run_dir.h) -> --resume loads a checkpoint -> the client's start (the
 *   model made) -> --overwrite clears the old run -> config.json, and the settings
 *   changed on resume
 *   -> for each step:
 *        read the step's samples (a failure on any rank is agreed on: all stop)
 *        gradients, summed over the ranks by the client
 *        the step control record (losses, non-finite, stop signal, out of time,
 *        checkpoint due, metrics unwritable), reduced over the ranks in one allreduce
 *        the update, or on a non-finite step none on every rank alike
 *        evaluation when due; metrics.jsonl and the progress line (rank 0)
 *        --max-bad-steps non-finite steps in a row: stop with an error
 *        a checkpoint when due (with --async-ckpt written by a thread: checkpoint_writer.h;
 *        its step's metrics line goes out just before the file is renamed into place),
 *        and the stop when signalled or out of time (after the checkpoint is complete)
 *   -> the result file (rank 0, agreed on by every rank) -> unlock.
 * The watchdog (watchdog.h) watches it all: a collective that does not complete within
 * --collective-timeout ends the job with WATCHDOG_EXIT.
 *
 * Every decision that ends or changes a step is taken from the reduced record, so the
 * ranks always take the same branch and never wait in different collectives. */
#ifndef GPT_RUN_H
#define GPT_RUN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu/precision.h"
#include "dist/gradsync.h"
#include "files/checkpoint.h"
#include "files/checkpoint_writer.h"
#include "model/optim.h"

/* How a training command runs, checkpoints and stops (gpt train and gpt finetune take
 * the same options for these; cli/options.c parses them). */
typedef struct {
    int eval_every, log_every;
    int max_bad_steps;        /* non-finite steps in a row before the run stops */
    int threads;              /* threads a rank: --threads (0: not given) until the command resolves it
                               * (compute_threads_setup, cpu/threads.h) at its start */
    char threads_why[160];    /* and why that many, for the opening line and config.json */
    int overwrite;            /* start afresh, removing the run directory's old run */
    long ckpt_every;          /* steps between checkpoints; 0: none */
    double ckpt_minutes;      /* minutes between checkpoints; 0: none */
    int keep;                 /* newest checkpoints kept; 0: all */
    const char *resume;       /* NULL, "auto" or a checkpoint */
    int allow_data_change;    /* resume on data other than the checkpoint's (another blend) */
    double time_limit;        /* seconds after t_start by which the run must have stopped; 0: none */
    double t_start;           /* now_seconds() at process start */
    double collective_timeout; /* seconds a collective may take before the job ends (watchdog.h); 0: no limit */
    int shard_optimizer;      /* ZeRO-1: each rank holds and updates its shard's AdamW state (gradsync.h) */
    int async_ckpt;           /* checkpoints written in the background (checkpoint_writer.h) */
    Precision precision;      /* of the matrix products (precision.h); checkpoints stay fp32 */
    GradReduce grad_reduce;   /* the gradients' format on the wire (gradsync.h) */
} RunOptions;

/* The process exit code of a run stopped early by a signal or the time limit, after
 * writing a checkpoint (EX_TEMPFAIL: try again, with --resume auto). */
#define RUN_EXIT_STOPPED 75

enum { RUN_LOSS_PARTS = 2 }; /* loss sums a step reports (pre-training: NLL; fine-tuning: task, LM) */

/* What every rank must agree on after a step's gradients: one allreduce. */
typedef struct {
    double loss[RUN_LOSS_PARTS]; /* summed over the ranks */
    int nonfinite;               /* any rank's loss or gradient norm is NaN or infinite */
    int signalled;               /* any rank caught SIGTERM, SIGINT or SIGUSR1 */
    int out_of_time;             /* rank 0: --time-limit is too close for another step */
    int ckpt_due;                /* rank 0: --ckpt-minutes have passed since the last checkpoint */
    int metrics_failed;          /* rank 0: a line of metrics.jsonl could not be written */
    int ckpt_failed;             /* a rank's background checkpoint failed (every rank's did: they agree) */
} StepControl;

/* Collective: sums the losses over the ranks; a flag is set if any rank set it. */
void step_control_reduce(StepControl *c);

/* A step's gradients as the client computed them. */
typedef struct {
    double loss[RUN_LOSS_PARTS]; /* this rank's loss sums */
    double grad_norm;            /* of the gradients summed over the ranks */
    double comm_wait_s;          /* waited for the gradients' allreduce after the backward pass */
    double tokens;               /* tokens the step trained on, over all ranks */
} StepGrads;

typedef struct RunClient {
    const char *cmd;             /* "train", "finetune": in messages */
    const char *out;             /* the run directory */
    const RunOptions *opt;
    long steps;                  /* the run's total */
    int64_t global_batch;        /* samples a step (a resumed run keeps its checkpoint's, which load checks) */
    uint64_t seed, fingerprint;  /* the run's seed and its data's fingerprint, kept in checkpoints */
    const char *data;            /* the data's path, kept in checkpoints */
    size_t trained_floats;       /* parameters that train: estimates the first checkpoint's duration */
    double flops_per_token;      /* for the MFU of the progress line; 0: not shown */
    void *ctx;

    /* Collective, for --resume: checks a checkpoint (its model shape and state; the
     * lifecycle has checked the data's fingerprint) against the run, -1 if it belongs to another run (nothing read), then reads what trains and
     * sets the optimizers' step, -2 if that fails (--resume auto then tries an older one). */
    int (*load)(void *ctx, const char *path, const GPTConfig *cfg, const CkptState *st);
    /* The run's resolved configuration for config.json (after any resume). */
    json_t *(*config)(void *ctx);
    /* Collective: after the resume, before the run directory is prepared (so that a model
     * that cannot be made loses no old run to --overwrite): what the resume did not
     * create, the step buffers, the opening line (rank 0). Errors are agreed on by the loop. */
    int (*start)(void *ctx, int resumed);
    /* This rank's samples of step s; a failure is agreed on by the loop. */
    int (*read_step)(void *ctx, long s);
    /* Collective: step s's gradients, summed over the ranks. */
    void (*backward)(void *ctx, long s, StepGrads *g);
    /* Every rank: the update with the global norm, or none (skip: a non-finite step);
     * the statistics of either, the learning rate included. */
    OptimStats (*update)(void *ctx, double norm, int skip);
    /* Every rank: the step's loss from the losses summed over the ranks; adds the command's
     * own fields to the metrics line and its part of the progress line to detail. */
    double (*loss)(void *ctx, const double sum[RUN_LOSS_PARTS], double tokens, json_t *line, char *detail,
                   size_t size);
    /* Collective, NULL when there is nothing to evaluate: the val_* fields into line and
     * the progress text into summary. */
    int (*evaluate)(void *ctx, json_t *line, char *summary, size_t size);
    /* Collective: ckpt_save through w (NULL: synchronous) with what trains; st holds
     * everything but optim_step. */
    int (*save)(void *ctx, CkptState *st, CkptWriter *w);
    /* Rank 0: the result file at path (RUN_DIR/model.h5). */
    int (*write_result)(void *ctx, const char *path);
} RunClient;

/* Collective. The whole lifecycle above. Returns 0 when all steps are done and the result
 * is written, 1 when stopped early with a checkpoint written, or -1 on every rank with
 * the same message. */
int run_training(const RunClient *c);

#endif
