/* checkpoint.c: collective HDF5 checkpoints and the run directory's set of them (see
 * checkpoint.h and docs/formats.md).
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
#include "files/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dist/dist.h"
#include "files/h5util.h"
#include "files/model_file.h"
#include "model/shard.h"
#include "base/util.h"
#include "base/version.h"
#include "files/formats.h"

#define BCAST_FLOATS ((size_t)1 << 28) /* MPI counts are ints */

enum { N_PARTS = 3 };
static const char *const part_group[N_PARTS] = {"/model", "/optimizer/m", "/optimizer/v"};

/* Part p's buffer and the flat index of its first element: the parameters from 0, the
 * moments from the optimizer's offset (only its shard under --shard-optimizer). */
static float *part_data(const GPT *m, const AdamW *o, int part, size_t *first) {
    *first = part == 0 ? 0 : o->offset;
    return part == 0 ? m->params : part == 1 ? o->m : o->v;
}

/* Whether part p's buffer holds every element (else only this rank's shard). */
static int part_whole(const GPT *m, const AdamW *o, int part) {
    return part == 0 || (o->offset == 0 && o->n == m->n_params);
}

static size_t row_floats(const GPTTensor *t) { return t->ndim == 2 ? (size_t)t->shape[1] : 1; }

/* Rows [lo, hi) of tensor t in part p's buffer, which holds them (this rank's share);
 * for no rows, any valid pointer. */
static float *part_rows(const GPT *m, const AdamW *o, int part, const GPTTensor *t, int lo, int hi) {
    size_t first;
    float *data = part_data(m, o, part, &first);
    return lo < hi ? data + (t->offset + (size_t)lo * row_floats(t) - first) : data;
}

void ckpt_state_free(CkptState *s) {
    free(s->config);
    s->config = NULL;
}

/* ---- writing ---- */

static int fsync_path(const char *path, int directory) {
    int fd = open(path, O_RDONLY | (directory ? O_DIRECTORY : 0));
    if (fd < 0) return gpt_error("%s: cannot open to flush to disk: %s", path, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    return rc ? gpt_error("%s: cannot flush to disk: %s", path, strerror(errno)) : 0;
}

static void dir_of(const char *path, char *dir, size_t size) {
    snprintf(dir, size, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, size, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
}

/* Where a set of extra tensors goes: GROUP, /optimizer/m/GROUP, /optimizer/v/GROUP. */
static void extra_groups(const CkptExtra *x, char where[3][128]) {
    snprintf(where[0], sizeof where[0], "/%s", x->group);
    snprintf(where[1], sizeof where[1], "/optimizer/m/%s", x->group);
    snprintf(where[2], sizeof where[2], "/optimizer/v/%s", x->group);
}

static int write_extras(hid_t f, const CkptExtra *extra, int n_extra) {
    for (int e = 0; e < n_extra; e++) {
        const CkptExtra *x = &extra[e];
        char where[3][128];
        extra_groups(x, where);
        const float *data[3] = {x->params, x->m, x->v};
        for (int k = 0; k < 3; k++)
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
    if (o) b += N_PARTS * model_tensors_bytes(m->tensors, m->n_tensors);
    for (int e = 0; e < n_extra; e++) b += 3 * model_tensors_bytes(extra[e].tensors, extra[e].n_tensors);
    return b;
}

/* ---- reading ---- */

static hid_t open_checkpoint(const char *path) {
    hid_t f = h5_open_read(path);
    if (f < 0) return -1;
    if (h5_expect_format(path, f, CKPT_FORMAT, "a checkpoint (made by gpt train or gpt finetune)")) {
        H5Fclose(f);
        return -1;
    }
    return f;
}

int ckpt_read_header(const char *path, GPTConfig *cfg, CkptState *s) {
    memset(s, 0, sizeof *s);
    hid_t f = open_checkpoint(path);
    if (f < 0) return -1;
    int64_t step = 0, optim_step = 0, seed = 0, fp = 0;
    char config[1 << 16];
    int version = 0;
    int rc = h5_read_attr_int(path, "", f, "format_version", &version) ||
             h5_read_attr_i64(path, "", f, "step", &step) || h5_read_attr_i64(path, "", f, "optim_step", &optim_step) ||
             h5_read_attr_int(path, "", f, "bad_steps", &s->bad_steps) ||
             h5_read_attr_i64(path, "", f, "samples", &s->samples) ||
             h5_read_attr_i64(path, "", f, "tokens", &s->tokens) || h5_read_attr_i64(path, "", f, "seed", &seed) ||
             h5_read_attr_i64(path, "", f, "global_batch", &s->global_batch) ||
             h5_read_attr_int(path, "", f, "ranks", &s->ranks) ||
             h5_read_attr_i64(path, "", f, "corpus_fingerprint", &fp) ||
             h5_read_attr_string(path, "", f, "corpus", s->corpus, sizeof s->corpus) ||
             h5_read_attr_string(path, "", f, "time", s->time, sizeof s->time) ||
             h5_read_attr_string(path, "", f, "config", config, sizeof config);
    H5Fclose(f);
    if (rc) return -1;
    if (version != CKPT_FORMAT_VERSION)
        return gpt_error("%s: checkpoint format version %d, this tool reads version %d", path, version,
                         CKPT_FORMAT_VERSION);
    if (step < 0 || optim_step < 0 || optim_step > step || s->global_batch < 1 || s->samples != step * s->global_batch)
        return gpt_error("%s: inconsistent training state (step %lld, optim_step %lld, samples %lld, global_batch "
                         "%lld)", path, (long long)step, (long long)optim_step, (long long)s->samples,
                         (long long)s->global_batch);
    s->step = (long)step, s->optim_step = (long)optim_step;
    s->seed = (uint64_t)seed, s->corpus_fingerprint = (uint64_t)fp;
    s->config = xstrdup(config);
    return model_file_read_config(path, cfg);
}

int ckpt_read_tensors(const char *path, GPT *m, AdamW *o) {
    h5_quiet();
    int rank = dist_rank(), P = dist_size();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (dist_agree(f < 0 ? gpt_error("%s: cannot open as HDF5 (truncated or not a checkpoint)", path) : 0)) return -1;
    Shard sh = shard_of(m, rank, P);
    int rc = 0;
    /* independent reads: a checksum failure on one rank must not leave a collective read half done */
    for (int p = 0; !rc && p < N_PARTS; p++) {
        hid_t g = H5Lexists(f, part_group[p] + 1, H5P_DEFAULT) > 0 ? H5Gopen2(f, part_group[p], H5P_DEFAULT) : -1;
        if (g < 0) rc = gpt_error("%s: group %s is missing", path, part_group[p]);
        for (int i = 0; !rc && i < m->n_tensors; i++) {
            const GPTTensor *t = &m->tensors[i];
            float *rows = part_rows(m, o, p, t, sh.lo[i], sh.hi[i]);
            GPTTensor read = *t; /* the rows read, for the check */
            read.offset = 0, read.numel = (size_t)(sh.hi[i] - sh.lo[i]) * row_floats(t);
            rc = model_tensor_read(path, part_group[p], g, t, rows, sh.lo[i], sh.hi[i], H5P_DEFAULT) ||
                 model_tensors_check_finite(path, part_group[p], &read, 1, rows, 0);
        }
        if (g >= 0) H5Gclose(g);
    }
    shard_free(&sh);
    H5Fclose(f);
    if (dist_agree(rc)) return -1;
    /* every rank's share of a whole buffer to every rank (a sharded optimizer keeps its own) */
    for (int r = 0; r < P; r++) {
        Shard s = shard_of(m, r, P);
        for (int p = 0; p < N_PARTS; p++)
            for (size_t at = s.begin; part_whole(m, o, p) && at < s.end; at += BCAST_FLOATS) {
                size_t first, n = s.end - at < BCAST_FLOATS ? s.end - at : BCAST_FLOATS;
                MPI_Bcast(part_data(m, o, p, &first) + at, (int)n, MPI_FLOAT, r, MPI_COMM_WORLD);
            }
        shard_free(&s);
    }
    return 0;
}

int ckpt_read_extras(const char *path, const CkptExtra *extra, int n_extra) {
    h5_quiet();
    hid_t f = h5_open_read(path);
    if (f < 0) return -1;
    int rc = 0;
    for (int e = 0; !rc && e < n_extra; e++) {
        const CkptExtra *x = &extra[e];
        char where[3][128];
        extra_groups(x, where);
        float *data[3] = {x->params, x->m, x->v};
        for (int k = 0; !rc && k < 3; k++)
            rc = model_tensors_read(path, f, where[k], x->tensors, x->n_tensors, data[k]) ||
                 model_tensors_check_finite(path, where[k], x->tensors, x->n_tensors, data[k], 0);
    }
    H5Fclose(f);
    return rc ? -1 : 0;
}

/* ---- the run directory ---- */

void ckpt_path(char *buf, size_t size, const char *run_dir, long step) {
    snprintf(buf, size, "%s/ckpt_%ld.h5", run_dir, step);
}

/* The step of a file name ckpt_<step>.h5, or -1. */
static long step_of(const char *name) {
    if (strncmp(name, "ckpt_", 5) || name[5] < '0' || name[5] > '9') return -1;
    char *end;
    long step = strtol(name + 5, &end, 10);
    return strcmp(end, ".h5") ? -1 : step;
}

static int newest_first(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x < y) - (x > y);
}

int ckpt_list(const char *run_dir, long **steps) {
    *steps = NULL;
    DIR *d = opendir(run_dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        long step = step_of(e->d_name);
        if (step < 0) continue;
        if (n == cap) *steps = xrealloc(*steps, sizeof(long) * (size_t)(cap = cap ? 2 * cap : 16));
        (*steps)[n++] = step;
    }
    closedir(d);
    if (n) qsort(*steps, (size_t)n, sizeof(long), newest_first);
    return n;
}

/* Rank 0: RUN_DIR/latest names the checkpoint of `step`, replaced atomically. */
static int point_latest(const char *run_dir, long step) {
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/latest", run_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return gpt_error("%s: cannot create: %s", tmp, strerror(errno));
    int err = fprintf(f, "ckpt_%ld.h5\n", step) < 0 || fflush(f) || fsync(fileno(f)) ? errno : 0; /* a full disk shows here */
    if (fclose(f) && !err) err = errno;
    if (!err && rename(tmp, path)) err = errno;
    if (err) {
        remove(tmp);
        return gpt_error("%s: cannot write: %s", path, strerror(err));
    }
    return fsync_path(run_dir, 1);
}

/* Rank 0: removes all but the `keep` newest checkpoints; a failure is only a warning. */
static void prune(const char *cmd, const char *run_dir, int keep) {
    long *steps;
    int n = ckpt_list(run_dir, &steps);
    for (int i = keep; i < n; i++) {
        char path[PATH_MAX];
        ckpt_path(path, sizeof path, run_dir, steps[i]);
        if (remove(path)) fprintf(stderr, "gpt %s: warning: cannot remove old checkpoint %s: %s\n", cmd, path, strerror(errno));
    }
    free(steps);
}

int ckpt_resume(const char *run_dir, const char *resume, const char *cmd, int (*load)(const char *path, void *ctx),
                void *ctx, char *from, size_t size) {
    int rank = dist_rank(), is_auto = !strcmp(resume, "auto");
    long *steps = NULL;
    int n = 1;
    if (is_auto) {
        n = rank == 0 ? ckpt_list(run_dir, &steps) : 0;
        MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (rank != 0) steps = xmalloc(sizeof(long) * (size_t)(n ? n : 1));
        if (n) MPI_Bcast(steps, n, MPI_LONG, 0, MPI_COMM_WORLD);
    }
    from[0] = '\0';
    int rc = 0;
    for (int k = 0; k < n; k++) {
        char path[PATH_MAX];
        if (is_auto) ckpt_path(path, sizeof path, run_dir, steps[k]);
        else snprintf(path, sizeof path, "%s", resume);
        if ((rc = load(path, ctx)) == 0) {
            snprintf(from, size, "%s", path);
            break;
        }
        if (rc == -1 || !is_auto) break;
        if (rank == 0) fprintf(stderr, "gpt %s: %s; falling back to an older checkpoint\n", cmd, gpt_last_error());
    }
    free(steps);
    if (rc == -2 && is_auto)
        return gpt_error("%s: none of its %d checkpoint(s) loads (see the messages above)", run_dir, n);
    if (rc) return -1;
    if (!from[0] && rank == 0) printf("no checkpoint in %s yet: starting from step 0\n", run_dir);
    return 0;
}

/* ---- writing a checkpoint: now, or in the background ---- */

/* One checkpoint being written: prepared on the main thread (checks, the reservation,
 * and in the background the staging copy), then created and written from src by
 * job_create and job_write, on the main thread or the writer's. */
typedef struct {
    char path[PATH_MAX], tmp[PATH_MAX + 4], run_dir[PATH_MAX - 64], cmd[32];
    int keep;                    /* ckpt_save's; -1: a plain ckpt_write (no latest, no pruning) */
    uint64_t need;               /* rank 0: the space reserved */
    MPI_Comm comm;
    const GPT *m;                /* its tensor table and configuration, never its values */
    int tensors;                 /* 0: a frozen model, nothing of it written */
    hid_t file, *dsets;          /* (N_PARTS * n_tensors) */
    Shard sh;
    const float *src[N_PARTS];   /* this rank's rows: src[p][i] is flat element first[p] + i */
    size_t first[N_PARTS];
    CkptState state;             /* its config owned */
    const Tokenizer *tok;        /* rank 0 */
    CkptExtra extra[CKPT_MAX_EXTRA];
    int n_extra;
    double t_start, blocked_s;   /* ckpt_save's start; how long it kept the caller (< 0: all of it) */
    CkptCommitHook hook;         /* rank 0, before the rename */
    void *hook_ctx;
} Job;

/* Collective (the main thread): the state's checks and the disk's reservation, before
 * anything of the file exists. -1 on every rank with one message. */
static int job_prepare(Job *j, const AdamW *o, const CkptExtra *extra) {
    h5_quiet();
    const GPT *m = j->m;
    int rank = dist_rank(), rc = 0;
    if (snprintf(j->tmp, sizeof j->tmp, "%s.tmp", j->path) >= (int)sizeof j->tmp) {
        j->tmp[0] = '\0'; /* nothing to remove */
        rc = gpt_error("%s: path too long", j->path);
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

/* Collective on j->comm: j->tmp created with every dataset, no data yet. It is slow:
 * parallel HDF5 1.10.8 writes every chunk's checksummed fill value when it creates a
 * dataset (whatever the fill time; ROMIO even reads it back), so in the background it
 * runs on the writer's thread, the lock taken a dataset at a time. -1 on every rank
 * with one message; what was created is closed by job_close. */
static int job_create(Job *j) {
    const GPT *m = j->m;
    int rank = dist_rank(), rc = 0;
    h5_lock(); /* every HDF5 call, property lists too */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, j->comm, MPI_INFO_NULL);
    j->file = H5Fcreate(j->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl); /* the truncation frees the reservation */
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
    j->dsets = xmalloc(sizeof(hid_t) * N_PARTS * (size_t)m->n_tensors);
    for (int p = 0; p < N_PARTS; p++) { /* every rank creates every dataset, whatever happened: collective */
        h5_lock();
        hid_t g = j->tensors ? H5Gcreate2(j->file, part_group[p], lcpl, H5P_DEFAULT, H5P_DEFAULT) : -1;
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

static void job_close(Job *j) {
    for (int k = 0; j->dsets && k < N_PARTS * j->m->n_tensors; k++)
        if (j->dsets[k] >= 0) H5Dclose(j->dsets[k]);
    free(j->dsets);
    j->dsets = NULL;
    if (j->file >= 0) H5Fclose(j->file);
    j->file = -1;
}

/* Collective on j->comm: this rank's chunks from src, the file closed, rank 0's serial
 * phase and rename, then (keep >= 0) latest and the pruning. -1 on every rank with one
 * message; PATH.tmp is then removed. Every HDF5 call holds h5_lock. */
static int job_write(Job *j) {
    const GPT *m = j->m;
    int rank = dist_rank(), rc = 0;
    size_t most = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (model_tensor_chunk_bytes(&m->tensors[i]) > most) most = model_tensor_chunk_bytes(&m->tensors[i]);
    void *buf = xmalloc(most + 4);
    for (int p = 0; j->tensors && p < N_PARTS; p++) {
        for (int i = 0; !rc && i < m->n_tensors; i++) {
            const GPTTensor *t = &m->tensors[i];
            int lo = j->sh.lo[i], hi = j->sh.hi[i];
            const float *rows = lo < hi ? j->src[p] + (t->offset + (size_t)lo * row_floats(t) - j->first[p]) : NULL;
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
        char dir[PATH_MAX];
        dir_of(j->path, dir, sizeof dir);
        h5_lock();
        rc = h5_reserve(j->path, j->tmp, j->need, "the checkpoint") ? -1 /* again: closing the parallel file truncated it */
             : write_metadata(j->tmp, m, &j->state, j->tok, j->extra, j->n_extra)
                 ? gpt_error("%s: writing the attributes and tokenizer failed", j->tmp)
                 : 0;
        h5_unlock();
        if (!rc) rc = fsync_path(j->tmp, 0);
        if (!rc && j->hook) {
            double write_s = now_seconds() - j->t_start;
            j->hook(j->hook_ctx, j->blocked_s < 0 ? write_s : j->blocked_s, write_s);
        }
        if (!rc)
            rc = rename(j->tmp, j->path) ? gpt_error("%s: cannot rename %s into place: %s", j->path, j->tmp, strerror(errno))
                                         : fsync_path(dir, 1);
    }
    rc = dist_agree_on(j->comm, rc);
    if (rc && rank == 0) remove(j->tmp);
    if (rc || j->keep < 0) return rc;
    fault_point("ckpt-rename", j->state.step, rank);
    if (rank == 0) rc = point_latest(j->run_dir, j->state.step);
    fault_point("ckpt-latest", j->state.step, rank);
    if (rank == 0 && !rc && j->keep > 0) prune(j->cmd, j->run_dir, j->keep);
    return dist_agree_on(j->comm, rc);
}

/* The parts of the job: what the checkpoint is of, before job_prepare. */
static void job_init(Job *j, MPI_Comm comm, const char *path, const GPT *m, const AdamW *o, const CkptState *s,
                     const Tokenizer *tok, const CkptExtra *extra, int n_extra) {
    memset(j, 0, sizeof *j);
    snprintf(j->path, sizeof j->path, "%s", path);
    j->keep = -1, j->comm = comm, j->m = m, j->tensors = o != NULL, j->file = -1, j->tok = tok;
    j->state = *s;
    j->n_extra = n_extra < CKPT_MAX_EXTRA ? n_extra : CKPT_MAX_EXTRA;
    if (j->n_extra > 0) memcpy(j->extra, extra, sizeof *extra * (size_t)j->n_extra);
    j->sh = shard_of(m, dist_rank(), dist_size());
    for (int p = 0; p < N_PARTS && o; p++) j->src[p] = part_data(m, o, p, &j->first[p]);
}

static void job_free(Job *j) {
    job_close(j);
    shard_free(&j->sh);
}

/* After job_prepare or job_create failed (on every rank, on either thread): nothing of
 * the file is left. job_free follows. */
static void job_abort(Job *j) {
    h5_lock();
    job_close(j);
    h5_unlock();
    if (dist_rank() == 0 && j->tmp[0]) remove(j->tmp);
}

int ckpt_write(const char *path, const GPT *m, const AdamW *o, const CkptState *s, const Tokenizer *tok,
               const CkptExtra *extra, int n_extra) {
    Job j;
    job_init(&j, MPI_COMM_WORLD, path, m, o, s, tok, extra, n_extra);
    int rc = job_prepare(&j, o, extra) || job_create(&j);
    if (rc) job_abort(&j);
    else rc = job_write(&j);
    job_free(&j);
    return rc ? -1 : 0;
}

/* ---- the background writer ---- */

struct CkptWriter {
    int background;
    CkptCommitHook hook;
    void *hook_ctx;
    MPI_Comm comm;                 /* the writer thread's collectives, apart from the main thread's */
    float *stage;                  /* this rank's share of the three parts, allocated at the first checkpoint */
    size_t stage_floats;
    float *extra_stage;            /* rank 0: the extras' three parts */
    Job job;
    int busy;                      /* a job was started and not yet waited for */
    pthread_t thread;
    pthread_mutex_t lock;
    int done, rc;                  /* under lock */
    double write_s;                /* from ckpt_save's start to the end of latest and the pruning */
    int threaded;                  /* the job runs on a thread of its own (else it ran at once) */
    char error[1024];
};

CkptWriter *ckpt_writer_create(int background, CkptCommitHook hook, void *ctx) {
    CkptWriter *w = xcalloc(1, sizeof *w);
    w->background = background, w->hook = hook, w->hook_ctx = ctx;
    MPI_Comm_dup(MPI_COMM_WORLD, &w->comm);
    pthread_mutex_init(&w->lock, NULL);
    return w;
}

static void *writer_main(void *arg) {
    CkptWriter *w = arg;
    int rc = job_create(&w->job);
    if (rc) job_abort(&w->job);
    else rc = job_write(&w->job);
    pthread_mutex_lock(&w->lock);
    w->rc = rc, w->done = 1, w->write_s = now_seconds() - w->job.t_start;
    if (rc) snprintf(w->error, sizeof w->error, "%s", gpt_last_error()); /* this thread's */
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int ckpt_writer_poll(CkptWriter *w) {
    if (!w || !w->busy) return 0;
    pthread_mutex_lock(&w->lock);
    int state = w->done ? (w->rc ? -1 : 1) : 0;
    pthread_mutex_unlock(&w->lock);
    return state;
}

int ckpt_writer_wait(CkptWriter *w, double *write_s) {
    if (!w || !w->busy) return 0;
    if (w->threaded) pthread_join(w->thread, NULL);
    w->busy = 0;
    job_free(&w->job);
    ckpt_state_free(&w->job.state);
    if (write_s) *write_s = w->write_s;
    return w->rc ? gpt_error("%s", w->error) : 0;
}

void ckpt_writer_free(CkptWriter *w) {
    if (!w) return;
    ckpt_writer_wait(w, NULL);
    MPI_Comm_free(&w->comm);
    pthread_mutex_destroy(&w->lock);
    free(w->stage);
    free(w->extra_stage);
    free(w);
}

/* The extras' floats (their tensors end to end). */
static size_t extra_floats(const CkptExtra *x) {
    size_t n = 0;
    for (int i = 0; i < x->n_tensors; i++)
        if (x->tensors[i].offset + x->tensors[i].numel > n) n = x->tensors[i].offset + x->tensors[i].numel;
    return n;
}

/* After job_prepare: this rank's share of the three parts, and rank 0's extras, copied
 * into the staging buffers, which the job then writes from: the next update cannot
 * reach them. */
static void stage(CkptWriter *w, const GPT *m, const AdamW *o) {
    Job *j = &w->job;
    size_t n = j->sh.end - j->sh.begin;
    if (j->tensors && (!w->stage || N_PARTS * n > w->stage_floats)) { /* a rank may own nothing */
        free(w->stage);
        w->stage = xalloc_floats(w->stage_floats = N_PARTS * n);
    }
    for (int p = 0; p < N_PARTS && j->tensors; p++) {
        size_t first;
        const float *data = part_data(m, o, p, &first);
        if (n) memcpy(w->stage + (size_t)p * n, data + (j->sh.begin - first), n * sizeof(float));
        j->src[p] = w->stage + (size_t)p * n, j->first[p] = j->sh.begin;
    }
    size_t total = 0;
    for (int e = 0; e < j->n_extra; e++) total += 3 * extra_floats(&j->extra[e]);
    free(w->extra_stage);
    w->extra_stage = total ? xalloc_floats(total) : NULL;
    float *at = w->extra_stage;
    for (int e = 0; e < j->n_extra; e++) { /* small: every rank copies them, rank 0 writes them */
        CkptExtra *x = &j->extra[e];
        size_t k = extra_floats(x);
        const float *part[3] = {x->params, x->m, x->v};
        for (int q = 0; q < 3; q++) memcpy(at + (size_t)q * k, part[q], k * sizeof(float));
        x->params = at, x->m = at + k, x->v = at + 2 * k;
        at += 3 * k;
    }
}

int ckpt_save(CkptWriter *w, const char *cmd, const char *run_dir, int keep, const GPT *m, const AdamW *o,
              const CkptState *s, const Tokenizer *tok, const CkptExtra *extra, int n_extra) {
    if (n_extra > CKPT_MAX_EXTRA) return gpt_error("checkpoint: %d extra tensor sets, at most %d", n_extra, CKPT_MAX_EXTRA);
    if (strlen(run_dir) >= PATH_MAX - 64) return gpt_error("%s: path too long", run_dir);
    double t_start = now_seconds();
    char path[PATH_MAX];
    ckpt_path(path, sizeof path, run_dir, s->step);
    if (ckpt_writer_wait(w, NULL)) return -1; /* at most one in flight */
    int background = w && w->background;
    Job local, *j = background ? &w->job : &local;
    job_init(j, w ? w->comm : MPI_COMM_WORLD, path, m, o, s, tok, extra, n_extra);
    snprintf(j->run_dir, sizeof j->run_dir, "%s", run_dir);
    snprintf(j->cmd, sizeof j->cmd, "%s", cmd);
    j->keep = keep, j->t_start = t_start, j->blocked_s = -1;
    if (w) j->hook = w->hook, j->hook_ctx = w->hook_ctx;
    if (job_prepare(j, o, extra) || (!background && job_create(j))) {
        job_abort(j);
        job_free(j);
        return -1;
    }
    if (!background) {
        int rc = job_write(j);
        job_free(j);
        return rc;
    }
    stage(w, m, o);
    j->state.config = s->config ? xstrdup(s->config) : NULL;
    w->done = w->rc = 0, w->busy = 1;
    j->blocked_s = now_seconds() - t_start;
    w->threaded = !pthread_create(&w->thread, NULL, writer_main, w);
    if (!w->threaded) writer_main(w); /* no thread to be had: written now */
    return 0;
}
