/* head.c: the fine-tuning output layer and its losses (see head.h). The features of a
 * batch are gathered into one matrix so that the layer is one matmul each way. */
#include "model/head.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/util.h"
#include "cpu/kernels.h"

TaskHead *head_create(TaskType type, LabelKind kind, int n_classes, int C, int max_seqs) {
    TaskHead *h = xcalloc(1, sizeof *h);
    h->type = type, h->kind = kind, h->C = C, h->max_seqs = max_seqs;
    h->n_out = kind == LABEL_CLASS ? n_classes : 1;
    h->n_tensors = 2;
    GPTTensor *w = &h->tensors[0], *b = &h->tensors[1];
    snprintf(w->name, sizeof w->name, "weight");
    w->ndim = 2, w->shape[0] = h->n_out, w->shape[1] = C, w->numel = (size_t)h->n_out * C, w->decay = 1;
    w->init = INIT_NORMAL;
    snprintf(b->name, sizeof b->name, "bias");
    b->ndim = 1, b->shape[0] = h->n_out, b->offset = w->numel, b->numel = (size_t)h->n_out, b->init = INIT_ZERO;
    h->n_params = w->numel + b->numel;
    h->params = xalloc_floats(h->n_params);
    h->grads = xalloc_floats(h->n_params);
    h->x = xalloc_floats((size_t)max_seqs * C);
    h->dx = xalloc_floats((size_t)max_seqs * C);
    h->y = xalloc_floats((size_t)max_seqs * h->n_out);
    return h;
}

void head_free(TaskHead *h) {
    if (!h) return;
    free(h->params);
    free(h->grads);
    free(h->x);
    free(h->dx);
    free(h->y);
    free(h);
}

void head_init(TaskHead *h, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    for (size_t i = 0; i < h->tensors[0].numel; i++) h->params[i] = 0.02f * rng_normal(&rng);
    memset(h->params + h->tensors[1].offset, 0, sizeof(float) * h->tensors[1].numel);
}

/* A class or answer index for softmax_xent; an example without a label (NAN, prediction
 * input) gets -1, which softmax_xent ignores: no loss, no gradient. NAN is never converted
 * to int, which C leaves undefined. */
static int label_index(double label) { return isnan(label) ? -1 : (int)label; }

double head_forward_backward(TaskHead *h, const float *feats, const int *n_seqs, int E, const double *labels,
                             float grad_scale, float *dfeats, float *out) {
    int C = h->C, K = h->n_out, choice = h->kind == LABEL_CHOICE;
    /* rows of the layer: one per sequence for choice, one per example otherwise */
    int rows = 0;
    for (int e = 0, s = 0; e < E; s += n_seqs[e], e++) {
        if (choice) {
            memcpy(h->x + (size_t)rows * C, feats + (size_t)s * C, sizeof(float) * (size_t)C * n_seqs[e]);
            rows += n_seqs[e];
            continue;
        }
        float *x = h->x + (size_t)rows++ * C;
        memcpy(x, feats + (size_t)s * C, sizeof(float) * (size_t)C);
        for (int k = 1; k < n_seqs[e]; k++) vec_add(x, feats + (size_t)(s + k) * C, (size_t)C); /* similar */
    }
    const float *w = h->params, *b = h->params + h->tensors[1].offset;
    matmul_forward(h->y, h->x, w, b, rows, C, K);
    memcpy(out, h->y, sizeof(float) * (size_t)rows * K);
    if (!labels) return 0.0;

    int train = dfeats != NULL;
    float gs = train ? grad_scale : 0.0f;
    double loss = 0.0;
    if (h->kind == LABEL_REAL) {
        for (int e = 0; e < E; e++) {
            double d = isnan(labels[e]) ? 0.0 : (double)h->y[e] - labels[e];
            loss += d * d;
            h->y[e] = (float)(2.0 * d) * gs;
        }
    } else if (choice) {
        for (int e = 0, r = 0; e < E; r += n_seqs[e], e++) {
            int t = label_index(labels[e]);
            loss += softmax_xent(h->y + r, &t, 1, n_seqs[e], gs);
        }
    } else {
        for (int e = 0; e < E; e++) {
            int t = label_index(labels[e]);
            loss += softmax_xent(h->y + (size_t)e * K, &t, 1, K, gs);
        }
    }
    if (!train) return loss;
    /* h->y now holds dL/dy (scaled) */
    float *gw = h->grads, *gb = h->grads + h->tensors[1].offset;
    matmul_backward(h->dx, gw, gb, h->y, h->x, w, rows, C, K, 0);
    for (int e = 0, s = 0, r = 0; e < E; s += n_seqs[e], e++) {
        if (choice) {
            memcpy(dfeats + (size_t)s * C, h->dx + (size_t)r * C, sizeof(float) * (size_t)C * n_seqs[e]);
            r += n_seqs[e];
            continue;
        }
        for (int k = 0; k < n_seqs[e]; k++) /* each sequence of a similar pair gets the sum's gradient */
            memcpy(dfeats + (size_t)(s + k) * C, h->dx + (size_t)r * C, sizeof(float) * (size_t)C);
        r++;
    }
    return loss;
}
