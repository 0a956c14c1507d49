/* checkpoint.h: training checkpoints: the whole state of a run in one HDF5 file, written
 * and read by all ranks together, and the set of checkpoints in a run directory.
 *
 * A checkpoint (docs/formats.md) holds /model exactly as a model file does (so every
 * command that reads a model reads a checkpoint), /optimizer/m and /optimizer/v in the
 * same layout, /tokenizer, and the training state as root attributes. The tensors are
 * written with parallel HDF5: each tensor is chunked by whole rows, and rank r writes
 * its shard (shard.h: the chunks that start in the r-th of P equal parts of the flat
 * buffer), so every rank writes a disjoint, contiguous share of the bytes and no chunk
 * is shared. Under --shard-optimizer a rank holds the moments of exactly that shard, so
 * it writes what it owns. Loading reads the same partition for the current number of
 * ranks (which need not be the saving one) and broadcasts each share of what every rank
 * holds whole (the parameters; the moments unless sharded), so every byte is read from
 * disk once and a checkpoint of either mode resumes in either; every chunk's Fletcher32
 * checksum is verified as it is read.
 *
 * Atomicity: the data goes to PATH.tmp; rank 0 then adds the attributes and the
 * tokenizer, flushes the file to disk and renames it into place. In a run directory,
 * the pointer file `latest` is replaced (write, fsync, rename) only after that, and
 * the oldest checkpoints beyond the kept number are removed only after that, so a
 * crash at any moment leaves every earlier checkpoint whole.
 *
 * Disk space: before creating PATH.tmp, and again before rank 0's serial phase, rank 0
 * reserves (fallocate) an upper bound of the file's size, and the ranks agree on it, so
 * a full disk is one error on every rank naming the file and the space needed, before
 * any HDF5 write (a write failing inside parallel HDF5 could only hang or crash). */
#ifndef GPT_CHECKPOINT_H
#define GPT_CHECKPOINT_H

#include <stdint.h>

#include "model/model.h"
#include "model/optim.h"
#include "files/tokenizer_file.h"

/* What besides the tensors a run needs to continue exactly. All randomness of training
 * (the sample order and the dropout masks) is a pure function of (seed, global sample
 * index), so seed and samples are the complete random state. */
typedef struct {
    long step;               /* training steps done */
    long optim_step;         /* AdamW updates taken (a non-finite step takes none) */
    int bad_steps;           /* non-finite steps in a row at the save */
    int64_t samples;         /* global samples consumed: the data position */
    int64_t tokens;          /* tokens trained on */
    uint64_t seed;
    int64_t global_batch;    /* windows a step */
    int ranks;               /* ranks at the save */
    uint64_t corpus_fingerprint;
    char corpus[1024];       /* the corpus's path at the save */
    char time[32];           /* UTC, ISO 8601, of the write (set by ckpt_write) */
    char *config;            /* the run's resolved configuration as JSON (owned) */
} CkptState;

void ckpt_state_free(CkptState *s);

/* Tensors trained besides the model (a fine-tuning head, LoRA adapters): small, so rank 0
 * writes them whole as GROUP/<name>, their moments as /optimizer/m/GROUP/<name> and
 * /optimizer/v/GROUP/<name>, and every rank reads them whole. */
typedef struct {
    const char *group;        /* "head", "lora" */
    int n_tensors;
    const GPTTensor *tensors;
    float *params, *m, *v;    /* the tensors' values and AdamW moments, at their offsets */
} CkptExtra;
#define CKPT_MAX_EXTRA 4

/* Collective. Writes the checkpoint to path as described above, with n_extra extra tensor
 * sets. opt holds the moments of all parameters, or of this rank's shard (shard.h,
 * shard_optimizer_create). opt NULL: the model is frozen (LoRA), and only its
 * configuration is written. tok
 * is needed on rank 0 only. -1 on every rank with one message if any rank failed, or if
 * a parameter is not finite (a diverged run saves nothing); PATH.tmp is then removed. */
int ckpt_write(const char *path, const GPT *m, const AdamW *opt, const CkptState *state, const Tokenizer *tok,
               const CkptExtra *extra, int n_extra);

/* Not collective: the model configuration and training state of a checkpoint file. */
int ckpt_read_header(const char *path, GPTConfig *cfg, CkptState *state);

/* Collective: the parameters into m and both moments into opt (created for the file's
 * configuration, whole or for this rank's shard), every checksum verified. -1 on every rank naming the file and the
 * tensor on a mismatch, a corrupted chunk or a value that is not finite. */
int ckpt_read_tensors(const char *path, GPT *m, AdamW *opt);
/* Not collective: the extra tensor sets and their moments, each checked against its table
 * and for non-finite values. */
int ckpt_read_extras(const char *path, const CkptExtra *extra, int n_extra);

/* RUN_DIR/ckpt_<step>.h5 */
void ckpt_path(char *buf, size_t size, const char *run_dir, long step);

/* --async-ckpt: a checkpoint written by a thread of each rank while training goes on.
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

/* Collective: ckpt_write to RUN_DIR/ckpt_<step>.h5, then RUN_DIR/latest, then removal
 * of all but the `keep` newest checkpoints (keep 0: none removed; a failure to remove is
 * a warning of `gpt CMD`). w NULL or not in the background: now, returning when all of
 * it is done. In the background: returning once the state is staged, after waiting for
 * the write before (whose failure is then this one's); the result comes from
 * ckpt_writer_poll/_wait. */
int ckpt_save(CkptWriter *w, const char *cmd, const char *run_dir, int keep, const GPT *m, const AdamW *o,
              const CkptState *s, const Tokenizer *tok, const CkptExtra *extra, int n_extra);

/* Collective: --resume RESUME for run_dir: RESUME a checkpoint's path, or "auto" for the
 * run directory's checkpoints newest first. load(path, ctx) restores from one and returns
 * 0, or -1 when it belongs to another run (no other is tried) or -2 when it is unreadable
 * or broken (auto then tries the next older one, saying so as `gpt CMD`). `from`
 * receives the path restored from, "" when auto found none (the run starts afresh). */
int ckpt_resume(const char *run_dir, const char *resume, const char *cmd, int (*load)(const char *path, void *ctx),
                void *ctx, char *from, size_t size);

/* Not collective: the steps of the checkpoints in run_dir (files ckpt_<step>.h5), newest
 * first, in a new array; returns how many (0 if none or no such directory). */
int ckpt_list(const char *run_dir, long **steps);

#endif
