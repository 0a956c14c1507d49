/* train.c: the pre-training loop and evaluation (see train.h).
 *
 * Each step first reads all of this rank's windows for the step and agrees with the
 * other ranks that every read succeeded, so a bad chunk on one rank stops all of them
 * at the same point instead of leaving the others in a collective. The loss, and
 * whether it and the gradient norm are finite, are reduced in one small allreduce after
 * the gradients; a non-finite step skips the update on every rank alike. Rank 0 alone
 * writes the run directory's files. */
#include "train.h"

#include <errno.h>
#include <hdf5.h>
#include <jansson.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "blas.h"
#include "checkpoint.h"
#include "dist.h"
#include "util.h"
#include "version.h"

/* Window k of a split: inputs tokens [k T, k T + T), targets one further. */
static int read_window(Corpus *c, int split, int64_t k, int T, int32_t *buf, int *in, int *tgt) {
    if (corpus_read(c, split, k * T, T + 1, buf)) return -1;
    for (int t = 0; t < T; t++) in[t] = buf[t], tgt[t] = buf[t + 1];
    return 0;
}

int evaluate(GPT *m, Corpus *c, int split, int64_t n_windows, double *nll_sum, int64_t *tokens) {
    int rank = dist_rank(), P = dist_size(), T = m->cfg.n_ctx, B = m->max_batch;
    int32_t *buf = xmalloc(sizeof(int32_t) * (size_t)(T + 1));
    int *in = xmalloc(sizeof(int) * (size_t)B * T), *tgt = xmalloc(sizeof(int) * (size_t)B * T);
    double sums[2] = {0.0, 0.0}; /* NLL, tokens */
    int rc = 0, b = 0;
    for (int64_t w = rank; !rc && w < n_windows; w += P) {
        rc = read_window(c, split, w, T, buf, in + (size_t)b * T, tgt + (size_t)b * T);
        if (!rc && (++b == B || w + P >= n_windows)) { /* a full batch, or this rank's last window */
            sums[0] += gpt_loss(m, in, tgt, b, T) * b * T;
            sums[1] += (double)b * T;
            b = 0;
        }
    }
    free(buf);
    free(in);
    free(tgt);
    if (dist_agree(rc)) return -1;
    MPI_Allreduce(MPI_IN_PLACE, sums, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    *nll_sum = sums[0];
    *tokens = (int64_t)sums[1];
    return 0;
}

static int mkdir_p(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(path, 0777) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(path, 0777) && errno != EEXIST ? -1 : 0;
}

static json_t *config_json(const TrainOptions *o, const GPTConfig *c, int64_t n_windows, int64_t eval_windows) {
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
    json_t *data = json_pack("{s:s,s:I,s:i,s:i,s:I,s:I,s:I}", "corpus", o->data, "seed", (json_int_t)o->seed,
                             "batch", o->batch, "accum", o->accum, "global_batch",
                             (json_int_t)o->batch * o->accum * dist_size(), "train_windows", (json_int_t)n_windows,
                             "eval_windows", (json_int_t)eval_windows);
    json_t *run = json_pack("{s:I,s:i,s:i,s:i,s:I,s:i}", "steps", (json_int_t)o->steps, "eval_every", o->eval_every,
                            "log_every", o->log_every, "max_bad_steps", o->max_bad_steps, "bucket_bytes",
                            (json_int_t)o->bucket_bytes, "threads", o->threads);
    json_t *versions = json_pack("{s:s,s:s,s:s,s:s,s:s}", "gpt", GPT_VERSION, "hdf5", hdf5, "mpi", mpi,
                                 "openblas_core", blas_core_name(), "openblas_core_origin", blas_core_origin());
    return json_pack("{s:o,s:o,s:o,s:o,s:i,s:o}", "model", model, "optim", optim, "data", data, "run", run,
                     "ranks", dist_size(), "versions", versions);
}

/* Rank 0: creates the run directory, refusing one that holds another run. */
static int prepare_run_dir(const TrainOptions *o, json_t *config) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", o->out);
    struct stat st;
    if (!o->overwrite && stat(path, &st) == 0)
        return gpt_error("%s holds another run (%s exists); pass --overwrite to replace it", o->out, path);
    if (mkdir_p(o->out)) return gpt_error("%s: cannot create the run directory: %s", o->out, strerror(errno));
    if (json_dump_file(config, path, JSON_INDENT(2) | JSON_SORT_KEYS))
        return gpt_error("%s: cannot write", path);
    snprintf(path, sizeof path, "%s/metrics.jsonl", o->out);
    FILE *f = fopen(path, "w");
    if (!f) return gpt_error("%s: cannot create: %s", path, strerror(errno));
    fclose(f);
    return 0;
}

typedef struct {
    GPT *m;
    AdamW *opt;
    GradSync *sync;
    Corpus *corpus;
    FILE *metrics;
    int32_t *buf;
    int *in, *tgt;            /* (accum * batch, T) this rank's windows of the step */
    uint64_t *keys;           /* (accum * batch) */
    int64_t n_windows;
} Trainer;

/* This rank's windows of step s: global sample s G + a P B + r B + b. */
static int read_step(Trainer *t, const TrainOptions *o, long s) {
    int P = dist_size(), r = dist_rank(), B = o->batch, T = t->m->cfg.n_ctx;
    int64_t G = (int64_t)P * B * o->accum;
    for (int a = 0; a < o->accum; a++)
        for (int b = 0; b < B; b++) {
            int64_t i = s * G + (int64_t)a * P * B + (int64_t)r * B + b;
            size_t row = (size_t)a * B + b;
            if (read_window(t->corpus, SPLIT_TRAIN, sampler_window(o->seed, t->n_windows, i), T, t->buf,
                            t->in + row * T, t->tgt + row * T))
                return -1;
            t->keys[row] = sampler_dropout_key(o->seed, i);
        }
    return 0;
}

static void print_duration(char *buf, size_t size, double s) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
}

int train_run(const TrainOptions *o) {
    int rank = dist_rank(), P = dist_size();
    Trainer t = {0};
    json_t *config = NULL;
    int rc = 0;
    blas_set_threads(o->threads);
    t.corpus = corpus_open(o->data);
    if (dist_agree(!t.corpus)) return -1;

    GPTConfig cfg = o->model;
    int cv = corpus_vocab_size(t.corpus);
    if (cfg.vocab_size == 0) cfg.vocab_size = cv;
    int64_t n_train = corpus_split_tokens(t.corpus, SPLIT_TRAIN), n_val = corpus_split_tokens(t.corpus, SPLIT_VAL);
    t.n_windows = windows_in(n_train, cfg.n_ctx);
    int64_t eval_windows = o->eval_every > 0 ? windows_in(n_val, cfg.n_ctx) : 0;
    if (eval_windows > o->eval_windows) eval_windows = o->eval_windows;
    if (cfg.vocab_size < cv)
        rc = gpt_error("%s has a vocabulary of %d tokens, more than the model's --vocab %d", o->data, cv, cfg.vocab_size);
    else if (config_validate(&cfg))
        rc = -1;
    else if (t.n_windows < 1)
        rc = gpt_error("%s: /train holds %lld tokens, fewer than one window of n_ctx + 1 = %d", o->data,
                       (long long)n_train, cfg.n_ctx + 1);
    else if (o->eval_every > 0 && eval_windows == 0)
        rc = gpt_error("%s: /val holds %lld tokens, fewer than one window of n_ctx + 1 = %d, so --eval-every "
                       "cannot evaluate (prepare with --val-fraction, or pass --eval-every 0)",
                       o->data, (long long)n_val, cfg.n_ctx + 1);
    if (!rc && rank == 0) {
        config = config_json(o, &cfg, t.n_windows, eval_windows);
        rc = prepare_run_dir(o, config);
    }
    if ((rc = dist_agree(rc))) goto out;

    int B = o->batch, A = o->accum, T = cfg.n_ctx;
    int64_t G = (int64_t)P * B * A;
    t.m = gpt_create(&cfg, B, 1);
    gpt_init_weights(t.m, o->seed, 0.02f, 0); /* the same on every rank */
    t.opt = adamw_create(&o->optim, t.m->n_params);
    if (P > 1) t.sync = gradsync_create(t.m, o->bucket_bytes);
    t.buf = xmalloc(sizeof(int32_t) * (size_t)(T + 1));
    t.in = xmalloc(sizeof(int) * (size_t)A * B * T);
    t.tgt = xmalloc(sizeof(int) * (size_t)A * B * T);
    t.keys = xmalloc(sizeof(uint64_t) * (size_t)A * B);
    double flops_per_token = gpt_train_flops_per_token(&cfg);
    double peak = blas_sgemm_peak_gflops(); /* every rank at once: the machine's limit under load */
    MPI_Allreduce(MPI_IN_PLACE, &peak, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/metrics.jsonl", o->out);
        t.metrics = fopen(path, "a");
        printf("training %zu parameters on %s: %d rank(s) x batch %d x accum %d = %lld windows of %d tokens a "
               "step, %lld windows an epoch; gradients in %d bucket(s); OpenBLAS %s, %d thread(s)\n",
               t.m->n_params, o->data, P, B, A, (long long)G, T, (long long)t.n_windows,
               t.sync ? gradsync_buckets(t.sync) : 0, blas_core_name(), o->threads);
        fflush(stdout);
    }

    double t_start = now_seconds(), t_run = 0.0, interval_tokens = 0.0, interval_time = 0.0;
    int bad = 0;
    for (long s = 0; s < o->steps; s++) {
        double t0 = now_seconds();
        if ((rc = dist_agree(read_step(&t, o, s)))) break;
        gpt_zero_grad(t.m);
        double local[2] = {0.0, 0.0}; /* summed NLL, non-finite flag */
        for (int a = 0; a < A; a++) {
            if (t.sync && a == A - 1) gradsync_arm(t.sync);
            size_t row = (size_t)a * B;
            local[0] += gpt_forward_backward(t.m, t.in + row * T, t.tgt + row * T, B, T, t.keys + row,
                                             1.0f / (float)(G * T)) * B * T;
        }
        double wait = t.sync ? gradsync_finish(t.sync) : 0.0;
        double norm = grad_norm(t.m->grads, t.m->n_params);
        local[1] = !isfinite(local[0]) || !isfinite(norm);
        MPI_Allreduce(MPI_IN_PLACE, local, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        double loss = local[0] / (double)(G * T);
        int skipped = local[1] > 0;
        OptimStats st = {optim_lr_at(&o->optim, t.opt->step), norm, 1.0f};
        if (skipped) bad++;
        else bad = 0, st = adamw_step(t.opt, t.m->params, t.m->grads, t.m->tensors, t.m->n_tensors);
        double step_s = now_seconds() - t0;
        t_run += step_s;
        interval_tokens += (double)G * T;
        interval_time += step_s;

        double val_loss = NAN;
        if (o->eval_every > 0 && ((s + 1) % o->eval_every == 0 || s + 1 == o->steps)) {
            double nll;
            int64_t ntok;
            if ((rc = evaluate(t.m, t.corpus, SPLIT_VAL, eval_windows, &nll, &ntok))) break;
            val_loss = nll / (double)ntok;
        }
        if (rank == 0) {
            double tps = (double)G * T / step_s;
            /* JSON has no NaN or infinity: a non-finite loss or norm is written as null */
            json_t *j = json_pack("{s:I,s:o,s:f,s:o,s:I,s:f,s:f,s:f,s:b}", "step", (json_int_t)(s + 1), "loss",
                                  isfinite(loss) ? json_real(loss) : json_null(), "lr", (double)st.lr, "grad_norm",
                                  isfinite(norm) ? json_real(norm) : json_null(), "tokens",
                                  (json_int_t)((s + 1) * G * T), "tokens_per_s", tps, "step_s", step_s,
                                  "comm_wait_s", wait, "skipped", skipped);
            if (!isnan(val_loss)) json_object_set_new(j, "val_loss", json_real(val_loss));
            if (t.metrics) {
                json_dumpf(j, t.metrics, JSON_COMPACT);
                fputc('\n', t.metrics);
                fflush(t.metrics);
            }
            json_decref(j);
            if (skipped)
                printf("step %ld: non-finite loss or gradient, update skipped (%d in a row)\n", s + 1, bad);
            if ((s + 1) % o->log_every == 0 || s + 1 == o->steps || !isnan(val_loss)) {
                double rate = interval_tokens / interval_time, elapsed = now_seconds() - t_start;
                char el[32], eta[32], val[48] = "";
                print_duration(el, sizeof el, elapsed);
                print_duration(eta, sizeof eta, t_run / (double)(s + 1) * (double)(o->steps - s - 1));
                if (!isnan(val_loss)) snprintf(val, sizeof val, " | val %.4f", val_loss);
                printf("step %ld/%ld | loss %.4f%s | lr %.2e | grad %.3f | %.0f tok/s | MFU %.1f%% | %s elapsed | ETA %s\n",
                       s + 1, o->steps, loss, val, st.lr, norm, rate, 100.0 * rate * flops_per_token / 1e9 / peak, el, eta);
                fflush(stdout);
                interval_tokens = interval_time = 0.0;
            }
        }
        if (bad >= o->max_bad_steps) {
            rc = gpt_error("stopping: %d steps in a row had a non-finite loss or gradient (lower --lr, or check the data)", bad);
            break;
        }
    }
    if (!rc && rank == 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/model.h5", o->out);
        Tokenizer *tok = tokenizer_load(o->data); /* the corpus's, so the model file can generate alone */
        rc = !tok || model_file_write(path, t.m, tok);
        tokenizer_free(tok);
        if (!rc) printf("wrote %s\n", path);
    }
    rc = dist_agree(rc);
out:
    if (t.metrics) fclose(t.metrics);
    json_decref(config);
    free(t.buf);
    free(t.in);
    free(t.tgt);
    free(t.keys);
    gradsync_free(t.sync);
    adamw_free(t.opt);
    gpt_free(t.m);
    corpus_close(t.corpus);
    return rc;
}
