/* inspect.c: `gpt inspect`, a human summary of a model file that also verifies that
 * every tensor is present, shaped as its configuration says, and finite. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>

#include "checkpoint.h"
#include "cli.h"
#include "model.h"

static const char help[] = "usage: gpt inspect FILE.h5\n\nPrints the configuration and tensors of a model file and checks them.\n";

int cmd_inspect(int argc, char **argv) {
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 'h') {
            fputs(help, stdout);
            return 0;
        }
        return cli_usage_error("inspect", "unknown option");
    }
    if (argc - optind != 1) return cli_usage_error("inspect", "expected one file");
    const char *path = argv[optind];
    GPT *m = model_file_load(path, 1, 0);
    if (!m) return cli_fail("inspect");
    printf("%s: GPT model file\n  ", path);
    config_print(stdout, &m->cfg);
    printf("  parameters: %zu (%.1f MB as float32), %zu without wpe\n", m->n_params,
           (double)m->n_params * 4 / 1e6, gpt_params_no_wpe(&m->cfg));
    size_t nonfinite = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const GPTTensor *t = &m->tensors[i];
        const float *p = m->params + t->offset;
        double sq = 0.0;
        size_t bad = 0;
        for (size_t j = 0; j < t->numel; j++) {
            if (!isfinite(p[j])) bad++;
            else sq += (double)p[j] * p[j];
        }
        nonfinite += bad;
        if (t->ndim == 2) printf("  %-28s [%d, %d]", t->name, t->shape[0], t->shape[1]);
        else printf("  %-28s [%d]   ", t->name, t->shape[0]);
        printf("  rms %.4g%s\n", sqrt(sq / (double)t->numel), bad ? "  NON-FINITE VALUES" : "");
    }
    gpt_free(m);
    if (nonfinite) {
        fprintf(stderr, "gpt inspect: %s: %zu non-finite parameter values\n", path, nonfinite);
        return 1;
    }
    printf("  all tensors present, shaped and finite\n");
    return 0;
}
