/* shard.h: the partition of a model's parameters among the ranks.
 *
 * Rank r of P owns the whole chunks of the checkpoint layout (shard_tensor_chunk_rows:
 * whole rows, about SHARD_CHUNK_BYTES a chunk) whose first element lies in [N r / P, N (r+1) / P) of
 * the flat parameter buffer of N floats. The chunks a rank owns are consecutive, so its
 * share is one contiguous flat range, and the P ranges tile the buffer in rank order. A
 * rank may own none (a model of few chunks on many ranks): its range is then empty.
 *
 * One partition serves both places that split the parameters: the part of every
 * checkpoint tensor a rank writes and reads (checkpoint.h), and under --shard-optimizer
 * the parameters whose AdamW state a rank holds and updates (gradsync.h). So a sharded
 * rank writes exactly the moments it holds, and reading a checkpoint on any P and in
 * either mode reads each byte once. */
#ifndef GPT_SHARD_H
#define GPT_SHARD_H

#include <stddef.h>

#include "model/model.h"
#include "model/optim.h"

/* The chunk of every tensor dataset the tool writes (h5util.h, model_file.h): whole rows,
 * about this many bytes. Here because the partition is made of chunks, and the files
 * layer above follows it. */
#define SHARD_CHUNK_BYTES ((size_t)1 << 20)
/* Rows of row_bytes each in one chunk of an array of `rows` rows: at least 1, at most rows. */
size_t shard_chunk_rows(size_t rows, size_t row_bytes);
/* Rows per chunk of a tensor (1-D tensors: elements). */
int shard_tensor_chunk_rows(const GPTTensor *t);

typedef struct {
    int *lo, *hi;       /* (n_tensors) rows [lo, hi) of each tensor (lo == hi: none) */
    size_t begin, end;  /* the flat range they cover */
} Shard;

/* Rank r's share of m among P ranks (owned: free with shard_free). */
Shard shard_of(const GPT *m, int r, int P);
void shard_free(Shard *s);

/* The parameters of the largest of P ranks' shares of a model of this configuration
 * (shard_of's end - begin): the AdamW state of a sharded rank (8 bytes each), and the
 * share of a checkpoint a rank writes. */
size_t shard_largest(const GPTConfig *cfg, int P);

/* The optimizer of rank r's parameters: its shard when sharded and P > 1, else all. */
AdamW *shard_optimizer_create(const OptimConfig *cfg, const GPT *m, int r, int P, int sharded);

#endif
