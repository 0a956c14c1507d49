/* finetune_pass.c: the pass runner of fine-tuning (see finetune_tuner.h): examples of
 * a task, or corpus windows, through the model and the head in padded passes of up to
 * max_seqs sequences. Training and evaluation both go through it, and so do the
 * reference entry points finetune_loss_grad and finetune_predict (finetune.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/util.h"
#include "cpu/kernels.h"
#include "dist/gradsync.h"
#include "finetune_tuner.h"

enum { PASS_EXAMPLES = 64 }; /* examples a pass at most (their sequences: max_seqs) */

int64_t finetune_lm_targets(const TaskExample *e) {
    int64_t n = 0;
    for (int k = 0; k < e->n_seqs; k++) n += e->len[k] - 1;
    return n;
}

/* The prediction of an example from the head's outputs (class, value, or answer). */
static double predict_one(const TaskHead *h, const float *out, int n_seqs) {
    int n = h->kind == LABEL_CLASS ? h->n_out : h->kind == LABEL_CHOICE ? n_seqs : 1;
    if (h->kind == LABEL_REAL) return out[0];
    int best = 0;
    for (int k = 1; k < n; k++)
        if (out[k] > out[best]) best = k;
    return best;
}


void finetune_run_examples(Tuner *t, int split, const int64_t *idx, int64_t n, const uint64_t *keys, float l2_scale,
                           float l1_scale, double sums[2], double *pred) {
    GPT *m = t->m;
    int C = m->cfg.n_embd, train = l2_scale != 0.0f;
    for (int64_t first = 0; first < n;) {
        /* take whole examples while their sequences fit */
        int E = 0, S = 0, T = 0;
        TaskExample ex[PASS_EXAMPLES];
        while (first + E < n && E < PASS_EXAMPLES) {
            TaskExample e;
            task_example(t->td, split, idx[first + E], &e);
            if (S + e.n_seqs > t->max_seqs) break;
            for (int k = 0; k < e.n_seqs; k++) T = e.len[k] > T ? e.len[k] : T;
            ex[E++] = e;
            S += e.n_seqs;
        }
        int q = 0;
        for (int e = 0; e < E; e++) {
            t->n_seqs[e] = ex[e].n_seqs;
            t->labels[e] = ex[e].label;
            const int32_t *tok = ex[e].tokens;
            for (int k = 0; k < ex[e].n_seqs; k++, q++) {
                int L = ex[e].len[k];
                int *in = t->in + (size_t)q * T, *tg = t->tgt + (size_t)q * T;
                for (int p = 0; p < T; p++) {
                    in[p] = p < L ? tok[p] : 0;             /* padding after the extract token is never attended to */
                    tg[p] = p + 1 < L ? tok[p + 1] : -1;   /* nothing to predict after the extract token */
                }
                t->keys[q] = keys ? rng_key(keys[first + e], (uint64_t)k) : 0;
                tok += L;
            }
        }
        /* the model's gradients go out layer by layer during the rank's last backward pass */
        if (train && t->sync && first + E == n) gradsync_arm(t->sync);
        const uint64_t *dropout = train && keys ? t->keys : NULL;
        const float *hidden = gpt_forward_hidden(m, t->in, S, T, dropout);
        float *dh = train ? gpt_hidden_grad(m) : NULL;
        if (t->lambda_on) sums[1] += gpt_lm_loss(m, hidden, t->tgt, S * T, l1_scale, dh);
        else if (dh) memset(dh, 0, sizeof(float) * (size_t)S * T * C);
        q = 0;
        for (int e = 0; e < E; e++)
            for (int k = 0; k < ex[e].n_seqs; k++, q++)
                memcpy(t->feats + (size_t)q * C, hidden + ((size_t)q * T + ex[e].len[k] - 1) * C, sizeof(float) * C);
        int labelled = !isnan(t->labels[0]);
        sums[0] += head_forward_backward(t->head, t->feats, t->n_seqs, E, labelled ? t->labels : NULL, l2_scale,
                                         train ? t->dfeats : NULL, t->out);
        if (pred)
            for (int e = 0, r = 0; e < E; e++) {
                pred[first + e] = predict_one(t->head, t->out + (size_t)r * t->head->n_out, ex[e].n_seqs);
                r += t->head->kind == LABEL_CHOICE ? ex[e].n_seqs : 1;
            }
        if (train) {
            q = 0;
            for (int e = 0; e < E; e++)
                for (int k = 0; k < ex[e].n_seqs; k++, q++)
                    vec_add(dh + ((size_t)q * T + ex[e].len[k] - 1) * C, t->dfeats + (size_t)q * C, (size_t)C);
            gpt_backward_hidden(m, t->in, S, T, dropout);
        }
        first += E;
    }
}

void finetune_alloc_passes(Tuner *t) {
    size_t S = (size_t)t->max_seqs, T = (size_t)t->m->cfg.n_ctx, C = (size_t)t->m->cfg.n_embd;
    t->in = xmalloc(sizeof(int) * S * T);
    t->tgt = xmalloc(sizeof(int) * S * T);
    t->keys = xmalloc(sizeof(uint64_t) * S);
    t->n_seqs = xmalloc(sizeof(int) * S);
    t->labels = xmalloc(sizeof(double) * S);
    t->feats = xalloc_floats(S * C);
    t->dfeats = xalloc_floats(S * C);
    t->out = xalloc_floats(S * (size_t)(t->head ? t->head->n_out : 1));
}

void finetune_free_passes(Tuner *t) {
    free(t->in), free(t->tgt), free(t->keys), free(t->n_seqs), free(t->labels), free(t->feats), free(t->dfeats),
        free(t->out);
}

int finetune_predict(GPT *m, TaskHead *h, const TaskData *d, int split, double *pred, double *loss) {
    int64_t n = task_examples(d, split);
    Tuner t = {.m = m, .head = h, .td = (TaskData *)d, .info = task_info(d), .max_seqs = h->max_seqs};
    if (t.info->type != h->type || t.info->label_kind != h->kind || (h->kind == LABEL_CLASS && t.info->n_classes != h->n_out))
        return gpt_error("the data is a %s task with %d class(es), the model's head is for %s with %d",
                         task_type_name(t.info->type), t.info->n_classes, task_type_name(h->type), h->n_out);
    for (int64_t i = 0; i < n; i++) {
        TaskExample e;
        task_example(d, split, i, &e);
        if (e.n_seqs > h->max_seqs)
            return gpt_error("example %lld has %d sequences, more than the %d a pass of this model holds",
                             (long long)i, e.n_seqs, h->max_seqs);
    }
    finetune_alloc_passes(&t);
    int64_t *idx = xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    double sums[2] = {0, 0};
    finetune_run_examples(&t, split, idx, n, NULL, 0.0f, 0.0f, sums, pred);
    *loss = n ? sums[0] / (double)n : NAN;
    free(idx);
    finetune_free_passes(&t);
    return 0;
}

double finetune_loss_grad(GPT *m, TaskHead *h, const TaskData *d, int split, const int64_t *idx, int64_t n,
                          float lambda, double *l2, double *l1) {
    Tuner t = {.m = m, .head = h, .td = (TaskData *)d, .info = task_info(d), .max_seqs = h->max_seqs,
               .lambda_on = lambda > 0.0f};
    int64_t tokens = 0;
    for (int64_t i = 0; i < n; i++) {
        TaskExample e;
        task_example(d, split, idx[i], &e);
        tokens += finetune_lm_targets(&e);
    }
    finetune_alloc_passes(&t);
    double sums[2] = {0, 0};
    finetune_run_examples(&t, split, idx, n, NULL, 1.0f / (float)n, lambda / (float)tokens, sums, NULL);
    finetune_free_passes(&t);
    *l2 = sums[0] / (double)n;
    *l1 = sums[1] / (double)tokens;
    return *l2 + (t.lambda_on ? lambda * *l1 : 0.0);
}

void finetune_run_windows(Tuner *t, float scale, double sums[2]) {
    GPT *m = t->m;
    int T = m->cfg.n_ctx;
    for (int64_t first = 0; first < t->mine; first += t->max_seqs) {
        int B = (int)(t->mine - first < t->max_seqs ? t->mine - first : t->max_seqs);
        if (t->sync && first + B == t->mine) gradsync_arm(t->sync);
        for (int b = 0; b < B; b++) {
            const int32_t *w = t->windows + (size_t)(first + b) * (T + 1);
            for (int p = 0; p < T; p++) t->in[(size_t)b * T + p] = w[p], t->tgt[(size_t)b * T + p] = w[p + 1];
        }
        sums[1] += gpt_forward_backward(m, t->in, t->tgt, B, T, t->step_keys + first, scale) * B * T;
    }
}
