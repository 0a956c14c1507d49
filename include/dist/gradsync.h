/* gradsync.h: gradient averaging that overlaps the backward pass.
 *
 * The gradient buffer is cut into buckets of whole layers, about bucket_bytes each,
 * taken from its end (the last layer, whose gradients the backward pass finishes first)
 * to its start (wte and wpe, finished last), and a bucket larger than GRADSYNC_PIECE_MB
 * into equal pieces (gpt1's embeddings, 126 MB, would otherwise need as much again in
 * MPI's temporary buffers). The model's grad_ready hook starts a
 * bucket's MPI_Iallreduce as soon as its lowest layer is done; gradsync_finish() waits
 * for the rest. Only an armed pass communicates, so gradient accumulation over several
 * micro-steps sends once.
 *
 * Open MPI moves a non-blocking collective only inside MPI calls: each round of its
 * ring (and each rendezvous handshake of a large message) waits for the next call on
 * both sides. One call per finished layer left the reduction to the wait after the
 * backward pass on a real link (docs/scaling.md has the figures), so a progress thread
 * calls MPI_Test on the buckets in flight every GRADSYNC_POLL_US while the backward pass
 * computes, and without pause in gradsync_finish. It needs MPI_THREAD_MULTIPLE; without
 * it, the hook tests the buckets once per layer.
 *
 * Sharded (--shard-optimizer, ZeRO-1): rank r keeps AdamW state only for its shard of
 * the parameters (shard.h) and updates only those. Each bucket is then reduce-scattered
 * instead: every rank receives the sum of its shard's part of the bucket, in place in
 * the gradient buffer (the rest of the buffer is left partly summed: only the shard is
 * read). The progress thread runs the buckets' blocking MPI_Reduce_scatter one after
 * another on a communicator of its own while the backward pass computes (gradsync.c says
 * why not MPI_Ireduce_scatter). After the update, gradsync_gather() all-gathers the
 * shards' new parameters, so every rank again holds the whole model.
 *
 * --grad-reduce bf16 halves the bytes on the wire: a bucket is rounded to bf16
 * (kernels.h's bf16_pack) into a buffer of half its size when it starts, reduced in
 * bf16 by a user-defined MPI operation that adds each pair in fp32 and rounds the sum
 * once, and widened back into the fp32 gradients when it completes. On one rank the
 * gradients are rounded alike (one blocking bucket, no communication), so that P = 1
 * and P > 1 are the same arithmetic. */
#ifndef GPT_GRADSYNC_H
#define GPT_GRADSYNC_H

#include <stddef.h>

struct GPT;
typedef struct GradSync GradSync;
/* The gradients' format on the wire (--grad-reduce); they stay fp32 in memory. */
typedef enum { GRAD_REDUCE_FP32 = 0, GRAD_REDUCE_BF16 = 1 } GradReduce;
/* GradReduce's names in its order, NULL-terminated (the command line's choices). */
extern const char *const grad_reduce_names[];
#define GRADSYNC_BUCKET_MB 1 /* default bucket size (gpt train --bucket-mb): a bucket a layer but for tiny models */
#define GRADSYNC_POLL_US 100  /* the progress thread's interval while the backward pass runs */
#define GRADSYNC_PIECE_MB 4   /* the largest collective: each takes a temporary copy of its buffer */

/* Collective: every rank creates it alike (its buckets; sharded: its communicator).
 * NULL on one rank in fp32: there is nothing to do. */
GradSync *gradsync_create(struct GPT *m, size_t bucket_bytes, int sharded, GradReduce wire);
void gradsync_free(GradSync *g);
void gradsync_arm(GradSync *g);
/* Collective: waits for every bucket of the armed pass, first starting those the pass
 * did not (all of them on a rank that armed but ran no backward pass); returns the
 * seconds waited. */
double gradsync_finish(GradSync *g);
/* After gradsync_finish: the squared L2 norm of the summed gradients (collective when
 * sharded: the sum of the shards' squared norms). */
double gradsync_norm_sq(GradSync *g);
/* Collective after a sharded update: every shard's parameters to every rank (MPI_Allgatherv
 * in place); nothing when not sharded. */
void gradsync_gather(GradSync *g);
int gradsync_buckets(const GradSync *g);

#endif
