/* checkpoint.h: training checkpoints: the whole state of a run in one HDF5 file, written
 * and read by all ranks together, and the set of checkpoints in a run directory.
 *
 * A checkpoint (docs/formats.md) holds /model exactly as a model file does (so every
 * command that reads a model reads a checkpoint), /optimizer/m and /optimizer/v in the
 * same layout, /tokenizer, and the training state as root attributes. The tensors are
 * written with parallel HDF5: each tensor is chunked by whole rows, and rank r writes
 * its shard (shard.h: the chunks that start in its part of each segment of the flat
 * buffer: consecutive rows of each tensor), so every rank writes a disjoint share of
 * whole chunks and no chunk is shared. Under --shard-optimizer a rank holds the moments
 * of exactly that shard, so it writes what it owns. Loading reads the same partition for
 * the current number of ranks (which need not be the saving one) and broadcasts each
 * share of what every rank holds whole (the parameters; the moments unless sharded), so
 * every byte is read from disk once and a checkpoint of either mode resumes in either;
 * every chunk's Fletcher32 checksum is verified as it is read.
 *
 * Atomicity: the data goes to PATH.tmp; rank 0 then adds the attributes and the
 * tokenizer and publishes the file (atomic.h: fsync, rename, fsync of the directory).
 * In a run directory (run_layout.h), the pointer file `latest` is replaced (atomic.h)
 * only after that, and the oldest checkpoints beyond the kept number are removed only
 * after that, so a crash at any moment leaves every earlier checkpoint whole.
 *
 * Sources: checkpoint_read.c (reading, --resume), checkpoint_job.c (writing one file),
 * checkpoint_writer.c (ckpt_save, in the background or not: checkpoint_writer.h).
 *
 * Disk space: before creating PATH.tmp, and again before rank 0's serial phase, rank 0
 * reserves (fallocate) an upper bound of the file's size, and the ranks agree on it, so
 * a full disk is one error on every rank naming the file and the space needed, before
 * any HDF5 write (a write failing inside parallel HDF5 could only hang or crash). */
#ifndef GPT_CHECKPOINT_H
#define GPT_CHECKPOINT_H

#include <stdint.h>

#include "files/tokenizer_file.h"
#include "model/model.h"
#include "model/optim.h"

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

/* Not collective, for gpt inspect: both moments of a checkpoint of m's configuration into
 * m_buf and v_buf (n_params floats each), every checksum verified. */
int ckpt_read_moments(const char *path, const GPT *m, float *m_buf, float *v_buf);
/* 1 if the checkpoint's /model group holds no tensors (a LoRA fine-tuning's: the frozen
 * base is not copied), 0 if it holds some or is absent, -1 if the file is unreadable. */
int ckpt_model_is_empty(const char *path);
/* Reads every float tensor (1-D or 2-D) of the group `where` whole, so that every checksum
 * is verified, and hands each to each(ctx, name, values, count). 0 if the group is
 * absent, 1 with *n_tensors set if it was read, -1 with gpt_error() naming the tensor. */
int ckpt_each_tensor(const char *path, const char *where, void (*each)(void *ctx, const char *name, const float *v,
                                                                        size_t n),
                     void *ctx, long *n_tensors);

/* Collective: --resume RESUME for run_dir: RESUME a checkpoint's path, or "auto" for the
 * run directory's checkpoints, the one `latest` names first, then newest first
 * (run_resume_order). load(path, ctx) restores from one and returns 0, or -1 when it
 * belongs to another run (no other is tried) or -2 when it is unreadable or broken (auto
 * then tries the next one, saying so as `gpt CMD`). `from`
 * receives the path restored from, "" when auto found none (the run starts afresh). */
int ckpt_resume(const char *run_dir, const char *resume, const char *cmd, int (*load)(const char *path, void *ctx),
                void *ctx, char *from, size_t size);

#endif
