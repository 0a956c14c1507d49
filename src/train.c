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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "blas.h"
#include "checkpoint.h"
#include "dist.h"
#include "model_file.h"
#include "run.h"
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
    json_t *run = json_pack("{s:I,s:i,s:i,s:i,s:I,s:i,s:I,s:f,s:i,s:f}", "steps", (json_int_t)o->steps, "eval_every",
                            o->run.eval_every, "log_every", o->run.log_every, "max_bad_steps", o->run.max_bad_steps,
                            "bucket_bytes", (json_int_t)o->bucket_bytes, "threads", o->run.threads, "ckpt_every",
                            (json_int_t)o->run.ckpt_every, "ckpt_minutes", o->run.ckpt_minutes, "keep", o->run.keep,
                            "time_limit_s", o->run.time_limit);
    json_t *versions = json_pack("{s:s,s:s,s:s,s:s,s:s}", "gpt", GPT_VERSION, "hdf5", hdf5, "mpi", mpi,
                                 "openblas_core", blas_core_name(), "openblas_core_origin", blas_core_origin());
    return json_pack("{s:o,s:o,s:o,s:o,s:i,s:o}", "model", model, "optim", optim, "data", data, "run", run,
                     "ranks", dist_size(), "versions", versions);
}

typedef struct {
    GPT *m;
    AdamW *opt;
    GradSync *sync;
    Corpus *corpus;
    Tokenizer *tok;           /* rank 0: the corpus's, written into checkpoints and model.h5 */
    FILE *metrics;
    int32_t *buf;
    int *in, *tgt;            /* (accum * batch, T) this rank's windows of the step */
    uint64_t *keys;           /* (accum * batch) */
    int64_t n_windows;
    uint64_t fingerprint;     /* of the corpus */
    long step;                /* steps done */
    int bad;                  /* non-finite steps in a row */
    char *config;             /* config.json's text */
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

/* ---- checkpoints and resuming ---- */

static int save(Trainer *t, const TrainOptions *o) {
    CkptState st = {.step = t->step, .optim_step = t->opt->step, .bad_steps = t->bad,
                    .samples = (int64_t)t->step * dist_size() * o->batch * o->accum, .seed = o->seed,
                    .global_batch = (int64_t)dist_size() * o->batch * o->accum, .ranks = dist_size(),
                    .corpus_fingerprint = t->fingerprint, .config = t->config};
    st.tokens = st.samples * t->m->cfg.n_ctx;
    snprintf(st.corpus, sizeof st.corpus, "%s", o->data);
    return ckpt_save("train", o->out, o->run.keep, t->m, t->opt, &st, t->tok, NULL, 0);
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

/* Collective: reads a checkpoint's header and checks it against this run (which it
 * adapts to the global batch). -2: the file is unreadable or broken (auto may try an
 * older one); -1: it belongs to another run (model, corpus, seed or global batch). */
static int resume_header(const char *path, TrainOptions *run, const GPTConfig *cfg, uint64_t fingerprint,
                         GPTConfig *saved_cfg, CkptState *st) {
    if (dist_agree(ckpt_read_header(path, saved_cfg, st))) return -2;
    char why[256];
    const char *diff = config_difference(saved_cfg, cfg, why, sizeof why);
    int rc = 0;
    if (diff)
        rc = gpt_error("%s: the model differs from the checkpoint's: %s (the shape cannot change on resume)",
                       path, diff);
    else if (st->corpus_fingerprint != fingerprint)
        rc = gpt_error("corpus: %s holds other tokens than the corpus %s was trained on (%s)", run->data, path,
                       st->corpus);
    else if (st->seed != run->seed)
        rc = gpt_error("seed: %s was trained with --seed %llu, not %llu (the sample order depends on it)", path,
                       (unsigned long long)st->seed, (unsigned long long)run->seed);
    else
        rc = fit_global_batch(run, st, path);
    if (rc) ckpt_state_free(st);
    return rc;
}

typedef struct {
    Trainer *t;
    TrainOptions *run;
    const GPTConfig *cfg;
    char **saved_config;
} Resume;

/* ckpt_resume's loader: checks the checkpoint against the run, then creates t->m and
 * t->opt for the run's batch and reads them. */
static int load_checkpoint(const char *path, void *ctx) {
    Resume *r = ctx;
    Trainer *t = r->t;
    GPTConfig saved_cfg;
    CkptState st;
    int rc = resume_header(path, r->run, r->cfg, t->fingerprint, &saved_cfg, &st);
    if (rc) return rc;
    t->m = gpt_create(r->cfg, r->run->batch, 1);
    t->opt = adamw_create(&r->run->optim, t->m->n_params);
    if (ckpt_read_tensors(path, t->m, t->opt)) {
        ckpt_state_free(&st);
        gpt_free(t->m), t->m = NULL;
        adamw_free(t->opt), t->opt = NULL;
        return -2;
    }
    t->step = st.step, t->bad = st.bad_steps, t->opt->step = st.optim_step;
    if (dist_rank() == 0)
        printf("resuming from %s: step %ld (saved %s by %d rank(s)), %lld tokens seen\n", path, st.step, st.time,
               st.ranks, (long long)st.tokens);
    *r->saved_config = st.config; /* ownership passes to the caller */
    return 0;
}

/* ---- the loop ---- */

int train_run(const TrainOptions *opts) {
    int rank = dist_rank(), P = dist_size();
    TrainOptions run = *opts, *o = &run;
    Trainer t = {0};
    json_t *config = NULL;
    int rc = 0;
    blas_set_threads(o->run.threads);
    run_catch_stop_signals();
    t.corpus = corpus_open(o->data);
    if (dist_agree(!t.corpus)) return -1;
    if ((rc = dist_agree(corpus_fingerprint(t.corpus, &t.fingerprint)))) goto out;

    GPTConfig cfg = o->model;
    int cv = corpus_vocab_size(t.corpus);
    if (cfg.vocab_size == 0) cfg.vocab_size = cv;
    int64_t n_train = corpus_split_tokens(t.corpus, SPLIT_TRAIN), n_val = corpus_split_tokens(t.corpus, SPLIT_VAL);
    t.n_windows = windows_in(n_train, cfg.n_ctx);
    int64_t eval_windows = o->run.eval_every > 0 ? windows_in(n_val, cfg.n_ctx) : 0;
    if (eval_windows > o->eval_windows) eval_windows = o->eval_windows;
    if (cfg.vocab_size < cv)
        rc = gpt_error("%s has a vocabulary of %d tokens, more than the model's --vocab %d", o->data, cv, cfg.vocab_size);
    else if (config_validate(&cfg))
        rc = -1;
    else if (t.n_windows < 1)
        rc = gpt_error("%s: /train holds %lld tokens, fewer than one window of n_ctx + 1 = %d", o->data,
                       (long long)n_train, cfg.n_ctx + 1);
    else if (o->run.eval_every > 0 && eval_windows == 0)
        rc = gpt_error("%s: /val holds %lld tokens, fewer than one window of n_ctx + 1 = %d, so --eval-every "
                       "cannot evaluate (prepare with --val-fraction, or pass --eval-every 0)",
                       o->data, (long long)n_val, cfg.n_ctx + 1);
    if (!rc && rank == 0 && !(t.tok = tokenizer_load(o->data))) rc = -1;
    if ((rc = dist_agree(rc))) goto out;

    char resumed_from[4096] = "", *saved_config = NULL;
    Resume r = {&t, o, &cfg, &saved_config};
    if (o->run.resume && (rc = ckpt_resume(o->out, o->run.resume, "train", load_checkpoint, &r, resumed_from,
                                       sizeof resumed_from)))
        goto out;
    /* after resume(), which may have fitted batch and accumulation to the saved global batch */
    config = config_json(o, &cfg, t.n_windows, eval_windows);
    if (saved_config)
        json_object_set_new(config, "resume", json_pack("{s:s,s:I}", "checkpoint", resumed_from, "step",
                                                        (json_int_t)t.step));
    t.config = json_dumps(config, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (saved_config && rank == 0) run_report_changes(saved_config, t.config);
    free(saved_config);
    if (rank == 0) rc = run_dir_prepare(o->out, o->run.overwrite, o->run.resume != NULL, config, t.step);
    if ((rc = dist_agree(rc))) goto out;

    int B = o->batch, A = o->accum, T = cfg.n_ctx;
    int64_t G = (int64_t)P * B * A;
    if (!t.m) {
        t.m = gpt_create(&cfg, B, 1);
        gpt_init_weights(t.m, o->seed, 0.02f, 0); /* the same on every rank */
        t.opt = adamw_create(&o->optim, t.m->n_params);
    }
    if (P > 1) t.sync = gradsync_create(t.m, o->bucket_bytes);
    t.buf = xmalloc(sizeof(int32_t) * (size_t)(T + 1));
    t.in = xmalloc(sizeof(int) * (size_t)A * B * T);
    t.tgt = xmalloc(sizeof(int) * (size_t)A * B * T);
    t.keys = xmalloc(sizeof(uint64_t) * (size_t)A * B);
    double flops_per_token = gpt_train_flops_per_token(&cfg);
    double peak = blas_sgemm_peak_gflops(); /* every rank at once: the machine's limit under load */
    MPI_Allreduce(MPI_IN_PLACE, &peak, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        t.metrics = run_metrics_open(o->out);
        printf("training %zu parameters on %s: %d rank(s) x batch %d x accum %d = %lld windows of %d tokens a "
               "step, %lld windows an epoch; gradients in %d bucket(s); OpenBLAS %s, %d thread(s)\n",
               t.m->n_params, o->data, P, B, A, (long long)G, T, (long long)t.n_windows,
               t.sync ? gradsync_buckets(t.sync) : 0, blas_core_name(), o->run.threads);
        fflush(stdout);
    }

    int checkpointing = o->run.ckpt_every > 0 || o->run.ckpt_minutes > 0.0;
    /* until one is measured, a checkpoint is assumed to write at 100 MB/s */
    double t_start = now_seconds(), t_run = 0.0, interval_tokens = 0.0, interval_time = 0.0;
    double last_ckpt = t_start, ckpt_s = 12.0 * (double)t.m->n_params / 1e8, max_step_s = 0.0, max_eval_s = 0.0;
    long first_step = t.step;
    for (long s = t.step; s < o->steps; s++) {
        double t0 = now_seconds();
        if ((rc = dist_agree(read_step(&t, o, s)))) break;
        gpt_zero_grad(t.m);
        /* summed NLL, non-finite flag, signals, out of time, checkpoint due by the clock */
        double local[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
        for (int a = 0; a < A; a++) {
            if (t.sync && a == A - 1) gradsync_arm(t.sync);
            size_t row = (size_t)a * B;
            local[0] += gpt_forward_backward(t.m, t.in + row * T, t.tgt + row * T, B, T, t.keys + row,
                                             1.0f / (float)(G * T)) * B * T;
        }
        double wait = t.sync ? gradsync_finish(t.sync) : 0.0;
        double norm = grad_norm(t.m->grads, t.m->n_params);
        local[1] = !isfinite(local[0]) || !isfinite(norm);
        local[2] = run_stop_signal != 0;
        local[3] = rank == 0 && run_out_of_time(o->run.time_limit, o->run.t_start, max_step_s, max_eval_s, ckpt_s);
        local[4] = rank == 0 && o->run.ckpt_minutes > 0.0 && now_seconds() - last_ckpt >= 60.0 * o->run.ckpt_minutes;
        MPI_Allreduce(MPI_IN_PLACE, local, 5, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        double loss = local[0] / (double)(G * T);
        int skipped = local[1] > 0;
        OptimStats st = {optim_lr_at(&o->optim, t.opt->step), norm, 1.0f};
        if (skipped) t.bad++;
        else t.bad = 0, st = adamw_step_norm(t.opt, t.m->params, t.m->grads, t.m->tensors, t.m->n_tensors, norm);
        t.step = s + 1;
        double step_s = now_seconds() - t0;
        t_run += step_s;
        interval_tokens += (double)G * T;
        interval_time += step_s;
        if (step_s > max_step_s) max_step_s = step_s;

        double val_loss = NAN;
        if (o->run.eval_every > 0 && ((s + 1) % o->run.eval_every == 0 || s + 1 == o->steps)) {
            double nll, te = now_seconds();
            int64_t ntok;
            if ((rc = evaluate(t.m, t.corpus, SPLIT_VAL, eval_windows, &nll, &ntok))) break;
            val_loss = nll / (double)ntok;
            if (now_seconds() - te > max_eval_s) max_eval_s = now_seconds() - te;
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
            run_metrics_write(t.metrics, j);
            json_decref(j);
            if (skipped)
                printf("step %ld: non-finite loss or gradient, update skipped (%d in a row)\n", s + 1, t.bad);
            if ((s + 1) % o->run.log_every == 0 || s + 1 == o->steps || !isnan(val_loss)) {
                double rate = interval_tokens / interval_time, elapsed = now_seconds() - t_start;
                char el[32], eta[32], val[48] = "";
                run_print_duration(el, sizeof el, elapsed);
                run_print_duration(eta, sizeof eta, t_run / (double)(s + 1 - first_step) * (double)(o->steps - s - 1));
                if (!isnan(val_loss)) snprintf(val, sizeof val, " | val %.4f", val_loss);
                printf("step %ld/%ld | loss %.4f%s | lr %.2e | grad %.3f | %.0f tok/s | MFU %.1f%% | %s elapsed | ETA %s\n",
                       s + 1, o->steps, loss, val, st.lr, norm, rate, 100.0 * rate * flops_per_token / 1e9 / peak, el, eta);
                fflush(stdout);
                interval_tokens = interval_time = 0.0;
            }
        }
        fault_point("step", s + 1, rank);
        if (t.bad >= o->run.max_bad_steps) {
            rc = gpt_error("stopping: %d steps in a row had a non-finite loss or gradient (lower --lr, or check the data)", t.bad);
            break;
        }
        int stop = (local[2] > 0 || local[3] > 0) && s + 1 < o->steps; /* after the last step: just finish */
        if (stop || local[4] > 0 || (o->run.ckpt_every > 0 && (s + 1) % o->run.ckpt_every == 0) ||
            (checkpointing && s + 1 == o->steps)) {
            double tc = now_seconds();
            if ((rc = save(&t, o))) break;
            last_ckpt = now_seconds();
            ckpt_s = last_ckpt - tc;
        }
        if (stop) {
            if (rank == 0) {
                char path[4096];
                ckpt_path(path, sizeof path, o->out, t.step);
                const char *why = run_stop_reason(local[2] > 0 ? "on a signal to another rank" : "before the time limit");
                printf("stopping after step %ld %s: wrote %s; exit code %d, continue with --resume auto\n", t.step,
                       why, path, TRAIN_EXIT_STOPPED);
                fflush(stdout);
            }
            rc = 1;
            break;
        }
    }
    int finished = rc == 0;
    if (finished && rank == 0) {
        if (first_step >= o->steps)
            printf("the run was already at step %ld of %ld: nothing left to train\n", t.step, o->steps);
        char path[4096];
        snprintf(path, sizeof path, "%s/model.h5", o->out);
        rc = model_file_write(path, t.m, t.tok); /* with the corpus's tokenizer, so it can generate alone */
        if (!rc) printf("wrote %s\n", path);
    }
    if (finished) rc = dist_agree(rc); /* the model file is rank 0's alone */
out:
    if (t.metrics) fclose(t.metrics);
    json_decref(config);
    free(t.config);
    free(t.buf);
    free(t.in);
    free(t.tgt);
    free(t.keys);
    gradsync_free(t.sync);
    adamw_free(t.opt);
    gpt_free(t.m);
    tokenizer_free(t.tok);
    corpus_close(t.corpus);
    return rc;
}
