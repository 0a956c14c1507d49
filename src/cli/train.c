/* train.c: `gpt train` (see train.h) and `gpt eval`, whose evaluation gpt prune shares (cli.h). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cpu/blas.h"
#include "files/model_file.h"
#include "cli/cli.h"
#include "model/config.h"
#include "files/data.h"
#include "dist/dist.h"
#include "dist/gradsync.h"
#include "run/eval.h"
#include "run/train.h"
#include "base/util.h"

static const char train_help[] =
    "usage: [mpirun -np P] gpt train --data [W:]CORPUS.h5 ... (--model PRESET [model options] | --init MODEL.h5)\n"
    "                                --out RUN_DIR\n"
    "                                --steps N [--batch B] [--accum A] [--seed S]\n"
    "                                [--lr X] [--min-lr X] [--warmup W] [--weight-decay X] [--clip X]\n"
    "                                [--eval-every E] [--eval-windows W] [--log-every L]\n"
    "                                [--bucket-mb M] [--max-bad-steps K] [--threads T] [--overwrite]\n"
    "                                [--ckpt-every N] [--ckpt-minutes M] [--keep K]\n"
    "                                [--resume auto|CKPT.h5 [--allow-data-change]] [--time-limit D]\n"
    "                                [--collective-timeout S] [--shard-optimizer] [--async-ckpt]\n"
    "                                [--precision fp32|bf16]\n\n"
    "Pre-trains on windows of n_ctx + 1 tokens of the corpus's /train split. Several --data\n"
    "make a blend: --data 0.7:web.h5 --data 0.3:books.h5 draws 70% of the windows from web.h5\n"
    "(a bare path weighs 1; weights are normalised; one tokenizer for all; see\n"
    "docs/training.md). B windows per rank and micro-step (default 8), A micro-steps a step\n"
    "(default 1): P*B*A windows a step. The vocabulary comes from the corpus unless --vocab\n"
    "is given. --init starts from a model file instead (its shape and weights; only the\n"
    "dropout rates may be changed), such as one made by gpt import; the corpus must then\n"
    "carry the model's tokenizer. AdamW: --lr 2.5e-4, --min-lr 0, --warmup min(2000, N/10),\n"
    "--weight-decay 0.01, --clip 1 (0: off). Every E steps (default 100, 0: never) and at the\n"
    "end, the mean loss over the first W windows of /val (default 100; a blend's: each\n"
    "corpus's, and their weighted mean). Gradients are averaged in buckets of about M MiB\n"
    "(default 1) while the backward pass runs (0: in one blocking allreduce after it).\n"
    "--shard-optimizer splits AdamW's moments among the ranks (ZeRO-1: 8 bytes a parameter\n"
    "become 8/P): gradients are reduce-scattered, each rank updates its shard, and the\n"
    "parameters are all-gathered; losses and checkpoints are those of an unsharded run.\n"
    "--precision bf16 runs every matrix product on bf16 operands with fp32 sums, on AMX\n"
    "through oneDNN where the CPU has it; weights, moments, gradients and checkpoints stay\n"
    "fp32, so a run may resume in the other precision (docs/precision.md).\n"
    "RUN_DIR gets config.json, metrics.jsonl (a line a step) and model.h5.\n"
    "A RUN_DIR holding another run is refused unless --overwrite or --resume.\n\n"
    "Checkpoints: RUN_DIR/ckpt_<step>.h5 every N steps and/or M minutes and after the last\n"
    "step; RUN_DIR/latest names the newest; the K newest are kept (default 3, 0: all).\n"
    "--resume auto continues from the newest checkpoint of RUN_DIR that loads (from step 0\n"
    "if there is none), --resume CKPT.h5 from that one: same model, data, seed and global\n"
    "batch; with another number of ranks the accumulation (or batch) is adapted to it.\n"
    "--allow-data-change resumes on other data (another blend or other weights) deliberately.\n"
    "--async-ckpt writes checkpoints in the background: training waits only while the state\n"
    "is copied; latest moves once the file is complete (metrics: ckpt_blocked_s, ckpt_write_s).\n"
    "SIGTERM, SIGINT or SIGUSR1, or --time-limit D (Slurm's forms: MM, MM:SS, HH:MM:SS,\n"
    "D-HH, D-HH:MM, D-HH:MM:SS) coming close, make the ranks finish the step, write a\n"
    "checkpoint and exit with code 75. A collective operation (gradient allreduce, step\n"
    "control, checkpoint write) that has not completed in S seconds (default 600, 0: no\n"
    "limit) means a rank stopped answering: the ranks still alive say which, and end the\n"
    "job with exit code 69, leaving the checkpoints as they were. See docs/operations.md.\n\n"
    "model options:\n" CONFIG_OPTIONS_HELP;

/* --bucket-mb's bound: its bytes must fit a size_t. */
#define BUCKET_MB_MAX 1048576.0f

static int parse_train(int argc, char **argv, TrainOptions *o) {
    enum { O_DATA = 1, O_OUT, O_STEPS, O_BATCH, O_ACCUM, O_SEED, O_LR, O_MIN_LR, O_WARMUP, O_WD, O_CLIP,
           O_EVAL_WINDOWS, O_BUCKET, O_INIT, O_HELP };
    static const struct option opts[] = {
        CONFIG_LONG_OPTIONS, RUN_LONG_OPTIONS,
        {"data", required_argument, 0, O_DATA}, {"out", required_argument, 0, O_OUT},
        {"steps", required_argument, 0, O_STEPS}, {"batch", required_argument, 0, O_BATCH},
        {"accum", required_argument, 0, O_ACCUM}, {"seed", required_argument, 0, O_SEED},
        {"lr", required_argument, 0, O_LR}, {"min-lr", required_argument, 0, O_MIN_LR},
        {"warmup", required_argument, 0, O_WARMUP}, {"weight-decay", required_argument, 0, O_WD},
        {"clip", required_argument, 0, O_CLIP}, {"eval-windows", required_argument, 0, O_EVAL_WINDOWS},
        {"bucket-mb", required_argument, 0, O_BUCKET}, {"init", required_argument, 0, O_INIT},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0}};
    ConfigArgs cargs = {0};
    long steps = 0, warmup = -1;
    int vocab_given = 0, opt;
    float bucket_mb = GRADSYNC_BUCKET_MB;
    unsigned long long seed = 1337;
    float lr = 2.5e-4f, min_lr = 0.0f, wd = 0.01f, clip = 1.0f;
    *o = (TrainOptions){.batch = 8, .accum = 1, .eval_windows = 100};
    run_options_defaults(&o->run);
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        const char *flag = NULL; /* set when the value is bad */
        if (run_option(&o->run, opt, optarg, &flag)) {
            if (flag) return cli_usage_error("train", "%s, got '%s'", flag, optarg);
            continue;
        }
        if (opt >= CONFIG_OPT_BASE && opt < CONFIG_OPT_END) {
            vocab_given |= opt == CONFIG_OPT_VOCAB;
            if (config_args_add(&cargs, opt, optarg)) return cli_usage_error("train", "%s", gpt_last_error());
            continue;
        }
        switch (opt) {
        case O_DATA:
            if (o->n_data == BLEND_MAX) flag = "--data: at most 64 corpora";
            else o->data[o->n_data++] = optarg;
            break;
        case O_OUT: o->out = optarg; break;
        case O_INIT: o->init = optarg; break;
        case O_STEPS: if (parse_long(optarg, &steps) || steps < 1) flag = "--steps: expected a positive integer"; break;
        case O_BATCH: o->batch_given = 1; if (parse_int(optarg, &o->batch) || o->batch < 1) flag = "--batch: expected a positive integer"; break;
        case O_ACCUM: o->accum_given = 1; if (parse_int(optarg, &o->accum) || o->accum < 1) flag = "--accum: expected a positive integer"; break;
        case O_SEED: if (parse_u64(optarg, &seed)) flag = "--seed: expected a non-negative integer"; break;
        case O_LR: if (parse_float(optarg, &lr) || !(lr > 0.0f)) flag = "--lr: expected a positive number"; break;
        case O_MIN_LR: if (parse_float(optarg, &min_lr) || !(min_lr >= 0.0f)) flag = "--min-lr: expected a number >= 0"; break;
        case O_WARMUP: if (parse_long(optarg, &warmup) || warmup < 0) flag = "--warmup: expected an integer >= 0"; break;
        case O_WD: if (parse_float(optarg, &wd) || !(wd >= 0.0f)) flag = "--weight-decay: expected a number >= 0"; break;
        case O_CLIP: if (parse_float(optarg, &clip) || !(clip >= 0.0f)) flag = "--clip: expected a number >= 0 (0: off)"; break;
        case O_EVAL_WINDOWS: if (parse_int(optarg, &o->eval_windows) || o->eval_windows < 1) flag = "--eval-windows: expected a positive integer"; break;
        case O_BUCKET: if (parse_float(optarg, &bucket_mb) || !(bucket_mb >= 0.0f && bucket_mb <= BUCKET_MB_MAX)) flag = "--bucket-mb: expected a number of MiB from 0 (no overlap) to 1048576"; break;
        case O_HELP: if (dist_rank() == 0) fputs(train_help, stdout); return 0;
        default: return cli_usage_error("train", "unknown option");
        }
        if (flag) return cli_usage_error("train", "%s, got '%s'", flag, optarg);
    }
    if (optind < argc) return cli_usage_error("train", "unexpected argument '%s'", argv[optind]);
    if (!o->n_data || !o->out || !steps) return cli_usage_error("train", "--data, --out and --steps are required");
    if (run_options_conflict(&o->run)) return cli_usage_error("train", "%s", run_options_conflict(&o->run));
    if (cli_precision_ready("train", o->run.precision, 0)) return 2;
    if (o->init) {
        if (!config_args_dropout_only(&cargs))
            return cli_usage_error("train", "--init takes the model's shape from %s: give no --model or shape options "
                                            "(only --dropout*)", o->init);
        if (model_file_read_config(o->init, &o->model)) return cli_fail("train");
        if (config_apply_dropout(&cargs, &o->model)) return cli_usage_error("train", "%s", gpt_last_error());
    } else if (config_from_args(&cargs, &o->model)) {
        return cli_usage_error("train", "%s", gpt_last_error());
    }
    if (min_lr > lr) return cli_usage_error("train", "--min-lr: expected a number in [0, --lr %g], got %g", lr, min_lr);
    if (!vocab_given && !o->init) o->model.vocab_size = 0; /* from the corpus */
    o->steps = steps;
    o->seed = seed;
    o->bucket_bytes = (size_t)(bucket_mb * 1048576.0f);
    o->optim = optim_defaults(steps);
    o->optim.lr = lr, o->optim.min_lr = min_lr, o->optim.weight_decay = wd, o->optim.clip = clip;
    o->optim.warmup = warmup >= 0 ? warmup : steps / 10 < 2000 ? steps / 10 : 2000;
    if (optim_validate(&o->optim)) return cli_usage_error("train", "%s", gpt_last_error());
    if (o->optim.warmup > steps && dist_rank() == 0) /* a valid schedule, but hardly what was meant */
        fprintf(stderr, "gpt train: warning: --warmup %ld is longer than --steps %ld: the learning rate rises to "
                        "only %g (%.3g%% of --lr) and never reaches its peak\n", o->optim.warmup, steps,
                (double)optim_lr_at(&o->optim, steps - 1), 100.0 * (double)steps / (double)o->optim.warmup);
    return -1; /* go on */
}

int cmd_train(int argc, char **argv) {
    dist_init(&argc, &argv);
    cli_quiet(dist_rank() != 0);
    TrainOptions o;
    int rc = parse_train(argc, argv, &o);
    if (rc < 0) {
        rc = train_run(&o);
        rc = rc < 0 ? cli_fail("train") : rc == 1 ? RUN_EXIT_STOPPED : 0;
    }
    dist_finalize();
    return rc;
}

static const char eval_help[] =
    "usage: [mpirun -np P] gpt eval --model MODEL.h5 --data [W:]CORPUS.h5 ... [--split val|train]\n"
    "                               [--windows N] [--batch B] [--threads T] [--precision fp32|bf16] [--json]\n\n"
    "Mean negative log-likelihood of the model over consecutive, non-overlapping windows of\n"
    "n_ctx + 1 tokens of a split (window i starts at token i * n_ctx; the first N, default\n"
    "all), and its perplexity. The same answer for any number of ranks. Several --data (a\n"
    "blend, as gpt train takes it): each corpus's loss, and their mean by the blend's weights.\n"
    "--precision bf16 runs the matrix products on bf16 operands (docs/precision.md).\n";

int cli_parse_split(const char *cmd, const char *name) {
    int split = !strcmp(name, "val") ? SPLIT_VAL : !strcmp(name, "train") ? SPLIT_TRAIN : -1;
    if (split < 0) cli_usage_error(cmd, "--split: expected val or train, got '%s'", name);
    return split;
}

static const char *split_name(int split) { return split == SPLIT_VAL ? "val" : "train"; }

Blend *cli_eval_open(const GPT *m, const char *model, const char *const *data, int n_data, int split, long windows,
                     int64_t *n) {
    Blend *b = blend_open(data, n_data);
    if (!b) return NULL;
    int rc = blend_vocab_size(b) > m->cfg.vocab_size /* one tokenizer: one vocabulary */
                 ? gpt_error("%s has a vocabulary of %d tokens, more than the %d of %s", b->path[0],
                             blend_vocab_size(b), m->cfg.vocab_size, model)
                 : 0;
    blend_split_windows(b, split, m->cfg.n_ctx, windows > 0 ? windows : INT64_MAX, n);
    for (int c = 0; c < b->n && !rc; c++)
        if (n[c] == 0)
            rc = gpt_error("%s: /%s holds %lld tokens, fewer than one window of n_ctx + 1 = %d", b->path[c],
                           split_name(split), (long long)corpus_split_tokens(b->corpus[c], split), m->cfg.n_ctx + 1);
    if (rc) {
        blend_close(b);
        return NULL;
    }
    return b;
}

int cli_eval_report(GPT *m, const char *model, const Blend *b, int split, const int64_t *n, int json, double *loss) {
    double losses[BLEND_MAX + 1], nll[BLEND_MAX];
    int64_t tokens[BLEND_MAX];
    if (eval_blend(m, b, split, n, losses, nll, tokens)) return -1;
    *loss = losses[b->n];
    if (dist_rank() != 0) return 0;
    json_t *each = json_array();
    for (int c = 0; c < b->n; c++) {
        json_t *o = json_pack("{s:o,s:o,s:I,s:I,s:s}", "loss", json_real_or_null(losses[c]), "perplexity",
                              json_real_or_null(exp(losses[c])), "tokens", (json_int_t)tokens[c], "windows",
                              (json_int_t)n[c], "split", split_name(split));
        if (b->n > 1) {
            json_object_set_new(o, "corpus", json_string(b->path[c]));
            json_object_set_new(o, "weight", json_real(b->weight[c]));
        }
        json_array_append_new(each, o);
        if (!json)
            printf("%s on %s /%s: loss %.4f, perplexity %.2f over %lld tokens (%lld windows of %d)\n", model,
                   b->path[c], split_name(split), losses[c], exp(losses[c]), (long long)tokens[c], (long long)n[c],
                   m->cfg.n_ctx);
    }
    if (b->n > 1 && !json)
        printf("%s on the blend %s /%s: loss %.4f (the weighted mean), perplexity %.2f\n", model, b->spec,
               split_name(split), *loss, exp(*loss));
    if (json && b->n == 1) cli_print_json(json_incref(json_array_get(each, 0)));
    else if (json)
        cli_print_json(json_pack("{s:o,s:o,s:s,s:s,s:O}", "loss", json_real_or_null(*loss), "perplexity",
                                 json_real_or_null(exp(*loss)), "split", split_name(split), "blend", b->spec,
                                 "corpora", each));
    json_decref(each);
    return 0;
}

static int eval(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"data", required_argument, 0, 'd'},
                                         {"split", required_argument, 0, 's'}, {"windows", required_argument, 0, 'w'},
                                         {"batch", required_argument, 0, 'b'}, {"threads", required_argument, 0, 't'},
                                         {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'},
                                         CLI_PRECISION_OPTION, {0, 0, 0, 0}};
    const char *model = NULL, *data[BLEND_MAX], *split_arg = "val";
    Precision precision = PRECISION_FP32;
    int n_data = 0;
    long windows = -1;
    int batch = 8, threads = 1, json = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 'd':
            if (n_data == BLEND_MAX) return cli_usage_error("eval", "--data: at most %d corpora", BLEND_MAX);
            data[n_data++] = optarg;
            break;
        case 's': split_arg = optarg; break;
        case 'w': if (parse_long(optarg, &windows) || windows < 1) return cli_usage_error("eval", "--windows: expected a positive integer, got '%s'", optarg); break;
        case 'b': if (parse_int(optarg, &batch) || batch < 1) return cli_usage_error("eval", "--batch: expected a positive integer, got '%s'", optarg); break;
        case 't': if (parse_int(optarg, &threads) || threads < 1) return cli_usage_error("eval", "--threads: expected a positive integer, got '%s'", optarg); break;
        case 'j': json = 1; break;
        case CLI_OPT_PRECISION: if (cli_precision("eval", optarg, &precision)) return 2; break;
        case 'h': if (dist_rank() == 0) fputs(eval_help, stdout); return 0;
        default: return cli_usage_error("eval", "unknown option");
        }
    }
    if (!model || !n_data) return cli_usage_error("eval", "--model and --data are required");
    int split = cli_parse_split("eval", split_arg);
    if (split < 0 || cli_precision_ready("eval", precision, !json)) return 2;
    compute_threads_set(threads);
    GPT *m = model_file_load(model, batch, 0);
    if (dist_agree(!m)) return cli_fail("eval");
    gpt_set_precision(m, precision);
    int64_t n[BLEND_MAX];
    double loss;
    Blend *b = cli_eval_open(m, model, data, n_data, split, windows, n);
    int rc = !b || cli_eval_report(m, model, b, split, n, json, &loss);
    blend_close(b);
    gpt_free(m);
    return rc ? cli_fail("eval") : 0;
}

int cmd_eval(int argc, char **argv) {
    dist_init(&argc, &argv);
    cli_quiet(dist_rank() != 0);
    int rc = eval(argc, argv);
    dist_finalize();
    return rc;
}
