/* checkpoint_job.c: writing one checkpoint, on the calling thread or the background
 * writer's (see checkpoint_job.h, checkpoint.h and docs/formats.md).
 *
 * Parallel HDF5 (1.10) cannot write variable-length data, which the tokenizer and the
 * string attributes are, so the collective phase writes only the tensors; rank 0 then
 * reopens the file with the serial driver for the rest. Every collective HDF5 call is
 * made by every rank whatever happened before it, and errors are agreed on afterwards
 * (dist_agree), so a failure on one rank can never leave the others waiting.
 *
 * A full disk is the exception, so it must never meet HDF5 (h5_reserve in h5util.h
 * says why): rank 0 reserves the space the whole file needs before each phase, and the
 * ranks agree on that before any HDF5 file is opened or written. */
#include "checkpoint_job.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/atomic.h"
#include "base/util.h"
#include "base/version.h"
#include "checkpoint_parts.h"
#include "dist/dist.h"
#include "files/formats.h"
#include "files/h5util.h"
#include "files/model_file.h"
#include "files/run_layout.h"

/* ---- rank 0's serial phase ---- */

static int write_extras(hid_t f, const CkptExtra *extra, int n_extra) {
    for (int e = 0; e < n_extra; e++) {
        const CkptExtra *x = &extra[e];
        char where[CKPT_PARTS][128];
        ckpt_extra_groups(x, where);
        const float *data[CKPT_PARTS] = {x->params, x->m, x->v};
        for (int k = 0; k < CKPT_PARTS; k++)
            if (model_tensors_write(f, where[k], x->tensors, x->n_tensors, data[k])) return -1;
    }
    return 0;
}

/* Rank 0, serial driver: attributes, the model configuration, extras and the tokenizer. */
static int write_metadata(const char *tmp, const GPT *m, const CkptState *s, const Tokenizer *tok,
                          const CkptExtra *extra, int n_extra) {
    hid_t f = H5Fopen(tmp, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return -1;
    char when[32];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    hid_t g = H5Lexists(f, "model", H5P_DEFAULT) > 0 ? H5Gopen2(f, "model", H5P_DEFAULT)
                                                       : H5Gcreate2(f, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = g < 0 || model_config_write_h5(g, &m->cfg) || h5_write_attr_string(f, "format", CKPT_FORMAT) ||
             h5_write_attr_int(f, "format_version", CKPT_FORMAT_VERSION) ||
             h5_write_attr_string(f, "tool_version", GPT_VERSION) ||
             h5_write_attr_i64(f, "step", s->step) || h5_write_attr_i64(f, "optim_step", s->optim_step) ||
             h5_write_attr_int(f, "bad_steps", s->bad_steps) || h5_write_attr_i64(f, "samples", s->samples) ||
             h5_write_attr_i64(f, "tokens", s->tokens) || h5_write_attr_i64(f, "seed", (int64_t)s->seed) ||
             h5_write_attr_i64(f, "global_batch", s->global_batch) || h5_write_attr_int(f, "ranks", s->ranks) ||
             h5_write_attr_i64(f, "corpus_fingerprint", (int64_t)s->corpus_fingerprint) ||
             h5_write_attr_string(f, "corpus", s->corpus) || h5_write_attr_string(f, "time", when) ||
             h5_write_attr_string(f, "config", s->config ? s->config : "{}") || write_extras(f, extra, n_extra) ||
             tokenizer_write_h5(tok, f);
    if (g >= 0) H5Gclose(g);
    if (H5Fclose(f) < 0) rc = -1;
    return rc ? -1 : 0;
}

/* ---- the disk space ---- */

/* Rank 0: an upper bound on the size of the checkpoint file. */
static uint64_t ckpt_bytes(const GPT *m, const AdamW *o, const CkptState *s, const Tokenizer *tok,
                           const CkptExtra *extra, int n_extra) {
    uint64_t b = H5_FILE_OVERHEAD + 2 * (s->config ? strlen(s->config) : 0) + tokenizer_h5_bytes(tok);
    if (o) b += CKPT_PARTS * model_tensors_bytes(m->tensors, m->n_tensors);
    for (int e = 0; e < n_extra; e++) b += 3 * model_tensors_bytes(extra[e].tensors, extra[e].n_tensors);
    return b;
}

/* ---- the job ---- */

int ckpt_job_prepare(CkptJob *j, const AdamW *o, const CkptExtra *extra) {
    h5_quiet();
    const GPT *m = j->m;
    int rank = dist_rank(), rc = 0;
    if (atomic_tmp_path(j->path, j->tmp, sizeof j->tmp)) {
        j->tmp[0] = '\0'; /* nothing to remove */
        rc = -1;
    }
    /* a diverged state is not saved over the good ones (every rank holds the same values) */
    if (!rc && o) rc = model_tensors_check_finite(j->path, "/model", m->tensors, m->n_tensors, m->params, 1);
    for (int e = 0; !rc && e < j->n_extra; e++)
        rc = model_tensors_check_finite(j->path, extra[e].group, extra[e].tensors, extra[e].n_tensors, extra[e].params, 1);
    if (dist_agree(rc)) return -1;
    j->need = rank == 0 ? ckpt_bytes(m, o, &j->state, j->tok, extra, j->n_extra) : 0;
    /* first while no HDF5 file is open: on a disk full to the last block, closing one fails */
    return dist_agree(rank == 0 ? h5_reserve(j->path, j->tmp, j->need, "the checkpoint") : 0);
}

int ckpt_job_create(CkptJob *j) {
    const GPT *m = j->m;
    int rank = dist_rank(), rc = 0;
    h5_lock(); /* every HDF5 call, property lists too */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, j->comm, MPI_INFO_NULL);
    j->file = h5_fcreate(j->tmp, fapl); /* the truncation frees the reservation */
    H5Pclose(fapl);
    h5_unlock();
    if (dist_agree_on(j->comm, j->file < 0 ? gpt_error("%s: cannot create (check that the directory exists and is "
                                                        "writable)", j->tmp) : 0))
        return -1;
    fault_point("ckpt-create", j->state.step, rank);
    rc = rank == 0 ? h5_reserve(j->path, j->tmp, j->need, "the checkpoint") : 0;
    h5_lock();
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    h5_unlock();
    j->dsets = xmalloc(sizeof(hid_t) * CKPT_PARTS * (size_t)m->n_tensors);
    for (int p = 0; p < CKPT_PARTS; p++) { /* every rank creates every dataset, whatever happened: collective */
        h5_lock();
        hid_t g = j->tensors ? H5Gcreate2(j->file, ckpt_part_group(p), lcpl, H5P_DEFAULT, H5P_DEFAULT) : -1;
        h5_unlock();
        if (j->tensors && g < 0) rc = -1;
        for (int i = 0; i < m->n_tensors; i++) {
            h5_lock();
            if ((j->dsets[p * m->n_tensors + i] = g >= 0 ? model_tensor_create(g, &m->tensors[i]) : -1) < 0 && g >= 0)
                rc = -1;
            h5_unlock();
        }
        h5_lock();
        if (g >= 0) H5Gclose(g);
        h5_unlock();
    }
    h5_lock();
    H5Pclose(lcpl);
    h5_unlock();
    return dist_agree_on(j->comm, rc ? gpt_error("%s: creating the datasets failed", j->tmp) : 0);
}

static void job_close(CkptJob *j) {
    for (int k = 0; j->dsets && k < CKPT_PARTS * j->m->n_tensors; k++)
        if (j->dsets[k] >= 0) H5Dclose(j->dsets[k]);
    free(j->dsets);
    j->dsets = NULL;
    if (j->file >= 0) H5Fclose(j->file);
    j->file = -1;
}

int ckpt_job_write(CkptJob *j) {
    const GPT *m = j->m;
    int rank = dist_rank(), rc = 0;
    size_t most = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (model_tensor_chunk_bytes(&m->tensors[i]) > most) most = model_tensor_chunk_bytes(&m->tensors[i]);
    void *buf = xmalloc(most + 4);
    for (int p = 0; j->tensors && p < CKPT_PARTS; p++) {
        for (int i = 0; !rc && i < m->n_tensors; i++) {
            const GPTTensor *t = &m->tensors[i];
            int lo = j->sh.lo[i], hi = j->sh.hi[i];
            const float *rows = lo < hi ? j->src[p] + ckpt_rows_index(m, &j->sh, i, j->packed[p]) : NULL;
            if (lo < hi && model_tensor_write_chunks(j->dsets[p * m->n_tensors + i], t, rows, lo, hi, buf)) rc = -1;
        }
        if (p == 0) fault_point("ckpt-write", j->state.step, rank);
    }
    free(buf);
    h5_lock();
    if (j->file >= 0 && H5Fflush(j->file, H5F_SCOPE_GLOBAL) < 0) rc = -1; /* MPI_File_sync: every rank's share to disk */
    job_close(j);
    h5_unlock();
    rc = dist_agree_on(j->comm, rc ? gpt_error("%s: writing the tensors failed", j->tmp) : 0);
    if (!rc) fault_point("ckpt-close", j->state.step, rank);
    if (!rc && rank == 0) {
        h5_lock();
        rc = h5_reserve(j->path, j->tmp, j->need, "the checkpoint") ? -1 /* again: closing the parallel file truncated it */
             : write_metadata(j->tmp, m, &j->state, j->tok, j->extra, j->n_extra)
                 ? gpt_error("%s: writing the attributes and tokenizer failed", j->tmp)
                 : 0;
        h5_unlock();
        /* flushed before the hook, so that write_s counts it; atomic_publish's flush is then free */
        if (!rc) rc = fsync_path(j->tmp, 0);
        if (!rc && j->hook) {
            double write_s = now_seconds() - j->t_start;
            j->hook(j->hook_ctx, j->blocked_s < 0 ? write_s : j->blocked_s, write_s);
        }
        if (!rc) rc = atomic_publish(j->tmp, j->path);
    }
    rc = dist_agree_on(j->comm, rc);
    if (rc && rank == 0) remove(j->tmp);
    if (rc || j->keep < 0) return rc;
    fault_point("ckpt-rename", j->state.step, rank);
    if (rank == 0) rc = run_point_latest(j->run_dir, j->state.step);
    fault_point("ckpt-latest", j->state.step, rank);
    if (rank == 0 && !rc && j->keep > 0) run_prune_checkpoints(j->cmd, j->run_dir, j->keep, j->state.step);
    return dist_agree_on(j->comm, rc);
}

void ckpt_job_init(CkptJob *j, MPI_Comm comm, const char *path, const GPT *m, const AdamW *o, const CkptState *s,
                     const Tokenizer *tok, const CkptExtra *extra, int n_extra) {
    memset(j, 0, sizeof *j);
    snprintf(j->path, sizeof j->path, "%s", path);
    j->keep = -1, j->comm = comm, j->m = m, j->tensors = o != NULL, j->file = -1, j->tok = tok;
    j->state = *s;
    j->n_extra = n_extra < CKPT_MAX_EXTRA ? n_extra : CKPT_MAX_EXTRA;
    if (j->n_extra > 0) memcpy(j->extra, extra, sizeof *extra * (size_t)j->n_extra);
    j->sh = shard_of(m, dist_rank(), dist_size());
    for (int p = 0; p < CKPT_PARTS && o; p++) j->src[p] = ckpt_part_data(m, o, p), j->packed[p] = !ckpt_part_whole(m, o, p);
}

void ckpt_job_free(CkptJob *j) {
    job_close(j);
    shard_free(&j->sh);
}

void ckpt_job_abort(CkptJob *j) {
    h5_lock();
    job_close(j);
    h5_unlock();
    if (dist_rank() == 0 && j->tmp[0]) remove(j->tmp);
}

int ckpt_write(const char *path, const GPT *m, const AdamW *o, const CkptState *s, const Tokenizer *tok,
               const CkptExtra *extra, int n_extra) {
    CkptJob j;
    ckpt_job_init(&j, MPI_COMM_WORLD, path, m, o, s, tok, extra, n_extra);
    int rc = ckpt_job_prepare(&j, o, extra) || ckpt_job_create(&j);
    if (rc) ckpt_job_abort(&j);
    else rc = ckpt_job_write(&j);
    ckpt_job_free(&j);
    return rc ? -1 : 0;
}
