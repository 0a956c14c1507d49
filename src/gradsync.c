/* gradsync.c: bucketed gradient allreduce with a progress thread (see gradsync.h). */
#include "gradsync.h"

#include <errno.h>
#include <mpi.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "dist.h"
#include "model.h"
#include "util.h"
#include "watchdog.h"

typedef struct {
    size_t offset, count; /* floats; it starts once the gradients from offset on are final */
} Bucket;

struct GradSync {
    GPT *m;
    Bucket *b;
    int n, next, armed; /* main thread: buckets, the next to start, whether this pass sends */
    int blocking;       /* bucket_bytes 0: one MPI_Allreduce after the backward pass */
    MPI_Request *req;
    /* the progress thread: it tests req[0, started); lock guards the fields below */
    int threaded;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t work, idle;
    int started, done, hurry, quit;
};

static void nap_us(long us) {
    struct timespec ts = {0, us * 1000};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

static void *progress(void *arg) {
    GradSync *g = arg;
    pthread_mutex_lock(&g->lock);
    for (;;) {
        while (!g->quit && g->done == g->started) pthread_cond_wait(&g->work, &g->lock);
        if (g->quit) break;
        int started = g->started, hurry = g->hurry, done = 0;
        pthread_mutex_unlock(&g->lock);
        for (int i = 0; i < started; i++) {
            int flag = 1;
            if (g->req[i] != MPI_REQUEST_NULL) MPI_Test(&g->req[i], &flag, MPI_STATUS_IGNORE);
            done += flag;
        }
        if (done < started && !hurry) nap_us(GRADSYNC_POLL_US);
        pthread_mutex_lock(&g->lock);
        g->done = done;
        if (g->done == g->started) pthread_cond_signal(&g->idle);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

GradSync *gradsync_create(GPT *m, size_t bucket_bytes) {
    GradSync *g = xcalloc(1, sizeof *g);
    int L = m->cfg.n_layer;
    g->m = m;
    g->blocking = bucket_bytes == 0;
    size_t *point = xmalloc(sizeof *point * (2 * (size_t)L + 1));
    int n_points = gpt_grad_ready_points(m, point);
    g->b = xcalloc((size_t)n_points, sizeof *g->b);
    g->req = xcalloc((size_t)n_points, sizeof *g->req);
    /* cut at the ready points, from the end: each bucket at least bucket_bytes, the
     * embeddings' (from 0) whatever is left */
    size_t end = m->n_params;
    for (int i = 0; i < n_points && !g->blocking; i++)
        if ((end - point[i]) * sizeof(float) >= bucket_bytes || point[i] == 0) {
            g->b[g->n++] = (Bucket){point[i], end - point[i]};
            end = point[i];
        }
    free(point);
    int level;
    MPI_Query_thread(&level);
    if (level == MPI_THREAD_MULTIPLE && !g->blocking) {
        pthread_mutex_init(&g->lock, NULL);
        pthread_cond_init(&g->work, NULL);
        pthread_cond_init(&g->idle, NULL);
        g->threaded = !pthread_create(&g->thread, NULL, progress, g);
    }
    return g;
}

void gradsync_free(GradSync *g) {
    if (!g) return;
    if (g->threaded) {
        pthread_mutex_lock(&g->lock);
        g->quit = 1;
        pthread_cond_signal(&g->work);
        pthread_mutex_unlock(&g->lock);
        pthread_join(g->thread, NULL);
    }
    free(g->b);
    free(g->req);
    free(g);
}

int gradsync_buckets(const GradSync *g) { return g->n; }

/* Starts the next bucket's allreduce and hands it to the progress thread. */
static void start_bucket(GradSync *g) {
    Bucket *b = &g->b[g->next];
    MPI_Iallreduce(MPI_IN_PLACE, g->m->grads + b->offset, (int)b->count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                   &g->req[g->next]);
    g->next++;
    if (!g->threaded) return;
    pthread_mutex_lock(&g->lock);
    g->started = g->next;
    pthread_cond_signal(&g->work);
    pthread_mutex_unlock(&g->lock);
}

static void grad_ready(void *ctx, size_t from) {
    GradSync *g = ctx;
    if (!g->armed || g->blocking) return;
    while (g->next < g->n && g->b[g->next].offset >= from) start_bucket(g);
    if (!g->threaded) {
        int done;
        MPI_Testall(g->next, g->req, &done, MPI_STATUSES_IGNORE);
    }
}

void gradsync_arm(GradSync *g) {
    g->armed = 1;
    g->next = 0;
    if (g->threaded) { /* idle since the last finish */
        pthread_mutex_lock(&g->lock);
        g->started = g->done = 0;
        pthread_mutex_unlock(&g->lock);
    }
    g->m->grad_ready = grad_ready;
    g->m->grad_ready_ctx = g;
}

double gradsync_finish(GradSync *g) {
    double t0 = now_seconds();
    watchdog_enter("the gradient allreduce");
    if (g->blocking && g->armed) {
        dist_sum_floats(g->m->grads, g->m->n_params);
    }
    /* buckets no backward pass started (a rank with nothing to compute this step) start
     * now, in the same order as on every other rank */
    while (g->armed && g->next < g->n) start_bucket(g);
    if (g->threaded) {
        pthread_mutex_lock(&g->lock);
        g->hurry = 1;
        pthread_cond_signal(&g->work);
        while (g->done < g->started) pthread_cond_wait(&g->idle, &g->lock);
        g->hurry = 0;
        pthread_mutex_unlock(&g->lock);
    } else {
        MPI_Waitall(g->next, g->req, MPI_STATUSES_IGNORE);
    }
    watchdog_leave();
    g->armed = 0;
    return now_seconds() - t0;
}
