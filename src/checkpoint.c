/* checkpoint.c: model files in HDF5 (see checkpoint.h and docs/formats.md).
 *
 * HDF5's own error stack printing is switched off; every failure is turned into one
 * message naming the file and the object, recorded with gpt_error(). */
#include "checkpoint.h"

#include <hdf5.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "util.h"
#include "version.h"

#define MODEL_FORMAT "gpt-model"
#define MODEL_FORMAT_VERSION 1

static void quiet_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static int write_attr(hid_t obj, const char *name, hid_t file_type, hid_t mem_type,
                      const void *value) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, mem_type, value);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return rc < 0 ? -1 : 0;
}

static int write_attr_int(hid_t obj, const char *name, int v) {
    return write_attr(obj, name, H5T_STD_I32LE, H5T_NATIVE_INT, &v);
}

static int write_attr_float(hid_t obj, const char *name, float v) {
    return write_attr(obj, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &v);
}

static int write_attr_string(hid_t obj, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    int rc = write_attr(obj, name, t, t, &v);
    H5Tclose(t);
    return rc;
}

static int write_config(hid_t g, const GPTConfig *c) {
    return write_attr_int(g, "n_layer", c->n_layer) || write_attr_int(g, "n_head", c->n_head) ||
           write_attr_int(g, "n_embd", c->n_embd) || write_attr_int(g, "n_ctx", c->n_ctx) ||
           write_attr_int(g, "vocab_size", c->vocab_size) ||
           write_attr_int(g, "n_ffn", c->n_ffn) ||
           write_attr_float(g, "dropout_embd", c->dropout_embd) ||
           write_attr_float(g, "dropout_resid", c->dropout_resid) ||
           write_attr_float(g, "dropout_attn", c->dropout_attn) ||
           write_attr_string(g, "ln", config_ln_name(c->ln)) ||
           write_attr_float(g, "ln_eps", c->ln_eps);
}

static int write_tensor(hid_t g, const GPTTensor *t, const float *data) {
    hsize_t dims[2] = {(hsize_t)t->shape[0], (hsize_t)t->shape[1]};
    hid_t space = H5Screate_simple(t->ndim, dims, NULL);
    hid_t d = H5Dcreate2(g, t->name, H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT,
                         H5P_DEFAULT);
    herr_t rc = d < 0 ? -1 : H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (d >= 0) H5Dclose(d);
    H5Sclose(space);
    return rc < 0 ? -1 : 0;
}

int model_file_write(const char *path, const GPT *m) {
    quiet_hdf5();
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return gpt_error("%s: path too long", path);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return gpt_error("%s: cannot create the file (check the directory exists and is writable)", tmp);
    int rc = write_attr_string(f, "format", MODEL_FORMAT) ||
             write_attr_int(f, "format_version", MODEL_FORMAT_VERSION) ||
             write_attr_string(f, "tool_version", GPT_VERSION);
    hid_t g = rc ? -1 : H5Gcreate2(f, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0 || write_config(g, &m->cfg)) rc = -1;
    for (int i = 0; !rc && i < m->n_tensors; i++)
        if (write_tensor(g, &m->tensors[i], m->params + m->tensors[i].offset)) rc = -1;
    if (g >= 0) H5Gclose(g);
    if (H5Fclose(f) < 0) rc = -1;
    if (rc) {
        remove(tmp);
        return gpt_error("%s: writing the model failed (disk full?)", tmp);
    }
    if (rename(tmp, path) != 0) {
        remove(tmp);
        return gpt_error("%s: cannot rename %s into place", path, tmp);
    }
    return 0;
}

/* Opens an attribute of the expected class; -1 with a message naming it otherwise. */
static hid_t open_attr(const char *path, hid_t obj, const char *name, H5T_class_t cls,
                       const char *expected) {
    if (H5Aexists(obj, name) <= 0)
        return gpt_error("%s: attribute /model/%s is missing (expected %s)", path, name, expected);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    hid_t s = H5Aget_space(a);
    int ok = H5Tget_class(t) == cls && H5Sget_simple_extent_npoints(s) == 1;
    H5Tclose(t);
    H5Sclose(s);
    if (!ok) {
        H5Aclose(a);
        return gpt_error("%s: attribute /model/%s is not %s", path, name, expected);
    }
    return a;
}

/* Reads a scalar attribute of class cls into *out as mem_type. */
static int read_attr_scalar(const char *path, hid_t g, const char *name, H5T_class_t cls,
                            hid_t mem_type, const char *expected, void *out) {
    hid_t a = open_attr(path, g, name, cls, expected);
    if (a < 0) return -1;
    herr_t rc = H5Aread(a, mem_type, out);
    H5Aclose(a);
    return rc < 0 ? gpt_error("%s: cannot read attribute /model/%s", path, name) : 0;
}

static int read_attr_int(const char *path, hid_t g, const char *name, int *out) {
    return read_attr_scalar(path, g, name, H5T_INTEGER, H5T_NATIVE_INT, "a single integer", out);
}

static int read_attr_float(const char *path, hid_t g, const char *name, float *out) {
    return read_attr_scalar(path, g, name, H5T_FLOAT, H5T_NATIVE_FLOAT, "a single number", out);
}

/* Reads a fixed- or variable-length string attribute into buf. */
static int read_attr_string(const char *path, hid_t g, const char *name, char *buf,
                            size_t size) {
    hid_t a = open_attr(path, g, name, H5T_STRING, "a string");
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    herr_t rc;
    if (H5Tis_variable_str(ft) > 0) {
        char *s = NULL;
        hid_t mt = H5Tcopy(ft); /* same character set: HDF5 does not convert between them */
        rc = H5Aread(a, mt, &s);
        if (rc >= 0 && s) snprintf(buf, size, "%s", s);
        if (s) H5free_memory(s);
        H5Tclose(mt);
    } else {
        hid_t mt = H5Tcopy(ft);
        H5Tset_size(mt, size);
        H5Tset_strpad(mt, H5T_STR_NULLTERM);
        rc = H5Aread(a, mt, buf);
        buf[size - 1] = '\0';
        H5Tclose(mt);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return rc < 0 ? gpt_error("%s: cannot read attribute /model/%s", path, name) : 0;
}

static hid_t open_model_group(const char *path, hid_t *file) {
    quiet_hdf5();
    if (H5Fis_hdf5(path) <= 0)
        return gpt_error("%s: cannot open (missing, unreadable or not an HDF5 file)", path);
    *file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (*file < 0) return gpt_error("%s: cannot open as HDF5", path);
    if (H5Lexists(*file, "model", H5P_DEFAULT) <= 0) {
        H5Fclose(*file);
        return gpt_error("%s: no /model group (not a model file)", path);
    }
    return H5Gopen2(*file, "model", H5P_DEFAULT);
}

static int read_config(const char *path, hid_t g, GPTConfig *c) {
    char ln[16];
    if (read_attr_int(path, g, "n_layer", &c->n_layer) ||
        read_attr_int(path, g, "n_head", &c->n_head) ||
        read_attr_int(path, g, "n_embd", &c->n_embd) ||
        read_attr_int(path, g, "n_ctx", &c->n_ctx) ||
        read_attr_int(path, g, "vocab_size", &c->vocab_size) ||
        read_attr_int(path, g, "n_ffn", &c->n_ffn) ||
        read_attr_float(path, g, "dropout_embd", &c->dropout_embd) ||
        read_attr_float(path, g, "dropout_resid", &c->dropout_resid) ||
        read_attr_float(path, g, "dropout_attn", &c->dropout_attn) ||
        read_attr_float(path, g, "ln_eps", &c->ln_eps) ||
        read_attr_string(path, g, "ln", ln, sizeof ln))
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

static int read_tensor(const char *path, hid_t g, const GPTTensor *t, float *out) {
    if (H5Lexists(g, t->name, H5P_DEFAULT) <= 0)
        return gpt_error("%s: tensor /model/%s is missing", path, t->name);
    hid_t d = H5Dopen2(g, t->name, H5P_DEFAULT);
    if (d < 0) return gpt_error("%s: /model/%s is not a dataset", path, t->name);
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
        rc = gpt_error("%s: tensor /model/%s is not floating point", path, t->name);
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
        rc = gpt_error("%s: tensor /model/%s has shape [%s], expected [%s]", path, t->name,
                       found, expected);
    } else if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
        rc = gpt_error("%s: cannot read tensor /model/%s (corrupted file?)", path, t->name);
    }
    H5Tclose(ty);
    H5Sclose(s);
    H5Dclose(d);
    return rc;
}

int model_file_read_weights(const char *path, GPT *m) {
    hid_t f, g = open_model_group(path, &f);
    if (g < 0) return -1;
    int rc = 0;
    for (int i = 0; !rc && i < m->n_tensors; i++)
        rc = read_tensor(path, g, &m->tensors[i], m->params + m->tensors[i].offset);
    H5Gclose(g);
    H5Fclose(f);
    return rc;
}

GPT *model_file_load(const char *path, int max_batch, int with_grads) {
    GPTConfig cfg;
    if (model_file_read_config(path, &cfg)) return NULL;
    GPT *m = gpt_create(&cfg, max_batch, with_grads);
    if (model_file_read_weights(path, m)) {
        gpt_free(m);
        return NULL;
    }
    return m;
}
