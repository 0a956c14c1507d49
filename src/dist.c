/* dist.c: MPI start-up and error agreement (see dist.h). */
#include "dist.h"

#include <stdio.h>
#include <stdlib.h>

#include "model.h"
#include "util.h"

void dist_init(int *argc, char ***argv) {
    int ready;
    MPI_Initialized(&ready);
    if (ready) return;
#ifdef OPEN_MPI
    /* Open MPI's ROMIO, not its default OMPIO, under parallel HDF5: twice as fast for
     * our collective filtered writes, and the pairing HDF5 is tested with. A user's own
     * OMPI_MCA_io wins. */
    setenv("OMPI_MCA_io", "romio321", 0);
#endif
    /* the OpenMP threads of the kernels never call MPI: only the main thread does */
    int provided;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
}

void dist_finalize(void) {
    int done;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
}

int dist_rank(void) {
    int r;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

int dist_size(void) {
    int n;
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    return n;
}

int dist_agree(int local_rc) {
    int me = dist_rank(), first = local_rc ? me : dist_size();
    MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == dist_size()) return 0;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", gpt_last_error());
    MPI_Bcast(msg, sizeof msg, MPI_CHAR, first, MPI_COMM_WORLD);
    return gpt_error("%s", msg);
}

void dist_sum(double *x, size_t n) {
    for (size_t at = 0; at < n; at += 1 << 30) { /* MPI counts are ints */
        size_t k = n - at < (size_t)1 << 30 ? n - at : (size_t)1 << 30;
        MPI_Allreduce(MPI_IN_PLACE, x + at, (int)k, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    }
}

typedef struct {
    size_t offset, count; /* floats */
    int trigger;          /* the layer whose completion starts it; -1: the embeddings */
} Bucket;

struct GradSync {
    GPT *m;
    Bucket *b;
    int n, next, armed;
    MPI_Request *req;
};

GradSync *gradsync_create(GPT *m, size_t bucket_bytes) {
    GradSync *g = xcalloc(1, sizeof *g);
    int L = m->cfg.n_layer;
    g->m = m;
    g->b = xcalloc((size_t)L + 1, sizeof *g->b);
    g->req = xcalloc((size_t)L + 1, sizeof *g->req);
    size_t end = m->n_params; /* the last bucket also takes ln_f, finished before layer L-1 */
    for (int l = L - 1; l >= 0; l--) {
        size_t start = gpt_layer_offset(m, l);
        if ((end - start) * sizeof(float) >= bucket_bytes || l == 0) {
            g->b[g->n++] = (Bucket){start, end - start, l};
            end = start;
        }
    }
    g->b[g->n++] = (Bucket){0, end, -1};
    return g;
}

void gradsync_free(GradSync *g) {
    if (!g) return;
    free(g->b);
    free(g->req);
    free(g);
}

int gradsync_buckets(const GradSync *g) { return g->n; }

/* Starts the next bucket's allreduce. */
static void start_bucket(GradSync *g) {
    Bucket *b = &g->b[g->next];
    MPI_Iallreduce(MPI_IN_PLACE, g->m->grads + b->offset, (int)b->count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                   &g->req[g->next]);
    g->next++;
}

static void grad_ready(void *ctx, int layer) {
    GradSync *g = ctx;
    if (!g->armed) return;
    while (g->next < g->n && g->b[g->next].trigger == layer) start_bucket(g);
    /* Open MPI progresses non-blocking collectives only inside MPI calls */
    int done;
    MPI_Testall(g->next, g->req, &done, MPI_STATUSES_IGNORE);
}

void gradsync_arm(GradSync *g) {
    g->armed = 1;
    g->next = 0;
    g->m->grad_ready = grad_ready;
    g->m->grad_ready_ctx = g;
}

double gradsync_finish(GradSync *g) {
    double t0 = now_seconds();
    /* buckets no backward pass started (a rank with nothing to compute this step) start
     * now, in the same order as on every other rank */
    while (g->armed && g->next < g->n) start_bucket(g);
    MPI_Waitall(g->next, g->req, MPI_STATUSES_IGNORE);
    g->armed = 0;
    return now_seconds() - t0;
}
