/* plan.h: `gpt plan`, a training layout for a cluster, its memory and its speed.
 *
 * Three models, each from one place (docs/operations.md, "Planning a run"):
 *   memory   what a rank of `gpt train` allocates, from the functions the allocation uses
 *            (model.h's gpt_memory, optim.h's adamw_bytes with shard.h's shard_sizes,
 *            gradsync.h's gradsync_wire_bytes, checkpoint_writer.h's
 *            ckpt_writer_stage_bytes), plus MPI's collective temporaries and a measured
 *            process baseline (the constants below);
 *   compute  a calibration: gpt_time_steps (speed.h, what `gpt bench` runs) on one layer of
 *            the model's shapes on this machine, cached in $XDG_CACHE_HOME/gpt (default
 *            ~/.cache/gpt) under the CPU's model, the shapes and the threads; or a file
 *            `gpt bench --json` wrote on the target node. A micro-step takes
 *            n_layer x layer + head, per token; the update grows with the parameters;
 *   network  docs/scaling.md's model: the ring allreduce A, the tied embedding's token
 *            rows X, the unhidden tail f A, alpha a ring round, against 2/3 of the last
 *            micro-step's compute. Sharded, every segment is split among the ranks
 *            (shard.h), so the reduce-scatter and the all-gather are rings of P - 1 hops
 *            that each carry every segment's largest part (shard_sizes' hop, about S / P:
 *            each about half of A): the reduce-scatter against the backward pass, the
 *            all-gather (fp32) against the next forward pass's blocks (1/3 of their
 *            compute: wte comes last, for the head), after a fetch of the batch's rows
 *            of wte (measured on 2 hosts: docs/benchmarks.md).
 * The layout search tries every R ranks a node that divides the cores (T = cores / R
 * threads each), unsharded where that fits the node's memory and else with
 * --shard-optimizer, and keeps the fastest that fits. */
#ifndef GPT_PLAN_H
#define GPT_PLAN_H

#include <stddef.h>

#include "cpu/precision.h"
#include "dist/gradsync.h"
#include "model/config.h"

/* The process itself, measured (docs/operations.md): the peak RSS of `gpt train` on tiny
 * with a 2260-token vocabulary (249 k parameters) less what gpt_memory and AdamW count,
 * 90 - 6 MiB, the same on 1 rank and 2, 1 thread and 2: the binary, MPI, HDF5, OpenBLAS's
 * and oneDNN's libraries and buffers, the corpus reader, the checkpoint's HDF5 buffers. */
#define PLAN_BASELINE_MB 84.0
/* MPI's temporaries on more than one rank: a copy of a collective's buffer, each at most
 * GRADSYNC_PIECE_MB. Not seen on 2 ranks of one host (Open MPI's shared memory: `small`
 * with 40478 tokens peaked at 384 MiB on 1 rank, 385 on 2); counted as one piece, a bound
 * for TCP's. */
#define PLAN_MPI_PIECES 1
/* docs/scaling.md's constants: the share of the line rate a ring reaches (fitted on the
 * 2-host test cluster at 1 and 5 Gbit/s), a ring round's latency, the share of a
 * micro-step's compute the backward pass is. */
#define PLAN_ETA 0.5
#define PLAN_ALPHA_S 125e-6
#define PLAN_BACKWARD_SHARE (2.0 / 3.0)
/* Ranks of one node reduce through shared memory: as fast as a core copies (the test
 * cluster's "unlimited" veth moved about 2 GB/s, docs/scaling.md). */
#define PLAN_LOCAL_BYTES_S 2e9
/* Threads beyond those measured: time a step x (T_measured / T)^PLAN_THREAD_EXPONENT
 * (assumed: products scale almost linearly, LayerNorm, GELU, softmax and AdamW by memory
 * bandwidth; not measured past this machine's cores). */
#define PLAN_THREAD_EXPONENT 0.85
/* Tokens a calibration step runs at most (the batch is cut to fit, per-token times kept):
 * a few seconds for gpt1-sized shapes on one core. */
#define PLAN_CALIBRATION_TOKENS 2048

typedef struct {
    GPTConfig cfg;
    const char *model;     /* the preset or file, for messages */
    int batch;             /* b: windows a micro-step a rank */
    int accum;             /* k, 0: from global_batch (or 1) */
    long global_batch;     /* windows a step over all ranks, 0: not asked */
    Precision precision;
    GradReduce grad_reduce;
    int async_ckpt;
    int nodes, cores;      /* N nodes of `cores` cores */
    double mem_gib;        /* a node's memory for the ranks, 0: not limited */
    double link_gbit;      /* a node's link, Gbit/s (0: none given; only one node may do without) */
    double tokens;         /* to train, 0: no time asked */
    int ranks_per_node, threads; /* forced, 0: chosen */
    int shard;             /* 1: --shard-optimizer forced, 0: chosen */
    const char *calibration; /* a `gpt bench --json` file, or NULL: calibrate here */
    int recalibrate;       /* calibrate here even where the cache has it */
    int quiet;             /* no progress on stderr */
} PlanInput;

/* Bytes of one rank. */
typedef struct {
    double params, grads, moments, acts, bf16, mpi, staging, baseline, total;
} PlanMemory;

/* The speed of a step's parts at some threads: seconds a token (layer: one layer's
 * forward and backward; head), seconds a parameter of the update. */
typedef struct {
    double layer_tok_s, head_tok_s, update_param_s;
    int threads;           /* where measured */
    int extrapolated_from; /* 0: measured at these threads; else the threads it was measured at */
    char source[512];      /* "calibrated on this machine (CPU), cached in PATH" or the file */
} PlanSpeed;

typedef struct {
    int nodes, ranks_per_node, threads, shard, accum, batch;
    long global_batch;
    PlanMemory mem;
    int fits;
    PlanSpeed speed;
    double micro_s, update_s; /* C and O */
    double allreduce_s, rows_s, wait_s, step_s; /* A, X, wait, k C + O + wait */
    double tokens_per_s, efficiency, comm_share, hours;
} PlanLayout;

#define PLAN_MAX_ALTERNATIVES 8
typedef struct {
    PlanLayout best;         /* the layout recommended (fits) or forced (may not fit) */
    int any_fits;
    int n_alt;
    PlanLayout alt[PLAN_MAX_ALTERNATIVES]; /* when best does not fit: layouts that do */
    char alt_why[PLAN_MAX_ALTERNATIVES][96]; /* what each changes: "sharded", "2 ranks a node", "batch 2" */
} Plan;

/* One layout's memory: what a rank of gpt train allocates. */
PlanMemory plan_memory(const PlanInput *in, int ranks_per_node, int threads, int shard, int batch, int accum);

/* Makes the plan (calibrating where needed: seconds, progress on stderr unless quiet);
 * -1 with gpt_error() on a bad calibration file or options that contradict each other. */
int plan_make(const PlanInput *in, Plan *out);

#endif
