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
 * The tied embedding wte (V rows, a quarter of gpt1's gradient) is reduced in two parts
 * on more than one rank, so that it is not all sent after the backward pass: the model
 * keeps the input embedding's part apart as rows (model/token_grads.h), and g.wte holds
 * only the output projection's part. That is complete when the head's backward pass
 * ends, before any block's: its buckets start first (the model's output_grad_ready
 * hook). The rows, at most B*T of V, are summed sparsely by rowsum.h at the end, on the
 * main thread while the progress thread completes the buckets, and added onto the
 * reduced output part: wte's gradient is then the sum of the two sums, which differs
 * from the sum of the whole in rounding only.
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
 * read). The progress thread runs the buckets' reduce-scatters one after another on a
 * communicator of its own while the backward pass computes: each a ring of non-blocking
 * sends and receives with the neighbours that it tests every GRADSYNC_POLL_US
 * (gradsync.c says why not MPI_Reduce_scatter or MPI_Ireduce_scatter). After the update,
 * gradsync_gather() all-gathers the shards' new parameters, so every rank again holds
 * the whole model: in buckets of half layers (the segments; an in-place allgather needs
 * no pieces), each an MPI_Iallgatherv that the progress thread tests every
 * GRADSYNC_POLL_US (a blocking one spins for all of its transfer, taking a core from the
 * forward pass), GRADSYNC_GATHER_AHEAD at once in order, while the main thread goes on
 * to the next step. The order is the forward pass's: wpe, the layers, then wte, which
 * only the head reads whole (a quarter of gpt1). Its lookup reads only the rows of the
 * batch's tokens: the client names them to gradsync_gather(), which fetches those rows
 * from their owners first, apart, while the link is idle (at most B*T rows: rowsum.h).
 * A client that cannot name them (fine-tuning: its passes' tokens are made as it goes)
 * gathers wte first instead. Sharded, both collectives' buckets are cut at every segment
 * of the partition (shard.h), whatever bucket_bytes: every rank then holds about 1/P of
 * every bucket as one range, so each collective sends through every rank's link at
 * once. The model's params_ready hook makes the next forward pass wait, before each half
 * layer, for the buckets it reads (and its bf16 copy of the weights is remade range by
 * range as they arrive, wte's last), as the backward pass releases the gradient buckets
 * layer by layer; its token_rows hook gives the lookup the fetched rows. Whatever else
 * reads the whole model before the next pass (evaluation, a checkpoint, the result file)
 * calls gradsync_gather_wait() first. The gather's bytes land where the forward pass
 * has not yet read, and the progress thread's collectives are on its own communicator:
 * the main thread's on MPI_COMM_WORLD meanwhile (the step's agreements) never meet
 * them. --bucket-mb 0, or no MPI_THREAD_MULTIPLE, runs the same buckets'
 * reduce-scatters after the backward pass and their blocking MPI_Allgatherv in
 * gradsync_gather(), the reference: both give the same bits.
 *
 * --grad-reduce bf16 halves the bytes on the wire: a bucket is rounded to bf16
 * (kernels.h's bf16_pack) into a buffer of half its size when it starts, reduced in
 * bf16 by a user-defined MPI operation that adds each pair in fp32 and rounds the sum
 * once, and widened back into the fp32 gradients when it completes; wte's token rows
 * go in bf16 as well (rowsum.h). On one rank the gradients are rounded alike (one
 * blocking bucket, no communication), so that P = 1 and P > 1 are the same arithmetic. */
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
#define GRADSYNC_GATHER_AHEAD 4 /* sharded: the parameters' gather buckets in flight at once */

/* Collective: every rank creates it alike (its buckets; sharded: its communicator).
 * NULL on one rank in fp32: there is nothing to do. */
GradSync *gradsync_create(struct GPT *m, size_t bucket_bytes, int sharded, GradReduce wire);
void gradsync_free(GradSync *g);
/* The wire buffer gradsync_create allocates for a model of n_params on `ranks` ranks:
 * with --grad-reduce bf16 2 bytes a parameter (on one rank too), in fp32 none (the
 * buckets go in place). MPI's own temporaries (a copy of each collective's buffer, at
 * most GRADSYNC_PIECE_MB) are not ours to count: gpt plan adds them (run/plan.h). */
size_t gradsync_wire_bytes(size_t n_params, int ranks, GradReduce wire);
void gradsync_arm(GradSync *g);
/* Collective: waits for every bucket of the armed pass, first starting those the pass
 * did not (all of them on a rank that armed but ran no backward pass); returns the
 * seconds waited. */
double gradsync_finish(GradSync *g);
/* After gradsync_finish: the squared L2 norm of the summed gradients (collective when
 * sharded: the sum of the shards' squared norms). */
double gradsync_norm_sq(GradSync *g);
/* Collective after a sharded update: every shard's parameters to every rank (MPI_Allgatherv
 * in place); nothing when not sharded. With buckets and a progress thread it only starts
 * the gather and sets the model's params_ready hook: the next forward pass waits for
 * each layer, the watchdog naming the wait "the parameters' allgather". next_tokens (n,
 * this rank's; every rank gives them or NULL alike): the tokens of the next forward
 * pass's lookup, whose wte rows are fetched first (rowsum_fetch) for the model's
 * token_rows hook, and wte is gathered last; a pass with other tokens waits for all of
 * wte at its lookup. NULL: wte first. */
void gradsync_gather(GradSync *g, const int *next_tokens, int n);
/* Waits until the parameters of the last gradsync_gather are all in (at once when it was
 * blocking, none was started, or g is NULL): before anything but a forward pass reads
 * m->params. Not collective itself; the progress threads of every rank move the gather.
 * gradsync_free ends a gather in flight too. */
void gradsync_gather_wait(GradSync *g);
int gradsync_buckets(const GradSync *g);

#endif
