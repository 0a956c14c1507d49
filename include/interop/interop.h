/* interop.h: models into and out of other tools' formats (docs/formats.md has the
 * name-by-name mapping).
 *
 * Hugging Face transformers (src/interop/hf.c): a directory with model.safetensors, config.json
 * and the tokenizer (vocab.json + merges.txt, tokenizer.json, tokenizer_config.json,
 * special_tokens_map.json). Pre-LN models are GPT2LMHeadModel ("gpt2"), post-LN ones
 * OpenAIGPTLMHeadModel ("openai-gpt"). Both store their attention and MLP matrices as
 * Conv1D, [in, out], the transpose of this tool's [out, in]; the output projection is
 * tied to the token embeddings and not stored.
 *
 * llama.cpp (src/interop/gguf_model.c): a GGUF file of architecture "gpt2", pre-LN models only
 * (llama.cpp has no post-LN GPT-1), float32 or float16 matrices. Its matrices are this
 * tool's [out, in] rows as they are.
 *
 * Writers are deterministic (the same model and tokenizer give the same bytes) and leave
 * nothing behind on failure: each file is written as NAME.tmp and renamed into place only
 * once every file is complete. */
#ifndef GPT_INTEROP_H
#define GPT_INTEROP_H

#include "model/model.h"
#include "files/tokenizer_file.h"

/* Writes m and tok into DIR (created if missing). -1 with gpt_error() if the model has
 * no Hugging Face equivalent (a post-LN model whose MLP is not 4 n_embd wide). */
int hf_export(const char *dir, const GPT *m, const Tokenizer *tok);
/* Reads a "gpt2" or "openai-gpt" directory: config.json, model.safetensors (or the shards
 * of model.safetensors.index.json), and, unless tok_path names a tokenizer file to use
 * instead, the directory's tokenizer. Tensor names may carry the "transformer." prefix or
 * not; the attention-mask buffers are ignored. A parameters-only model (gpt_create's
 * max_batch 0: to be written, not run) and its tokenizer, or NULL with gpt_error() naming
 * the file and the field. */
GPT *hf_import(const char *dir, const char *tok_path, Tokenizer **tok);

/* Writes a pre-LN m and tok as GGUF v3 for llama.cpp; f16: matrices as float16 (norms,
 * biases and position embeddings stay float32, as llama.cpp's converter keeps them). */
int gguf_export(const char *path, const GPT *m, const Tokenizer *tok, int f16, const char *name);

/* Staged writes shared by the exporters: each file goes to PATH.tmp first, and
 * staged_commit renames them all into place; staged_abort removes them. */
typedef struct {
    int n;
    char **paths;
} Staged;
/* Writes PATH.tmp with write(f, ctx) and remembers PATH; -1 (the tmp file removed) on
 * failure, naming PATH. */
int staged_write(Staged *s, const char *path, int (*write)(FILE *f, const char *path, const void *ctx),
                 const void *ctx);
int staged_commit(Staged *s);
void staged_abort(Staged *s);

#endif
