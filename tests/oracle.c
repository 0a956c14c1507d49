/* oracle.c: runs the C engine on a model file and a batch file for the PyTorch
 * comparison in tests/test_oracle.py (file layouts are described there).
 *
 *   oracle grads MODEL.h5 BATCH.h5 OUT.h5 [PRECISION]   loss, logits and every gradient
 *   oracle train MODEL.h5 BATCH.h5 OUT.h5 [PRECISION]   losses, lr and grad norm of AdamW steps
 *                                           (PRECISION: fp32, the default, or bf16)
 *   oracle task MODEL.h5 TASK.h5 LAMBDA OUT.h5 [LORA_RANK LORA_ALPHA TARGETS]
 *                                           finetune_loss_grad over the first min(8, n)
 *                                           /train examples (tests/test_finetune.py)
 *
 * Dropout is off: PyTorch cannot reproduce our masks; tests/unit covers dropout. */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/util.h"
#include "cpu/blas.h"
#include "files/data.h"
#include "files/h5util.h"
#include "files/model_file.h"
#include "model/head.h"
#include "model/lora.h"
#include "model/model.h"
#include "model/optim.h"
#include "run/finetune.h"
#include "text/task.h"

static int die(void) {
    fprintf(stderr, "oracle: %s\n", gpt_last_error());
    return 1;
}

/* Reads dataset `tokens` (int32, rank `rank`) of BATCH; dims receives its shape. */
static int *read_tokens(const char *path, int rank, hsize_t *dims) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return gpt_error("%s: cannot open", path), NULL;
    hid_t d = H5Dopen2(f, "tokens", H5P_DEFAULT);
    hid_t s = d < 0 ? -1 : H5Dget_space(d);
    int *out = NULL;
    if (s >= 0 && H5Sget_simple_extent_ndims(s) == rank) {
        H5Sget_simple_extent_dims(s, dims, NULL);
        size_t n = 1;
        for (int i = 0; i < rank; i++) n *= dims[i];
        out = xmalloc(n * sizeof(int));
        if (H5Dread(d, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
            free(out);
            out = NULL;
        }
    }
    if (!out) gpt_error("%s: expected an int32 dataset 'tokens' of rank %d", path, rank);
    if (s >= 0) H5Sclose(s);
    if (d >= 0) H5Dclose(d);
    H5Fclose(f);
    return out;
}

static double read_attr_double(hid_t f, const char *name) {
    double v = 0;
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_DOUBLE, &v);
    H5Aclose(a);
    return v;
}

/* Splits rows of T+1 tokens into inputs and targets of T. */
static void split_windows(const int *tok, int B, int T, int *in, int *tgt) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            in[b * T + t] = tok[b * (T + 1) + t];
            tgt[b * T + t] = tok[b * (T + 1) + t + 1];
        }
}

static Precision precision = PRECISION_FP32;

static int grads(const char *model_path, const char *batch_path, const char *out_path) {
    hsize_t dims[2];
    int *tok = read_tokens(batch_path, 2, dims);
    if (!tok) return die();
    int B = (int)dims[0], T = (int)dims[1] - 1;
    GPT *m = model_file_load(model_path, B, 1);
    if (!m) return die();
    gpt_set_precision(m, precision);
    if (T < 1 || T > m->cfg.n_ctx) return gpt_error("%s: window of %d tokens, model n_ctx %d", batch_path, T, m->cfg.n_ctx), die();
    if (gpt_check_tokens(m, tok, (size_t)B * (T + 1), batch_path)) return die();
    int *in = xmalloc(sizeof(int) * B * T), *tgt = xmalloc(sizeof(int) * B * T);
    split_windows(tok, B, T, in, tgt);
    size_t V = (size_t)m->cfg.vocab_size;
    float *logits = xalloc_floats((size_t)B * T * V);
    gpt_logits(m, in, B, T, logits);
    gpt_zero_grad(m);
    double loss = gpt_forward_backward(m, in, tgt, B, T, NULL, 1.0f / (float)(B * T));

    hid_t f = H5Fcreate(out_path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t one = 1, ldims[3] = {(hsize_t)B, (hsize_t)T, V};
    h5_write_array(f, "loss", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &one, &loss);
    h5_write_array(f, "logits", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 3, ldims, logits);
    hid_t g = H5Gcreate2(f, "grad", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    for (int i = 0; i < m->n_tensors; i++) {
        const GPTTensor *t = &m->tensors[i];
        hsize_t d[2] = {(hsize_t)t->shape[0], (hsize_t)t->shape[1]};
        h5_write_array(g, t->name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, t->ndim, d, m->grads + t->offset);
    }
    H5Gclose(g);
    H5Fclose(f);
    free(logits);
    free(in);
    free(tgt);
    free(tok);
    gpt_free(m);
    return 0;
}

static int train(const char *model_path, const char *batch_path, const char *out_path) {
    hsize_t dims[3];
    int *tok = read_tokens(batch_path, 3, dims);
    if (!tok) return die();
    int S = (int)dims[0], B = (int)dims[1], T = (int)dims[2] - 1;
    GPT *m = model_file_load(model_path, B, 1);
    if (!m) return die();
    gpt_set_precision(m, precision);
    if (gpt_check_tokens(m, tok, (size_t)S * B * (T + 1), batch_path)) return die();
    hid_t f = H5Fopen(batch_path, H5F_ACC_RDONLY, H5P_DEFAULT);
    OptimConfig oc = {
        .lr = (float)read_attr_double(f, "lr"), .min_lr = (float)read_attr_double(f, "min_lr"),
        .warmup = (long)read_attr_double(f, "warmup"),
        .total_steps = (long)read_attr_double(f, "total_steps"),
        .beta1 = (float)read_attr_double(f, "beta1"), .beta2 = (float)read_attr_double(f, "beta2"),
        .eps = (float)read_attr_double(f, "eps"),
        .weight_decay = (float)read_attr_double(f, "weight_decay"),
        .clip = (float)read_attr_double(f, "clip")};
    int steps = (int)read_attr_double(f, "steps");
    H5Fclose(f);
    if (optim_validate(&oc)) return die();
    AdamW *o = adamw_create(&oc, m->n_params);
    int *in = xmalloc(sizeof(int) * B * T), *tgt = xmalloc(sizeof(int) * B * T);
    double *losses = xcalloc((size_t)steps, sizeof(double));
    double *lrs = xcalloc((size_t)steps, sizeof(double));
    double *norms = xcalloc((size_t)steps, sizeof(double));
    for (int s = 0; s < steps; s++) {
        split_windows(tok + (size_t)(s % S) * B * (T + 1), B, T, in, tgt);
        gpt_zero_grad(m);
        losses[s] = gpt_forward_backward(m, in, tgt, B, T, NULL, 1.0f / (float)(B * T));
        OptimStats st = adamw_step(o, m->params, m->grads, m->tensors, m->n_tensors);
        gpt_weights_changed(m);
        lrs[s] = st.lr;
        norms[s] = st.grad_norm;
    }
    hid_t out = H5Fcreate(out_path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t n = (hsize_t)steps;
    h5_write_array(out, "losses", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &n, losses);
    h5_write_array(out, "lr", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &n, lrs);
    h5_write_array(out, "grad_norm", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &n, norms);
    H5Fclose(out);
    free(losses);
    free(lrs);
    free(norms);
    free(in);
    free(tgt);
    free(tok);
    adamw_free(o);
    gpt_free(m);
    return 0;
}

static void write_floats(hid_t g, const char *name, int ndim, const int *shape, const float *x) {
    hsize_t d[2] = {(hsize_t)shape[0], ndim > 1 ? (hsize_t)shape[1] : 1};
    h5_write_array(g, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, ndim, d, x);
}

static void write_attr(hid_t f, const char *name, double v) {
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, H5T_IEEE_F64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_DOUBLE, &v);
    H5Aclose(a);
    H5Sclose(s);
}

/* The loss and gradients of fine-tuning on the first min(8, n) training examples. OUT:
 * attributes loss, l2, l1; head_weight, head_bias (initial), head_grad_weight,
 * head_grad_bias; without LoRA /grad/<name> of a few model tensors; with LoRA
 * /lora/<name> (the adapter, B filled with small values) and /lora_grad/<name>. */
static int task(int argc, char **argv) {
    const char *model_path = argv[2], *task_path = argv[3], *out_path = argv[5];
    float lambda = (float)atof(argv[4]);
    int rank = argc > 6 ? atoi(argv[6]) : 0;
    TaskData *d = task_load(task_path);
    if (!d) return die();
    const TaskInfo *ti = task_info(d);
    int64_t n = task_examples(d, SPLIT_TRAIN);
    if (n > 8) n = 8;
    if (n < 1) return gpt_error("%s: no training examples", task_path), die();
    int64_t idx[8];
    int S = 0;
    for (int64_t i = 0; i < n; i++) {
        TaskExample e;
        task_example(d, SPLIT_TRAIN, i, &e);
        idx[i] = i;
        S += e.n_seqs;
    }
    GPT *m = model_file_load(model_path, S, rank ? 0 : 1);
    if (!m) return die();
    if (ti->n_ctx > m->cfg.n_ctx) return gpt_error("%s: n_ctx %d > the model's %d", task_path, ti->n_ctx, m->cfg.n_ctx), die();
    TaskHead *h = head_create(ti->type, ti->label_kind, ti->n_classes, m->cfg.n_embd, S);
    head_init(h, 7);
    float *head0 = xalloc_floats(h->n_params);
    memcpy(head0, h->params, sizeof(float) * h->n_params);
    GPTLora *lo = NULL;
    if (rank) {
        unsigned targets;
        if (lora_parse_targets(argv[8], &targets)) return die();
        lo = lora_create(&m->cfg, S * m->cfg.n_ctx, rank, (float)atof(argv[7]), targets);
        lora_init(lo, 3);
        Rng r;
        rng_seed(&r, 11);
        for (int i = 0; i < lo->n_tensors; i++) {
            const GPTTensor *t = &lo->tensors[i];
            if (!strstr(t->name, "lora_B")) continue;
            for (size_t k = 0; k < t->numel; k++) /* uniform in [-0.03, 0.03) */
                lo->params[t->offset + k] = (float)(((double)(rng_next(&r) >> 11) / 9007199254740992.0 - 0.5) * 0.06);
        }
        memset(lo->grads, 0, sizeof(float) * lo->n_params);
        m->lora = lo;
    } else {
        gpt_zero_grad(m);
    }
    memset(h->grads, 0, sizeof(float) * h->n_params);
    double l2, l1;
    double loss = finetune_loss_grad(m, h, d, SPLIT_TRAIN, idx, n, lambda, &l2, &l1);

    hid_t f = H5Fcreate(out_path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    write_attr(f, "loss", loss);
    write_attr(f, "l2", l2);
    write_attr(f, "l1", l1);
    write_attr(f, "n", (double)n);
    const GPTTensor *hw = &h->tensors[0], *hb = &h->tensors[1];
    write_floats(f, "head_weight", hw->ndim, hw->shape, head0 + hw->offset);
    write_floats(f, "head_bias", hb->ndim, hb->shape, head0 + hb->offset);
    write_floats(f, "head_grad_weight", hw->ndim, hw->shape, h->grads + hw->offset);
    write_floats(f, "head_grad_bias", hb->ndim, hb->shape, h->grads + hb->offset);
    if (lo) {
        hid_t p = H5Gcreate2(f, "lora", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        hid_t g = H5Gcreate2(f, "lora_grad", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        for (int i = 0; i < lo->n_tensors; i++) {
            const GPTTensor *t = &lo->tensors[i];
            write_floats(p, t->name, t->ndim, t->shape, lo->params + t->offset);
            write_floats(g, t->name, t->ndim, t->shape, lo->grads + t->offset);
        }
        H5Gclose(p);
        H5Gclose(g);
    } else {
        char last[GPT_TENSOR_NAME_MAX];
        snprintf(last, sizeof last, "h.%d.ln_2.weight", m->cfg.n_layer - 1);
        const char *names[] = {"wte", "h.0.attn.c_attn.weight", "h.0.mlp.c_proj.weight", last};
        hid_t g = H5Gcreate2(f, "grad", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        for (int j = 0; j < 4; j++)
            for (int i = 0; i < m->n_tensors; i++)
                if (!strcmp(m->tensors[i].name, names[j]))
                    write_floats(g, names[j], m->tensors[i].ndim, m->tensors[i].shape, m->grads + m->tensors[i].offset);
        H5Gclose(g);
    }
    H5Fclose(f);
    m->lora = NULL;
    if (lo) lora_free(lo);
    free(head0);
    head_free(h);
    gpt_free(m);
    task_free(d);
    return 0;
}

int main(int argc, char **argv) {
    blas_select_core(argv); /* test the kernels users get */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (argc >= 2 && !strcmp(argv[1], "task") && (argc == 6 || argc == 9)) return task(argc, argv);
    if (argc == 6 && !strcmp(argv[5], precision_name(PRECISION_BF16))) precision = PRECISION_BF16;
    else if (argc == 6 && strcmp(argv[5], precision_name(PRECISION_FP32)))
        return gpt_error("precision '%s': expected fp32 or bf16", argv[5]), die();
    if (precision == PRECISION_BF16 && bf16_path_select()) return die();
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: oracle grads|train MODEL.h5 BATCH.h5 OUT.h5 [fp32|bf16]\n"
                        "       oracle task MODEL.h5 TASK.h5 LAMBDA OUT.h5 [LORA_RANK LORA_ALPHA TARGETS]\n");
        return 2;
    }
    if (!strcmp(argv[1], "grads")) return grads(argv[2], argv[3], argv[4]);
    if (!strcmp(argv[1], "train")) return train(argv[2], argv[3], argv[4]);
    fprintf(stderr, "oracle: unknown mode '%s'\n", argv[1]);
    return 2;
}
