/* checkpoint_read.c: reading a checkpoint, and --resume's choice of one (see
 * checkpoint.h and docs/formats.md).
 *
 * The header is read by one process with the serial driver; the tensors by every rank
 * with the MPI-IO driver, each its shard (shard.h) with independent reads, so that a
 * checksum failure on one rank cannot leave a collective read half done: the ranks
 * agree on the outcome afterwards (dist_agree) and then broadcast the shares of what
 * every rank holds whole. */
#include "files/checkpoint.h"

#include <hdf5.h>
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "checkpoint_parts.h"
#include "dist/dist.h"
#include "files/formats.h"
#include "files/h5util.h"
#include "files/model_file.h"
#include "files/run_layout.h"
#include "model/shard.h"

#define BCAST_FLOATS ((size_t)1 << 28) /* MPI counts are ints */

void ckpt_state_free(CkptState *s) {
    free(s->config);
    s->config = NULL;
}

/* This rank's rows of tensor i in part p's buffer, which holds them; for no rows, any
 * valid pointer. */
static float *part_rows(const GPT *m, const AdamW *o, int p, const Shard *sh, int i) {
    float *data = ckpt_part_data(m, o, p);
    return sh->lo[i] < sh->hi[i] ? data + ckpt_rows_index(m, sh, i, !ckpt_part_whole(m, o, p)) : data;
}

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
    hid_t f = h5_fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (dist_agree(f < 0 ? gpt_error("%s: cannot open as HDF5 (truncated or not a checkpoint)", path) : 0)) return -1;
    Shard sh = shard_of(m, rank, P);
    int rc = 0;
    /* independent reads: a checksum failure on one rank must not leave a collective read half done */
    for (int p = 0; !rc && p < CKPT_PARTS; p++) {
        const char *group = ckpt_part_group(p);
        hid_t g = H5Lexists(f, group + 1, H5P_DEFAULT) > 0 ? H5Gopen2(f, group, H5P_DEFAULT) : -1;
        if (g < 0) rc = gpt_error("%s: group %s is missing", path, group);
        for (int i = 0; !rc && i < m->n_tensors; i++) {
            const GPTTensor *t = &m->tensors[i];
            float *rows = part_rows(m, o, p, &sh, i);
            GPTTensor read = *t; /* the rows read, for the check */
            read.offset = 0, read.numel = (size_t)(sh.hi[i] - sh.lo[i]) * ckpt_row_floats(t);
            rc = model_tensor_read(path, group, g, t, rows, sh.lo[i], sh.hi[i], H5P_DEFAULT) ||
                 model_tensors_check_finite(path, group, &read, 1, rows, 0);
        }
        if (g >= 0) H5Gclose(g);
    }
    shard_free(&sh);
    H5Fclose(f);
    if (dist_agree(rc)) return -1;
    /* every rank's share of a whole buffer to every rank (a sharded optimizer keeps its own) */
    for (int r = 0; r < P; r++) {
        Shard s = shard_of(m, r, P);
        for (int p = 0; p < CKPT_PARTS; p++)
            for (int k = 0; ckpt_part_whole(m, o, p) && k < s.n_ranges; k++)
                for (size_t at = s.begin[k]; at < s.end[k]; at += BCAST_FLOATS) {
                    size_t n = s.end[k] - at < BCAST_FLOATS ? s.end[k] - at : BCAST_FLOATS;
                    MPI_Bcast(ckpt_part_data(m, o, p) + at, (int)n, MPI_FLOAT, r, MPI_COMM_WORLD);
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
        char where[CKPT_PARTS][128];
        ckpt_extra_groups(x, where);
        float *data[CKPT_PARTS] = {x->params, x->m, x->v};
        for (int k = 0; !rc && k < CKPT_PARTS; k++)
            rc = model_tensors_read(path, f, where[k], x->tensors, x->n_tensors, data[k]) ||
                 model_tensors_check_finite(path, where[k], x->tensors, x->n_tensors, data[k], 0);
    }
    H5Fclose(f);
    return rc ? -1 : 0;
}

int ckpt_resume(const char *run_dir, const char *resume, const char *cmd, int (*load)(const char *path, void *ctx),
                void *ctx, char *from, size_t size) {
    int rank = dist_rank(), is_auto = !strcmp(resume, "auto");
    long *steps = NULL;
    int n = 1;
    if (is_auto) {
        n = rank == 0 ? run_resume_order(run_dir, &steps) : 0;
        MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (rank != 0) steps = xmalloc(sizeof(long) * (size_t)(n ? n : 1));
        if (n) MPI_Bcast(steps, n, MPI_LONG, 0, MPI_COMM_WORLD);
    }
    from[0] = '\0';
    int rc = 0;
    for (int k = 0; k < n; k++) {
        char path[PATH_MAX];
        if (is_auto) run_ckpt_path(path, sizeof path, run_dir, steps[k]);
        else snprintf(path, sizeof path, "%s", resume);
        if ((rc = load(path, ctx)) == 0) {
            snprintf(from, size, "%s", path);
            break;
        }
        if (rc == -1 || !is_auto) break;
        if (rank == 0) fprintf(stderr, "gpt %s: %s; falling back to another checkpoint\n", cmd, gpt_last_error());
    }
    free(steps);
    if (rc == -2 && is_auto)
        return gpt_error("%s: none of its %d checkpoint(s) loads (see the messages above)", run_dir, n);
    if (rc) return -1;
    if (!from[0] && rank == 0) printf("no checkpoint in %s yet: starting from step 0\n", run_dir);
    return 0;
}

int ckpt_read_moments(const char *path, const GPT *m, float *m_buf, float *v_buf) {
    hid_t f = h5_open_read(path);
    if (f < 0) return -1;
    int rc = model_tensors_read(path, f, "/optimizer/m", m->tensors, m->n_tensors, m_buf) ||
                     model_tensors_read(path, f, "/optimizer/v", m->tensors, m->n_tensors, v_buf)
                 ? -1
                 : 0;
    H5Fclose(f);
    return rc;
}

int ckpt_model_is_empty(const char *path) {
    hid_t f = h5_open_read(path);
    if (f < 0) return -1;
    H5G_info_t info;
    hid_t g = H5Lexists(f, "model", H5P_DEFAULT) > 0 ? H5Gopen2(f, "model", H5P_DEFAULT) : -1;
    int empty = g >= 0 && H5Gget_info(g, &info) >= 0 && info.nlinks == 0;
    if (g >= 0) H5Gclose(g);
    H5Fclose(f);
    return empty;
}

/* 1 if every group on the way to `where` ("/a/b") exists. */
static int group_exists(hid_t f, const char *where) {
    char part[256];
    for (const char *slash = strchr(where + 1, '/');; slash = strchr(slash + 1, '/')) {
        size_t len = slash ? (size_t)(slash - where) : strlen(where);
        if (len >= sizeof part) return 0;
        memcpy(part, where, len);
        part[len] = '\0';
        if (H5Lexists(f, part, H5P_DEFAULT) <= 0) return 0;
        if (!slash) return 1;
    }
}

int ckpt_each_tensor(const char *path, const char *where, void (*each)(void *ctx, const char *name, const float *v,
                                                                        size_t n),
                     void *ctx, long *n_tensors) {
    hid_t f = h5_open_read(path);
    if (f < 0) return -1;
    hid_t g = group_exists(f, where) ? H5Gopen2(f, where, H5P_DEFAULT) : -1;
    if (g < 0) {
        H5Fclose(f);
        return 0;
    }
    H5G_info_t info;
    int rc = H5Gget_info(g, &info) < 0 ? gpt_error("%s: cannot list %s", path, where) : 0;
    for (hsize_t i = 0; !rc && i < info.nlinks; i++) {
        char name[GPT_TENSOR_NAME_MAX];
        hsize_t dims[2];
        H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
        hid_t d = H5Dopen2(g, name, H5P_DEFAULT), space = d < 0 ? -1 : H5Dget_space(d);
        int rank = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
        if (space >= 0) H5Sclose(space);
        if (d >= 0) H5Dclose(d);
        if (rank != 1 && rank != 2) {
            rc = gpt_error("%s: %s/%s is not a 1-D or 2-D tensor", path, where, name);
            break;
        }
        float *v = h5_read_all(path, where, g, name, rank, H5T_NATIVE_FLOAT, sizeof(float), dims);
        if (!v) rc = -1;
        else each(ctx, name, v, rank == 2 ? dims[0] * dims[1] : dims[0]);
        free(v);
    }
    *n_tensors = (long)info.nlinks;
    H5Gclose(g);
    H5Fclose(f);
    return rc ? -1 : 1;
}
