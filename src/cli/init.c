/* init.c: `gpt init`, a model file with GPT-1's initialisation. */
#include <getopt.h>
#include <stdio.h>

#include "files/model_file.h"
#include "cli/cli.h"
#include "model/config.h"
#include "model/model.h"
#include "base/util.h"

static const char help[] =
    "usage: gpt init --model PRESET [model options] [--seed S] [--init-std STD]\n"
    "                [--scale-residual] --out MODEL.h5\n\n"
    "Writes a model with weights drawn from N(0, STD) (default 0.02), LayerNorm gains 1\n"
    "and biases 0. --scale-residual divides the std of the residual output projections\n"
    "by sqrt(2 n_layer) (GPT-2).\n\nmodel options:\n" CONFIG_OPTIONS_HELP;

int cmd_init(int argc, char **argv) {
    enum { OPT_SEED = 1, OPT_OUT, OPT_STD, OPT_SCALE, OPT_HELP };
    static const struct option opts[] = {
        CONFIG_LONG_OPTIONS,
        {"seed", required_argument, 0, OPT_SEED},
        {"out", required_argument, 0, OPT_OUT},
        {"init-std", required_argument, 0, OPT_STD},
        {"scale-residual", no_argument, 0, OPT_SCALE},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    ConfigArgs cargs = {0};
    unsigned long long seed = 1337;
    float std = 0.02f;
    int scale_residual = 0;
    const char *out = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt >= CONFIG_OPT_BASE && opt < CONFIG_OPT_END) {
            if (config_args_add(&cargs, opt, optarg)) return cli_usage_error("init", "%s", gpt_last_error());
            continue;
        }
        switch (opt) {
        case OPT_SEED:
            if (parse_u64(optarg, &seed)) return cli_usage_error("init", "--seed: expected a non-negative integer, got '%s'", optarg);
            break;
        case OPT_OUT: out = optarg; break;
        case OPT_STD:
            if (parse_float(optarg, &std) || !(std > 0.0f)) return cli_usage_error("init", "--init-std: expected a positive number, got '%s'", optarg);
            break;
        case OPT_SCALE: scale_residual = 1; break;
        case OPT_HELP: fputs(help, stdout); return 0;
        default: return cli_usage_error("init", "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error("init", "unexpected argument '%s'", argv[optind]);
    if (!out) return cli_usage_error("init", "--out MODEL.h5 is required");
    GPTConfig cfg;
    if (config_from_args(&cargs, &cfg)) return cli_usage_error("init", "%s", gpt_last_error());
    GPT *m = gpt_create(&cfg, 1, 0);
    gpt_init_weights(m, seed, std, scale_residual);
    int rc = model_file_write(out, m, NULL);
    if (!rc) printf("wrote %s: %zu parameters; ", out, m->n_params);
    if (!rc) config_print(stdout, &cfg);
    gpt_free(m);
    return rc ? cli_fail("init") : 0;
}
