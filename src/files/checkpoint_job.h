/* checkpoint_job.h (private to checkpoint_*.c): one checkpoint being written.
 *
 * A job is prepared on the main thread (the state's checks and the disk's reservation,
 * before anything of the file exists), then created (the file and its datasets) and
 * written (each rank its shard's chunks; rank 0 the attributes and tokenizer, the
 * commit hook, the rename into place, then `latest` and the pruning) from src, on the
 * main thread (ckpt_write, a synchronous ckpt_save) or the background writer's
 * (checkpoint_writer.c), whose communicator is then the job's. Every step is collective
 * on that communicator and returns -1 on every rank with one message; a failed prepare
 * or create is followed by ckpt_job_abort, and every job ends with ckpt_job_free. HDF5
 * 1.10 is not thread-safe: every HDF5 call of a job holds h5_lock (h5util.h). */
#ifndef GPT_CHECKPOINT_JOB_H
#define GPT_CHECKPOINT_JOB_H

#include <hdf5.h>
#include <limits.h>
#include <mpi.h>

#include "checkpoint_parts.h"
#include "files/checkpoint.h"
#include "files/checkpoint_writer.h"
#include "model/shard.h"

typedef struct {
    char path[PATH_MAX], tmp[PATH_MAX + 4], run_dir[PATH_MAX - 64], cmd[32];
    int keep;                    /* ckpt_save's; -1: a plain ckpt_write (no latest, no pruning) */
    uint64_t need;               /* rank 0: the space reserved */
    MPI_Comm comm;
    const GPT *m;                /* its tensor table and configuration, never its values */
    int tensors;                 /* 0: a frozen model, nothing of it written */
    hid_t file, *dsets;          /* (CKPT_PARTS * n_tensors) */
    Shard sh;
    const float *src[CKPT_PARTS]; /* this rank's rows of each part: the whole buffer, or packed */
    int packed[CKPT_PARTS];       /* (checkpoint_parts.h's ckpt_rows_index) */
    CkptState state;             /* its config owned by the background writer's copy */
    const Tokenizer *tok;        /* rank 0 */
    CkptExtra extra[CKPT_MAX_EXTRA];
    int n_extra;
    double t_start, blocked_s;   /* ckpt_save's start; how long it kept the caller (< 0: all of it) */
    CkptCommitHook hook;         /* rank 0, before the rename */
    void *hook_ctx;
} CkptJob;

/* What the checkpoint at path is of, on communicator comm: src points at the live
 * buffers of m and o (the background writer then points it at its staging copy). */
void ckpt_job_init(CkptJob *j, MPI_Comm comm, const char *path, const GPT *m, const AdamW *o, const CkptState *s,
                   const Tokenizer *tok, const CkptExtra *extra, int n_extra);
/* Collective (the main thread): the state's checks (a non-finite parameter saves
 * nothing) and rank 0's reservation of the whole file's size. */
int ckpt_job_prepare(CkptJob *j, const AdamW *o, const CkptExtra *extra);
/* Collective on j->comm: PATH.tmp created with every dataset, no data yet. It is slow:
 * parallel HDF5 1.10.8 writes every chunk's checksummed fill value when it creates a
 * dataset (whatever the fill time; ROMIO even reads it back), so in the background it
 * runs on the writer's thread, the lock taken a dataset at a time. */
int ckpt_job_create(CkptJob *j);
/* Collective on j->comm: this rank's chunks from src, the file closed, rank 0's serial
 * phase, the hook and the rename (atomic_publish), then (keep >= 0) latest and the
 * pruning. On failure PATH.tmp is removed. */
int ckpt_job_write(CkptJob *j);
/* After ckpt_job_prepare or ckpt_job_create failed (every rank, either thread): what
 * was opened is closed and nothing of the file is left. */
void ckpt_job_abort(CkptJob *j);
void ckpt_job_free(CkptJob *j);

#endif
