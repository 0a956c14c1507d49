/* gguf_model.c: a pre-LN model as llama.cpp's "gpt2" architecture in GGUF (see
 * gguf_model.h).
 *
 * Names and keys follow llama.cpp's gguf-py/gguf/constants.py (MODEL_ARCH.GPT2, Keys) and
 * its gpt2 loader (src/models/gpt2.cpp): ggml's shapes are {in, out} for a matrix stored
 * [out, in] row by row, which is this tool's layout, so no tensor is transposed. As
 * llama.cpp's own converter does, the vocabulary is padded to the model's rows with
 * unused "[PAD<id>]" tokens, and float16 files keep 1-D tensors and the position
 * embeddings in float32. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interop/gguf_model.h"
#include "base/util.h"
#include "interop/gguf.h"
#include "interop/staged.h"

enum { TOKEN_NORMAL = 1, TOKEN_CONTROL = 3, TOKEN_UNUSED = 5 }; /* gguf-py TokenType */
enum { FILE_ALL_F32 = 0, FILE_MOSTLY_F16 = 1 };                 /* LlamaFileType */

/* llama.cpp's names of this tool's tensors, in its order within a block. */
static const char *const block_names[][2] = {
    {"ln_1.weight", "attn_norm.weight"},        {"ln_1.bias", "attn_norm.bias"},
    {"attn.c_attn.weight", "attn_qkv.weight"},  {"attn.c_attn.bias", "attn_qkv.bias"},
    {"attn.c_proj.weight", "attn_output.weight"}, {"attn.c_proj.bias", "attn_output.bias"},
    {"ln_2.weight", "ffn_norm.weight"},         {"ln_2.bias", "ffn_norm.bias"},
    {"mlp.c_fc.weight", "ffn_up.weight"},       {"mlp.c_fc.bias", "ffn_up.bias"},
    {"mlp.c_proj.weight", "ffn_down.weight"},   {"mlp.c_proj.bias", "ffn_down.bias"}};

static int gguf_name(const GPTTensor *t, char *buf, size_t size) {
    int layer, at;
    if (!strcmp(t->name, "wte")) return snprintf(buf, size, "token_embd.weight"), 0;
    if (!strcmp(t->name, "wpe")) return snprintf(buf, size, "position_embd.weight"), 0;
    if (!strncmp(t->name, "ln_f.", 5)) return snprintf(buf, size, "output_norm.%s", t->name + 5), 0;
    if (sscanf(t->name, "h.%d.%n", &layer, &at) == 1)
        for (size_t k = 0; k < sizeof block_names / sizeof block_names[0]; k++)
            if (!strcmp(t->name + at, block_names[k][0])) return snprintf(buf, size, "blk.%d.%s", layer, block_names[k][1]), 0;
    return gpt_error("tensor %s has no llama.cpp name", t->name);
}

typedef struct {
    const GPT *m;
    GgufWriter *g;
    const int *source; /* tensor i of the file is the model's tensor source[i] */
} GgufModel;

static const float *tensor_data(void *ctx, int i, float *scratch) {
    (void)scratch;
    const GgufModel *gm = ctx;
    return gm->m->params + gm->m->tensors[gm->source[i]].offset;
}

static int write_gguf(FILE *f, const char *path, const void *ctx) {
    const GgufModel *gm = ctx;
    return gguf_write(gm->g, f, path, tensor_data, (void *)gm, 0);
}

static void add_vocabulary(GgufWriter *g, const Tokenizer *tok, int V) {
    int n = tokenizer_vocab_size(tok), n_tokens = tokenizer_parts(tok).n_tokens, n_merges = tokenizer_n_merges(tok);
    char **spellings = tokenizer_spellings(tok), **merges = tokenizer_merge_spellings(tok, spellings);
    const char **tokens = xmalloc((size_t)V * sizeof *tokens);
    char (*pads)[32] = xmalloc((size_t)(V - n + 1) * sizeof *pads);
    size_t *lens = xmalloc(((size_t)(V > n_merges ? V : n_merges) + 1) * sizeof *lens);
    int32_t *types = xmalloc((size_t)V * sizeof *types);
    for (int id = 0; id < V; id++) {
        if (id < n) {
            tokens[id] = spellings[id];
            types[id] = id < n_tokens ? TOKEN_NORMAL : TOKEN_CONTROL;
        } else {
            snprintf(pads[id - n], sizeof pads[0], "[PAD%d]", id);
            tokens[id] = pads[id - n];
            types[id] = TOKEN_UNUSED;
        }
        lens[id] = strlen(tokens[id]);
    }
    gguf_add_string(g, "tokenizer.ggml.model", "gpt2");
    gguf_add_string(g, "tokenizer.ggml.pre", "gpt-2");
    gguf_add_strings(g, "tokenizer.ggml.tokens", tokens, lens, (size_t)V);
    gguf_add_i32s(g, "tokenizer.ggml.token_type", types, (size_t)V);
    for (int k = 0; k < n_merges; k++) lens[k] = strlen(merges[k]);
    gguf_add_strings(g, "tokenizer.ggml.merges", (const char *const *)merges, lens, (size_t)n_merges);
    int eot = tokenizer_special_id(tok, TOK_EOT);
    if (eot >= 0) {
        gguf_add_u32(g, "tokenizer.ggml.bos_token_id", (uint32_t)eot);
        gguf_add_u32(g, "tokenizer.ggml.eos_token_id", (uint32_t)eot);
    }
    free(spellings), free(merges), free(tokens), free(pads), free(lens), free(types);
}

int gguf_export(const char *path, const GPT *m, const Tokenizer *tok, int f16, const char *name) {
    const GPTConfig *c = &m->cfg;
    if (c->ln != GPT_LN_PRE)
        return gpt_error("llama.cpp has no post-LN (GPT-1) architecture, so this post-LN model cannot be written as "
                         "GGUF; export it with --format hf");
    if (tokenizer_vocab_size(tok) > c->vocab_size)
        return gpt_error("the tokenizer's vocabulary (%d) is larger than the model's (%d)", tokenizer_vocab_size(tok),
                         c->vocab_size);
    GgufWriter *g = gguf_writer_create();
    gguf_add_string(g, "general.architecture", "gpt2");
    gguf_add_string(g, "general.name", name);
    gguf_add_u32(g, "general.file_type", f16 ? FILE_MOSTLY_F16 : FILE_ALL_F32);
    gguf_add_u32(g, "gpt2.context_length", (uint32_t)c->n_ctx);
    gguf_add_u32(g, "gpt2.embedding_length", (uint32_t)c->n_embd);
    gguf_add_u32(g, "gpt2.feed_forward_length", (uint32_t)c->n_ffn);
    gguf_add_u32(g, "gpt2.block_count", (uint32_t)c->n_layer);
    gguf_add_u32(g, "gpt2.attention.head_count", (uint32_t)c->n_head);
    gguf_add_f32(g, "gpt2.attention.layer_norm_epsilon", c->ln_eps);
    add_vocabulary(g, tok, c->vocab_size);
    /* every tensor in the model's order, then output.weight: the tied embeddings again */
    int *source = xmalloc(((size_t)m->n_tensors + 1) * sizeof *source), rc = 0, wte = 0;
    for (int i = 0; i <= m->n_tensors && !rc; i++) {
        int k = i < m->n_tensors ? i : wte;
        const GPTTensor *t = &m->tensors[k];
        char tname[64];
        if (i == m->n_tensors) snprintf(tname, sizeof tname, "output.weight");
        else if ((rc = gguf_name(t, tname, sizeof tname))) break;
        if (!strcmp(t->name, "wte")) wte = k;
        uint64_t ne[2] = {(uint64_t)(t->ndim == 2 ? t->shape[1] : t->shape[0]), (uint64_t)t->shape[0]};
        int half = f16 && t->ndim == 2 && strcmp(t->name, "wpe");
        gguf_add_tensor(g, tname, t->ndim, ne, half ? GGUF_TYPE_F16 : GGUF_TYPE_F32);
        source[i] = k;
    }
    GgufModel gm = {m, g, source};
    Staged s = {0};
    if (!rc) rc = staged_write(&s, path, write_gguf, &gm);
    if (!rc) rc = staged_commit(&s);
    free(source);
    gguf_writer_free(g);
    return rc;
}
