/* finetune.c: the fine-tuning loop (see finetune.h).
 *
 * One routine, run_examples(), turns a list of examples into padded passes of the model
 * and the head; training and evaluation both use it. Everything that trains is a
 * "trainable": a parameter buffer, its gradient, its tensor table and its AdamW, so the
 * model (full fine-tuning) or the adapters (LoRA) and the head go through the same
 * allreduce, clipping, update and checkpoint code. */
#include "run/finetune.h"

#include <hdf5.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/blas.h"
#include "files/checkpoint.h"
#include "files/data.h"
#include "dist/dist.h"
#include "dist/gradsync.h"
#include "files/h5util.h"
#include "model/head.h"
#include "cpu/kernels.h"
#include "model/lora.h"
#include "files/model_file.h"
#include "model/prune.h"
#include "base/rng.h"
#include "run/run.h"
#include "model/shard.h"
#include "text/task.h"
#include "files/task_model.h"
#include "run/train.h"
#include "base/util.h"
#include "base/version.h"
#include "files/formats.h"

/* ---- metrics ---- */

static double pearson(const double *x, const double *y, int64_t n) {
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int64_t i = 0; i < n; i++) mx += x[i], my += y[i];
    mx /= (double)n, my /= (double)n;
    for (int64_t i = 0; i < n; i++) {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx) * (x[i] - mx);
        syy += (y[i] - my) * (y[i] - my);
    }
    return sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : NAN;
}

static const double *rank_keys;
static int by_key(const void *a, const void *b) {
    double x = rank_keys[*(const int64_t *)a], y = rank_keys[*(const int64_t *)b];
    return (x > y) - (x < y);
}

/* Ranks 1..n, ties sharing their mean rank (as Spearman's coefficient needs). */
static void ranks_of(const double *v, int64_t n, double *out) {
    int64_t *idx = xmalloc(sizeof(int64_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    rank_keys = v;
    qsort(idx, (size_t)n, sizeof *idx, by_key);
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j + 1 < n && v[idx[j + 1]] == v[idx[i]]) j++;
        for (int64_t k = i; k <= j; k++) out[idx[k]] = 0.5 * (double)(i + j) + 1.0;
        i = j + 1;
    }
    free(idx);
}

TaskMetrics task_metrics(int label_kind, const double *pred, const double *label, int64_t n) {
    TaskMetrics t = {NAN, NAN, NAN, NAN};
    if (n <= 0) return t;
    if (label_kind != LABEL_REAL) {
        int64_t right = 0;
        for (int64_t i = 0; i < n; i++) right += pred[i] == label[i];
        t.accuracy = (double)right / (double)n;
        return t;
    }
    double se = 0;
    for (int64_t i = 0; i < n; i++) se += (pred[i] - label[i]) * (pred[i] - label[i]);
    t.mse = se / (double)n;
    t.pearson = pearson(pred, label, n);
    double *rp = xmalloc(sizeof(double) * (size_t)n), *rl = xmalloc(sizeof(double) * (size_t)n);
    ranks_of(pred, n, rp);
    ranks_of(label, n, rl);
    t.spearman = pearson(rp, rl, n);
    free(rp), free(rl);
    return t;
}

/* ---- the tuner ---- */

typedef struct {
    const char *group;         /* in checkpoints: "model", "lora", "head" */
    const GPTTensor *tensors;
    int n_tensors;
    size_t n;
    float *params, *grads;
    AdamW *opt;
} Trainable;

enum { MAX_TRAINABLES = 2 };

typedef struct {
    /* what trains and on what */
    GPT *m;
    GPTLora *lora;
    TaskHead *head;
    TaskData *td;              /* the task, or */
    const TaskInfo *info;
    Blend *corpus;             /* corpora: continued pre-training */
    int64_t corpus_val[BLEND_MAX]; /* windows evaluated of each corpus's /val */
    Trainable tr[MAX_TRAINABLES];
    int n_tr;
    PruneMask *pruned;         /* a pruned model's zeros, kept through every update */
    GradSync *sync;            /* full fine-tuning on P > 1: the model's gradients, overlapped */
    uint64_t fingerprint, base_fingerprint;
    int64_t n_train, n_val;    /* examples or windows: of /train, and evaluated of /val */
    int lambda_on;             /* the LM loss is computed */
    /* the run */
    const FinetuneOptions *o;
    OptimConfig oc;            /* with the run's warm-up and length */
    long steps;
    Tokenizer *tok;            /* rank 0 */
    /* this rank's samples of the step */
    int64_t mine;
    int64_t l1_tokens;         /* the step's L1 targets over all ranks */
    int64_t *step_idx;         /* (batch) their examples or windows */
    uint64_t *step_keys;       /* (batch) their dropout keys */
    int32_t *windows;          /* (batch, n_ctx + 1) corpus: their tokens */
    /* pass buffers */
    int max_seqs;              /* sequences a pass */
    int *in, *tgt;             /* (max_seqs, n_ctx) */
    uint64_t *keys;            /* (max_seqs) */
    int *n_seqs;               /* (max_seqs) per example of the pass */
    double *labels;            /* (max_seqs) */
    float *feats, *dfeats;     /* (max_seqs, C) */
    float *out;                /* (max_seqs, K) head outputs */
} Tuner;

/* A hash of the task data's training examples and labels: resuming needs the same data. */
static uint64_t task_fingerprint(const TaskData *d) {
    uint64_t h = rng_key((uint64_t)task_info(d)->type, (uint64_t)task_examples(d, SPLIT_TRAIN));
    for (int64_t i = 0; i < task_examples(d, SPLIT_TRAIN); i++) {
        TaskExample e;
        task_example(d, SPLIT_TRAIN, i, &e);
        int64_t n = 0;
        for (int s = 0; s < e.n_seqs; s++) n += e.len[s];
        for (int64_t k = 0; k < n; k++) h = rng_key(h, (uint64_t)e.tokens[k]);
        h = rng_key(h, (uint64_t)(int64_t)(e.label * 1e6));
    }
    return h;
}

/* The next-token targets of an example for L1: every position but each extract token. */
static int64_t lm_targets(const TaskExample *e) {
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

enum { PASS_EXAMPLES = 64 }; /* examples a pass at most (their sequences: max_seqs) */

/* Runs examples idx[0..n) of a split through the model and head in passes of up to
 * max_seqs sequences. Training (l2_scale != 0): gradients accumulate with dL/dhead
 * scaled by l2_scale and the LM loss by l1_scale. Sums: [0] head loss, [1] LM NLL.
 * pred (n), if not NULL, receives the predictions. */
static void run_examples(Tuner *t, int split, const int64_t *idx, int64_t n, const uint64_t *keys, float l2_scale,
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

static void alloc_pass_buffers(Tuner *t) {
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

static void free_pass_buffers(Tuner *t) {
    free(t->in), free(t->tgt), free(t->keys), free(t->n_seqs), free(t->labels), free(t->feats), free(t->dfeats),
        free(t->out);
}

int task_predict(GPT *m, TaskHead *h, const TaskData *d, int split, double *pred, double *loss) {
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
    alloc_pass_buffers(&t);
    int64_t *idx = xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    double sums[2] = {0, 0};
    run_examples(&t, split, idx, n, NULL, 0.0f, 0.0f, sums, pred);
    *loss = n ? sums[0] / (double)n : NAN;
    free(idx);
    free_pass_buffers(&t);
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
        tokens += lm_targets(&e);
    }
    alloc_pass_buffers(&t);
    double sums[2] = {0, 0};
    run_examples(&t, split, idx, n, NULL, 1.0f / (float)n, lambda / (float)tokens, sums, NULL);
    free_pass_buffers(&t);
    *l2 = sums[0] / (double)n;
    *l1 = sums[1] / (double)tokens;
    return *l2 + (t.lambda_on ? lambda * *l1 : 0.0);
}

/* ---- gradients and updates ---- */

static void add_trainable(Tuner *t, const char *group, const GPTTensor *tensors, int n_tensors, size_t n,
                          float *params, float *grads, AdamW *opt) {
    t->tr[t->n_tr++] = (Trainable){group, tensors, n_tensors, n, params, grads, opt};
}

static void zero_grads(Tuner *t) {
    for (int i = 0; i < t->n_tr; i++) memset(t->tr[i].grads, 0, sizeof(float) * t->tr[i].n);
}

/* ---- checkpoints ---- */

/* The model's trainable in a full fine-tuning (always the first), else NULL. */
static Trainable *model_trainable(Tuner *t) { return !strcmp(t->tr[0].group, "model") ? &t->tr[0] : NULL; }

static AdamW *model_opt(Tuner *t) { return model_trainable(t) ? t->tr[0].opt : NULL; }

/* The trainables besides the model, as checkpoint extras; returns how many. */
static int extras_of(Tuner *t, CkptExtra *x) {
    int n = 0;
    for (int i = model_trainable(t) ? 1 : 0; i < t->n_tr; i++)
        x[n++] = (CkptExtra){t->tr[i].group, t->tr[i].n_tensors, t->tr[i].tensors, t->tr[i].params, t->tr[i].opt->m,
                             t->tr[i].opt->v};
    return n;
}

static int save(void *ctx, CkptState *st, CkptWriter *w) {
    Tuner *t = ctx;
    CkptExtra x[MAX_TRAINABLES];
    int n = extras_of(t, x);
    st->optim_step = t->tr[0].opt->step;
    return ckpt_save(w, "finetune", t->o->out, t->o->run.keep, t->m, model_opt(t), st, t->tok, x, n);
}

/* The base fingerprint a LoRA run's config.json (kept in its checkpoints) records, as text. */
static void fingerprint_text(uint64_t fp, char *buf, size_t size) { snprintf(buf, size, "%016llx", (unsigned long long)fp); }

/* The resume loader: checks the checkpoint against the run and reads what trains. */
static int load_checkpoint(void *ctx, const char *path, const GPTConfig *cfg, const CkptState *st) {
    Tuner *t = ctx;
    const FinetuneOptions *o = t->o;
    if (memcmp(cfg, &t->m->cfg, offsetof(GPTConfig, dropout_embd)) || st->seed != o->seed ||
        st->global_batch != o->batch)
        return gpt_error("%s belongs to another fine-tuning (the model shape, --seed or --batch differ: it "
                         "was made from %s with seed %llu and batch %lld)", path, st->corpus,
                         (unsigned long long)st->seed, (long long)st->global_batch);
    if (t->lora) { /* adapters only fit the base they were trained on */
        json_t *saved = json_loads(st->config, 0, NULL);
        const char *fp = json_string_value(json_object_get(json_object_get(saved, "lora"), "base_fingerprint"));
        char base[32], now[32];
        snprintf(base, sizeof base, "%s", fp ? fp : "not recorded");
        json_decref(saved);
        fingerprint_text(t->base_fingerprint, now, sizeof now);
        if (strcmp(base, now))
            return gpt_error("%s: its LoRA adapters were trained on another base model than --init %s (base "
                             "fingerprint %s, now %s); resume with the --init it was started with", path, o->init,
                             base, now);
    }
    CkptExtra x[MAX_TRAINABLES];
    int nx = extras_of(t, x);
    if ((model_opt(t) && ckpt_read_tensors(path, t->m, model_opt(t))) || dist_agree(ckpt_read_extras(path, x, nx)))
        return -2;
    for (int i = 0; i < t->n_tr; i++) t->tr[i].opt->step = st->optim_step;
    return 0;
}

/* ---- evaluation ---- */

/* Collective: predictions for every example of a split (example w on rank w mod P) and
 * the head's mean loss. */
static int evaluate_task(Tuner *t, int split, TaskMetrics *tm, double *loss) {
    int64_t n = task_examples(t->td, split);
    int rank = dist_rank(), P = dist_size();
    double *pred = xcalloc((size_t)(n ? n : 1), sizeof(double)), *label = xcalloc((size_t)(n ? n : 1), sizeof(double));
    int64_t *idx = xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1)), mine = 0;
    for (int64_t w = rank; w < n; w += P) idx[mine++] = w;
    double *local = xcalloc((size_t)(mine ? mine : 1), sizeof(double)), sums[2] = {0, 0};
    int lambda_on = t->lambda_on;
    t->lambda_on = 0;
    run_examples(t, split, idx, mine, NULL, 0.0f, 0.0f, sums, local);
    t->lambda_on = lambda_on;
    for (int64_t i = 0; i < mine; i++) {
        TaskExample e;
        task_example(t->td, split, idx[i], &e);
        pred[idx[i]] = local[i];
        label[idx[i]] = e.label;
    }
    dist_sum(pred, (size_t)n);
    dist_sum(label, (size_t)n);
    dist_sum(sums, 1);
    *tm = task_metrics(t->info->label_kind, pred, label, n);
    *loss = n ? sums[0] / (double)n : NAN;
    free(pred), free(label), free(idx), free(local);
    return 0;
}

static void metrics_json(json_t *j, const char *prefix, const TaskMetrics *tm, double loss) {
    char key[64];
    const char *names[] = {"loss", "accuracy", "pearson", "spearman", "mse"};
    double v[] = {loss, tm->accuracy, tm->pearson, tm->spearman, tm->mse};
    for (int i = 0; i < 5; i++)
        if (!isnan(v[i])) {
            snprintf(key, sizeof key, "%s%s", prefix, names[i]);
            json_object_set_new(j, key, json_real_or_null(v[i]));
        }
}

/* ---- the data of a step ---- */

/* Step s's samples j = 0..G-1 are global samples s G + j; rank r takes those with
 * j mod P = r. Task: the examples (and the step's L1 token count, which needs them all).
 * Corpus: the windows, read now so that a bad read is agreed on before any collective. */
static int read_step(void *ctx, long s) {
    Tuner *t = ctx;
    const FinetuneOptions *o = t->o;
    int P = dist_size(), rank = dist_rank(), G = o->batch, T = t->m->cfg.n_ctx;
    int64_t *l1_tokens = &t->l1_tokens;
    t->mine = 0;
    *l1_tokens = 0;
    for (int j = 0; j < G; j++) {
        int64_t i = s * (int64_t)G + j, k;
        int c = 0;
        if (t->corpus) blend_sample(t->corpus, o->seed, i, &c, &k);
        else k = sampler_window(o->seed, t->n_train, i);
        if (t->corpus) *l1_tokens += T;
        else {
            TaskExample e;
            task_example(t->td, SPLIT_TRAIN, k, &e);
            *l1_tokens += lm_targets(&e);
        }
        if (j % P != rank) continue;
        t->step_keys[t->mine] = sampler_dropout_key(o->seed, i);
        t->step_idx[t->mine] = k;
        if (t->corpus &&
            corpus_read(t->corpus->corpus[c], SPLIT_TRAIN, k * T, T + 1, t->windows + (size_t)t->mine * (T + 1)))
            return -1;
        t->mine++;
    }
    return 0;
}

/* Corpus: next-token prediction on this rank's windows, in passes of max_seqs. */
static void run_windows(Tuner *t, float scale, double sums[2]) {
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

/* Collective: validation metrics (task) or the mean NLL over the first eval windows of /val. */
static int evaluate_val(void *ctx, json_t *line, char *summary, size_t size) {
    Tuner *t = ctx;
    TaskMetrics tm = {NAN, NAN, NAN, NAN};
    double loss;
    if (t->corpus) {
        double losses[BLEND_MAX + 1], nll[BLEND_MAX];
        int64_t tokens[BLEND_MAX];
        if (evaluate_blend(t->m, t->corpus, SPLIT_VAL, t->corpus_val, losses, nll, tokens)) return -1;
        blend_val_report(t->corpus, losses, " | val loss", line, summary, size);
        return 0;
    } else {
        if (evaluate_task(t, SPLIT_VAL, &tm, &loss)) return -1;
        if (t->info->label_kind == LABEL_REAL)
            snprintf(summary, size, " | val loss %.4f pearson %.4f spearman %.4f", loss, tm.pearson, tm.spearman);
        else snprintf(summary, size, " | val loss %.4f accuracy %.4f", loss, tm.accuracy);
    }
    metrics_json(line, "val_", &tm, loss);
    return 0;
}

/* Collective: the step's gradients of everything that trains, summed over the ranks. */
static void backward(void *ctx, long s, StepGrads *g) {
    (void)s;
    Tuner *t = ctx;
    zero_grads(t);
    if (t->corpus) run_windows(t, 1.0f / (float)t->l1_tokens, g->loss);
    else run_examples(t, SPLIT_TRAIN, t->step_idx, t->mine, t->step_keys, 1.0f / (float)t->o->batch,
                      t->o->lambda / (float)t->l1_tokens, g->loss, NULL);
    if (t->sync && t->mine == 0) gradsync_arm(t->sync); /* no pass: gradsync_finish sends its zeros */
    g->comm_wait_s = t->sync ? gradsync_finish(t->sync) : 0.0;
    for (int i = 0; i < t->n_tr; i++)
        if (!(t->sync && &t->tr[i] == model_trainable(t))) dist_sum_floats(t->tr[i].grads, t->tr[i].n);
    double sq = 0;
    for (int i = 0; i < t->n_tr; i++)
        sq += t->sync && &t->tr[i] == model_trainable(t) ? gradsync_norm_sq(t->sync)
                                                         : sum_squares(t->tr[i].grads, t->tr[i].n);
    g->grad_norm = sqrt(sq);
    g->tokens = (double)t->l1_tokens;
}

static OptimStats update(void *ctx, double norm, int skip) {
    Tuner *t = ctx;
    OptimStats st = {optim_lr_at(&t->oc, t->tr[0].opt->step), norm, 1.0f};
    if (skip) return st;
    for (int i = 0; i < t->n_tr; i++)
        st = adamw_step_norm(t->tr[i].opt, t->tr[i].params, t->tr[i].grads, t->tr[i].tensors, t->tr[i].n_tensors, norm);
    if (t->sync) gradsync_gather(t->sync);
    if (t->pruned) prune_mask_apply(t->pruned, t->m->params);
    gpt_weights_changed(t->m);
    return st;
}

/* L3 = L2 + lambda L1 from the summed head loss and LM NLL (continued pre-training: L1). */
static double step_loss(void *ctx, const double sum[RUN_LOSS_PARTS], double tokens, json_t *line, char *detail,
                        size_t size) {
    Tuner *t = ctx;
    double l2 = t->corpus ? 0.0 : sum[0] / t->o->batch, l1 = sum[1] / tokens;
    if (!t->corpus) {
        json_object_set_new(line, "task_loss", json_real_or_null(l2));
        snprintf(detail, size, " (task %.4f%s)", l2, t->lambda_on ? "" : ", no LM loss");
    }
    if (t->corpus || t->lambda_on) json_object_set_new(line, "lm_loss", json_real_or_null(l1));
    return t->corpus ? l1 : l2 + (t->lambda_on ? t->o->lambda * l1 : 0.0);
}

/* ---- the run ---- */

static json_t *config_json(void *ctx) {
    const Tuner *t = ctx;
    const FinetuneOptions *o = t->o;
    long steps = t->steps;
    const OptimConfig *op = &o->optim;
    char targets[16] = "";
    if (o->lora_rank) lora_targets_name(o->lora_targets, targets, sizeof targets);
    json_t *c = json_pack("{s:s,s:s,s:s,s:i,s:i,s:f,s:I,s:f,s:i,s:i}", "init", o->init, "data",
                          t->corpus ? t->corpus->spec : o->data[0], "task",
                          t->corpus ? "lm" : task_type_name(t->info->type), "batch", o->batch, "micro_batch",
                          t->max_seqs, "epochs", o->epochs, "steps", (json_int_t)steps, "lambda",
                          (double)o->lambda, "ranks", dist_size(), "eval_every", o->run.eval_every);
    json_object_set_new(c, "threads", json_integer(o->run.threads));
    json_object_set_new(c, "shard_optimizer", json_boolean(o->run.shard_optimizer));
    json_object_set_new(c, "async_ckpt", json_boolean(o->run.async_ckpt));
    json_object_set_new(c, "precision", json_string(precision_name(o->run.precision)));
    json_object_set_new(c, "optim", json_pack("{s:f,s:I,s:f,s:f,s:s}", "lr", (double)op->lr, "warmup",
                                              (json_int_t)op->warmup, "weight_decay", (double)op->weight_decay, "clip",
                                              (double)op->clip, "schedule", "linear"));
    char base[32];
    fingerprint_text(t->base_fingerprint, base, sizeof base);
    json_object_set_new(c, "lora", o->lora_rank ? json_pack("{s:i,s:f,s:s,s:s}", "rank", o->lora_rank, "alpha",
                                                            (double)o->lora_alpha, "targets", targets,
                                                            "base_fingerprint", base)
                                                : json_null());
    json_object_set_new(c, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(c, "versions", json_pack("{s:s,s:s}", "gpt", GPT_VERSION, "openblas_core", blas_core_name()));
    return c;
}

/* The "format" attribute of a file ("" if it has none). Not collective. */
static void file_format(const char *path, char *buf, size_t size) {
    buf[0] = '\0';
    hid_t f = h5_is_hdf5_file(path) ? h5_open_read(path) : -1; /* what is not (a FIFO) task_load reports */
    if (f < 0) return;
    if (h5_read_format(path, f, buf, size)) buf[0] = '\0';
    H5Fclose(f);
}

/* Collective (a corpus is opened by all ranks): the data, checked against the model. */
static int open_data(Tuner *t, const FinetuneOptions *o, const GPTConfig *cfg) {
    char format[32];
    const char *first = blend_spec_path(o->data[0]);
    file_format(first, format, sizeof format);
    if (!strcmp(format, CORPUS_FORMAT)) { /* continued pre-training, on one corpus or a blend */
        if (!(t->corpus = blend_open(o->data, o->n_data))) return -1;
        const Blend *b = t->corpus;
        int rc = 0;
        t->fingerprint = b->fingerprint;
        if (blend_vocab_size(b) > cfg->vocab_size)
            rc = gpt_error("%s has a vocabulary of %d tokens, more than the %d of the model %s", b->path[0],
                           blend_vocab_size(b), cfg->vocab_size, o->init);
        else rc = blend_windows(t->corpus, cfg->n_ctx);
        t->n_train = t->n_val = 0;
        if (!rc) blend_split_windows(b, SPLIT_VAL, cfg->n_ctx, 100, t->corpus_val);
        for (int c = 0; !rc && c < b->n; c++) t->n_train += b->windows[c], t->n_val += t->corpus_val[c];
        t->max_seqs = 1;
        return dist_agree(rc);
    }
    int rc = 0;
    if (o->n_data > 1) rc = gpt_error("--data: a blend is of corpora (gpt prepare); %s is not one", first);
    else if (!(t->td = task_load(o->data[0]))) rc = -1;
    else if ((t->info = task_info(t->td))->vocab_size > cfg->vocab_size)
        rc = gpt_error("%s: its tokenizer has %d tokens, more than the vocabulary of the model %s (%d)", o->data[0],
                       t->info->vocab_size, o->init, cfg->vocab_size);
    else if (t->info->n_ctx > cfg->n_ctx)
        rc = gpt_error("%s: sequences of up to %d tokens, longer than the context of the model %s (%d); prepare "
                       "it with --n-ctx %d", o->data[0], t->info->n_ctx, o->init, cfg->n_ctx, cfg->n_ctx);
    else if ((t->n_train = task_examples(t->td, SPLIT_TRAIN)) < 1)
        rc = gpt_error("%s: /train has no examples", o->data[0]);
    if (!rc) {
        t->n_val = task_examples(t->td, SPLIT_VAL);
        t->max_seqs = 1;
        for (int s = 0; s < 2; s++)
            for (int64_t i = 0; i < task_examples(t->td, s); i++) {
                TaskExample e;
                task_example(t->td, s, i, &e);
                if (e.n_seqs > t->max_seqs) t->max_seqs = e.n_seqs;
            }
        t->fingerprint = task_fingerprint(t->td);
        t->lambda_on = o->lambda > 0.0f;
    }
    return dist_agree(rc);
}

/* Rank 0: the data's tokenizer (for the files written), which must be the model's. */
static int load_tokenizer(Tuner *t, const FinetuneOptions *o) {
    const char *data = t->corpus ? t->corpus->path[0] : o->data[0];
    if (!(t->tok = tokenizer_load(data))) return -1;
    return model_file_check_tokenizer(o->init, t->tok, data);
}

/* Every rank: the model (or the frozen base and its adapters), the head and the optimizers. */
static int build(Tuner *t, const FinetuneOptions *o, const GPTConfig *cfg, const OptimConfig *oc) {
    double sparsity = 0.0;
    int rc = model_file_read_pruned(o->init, &sparsity);
    if (!rc && !(t->m = model_file_load(o->init, t->max_seqs, o->lora_rank == 0))) rc = -1;
    if (!rc) gpt_set_precision(t->m, o->run.precision);
    if (dist_agree(rc)) return -1;
    if (o->lora_rank) {
        t->base_fingerprint = gpt_params_fingerprint(t->m);
        t->lora = lora_create(cfg, t->max_seqs * cfg->n_ctx, o->lora_rank, o->lora_alpha, o->lora_targets);
        lora_init(t->lora, o->seed);
        t->m->lora = t->lora;
        add_trainable(t, "lora", t->lora->tensors, t->lora->n_tensors, t->lora->n_params, t->lora->params,
                      t->lora->grads, adamw_create(oc, t->lora->n_params));
    } else {
        if (sparsity > 0.0) t->pruned = prune_mask_create(t->m);
        add_trainable(t, "model", t->m->tensors, t->m->n_tensors, t->m->n_params, t->m->params, t->m->grads,
                      shard_optimizer_create(oc, t->m, dist_rank(), dist_size(), o->run.shard_optimizer));
    }
    if (!t->corpus) {
        t->head = head_create(t->info->type, t->info->label_kind, t->info->n_classes, cfg->n_embd, t->max_seqs);
        head_init(t->head, rng_key(o->seed, 1));
        add_trainable(t, "head", t->head->tensors, t->head->n_tensors, t->head->n_params, t->head->params,
                      t->head->grads, adamw_create(oc, t->head->n_params));
    }
    return 0;
}

/* Rank 0: RUN_DIR/model.h5: a plain model after continued full pre-training, else a task
 * model (the model or the adapters, and the head if any). */
static int write_result(void *ctx, const char *path) {
    Tuner *t = ctx;
    const FinetuneOptions *o = t->o;
    int rc;
    if (t->corpus && !t->lora) rc = model_file_write(path, t->m, t->tok);
    else {
        int K = t->head && t->info->label_kind == LABEL_CLASS ? t->info->n_classes : 0, n_names = 0;
        char **names = xcalloc((size_t)(K ? K : 1), sizeof(char *));
        for (int k = 0; k < K && task_class_name(t->td, k); k++) names[n_names++] = (char *)task_class_name(t->td, k);
        char base[PATH_MAX]; /* absolute: the adapters are used from other directories */
        if (!realpath(o->init, base)) snprintf(base, sizeof base, "%s", o->init);
        rc = task_model_write(path, t->m, t->lora, base, t->base_fingerprint, t->head, t->head ? t->info : NULL,
                              names, n_names, t->tok);
        free(names);
    }
    return rc;
}

/* Parameters that train: the model's or the adapters', and the head's. */
static size_t trained_params(const Tuner *t) {
    size_t n = 0;
    for (int i = 0; i < t->n_tr; i++) n += t->tr[i].n;
    return n;
}

/* After the run directory is ready: the step's buffers and the opening line. */
static int start(void *ctx, int resumed) {
    (void)resumed;
    Tuner *t = ctx;
    const FinetuneOptions *o = t->o;
    int G = o->batch, T = t->m->cfg.n_ctx;
    alloc_pass_buffers(t);
    t->step_idx = xmalloc(sizeof(int64_t) * (size_t)G);
    t->step_keys = xmalloc(sizeof(uint64_t) * (size_t)G);
    if (t->corpus) t->windows = xmalloc(sizeof(int32_t) * (size_t)G * (T + 1));
    if (dist_rank() == 0) {
        printf("fine-tuning %s (%s) on %s: %lld %s, %d a step over %d rank(s), %ld steps (%.3g epochs); training "
               "%zu parameters%s", o->init, t->corpus ? "language modelling" : task_type_name(t->info->type),
               t->corpus ? t->corpus->spec : o->data[0],
               (long long)t->n_train, t->corpus ? "windows" : "examples", G, dist_size(), t->steps, o->epochs,
               trained_params(t), t->lora ? " (LoRA adapters)" : "");
        if (!t->corpus) printf("; lambda %g", (double)o->lambda);
        printf("%s", t->pruned ? "; keeping the pruned weights zero" : "");
        printf("; %s\n", precision_description(o->run.precision));
        fflush(stdout);
    }
    return 0;
}

int finetune_run(const FinetuneOptions *o) {
    int rc;
    Tuner t = {.o = o};
    compute_threads_set(o->run.threads);
    GPTConfig cfg;
    if ((rc = dist_agree(model_file_read_config(o->init, &cfg)))) return -1;
    if ((rc = open_data(&t, o, &cfg))) goto out;
    /* a pass holds at least one whole example */
    if (t.max_seqs < o->micro_batch) t.max_seqs = o->micro_batch;
    t.steps = (long)ceil(o->epochs * (double)t.n_train / (double)o->batch);
    if (t.steps < 1) t.steps = 1;
    t.oc = o->optim;
    t.oc.total_steps = t.steps;
    t.oc.warmup = (long)ceil(o->warmup_fraction * (double)t.steps);
    t.oc.linear_decay = 1;
    if ((rc = build(&t, o, &cfg, &t.oc))) goto out;
    if (dist_size() > 1 && !t.lora)
        t.sync = gradsync_create(t.m, (size_t)GRADSYNC_BUCKET_MB << 20, o->run.shard_optimizer);
    if (dist_rank() == 0) rc = load_tokenizer(&t, o);
    if ((rc = dist_agree(rc))) goto out;
    RunClient c = {.cmd = "finetune", .out = o->out, .opt = &o->run, .steps = t.steps, .global_batch = o->batch,
                   .seed = o->seed, .fingerprint = t.fingerprint,
                   .data = t.corpus ? t.corpus->spec : o->data[0], .trained_floats = trained_params(&t),
                   .ctx = &t, .load = load_checkpoint, .config = config_json, .start = start,
                   .read_step = read_step, .backward = backward, .update = update, .loss = step_loss,
                   .evaluate = t.n_val > 0 ? evaluate_val : NULL, .save = save, .write_result = write_result};
    rc = run_training(&c);
out:
    free_pass_buffers(&t);
    free(t.step_idx), free(t.step_keys), free(t.windows);
    for (int i = 0; i < t.n_tr; i++) adamw_free(t.tr[i].opt);
    prune_mask_free(t.pruned);
    gradsync_free(t.sync);
    if (t.m) t.m->lora = NULL;
    gpt_free(t.m);
    lora_free(t.lora);
    head_free(t.head);
    task_free(t.td);
    blend_close(t.corpus);
    tokenizer_free(t.tok);
    return rc;
}
