/* task_file.c: the task file in HDF5 (task_file.h): written through base/atomic.h, and
 * loaded with every offset, token and label checked, since fine-tuning indexes by them
 * without looking again. */
#include "files/task_file.h"

#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/atomic.h"
#include "base/util.h"
#include "base/version.h"
#include "files/data.h"
#include "files/formats.h"
#include "files/h5util.h"
#include "files/tokenizer_file.h"

int task_write(const char *path, const TaskData *d, const Tokenizer *tok, const char *source) {
    h5_quiet();
    const TaskInfo *in = &d->info;
    for (int s = 0; s < 2; s++)
        for (int64_t i = 0; i < d->split[s].n_examples; i++)
            if (isnan(d->split[s].labels[i])) return gpt_error("%s: records without labels cannot go into a task file", path);
    char tmp[PATH_MAX];
    if (atomic_tmp_path(path, tmp, sizeof tmp)) return -1;
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return gpt_error("%s: cannot create the file (check the directory exists and is writable)", tmp);
    int rc = h5_write_attr_string(f, "format", TASK_FORMAT) || h5_write_attr_int(f, "format_version", TASK_FORMAT_VERSION) ||
             h5_write_attr_string(f, "tool_version", GPT_VERSION) ||
             h5_write_attr_string(f, "task", task_type_name(in->type)) ||
             h5_write_attr_string(f, "label_kind", label_kind_name(in->label_kind)) ||
             h5_write_attr_int(f, "n_classes", in->n_classes) || h5_write_attr_int(f, "n_ctx", in->n_ctx) ||
             h5_write_attr_int(f, "vocab_size", in->vocab_size) || h5_write_attr_int(f, "start_token", in->start) ||
             h5_write_attr_int(f, "delim_token", in->delim) || h5_write_attr_int(f, "extract_token", in->extract) ||
             h5_write_attr_i64(f, "truncated", in->truncated) || h5_write_attr_string(f, "source", source) ||
             (d->names && h5_write_strings(f, "label_names", (const char *const *)d->names, (hsize_t)in->n_classes)) ||
             tokenizer_write_h5(tok, f);
    static const char *const groups[2] = {"train", "val"};
    for (int s = 0; !rc && s < 2; s++) {
        const TaskSplit *sp = &d->split[s];
        hsize_t nt = (hsize_t)sp->n_tokens, ns = (hsize_t)sp->n_seqs + 1, ne = (hsize_t)sp->n_examples + 1, nl = ne - 1;
        hid_t g = H5Gcreate2(f, groups[s], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        /* labels convert from double: int32 for classes and answers, float32 for real values */
        rc = g < 0 || h5_write_array(g, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &nt, sp->tokens) ||
             h5_write_array(g, "seq_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &ns, sp->seq_off) ||
             h5_write_array(g, "example_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &ne, sp->ex_off) ||
             h5_write_array(g, "labels", in->label_kind == LABEL_REAL ? H5T_IEEE_F32LE : H5T_STD_I32LE,
                            H5T_NATIVE_DOUBLE, 1, &nl, sp->labels);
        if (g >= 0) H5Gclose(g);
    }
    if (H5Fclose(f) < 0) rc = -1;
    if (rc) {
        remove(tmp);
        return gpt_error("%s: writing the task file failed", path);
    }
    return atomic_publish(tmp, path);
}

/* Reads and checks one split: offsets in order and in range, sequences of [3, n_ctx] tokens
 * framed by the start and extract tokens, examples of as many sequences as the task has,
 * labels in range. */
static int load_split(const char *path, hid_t f, const char *name, const TaskInfo *in, TaskSplit *s) {
    char where[16];
    snprintf(where, sizeof where, "/%s", name);
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0) return gpt_error("%s: group %s is missing", path, where);
    hid_t g = H5Gopen2(f, name, H5P_DEFAULT);
    hsize_t nt = 0, ns = 0, ne = 0, nl = 0;
    int rc = !(s->tokens = h5_read_all(path, where, g, "tokens", 1, H5T_NATIVE_INT32, 4, &nt)) ||
             !(s->seq_off = h5_read_all(path, where, g, "seq_offsets", 1, H5T_NATIVE_INT64, 8, &ns)) ||
             !(s->ex_off = h5_read_all(path, where, g, "example_offsets", 1, H5T_NATIVE_INT64, 8, &ne)) ||
             !(s->labels = h5_read_all(path, where, g, "labels", 1, H5T_NATIVE_DOUBLE, 8, &nl));
    H5Gclose(g);
    if (rc) return -1;
    if (ns < 1 || ne < 1 || nl != ne - 1)
        return gpt_error("%s: %s has %llu sequence offsets, %llu example offsets and %llu labels: they disagree", path,
                         where, (unsigned long long)ns, (unsigned long long)ne, (unsigned long long)nl);
    s->n_tokens = (int64_t)nt, s->n_seqs = (int64_t)ns - 1, s->n_examples = (int64_t)ne - 1;
    s->len = xmalloc((size_t)ns * sizeof *s->len);
    for (hsize_t i = 0; i < nt; i++)
        if (s->tokens[i] < 0 || s->tokens[i] >= in->vocab_size)
            return gpt_error("%s: %s/tokens[%llu] = %d is outside the vocabulary of %d", path, where,
                             (unsigned long long)i, s->tokens[i], in->vocab_size);
    if (s->seq_off[0] != 0 || s->seq_off[s->n_seqs] != s->n_tokens)
        return gpt_error("%s: %s/seq_offsets must run from 0 to the %lld tokens", path, where, (long long)s->n_tokens);
    for (int64_t i = 0; i < s->n_seqs; i++) {
        int64_t a = s->seq_off[i], b = s->seq_off[i + 1];
        if (b - a < 3 || b - a > in->n_ctx || a < 0 || b > s->n_tokens)
            return gpt_error("%s: %s/seq_offsets: sequence %lld has %lld tokens, outside [3, n_ctx %d]", path, where,
                             (long long)i, (long long)(b - a), in->n_ctx);
        if (s->tokens[a] != in->start || s->tokens[b - 1] != in->extract)
            return gpt_error("%s: %s: sequence %lld does not run from the start to the extract token", path, where,
                             (long long)i);
        s->len[i] = (int)(b - a);
    }
    if (s->ex_off[0] != 0 || s->ex_off[s->n_examples] != s->n_seqs)
        return gpt_error("%s: %s/example_offsets must run from 0 to the %lld sequences", path, where, (long long)s->n_seqs);
    for (int64_t i = 0; i < s->n_examples; i++) {
        int64_t k = s->ex_off[i + 1] - s->ex_off[i];
        double y = s->labels[i];
        int ok = in->type == TASK_CHOICE ? k >= 2 : k == (in->type == TASK_SIMILAR ? 2 : 1);
        if (!ok || s->ex_off[i] < 0 || s->ex_off[i + 1] > s->n_seqs)
            return gpt_error("%s: %s/example_offsets: example %lld has %lld sequences, wrong for %s", path, where,
                             (long long)i, (long long)k, task_type_name(in->type));
        int n = in->label_kind == LABEL_CLASS ? in->n_classes : (int)k;
        if (in->label_kind == LABEL_REAL ? !isfinite(y) : !(y >= 0 && y < n && y == floor(y)))
            return gpt_error("%s: %s/labels[%lld] = %g is outside [0, %d)", path, where, (long long)i, y, n);
    }
    return 0;
}

/* The root attributes and /label_names into d. */
static int load_info(const char *path, hid_t f, TaskData *d) {
    TaskInfo *in = &d->info;
    char task[32], kind[32];
    int version;
    if (h5_expect_format(path, f, TASK_FORMAT, "a task file (made by gpt prepare-task)")) return -1;
    if (h5_read_attr_int(path, "", f, "format_version", &version) ||
        h5_read_attr_string(path, "", f, "task", task, sizeof task) ||
        h5_read_attr_string(path, "", f, "label_kind", kind, sizeof kind) ||
        h5_read_attr_int(path, "", f, "n_classes", &in->n_classes) || h5_read_attr_int(path, "", f, "n_ctx", &in->n_ctx) ||
        h5_read_attr_int(path, "", f, "vocab_size", &in->vocab_size) ||
        h5_read_attr_int(path, "", f, "start_token", &in->start) ||
        h5_read_attr_int(path, "", f, "delim_token", &in->delim) ||
        h5_read_attr_int(path, "", f, "extract_token", &in->extract) ||
        h5_read_attr_i64(path, "", f, "truncated", &in->truncated))
        return -1;
    if (version != TASK_FORMAT_VERSION)
        return gpt_error("%s: task file version %d; this tool reads version %d", path, version, TASK_FORMAT_VERSION);
    if (task_type_parse(task, &in->type)) return gpt_error("%s: attribute task: %s", path, gpt_last_error());
    if (label_kind_parse(kind, &in->label_kind))
        return gpt_error("%s: attribute label_kind is '%s', expected class, real or choice", path, kind);
    if (in->label_kind == LABEL_CLASS ? in->n_classes < 2 : in->n_classes != 0)
        return gpt_error("%s: n_classes %d does not suit %s labels", path, in->n_classes, kind);
    if (in->n_ctx < 3) return gpt_error("%s: n_ctx %d is below 3", path, in->n_ctx);
    Tokenizer *t = tokenizer_read_h5(f, path);
    if (!t) return -1;
    int same = tokenizer_vocab_size(t) == in->vocab_size && tokenizer_special_id(t, TOK_START) == in->start &&
               tokenizer_special_id(t, TOK_DELIM) == in->delim && tokenizer_special_id(t, TOK_EXTRACT) == in->extract;
    tokenizer_free(t);
    if (!same) return gpt_error("%s: vocab_size or the special tokens' ids disagree with /tokenizer", path);
    if (H5Lexists(f, "label_names", H5P_DEFAULT) <= 0) return 0;
    hid_t ds = H5Dopen2(f, "label_names", H5P_DEFAULT), type = ds < 0 ? -1 : H5Dget_type(ds);
    if (ds >= 0) H5Dclose(ds);
    int fixed = type >= 0 && H5Tget_class(type) == H5T_STRING && H5Tis_variable_str(type) == 0;
    size_t width = fixed ? H5Tget_size(type) : 0;
    hsize_t n = 0;
    char *all = fixed ? h5_read_all(path, "", f, "label_names", 1, type, width, &n) : NULL;
    if (type >= 0) H5Tclose(type);
    if (!fixed) return gpt_error("%s: /label_names is not a dataset of fixed-length strings", path);
    if (!all) return -1;
    if (n != (hsize_t)in->n_classes || in->label_kind != LABEL_CLASS) {
        free(all);
        return gpt_error("%s: /label_names has %llu names for %d classes", path, (unsigned long long)n, in->n_classes);
    }
    d->names = xcalloc(n, sizeof *d->names);
    for (hsize_t i = 0; i < n; i++) {
        d->names[i] = xmalloc(width + 1);
        memcpy(d->names[i], all + i * width, width);
        d->names[i][width] = '\0';
    }
    free(all);
    return 0;
}

TaskData *task_load(const char *path) {
    hid_t f = h5_open_read(path);
    if (f < 0) return NULL;
    TaskData *d = xcalloc(1, sizeof *d);
    int rc = load_info(path, f, d) || load_split(path, f, "train", &d->info, &d->split[SPLIT_TRAIN]) ||
             load_split(path, f, "val", &d->info, &d->split[SPLIT_VAL]);
    H5Fclose(f);
    if (rc) {
        task_free(d);
        return NULL;
    }
    return d;
}
