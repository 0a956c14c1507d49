/* shard.h: the partition of a model's parameters among the ranks.
 *
 * The flat parameter buffer is cut into segments: wte, wpe, and each layer's attention
 * and feed-forward halves (the last one with ln_f), the units in which the backward pass
 * releases gradients and the forward pass reads parameters (model.h's ready points).
 * Each segment is split among all P ranks: rank j of its P equal parts (counted from the
 * segment's index, so that no rank is first in every segment) owns the whole chunks of
 * the checkpoint layout (shard_tensor_chunk_rows: whole rows, about SHARD_CHUNK_BYTES a
 * chunk) whose first element lies in that part. So a rank owns, of each tensor,
 * consecutive rows, and of each segment one flat range (possibly none: a segment of
 * fewer chunks than ranks); within a segment the ranges follow each other. A
 * collective on a piece of one segment (gradsync.h's buckets) then has a part of about
 * 1/P on every rank, and sends through every rank's link at once. wte's segment is
 * split in rank order (its rows' owners, rowsum.h, are ranges in rank order).
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
    size_t *at;         /* (n_tensors) where row lo lies when the shard is packed: its
                         * elements end to end in buffer order (as AdamW's moments) */
    int n_ranges;       /* the flat ranges they cover, ascending, adjacent ones merged */
    size_t *begin, *end;
    size_t n;           /* elements in all */
} Shard;

/* The segments' boundaries, ascending from 0 to n_params (bounds: at least
 * 2 n_layer + 3 entries); returns the segments' count (entries - 1). */
int shard_segments(const GPT *m, size_t *bounds);

/* Rank r's share of m among P ranks (owned: free with shard_free). */
Shard shard_of(const GPT *m, int r, int P);
void shard_free(Shard *s);

/* The sizes of P ranks' shares of a model of this configuration, in parameters. */
typedef struct {
    size_t largest; /* the largest share (shard_of's n): the AdamW state of a sharded rank
                     * (8 bytes each), and the share of a checkpoint a rank writes */
    size_t hop;     /* the sum over the segments of the largest part of each: what one hop
                     * of a ring over every segment carries (about n_params / P, more
                     * where a segment has fewer chunks than ranks) */
} ShardSizes;
ShardSizes shard_sizes(const GPTConfig *cfg, int P);

/* The optimizer of rank r's parameters: its shard when sharded and P > 1, else all. */
AdamW *shard_optimizer_create(const OptimConfig *cfg, const GPT *m, int r, int P, int sharded);

#endif
