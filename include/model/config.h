/* config.h: the model's hyper-parameters, the named presets and their validation.
 *
 * A GPTConfig fully determines the shapes of every tensor. Commands build one from a
 * preset (--model NAME) plus field overrides (--n-layer, ...), collected while parsing
 * the command line and applied after it, so flags may come in any order. */
#ifndef GPT_CONFIG_H
#define GPT_CONFIG_H

#include <stdio.h>

typedef enum { GPT_LN_POST = 0, GPT_LN_PRE = 1 } GPTLayerNorm;

typedef struct {
    int n_layer;          /* L: number of transformer blocks */
    int n_head;           /* H: attention heads; n_embd % n_head == 0 */
    int n_embd;           /* C: width of the residual stream */
    int n_ctx;            /* k: context window, also the rows of wpe */
    int vocab_size;       /* V */
    int n_ffn;            /* F: feed-forward width (default 4*C) */
    float dropout_embd;   /* on token+position embeddings */
    float dropout_resid;  /* on each sublayer's output before the residual add */
    float dropout_attn;   /* on the attention probabilities */
    GPTLayerNorm ln;      /* post: x = LN(x + f(x)) (GPT-1); pre: x = x + f(LN(x)), final LN */
    float ln_eps;
} GPTConfig;

/* Fills *out with a named preset (config_preset_names); -1 naming them all if the name is
 * unknown. */
int config_preset(const char *name, GPTConfig *out);
/* The presets' names, NULL-terminated: gpt1, small, tiny, gpt2, gpt2-medium, gpt2-large,
 * gpt2-xl; and as one phrase, "gpt1, small, ... or gpt2-xl", for messages. */
extern const char *const config_preset_names[];
const char *config_preset_list(void);
/* 1 if the preset initialises the two residual output projections of each block with
 * std / sqrt(2 n_layer) (GPT-2's presets; gpt_init_weights' scale_residual), else 0
 * (also for an unknown name or NULL). */
int config_preset_scales_residual(const char *name);
/* 0 if the configuration can be built, else -1 naming the offending field. */
int config_validate(const GPTConfig *c);
/* The LayerNorm placements' names in GPTLayerNorm's order, NULL-terminated. */
extern const char *const config_ln_names[];
const char *config_ln_name(GPTLayerNorm ln);
int config_parse_ln(const char *s, GPTLayerNorm *out);
void config_print(FILE *f, const GPTConfig *c);

/* The command line's model options (gpt init, bench, train: cliopt.h) are collected in a
 * ConfigArgs, each value already checked alone, and applied after parsing. */
enum {
    CONFIG_OPT_N_LAYER, CONFIG_OPT_N_HEAD, CONFIG_OPT_N_EMBD, CONFIG_OPT_N_CTX,
    CONFIG_OPT_VOCAB, CONFIG_OPT_N_FFN, CONFIG_OPT_LN, CONFIG_OPT_LN_EPS,
    CONFIG_OPT_DROPOUT, CONFIG_OPT_DROPOUT_EMBD, CONFIG_OPT_DROPOUT_RESID,
    CONFIG_OPT_DROPOUT_ATTN
};

/* Largest accepted size field: keeps every product of two fields within size_t and
 * every matrix dimension within BLAS's int. */
#define CONFIG_MAX_DIM (1 << 24)

#define CONFIG_MAX_OVERRIDES 32
typedef struct {
    const char *preset;
    int n;
    int opt[CONFIG_MAX_OVERRIDES];
    double value[CONFIG_MAX_OVERRIDES]; /* CONFIG_OPT_LN: a GPTLayerNorm */
} ConfigArgs;

/* Remembers one override; -1 if there are too many. */
int config_args_add(ConfigArgs *a, int opt, double value);
/* Preset, then overrides in command-line order, then validation; every error is one of
 * the command line, naming the option. */
int config_from_args(const ConfigArgs *a, GPTConfig *out);
/* For a model whose shape comes from a file (gpt train --init): 1 if the options are
 * dropout rates only; and applying them to that file's configuration. */
int config_args_dropout_only(const ConfigArgs *a);
int config_apply_dropout(const ConfigArgs *a, GPTConfig *out);

#endif
