/* model_file.c: model files in HDF5 (see model_file.h and docs/formats.md).
 *
 * Every failure becomes one message naming the file and the object (h5util.h). */
#include "files/model_file.h"

#include <hdf5.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/atomic.h"
#include "base/util.h"
#include "base/version.h"
#include "files/formats.h"
#include "files/h5util.h"
#include "model/shard.h"


int model_config_write_h5(int64_t g, const GPTConfig *c) {
    return h5_write_attr_int(g, "n_layer", c->n_layer) || h5_write_attr_int(g, "n_head", c->n_head) ||
           h5_write_attr_int(g, "n_embd", c->n_embd) || h5_write_attr_int(g, "n_ctx", c->n_ctx) ||
           h5_write_attr_int(g, "vocab_size", c->vocab_size) ||
           h5_write_attr_int(g, "n_ffn", c->n_ffn) ||
           h5_write_attr_float(g, "dropout_embd", c->dropout_embd) ||
           h5_write_attr_float(g, "dropout_resid", c->dropout_resid) ||
           h5_write_attr_float(g, "dropout_attn", c->dropout_attn) ||
           h5_write_attr_string(g, "ln", config_ln_name(c->ln)) ||
           h5_write_attr_float(g, "ln_eps", c->ln_eps);
}

int64_t model_tensor_create(int64_t loc, const GPTTensor *t) {
    hsize_t dims[2] = {(hsize_t)t->shape[0], (hsize_t)t->shape[1]};
    hsize_t chunk[2] = {(hsize_t)shard_tensor_chunk_rows(t), dims[1]};
    hid_t space = H5Screate_simple(t->ndim, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, t->ndim, chunk);
    H5Pset_fletcher32(dcpl);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER); /* every element is written: no zeros first */
    hid_t d = H5Dcreate2(loc, t->name, H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(space);
    return d;
}

/* Rows [lo, hi) of a tensor: the dataset selection and, in `mem`, the same elements. */
static void select_rows(hid_t file_space, const GPTTensor *t, int lo, int hi) {
    hsize_t start[2] = {(hsize_t)lo, 0}, count[2] = {(hsize_t)(hi - lo), (hsize_t)t->shape[1]};
    if (hi > lo) H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, NULL, count, NULL);
    else H5Sselect_none(file_space);
}

/* The rows in memory, shaped like the selection: with any other shape HDF5 copies
 * element by element, 15 times slower. */
static hid_t rows_mem_space(const GPTTensor *t, int lo, int hi) {
    hsize_t dims[2] = {(hsize_t)(hi > lo ? hi - lo : 1), (hsize_t)t->shape[1]};
    hid_t s = H5Screate_simple(t->ndim, dims, NULL);
    if (hi <= lo) H5Sselect_none(s);
    return s;
}

uint64_t model_tensors_bytes(const GPTTensor *t, int n) {
    uint64_t b = 0;
    for (int i = 0; i < n; i++)
        b += h5_array_bytes((uint64_t)t[i].shape[0], sizeof(float) * (t[i].ndim == 2 ? (uint64_t)t[i].shape[1] : 1));
    return b;
}

size_t model_tensor_chunk_bytes(const GPTTensor *t) {
    return (size_t)shard_tensor_chunk_rows(t) * (t->ndim == 2 ? (size_t)t->shape[1] : 1) * sizeof(float);
}

int model_tensor_write_chunks(int64_t d, const GPTTensor *t, const float *rows, int lo, int hi, void *buf) {
    size_t row = t->ndim == 2 ? (size_t)t->shape[1] : 1, bytes = model_tensor_chunk_bytes(t);
    int step = shard_tensor_chunk_rows(t);
    for (int c = lo; c < hi; c += step) {
        size_t n = (size_t)(c + step < t->shape[0] ? step : t->shape[0] - c) * row;
        memcpy(buf, rows + (size_t)(c - lo) * row, n * sizeof(float)); /* floats are little-endian here (x86-64) */
        memset((float *)buf + n, 0, bytes - n * sizeof(float)); /* an edge chunk's padding */
        hsize_t at[2] = {(hsize_t)c, 0};
        if (h5_write_chunk_fletcher32((hid_t)d, at, buf, bytes)) return -1;
    }
    return 0;
}

static int write_tensor(hid_t g, const GPTTensor *t, const float *data) {
    hid_t d = model_tensor_create(g, t);
    void *buf = xmalloc(model_tensor_chunk_bytes(t) + 4);
    int rc = d < 0 ? -1 : model_tensor_write_chunks(d, t, data, 0, t->shape[0], buf);
    free(buf);
    if (d >= 0) H5Dclose(d);
    return rc;
}

/* pruned_scope NULL: a model that was not pruned, without the pruned_* attributes. */
static int write_model(const char *path, const GPT *m, int with_tensors, const Tokenizer *tok, double pruned_sparsity,
                       const char *pruned_scope, int (*extra)(int64_t file, const void *ctx), const void *ctx,
                       uint64_t extra_bytes) {
    h5_quiet();
    if (with_tensors && model_tensors_check_finite(path, "/model", m->tensors, m->n_tensors, m->params, 1)) return -1;
    char tmp[PATH_MAX];
    if (atomic_tmp_path(path, tmp, sizeof tmp)) return -1;
    uint64_t need = H5_FILE_OVERHEAD + (with_tensors ? model_tensors_bytes(m->tensors, m->n_tensors) : 0) +
                    tokenizer_h5_bytes(tok) + extra_bytes;
    if (h5_reserve(path, tmp, need, "the model file")) { /* before and after the create, which truncates */
        remove(tmp);
        return -1;
    }
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        remove(tmp);
        return gpt_error("%s: cannot create the file (check the directory exists and is writable)", tmp);
    }
    if (h5_reserve(path, tmp, need, "the model file")) {
        H5Fclose(f); /* nothing written yet */
        remove(tmp);
        return -1;
    }
    int rc = h5_write_attr_string(f, "format", MODEL_FORMAT) ||
             h5_write_attr_int(f, "format_version", MODEL_FORMAT_VERSION) ||
             h5_write_attr_string(f, "tool_version", GPT_VERSION);
    hid_t g = rc ? -1 : H5Gcreate2(f, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0 || model_config_write_h5(g, &m->cfg)) rc = -1;
    if (!rc && pruned_scope &&
        (h5_write_attr_double(g, "pruned_sparsity", pruned_sparsity) ||
         h5_write_attr_string(g, "pruned_scope", pruned_scope)))
        rc = -1;
    for (int i = 0; !rc && with_tensors && i < m->n_tensors; i++)
        if (write_tensor(g, &m->tensors[i], m->params + m->tensors[i].offset)) rc = -1;
    if (g >= 0) H5Gclose(g);
    if (!rc && tok && tokenizer_write_h5(tok, f)) rc = -1;
    if (!rc && extra && extra(f, ctx)) rc = -1;
    if (H5Fclose(f) < 0) rc = -1;
    if (rc) {
        remove(tmp);
        return gpt_error("%s: writing the model failed", tmp);
    }
    return atomic_publish(tmp, path); /* flushed to disk before it replaces the old file */
}

int model_file_write(const char *path, const GPT *m, const Tokenizer *tok) {
    return write_model(path, m, 1, tok, 0.0, NULL, NULL, NULL, 0);
}

int model_file_write_ex(const char *path, const GPT *m, int with_tensors, const Tokenizer *tok,
                        int (*extra)(int64_t file, const void *ctx), const void *ctx, uint64_t extra_bytes) {
    return write_model(path, m, with_tensors, tok, 0.0, NULL, extra, ctx, extra_bytes);
}

int model_file_write_pruned(const char *path, const GPT *m, const Tokenizer *tok, double sparsity,
                            const char *scope) {
    return write_model(path, m, 1, tok, sparsity, scope, NULL, NULL, 0);
}

static hid_t open_model_group(const char *path, hid_t *file) {
    *file = h5_open_read(path);
    if (*file < 0) return -1;
    if (H5Lexists(*file, "model", H5P_DEFAULT) <= 0) {
        H5Fclose(*file);
        return gpt_error("%s: no /model group (not a model file)", path);
    }
    return H5Gopen2(*file, "model", H5P_DEFAULT);
}

static int read_config(const char *path, hid_t g, GPTConfig *c) {
    char ln[16];
    const char *w = "/model";
    if (h5_read_attr_int(path, w, g, "n_layer", &c->n_layer) ||
        h5_read_attr_int(path, w, g, "n_head", &c->n_head) ||
        h5_read_attr_int(path, w, g, "n_embd", &c->n_embd) ||
        h5_read_attr_int(path, w, g, "n_ctx", &c->n_ctx) ||
        h5_read_attr_int(path, w, g, "vocab_size", &c->vocab_size) ||
        h5_read_attr_int(path, w, g, "n_ffn", &c->n_ffn) ||
        h5_read_attr_float(path, w, g, "dropout_embd", &c->dropout_embd) ||
        h5_read_attr_float(path, w, g, "dropout_resid", &c->dropout_resid) ||
        h5_read_attr_float(path, w, g, "dropout_attn", &c->dropout_attn) ||
        h5_read_attr_float(path, w, g, "ln_eps", &c->ln_eps) ||
        h5_read_attr_string(path, w, g, "ln", ln, sizeof ln))
        return -1;
    if (config_parse_ln(ln, &c->ln) || config_validate(c)) {
        char why[512];
        snprintf(why, sizeof why, "%s", gpt_last_error());
        return gpt_error("%s: invalid model configuration: %s", path, why);
    }
    return 0;
}

int model_file_read_config(const char *path, GPTConfig *cfg) {
    hid_t f, g = open_model_group(path, &f);
    if (g < 0) return -1;
    int rc = read_config(path, g, cfg);
    H5Gclose(g);
    H5Fclose(f);
    return rc;
}

int model_file_read_pruned(const char *path, double *sparsity) {
    *sparsity = 0.0;
    hid_t f, g = open_model_group(path, &f);
    if (g < 0) return -1;
    int rc = 0;
    htri_t has = H5Aexists(g, "pruned_sparsity");
    if (has < 0) rc = gpt_error("%s: cannot read the attributes of /model", path);
    else if (has) rc = h5_read_attr_double(path, "/model", g, "pruned_sparsity", sparsity);
    H5Gclose(g);
    H5Fclose(f);
    return rc;
}

int model_tensor_read(const char *path, const char *where, int64_t g, const GPTTensor *t, float *rows, int lo,
                      int hi, int64_t dxpl) {
    if (H5Lexists(g, t->name, H5P_DEFAULT) <= 0)
        return gpt_error("%s: tensor %s/%s is missing", path, where, t->name);
    hid_t d = H5Dopen2(g, t->name, H5P_DEFAULT);
    if (d < 0) return gpt_error("%s: %s/%s is not a dataset", path, where, t->name);
    hid_t s = H5Dget_space(d), ty = H5Dget_type(d);
    hsize_t dims[8] = {0};
    int nd = H5Sget_simple_extent_ndims(s);
    int ok_type = H5Tget_class(ty) == H5T_FLOAT;
    int ok_shape = nd == t->ndim && nd <= 8;
    if (ok_shape) {
        H5Sget_simple_extent_dims(s, dims, NULL);
        for (int i = 0; i < nd; i++) ok_shape &= dims[i] == (hsize_t)t->shape[i];
    }
    int rc = 0;
    if (!ok_type) {
        rc = gpt_error("%s: tensor %s/%s is not floating point", path, where, t->name);
    } else if (!ok_shape) {
        char found[96] = "", expected[64];
        if (nd >= 1 && nd <= 8) {
            H5Sget_simple_extent_dims(s, dims, NULL);
            size_t len = 0;
            for (int i = 0; i < nd && len < sizeof found; i++)
                len += (size_t)snprintf(found + len, sizeof found - len, "%s%llu", i ? ", " : "",
                                        (unsigned long long)dims[i]);
        }
        if (t->ndim == 2) snprintf(expected, sizeof expected, "%d, %d", t->shape[0], t->shape[1]);
        else snprintf(expected, sizeof expected, "%d", t->shape[0]);
        rc = gpt_error("%s: tensor %s/%s has shape [%s], expected [%s]", path, where, t->name, found, expected);
    } else {
        hid_t ms = rows_mem_space(t, lo, hi);
        select_rows(s, t, lo, hi);
        if (H5Dread(d, H5T_NATIVE_FLOAT, ms, s, dxpl, rows) < 0)
            rc = gpt_error("%s: cannot read tensor %s/%s (checksum mismatch or truncated: the file is corrupted)",
                           path, where, t->name);
        H5Sclose(ms);
    }
    H5Tclose(ty);
    H5Sclose(s);
    H5Dclose(d);
    return rc;
}

int model_tensors_write(int64_t file, const char *where, const GPTTensor *t, int n, const float *params) {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t g = H5Gcreate2((hid_t)file, where, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    int rc = g < 0 ? -1 : 0;
    for (int i = 0; !rc && i < n; i++) rc = write_tensor(g, &t[i], params + t[i].offset);
    if (g >= 0) H5Gclose(g);
    return rc;
}

int model_tensors_read(const char *path, int64_t file, const char *where, const GPTTensor *t, int n, float *params) {
    hid_t f = (hid_t)file;
    hid_t g = H5Lexists(f, where, H5P_DEFAULT) > 0 ? H5Gopen2(f, where, H5P_DEFAULT) : -1;
    if (g < 0) return gpt_error("%s: group %s is missing", path, where);
    int rc = 0;
    for (int i = 0; !rc && i < n; i++)
        rc = model_tensor_read(path, where, g, &t[i], params + t[i].offset, 0, t[i].shape[0], H5P_DEFAULT);
    H5Gclose(g);
    return rc;
}

int model_file_read_weights(const char *path, GPT *m) {
    hid_t f, g = open_model_group(path, &f);
    if (g < 0) return -1;
    H5Gclose(g);
    int rc = model_tensors_read(path, f, "/model", m->tensors, m->n_tensors, m->params);
    H5Fclose(f);
    return rc;
}

int model_tensors_check_finite(const char *path, const char *where, const GPTTensor *t, int n, const float *params,
                               int writing) {
    const GPTTensor *bad = tensors_first_nonfinite(t, n, params);
    if (!bad) return 0;
    if (writing) return gpt_error("%s: not written: tensor %s/%s holds a NaN or an infinity", path, where, bad->name);
    return gpt_error("%s: tensor %s/%s holds a NaN or an infinity: the model diverged or the file is damaged "
                     "(gpt inspect %s lists every such tensor)", path, where, bad->name, path);
}

static GPT *load(const char *path, int max_batch, int with_grads, int check_finite) {
    GPTConfig cfg;
    if (model_file_read_config(path, &cfg)) return NULL;
    GPT *m = gpt_create(&cfg, max_batch, with_grads);
    if (model_file_read_weights(path, m) ||
        (check_finite && model_tensors_check_finite(path, "/model", m->tensors, m->n_tensors, m->params, 0))) {
        gpt_free(m);
        return NULL;
    }
    return m;
}

GPT *model_file_load(const char *path, int max_batch, int with_grads) { return load(path, max_batch, with_grads, 1); }

GPT *model_file_load_any(const char *path, int max_batch) { return load(path, max_batch, 0, 0); }

int model_file_same_tokenizer(const char *model, const Tokenizer *tok, char *why, size_t size) {
    hid_t f = h5_open_read(model);
    if (f < 0) return -1;
    int has = H5Lexists(f, "tokenizer", H5P_DEFAULT) > 0;
    H5Fclose(f);
    if (!has) return 1;
    Tokenizer *model_tok = tokenizer_load(model);
    if (!model_tok) return -1;
    int same = tokenizer_equal(model_tok, tok, why, size);
    tokenizer_free(model_tok);
    return same;
}

int model_file_check_tokenizer(const char *model, const Tokenizer *data_tok, const char *data) {
    char why[256];
    int same = model_file_same_tokenizer(model, data_tok, why, sizeof why);
    return same ? (same < 0 ? -1 : 0)
                : gpt_error("%s was tokenized with another tokenizer than the model %s was trained with (%s); "
                            "prepare it with --tokenizer %s", data, model, why, model);
}
