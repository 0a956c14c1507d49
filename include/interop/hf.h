/* hf.h: models into and out of Hugging Face transformers directories (hf.c; the
 * name-by-name mapping is in docs/formats.md).
 *
 * A directory holds model.safetensors, config.json and the tokenizer (vocab.json +
 * merges.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json). Pre-LN
 * models are GPT2LMHeadModel ("gpt2"), post-LN ones OpenAIGPTLMHeadModel
 * ("openai-gpt"). Both store their attention and MLP matrices as Conv1D, [in, out], the
 * transpose of this tool's [out, in]; the output projection is tied to the token
 * embeddings and not stored. The writer is deterministic (the same model and tokenizer
 * give the same bytes) and all-or-nothing (staged.h). */
#ifndef GPT_HF_H
#define GPT_HF_H

#include "model/model.h"
#include "text/tokenizer.h"

/* Writes m and tok into DIR (created if missing). -1 with gpt_error() if the model has
 * no Hugging Face equivalent (a post-LN model whose MLP is not 4 n_embd wide). */
int hf_export(const char *dir, const GPT *m, const Tokenizer *tok);
/* Reads a "gpt2" or "openai-gpt" directory: config.json, model.safetensors (or the shards
 * of model.safetensors.index.json), and, unless tok_path names a tokenizer file to use
 * instead, the directory's tokenizer. Tensor names may carry the "transformer." prefix or
 * not, but no tensor may be stored twice; an index's weight_map must list exactly the
 * shards' tensors, each in its shard. The attention-mask buffers are ignored. A parameters-only model (gpt_create's
 * max_batch 0: to be written, not run) and its tokenizer (both owned by the caller), or
 * NULL with gpt_error() naming the file and the field. */
GPT *hf_import(const char *dir, const char *tok_path, Tokenizer **tok);

#endif
