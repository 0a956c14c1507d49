/* checkpoint_writer.c: ckpt_save, and the background writer of --async-ckpt (see
 * checkpoint_writer.h). The writing itself is a CkptJob (checkpoint_job.h); this file
 * decides on which thread it runs and what it writes from: the live buffers, or a
 * staging copy taken at the step boundary so that the next update cannot reach it. */
#include "files/checkpoint_writer.h"

#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "checkpoint_job.h"
#include "files/run_layout.h"

struct CkptWriter {
    int background;
    CkptCommitHook hook;
    void *hook_ctx;
    MPI_Comm comm;                 /* the writer thread's collectives, apart from the main thread's */
    float *stage;                  /* this rank's share of the three parts, allocated at the first checkpoint */
    size_t stage_floats;
    float *extra_stage;            /* rank 0: the extras' three parts */
    CkptJob job;
    int busy;                      /* a job was started and not yet waited for */
    pthread_t thread;
    pthread_mutex_t lock;
    int done, rc;                  /* under lock */
    double write_s;                /* from ckpt_save's start to the end of latest and the pruning */
    int threaded;                  /* the job runs on a thread of its own (else it ran at once) */
    char error[1024];
};

CkptWriter *ckpt_writer_create(int background, CkptCommitHook hook, void *ctx) {
    CkptWriter *w = xcalloc(1, sizeof *w);
    w->background = background, w->hook = hook, w->hook_ctx = ctx;
    MPI_Comm_dup(MPI_COMM_WORLD, &w->comm);
    pthread_mutex_init(&w->lock, NULL);
    return w;
}

static void *writer_main(void *arg) {
    CkptWriter *w = arg;
    int rc = ckpt_job_create(&w->job);
    if (rc) ckpt_job_abort(&w->job);
    else rc = ckpt_job_write(&w->job);
    pthread_mutex_lock(&w->lock);
    w->rc = rc, w->done = 1, w->write_s = now_seconds() - w->job.t_start;
    if (rc) snprintf(w->error, sizeof w->error, "%s", gpt_last_error()); /* this thread's */
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int ckpt_writer_poll(CkptWriter *w) {
    if (!w || !w->busy) return 0;
    pthread_mutex_lock(&w->lock);
    int state = w->done ? (w->rc ? -1 : 1) : 0;
    pthread_mutex_unlock(&w->lock);
    return state;
}

int ckpt_writer_wait(CkptWriter *w, double *write_s) {
    if (!w || !w->busy) return 0;
    if (w->threaded) pthread_join(w->thread, NULL);
    w->busy = 0;
    ckpt_job_free(&w->job);
    ckpt_state_free(&w->job.state);
    if (write_s) *write_s = w->write_s;
    return w->rc ? gpt_error("%s", w->error) : 0;
}

void ckpt_writer_free(CkptWriter *w) {
    if (!w) return;
    ckpt_writer_wait(w, NULL);
    MPI_Comm_free(&w->comm);
    pthread_mutex_destroy(&w->lock);
    free(w->stage);
    free(w->extra_stage);
    free(w);
}

size_t ckpt_writer_stage_bytes(size_t shard) { return CKPT_PARTS * shard * sizeof(float); }

/* The extras' floats (their tensors end to end). */
static size_t extra_floats(const CkptExtra *x) {
    size_t n = 0;
    for (int i = 0; i < x->n_tensors; i++)
        if (x->tensors[i].offset + x->tensors[i].numel > n) n = x->tensors[i].offset + x->tensors[i].numel;
    return n;
}

/* After ckpt_job_prepare: this rank's share of the three parts, and rank 0's extras, copied
 * into the staging buffers, which the job then writes from: the next update cannot
 * reach them. */
static void stage(CkptWriter *w, const GPT *m, const AdamW *o) {
    CkptJob *j = &w->job;
    size_t n = j->sh.n;
    if (j->tensors && (!w->stage || CKPT_PARTS * n > w->stage_floats)) { /* a rank may own nothing */
        free(w->stage);
        w->stage = xalloc_floats(w->stage_floats = ckpt_writer_stage_bytes(n) / sizeof(float));
    }
    for (int p = 0; p < CKPT_PARTS && j->tensors; p++) { /* packed */
        const float *data = ckpt_part_data(m, o, p);
        float *into = w->stage + (size_t)p * n;
        if (!ckpt_part_whole(m, o, p)) memcpy(into, data, n * sizeof(float));
        else
            for (int k = 0; k < j->sh.n_ranges; into += j->sh.end[k] - j->sh.begin[k], k++)
                memcpy(into, data + j->sh.begin[k], (j->sh.end[k] - j->sh.begin[k]) * sizeof(float));
        j->src[p] = w->stage + (size_t)p * n, j->packed[p] = 1;
    }
    size_t total = 0;
    for (int e = 0; e < j->n_extra; e++) total += 3 * extra_floats(&j->extra[e]);
    free(w->extra_stage);
    w->extra_stage = total ? xalloc_floats(total) : NULL;
    float *at = w->extra_stage;
    for (int e = 0; e < j->n_extra; e++) { /* small: every rank copies them, rank 0 writes them */
        CkptExtra *x = &j->extra[e];
        size_t k = extra_floats(x);
        const float *part[3] = {x->params, x->m, x->v};
        for (int q = 0; q < 3; q++) memcpy(at + (size_t)q * k, part[q], k * sizeof(float));
        x->params = at, x->m = at + k, x->v = at + 2 * k;
        at += 3 * k;
    }
}

int ckpt_save(CkptWriter *w, const char *cmd, const char *run_dir, int keep, const GPT *m, const AdamW *o,
              const CkptState *s, const Tokenizer *tok, const CkptExtra *extra, int n_extra) {
    if (n_extra > CKPT_MAX_EXTRA) return gpt_error("checkpoint: %d extra tensor sets, at most %d", n_extra, CKPT_MAX_EXTRA);
    if (strlen(run_dir) >= PATH_MAX - 64) return gpt_error("%s: path too long", run_dir);
    double t_start = now_seconds();
    char path[PATH_MAX];
    if (run_ckpt_path(path, sizeof path, run_dir, s->step)) return -1;
    if (ckpt_writer_wait(w, NULL)) return -1; /* at most one in flight */
    int background = w && w->background;
    CkptJob local, *j = background ? &w->job : &local;
    ckpt_job_init(j, w ? w->comm : MPI_COMM_WORLD, path, m, o, s, tok, extra, n_extra);
    snprintf(j->run_dir, sizeof j->run_dir, "%s", run_dir);
    snprintf(j->cmd, sizeof j->cmd, "%s", cmd);
    j->keep = keep, j->t_start = t_start, j->blocked_s = -1;
    if (w) j->hook = w->hook, j->hook_ctx = w->hook_ctx;
    if (ckpt_job_prepare(j, o, extra) || (!background && ckpt_job_create(j))) {
        ckpt_job_abort(j);
        ckpt_job_free(j);
        return -1;
    }
    if (!background) {
        int rc = ckpt_job_write(j);
        ckpt_job_free(j);
        return rc;
    }
    stage(w, m, o);
    j->state.config = s->config ? xstrdup(s->config) : NULL;
    w->done = w->rc = 0, w->busy = 1;
    j->blocked_s = now_seconds() - t_start;
    w->threaded = !pthread_create(&w->thread, NULL, writer_main, w);
    if (!w->threaded) writer_main(w); /* no thread to be had: written now */
    return 0;
}
