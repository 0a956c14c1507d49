/* finetune.c: `gpt finetune` (finetune.h), `gpt predict`, `gpt eval-task` and
 * `gpt merge-lora` (task_model.h). */
#include <getopt.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/blas.h"
#include "cli/cli.h"
#include "files/data.h"
#include "dist/dist.h"
#include "run/finetune.h"
#include "run/task_metrics.h"
#include "files/h5util.h"
#include "model/lora.h"
#include "files/model_file.h"
#include "files/task_file.h"
#include "files/task_model.h"
#include "run/train.h"
#include "base/util.h"

static const char finetune_help[] =
    "usage: [mpirun -np P] gpt finetune --init MODEL.h5 --data (TASK.h5 | [W:]CORPUS.h5 ...) --out RUN_DIR\n"
    "           [--lambda 0.5] [--lr 6.25e-5] [--epochs 3] [--batch 32] [--warmup-fraction 0.002]\n"
    "           [--micro-batch 8] [--weight-decay 0.01] [--clip 1] [--seed S]\n"
    "           [--lora-rank R [--lora-alpha A] [--lora-targets attn,mlp]]\n"
    "           [--eval-every E] [--log-every L] [--max-bad-steps K] [--threads T] [--overwrite]\n"
    "           [--ckpt-every N] [--ckpt-minutes M] [--keep K] [--resume auto|CKPT.h5] [--time-limit D]\n"
    "           [--allow-data-change] [--collective-timeout S] [--shard-optimizer] [--async-ckpt]\n"
    "           [--precision fp32|bf16]\n\n"
    "Fine-tunes a pre-trained model (a model file or checkpoint) on a task file from\n"
    "gpt prepare-task, as GPT-1 does: a linear head on the extract token's final state, the\n"
    "objective L3 = L2 + lambda L1 (lambda 0: no LM loss), AdamW with a linear warm-up over\n"
    "the given fraction of the steps and a linear decay; the defaults are GPT-1's. --batch\n"
    "examples a step over all ranks, run in passes of up to --micro-batch sequences.\n"
    "--lora-rank R freezes the model and trains rank-R adapters (scale A/R, default A = R) on\n"
    "the attention (attn, the default) and/or feed-forward (mlp) matrices with the head.\n"
    "Every E steps (default 100) and at the end: accuracy (or Pearson and Spearman) on /val.\n"
    "RUN_DIR gets config.json, metrics.jsonl, checkpoints and model.h5 as gpt train's does\n"
    "(see docs/finetuning.md); --resume, signals, --time-limit, --collective-timeout,\n"
    "--shard-optimizer (the model's AdamW state split among the ranks), --async-ckpt and\n"
    "--precision (bf16: the base model's products on bf16 operands; a head's and LoRA's stay\n"
    "fp32) work as in gpt train.\n"
    "With a corpus (gpt prepare) as --data it continues pre-training instead: next-token\n"
    "prediction on windows of n_ctx + 1 tokens, --batch windows a step, no head; several\n"
    "--data make a blend, as in gpt train (an epoch: all the corpora's windows); with\n"
    "--lora-rank, model.h5 holds the adapters (gpt merge-lora makes a plain model file).\n";

static int parse_finetune(int argc, char **argv, FinetuneOptions *o) {
    enum { O_INIT = 1, O_DATA, O_OUT, O_LAMBDA, O_LR, O_EPOCHS, O_BATCH, O_MICRO, O_WARMUP, O_WD, O_CLIP, O_SEED,
           O_LORA_RANK, O_LORA_ALPHA, O_LORA_TARGETS, O_HELP };
    static const struct option opts[] = {
        RUN_LONG_OPTIONS,
        {"init", required_argument, 0, O_INIT}, {"data", required_argument, 0, O_DATA},
        {"out", required_argument, 0, O_OUT}, {"lambda", required_argument, 0, O_LAMBDA},
        {"lr", required_argument, 0, O_LR}, {"epochs", required_argument, 0, O_EPOCHS},
        {"batch", required_argument, 0, O_BATCH}, {"micro-batch", required_argument, 0, O_MICRO},
        {"warmup-fraction", required_argument, 0, O_WARMUP}, {"weight-decay", required_argument, 0, O_WD},
        {"clip", required_argument, 0, O_CLIP}, {"seed", required_argument, 0, O_SEED},
        {"lora-rank", required_argument, 0, O_LORA_RANK}, {"lora-alpha", required_argument, 0, O_LORA_ALPHA},
        {"lora-targets", required_argument, 0, O_LORA_TARGETS}, {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0}};
    float lr = 6.25e-5f, wd = 0.01f, clip = 1.0f, epochs = 3.0f, warmup = 0.002f, alpha = 0.0f;
    unsigned long long seed = 1;
    *o = (FinetuneOptions){.lambda = 0.5f, .batch = 32, .micro_batch = 8, .lora_targets = LORA_ATTN};
    run_options_defaults(&o->run);
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        const char *flag = NULL;
        if (run_option(&o->run, opt, optarg, &flag)) {
            if (flag) return cli_usage_error("finetune", "%s, got '%s'", flag, optarg);
            continue;
        }
        switch (opt) {
        case O_INIT: o->init = optarg; break;
        case O_DATA:
            if (o->n_data == BLEND_MAX) flag = "--data: at most 64 corpora";
            else o->data[o->n_data++] = optarg;
            break;
        case O_OUT: o->out = optarg; break;
        case O_LAMBDA: if (parse_float(optarg, &o->lambda) || !(o->lambda >= 0.0f)) flag = "--lambda: expected a number >= 0"; break;
        case O_LR: if (parse_float(optarg, &lr) || !(lr > 0.0f)) flag = "--lr: expected a positive number"; break;
        case O_EPOCHS: if (parse_float(optarg, &epochs) || !(epochs > 0.0f)) flag = "--epochs: expected a positive number"; break;
        case O_BATCH: if (parse_int(optarg, &o->batch) || o->batch < 1) flag = "--batch: expected a positive integer"; break;
        case O_MICRO: if (parse_int(optarg, &o->micro_batch) || o->micro_batch < 1) flag = "--micro-batch: expected a positive integer"; break;
        case O_WARMUP: if (parse_float(optarg, &warmup) || !(warmup >= 0.0f && warmup <= 1.0f)) flag = "--warmup-fraction: expected a number in [0, 1]"; break;
        case O_WD: if (parse_float(optarg, &wd) || !(wd >= 0.0f)) flag = "--weight-decay: expected a number >= 0"; break;
        case O_CLIP: if (parse_float(optarg, &clip) || !(clip >= 0.0f)) flag = "--clip: expected a number >= 0 (0: off)"; break;
        case O_SEED: if (parse_u64(optarg, &seed)) flag = "--seed: expected a non-negative integer"; break;
        case O_LORA_RANK: if (parse_int(optarg, &o->lora_rank) || o->lora_rank < 1) flag = "--lora-rank: expected a positive integer"; break;
        case O_LORA_ALPHA: if (parse_float(optarg, &alpha) || !(alpha > 0.0f)) flag = "--lora-alpha: expected a positive number"; break;
        case O_LORA_TARGETS: if (lora_parse_targets(optarg, &o->lora_targets)) return cli_usage_error("finetune", "%s", gpt_last_error()); break;
        case O_HELP: if (dist_rank() == 0) fputs(finetune_help, stdout); return 0;
        default: return cli_usage_error("finetune", "unknown option");
        }
        if (flag) return cli_usage_error("finetune", "%s, got '%s'", flag, optarg);
    }
    if (optind < argc) return cli_usage_error("finetune", "unexpected argument '%s'", argv[optind]);
    if (!o->init || !o->n_data || !o->out) return cli_usage_error("finetune", "--init, --data and --out are required");
    if (run_options_conflict(&o->run)) return cli_usage_error("finetune", "%s", run_options_conflict(&o->run));
    if (cli_precision_ready("finetune", o->run.precision, 0)) return 2;
    if (alpha > 0.0f && !o->lora_rank) return cli_usage_error("finetune", "--lora-alpha needs --lora-rank");
    o->lora_alpha = alpha > 0.0f ? alpha : (float)o->lora_rank;
    o->epochs = epochs, o->warmup_fraction = warmup, o->seed = seed;
    o->optim = optim_defaults(1);
    o->optim.lr = lr, o->optim.weight_decay = wd, o->optim.clip = clip, o->optim.warmup = 0;
    if (optim_validate(&o->optim)) return cli_usage_error("finetune", "%s", gpt_last_error());
    return -1;
}

int cmd_finetune(int argc, char **argv) {
    dist_init(&argc, &argv);
    cli_quiet(dist_rank() != 0);
    FinetuneOptions o;
    int rc = parse_finetune(argc, argv, &o);
    if (rc < 0) {
        rc = finetune_run(&o);
        rc = rc < 0 ? cli_fail("finetune") : rc == 1 ? RUN_EXIT_STOPPED : 0;
    }
    dist_finalize();
    return rc;
}

/* ---- predict and eval-task ---- */

/* The examples of --data: a task file's split, or a JSONL/CSV file transformed with the
 * model's task description and tokenizer. */
static TaskData *load_data(TaskModel *tm, const char *path, int truncate, int labels_optional, int *split) {
    if (h5_is_hdf5_file(path)) {
        *split = SPLIT_VAL;
        TaskData *d = task_load(path);
        if (d && !task_examples(d, SPLIT_VAL)) *split = SPLIT_TRAIN; /* prepared without a validation split */
        return d;
    }
    char names[4096] = "";
    for (int k = 0; k < tm->n_names; k++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", k ? "," : "", tm->names[k]);
    TaskPrepare p = {.type = tm->info.type, .n_ctx = tm->info.n_ctx, .truncate = truncate,
                     .n_classes = tm->info.label_kind == LABEL_CLASS ? tm->info.n_classes : 0,
                     .label_names = tm->n_names ? names : NULL, .seed = 1, .labels_optional = labels_optional};
    *split = SPLIT_TRAIN;
    return task_from_text(path, tm->tok, &p);
}

static int predict_or_eval(const char *cmd, int argc, char **argv, int eval) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"data", required_argument, 0, 'd'},
                                         {"base", required_argument, 0, 'b'}, {"truncate", no_argument, 0, 't'},
                                         {"threads", required_argument, 0, 'T'}, {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *data = NULL, *base = NULL;
    int truncate = 0, threads = 1, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 'd': data = optarg; break;
        case 'b': base = optarg; break;
        case 't': truncate = 1; break;
        case 'T': if (parse_int(optarg, &threads) || threads < 1) return cli_usage_error(cmd, "--threads: expected a positive integer, got '%s'", optarg); break;
        case 'j': /* eval-task prints JSON anyway: --json is accepted as by every command printing JSON */
            if (!eval) return cli_usage_error(cmd, "--json: predict prints one prediction a line, not JSON");
            break;
        case 'h':
            printf("usage: gpt %s --model RUN_DIR/model.h5 --data (FILE.jsonl | FILE.csv | TASK.h5) [--base BASE.h5]\n"
                   "           [--truncate] [--threads T]%s\n\n%s", cmd, eval ? " [--json]" : "",
                   eval ? "Prints the fine-tuned model's metrics on the labelled records as JSON (with or without\n"
                          "--json): accuracy (or Pearson, Spearman and mean squared error; null where undefined),\n"
                          "the head's mean loss and the count. A task file's /val split is used (its /train if it\n"
                          "has none).\n"
                        : "Prints one prediction per record, in order: the class (its name when the task has\n"
                          "names), the real value, or the index of the chosen answer. Labels are not needed.\n");
            printf("--base: the base model of LoRA adapters, if not where they name it.\n");
            return 0;
        default: return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!model || !data) return cli_usage_error(cmd, "--model and --data are required");
    compute_threads_set(threads);
    TaskModel *tm = task_model_load(model, base, 8, 1);
    if (!tm) return cli_fail(cmd);
    int rc = 0, split;
    if (!tm->head) rc = gpt_error("%s: has no task head (adapters from continued pre-training)", model);
    TaskData *d = rc ? NULL : load_data(tm, data, truncate, !eval, &split);
    if (!rc && !d) rc = -1;
    int64_t n = d ? task_examples(d, split) : 0;
    double *pred = xcalloc((size_t)(n ? n : 1), sizeof(double)), loss = NAN;
    if (!rc) rc = finetune_predict(tm->m, tm->head, d, split, pred, &loss);
    if (!rc && eval) {
        double *label = xmalloc(sizeof(double) * (size_t)(n ? n : 1));
        for (int64_t i = 0; i < n; i++) {
            TaskExample e;
            task_example(d, split, i, &e);
            label[i] = e.label;
        }
        TaskMetrics m = task_metrics(tm->info.label_kind, pred, label, n);
        json_t *j = json_pack("{s:I,s:o}", "examples", (json_int_t)n, "loss", json_real_or_null(loss));
        if (tm->info.label_kind == LABEL_REAL) {
            json_object_set_new(j, "pearson", json_real_or_null(m.pearson)); /* null when a side is constant */
            json_object_set_new(j, "spearman", json_real_or_null(m.spearman));
            json_object_set_new(j, "mse", json_real_or_null(m.mse));
        } else
            json_object_set_new(j, "accuracy", json_real_or_null(m.accuracy));
        cli_print_json(j);
        free(label);
    } else if (!rc) {
        for (int64_t i = 0; i < n; i++) {
            if (tm->info.label_kind == LABEL_REAL) printf("%.6g\n", pred[i]);
            else if (tm->n_names) printf("%s\n", tm->names[(int)pred[i]]);
            else printf("%d\n", (int)pred[i]);
        }
    }
    free(pred);
    task_free(d);
    task_model_free(tm);
    return rc ? cli_fail(cmd) : 0;
}

int cmd_predict(int argc, char **argv) { return predict_or_eval("predict", argc, argv, 0); }
int cmd_eval_task(int argc, char **argv) { return predict_or_eval("eval-task", argc, argv, 1); }

/* ---- merge-lora ---- */

int cmd_merge_lora(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"out", required_argument, 0, 'o'},
                                         {"base", required_argument, 0, 'b'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *out = NULL, *base = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 'o': out = optarg; break;
        case 'b': base = optarg; break;
        case 'h':
            printf("usage: gpt merge-lora --model RUN_DIR/model.h5 --out MERGED.h5 [--base BASE.h5]\n\n"
                   "Adds the LoRA adapters into their base's weights (W += alpha/r B A) and writes a\n"
                   "full fine-tuned model that needs no base; it computes what the adapted one does.\n");
            return 0;
        default: return cli_usage_error("merge-lora", "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error("merge-lora", "unexpected argument '%s'", argv[optind]);
    if (!model || !out) return cli_usage_error("merge-lora", "--model and --out are required");
    TaskModel *tm = task_model_load(model, base, 1, 1);
    if (!tm) return cli_fail("merge-lora");
    int rc = 0;
    if (!tm->lora) rc = gpt_error("%s: has no LoRA adapters to merge", model);
    else {
        lora_merge(tm->lora, tm->m);
        tm->m->lora = NULL;
        /* adapters from continued pre-training merge into a plain model file */
        rc = tm->head ? task_model_write(out, tm->m, NULL, NULL, 0, tm->head, &tm->info, tm->names, tm->n_names, tm->tok)
                      : model_file_write(out, tm->m, tm->tok);
        if (!rc) printf("wrote %s: %s merged into %s\n", out, model, tm->base);
    }
    task_model_free(tm);
    return rc ? cli_fail("merge-lora") : 0;
}
