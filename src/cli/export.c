/* export.c: `gpt export` and `gpt import`: models to and from Hugging Face transformers
 * and llama.cpp (interop/hf.h, interop/gguf_model.h). */
#include <dirent.h>
#include <hdf5.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "base/util.h"
#include "cli/cli.h"
#include "files/h5util.h"
#include "files/model_file.h"
#include "interop/gguf_model.h"
#include "interop/hf.h"

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

typedef struct {
    const char *model, *out, *tok_path;
    int format, dtype, dtype_given;
} ExportArgs;

static const char *const format_names[] = {"hf", "gguf", NULL}, *const dtype_names[] = {"f32", "f16", NULL};

static const CliOpt export_opts[] = {
    {.name = "model", .kind = CLI_STRING, .offset = offsetof(ExportArgs, model), .flags = CLI_REQUIRED,
     .metavar = "FILE.h5", .help = "a model file, checkpoint, or fully fine-tuned or merged model"},
    {.name = "format", .kind = CLI_CHOICE, .offset = offsetof(ExportArgs, format), .choices = format_names,
     .flags = CLI_REQUIRED, .metavar = "hf|gguf", .help = "transformers' safetensors directory, or llama.cpp's GGUF"},
    {.name = "out", .kind = CLI_STRING, .offset = offsetof(ExportArgs, out), .flags = CLI_REQUIRED,
     .metavar = "DIR|FILE.gguf", .help = "the directory (hf) or file (gguf) written"},
    {.name = "dtype", .kind = CLI_CHOICE, .offset = offsetof(ExportArgs, dtype), .choices = dtype_names,
     .flags = CLI_GIVEN, .count = offsetof(ExportArgs, dtype_given), .metavar = "f32|f16",
     .help = "gguf only: the matrices as float32 or float16"},
    {.name = "tokenizer", .kind = CLI_STRING, .offset = offsetof(ExportArgs, tok_path), .metavar = "TOK.h5",
     .help = "the tokenizer, if not the model file's"},
    CLI_END};

static const CliCommand export_cmd = {
    .name = "export", .opts = export_opts, .size = sizeof(ExportArgs),
    .about = "Writes the language model of a model file, a checkpoint, or a fully fine-tuned or merged\n"
             "model (its task head is not exported; LoRA adapters must first be merged with gpt merge-lora)\n"
             "with the file's own tokenizer (or TOK.h5):\n"
             "  hf    DIR/model.safetensors, config.json, vocab.json, merges.txt, tokenizer.json,\n"
             "        tokenizer_config.json, special_tokens_map.json: transformers' GPT2LMHeadModel for a\n"
             "        pre-LN model, OpenAIGPTLMHeadModel for a post-LN (GPT-1) one.\n"
             "  gguf  GGUF v3 for llama.cpp's gpt2 architecture (pre-LN models only).\n"
             "The same model gives the same bytes. See docs/formats.md.\n"};

int cmd_export(int argc, char **argv) {
    ExportArgs a = {0};
    int first, rc = cli_parse(&export_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    const char *model = a.model, *out = a.out, *tok_path = a.tok_path;
    int hf = a.format == 0, f16 = a.dtype == 1;
    const char *inputs[] = {model, tok_path};
    if (cli_check_output("export", "out", out, inputs, 2)) return 2;
    if (a.dtype_given && hf) return cli_usage_error("export", "--dtype applies to --format gguf only (hf is float32)");
    GPT *m = load_language_model(model);
    Tokenizer *tok = NULL;
    rc = -1;
    if (m && !(tok = tokenizer_load(tok_path ? tok_path : model)) && !tok_path)
        gpt_error("%s has no tokenizer (/tokenizer); pass --tokenizer TOK.h5", model);
    if (m && tok) {
        char name[PATH_MAX];
        snprintf(name, sizeof name, "%s", model);
        char *base = basename(name), *dot = strrchr(base, '.');
        if (dot && dot != base) *dot = '\0';
        rc = hf ? hf_export(out, m, tok) : gguf_export(out, m, tok, f16, base);
    }
    if (!rc)
        printf("wrote %s: %s, %zu parameters (%s, %d layers), vocabulary %d\n", out,
               hf ? (m->cfg.ln == GPT_LN_PRE ? "transformers gpt2" : "transformers openai-gpt")
                  : f16 ? "GGUF gpt2, float16" : "GGUF gpt2, float32",
               m->n_params, config_ln_name(m->cfg.ln), m->cfg.n_layer, m->cfg.vocab_size);
    gpt_free(m);
    tokenizer_free(tok);
    return rc ? cli_fail("export") : 0;
}

typedef struct {
    const char *dir, *out, *tok_path;
} ImportArgs;

static const CliOpt import_opts[] = {
    {.name = "hf", .kind = CLI_STRING, .offset = offsetof(ImportArgs, dir), .flags = CLI_REQUIRED, .metavar = "DIR",
     .help = "a transformers gpt2 or openai-gpt directory"},
    {.name = "out", .kind = CLI_STRING, .offset = offsetof(ImportArgs, out), .flags = CLI_REQUIRED,
     .metavar = "MODEL.h5", .help = "the model file written"},
    {.name = "tokenizer", .kind = CLI_STRING, .offset = offsetof(ImportArgs, tok_path), .metavar = "TOK.h5",
     .help = "the tokenizer, instead of the directory's"},
    CLI_END};

static const CliCommand import_cmd = {
    .name = "import", .opts = import_opts, .size = sizeof(ImportArgs),
    .about = "Reads a transformers gpt2 or openai-gpt directory (config.json, model.safetensors or its\n"
             "shards, and the tokenizer: tokenizer.json, or vocab.json + merges.txt) into a model file\n"
             "that every command takes: gpt train --init, gpt finetune --init, gpt generate, ...\n"
             "See docs/formats.md.\n"};

/* An --out that is one of the files of the directory read (model.safetensors, a shard,
 * config.json, ...) or --tokenizer: a usage error (2). */
static int import_output_clashes(const char *dir, const char *out, const char *tok_path) {
    const char *tokenizer[1] = {tok_path};
    if (cli_check_output("import", "out", out, tokenizer, 1)) return 2;
    DIR *d = opendir(dir);
    int rc = 0;
    for (struct dirent *e; d && !rc && (e = readdir(d));) {
        char path[PATH_MAX];
        const char *input[1] = {path};
        if (e->d_name[0] != '.' && snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path)
            rc = cli_check_output("import", "out", out, input, 1);
    }
    if (d) closedir(d);
    return rc;
}

int cmd_import(int argc, char **argv) {
    ImportArgs a = {0};
    int first, rc = cli_parse(&import_cmd, argc, argv, &a, &first);
    if (rc >= 0) return rc;
    const char *dir = a.dir, *out = a.out, *tok_path = a.tok_path;
    if (import_output_clashes(dir, out, tok_path)) return 2;
    Tokenizer *tok = NULL;
    GPT *m = hf_import(dir, tok_path, &tok);
    rc = !m || model_file_write(out, m, tok);
    if (!rc)
        printf("wrote %s: %zu parameters (%s, %d layers, n_ctx %d), vocabulary %d, tokenizer of %d tokens\n", out,
               m->n_params, config_ln_name(m->cfg.ln), m->cfg.n_layer, m->cfg.n_ctx, m->cfg.vocab_size,
               tokenizer_vocab_size(tok));
    gpt_free(m);
    tokenizer_free(tok);
    return rc ? cli_fail("import") : 0;
}
