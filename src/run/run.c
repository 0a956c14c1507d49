/* run.c: the training lifecycle that gpt train and gpt finetune share (see run.h). */
#include "run/run.h"

#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/stop.h"
#include "base/util.h"
#include "cpu/blas.h"
#include "dist/dist.h"
#include "dist/watchdog.h"
#include "files/run_layout.h"
#include "run/run_dir.h"

/* ---- signals and the clock ---- */

static const char *stop_reason(const char *otherwise) {
    static char why[16];
    const char *name = stop_signal_name();
    return name ? (snprintf(why, sizeof why, "on %s", name), why) : otherwise;
}

/* Whether a run that must end by t_start + time_limit (0: never) has to stop now to still
 * fit the rest of a step, an evaluation and a checkpoint (their longest durations so far). */
static int out_of_time(const RunOptions *o, double step_s, double eval_s, double ckpt_s) {
    if (o->time_limit <= 0.0) return 0;
    double reserve = 1.5 * (step_s + eval_s + ckpt_s) + 5.0;
    return now_seconds() - o->t_start + reserve >= o->time_limit;
}

static void print_duration(char *buf, size_t size, double s) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
}

void step_control_reduce(StepControl *c) {
    int *flags[] = {&c->nonfinite, &c->signalled, &c->out_of_time, &c->ckpt_due, &c->metrics_failed, &c->ckpt_failed};
    enum { N_FLAGS = sizeof flags / sizeof flags[0] };
    double v[RUN_LOSS_PARTS + N_FLAGS];
    memcpy(v, c->loss, sizeof c->loss);
    for (int i = 0; i < N_FLAGS; i++) v[RUN_LOSS_PARTS + i] = *flags[i];
    watchdog_enter("the step's control allreduce");
    dist_sum(v, RUN_LOSS_PARTS + N_FLAGS);
    watchdog_leave();
    memcpy(c->loss, v, sizeof c->loss);
    for (int i = 0; i < N_FLAGS; i++) *flags[i] = v[RUN_LOSS_PARTS + i] > 0;
}

/* ---- the run's state ---- */

typedef struct {
    const RunClient *c;
    long step;            /* steps done */
    int bad;              /* non-finite steps in a row */
    int64_t global_batch; /* samples a step: a resumed run keeps its checkpoint's */
    double tokens;        /* trained on, over all ranks */
    char *config;         /* config.json's text, kept in checkpoints */
    char *saved_config;   /* the resumed checkpoint's */
    char from[PATH_MAX];  /* the checkpoint resumed from ("" for none) */
    CkptWriter *writer;   /* --async-ckpt */
} Run;

/* ckpt_resume's loader: the header, the client's checks and reads, then the run's state. */
static int resume_from(const char *path, void *ctx) {
    Run *r = ctx;
    GPTConfig cfg;
    CkptState st;
    if (dist_agree(ckpt_read_header(path, &cfg, &st))) return -2;
    int rc = 0;
    if (st.corpus_fingerprint != r->c->fingerprint && !r->c->opt->allow_data_change)
        rc = gpt_error("data: %s was trained on %s, other data than %s (other tokens, corpora or weights); pass "
                       "--allow-data-change to go on with the new data deliberately",
                       path, st.corpus, r->c->data);
    else if (st.corpus_fingerprint != r->c->fingerprint && dist_rank() == 0)
        printf("--allow-data-change: %s was trained on %s; going on with %s\n", path, st.corpus, r->c->data);
    if (!rc) rc = r->c->load(r->c->ctx, path, &cfg, &st);
    if (rc) {
        ckpt_state_free(&st);
        return rc;
    }
    r->step = st.step, r->bad = st.bad_steps, r->tokens = (double)st.tokens, r->global_batch = st.global_batch;
    if (dist_rank() == 0)
        printf("resuming from %s: step %ld (saved %s by %d rank(s)), %lld tokens seen\n", path, st.step, st.time,
               st.ranks, (long long)st.tokens);
    r->saved_config = st.config; /* ownership passes to the run */
    return 0;
}

static int save_checkpoint(Run *r) {
    const RunClient *c = r->c;
    CkptState st = {.step = r->step, .bad_steps = r->bad, .samples = (int64_t)r->step * r->global_batch,
                    .tokens = (int64_t)r->tokens, .seed = c->seed, .global_batch = r->global_batch,
                    .ranks = dist_size(), .corpus_fingerprint = c->fingerprint, .config = r->config};
    snprintf(st.corpus, sizeof st.corpus, "%s", c->data);
    watchdog_enter(r->writer ? "staging a checkpoint" : "writing a checkpoint");
    int rc = c->save(c->ctx, &st, r->writer);
    watchdog_leave();
    return rc;
}

/* Collective in effect: the background checkpoint's end (each rank's writer ends with
 * the others'); *write_s its duration. */
static int wait_writer(Run *r, double *write_s) {
    watchdog_enter("the background checkpoint");
    int rc = ckpt_writer_wait(r->writer, write_s);
    watchdog_leave();
    return rc;
}

/* Before the client's start: the lock, a fresh run's check that the directory holds no
 * other run, the resume. */
static int begin(Run *r, int *lock) {
    const RunClient *c = r->c;
    const RunOptions *o = c->opt;
    int rank = dist_rank(), rc = 0;
    if (rank == 0 && (*lock = run_dir_lock(c->out)) < 0) rc = -1;
    if (!rc && rank == 0 && !o->overwrite && !o->resume) rc = run_dir_check_unused(c->out);
    if (dist_agree(rc)) return -1;
    watchdog_enter("reading a checkpoint");
    rc = o->resume ? ckpt_resume(c->out, o->resume, c->cmd, resume_from, r, r->from, sizeof r->from) : 0;
    watchdog_leave();
    return rc ? -1 : 0;
}

/* After the client's start, so that a model that cannot be made loses nothing: --overwrite
 * clears the old run, then config.json, metrics.jsonl and the lock's claim. */
static int prepare_dir(Run *r, int lock) {
    const RunClient *c = r->c;
    const RunOptions *o = c->opt;
    int rank = dist_rank(), rc = 0;
    if (rank == 0 && o->overwrite) rc = run_dir_clear(c->out);
    if (dist_agree(rc)) return -1;
    json_t *config = c->config(c->ctx);
    if (r->saved_config)
        json_object_set_new(config, "resume", json_pack("{s:s,s:I}", "checkpoint", r->from, "step", (json_int_t)r->step));
    r->config = json_dumps(config, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (rank == 0) {
        if (r->saved_config) run_report_changes(r->saved_config, r->config);
        rc = run_dir_prepare(c->out, config, r->step);
        if (!rc) run_dir_claim(lock);
    }
    json_decref(config);
    return dist_agree(rc);
}

/* Rank 0: the step's line of metrics.jsonl and, every log_every steps, its progress line. */
typedef struct {
    int metrics;        /* metrics.jsonl's descriptor (rank 0), else -1 */
    const char *out;    /* the run directory */
    int metrics_failed;
    char metrics_error[512];
    /* the checkpointing step's line waits for the checkpoint's file (release_lines),
     * and the lines after it behind it; the writer's thread writes them: lock guards these */
    pthread_mutex_t lock;
    json_t *held;
    int holding;        /* held[0] is a checkpointing step's line */
    size_t next_mark;   /* > 0: held[next_mark] is the next checkpoint's, waiting for its turn */
    double t_start, t_run, interval_tokens, interval_s;
    long first_step;
    double peak_gflops; /* sgemm, all ranks: the MFU's denominator */
} Report;

static void report_step(Report *p, const RunClient *c, const Run *r, json_t *line, double loss, const OptimStats *st,
                        double step_s, const StepGrads *g, int skipped, const char *detail, const char *val) {
    long s = r->step;
    json_object_set_new(line, "step", json_integer(s));
    json_object_set_new(line, "loss", json_real_or_null(loss));
    json_object_set_new(line, "lr", json_real_or_null(st->lr));
    json_object_set_new(line, "grad_norm", json_real_or_null(g->grad_norm));
    json_object_set_new(line, "tokens", json_integer((json_int_t)r->tokens));
    json_object_set_new(line, "tokens_per_s", json_real_or_null(g->tokens / step_s));
    json_object_set_new(line, "step_s", json_real_or_null(step_s));
    json_object_set_new(line, "comm_wait_s", json_real_or_null(g->comm_wait_s));
    json_object_set_new(line, "skipped", json_boolean(skipped));
    if (skipped) printf("step %ld: non-finite loss or gradient, update skipped (%d in a row)\n", s, r->bad);
    if (s % c->opt->log_every == 0 || s == c->steps || val[0]) {
        double rate = p->interval_tokens / p->interval_s;
        char el[32], eta[32], mfu[32] = "";
        print_duration(el, sizeof el, now_seconds() - p->t_start);
        print_duration(eta, sizeof eta, p->t_run / (double)(s - p->first_step) * (double)(c->steps - s));
        if (c->flops_per_token > 0)
            snprintf(mfu, sizeof mfu, " | MFU %.1f%%", 100.0 * rate * c->flops_per_token / 1e9 / p->peak_gflops);
        printf("step %ld/%ld | loss %.4f%s%s | lr %.2e | grad %.3f | %.0f tok/s%s | %s elapsed | ETA %s\n", s,
               c->steps, loss, detail, val, st->lr, g->grad_norm, rate, mfu, el, eta);
        fflush(stdout);
        p->interval_tokens = p->interval_s = 0.0;
    }
}

static void write_line(Report *p, json_t *line) {
    if (!p->metrics_failed && run_metrics_write(p->metrics, p->out, line)) {
        p->metrics_failed = 1;
        snprintf(p->metrics_error, sizeof p->metrics_error, "%s", gpt_last_error());
    }
}

/* Rank 0: a step's line goes out now, or waits behind a checkpoint's (hold: this step
 * checkpoints, and its line waits for ckpt_blocked_s and ckpt_write_s). */
static void queue_line(Report *p, json_t *line, int hold) {
    pthread_mutex_lock(&p->lock);
    if (hold && p->holding) p->next_mark = json_array_size(p->held);
    if (hold) p->holding = 1;
    if (p->holding) json_array_append(p->held, line);
    else write_line(p, line);
    pthread_mutex_unlock(&p->lock);
}

/* The held checkpoint's line goes out with its cost (NAN: it failed), and the lines
 * behind it up to the next checkpoint's. The CkptCommitHook (ctx: the Report): the
 * checkpoint's file is complete, and its step's line must be on disk before the file can
 * be resumed from. */
static void release_lines(void *ctx, double blocked_s, double write_s) {
    Report *p = ctx;
    pthread_mutex_lock(&p->lock);
    if (p->holding) {
        size_t end = p->next_mark ? p->next_mark : json_array_size(p->held);
        json_t *first = json_array_get(p->held, 0);
        json_object_set_new(first, "ckpt_blocked_s", json_real_or_null(blocked_s));
        json_object_set_new(first, "ckpt_write_s", json_real_or_null(write_s));
        for (size_t i = 0; i < end; i++) write_line(p, json_array_get(p->held, 0)), json_array_remove(p->held, 0);
        p->holding = p->next_mark > 0;
        p->next_mark = 0;
    }
    pthread_mutex_unlock(&p->lock);
}

static void release_all_lines(Report *p) {
    while (p->holding) release_lines(p, NAN, NAN);
}

static int metrics_failed(Report *p) {
    pthread_mutex_lock(&p->lock);
    int failed = p->metrics_failed;
    pthread_mutex_unlock(&p->lock);
    return failed;
}

/* Collective: the steps. 0: all done; 1: stopped with a checkpoint; -1: an error. */
static int steps(Run *r) {
    const RunClient *c = r->c;
    const RunOptions *o = c->opt;
    int rank = dist_rank(), rc = 0;
    Report p = {.t_start = now_seconds(), .first_step = r->step, .out = c->out, .metrics = -1};
    if (c->flops_per_token > 0) { /* every rank at once: the machine's limit under load */
        p.peak_gflops = blas_sgemm_peak_gflops();
        MPI_Allreduce(MPI_IN_PLACE, &p.peak_gflops, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    }
    if (dist_agree(rank == 0 && (p.metrics = run_metrics_open(c->out)) < 0 ? -1 : 0)) return -1;
    p.held = json_array();
    pthread_mutex_init(&p.lock, NULL);
    r->writer = ckpt_writer_create(o->async_ckpt, rank == 0 ? release_lines : NULL, &p);
    int checkpointing = o->ckpt_every > 0 || o->ckpt_minutes > 0.0;
    /* until one is measured, a checkpoint (parameters and two moments) is assumed to write at 100 MB/s */
    double last_ckpt = p.t_start, ckpt_s = 12.0 * (double)c->trained_floats / 1e8, max_step_s = 0, max_eval_s = 0;
    while (!rc && r->step < c->steps) {
        long s = r->step;
        double t0 = now_seconds(), write_s = 0;
        watchdog_step(s + 1);
        /* a background checkpoint that has ended is joined (its step's line went out before its
         * rename), or its failure is agreed on below */
        int written = ckpt_writer_poll(r->writer);
        if (written == 1 && !wait_writer(r, &write_s) && write_s > ckpt_s) ckpt_s = write_s;
        watchdog_enter("the agreement on the step's samples");
        rc = dist_agree(c->read_step(c->ctx, s));
        watchdog_leave();
        if (rc) break;
        StepGrads g = {.tokens = 0};
        c->backward(c->ctx, s, &g);
        StepControl ctl = {.nonfinite = !isfinite(g.loss[0] + g.loss[1]) || !isfinite(g.grad_norm),
                           .signalled = stop_signal_caught() != 0,
                           .out_of_time = rank == 0 && out_of_time(o, max_step_s, max_eval_s, ckpt_s),
                           .ckpt_due = rank == 0 && o->ckpt_minutes > 0 && now_seconds() - last_ckpt >= 60.0 * o->ckpt_minutes,
                           .metrics_failed = metrics_failed(&p), .ckpt_failed = written < 0};
        memcpy(ctl.loss, g.loss, sizeof g.loss);
        step_control_reduce(&ctl);
        if (ctl.metrics_failed) { /* rank 0's message to every rank; the step is not taken */
            rc = dist_agree(metrics_failed(&p) ? gpt_error("%s", p.metrics_error) : 0);
            break;
        }
        if (ctl.ckpt_failed) { /* every rank's writer has failed with the same message */
            rc = wait_writer(r, NULL);
            break;
        }
        OptimStats st = c->update(c->ctx, g.grad_norm, ctl.nonfinite);
        r->bad = ctl.nonfinite ? r->bad + 1 : 0;
        r->step = s + 1;
        r->tokens += g.tokens;
        double step_s = now_seconds() - t0;
        p.t_run += step_s, p.interval_tokens += g.tokens, p.interval_s += step_s;
        if (step_s > max_step_s) max_step_s = step_s;

        json_t *line = json_object();
        char detail[128] = "", val[160] = "";
        double loss = c->loss(c->ctx, ctl.loss, g.tokens, line, detail, sizeof detail);
        if (c->evaluate && o->eval_every > 0 && (r->step % o->eval_every == 0 || r->step == c->steps)) {
            double te = now_seconds();
            rc = c->evaluate(c->ctx, line, val, sizeof val);
            if (now_seconds() - te > max_eval_s) max_eval_s = now_seconds() - te;
        }
        int bad_stop = r->bad >= o->max_bad_steps;
        int stop = (ctl.signalled || ctl.out_of_time) && r->step < c->steps; /* after the last step: just finish */
        int ckpt = !rc && !bad_stop &&
                   (stop || ctl.ckpt_due || (o->ckpt_every > 0 && r->step % o->ckpt_every == 0) ||
                    (checkpointing && r->step == c->steps));
        if (!rc && rank == 0) {
            report_step(&p, c, r, line, loss, &st, step_s, &g, ctl.nonfinite, detail, val);
            queue_line(&p, line, ckpt); /* a checkpointing step's waits for the checkpoint's file */
        }
        if (rc) {
            json_decref(line);
            break;
        }
        fault_point("step", r->step, rank);
        if (bad_stop)
            rc = gpt_error("stopping: %d steps in a row had a non-finite loss or gradient (lower --lr, or check the "
                           "data)", r->bad);
        if (ckpt) {
            /* the run ends with its checkpoint committed; the next checkpoint waits for this one */
            double tc = now_seconds();
            if (!rc) rc = save_checkpoint(r);
            if (!rc && (stop || r->step == c->steps)) rc = wait_writer(r, &write_s);
            if (rc && rank == 0) release_all_lines(&p);
            last_ckpt = now_seconds();
            if (last_ckpt - tc > ckpt_s) ckpt_s = last_ckpt - tc;
            if (write_s > ckpt_s) ckpt_s = write_s;
        }
        json_decref(line);
        if (rc) break;
        if (stop) {
            if (rank == 0) {
                char path[PATH_MAX];
                run_ckpt_path(path, sizeof path, c->out, r->step);
                printf("stopping after step %ld %s: wrote %s; exit code %d, continue with --resume auto\n", r->step,
                       stop_reason(ctl.signalled ? "on a signal to another rank" : "before the time limit"), path,
                       RUN_EXIT_STOPPED);
                fflush(stdout);
            }
            rc = 1;
        }
    }
    /* a background checkpoint still writing after an error */
    if (wait_writer(r, NULL) && rc >= 0) rc = -1;
    ckpt_writer_free(r->writer);
    r->writer = NULL;
    if (rank == 0) release_all_lines(&p); /* those of a checkpoint that failed */
    json_decref(p.held);
    pthread_mutex_destroy(&p.lock);
    if (rc == 0) rc = dist_agree(p.metrics_failed ? gpt_error("%s", p.metrics_error) : 0); /* the last step's line */
    if (p.metrics >= 0) close(p.metrics);
    if (rc == 0 && rank == 0 && p.first_step >= c->steps)
        printf("the run was already at step %ld of %ld: nothing left to train\n", r->step, c->steps);
    return rc;
}

int run_training(const RunClient *c) {
    Run r = {.c = c, .global_batch = c->global_batch};
    int lock = -1, rc;
    stop_signals_catch();
    WatchdogJob job = {.cmd = c->cmd, .step = "step", .timeout_s = c->opt->collective_timeout,
                       .outcome = "the checkpoints on disk are as they were; go on with --resume auto"};
    if ((rc = dist_agree(watchdog_start(&job))) == 0) rc = begin(&r, &lock);
    if (rc == 0) rc = dist_agree(c->start(c->ctx, r.saved_config != NULL));
    if (rc == 0) rc = prepare_dir(&r, lock);
    if (rc == 0) rc = steps(&r);
    if (rc >= 0) { /* for sizing a layout (docs/operations.md): the largest rank's */
        double peak = peak_rss_mb();
        MPI_Allreduce(MPI_IN_PLACE, &peak, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (dist_rank() == 0) printf("peak memory: %.0f MiB on the largest of %d rank(s)\n", peak, dist_size());
    }
    if (rc == 0) {
        int written = 0;
        if (dist_rank() == 0) {
            char path[PATH_MAX];
            written = run_path(path, sizeof path, c->out, RUN_MODEL) || c->write_result(c->ctx, path) ? -1 : 0;
            if (!written) printf("wrote %s\n", path);
        }
        rc = dist_agree(written); /* every rank waits for rank 0's file, failed or not */
    }
    watchdog_stop();
    run_dir_unlock(lock);
    free(r.config);
    free(r.saved_config);
    return rc;
}
