/* train.c: pre-training as a client of the run lifecycle (run.h; see train.h), its
 * validation loss from eval.h. A step reads this rank's windows, runs its micro-steps with the gradient
 * buckets sent during the last backward pass, and applies AdamW with the global norm. */
#include "run/train.h"

#include <hdf5.h>
#include <jansson.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "base/version.h"
#include "cpu/blas.h"
#include "cpu/threads.h"
#include "dist/dist.h"
#include "dist/gradsync.h"
#include "files/checkpoint.h"
#include "files/model_file.h"
#include "model/shard.h"
#include "run/eval.h"

/* N(0, INIT_STD) for a model trained from scratch, as GPT-1 and GPT-2 */
#define INIT_STD 0.02

/* The corpora of a blend with their weights and windows, for config.json. */
static json_t *blend_json(const Blend *b, const int64_t *eval_windows) {
    json_t *list = json_array();
    for (int c = 0; c < b->n; c++)
        json_array_append_new(list, json_pack("{s:s,s:f,s:I,s:I}", "path", b->path[c], "weight", b->weight[c],
                                              "train_windows", (json_int_t)b->windows[c], "eval_windows",
                                              (json_int_t)eval_windows[c]));
    return list;
}

static json_t *config_json(const TrainOptions *o, const GPTConfig *c, const Blend *b, const int64_t *eval_windows) {
    char mpi[MPI_MAX_LIBRARY_VERSION_STRING], hdf5[32];
    int len;
    MPI_Get_library_version(mpi, &len);
    mpi[strcspn(mpi, ",\n")] = '\0';
    unsigned maj, min, rel;
    H5get_libversion(&maj, &min, &rel);
    snprintf(hdf5, sizeof hdf5, "%u.%u.%u", maj, min, rel);
    const OptimConfig *op = &o->optim;
    json_t *model = json_pack("{s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:f,s:s,s:f}", "n_layer", c->n_layer, "n_head",
                              c->n_head, "n_embd", c->n_embd, "n_ctx", c->n_ctx, "vocab_size", c->vocab_size, "n_ffn",
                              c->n_ffn, "dropout_embd", (double)c->dropout_embd, "dropout_resid",
                              (double)c->dropout_resid, "dropout_attn", (double)c->dropout_attn, "ln",
                              config_ln_name(c->ln), "ln_eps", (double)c->ln_eps);
    json_t *optim = json_pack("{s:f,s:f,s:I,s:I,s:f,s:f,s:f,s:f,s:f}", "lr", (double)op->lr, "min_lr",
                              (double)op->min_lr, "warmup", (json_int_t)op->warmup, "total_steps",
                              (json_int_t)op->total_steps, "beta1", (double)op->beta1, "beta2", (double)op->beta2,
                              "eps", (double)op->eps, "weight_decay", (double)op->weight_decay, "clip", (double)op->clip);
    json_t *data = json_pack("{s:s,s:I,s:i,s:i,s:I,s:I,s:I}", "corpus", b->spec, "seed", (json_int_t)o->seed,
                             "batch", o->batch, "accum", o->accum, "global_batch",
                             (json_int_t)o->batch * o->accum * dist_size(), "train_windows", (json_int_t)b->windows[0],
                             "eval_windows", (json_int_t)eval_windows[0]);
    if (b->n > 1) json_object_set_new(data, "blend", blend_json(b, eval_windows));
    json_t *run = json_pack("{s:I,s:i,s:i,s:i,s:I,s:i,s:I,s:f,s:i,s:f,s:f}", "steps", (json_int_t)o->steps, "eval_every",
                            o->run.eval_every, "log_every", o->run.log_every, "max_bad_steps", o->run.max_bad_steps,
                            "bucket_bytes", (json_int_t)o->bucket_bytes, "threads", o->run.threads, "ckpt_every",
                            (json_int_t)o->run.ckpt_every, "ckpt_minutes", o->run.ckpt_minutes, "keep", o->run.keep,
                            "time_limit_s", o->run.time_limit, "collective_timeout_s", o->run.collective_timeout);
    json_object_set_new(run, "threads_reason", json_string(o->run.threads_why));
    json_object_set_new(run, "shard_optimizer", json_boolean(o->run.shard_optimizer));
    json_object_set_new(run, "async_ckpt", json_boolean(o->run.async_ckpt));
    json_object_set_new(run, "precision", json_string(precision_name(o->run.precision)));
    json_object_set_new(run, "grad_reduce", json_string(grad_reduce_names[o->run.grad_reduce]));
    json_t *versions = json_pack("{s:s,s:s,s:s,s:s,s:s}", "gpt", GPT_VERSION, "hdf5", hdf5, "mpi", mpi,
                                 "openblas_core", blas_core_name(), "openblas_core_origin", blas_core_origin());
    json_object_set_new(model, "init", o->init ? json_string(o->init) : json_null());
    /* the weights' initial std, and the residual projections' (attn.c_proj, mlp.c_proj) */
    json_object_set_new(model, "init_std", o->init ? json_null() : json_real(INIT_STD));
    json_object_set_new(model, "init_residual_std",
                        o->init ? json_null()
                                : json_real(o->scale_residual ? INIT_STD / sqrt(2.0 * c->n_layer) : INIT_STD));
    return json_pack("{s:o,s:o,s:o,s:o,s:i,s:o}", "model", model, "optim", optim, "data", data, "run", run,
                     "ranks", dist_size(), "versions", versions);
}

typedef struct {
    TrainOptions *o;          /* batch and accumulation may be adapted on resume */
    GPTConfig cfg;
    GPT *m;
    AdamW *opt;
    GradSync *sync;
    Blend *data;
    Tokenizer *tok;           /* rank 0: the corpora's, written into checkpoints and model.h5 */
    int32_t *buf;
    int *in, *tgt;            /* (accum * batch, T) this rank's windows of the step */
    uint64_t *keys;           /* (accum * batch) */
    int *next_in;             /* sharded: (batch, T) the next step's first micro-step's inputs,
                               * whose wte rows gradsync_gather fetches */
    int64_t eval_windows[BLEND_MAX]; /* of each corpus's /val */
} Trainer;

/* This rank's windows of micro-steps [0, A) of step s, global samples s G + a P B + r B + b,
 * into in and tgt, and their dropout keys (tgt, keys NULL: not wanted). */
static int read_windows(Trainer *t, long s, int A, int *in, int *tgt, uint64_t *keys) {
    const TrainOptions *o = t->o;
    int P = dist_size(), r = dist_rank(), B = o->batch, T = t->cfg.n_ctx;
    int64_t G = (int64_t)P * B * o->accum;
    for (int a = 0; a < A; a++)
        for (int b = 0; b < B; b++) {
            int64_t i = s * G + (int64_t)a * P * B + (int64_t)r * B + b;
            size_t row = (size_t)a * B + b;
            int c;
            int64_t k;
            blend_sample(t->data, o->seed, i, &c, &k);
            int *window_tgt = tgt ? tgt + row * T : NULL;
            if (eval_read_window(t->data->corpus[c], SPLIT_TRAIN, k, T, t->buf, in + row * T, window_tgt)) return -1;
            if (keys) keys[row] = sampler_dropout_key(o->seed, i);
        }
    return 0;
}

static int train_read_step(void *ctx, long s) {
    Trainer *t = ctx;
    if (read_windows(t, s, t->o->accum, t->in, t->tgt, t->keys)) return -1;
    return t->next_in ? read_windows(t, s + 1, 1, t->next_in, NULL, NULL) : 0;
}

static void train_backward(void *ctx, long s, StepGrads *g) {
    (void)s;
    Trainer *t = ctx;
    int B = t->o->batch, A = t->o->accum, T = t->cfg.n_ctx;
    int64_t G = (int64_t)dist_size() * B * A;
    gpt_zero_grad(t->m);
    for (int a = 0; a < A; a++) {
        if (t->sync && a == A - 1) gradsync_arm(t->sync);
        size_t row = (size_t)a * B;
        g->loss[0] += gpt_forward_backward(t->m, t->in + row * T, t->tgt + row * T, B, T, t->keys + row,
                                           1.0f / (float)(G * T)) * B * T;
    }
    g->comm_wait_s = t->sync ? gradsync_finish(t->sync) : 0.0;
    g->grad_norm = t->sync ? sqrt(gradsync_norm_sq(t->sync)) : optim_grad_norm(t->m->grads, t->m->n_params);
    g->tokens = (double)G * T;
}

static OptimStats train_update(void *ctx, double norm, int skip) {
    Trainer *t = ctx;
    if (skip) return (OptimStats){optim_lr_at(&t->o->optim, t->opt->step), norm, 1.0f};
    OptimStats st = adamw_step_norm(t->opt, t->m->params, t->m->grads, t->m->tensors, t->m->n_tensors, norm);
    /* overlapped: the next forward pass waits per layer, wte last */
    if (t->sync) gradsync_gather(t->sync, t->next_in, t->o->batch * t->cfg.n_ctx);
    gpt_weights_changed(t->m);
    return st;
}

static double train_loss(void *ctx, const double sum[RUN_LOSS_PARTS], double tokens, json_t *line, char *detail,
                        size_t size) {
    (void)ctx, (void)line, (void)detail, (void)size;
    return sum[0] / tokens;
}

static int train_evaluate(void *ctx, json_t *line, char *summary, size_t size) {
    Trainer *t = ctx;
    double loss[BLEND_MAX + 1], nll[BLEND_MAX];
    int64_t tokens[BLEND_MAX];
    gradsync_gather_wait(t->sync);
    if (eval_blend(t->m, t->data, SPLIT_VAL, t->eval_windows, loss, nll, tokens)) return -1;
    eval_blend_report(t->data, loss, " | val", line, summary, size);
    return 0;
}

static int train_save(void *ctx, CkptState *st, CkptWriter *w) {
    Trainer *t = ctx;
    st->optim_step = t->opt->step;
    gradsync_gather_wait(t->sync); /* the checkpoint checks the whole model finite */
    return ckpt_save(w, "train", t->o->out, t->o->run.keep, t->m, t->opt, st, t->tok, NULL, 0);
}

static int train_write_result(void *ctx, const char *path) {
    Trainer *t = ctx;
    gradsync_gather_wait(t->sync);
    return model_file_write(path, t->m, t->tok); /* with the corpus's tokenizer, so it can generate alone */
}

/* The first model-configuration field in which a and b differ (dropout rates may). */
static const char *config_difference(const GPTConfig *a, const GPTConfig *b, char *buf, size_t size) {
#define DIFF_INT(f) if (a->f != b->f) return snprintf(buf, size, #f ": checkpoint %d, now %d", a->f, b->f), buf
    DIFF_INT(n_layer);
    DIFF_INT(n_head);
    DIFF_INT(n_embd);
    DIFF_INT(n_ctx);
    DIFF_INT(vocab_size);
    DIFF_INT(n_ffn);
#undef DIFF_INT
    if (a->ln != b->ln)
        return snprintf(buf, size, "ln: checkpoint %s, now %s", config_ln_name(a->ln), config_ln_name(b->ln)), buf;
    if (a->ln_eps != b->ln_eps)
        return snprintf(buf, size, "ln_eps: checkpoint %g, now %g", (double)a->ln_eps, (double)b->ln_eps), buf;
    return NULL;
}

/* Batch and accumulation for this run's P that keep the checkpoint's global batch G: the
 * ones given, else the saved batch and whatever accumulation makes up G. */
static int fit_global_batch(TrainOptions *run, const CkptState *st, const char *path) {
    int P = dist_size();
    int64_t G = st->global_batch;
    json_t *saved = json_loads(st->config, 0, NULL);
    int saved_batch = (int)json_integer_value(json_object_get(json_object_get(saved, "data"), "batch"));
    json_decref(saved);
    if (!run->batch_given && !run->accum_given && saved_batch > 0) run->batch = saved_batch;
    if (!run->accum_given && G % ((int64_t)P * run->batch) == 0) run->accum = (int)(G / ((int64_t)P * run->batch));
    else if (run->accum_given && !run->batch_given && G % ((int64_t)P * run->accum) == 0)
        run->batch = (int)(G / ((int64_t)P * run->accum));
    if ((int64_t)P * run->batch * run->accum != G)
        return gpt_error("global batch: %s was trained with %lld windows a step, but %d rank(s) x batch %d x accum %d "
                         "= %lld; pass --batch and --accum whose product with the ranks is %lld",
                         path, (long long)G, P, run->batch, run->accum, (long long)P * run->batch * run->accum,
                         (long long)G);
    return 0;
}

/* The resume loader: checks the checkpoint against the run (adapting the batch to its
 * global batch), then creates the model and optimizer for that batch and reads them. */
static int train_load(void *ctx, const char *path, const GPTConfig *saved_cfg, const CkptState *st) {
    Trainer *t = ctx;
    TrainOptions *run = t->o;
    char why[256];
    const char *diff = config_difference(saved_cfg, &t->cfg, why, sizeof why);
    if (diff)
        return gpt_error("%s: the model differs from the checkpoint's: %s (the shape cannot change on resume)", path,
                         diff);
    if (st->seed != run->seed)
        return gpt_error("seed: %s was trained with --seed %llu, not %llu (the sample order depends on it)", path,
                         (unsigned long long)st->seed, (unsigned long long)run->seed);
    if (fit_global_batch(run, st, path)) return -1;
    t->m = gpt_create(&t->cfg, run->batch, 1);
    gpt_set_precision(t->m, run->run.precision);
    t->opt = shard_optimizer_create(&run->optim, t->m, dist_rank(), dist_size(), run->run.shard_optimizer);
    if (ckpt_read_tensors(path, t->m, t->opt)) {
        gpt_free(t->m), t->m = NULL;
        adamw_free(t->opt), t->opt = NULL;
        return -2;
    }
    t->opt->step = st->optim_step;
    return 0;
}

static json_t *train_config(void *ctx) {
    Trainer *t = ctx;
    return config_json(t->o, &t->cfg, t->data, t->eval_windows);
}

/* After the resume, before the run directory is prepared: a fresh model unless resumed, the step's buffers. */
static int train_start(void *ctx, int resumed) {
    Trainer *t = ctx;
    const TrainOptions *o = t->o;
    int P = dist_size(), B = o->batch, A = o->accum, T = t->cfg.n_ctx;
    if (!resumed) {
        t->m = gpt_create(&t->cfg, B, 1);
        gpt_set_precision(t->m, o->run.precision);
        if (!o->init) gpt_init_weights(t->m, o->seed, INIT_STD, o->scale_residual); /* the same on every rank */
        else if (model_file_read_weights(o->init, t->m) ||
                 model_tensors_check_finite(o->init, "/model", t->m->tensors, t->m->n_tensors, t->m->params, 0))
            return -1;
        t->opt = shard_optimizer_create(&o->optim, t->m, dist_rank(), P, o->run.shard_optimizer);
    }
    t->sync = gradsync_create(t->m, o->bucket_bytes, o->run.shard_optimizer, o->run.grad_reduce);
    t->buf = xmalloc(sizeof(int32_t) * (size_t)(T + 1));
    t->in = xmalloc(sizeof(int) * (size_t)A * B * T);
    t->tgt = xmalloc(sizeof(int) * (size_t)A * B * T);
    t->keys = xmalloc(sizeof(uint64_t) * (size_t)A * B);
    if (o->run.shard_optimizer && P > 1) t->next_in = xmalloc(sizeof(int) * (size_t)B * T);
    if (dist_rank() == 0) {
        char threads[200];
        printf("training %zu parameters on %s: %d rank(s) x batch %d x accum %d = %lld windows of %d tokens a "
               "step, %lld windows an epoch; gradients in %d bucket(s)%s%s; OpenBLAS %s; %s; %s\n",
               t->m->n_params, t->data->spec, P, B, A, (long long)P * B * A, T, (long long)t->data->windows[0],
               t->sync ? gradsync_buckets(t->sync) : 0, t->sync && o->run.shard_optimizer ? ", optimizer sharded" : "",
               o->run.grad_reduce == GRAD_REDUCE_BF16 ? ", reduced in bf16" : "",
               blas_core_name(), compute_threads_describe(o->run.threads, o->run.threads_why, threads, sizeof threads),
               precision_description(o->run.precision));
        fflush(stdout);
    }
    return 0;
}

/* Collective: opens the corpora and checks the model against them. */
static int open_corpus(Trainer *t) {
    const TrainOptions *o = t->o;
    if (!(t->data = blend_open(o->data, o->n_data))) return -1;
    const Blend *b = t->data;
    GPTConfig *cfg = &t->cfg;
    int cv = blend_vocab_size(b), rc = 0;
    if (cfg->vocab_size == 0) cfg->vocab_size = cv;
    if (cfg->vocab_size < cv)
        rc = gpt_error("%s has a vocabulary of %d tokens, more than the model's --vocab %d", b->path[0], cv,
                       cfg->vocab_size);
    else if (config_validate(cfg) || blend_windows(t->data, cfg->n_ctx))
        rc = -1;
    if (!rc && o->run.eval_every > 0) blend_split_windows(b, SPLIT_VAL, cfg->n_ctx, o->eval_windows, t->eval_windows);
    for (int c = 0; !rc && c < b->n && o->run.eval_every > 0; c++)
        if (t->eval_windows[c] == 0)
            rc = gpt_error("%s: /val holds %lld tokens, fewer than one window of n_ctx + 1 = %d, so --eval-every "
                           "cannot evaluate (prepare with --val-fraction, or pass --eval-every 0)",
                           b->path[c], (long long)corpus_split_tokens(b->corpus[c], SPLIT_VAL), cfg->n_ctx + 1);
    if (!rc && dist_rank() == 0 && !(t->tok = tokenizer_load(b->path[0]))) rc = -1;
    if (!rc && dist_rank() == 0 && o->init) rc = model_file_check_tokenizer(o->init, t->tok, b->path[0]);
    return dist_agree(rc);
}

int train_run(const TrainOptions *opts) {
    TrainOptions run = *opts;
    Trainer t = {.o = &run, .cfg = opts->model};
    run.run.threads = compute_threads_setup(run.run.threads, run.run.threads_why, sizeof run.run.threads_why);
    int rc = open_corpus(&t);
    if (!rc) {
        RunClient c = {.cmd = "train", .out = run.out, .opt = &run.run, .steps = run.steps,
                       .global_batch = (int64_t)dist_size() * run.batch * run.accum, .seed = run.seed,
                       .fingerprint = t.data->fingerprint, .data = t.data->spec,
                       .trained_floats = gpt_params_no_wpe(&t.cfg) + (size_t)t.cfg.n_ctx * t.cfg.n_embd,
                       .flops_per_token = gpt_train_flops_per_token(&t.cfg), .ctx = &t,
                       .load = train_load, .config = train_config, .start = train_start, .read_step = train_read_step,
                       .backward = train_backward, .update = train_update, .loss = train_loss,
                       .evaluate = run.run.eval_every > 0 ? train_evaluate : NULL, .save = train_save,
                       .write_result = train_write_result};
        rc = run_training(&c);
    }
    free(t.buf);
    free(t.in);
    free(t.tgt);
    free(t.keys);
    free(t.next_in);
    gradsync_free(t.sync);
    adamw_free(t.opt);
    gpt_free(t.m);
    tokenizer_free(t.tok);
    blend_close(t.data);
    return rc;
}
