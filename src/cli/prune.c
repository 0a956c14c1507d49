/* prune.c: `gpt prune`, magnitude pruning of a model file (prune.h).
 *
 * Every rank loads the model and prunes its own copy (pruning is deterministic, so the
 * copies agree); rank 0 writes the result with the input's tokenizer. With --data the
 * ranks evaluate the model before and after, through gpt eval's code (cli.h), so the
 * two lines are exactly what `gpt eval` prints for the input and the output files. The
 * output is written before the second evaluation: an unwritable path fails fast. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>

#include "cli/cli.h"
#include "dist/dist.h"
#include "files/h5util.h"
#include "files/model_file.h"
#include "model/prune.h"
#include "text/tokenizer.h"
#include "base/util.h"

static const char help[] =
    "usage: [mpirun -np P] gpt prune --model MODEL.h5 --sparsity S [--scope global|layer]\n"
    "                                --out PRUNED.h5 [--data CORPUS.h5] [--eval-windows N]\n"
    "                                [--split val|train]\n\n"
    "Zeroes the fraction S (0 <= S < 1) of smallest-magnitude weights of the blocks' four\n"
    "weight matrices (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj; not the embeddings,\n"
    "biases or LayerNorm). --scope global (default) ranks all of them together, --scope layer\n"
    "prunes each matrix to S on its own. MODEL.h5 may be a model file or a checkpoint; the\n"
    "output keeps its tokenizer and records pruned_sparsity and pruned_scope on /model.\n"
    "With --data, the loss and perplexity on the first N windows of the split (default all,\n"
    "/val) before and after, as gpt eval prints them. See docs/pruning.md.\n";

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
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"sparsity", required_argument, 0, 's'},
                                         {"scope", required_argument, 0, 'c'}, {"out", required_argument, 0, 'o'},
                                         {"data", required_argument, 0, 'd'}, {"eval-windows", required_argument, 0, 'w'},
                                         {"split", required_argument, 0, 'p'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *out = NULL, *data = NULL, *split_arg = "val";
    double sparsity = -1.0;
    PruneScope scope = PRUNE_GLOBAL;
    long windows = -1;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 's':
            if (parse_double(optarg, &sparsity) || !(sparsity >= 0.0 && sparsity < 1.0))
                return cli_usage_error("prune", "--sparsity: expected a number in [0, 1), got '%s'", optarg);
            break;
        case 'c':
            if (prune_scope_parse(optarg, &scope))
                return cli_usage_error("prune", "--scope: expected global or layer, got '%s'", optarg);
            break;
        case 'o': out = optarg; break;
        case 'd': data = optarg; break;
        case 'w':
            if (parse_long(optarg, &windows) || windows < 1)
                return cli_usage_error("prune", "--eval-windows: expected a positive integer, got '%s'", optarg);
            break;
        case 'p': split_arg = optarg; break;
        case 'h': if (dist_rank() == 0) fputs(help, stdout); return 0;
        default: return cli_usage_error("prune", "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error("prune", "unexpected argument '%s'", argv[optind]);
    if (!model || !out || sparsity < 0.0) return cli_usage_error("prune", "--model, --sparsity and --out are required");
    int split = cli_parse_split("prune", split_arg);
    if (split < 0) return 2;

    /* gpt eval's default batch with --data; else the activations of one window (GPT-1's
     * for 8 would be 2 GB) */
    GPT *m = model_file_load(model, data ? 8 : 1, 0);
    if (dist_agree(!m)) return cli_fail("prune");
    Tokenizer *tok = NULL;
    Blend *c = NULL;
    PruneStats st = {0};
    int64_t n[1] = {0};
    double before = prune_sparsity(m), loss_before = 0.0, loss_after = 0.0;
    int rc = dist_agree(dist_rank() == 0 ? load_tokenizer(model, &tok) : 0);
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
    dist_init(&argc, &argv);
    cli_quiet(dist_rank() != 0);
    int rc = prune(argc, argv);
    dist_finalize();
    return rc;
}
