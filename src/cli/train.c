/* train.c: `gpt train` (train.h). */
#include <stdio.h>
#include <string.h>

#include "run/train.h"
#include "base/util.h"
#include "cli/cli.h"
#include "cpu/blas.h"
#include "dist/dist.h"
#include "dist/gradsync.h"
#include "files/data.h"
#include "files/model_file.h"
#include "model/config.h"
#include "run/eval.h"

typedef struct {
    TrainOptions t;
    ConfigArgs model;
    float lr, min_lr, weight_decay, clip, bucket_mb;
    long warmup; /* -1: min(2000, steps / 10) */
} TrainArgs;

#define T(field) offsetof(TrainArgs, t.field)
#define A(field) offsetof(TrainArgs, field)

static const CliOpt train_opts[] = {
    {.name = "data", .kind = CLI_LIST, .offset = T(data), .count = T(n_data), .flags = CLI_REQUIRED, .max = BLEND_MAX,
     .metavar = "[W:]CORPUS.h5", .help = "a corpus, with its weight in a blend (repeat for a blend)"},
    {.name = "out", .kind = CLI_STRING, .offset = T(out), .flags = CLI_REQUIRED, .metavar = "RUN_DIR",
     .help = "the run directory"},
    {.name = "steps", .kind = CLI_LONG, .offset = T(steps), .flags = CLI_REQUIRED | CLI_MIN, .min = 1,
     .metavar = "N", .help = "optimizer steps"},
    {.name = "init", .kind = CLI_STRING, .offset = T(init), .metavar = "MODEL.h5",
     .help = "start from this model file instead of --model (only --dropout* may change it)"},
    {.name = "batch", .kind = CLI_INT, .offset = T(batch), .flags = CLI_MIN | CLI_GIVEN, .min = 1,
     .count = T(batch_given), .metavar = "B", .help = "windows a rank and micro-step"},
    {.name = "accum", .kind = CLI_INT, .offset = T(accum), .flags = CLI_MIN | CLI_GIVEN, .min = 1,
     .count = T(accum_given), .metavar = "A", .help = "micro-steps a step (P*B*A windows a step)"},
    {.name = "seed", .kind = CLI_U64, .offset = T(seed), .metavar = "S", .help = "of the initialisation and the data order"},
    {.name = "lr", .kind = CLI_FLOAT, .offset = A(lr), .flags = CLI_MIN | CLI_MIN_OPEN, .metavar = "X",
     .help = "AdamW's peak learning rate"},
    {.name = "min-lr", .kind = CLI_FLOAT, .offset = A(min_lr), .flags = CLI_MIN, .metavar = "X",
     .help = "the floor of the cosine decay (at most --lr)"},
    {.name = "warmup", .kind = CLI_LONG, .offset = A(warmup), .flags = CLI_MIN, .metavar = "W",
     .help = "linear warm-up steps", .dflt = "min(2000, N/10)"},
    {.name = "weight-decay", .kind = CLI_FLOAT, .offset = A(weight_decay), .flags = CLI_MIN, .metavar = "X",
     .help = "AdamW's decoupled weight decay"},
    {.name = "clip", .kind = CLI_FLOAT, .offset = A(clip), .flags = CLI_MIN, .metavar = "X",
     .help = "largest gradient norm (0: off)"},
    {.name = "eval-windows", .kind = CLI_INT, .offset = T(eval_windows), .flags = CLI_MIN, .min = 1, .metavar = "W",
     .help = "validation windows of each corpus's /val"},
    {.name = "bucket-mb", .kind = CLI_FLOAT, .offset = A(bucket_mb), .flags = CLI_MIN | CLI_MAX, .max = 1048576,
     .metavar = "M", .help = "MiB a gradient bucket averaged during the backward pass, and with --shard-optimizer a bucket of the "
             "parameters' all-gather overlapped with the next forward pass (0: one blocking collective for each)"},
    {.kind = CLI_GROUP, .group = cli_run_opts, .offset = T(run), .help = "run options"},
    {.kind = CLI_GROUP, .group = cli_config_opts, .offset = A(model), .help = "model options (without --init)"},
    CLI_END};

static const CliCommand train_cmd = {
    .name = "train", .mpi = 1, .opts = train_opts, .size = sizeof(TrainArgs),
    .about =
        "Pre-trains on windows of n_ctx + 1 tokens of the corpus's /train split, from --model PRESET\n"
        "(and model options) or --init MODEL.h5. Several --data make a blend: --data 0.7:web.h5\n"
        "--data 0.3:books.h5 draws 70% of the windows from web.h5 (a bare path weighs 1; one\n"
        "tokenizer for all; docs/training.md). The vocabulary comes from the corpus unless --vocab\n"
        "is given; with --init the corpus must carry the model's tokenizer. Every E steps and at\n"
        "the end, the mean loss over the first W windows of /val (a blend's: each corpus's, and\n"
        "their weighted mean). --shard-optimizer splits AdamW's moments among the ranks; losses\n"
        "and checkpoints are those of an unsharded run. --precision bf16 keeps weights, moments\n"
        "and checkpoints fp32, so a run may resume in the other precision (docs/precision.md).\n"
        "RUN_DIR gets config.json, metrics.jsonl (a line a step) and model.h5; one holding another\n"
        "run is refused unless --overwrite or --resume.\n\n"
        "Checkpoints: RUN_DIR/ckpt_<step>.h5 every N steps and/or M minutes and after the last\n"
        "step; RUN_DIR/latest names the newest. --resume auto continues from the newest that\n"
        "loads (from step 0 if there is none): same model, data, seed and global batch; with\n"
        "another number of ranks the accumulation (or batch) is adapted to it. SIGTERM, SIGINT or\n"
        "SIGUSR1, or --time-limit coming close, make the ranks finish the step, write a checkpoint\n"
        "and exit with code 75. A collective that has not completed in --collective-timeout\n"
        "seconds ends the job with exit code 69. See docs/operations.md.\n"};

static int parse_train(int argc, char **argv, TrainOptions *o) {
    TrainArgs a = {.t = {.batch = 8, .accum = 1, .eval_windows = 100, .seed = 1337}, .lr = 2.5e-4f,
                   .weight_decay = 0.01f, .clip = 1.0f, .bucket_mb = GRADSYNC_BUCKET_MB, .warmup = -1};
    run_options_defaults(&a.t.run);
    int first, rc = cli_parse(&train_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    *o = a.t;
    if (run_options_conflict(&o->run)) return cli_usage_error("train", "%s", run_options_conflict(&o->run));
    if (cli_precision_ready("train", o->run.precision, 0)) return 2;
    int vocab_given = 0;
    for (int i = 0; i < a.model.n; i++) vocab_given |= a.model.opt[i] == CONFIG_OPT_VOCAB;
    if (o->init) {
        if (!config_args_dropout_only(&a.model))
            return cli_usage_error("train", "--init takes the model's shape from %s: give no --model or shape options "
                                            "(only --dropout*)", o->init);
        if (model_file_read_config(o->init, &o->model)) return cli_fail("train");
        if (config_apply_dropout(&a.model, &o->model)) return cli_usage_error("train", "%s", gpt_last_error());
    } else if (config_from_args(&a.model, &o->model)) {
        return cli_usage_error("train", "%s", gpt_last_error());
    } else
        o->scale_residual = config_preset_scales_residual(a.model.preset);
    if (a.min_lr > a.lr)
        return cli_usage_error("train", "--min-lr: expected a number in [0, --lr %g], got %g", a.lr, a.min_lr);
    if (!vocab_given && !o->init) o->model.vocab_size = 0; /* from the corpus */
    o->bucket_bytes = (size_t)(a.bucket_mb * 1048576.0f);
    o->optim = optim_defaults(o->steps);
    o->optim.lr = a.lr, o->optim.min_lr = a.min_lr, o->optim.weight_decay = a.weight_decay, o->optim.clip = a.clip;
    o->optim.warmup = a.warmup >= 0 ? a.warmup : o->steps / 10 < 2000 ? o->steps / 10 : 2000;
    if (optim_validate(&o->optim)) return cli_usage_error("train", "%s", gpt_last_error());
    if (o->optim.warmup > o->steps && dist_rank() == 0) /* a valid schedule, but hardly what was meant */
        fprintf(stderr, "gpt train: warning: --warmup %ld is longer than --steps %ld: the learning rate rises to "
                        "only %g (%.3g%% of --lr) and never reaches its peak\n", o->optim.warmup, o->steps,
                (double)optim_lr_at(&o->optim, o->steps - 1), 100.0 * (double)o->steps / (double)o->optim.warmup);
    return -1; /* go on */
}

int cmd_train(int argc, char **argv) {
    TrainOptions o;
    int rc = parse_train(argc, argv, &o);
    if (rc < 0) {
        rc = train_run(&o);
        rc = rc < 0 ? cli_fail("train") : rc == 1 ? RUN_EXIT_STOPPED : 0;
    }
    dist_finalize();
    return rc;
}

