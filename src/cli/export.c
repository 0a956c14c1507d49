/* export.c: `gpt export` and `gpt import`: models to and from Hugging Face transformers
 * and llama.cpp (interop/hf.h, interop/gguf_model.h). */
#include <getopt.h>
#include <hdf5.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "files/h5util.h"
#include "interop/gguf_model.h"
#include "interop/hf.h"
#include "files/model_file.h"
#include "base/util.h"

static const char export_help[] =
    "usage: gpt export --model FILE.h5 --format hf --out DIR [--tokenizer TOK.h5]\n"
    "       gpt export --model FILE.h5 --format gguf --out FILE.gguf [--dtype f32|f16] [--tokenizer TOK.h5]\n\n"
    "Writes the language model of a model file, a checkpoint, or a fully fine-tuned or merged\n"
    "model (its task head is not exported; LoRA adapters must first be merged with gpt merge-lora)\n"
    "with the file's own tokenizer (or TOK.h5):\n"
    "  hf    DIR/model.safetensors, config.json, vocab.json, merges.txt, tokenizer.json,\n"
    "        tokenizer_config.json, special_tokens_map.json: transformers' GPT2LMHeadModel for a\n"
    "        pre-LN model, OpenAIGPTLMHeadModel for a post-LN (GPT-1) one.\n"
    "  gguf  GGUF v3 for llama.cpp's gpt2 architecture (pre-LN models only); --dtype f16 stores\n"
    "        the matrices as float16 (default f32).\n"
    "The same model gives the same bytes. See docs/formats.md.\n";

/* A model file's language model; a LoRA fine-tuning holds only adapters and is refused by name. */
static GPT *load_language_model(const char *path) {
    GPT *m = model_file_load(path, 0, 0); /* parameters only */
    if (m) return m;
    char why[1024];
    snprintf(why, sizeof why, "%s", gpt_last_error());
    hid_t f = h5_open_read(path);
    int lora = f >= 0 && H5Lexists(f, "lora", H5P_DEFAULT) > 0;
    if (f >= 0) H5Fclose(f);
    if (lora) gpt_error("%s holds LoRA adapters on a base model, not a whole model: merge them first (gpt merge-lora "
                        "--model %s --out MERGED.h5) and export MERGED.h5", path, path);
    else gpt_error("%s", why);
    return NULL;
}

int cmd_export(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"format", required_argument, 0, 'f'},
                                         {"out", required_argument, 0, 'o'},   {"dtype", required_argument, 0, 'd'},
                                         {"tokenizer", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *format = NULL, *out = NULL, *dtype = NULL, *tok_path = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 'f': format = optarg; break;
        case 'o': out = optarg; break;
        case 'd': dtype = optarg; break;
        case 't': tok_path = optarg; break;
        case 'h': return fputs(export_help, stdout), 0;
        default: return cli_usage_error("export", "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error("export", "unexpected argument '%s'", argv[optind]);
    if (!model || !format || !out) return cli_usage_error("export", "--model, --format and --out are required");
    int hf = !strcmp(format, "hf");
    if (!hf && strcmp(format, "gguf")) return cli_usage_error("export", "--format: expected hf or gguf, got '%s'", format);
    if (dtype && hf) return cli_usage_error("export", "--dtype applies to --format gguf only (hf is float32)");
    if (dtype && strcmp(dtype, "f32") && strcmp(dtype, "f16"))
        return cli_usage_error("export", "--dtype: expected f32 or f16, got '%s'", dtype);
    GPT *m = load_language_model(model);
    Tokenizer *tok = NULL;
    int rc = -1;
    if (m && !(tok = tokenizer_load(tok_path ? tok_path : model)) && !tok_path)
        gpt_error("%s has no tokenizer (/tokenizer); pass --tokenizer TOK.h5", model);
    if (m && tok) {
        char name[PATH_MAX];
        snprintf(name, sizeof name, "%s", model);
        char *base = basename(name), *dot = strrchr(base, '.');
        if (dot && dot != base) *dot = '\0';
        rc = hf ? hf_export(out, m, tok) : gguf_export(out, m, tok, dtype && !strcmp(dtype, "f16"), base);
    }
    if (!rc)
        printf("wrote %s: %s, %zu parameters (%s, %d layers), vocabulary %d\n", out,
               hf ? (m->cfg.ln == GPT_LN_PRE ? "transformers gpt2" : "transformers openai-gpt")
                  : dtype && !strcmp(dtype, "f16") ? "GGUF gpt2, float16" : "GGUF gpt2, float32",
               m->n_params, config_ln_name(m->cfg.ln), m->cfg.n_layer, m->cfg.vocab_size);
    gpt_free(m);
    tokenizer_free(tok);
    return rc ? cli_fail("export") : 0;
}

static const char import_help[] =
    "usage: gpt import --hf DIR --out MODEL.h5 [--tokenizer TOK.h5]\n\n"
    "Reads a transformers gpt2 or openai-gpt directory (config.json, model.safetensors or its\n"
    "shards, and the tokenizer: tokenizer.json, or vocab.json + merges.txt; TOK.h5 instead when\n"
    "given) into a model file that every command takes: gpt train --init, gpt finetune --init,\n"
    "gpt generate, ... See docs/formats.md.\n";

int cmd_import(int argc, char **argv) {
    static const struct option opts[] = {{"hf", required_argument, 0, 'd'}, {"out", required_argument, 0, 'o'},
                                         {"tokenizer", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *dir = NULL, *out = NULL, *tok_path = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'd': dir = optarg; break;
        case 'o': out = optarg; break;
        case 't': tok_path = optarg; break;
        case 'h': return fputs(import_help, stdout), 0;
        default: return cli_usage_error("import", "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error("import", "unexpected argument '%s'", argv[optind]);
    if (!dir || !out) return cli_usage_error("import", "--hf DIR and --out MODEL.h5 are required");
    Tokenizer *tok = NULL;
    GPT *m = hf_import(dir, tok_path, &tok);
    int rc = !m || model_file_write(out, m, tok);
    if (!rc)
        printf("wrote %s: %zu parameters (%s, %d layers, n_ctx %d), vocabulary %d, tokenizer of %d tokens\n", out,
               m->n_params, config_ln_name(m->cfg.ln), m->cfg.n_layer, m->cfg.n_ctx, m->cfg.vocab_size,
               tokenizer_vocab_size(tok));
    gpt_free(m);
    tokenizer_free(tok);
    return rc ? cli_fail("import") : 0;
}
