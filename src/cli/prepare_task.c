/* prepare_task.c: `gpt prepare-task`, a labelled JSONL or CSV file to a task file (see
 * task.h). One process: task data is small, so there is nothing to share out. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/util.h"
#include "cli/cli.h"
#include "files/h5util.h"
#include "files/model_file.h"
#include "files/task_file.h"

typedef struct {
    TaskPrepare p;
    const char *tok_path, *out;
} PrepareTaskArgs;


#define T(field) offsetof(PrepareTaskArgs, p.field)

static const CliOpt prepare_task_opts[] = {
    {.name = "tokenizer", .kind = CLI_STRING, .offset = offsetof(PrepareTaskArgs, tok_path), .flags = CLI_REQUIRED,
     .metavar = "TOK.h5|MODEL.h5", .help = "the tokenizer (a model's or checkpoint's also bounds --n-ctx)"},
    {.name = "task", .kind = CLI_CHOICE, .offset = T(type), .choices = task_type_names, .flags = CLI_REQUIRED,
     .metavar = "classify|entail|similar|choice", .help = "how records become sequences (below)"},
    {.name = "out", .kind = CLI_STRING, .offset = offsetof(PrepareTaskArgs, out), .flags = CLI_REQUIRED,
     .metavar = "TASK.h5", .help = "the task file written"},
    {.name = "val-fraction", .kind = CLI_DOUBLE, .offset = T(val_fraction), .flags = CLI_MIN | CLI_MAX | CLI_MAX_OPEN,
     .max = 1, .metavar = "F", .help = "share of the records, drawn with --seed, that go to /val"},
    {.name = "n-ctx", .kind = CLI_INT, .offset = T(n_ctx), .flags = CLI_MIN, .min = 3, .metavar = "N",
     .help = "longest sequence", .dflt = "the model's n_ctx, else 512"},
    {.name = "truncate", .kind = CLI_FLAG, .offset = T(truncate),
     .help = "cut a longer record's longest piece token by token from its end (else an error)"},
    {.name = "num-classes", .kind = CLI_INT, .offset = T(n_classes), .flags = CLI_MIN, .min = 2, .metavar = "K",
     .help = "labels are class indices 0..K-1", .dflt = "the largest + 1"},
    {.name = "labels", .kind = CLI_STRING, .offset = T(label_names), .metavar = "A,B,...",
     .help = "the label values in class order (\"neg,pos\", \"-1,1\")"},
    {.name = "seed", .kind = CLI_U64, .offset = T(seed), .metavar = "S", .help = "of the draw of /val"},
    CLI_END};

static const CliCommand prepare_task_cmd = {
    .name = "prepare-task", .args = "FILE", .min_args = 1, .max_args = 1, .opts = prepare_task_opts,
    .size = sizeof(PrepareTaskArgs),
    .about = "Turns labelled records into GPT-1's input sequences (docs/formats.md, \"Task files\"):\n"
             "  classify  <start> text <extract>\n"
             "  entail    <start> premise <delim> hypothesis <extract>\n"
             "  similar   <start> text_a <delim> text_b <extract>, and text_b first\n"
             "  choice    <start> context <delim> answer <extract>, one per answer in \"choices\"\n"
             "FILE is JSON Lines (one object a line with those fields and \"label\") or CSV (.csv, or\n"
             "any file not starting with '{'): a header row is one with a column named \"label\" and\n"
             "names the columns (choice: the answers are the columns named choice*); without one the\n"
             "label comes first, then the fields in the order above. Text is stripped of surrounding\n"
             "whitespace. similar's labels are real numbers unless --num-classes or --labels;\n"
             "choice's are the index of the right answer.\n"};

/* The model's n_ctx and vocabulary if path is a model or checkpoint (has /model), else 0. */
static int model_limits(const char *path, int *n_ctx, int *vocab) {
    hid_t f = h5_open_read(path);
    if (f < 0) return -1;
    int is_model = H5Lexists(f, "model", H5P_DEFAULT) > 0;
    H5Fclose(f);
    GPTConfig cfg;
    *n_ctx = *vocab = 0;
    if (!is_model) return 0;
    if (model_file_read_config(path, &cfg)) return -1;
    *n_ctx = cfg.n_ctx;
    *vocab = cfg.vocab_size;
    return 0;
}

static void print_summary(const char *out, const TaskData *d) {
    const TaskInfo *in = task_info(d);
    int64_t n[2], seqs = 0, tokens = 0, records = 0;
    int n_counts = in->label_kind == LABEL_CLASS ? in->n_classes : 0;
    double lo = INFINITY, hi = -INFINITY;
    for (int s = 0; s < 2; s++) {
        n[s] = task_examples(d, s);
        for (int64_t i = 0; i < n[s]; i++) {
            TaskExample ex;
            task_example(d, s, i, &ex);
            seqs += ex.n_seqs;
            for (int k = 0; k < ex.n_seqs; k++) tokens += ex.len[k];
            if (in->label_kind == LABEL_CHOICE && ex.n_seqs > n_counts) n_counts = ex.n_seqs;
            lo = fmin(lo, ex.label);
            hi = fmax(hi, ex.label);
        }
        records += n[s];
    }
    int64_t *count = xcalloc((size_t)n_counts + 1, sizeof *count);
    for (int s = 0; s < 2; s++)
        for (int64_t i = 0; i < n[s]; i++) {
            TaskExample ex;
            task_example(d, s, i, &ex);
            if (in->label_kind != LABEL_REAL) count[(int)ex.label]++;
        }
    printf("wrote %s: %s, %lld records: train %lld examples, val %lld; %lld sequences, %lld tokens; "
           "%lld truncated\n",
           out, task_type_name(in->type), (long long)records, (long long)n[0], (long long)n[1], (long long)seqs,
           (long long)tokens, (long long)in->truncated);
    if (in->label_kind == LABEL_REAL) printf("labels: real, from %g to %g\n", lo, hi);
    else {
        printf(in->label_kind == LABEL_CHOICE ? "right answers:" : "labels:");
        for (int k = 0; k < n_counts; k++) {
            const char *name = task_class_name(d, k);
            if (name) printf("%s %s: %lld", k ? "," : "", name, (long long)count[k]);
            else printf("%s %d: %lld", k ? "," : "", k, (long long)count[k]);
        }
        putchar('\n');
    }
    free(count);
}

int cmd_prepare_task(int argc, char **argv) {
    PrepareTaskArgs a = {.p = {.seed = 1}};
    int first, rc = cli_parse(&prepare_task_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    TaskPrepare opt = a.p;
    const char *tok_path = a.tok_path, *out = a.out, *input = argv[first];
    const char *inputs[] = {tok_path, input};
    if (cli_check_output("prepare-task", "out", out, inputs, 2)) return 2;
    int model_ctx, model_vocab;
    if (model_limits(tok_path, &model_ctx, &model_vocab)) return cli_fail("prepare-task");
    if (model_ctx && opt.n_ctx > model_ctx)
        return cli_usage_error("prepare-task", "--n-ctx %d is more than the model's n_ctx %d", opt.n_ctx, model_ctx);
    if (!opt.n_ctx) opt.n_ctx = model_ctx ? model_ctx : 512;
    Tokenizer *tok = tokenizer_load(tok_path);
    if (!tok) return cli_fail("prepare-task");
    rc = 0;
    TaskData *d = NULL;
    if (task_tokenizer_check(tok, tok_path)) rc = -1;
    else if (model_vocab && tokenizer_vocab_size(tok) > model_vocab)
        rc = gpt_error("%s: the tokenizer has %d tokens, more than the model's vocabulary of %d", tok_path,
                       tokenizer_vocab_size(tok), model_vocab);
    else if (!(d = task_from_text(input, tok, &opt)) || task_write(out, d, tok, input))
        rc = -1;
    else
        print_summary(out, d);
    task_free(d);
    tokenizer_free(tok);
    return rc ? cli_fail("prepare-task") : 0;
}
