/* checkpoint_writer.h: saving a run's checkpoint into its run directory, now or, under
 * --async-ckpt, by a thread of each rank while training goes on.
 *
 * At the step boundary the ranks check the state, rank 0 reserves the disk, and each
 * copies what it will write (its share of the parameters and of the moments, which
 * under --shard-optimizer are all it holds) into a staging buffer, allocated once. The
 * writer thread then creates the file and its datasets with the others' on a
 * communicator of its own (MPI_THREAD_MULTIPLE; not cheap: parallel HDF5 1.10.8 writes
 * every chunk's fill value at creation), writes its chunks and closes the file, and the
 * commit (rank 0's attributes and tokenizer, the rename, latest, the pruning) follows
 * once every rank's write is complete. HDF5 1.10 is not thread-safe, so both threads'
 * HDF5 calls take h5_lock (h5util.h): the writer's a dataset or a chunk at a time, so a
 * corpus read waits for at most one of those. At most one write is in flight: the next
 * checkpoint, and the end of the run, wait for it. The file is the same as a
 * synchronous checkpoint's, byte for byte in its data. */
#ifndef GPT_CHECKPOINT_WRITER_H
#define GPT_CHECKPOINT_WRITER_H

#include "files/checkpoint.h"

typedef struct CkptWriter CkptWriter;
/* Called on rank 0 once a checkpoint's file is complete on disk and before it is renamed
 * into place (from the writer's thread when in the background), with the seconds the
 * caller of ckpt_save was kept (the wait for the write before, the checks and the
 * staging copy; synchronous: all of it) and those from ckpt_save's start until now.
 * What must be on disk before training can resume from the checkpoint goes here: the
 * checkpointing step's line of metrics.jsonl. */
typedef void (*CkptCommitHook)(void *ctx, double blocked_s, double write_s);
/* Collective (a communicator of its own). background 0: ckpt_save writes at once, still
 * calling the hook (NULL: none). */
CkptWriter *ckpt_writer_create(int background, CkptCommitHook hook, void *ctx);
/* The staging buffer a background writer allocates for a rank whose checkpoint share
 * (shard.h) is `shard` parameters: its parameters, m and v, 12 bytes each (gpt plan's
 * account; the extras of fine-tuning, a head or adapters, are not counted). */
size_t ckpt_writer_stage_bytes(size_t shard);
/* Waits for the write in flight, if any (its result is lost: use ckpt_writer_wait). */
void ckpt_writer_free(CkptWriter *w);
/* Not collective: 0 when no write is in flight or it is still running, 1 when it has
 * committed, -1 when it failed (every rank's writer agreed on that). */
int ckpt_writer_poll(CkptWriter *w);
/* Waits for the write in flight (nothing if none, or w NULL): 0 when it committed, with
 * the seconds from its start to the commit in *write_s; -1 with its message. Every
 * rank's write ends together (their last step is an agreement), so the ranks return the
 * same. */
int ckpt_writer_wait(CkptWriter *w, double *write_s);

/* Collective: ckpt_write to RUN_DIR/ckpt_<step>.h5 (run_layout.h), then RUN_DIR/latest, then removal
 * of all but the `keep` newest checkpoints, never the one just written (keep 0: none
 * removed; a failure to remove is a warning of `gpt CMD`). w NULL or not in the background: now, returning when all of
 * it is done. In the background: returning once the state is staged, after waiting for
 * the write before (whose failure is then this one's); the result comes from
 * ckpt_writer_poll/_wait. */
int ckpt_save(CkptWriter *w, const char *cmd, const char *run_dir, int keep, const GPT *m, const AdamW *o,
              const CkptState *s, const Tokenizer *tok, const CkptExtra *extra, int n_extra);

#endif
