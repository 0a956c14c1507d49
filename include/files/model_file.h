/* model_file.h: model files in HDF5.
 *
 * Layout (docs/formats.md): group /model with one float32 dataset per tensor, named
 * and shaped like a PyTorch state dict, and every GPTConfig field as an attribute of
 * /model. Tensors are chunked by whole rows (about 1 MiB a chunk) and carry
 * HDF5's Fletcher32 checksum, which HDF5 verifies on every read. Writes go to "<path>.tmp"
 * and are published once complete (base/atomic.h: flushed to disk, renamed, the
 * directory flushed), so neither a failed write nor a crash leaves a file that looks
 * whole. Reads check every attribute and tensor against the configuration and name
 * what is missing or misshapen. A tensor holding a NaN or an infinity is never written,
 * and loading refuses it: a diverged or damaged model would only print garbage. */
#ifndef GPT_MODEL_FILE_H
#define GPT_MODEL_FILE_H

#include <stdint.h>

#include "files/tokenizer_file.h"
#include "model/model.h"


/* tok (may be NULL) is written as /tokenizer, so that the file alone can encode and
 * decode text. -1 without writing anything if a tensor is not finite. */
int model_file_write(const char *path, const GPT *m, const Tokenizer *tok);
/* The same, with or without the tensors (a LoRA fine-tuning names its base instead of
 * copying it: /model then holds the configuration alone), and extra(file, ctx), when not
 * NULL, adding at most extra_bytes more to the open file before it is renamed into place.
 * The space the file needs is reserved first (h5_reserve): a full disk is an error
 * naming the space needed, with no file left. */
int model_file_write_ex(const char *path, const GPT *m, int with_tensors, const Tokenizer *tok,
                        int (*extra)(int64_t file, const void *ctx), const void *ctx, uint64_t extra_bytes);
/* The same, recording that m was pruned (prune.h): attributes pruned_sparsity (the
 * fraction of zeros among the prunable entries) and pruned_scope ("global" or "layer")
 * of /model, written before the file is renamed into place like everything else. */
int model_file_write_pruned(const char *path, const GPT *m, const Tokenizer *tok, double sparsity,
                            const char *scope);
/* The pruned_sparsity of a model file or checkpoint: 0 with *sparsity = 0 when the
 * attribute is absent (a model never pruned), -1 with gpt_error() if the file is not a
 * model file or the attribute is not a number. */
int model_file_read_pruned(const char *path, double *sparsity);
int model_file_read_config(const char *path, GPTConfig *cfg);
/* Reads the parameters into m, whose configuration must equal the file's, as stored
 * (finite or not). */
int model_file_read_weights(const char *path, GPT *m);
/* Config, create (with the given batch and gradients), weights: one call; -1 naming the
 * file and the tensor if one is not finite. */
GPT *model_file_load(const char *path, int max_batch, int with_grads);
/* The same without gradients or the finiteness check: for gpt inspect, which reports
 * non-finite tensors. */
GPT *model_file_load_any(const char *path, int max_batch);
/* 0 if the n tensors of a table (from params at their offsets) are finite; else -1
 * naming PATH and the first one that is not (WHERE/name), as read from the file or, with
 * writing, as refused for it. */
int model_tensors_check_finite(const char *path, const char *where, const GPTTensor *t, int n, const float *params,
                               int writing);

/* Data tokenized for a model must use the model file's own tokenizer, if it has one:
 * same-sized vocabularies with other tokens would train silently on nonsense. 0 if
 * data_tok (DATA's) equals MODEL's /tokenizer or MODEL has none; else -1 saying how to
 * prepare DATA. */
int model_file_check_tokenizer(const char *model, const Tokenizer *data_tok, const char *data);
/* 1 if tok equals MODEL's /tokenizer or MODEL has none; 0 if they differ (why[size] says
 * how); -1 with gpt_error() if MODEL cannot be read. */
int model_file_same_tokenizer(const char *model, const Tokenizer *tok, char *why, size_t size);

/* Shared with the checkpoint writer (checkpoint.h), which writes the same /model group and
 * the optimizer's moments in the same layout, each rank a range of whole chunks
 * (shard.h: shard_tensor_chunk_rows rows a chunk).
 * Locations and transfer lists are HDF5 ids (hid_t). */
int model_config_write_h5(int64_t group, const GPTConfig *cfg);
/* An upper bound on the bytes n tensors' datasets take in a file (h5_array_bytes). */
uint64_t model_tensors_bytes(const GPTTensor *t, int n);
/* A chunked, checksummed float32 dataset named and shaped like t; < 0 on failure. */
int64_t model_tensor_create(int64_t loc, const GPTTensor *t);
/* The bytes of one chunk of a tensor's dataset. */
size_t model_tensor_chunk_bytes(const GPTTensor *t);
/* Rows [lo, hi) of a tensor (rows: their data), lo a chunk's first row and hi one or the
 * tensor's end, chunk by chunk with h5_write_chunk_fletcher32 (independent I/O, no
 * filter pipeline); buf: room for model_tensor_chunk_bytes(t) + 4. */
int model_tensor_write_chunks(int64_t dataset, const GPTTensor *t, const float *rows, int lo, int hi, void *buf);
/* Serial, whole tensors: a table's n tensors (from params at their offsets) as the
 * datasets of group WHERE, created with its parents; and reading them back, each checked
 * against the table (a missing group or tensor named). For the small tensor sets written
 * by one process: checkpoint extras, a fine-tuned model's head and adapters. */
int model_tensors_write(int64_t file, const char *where, const GPTTensor *t, int n, const float *params);
int model_tensors_read(const char *path, int64_t file, const char *where, const GPTTensor *t, int n, float *params);
/* Checks that WHERE/<t->name> exists with t's shape, then reads its rows [lo, hi) into
 * rows (row lo first); -1 naming the file and the tensor on any mismatch or checksum
 * failure. */
int model_tensor_read(const char *path, const char *where, int64_t group, const GPTTensor *t, float *rows,
                      int lo, int hi, int64_t dxpl);

#endif
