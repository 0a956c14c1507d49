/* task_model.c: fine-tuned model files (see task_model.h). Written through the model-file
 * writer, whose extra hook adds the head, the adapters and the task before the file is
 * published (base/atomic.h), so a fine-tuned model is never seen half written. */
#include "files/task_model.h"

#include <hdf5.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "files/formats.h"
#include "files/h5util.h"
#include "files/model_file.h"


typedef struct {
    const GPTLora *lora;
    const char *base;
    uint64_t base_fingerprint;
    const TaskHead *head;
    const TaskInfo *info;
    char *const *names;
    int n_names;
} Extra;

static int write_extra(int64_t file, const void *ctx) {
    const Extra *x = ctx;
    hid_t f = (hid_t)file;
    /* the root's "format" says what the file is; the model-file writer set it to a model's */
    if (H5Adelete(f, "format") < 0 || h5_write_attr_string(f, "format", TASK_MODEL_FORMAT)) return -1;
    if (x->info) {
        const TaskInfo *i = x->info;
        if (h5_write_attr_string(f, "task", task_type_name(i->type)) ||
            h5_write_attr_string(f, "label_kind", label_kind_name(i->label_kind)) ||
            h5_write_attr_int(f, "n_classes", i->n_classes) || h5_write_attr_int(f, "n_ctx", i->n_ctx))
            return -1;
        if (x->n_names) {
            hid_t str = H5Tcopy(H5T_C_S1);
            size_t longest = 1;
            for (int k = 0; k < x->n_names; k++)
                if (strlen(x->names[k]) + 1 > longest) longest = strlen(x->names[k]) + 1;
            H5Tset_size(str, longest);
            char *buf = xcalloc((size_t)x->n_names, longest);
            for (int k = 0; k < x->n_names; k++) memcpy(buf + (size_t)k * longest, x->names[k], strlen(x->names[k]));
            hsize_t dims[1] = {(hsize_t)x->n_names};
            int rc = h5_write_array(f, "label_names", str, str, 1, dims, buf);
            free(buf);
            H5Tclose(str);
            if (rc) return -1;
        }
    }
    if (x->head && model_tensors_write(f, "/head", x->head->tensors, x->head->n_tensors, x->head->params)) return -1;
    if (x->lora) {
        const GPTLora *lo = x->lora;
        char targets[16];
        if (model_tensors_write(f, "/lora", lo->tensors, lo->n_tensors, lo->params)) return -1;
        hid_t g = H5Gopen2(f, "lora", H5P_DEFAULT);
        int rc = g < 0 || h5_write_attr_int(g, "rank", lo->rank) || h5_write_attr_float(g, "alpha", lo->alpha) ||
                 h5_write_attr_string(g, "targets", lora_targets_name(lo->targets, targets, sizeof targets)) ||
                 h5_write_attr_string(g, "base", x->base) ||
                 h5_write_attr_i64(g, "base_fingerprint", (int64_t)x->base_fingerprint);
        if (g >= 0) H5Gclose(g);
        if (rc) return -1;
    }
    return 0;
}

int task_model_write(const char *path, const GPT *m, const GPTLora *lora, const char *base, uint64_t base_fingerprint,
                     const TaskHead *head, const TaskInfo *info, char *const *names, int n_names, const Tokenizer *tok) {
    Extra x = {lora, base, base_fingerprint, head, info, names, n_names};
    if ((head && model_tensors_check_finite(path, "/head", head->tensors, head->n_tensors, head->params, 1)) ||
        (lora && model_tensors_check_finite(path, "/lora", lora->tensors, lora->n_tensors, lora->params, 1)))
        return -1;
    uint64_t extra_bytes = (head ? model_tensors_bytes(head->tensors, head->n_tensors) : 0) +
                           (lora ? model_tensors_bytes(lora->tensors, lora->n_tensors) : 0) + (uint64_t)H5_FILE_OVERHEAD;
    uint64_t width = 1; /* of the class names, stored as wide as the longest */
    for (int k = 0; k < n_names; k++)
        if (strlen(names[k]) + 1 > width) width = strlen(names[k]) + 1;
    extra_bytes += h5_array_bytes((uint64_t)n_names, width);
    return model_file_write_ex(path, m, lora == NULL, tok, write_extra, &x, extra_bytes);
}

static int read_task(const char *path, hid_t f, TaskModel *t) {
    char task[32], kind[16];
    TaskInfo *i = &t->info;
    if (h5_read_attr_string(path, "", f, "task", task, sizeof task) || task_type_parse(task, &i->type) ||
        h5_read_attr_string(path, "", f, "label_kind", kind, sizeof kind) ||
        h5_read_attr_int(path, "", f, "n_classes", &i->n_classes) || h5_read_attr_int(path, "", f, "n_ctx", &i->n_ctx))
        return -1;
    if (label_kind_parse(kind, &i->label_kind))
        return gpt_error("%s: label_kind is '%s', expected class, real or choice", path, kind);
    if (H5Lexists(f, "label_names", H5P_DEFAULT) <= 0) return 0;
    hsize_t n;
    hid_t d = h5_open_dataset(path, "", f, "label_names", 1, &n);
    if (d < 0) return -1;
    hid_t type = H5Dget_type(d);
    size_t width = H5Tget_size(type);
    char *buf = xcalloc((size_t)n, width + 1);
    int rc = H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0 ? gpt_error("%s: cannot read /label_names", path) : 0;
    H5Tclose(type);
    H5Dclose(d);
    t->n_names = (int)n;
    t->names = xcalloc((size_t)n, sizeof *t->names);
    for (hsize_t k = 0; k < n; k++) {
        t->names[k] = xcalloc(1, width + 1);
        memcpy(t->names[k], buf + k * width, width);
    }
    free(buf);
    return rc;
}

/* A model file's model, refusing non-finite values when check_finite. */
static GPT *load_model(const char *path, int max_batch, int check_finite) {
    return check_finite ? model_file_load(path, max_batch, 0) : model_file_load_any(path, max_batch);
}

/* Reads group WHERE's tensors, refusing non-finite values when check_finite. */
static int read_tensors(const char *path, hid_t f, const char *where, const GPTTensor *t, int n, float *params,
                        int check_finite) {
    return model_tensors_read(path, f, where, t, n, params) ||
           (check_finite && model_tensors_check_finite(path, where, t, n, params, 0));
}

TaskModel *task_model_load(const char *path, const char *base_override, int max_batch, int check_finite) {
    hid_t f = h5_open_read(path);
    if (f < 0) return NULL;
    if (h5_expect_format(path, f, TASK_MODEL_FORMAT, "a fine-tuned model (made by gpt finetune)")) {
        H5Fclose(f);
        return NULL;
    }
    TaskModel *t = xcalloc(1, sizeof *t);
    GPTConfig cfg;
    int rc = model_file_read_config(path, &cfg);
    int has_lora = !rc && H5Lexists(f, "lora", H5P_DEFAULT) > 0, has_head = !rc && H5Lexists(f, "head", H5P_DEFAULT) > 0;
    if (!rc && has_head) rc = read_task(path, f, t);
    if (!rc && has_lora) {
        hid_t g = H5Gopen2(f, "lora", H5P_DEFAULT);
        int rank = 0;
        float alpha = 0;
        char targets[16];
        int64_t fp = 0;
        unsigned tg = 0;
        rc = h5_read_attr_int(path, "/lora", g, "rank", &rank) || h5_read_attr_float(path, "/lora", g, "alpha", &alpha) ||
             h5_read_attr_string(path, "/lora", g, "targets", targets, sizeof targets) ||
             h5_read_attr_string(path, "/lora", g, "base", t->base, sizeof t->base) ||
             h5_read_attr_i64(path, "/lora", g, "base_fingerprint", &fp) || lora_parse_targets(targets, &tg);
        H5Gclose(g);
        if (!rc && rank < 1) rc = gpt_error("%s: /lora rank is %d, expected >= 1", path, rank);
        if (!rc) {
            const char *base = base_override ? base_override : t->base;
            GPTConfig bcfg;
            char why[1024];
            if (model_file_read_config(base, &bcfg))
                rc = gpt_error("%s: its adapters need their base model %s, which does not load: %s (pass --base)", path,
                               base, (snprintf(why, sizeof why, "%s", gpt_last_error()), why));
            else if (memcmp(&bcfg, &cfg, offsetof(GPTConfig, dropout_embd)))
                rc = gpt_error("%s: the base model %s has another shape than the one the adapters were trained on", path,
                               base);
            else if (!(t->m = load_model(base, max_batch, check_finite)))
                rc = -1;
            else if (gpt_params_fingerprint(t->m) != (uint64_t)fp)
                rc = gpt_error("%s: the base model %s is not the one its adapters were trained on (its weights "
                               "differ; pass --base with the right one)", path, base);
            if (!rc) {
                if (base_override) snprintf(t->base, sizeof t->base, "%s", base_override);
                t->lora = lora_create(&cfg, max_batch * cfg.n_ctx, rank, alpha, tg);
                rc = read_tensors(path, f, "/lora", t->lora->tensors, t->lora->n_tensors, t->lora->params, check_finite);
                t->m->lora = t->lora;
            }
        }
    } else if (!rc) {
        t->m = load_model(path, max_batch, check_finite);
        rc = !t->m;
    }
    if (!rc && has_head) {
        t->head = head_create(t->info.type, t->info.label_kind, t->info.n_classes, cfg.n_embd, max_batch);
        rc = read_tensors(path, f, "/head", t->head->tensors, t->head->n_tensors, t->head->params, check_finite);
    }
    H5Fclose(f);
    if (!rc && !(t->tok = tokenizer_load(path))) rc = -1;
    if (rc) {
        task_model_free(t);
        return NULL;
    }
    return t;
}

void task_model_free(TaskModel *t) {
    if (!t) return;
    gpt_free(t->m);
    lora_free(t->lora);
    head_free(t->head);
    tokenizer_free(t->tok);
    for (int k = 0; k < t->n_names; k++) free(t->names[k]);
    free(t->names);
    free(t);
}
