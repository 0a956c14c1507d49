/* init.c: `gpt init`, a model file with GPT-1's initialisation (GPT-2's for its presets). */
#include <stdio.h>

#include "base/util.h"
#include "cli/cli.h"
#include "files/model_file.h"
#include "model/config.h"
#include "model/model.h"

typedef struct {
    ConfigArgs model;
    uint64_t seed;
    float std;
    int scale_residual;
    const char *out;
} InitArgs;

static const CliOpt init_opts[] = {
    {.name = "out", .kind = CLI_STRING, .offset = offsetof(InitArgs, out), .flags = CLI_REQUIRED,
     .metavar = "MODEL.h5", .help = "the model file written"},
    {.name = "seed", .kind = CLI_U64, .offset = offsetof(InitArgs, seed), .metavar = "S", .help = "of the weights"},
    {.name = "init-std", .kind = CLI_FLOAT, .offset = offsetof(InitArgs, std), .flags = CLI_MIN | CLI_MIN_OPEN,
     .metavar = "STD", .help = "the weights are drawn from N(0, STD)"},
    {.name = "scale-residual", .kind = CLI_FLAG, .offset = offsetof(InitArgs, scale_residual),
     .help = "divide the std of the residual output projections by sqrt(2 n_layer)", .dflt = "with the gpt2 presets"},
    {.kind = CLI_GROUP, .group = cli_config_opts, .offset = offsetof(InitArgs, model),
     .help = "model options (--model is required)"},
    CLI_END};

static const CliCommand init_cmd = {
    .name = "init", .opts = init_opts, .size = sizeof(InitArgs),
    .about = "Writes a model with GPT-1's initialisation: weights drawn from N(0, STD), LayerNorm\n"
             "gains 1 and biases 0; the gpt2 presets (and --scale-residual) draw the two residual output\n"
             "projections of each block (attn.c_proj, mlp.c_proj) from N(0, STD / sqrt(2 n_layer)), as GPT-2.\n"};

int cmd_init(int argc, char **argv) {
    InitArgs a = {.seed = 1337, .std = 0.02f};
    int first, rc = cli_parse(&init_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    GPTConfig cfg;
    if (config_from_args(&a.model, &cfg)) return cli_usage_error("init", "%s", gpt_last_error());
    GPT *m = gpt_create(&cfg, 1, 0);
    gpt_init_weights(m, a.seed, a.std, a.scale_residual || config_preset_scales_residual(a.model.preset));
    rc = model_file_write(a.out, m, NULL);
    if (!rc) printf("wrote %s: %zu parameters; ", a.out, m->n_params);
    if (!rc) config_print(stdout, &cfg);
    gpt_free(m);
    return rc ? cli_fail("init") : 0;
}
