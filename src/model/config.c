/* config.c: presets, command-line overrides and validation of GPTConfig. */
#include "model/config.h"

#include <string.h>

#include "base/util.h"

typedef struct {
    const char *name;
    GPTConfig cfg;
    int scale_residual; /* initialise the residual projections with std / sqrt(2 n_layer) */
} Preset;

/* The one list of presets: name, n_layer, n_head, n_embd, n_ctx, vocabulary, LayerNorm,
 * residual scaling. All have n_ffn 4 n_embd (0 here: resolved after the overrides, so
 * --n-embd carries it along), dropout 0.1 everywhere and LayerNorm epsilon 1e-5. gpt1 is
 * GPT-1's paper; the gpt2* are GPT-2's published models (124,439,808, 354,823,168,
 * 774,030,080 and 1,557,611,200 parameters: tests/unit/test_config.c). */
#define PRESETS(X)                                                     \
    X("gpt1", 12, 12, 768, 512, 40478, GPT_LN_POST, 0)                 \
    X("small", 4, 4, 256, 256, 8192, GPT_LN_POST, 0)                   \
    X("tiny", 2, 4, 64, 64, 512, GPT_LN_POST, 0)                       \
    X("gpt2", 12, 12, 768, 1024, 50257, GPT_LN_PRE, 1)                 \
    X("gpt2-medium", 24, 16, 1024, 1024, 50257, GPT_LN_PRE, 1)         \
    X("gpt2-large", 36, 20, 1280, 1024, 50257, GPT_LN_PRE, 1)          \
    X("gpt2-xl", 48, 25, 1600, 1024, 50257, GPT_LN_PRE, 1)

#define PRESET_ROW(name, L, H, C, T, V, ln, scale) {name, {L, H, C, T, V, 0, 0.1f, 0.1f, 0.1f, ln, 1e-5f}, scale},
#define PRESET_NAME(name, ...) name,

static const Preset presets[] = {PRESETS(PRESET_ROW)};
const char *const config_preset_names[] = {PRESETS(PRESET_NAME) NULL};

static const Preset *find_preset(const char *name) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(presets[i].name, name)) return &presets[i];
    return NULL;
}

const char *config_preset_list(void) {
    static char list[256];
    return list[0] ? list : names_or(config_preset_names, list, sizeof list);
}

int config_preset(const char *name, GPTConfig *out) {
    const Preset *p = find_preset(name);
    if (!p) return gpt_error("unknown model preset '%s' (expected %s)", name, config_preset_list());
    *out = p->cfg;
    if (out->n_ffn == 0) out->n_ffn = 4 * out->n_embd;
    return 0;
}

int config_preset_scales_residual(const char *name) {
    const Preset *p = name ? find_preset(name) : NULL;
    return p ? p->scale_residual : 0;
}

const char *const config_ln_names[] = {"post", "pre", NULL};

const char *config_ln_name(GPTLayerNorm ln) { return config_ln_names[ln]; }

int config_parse_ln(const char *s, GPTLayerNorm *out) {
    for (int ln = GPT_LN_POST; ln <= GPT_LN_PRE; ln++)
        if (!strcmp(s, config_ln_names[ln])) return *out = (GPTLayerNorm)ln, 0;
    return gpt_error("ln: expected 'post' or 'pre', got '%s'", s);
}

static int check_size(const char *field, int v) {
    if (v < 1) return gpt_error("%s must be a positive integer, got %d", field, v);
    if (v > CONFIG_MAX_DIM) return gpt_error("%s = %d is larger than %d", field, v, CONFIG_MAX_DIM);
    return 0;
}

static int check_prob(const char *field, float p) {
    if (!(p >= 0.0f && p < 1.0f)) return gpt_error("%s must be in [0, 1), got %g", field, p);
    return 0;
}

int config_validate(const GPTConfig *c) {
    if (check_size("n_layer", c->n_layer) || check_size("n_head", c->n_head) ||
        check_size("n_embd", c->n_embd) || check_size("n_ctx", c->n_ctx) ||
        check_size("vocab_size", c->vocab_size) || check_size("n_ffn", c->n_ffn))
        return -1;
    if (c->n_embd % c->n_head != 0)
        return gpt_error("n_embd (%d) must be divisible by n_head (%d)", c->n_embd, c->n_head);
    if (check_prob("dropout_embd", c->dropout_embd) ||
        check_prob("dropout_resid", c->dropout_resid) ||
        check_prob("dropout_attn", c->dropout_attn))
        return -1;
    if (c->ln != GPT_LN_POST && c->ln != GPT_LN_PRE)
        return gpt_error("ln must be post or pre");
    if (!(c->ln_eps > 0.0f)) return gpt_error("ln_eps must be positive, got %g", c->ln_eps);
    return 0;
}

void config_print(FILE *f, const GPTConfig *c) {
    fprintf(f,
            "n_layer %d, n_head %d, n_embd %d, n_ctx %d, vocab_size %d, n_ffn %d, ln %s, "
            "ln_eps %g, dropout embd/resid/attn %g/%g/%g\n",
            c->n_layer, c->n_head, c->n_embd, c->n_ctx, c->vocab_size, c->n_ffn,
            config_ln_name(c->ln), c->ln_eps, c->dropout_embd, c->dropout_resid,
            c->dropout_attn);
}

int config_args_add(ConfigArgs *a, int opt, double value) {
    if (a->n == CONFIG_MAX_OVERRIDES) return gpt_error("too many model options");
    a->opt[a->n] = opt;
    a->value[a->n] = value;
    a->n++;
    return 0;
}

/* The value was checked against the option's range when it was parsed (cliopt.h). */
static void apply_override(GPTConfig *c, int opt, double v, int *ffn_explicit) {
    switch (opt) {
    case CONFIG_OPT_N_LAYER: c->n_layer = (int)v; break;
    case CONFIG_OPT_N_HEAD: c->n_head = (int)v; break;
    case CONFIG_OPT_N_EMBD: c->n_embd = (int)v; break;
    case CONFIG_OPT_N_CTX: c->n_ctx = (int)v; break;
    case CONFIG_OPT_VOCAB: c->vocab_size = (int)v; break;
    case CONFIG_OPT_N_FFN: *ffn_explicit = 1, c->n_ffn = (int)v; break;
    case CONFIG_OPT_LN: c->ln = (GPTLayerNorm)v; break;
    case CONFIG_OPT_LN_EPS: c->ln_eps = (float)v; break;
    case CONFIG_OPT_DROPOUT: c->dropout_embd = c->dropout_resid = c->dropout_attn = (float)v; break;
    case CONFIG_OPT_DROPOUT_EMBD: c->dropout_embd = (float)v; break;
    case CONFIG_OPT_DROPOUT_RESID: c->dropout_resid = (float)v; break;
    case CONFIG_OPT_DROPOUT_ATTN: c->dropout_attn = (float)v; break;
    }
}

int config_from_args(const ConfigArgs *a, GPTConfig *out) {
    if (!a->preset) return gpt_error("--model PRESET is required (%s)", config_preset_list());
    if (config_preset(a->preset, out)) return -1;
    int ffn_explicit = 0;
    for (int i = 0; i < a->n; i++) apply_override(out, a->opt[i], a->value[i], &ffn_explicit);
    if (!ffn_explicit) out->n_ffn = 4 * out->n_embd;
    /* each value was checked alone above; this is the one rule between options */
    if (out->n_embd % out->n_head)
        return gpt_error("--n-head: n_embd (%d) must be divisible by n_head (%d)", out->n_embd, out->n_head);
    return config_validate(out);
}

int config_args_dropout_only(const ConfigArgs *a) {
    if (a->preset) return 0;
    for (int i = 0; i < a->n; i++)
        if (a->opt[i] < CONFIG_OPT_DROPOUT) return 0;
    return 1;
}

int config_apply_dropout(const ConfigArgs *a, GPTConfig *out) {
    int ffn_explicit = 0;
    for (int i = 0; i < a->n; i++) apply_override(out, a->opt[i], a->value[i], &ffn_explicit);
    return config_validate(out);
}
