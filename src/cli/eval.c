/* eval.c: `gpt eval`, the mean loss of a model on corpora, and its evaluation, which gpt
 * prune shares (cli.h). */
#include <math.h>
#include <stdio.h>

#include "run/eval.h"
#include "base/util.h"
#include "cli/cli.h"
#include "cpu/threads.h"
#include "dist/dist.h"
#include "files/model_file.h"

const char *const cli_split_names[] = {"train", "val", NULL}; /* SPLIT_TRAIN, SPLIT_VAL */

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
                           cli_split_names[split], (long long)corpus_split_tokens(b->corpus[c], split), m->cfg.n_ctx + 1);
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
                              (json_int_t)n[c], "split", cli_split_names[split]);
        if (b->n > 1) {
            json_object_set_new(o, "corpus", json_string(b->path[c]));
            json_object_set_new(o, "weight", json_real(b->weight[c]));
        }
        json_array_append_new(each, o);
        if (!json)
            printf("%s on %s /%s: loss %.4f, perplexity %.2f over %lld tokens (%lld windows of %d)\n", model,
                   b->path[c], cli_split_names[split], losses[c], exp(losses[c]), (long long)tokens[c], (long long)n[c],
                   m->cfg.n_ctx);
    }
    if (b->n > 1 && !json)
        printf("%s on the blend %s /%s: loss %.4f (the weighted mean), perplexity %.2f\n", model, b->spec,
               cli_split_names[split], *loss, exp(*loss));
    if (json && b->n == 1) cli_print_json(json_incref(json_array_get(each, 0)));
    else if (json)
        cli_print_json(json_pack("{s:o,s:o,s:s,s:s,s:O}", "loss", json_real_or_null(*loss), "perplexity",
                                 json_real_or_null(exp(*loss)), "split", cli_split_names[split], "blend", b->spec,
                                 "corpora", each));
    json_decref(each);
    return 0;
}

typedef struct {
    const char *model, *data[BLEND_MAX];
    int n_data, split, batch, threads, json;
    long windows;
    Precision precision;
} EvalArgs;

static const CliOpt eval_opts[] = {
    {.name = "model", .kind = CLI_STRING, .offset = offsetof(EvalArgs, model), .flags = CLI_REQUIRED,
     .metavar = "MODEL.h5", .help = "the model file or checkpoint to evaluate"},
    {.name = "data", .kind = CLI_LIST, .offset = offsetof(EvalArgs, data), .count = offsetof(EvalArgs, n_data),
     .flags = CLI_REQUIRED, .max = BLEND_MAX, .metavar = "[W:]CORPUS.h5",
     .help = "a corpus; several make a blend, as gpt train takes it"},
    {.name = "split", .kind = CLI_CHOICE, .offset = offsetof(EvalArgs, split), .choices = cli_split_names,
     .metavar = "val|train", .help = "the split evaluated"},
    {.name = "windows", .kind = CLI_LONG, .offset = offsetof(EvalArgs, windows), .flags = CLI_MIN, .min = 1,
     .metavar = "N", .help = "evaluate the first N windows of each corpus", .dflt = "all"},
    {.name = "batch", .kind = CLI_INT, .offset = offsetof(EvalArgs, batch), .flags = CLI_MIN, .min = 1,
     .metavar = "B", .help = "windows a forward pass"},
    CLI_THREADS_ROW(offsetof(EvalArgs, threads)),
    {.name = "json", .kind = CLI_FLAG, .offset = offsetof(EvalArgs, json), .help = "print one JSON object"},
    {.kind = CLI_GROUP, .group = cli_precision_opts, .offset = offsetof(EvalArgs, precision)},
    CLI_END};

static const CliCommand eval_cmd = {
    .name = "eval", .mpi = 1, .opts = eval_opts, .size = sizeof(EvalArgs),
    .about = "Mean negative log-likelihood of the model over consecutive, non-overlapping windows of\n"
             "n_ctx + 1 tokens of a split (window i starts at token i * n_ctx), and its perplexity.\n"
             "The same answer for any number of ranks. Several --data (a blend): each corpus's loss,\n"
             "and their mean by the blend's weights.\n"};

static int eval(int argc, char **argv) {
    EvalArgs a = {.split = SPLIT_VAL, .batch = 8, .windows = -1};
    int first, rc = cli_parse(&eval_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    if (cli_precision_ready("eval", a.precision, !a.json)) return 2;
    compute_threads_setup(a.threads, NULL, 0);
    GPT *m = model_file_load(a.model, a.batch, 0);
    if (dist_agree(!m)) return cli_fail("eval");
    gpt_set_precision(m, a.precision);
    int64_t n[BLEND_MAX];
    double loss;
    Blend *b = cli_eval_open(m, a.model, a.data, a.n_data, a.split, a.windows, n);
    rc = !b || cli_eval_report(m, a.model, b, a.split, n, a.json, &loss);
    blend_close(b);
    gpt_free(m);
    return rc ? cli_fail("eval") : 0;
}

int cmd_eval(int argc, char **argv) {
    int rc = eval(argc, argv);
    dist_finalize();
    return rc;
}
