/* prepare_task.c: `gpt prepare-task`, a labelled JSONL or CSV file to a task file (see
 * task.h). One process: task data is small, so there is nothing to share out. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "files/h5util.h"
#include "files/model_file.h"
#include "files/task_file.h"
#include "base/util.h"

static const char help[] =
    "usage: gpt prepare-task --tokenizer (TOK.h5 | MODEL.h5) --task classify|entail|similar|choice\n"
    "                        --out TASK.h5 [--val-fraction F] [--n-ctx N] [--truncate]\n"
    "                        [--num-classes K] [--labels A,B,...] [--seed S] FILE\n\n"
    "Turns labelled records into GPT-1's input sequences (docs/formats.md, \"Task files\"):\n"
    "  classify  <start> text <extract>\n"
    "  entail    <start> premise <delim> hypothesis <extract>\n"
    "  similar   <start> text_a <delim> text_b <extract>, and text_b first\n"
    "  choice    <start> context <delim> answer <extract>, one per answer in \"choices\"\n"
    "FILE is JSON Lines (one object a line with those fields and \"label\") or CSV (.csv, or\n"
    "any file not starting with '{'): a header row is one with a column named \"label\" and\n"
    "names the columns (choice: the answers are the columns named choice*); without one the\n"
    "label comes first, then the fields in the order above. Text is stripped of surrounding\n"
    "whitespace.\n"
    "Labels are class indices 0..K-1 (K: --num-classes, or the largest + 1), or with --labels\n"
    "the listed values in class order (\"neg,pos\", \"-1,1\"). similar's labels are real numbers\n"
    "unless --num-classes or --labels; choice's are the index of the right answer.\n"
    "--n-ctx N: longest sequence (default: the model's n_ctx when TOK.h5 is a model or\n"
    "checkpoint, else 512); a longer record is an error unless --truncate, which cuts the\n"
    "longest piece of it token by token from its end.\n"
    "--val-fraction F (default 0): this share of the records, drawn with --seed S (default\n"
    "1), goes to /val.\n";

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
    static const struct option opts[] = {{"tokenizer", required_argument, 0, 't'},
                                         {"task", required_argument, 0, 'k'},
                                         {"out", required_argument, 0, 'o'},
                                         {"val-fraction", required_argument, 0, 'v'},
                                         {"n-ctx", required_argument, 0, 'n'},
                                         {"truncate", no_argument, 0, 'T'},
                                         {"num-classes", required_argument, 0, 'c'},
                                         {"labels", required_argument, 0, 'l'},
                                         {"seed", required_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *tok_path = NULL, *out = NULL, *task = NULL;
    TaskPrepare opt = {.seed = 1};
    unsigned long long seed;
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 't': tok_path = optarg; break;
        case 'k': task = optarg; break;
        case 'o': out = optarg; break;
        case 'v':
            if (parse_double(optarg, &opt.val_fraction) || !(opt.val_fraction >= 0.0 && opt.val_fraction < 1.0))
                return cli_usage_error("prepare-task", "--val-fraction: expected a number in [0, 1), got '%s'", optarg);
            break;
        case 'n':
            if (parse_int(optarg, &opt.n_ctx) || opt.n_ctx < 3)
                return cli_usage_error("prepare-task", "--n-ctx: expected an integer >= 3, got '%s'", optarg);
            break;
        case 'T': opt.truncate = 1; break;
        case 'c':
            if (parse_int(optarg, &opt.n_classes) || opt.n_classes < 2)
                return cli_usage_error("prepare-task", "--num-classes: expected an integer >= 2, got '%s'", optarg);
            break;
        case 'l': opt.label_names = optarg; break;
        case 's':
            if (parse_u64(optarg, &seed)) return cli_usage_error("prepare-task", "--seed: expected an integer, got '%s'", optarg);
            opt.seed = seed;
            break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage_error("prepare-task", "unknown option");
        }
    }
    if (!tok_path || !task || !out) return cli_usage_error("prepare-task", "--tokenizer, --task and --out are required");
    if (argc - optind != 1) return cli_usage_error("prepare-task", "expected one input file");
    if (task_type_parse(task, &opt.type)) return cli_usage_error("prepare-task", "--task: %s", gpt_last_error());
    const char *input = argv[optind];
    int model_ctx, model_vocab;
    if (model_limits(tok_path, &model_ctx, &model_vocab)) return cli_fail("prepare-task");
    if (model_ctx && opt.n_ctx > model_ctx)
        return cli_usage_error("prepare-task", "--n-ctx %d is more than the model's n_ctx %d", opt.n_ctx, model_ctx);
    if (!opt.n_ctx) opt.n_ctx = model_ctx ? model_ctx : 512;
    Tokenizer *tok = tokenizer_load(tok_path);
    if (!tok) return cli_fail("prepare-task");
    int rc = 0;
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
