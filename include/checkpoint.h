/* checkpoint.h: model files in HDF5.
 *
 * Layout (docs/formats.md): group /model with one float32 dataset per tensor, named
 * and shaped like a PyTorch state dict, and every GPTConfig field as an attribute of
 * /model. Writes go to "<path>.tmp" and are renamed into place once complete, so a
 * failed write never leaves a file that looks whole. Reads check every attribute and
 * tensor against the configuration and name what is missing or misshapen. */
#ifndef GPT_CHECKPOINT_H
#define GPT_CHECKPOINT_H

#include "model.h"
#include "tokenizer.h"

/* tok (may be NULL) is written as /tokenizer, so that the file alone can encode and
 * decode text. */
int model_file_write(const char *path, const GPT *m, const Tokenizer *tok);
int model_file_read_config(const char *path, GPTConfig *cfg);
/* Reads the parameters into m, whose configuration must equal the file's. */
int model_file_read_weights(const char *path, GPT *m);
/* Config, create (with the given batch and gradients), weights: one call. */
GPT *model_file_load(const char *path, int max_batch, int with_grads);

#endif
