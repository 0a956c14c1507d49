/* finetune.c: `gpt finetune` (finetune.h), `gpt predict`, `gpt eval-task` and
 * `gpt merge-lora` (task_model.h). */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "run/finetune.h"
#include "base/util.h"
#include "cli/cli.h"
#include "cpu/threads.h"
#include "dist/dist.h"
#include "files/data.h"
#include "files/formats.h"
#include "files/h5util.h"
#include "files/model_file.h"
#include "files/task_file.h"
#include "files/task_model.h"
#include "model/lora.h"
#include "run/task_metrics.h"
#include "run/train.h"

typedef struct {
    FinetuneOptions f;
    const char *task;
    float lr, weight_decay, clip, epochs, warmup_fraction, lora_alpha;
} FinetuneArgs;

static int targets_store(void *dst, const CliOpt *o, const char *arg, double v) {
    (void)o, (void)v;
    return lora_parse_targets(arg, dst);
}

#define F(field) offsetof(FinetuneArgs, f.field)
#define A(field) offsetof(FinetuneArgs, field)

static const CliOpt finetune_opts[] = {
    {.name = "init", .kind = CLI_STRING, .offset = F(init), .flags = CLI_REQUIRED, .metavar = "MODEL.h5",
     .help = "the pre-trained model (a model file or checkpoint)"},
    {.name = "out", .kind = CLI_STRING, .offset = F(out), .flags = CLI_REQUIRED, .metavar = "RUN_DIR",
     .help = "the run directory"},
    {.name = "data", .kind = CLI_STRING, .offset = A(task), .metavar = "TASK.h5",
     .help = "the task file to fine-tune on (gpt prepare-task)"},
    {.name = "corpus", .kind = CLI_LIST, .offset = F(data), .count = F(n_data), .max = BLEND_MAX,
     .metavar = "[W:]CORPUS.h5", .help = "continue pre-training on a corpus instead (repeat for a blend)"},
    {.name = "lambda", .kind = CLI_FLOAT, .offset = F(lambda), .flags = CLI_MIN, .metavar = "X",
     .help = "weight of the language-model loss L1 in L3 = L2 + lambda L1"},
    {.name = "lr", .kind = CLI_FLOAT, .offset = A(lr), .flags = CLI_MIN | CLI_MIN_OPEN, .metavar = "X",
     .help = "AdamW's peak learning rate"},
    {.name = "epochs", .kind = CLI_FLOAT, .offset = A(epochs), .flags = CLI_MIN | CLI_MIN_OPEN, .metavar = "E",
     .help = "passes over /train"},
    {.name = "batch", .kind = CLI_INT, .offset = F(batch), .flags = CLI_MIN, .min = 1, .metavar = "B",
     .help = "examples (or windows) a step, over all ranks"},
    {.name = "micro-batch", .kind = CLI_INT, .offset = F(micro_batch), .flags = CLI_MIN, .min = 1, .metavar = "M",
     .help = "sequences a pass"},
    {.name = "warmup-fraction", .kind = CLI_FLOAT, .offset = A(warmup_fraction), .flags = CLI_MIN | CLI_MAX, .max = 1,
     .metavar = "F", .help = "share of the steps of linear warm-up, before a linear decay"},
    {.name = "weight-decay", .kind = CLI_FLOAT, .offset = A(weight_decay), .flags = CLI_MIN, .metavar = "X",
     .help = "AdamW's decoupled weight decay"},
    {.name = "clip", .kind = CLI_FLOAT, .offset = A(clip), .flags = CLI_MIN, .metavar = "X",
     .help = "largest gradient norm (0: off)"},
    {.name = "seed", .kind = CLI_U64, .offset = F(seed), .metavar = "S", .help = "of the head, dropout and data order"},
    {.name = "lora-rank", .kind = CLI_INT, .offset = F(lora_rank), .flags = CLI_MIN, .min = 1, .metavar = "R",
     .help = "freeze the model and train rank-R adapters", .dflt = "none: full fine-tuning"},
    {.name = "lora-alpha", .kind = CLI_FLOAT, .offset = A(lora_alpha), .flags = CLI_MIN | CLI_MIN_OPEN,
     .metavar = "A", .help = "the adapters' scale is A/R", .dflt = "R"},
    {.name = "lora-targets", .kind = CLI_STRING, .offset = F(lora_targets), .store = targets_store,
     .metavar = "attn,mlp", .help = "the matrices adapted: attention (attn) and/or feed-forward (mlp)",
     .dflt = "attn"},
    {.kind = CLI_GROUP, .group = cli_run_opts, .offset = F(run), .help = "run options"},
    CLI_END};

static const CliCommand finetune_cmd = {
    .name = "finetune", .mpi = 1, .opts = finetune_opts, .size = sizeof(FinetuneArgs),
    .about =
        "Fine-tunes a pre-trained model on a task file (--data) from gpt prepare-task, as GPT-1\n"
        "does: a linear head on the extract token's final state, the objective L3 = L2 + lambda L1\n"
        "(lambda 0: no LM loss), AdamW with a linear warm-up and a linear decay; the defaults are\n"
        "GPT-1's. --batch examples a step over all ranks, run in passes of up to --micro-batch\n"
        "sequences. --lora-rank R freezes the model and trains rank-R adapters with the head.\n"
        "Every --eval-every steps and at the end: accuracy (or Pearson and Spearman) on /val.\n"
        "RUN_DIR gets config.json, metrics.jsonl, checkpoints and model.h5 as gpt train's does\n"
        "(docs/finetuning.md); the run options work as in gpt train (--precision bf16: the base\n"
        "model's products on bf16 operands; a head's and LoRA's stay fp32).\n"
        "With --corpus CORPUS.h5 (gpt prepare) instead of --data it continues pre-training:\n"
        "next-token prediction on windows of n_ctx + 1 tokens, --batch windows a step, no head;\n"
        "several --corpus make a blend, as in gpt train (an epoch: all the corpora's windows);\n"
        "with --lora-rank, model.h5 holds the adapters (gpt merge-lora makes a plain model file).\n"};

static int parse_finetune(int argc, char **argv, FinetuneOptions *o) {
    FinetuneArgs a = {.f = {.lambda = 0.5f, .batch = 32, .micro_batch = 8, .lora_targets = LORA_ATTN, .seed = 1},
                      .lr = 6.25e-5f, .weight_decay = 0.01f, .clip = 1.0f, .epochs = 3.0f, .warmup_fraction = 0.002f};
    run_options_defaults(&a.f.run);
    int first, rc = cli_parse(&finetune_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    *o = a.f;
    if (!a.task == !o->n_data) return cli_usage_error("finetune", "give one of --data TASK.h5 or --corpus CORPUS.h5");
    char format[32] = "";
    if (a.task) {
        /* the engine takes either in FinetuneOptions.data; the names say which was meant */
        o->data[o->n_data++] = a.task;
        if (h5_file_format(a.task, format, sizeof format)) format[0] = '\0'; /* the engine names what is wrong */
        if (!strcmp(format, CORPUS_FORMAT))
            return cli_usage_error("finetune", "--data: %s is a corpus; continued pre-training takes it as --corpus",
                                   a.task);
    } else {
        if (h5_file_format(blend_spec_path(o->data[0]), format, sizeof format)) format[0] = '\0';
        if (!strcmp(format, TASK_FORMAT))
            return cli_usage_error("finetune", "--corpus: %s is a task file; fine-tuning takes it as --data",
                                   o->data[0]);
    }
    if (run_options_conflict(&o->run)) return cli_usage_error("finetune", "%s", run_options_conflict(&o->run));
    if (cli_precision_ready("finetune", o->run.precision, 0)) return 2;
    if (a.lora_alpha > 0.0f && !o->lora_rank) return cli_usage_error("finetune", "--lora-alpha needs --lora-rank");
    o->lora_alpha = a.lora_alpha > 0.0f ? a.lora_alpha : (float)o->lora_rank;
    o->epochs = a.epochs, o->warmup_fraction = a.warmup_fraction;
    o->optim = optim_defaults(1);
    o->optim.lr = a.lr, o->optim.weight_decay = a.weight_decay, o->optim.clip = a.clip, o->optim.warmup = 0;
    if (optim_validate(&o->optim)) return cli_usage_error("finetune", "%s", gpt_last_error());
    return -1;
}

int cmd_finetune(int argc, char **argv) {
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

typedef struct {
    const char *model, *data, *base;
    int truncate, threads, json;
} PredictArgs;

static const CliOpt predict_opts[] = {
    {.name = "model", .kind = CLI_STRING, .offset = offsetof(PredictArgs, model), .flags = CLI_REQUIRED,
     .metavar = "RUN_DIR/model.h5", .help = "the fine-tuned model"},
    {.name = "data", .kind = CLI_STRING, .offset = offsetof(PredictArgs, data), .flags = CLI_REQUIRED,
     .metavar = "FILE", .help = "records: FILE.jsonl, FILE.csv or a task file TASK.h5"},
    {.name = "base", .kind = CLI_STRING, .offset = offsetof(PredictArgs, base), .metavar = "BASE.h5",
     .help = "the base model of LoRA adapters, if not where they name it"},
    {.name = "truncate", .kind = CLI_FLAG, .offset = offsetof(PredictArgs, truncate),
     .help = "cut records too long for the model's context"},
    CLI_THREADS_ROW(offsetof(PredictArgs, threads)),
    CLI_END};

/* eval-task prints JSON anyway: --json is accepted as by every command printing JSON */
static const CliOpt eval_task_opts[] = {
    {.kind = CLI_GROUP, .group = predict_opts},
    {.name = "json", .kind = CLI_FLAG, .offset = offsetof(PredictArgs, json), .help = "print JSON (as without it)"},
    CLI_END};

static const CliCommand predict_cmd = {
    .name = "predict", .opts = predict_opts, .size = sizeof(PredictArgs),
    .about = "Prints one prediction per record, in order: the class (its name when the task has\n"
             "names), the real value, or the index of the chosen answer. Labels are not needed.\n"};
static const CliCommand eval_task_cmd = {
    .name = "eval-task", .opts = eval_task_opts, .size = sizeof(PredictArgs),
    .about = "Prints the fine-tuned model's metrics on the labelled records as JSON: accuracy (or\n"
             "Pearson, Spearman and mean squared error; null where undefined), the head's mean loss\n"
             "and the count. A task file's /val split is used (its /train if it has none).\n"};

static int predict_or_eval(const CliCommand *c, int argc, char **argv, int eval) {
    const char *cmd = c->name;
    PredictArgs a = {0};
    int first, rc = cli_parse(c, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    const char *model = a.model, *data = a.data, *base = a.base;
    int truncate = a.truncate, threads = a.threads;
    threads = compute_threads_setup(threads, NULL, 0);
    TaskModel *tm = task_model_load(model, base, 8, 1);
    if (!tm) return cli_fail(cmd);
    int split;
    rc = 0;
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

int cmd_predict(int argc, char **argv) { return predict_or_eval(&predict_cmd, argc, argv, 0); }
int cmd_eval_task(int argc, char **argv) { return predict_or_eval(&eval_task_cmd, argc, argv, 1); }

/* ---- merge-lora ---- */

typedef struct {
    const char *model, *out, *base;
} MergeArgs;

static const CliOpt merge_opts[] = {
    {.name = "model", .kind = CLI_STRING, .offset = offsetof(MergeArgs, model), .flags = CLI_REQUIRED,
     .metavar = "RUN_DIR/model.h5", .help = "the LoRA fine-tuning"},
    {.name = "out", .kind = CLI_STRING, .offset = offsetof(MergeArgs, out), .flags = CLI_REQUIRED,
     .metavar = "MERGED.h5", .help = "the merged model"},
    {.name = "base", .kind = CLI_STRING, .offset = offsetof(MergeArgs, base), .metavar = "BASE.h5",
     .help = "the adapters' base model, if not where they name it"},
    CLI_END};

static const CliCommand merge_cmd = {
    .name = "merge-lora", .opts = merge_opts, .size = sizeof(MergeArgs),
    .about = "Adds the LoRA adapters into their base's weights (W += alpha/r B A) and writes a\n"
             "full fine-tuned model that needs no base; it computes what the adapted one does.\n"};

int cmd_merge_lora(int argc, char **argv) {
    MergeArgs a = {0};
    int first, rc = cli_parse(&merge_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    const char *model = a.model, *out = a.out, *base = a.base;
    const char *inputs[] = {model, base};
    if (cli_check_output("merge-lora", "out", out, inputs, 2)) return 2;
    TaskModel *tm = task_model_load(model, base, 1, 1);
    if (!tm) return cli_fail("merge-lora");
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
