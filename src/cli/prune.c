/* prune.c: `gpt prune`, magnitude pruning of a model file (prune.h).
 *
 * Every rank loads the model and prunes its own copy (pruning is deterministic, so the
 * copies agree); rank 0 writes the result with the input's tokenizer. With --data the
 * ranks evaluate the model before and after, through gpt eval's code (cli.h), so the
 * two lines are exactly what `gpt eval` prints for the input and the output files. The
 * output is written before the second evaluation: an unwritable path fails fast. */
#include <math.h>
#include <stdio.h>

#include "model/prune.h"
#include "base/util.h"
#include "cli/cli.h"
#include "cpu/threads.h"
#include "dist/dist.h"
#include "files/h5util.h"
#include "files/model_file.h"
#include "text/tokenizer.h"

typedef struct {
    const char *model, *out, *data;
    double sparsity;
    int scope, split, threads;
    long windows;
} PruneArgs;


static const CliOpt prune_opts[] = {
    {.name = "model", .kind = CLI_STRING, .offset = offsetof(PruneArgs, model), .flags = CLI_REQUIRED,
     .metavar = "MODEL.h5", .help = "a model file or checkpoint"},
    {.name = "sparsity", .kind = CLI_DOUBLE, .offset = offsetof(PruneArgs, sparsity),
     .flags = CLI_REQUIRED | CLI_MIN | CLI_MAX | CLI_MAX_OPEN, .max = 1, .metavar = "S",
     .help = "the fraction of the prunable weights set to zero"},
    {.name = "out", .kind = CLI_STRING, .offset = offsetof(PruneArgs, out), .flags = CLI_REQUIRED,
     .metavar = "PRUNED.h5", .help = "the pruned model (MODEL.h5 itself prunes it in place, on purpose)"},
    {.name = "scope", .kind = CLI_CHOICE, .offset = offsetof(PruneArgs, scope), .choices = prune_scope_names,
     .metavar = "global|layer", .help = "rank all the matrices together, or prune each to S"},
    {.name = "data", .kind = CLI_STRING, .offset = offsetof(PruneArgs, data), .metavar = "CORPUS.h5",
     .help = "evaluate before and after on this corpus, as gpt eval does"},
    {.name = "eval-windows", .kind = CLI_LONG, .offset = offsetof(PruneArgs, windows), .flags = CLI_MIN, .min = 1,
     .metavar = "N", .help = "windows evaluated", .dflt = "all"},
    {.name = "split", .kind = CLI_CHOICE, .offset = offsetof(PruneArgs, split), .choices = cli_split_names,
     .metavar = "val|train", .help = "the split evaluated"},
    CLI_THREADS_ROW(offsetof(PruneArgs, threads)),
    CLI_END};

static const CliCommand prune_cmd = {
    .name = "prune", .mpi = 1, .opts = prune_opts, .size = sizeof(PruneArgs),
    .about = "Zeroes the fraction S (0 <= S < 1) of smallest-magnitude weights of the blocks' four\n"
             "weight matrices (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj; not the embeddings,\n"
             "biases or LayerNorm). MODEL.h5 may be a model file or a checkpoint; the output keeps its\n"
             "tokenizer and records pruned_sparsity and pruned_scope on /model. With --data, the loss\n"
             "and perplexity on the split before and after, as gpt eval prints them. See docs/pruning.md.\n"};

/* The model file's own /tokenizer, if it has one (*tok NULL otherwise). */
static int load_tokenizer(const char *path, Tokenizer **tok) {
    *tok = NULL;
    hid_t f = h5_open_read(path);
    if (f < 0) return -1;
    htri_t has = H5Lexists(f, "tokenizer", H5P_DEFAULT);
    H5Fclose(f);
    if (has > 0 && !(*tok = tokenizer_load(path))) return -1;
    return 0;
}

static void print_summary(const GPT *m, const char *model, double before, double sparsity, PruneScope scope,
                          const PruneStats *st) {
    printf("pruned %s to sparsity %g (%s scope): %zu of %zu prunable weights set to zero; sparsity %.4f -> %.4f\n",
           model, sparsity, prune_scope_name(scope), st->n_pruned, st->n_prunable, before, st->sparsity);
    for (int i = 0; i < m->n_tensors; i++) {
        const GPTTensor *t = &m->tensors[i];
        if (prune_is_prunable(t))
            printf("  %-28s [%d, %d] sparsity %.4f\n", t->name, t->shape[0], t->shape[1],
                   (double)st->zeros[i] / (double)t->numel);
    }
}

static int prune(int argc, char **argv) {
    PruneArgs a = {.scope = PRUNE_GLOBAL, .split = SPLIT_VAL, .windows = -1};
    int first, rc = cli_parse(&prune_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    const char *model = a.model, *out = a.out, *data = a.data;
    double sparsity = a.sparsity;
    PruneScope scope = (PruneScope)a.scope;
    long windows = a.windows;
    int split = a.split;
    compute_threads_setup(a.threads, NULL, 0);

    /* gpt eval's default batch with --data; else the activations of one window (GPT-1's
     * for 8 would be 2 GB) */
    GPT *m = model_file_load(model, data ? 8 : 1, 0);
    if (dist_agree(!m)) return cli_fail("prune");
    Tokenizer *tok = NULL;
    Blend *c = NULL;
    PruneStats st = {0};
    int64_t n[1] = {0};
    double before = prune_sparsity(m), loss_before = 0.0, loss_after = 0.0;
    rc = dist_agree(dist_rank() == 0 ? load_tokenizer(model, &tok) : 0);
    if (!rc && data) rc = (c = cli_eval_open(m, model, &data, 1, split, windows, n)) ? 0 : -1;
    if (!rc && c) rc = cli_eval_report(m, model, c, split, n, 0, &loss_before);
    if (!rc) rc = dist_agree(prune_magnitude(m, sparsity, scope, &st));
    if (!rc) rc = dist_agree(dist_rank() == 0 ? model_file_write_pruned(out, m, tok, st.sparsity,
                                                                         prune_scope_name(scope)) : 0);
    if (!rc && dist_rank() == 0) {
        print_summary(m, model, before, sparsity, scope, &st);
        printf("wrote %s\n", out);
    }
    if (!rc && c) rc = cli_eval_report(m, out, c, split, n, 0, &loss_after);
    if (!rc && c && dist_rank() == 0)
        printf("perplexity %.2f -> %.2f (loss %.4f -> %.4f)\n", exp(loss_before), exp(loss_after), loss_before,
               loss_after);
    prune_stats_free(&st);
    blend_close(c);
    tokenizer_free(tok);
    gpt_free(m);
    return rc ? cli_fail("prune") : 0;
}

int cmd_prune(int argc, char **argv) {
    int rc = prune(argc, argv);
    dist_finalize();
    return rc;
}
