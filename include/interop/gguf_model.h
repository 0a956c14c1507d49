/* gguf_model.h: a model for llama.cpp (gguf_model.c): a GGUF file (gguf.h) of
 * architecture "gpt2", pre-LN models only (llama.cpp has no post-LN GPT-1), float32 or
 * float16 matrices, which are this tool's [out, in] rows as they are. The writer is
 * deterministic (the same model and tokenizer give the same bytes) and all-or-nothing
 * (staged.h). */
#ifndef GPT_GGUF_MODEL_H
#define GPT_GGUF_MODEL_H

#include "model/model.h"
#include "text/tokenizer.h"

/* Writes a pre-LN m and tok to path as GGUF v3; f16: matrices as float16 (norms, biases
 * and position embeddings stay float32, as llama.cpp's converter keeps them); name: the
 * model's general.name. -1 with gpt_error() for a post-LN model or a failed write. */
int gguf_export(const char *path, const GPT *m, const Tokenizer *tok, int f16, const char *name);

#endif
