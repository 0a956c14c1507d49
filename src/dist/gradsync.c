/* gradsync.c: bucketed gradient allreduce with a progress thread (see gradsync.h). */
#include "dist/gradsync.h"

#include <errno.h>
#include <mpi.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/util.h"
#include "cpu/kernels.h"
#include "dist/dist.h"
#include "dist/rowsum.h"
#include "dist/watchdog.h"
#include "model/model.h"
#include "model/shard.h"
#include "model/token_grads.h"

typedef struct {
    size_t offset, count; /* floats; it starts once the gradients from offset on are final */
} Bucket;

struct GradSync {
    GPT *m;
    Bucket *b;
    int n, next, armed; /* main thread: buckets, the next to start, whether this pass sends */
    /* the tied embedding split (P > 1): b[0, n_out) hold wte's output-projection part and
     * start when the head is done; the token rows (m->token_grads) are summed by rowsum */
    int n_out;
    RowSum *rowsum;
    int blocking;       /* bucket_bytes 0: one collective after the backward pass */
    MPI_Request *req;
    /* the buckets on the wire: fp32 in place in the gradients, or bf16 in `wire` */
    uint16_t *wire;     /* bf16: (n_params), each bucket at its offset; NULL: fp32 */
    MPI_Datatype type;  /* MPI_FLOAT, or a 16-bit type for bf16 */
    MPI_Op op;          /* MPI_SUM, or bf16_sum */
    /* --shard-optimizer: reduce-scatter to the shards, allgather of the parameters */
    int sharded, rank, P;
    Shard own;          /* this rank's shard */
    int *counts;        /* (n, P) each rank's floats of each bucket */
    int *starts;        /* (n, P) where each rank's part of each bucket starts in it */
    void *ring;         /* the reduce-scatter ring's receive buffer, a bucket's largest part */
    MPI_Comm comm;      /* the reduce-scatters' and the allgather's, apart from the main thread's */
    /* the progress thread: it tests req[0, started); lock guards the fields below */
    int threaded;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t work, idle;
    int started, done, hurry, quit;
    /* sharded: the parameters' all-gather after the update, in buckets of half layers
     * from the buffer's start, on the progress thread when threaded (gather_layout) */
    Bucket *gb;
    int gn;
    int *gcounts, *gdispls; /* (gn, P) each rank's floats of each gather bucket, and where in it they lie */
    pthread_cond_t gathered;
    int gstarted, gdone;    /* under lock: gather buckets handed to the thread, and gathered */
    /* wte last (gradsync_gather's next_tokens): the gather goes gb[n_wte, gn), then wte's
     * n_wte buckets; the next forward pass's lookup reads the rows of its tokens, fetched
     * before the gather started */
    int n_wte, wte_last;
    int n_fetched, cap_fetched; /* 0: none fetched for this gather */
    int *fetched, *row_ids;     /* (n_fetched) the tokens, and 0, 1, ... for the lookup */
    float *rows;                /* (n_fetched, C) their rows */
};

const char *const grad_reduce_names[] = {"fp32", "bf16", NULL};

static void nap_us(long us) {
    struct timespec ts = {0, us * 1000};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

/* The MPI operation of --grad-reduce bf16: inout = bf16(in + inout), each pair added in
 * fp32 and the sum rounded once (commutative: the sum of two does not depend on their
 * order). Chunks below the kernels' threading threshold: MPI calls it from any thread. */
#define BF16_SUM_CHUNK 4096
static void bf16_sum(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const uint16_t *a = in;
    uint16_t *b = inout;
    float x[BF16_SUM_CHUNK], y[BF16_SUM_CHUNK];
    for (int i = 0; i < *len; i += BF16_SUM_CHUNK) {
        size_t n = (size_t)(*len - i < BF16_SUM_CHUNK ? *len - i : BF16_SUM_CHUNK);
        bf16_unpack(x, a + i, n);
        bf16_unpack(y, b + i, n);
        vec_add(x, y, n);
        bf16_pack(b + i, x, 1, (int)n, 0);
    }
}

/* Where bucket data at float offset `at` goes on the wire. */
static void *on_wire(GradSync *g, size_t at) { return g->wire ? (void *)(g->wire + at) : (void *)(g->m->grads + at); }

/* bf16: the reduced bucket back into the fp32 gradients. */
static void widen(GradSync *g, const Bucket *b) {
    if (g->wire) bf16_unpack(g->m->grads + b->offset, g->wire + b->offset, b->count);
}

/* Polls req[0, n) until all are done, napping GRADSYNC_POLL_US between tests unless in a
 * hurry (the main thread waits for them): a blocking call spins in Open MPI's progress
 * loop for its whole transfer, taking a core from the computation it overlaps. */
static void wait_polled(MPI_Request *req, int n, int hurry) {
    for (int flag = 0;;) {
        MPI_Testall(n, req, &flag, MPI_STATUSES_IGNORE);
        if (flag) return;
        if (!hurry) nap_us(GRADSYNC_POLL_US);
    }
}

/* Bucket i's gradients summed into the shards that hold them: this rank's part ends up
 * in place in the gradient buffer (bf16: widened there); the rest of the bucket is left
 * partly summed.
 *
 * A ring of P - 1 exchanges with the neighbours, each an MPI_Isend and MPI_Irecv polled
 * by wait_polled, so that it does not take the backward pass's core: at exchange s,
 * rank r sends its running sum of rank r-s-1's part to rank r+1 and adds rank r-1's of
 * rank r-s-2's part into its own, so rank c's part is summed from rank c+1 round to rank
 * c, which keeps it. A rank sends (P-1)/P of the bucket, as MPI's ring does; libnbc's
 * MPI_Ireduce_scatter is a reduce to rank 0 and a scatter, twice the bytes, and
 * MPI_Reduce_scatter wants the parts in rank order, which a segment's are not
 * (shard.h). Each hop adds a pair (bf16: in fp32, rounded once). The blocking
 * reference (--bucket-mb 0) runs the same buckets after the backward pass, in a hurry. */
static void reduce_scatter(GradSync *g, int i, int hurry) {
    const Bucket *b = &g->b[i];
    int P = g->P, r = g->rank;
    const int *count = g->counts + (size_t)i * P;
    const int *start = g->starts + (size_t)i * P;
    size_t width = g->wire ? sizeof(uint16_t) : sizeof(float), mine_at = (size_t)start[r];
    char *bucket = on_wire(g, b->offset);
    for (int s = 0; s < P - 1; s++) {
        int send = ((r - s - 1) % P + P) % P, recv = ((r - s - 2) % P + P) % P, n = count[recv];
        char *into = bucket + (size_t)start[recv] * width;
        MPI_Request req[2];
        MPI_Irecv(g->ring, n, g->type, (r + P - 1) % P, 0, g->comm, &req[0]);
        MPI_Isend(bucket + (size_t)start[send] * width, count[send], g->type, (r + 1) % P, 0, g->comm, &req[1]);
        wait_polled(req, 2, hurry);
        if (g->wire) bf16_sum(g->ring, into, &n, NULL);
        else vec_add((float *)(void *)into, g->ring, (size_t)n);
    }
    if (g->wire) bf16_unpack(g->m->grads + b->offset + mine_at, g->wire + b->offset + mine_at, (size_t)count[r]);
}

#define GRADSYNC_GATHER_PIECE ((size_t)1 << 28)

/* The gather bucket at place k of this gather's order. */
static int gather_bucket(const GradSync *g, int k) { return g->wte_last ? (k + g->n_wte) % g->gn : k; }

/* Gather bucket i: every rank's part of it (its shard's overlap, possibly none) to every
 * rank, in place in the parameters, on g->comm: started (req), or done (req NULL: the
 * blocking reference's). */
static void allgather(GradSync *g, int i, MPI_Request *req) {
    float *bucket = g->m->params + g->gb[i].offset;
    const int *count = g->gcounts + (size_t)i * g->P, *displ = g->gdispls + (size_t)i * g->P;
    if (req) MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, bucket, count, displ, MPI_FLOAT, g->comm, req);
    else MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, bucket, count, displ, MPI_FLOAT, g->comm);
}

/* Under lock, on the progress thread: the gather buckets handed to it, if any are left
 * (they come before the next backward pass's buckets on every rank: the update started
 * them); 1 if it gathered. Up to GRADSYNC_GATHER_AHEAD at once, started in order and
 * reported in order as they complete, each polled: a blocking collective spins in Open
 * MPI's progress loop for all of its transfer, taking a core from the forward pass it
 * overlaps, and one at a time left the link half used (docs/benchmarks.md). */
static int gather_next(GradSync *g) {
    if (g->gdone == g->gstarted) return 0;
    int n = g->gstarted, done = g->gdone, started = done;
    pthread_mutex_unlock(&g->lock);
    MPI_Request req[GRADSYNC_GATHER_AHEAD];
    while (done < n) {
        for (; started < n && started < done + GRADSYNC_GATHER_AHEAD; started++)
            allgather(g, gather_bucket(g, started), &req[started % GRADSYNC_GATHER_AHEAD]);
        int flag = 0;
        for (int i = started - 1; i >= done; i--) MPI_Test(&req[i % GRADSYNC_GATHER_AHEAD], &flag, MPI_STATUS_IGNORE);
        if (!flag) { /* the oldest is not in yet */
            nap_us(GRADSYNC_POLL_US);
            continue;
        }
        while (++done < started && req[done % GRADSYNC_GATHER_AHEAD] == MPI_REQUEST_NULL) {}
        pthread_mutex_lock(&g->lock);
        g->gdone = done;
        pthread_cond_signal(&g->gathered);
        pthread_mutex_unlock(&g->lock);
    }
    pthread_mutex_lock(&g->lock);
    return 1;
}

static void *progress(void *arg) {
    GradSync *g = arg;
    omp_set_num_threads(1); /* its kernels (bf16's widening) leave the cores to the backward pass */
    pthread_mutex_lock(&g->lock);
    for (;;) {
        while (!g->quit && g->done == g->started && g->gdone == g->gstarted) pthread_cond_wait(&g->work, &g->lock);
        if (gather_next(g)) continue; /* a gather in flight ends even at gradsync_free: every rank takes part */
        if (g->quit) break;
        int started = g->started, hurry = g->hurry, done = g->sharded ? g->done : 0;
        pthread_mutex_unlock(&g->lock);
        if (g->sharded) {
            reduce_scatter(g, done++, hurry);
        } else {
            for (int i = 0; i < started; i++) {
                int flag = 1;
                if (g->req[i] != MPI_REQUEST_NULL) {
                    MPI_Test(&g->req[i], &flag, MPI_STATUS_IGNORE);
                    if (flag) widen(g, &g->b[i]);
                }
                done += flag;
            }
            if (done < started && !hurry) nap_us(GRADSYNC_POLL_US);
        }
        pthread_mutex_lock(&g->lock);
        g->done = done;
        if (g->done == g->started) pthread_cond_signal(&g->idle);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

/* Every rank's part of the buckets b[0, n): (n, P) counts and where each starts in its
 * bucket. A bucket lies within one segment of the partition (shard.h), so each rank's
 * part of it is one range (of its shard's ranges, the one that meets the bucket). */
static void bucket_parts(const GradSync *g, const Bucket *b, int n, int *count, int *start) {
    for (int r = 0; r < g->P; r++) {
        Shard s = shard_of(g->m, r, g->P);
        for (int i = 0; i < n; i++) {
            size_t lo = b[i].offset, hi = lo + b[i].count, at = 0, got = 0;
            for (int k = 0; k < s.n_ranges && !got; k++) {
                size_t x = s.begin[k] > lo ? s.begin[k] : lo, y = s.end[k] < hi ? s.end[k] : hi;
                if (x < y) at = x - lo, got = y - x;
            }
            count[(size_t)i * g->P + r] = (int)got, start[(size_t)i * g->P + r] = (int)at;
        }
        shard_free(&s);
    }
}

static void shard_layout(GradSync *g) {
    g->rank = dist_rank(), g->P = dist_size();
    g->own = shard_of(g->m, g->rank, g->P);
    g->counts = xmalloc(sizeof(int) * (size_t)g->n * (size_t)g->P);
    g->starts = xmalloc(sizeof(int) * (size_t)g->n * (size_t)g->P);
    bucket_parts(g, g->b, g->n, g->counts, g->starts);
    int largest = 0;
    for (size_t k = 0; k < (size_t)g->n * (size_t)g->P; k++) largest = g->counts[k] > largest ? g->counts[k] : largest;
    g->ring = xmalloc((size_t)largest * (g->wire ? sizeof(uint16_t) : sizeof(float)));
    MPI_Comm_dup(MPI_COMM_WORLD, &g->comm);
}

static void output_ready(void *ctx);

/* The token rows of wte's gradient apart (token_grads.h), summed by rowsum: owned by
 * the shards that hold them when sharded, else by equal ranges of the vocabulary. */
static void split_embedding(GradSync *g) {
    GPT *m = g->m;
    int V = m->cfg.vocab_size, C = m->cfg.n_embd, P = dist_size();
    int *lo = xmalloc(sizeof(int) * (size_t)(P + 1));
    lo[0] = 0;
    for (int r = 0; r < P; r++) {
        if (!g->sharded) {
            lo[r + 1] = (int)((long long)V * (r + 1) / P);
            continue;
        }
        Shard s = shard_of(m, r, P); /* rows [s.lo[0], s.hi[0]) of wte, the first tensor */
        lo[r + 1] = s.hi[0] > s.lo[0] ? s.hi[0] : lo[r];
        shard_free(&s);
    }
    lo[P] = V;
    g->rowsum = rowsum_create(V, C, lo, !g->sharded, g->wire != NULL, MPI_COMM_WORLD);
    free(lo);
    m->token_grads = token_grads_create(V, C);
    m->output_grad_ready = output_ready;
    m->grad_ready_ctx = g;
}

/* The parameters' all-gather in buckets: the segments (shard.h: each rank's part of a
 * bucket is then one range), in buffer order, wte's first (n_wte of them); each of the
 * forward pass's params_ready points is a segment's bound. Not in GRADSYNC_PIECE_MB
 * pieces: an in-place MPI_Allgatherv takes no temporary copy of its buffer (gpt1's peak
 * memory is the same with its 124 MB wte bucket whole), and on a host whose cores all
 * compute, every collective more is a handshake that the progress threads spin for,
 * taking the forward pass's cores (docs/benchmarks.md: 127 buckets against 25 for gpt1).
 * Pieces of GRADSYNC_GATHER_PIECE floats only keep the counts within an int. */
static void gather_layout(GradSync *g) {
    GPT *m = g->m;
    size_t *bound = xmalloc(sizeof *bound * (2 * (size_t)m->cfg.n_layer + 3));
    int n_seg = shard_segments(m, bound);
    size_t piece = GRADSYNC_GATHER_PIECE;
    g->gb = xcalloc(m->n_params / piece + (size_t)n_seg, sizeof *g->gb);
    for (int i = 0; i < n_seg; i++) {
        size_t start = bound[i], n = bound[i + 1] - start, k = (n + piece - 1) / piece;
        for (size_t j = 0; j < k; j++) g->gb[g->gn++] = (Bucket){start + n * j / k, n * (j + 1) / k - n * j / k};
        if (i == 0) g->n_wte = g->gn; /* segment 0 is wte */
    }
    free(bound);
    g->gcounts = xmalloc(sizeof(int) * (size_t)g->gn * (size_t)g->P);
    g->gdispls = xmalloc(sizeof(int) * (size_t)g->gn * (size_t)g->P);
    bucket_parts(g, g->gb, g->gn, g->gcounts, g->gdispls);
    pthread_cond_init(&g->gathered, NULL);
}

size_t gradsync_wire_bytes(size_t n_params, int ranks, GradReduce wire) {
    (void)ranks; /* one rank rounds alike: the same buffer */
    return wire == GRAD_REDUCE_BF16 ? n_params * sizeof(uint16_t) : 0;
}

GradSync *gradsync_create(GPT *m, size_t bucket_bytes, int sharded, GradReduce wire) {
    if (dist_size() == 1 && wire == GRAD_REDUCE_FP32) return NULL; /* nothing to do */
    GradSync *g = xcalloc(1, sizeof *g);
    int L = m->cfg.n_layer;
    g->m = m;
    g->sharded = sharded;
    g->blocking = bucket_bytes == 0 || dist_size() == 1; /* one rank: only bf16's rounding */
    g->type = MPI_FLOAT, g->op = MPI_SUM;
    if (wire == GRAD_REDUCE_BF16) {
        g->wire = xmalloc(gradsync_wire_bytes(m->n_params, dist_size(), wire));
        MPI_Type_contiguous(1, MPI_UINT16_T, &g->type);
        MPI_Type_commit(&g->type);
        MPI_Op_create(bf16_sum, 1, &g->op);
    }
    size_t *point = xmalloc(sizeof *point * (2 * (size_t)L + 1));
    int n_points = gpt_grad_ready_points(m, point);
    /* split (P > 1): wte's output-projection part first, in pieces, and the ready
     * points' cut stops at wte's end: the token rows go apart. Sharded, every ready point
     * cuts (shard.h's segments), and the blocking reference runs the same buckets. */
    int split = dist_size() > 1;
    size_t wte_end = m->tensors[0].numel, stop = split ? wte_end : 0;
    if (split) point[n_points - 1] = stop;
    /* cut at the ready points, from the end: each bucket at least bucket_bytes, the
     * embeddings' (from stop) whatever is left; then each into equal pieces of at most
     * GRADSYNC_PIECE_MB, as MPI's collectives take a temporary copy of their buffer */
    size_t piece = ((size_t)GRADSYNC_PIECE_MB << 20) / sizeof(float), end = m->n_params;
    g->b = xcalloc(m->n_params / piece + (size_t)n_points + 2, sizeof *g->b);
    int cut_all = sharded, bucketed = !g->blocking || sharded;
    if (split && bucketed)
        for (size_t k = (wte_end + piece - 1) / piece, j = 0; j < k; j++)
            g->b[g->n++] = (Bucket){wte_end * j / k, wte_end * (j + 1) / k - wte_end * j / k};
    g->n_out = g->n;
    for (int i = 0; i < n_points && bucketed; i++)
        if (cut_all || (end - point[i]) * sizeof(float) >= bucket_bytes || point[i] == stop) {
            size_t n = end - point[i], k = (n + piece - 1) / piece;
            for (size_t j = k; j-- > 0;) /* from the end, as the buckets */
                g->b[g->n++] = (Bucket){point[i] + n * j / k, n * (j + 1) / k - n * j / k};
            end = point[i];
        }
    if (!bucketed) g->b[g->n++] = (Bucket){0, m->n_params};
    g->req = xcalloc((size_t)g->n, sizeof *g->req);
    free(point);
    if (sharded) shard_layout(g);
    if (split) split_embedding(g);
    if (sharded) gather_layout(g);
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
        pthread_join(g->thread, NULL); /* after any gather in flight */
    }
    if (g->gb) pthread_cond_destroy(&g->gathered);
    if (g->sharded) MPI_Comm_free(&g->comm);
    if (g->rowsum) {
        token_grads_free(g->m->token_grads);
        g->m->token_grads = NULL;
        g->m->output_grad_ready = NULL;
        rowsum_free(g->rowsum);
    }
    if (g->wire) MPI_Type_free(&g->type), MPI_Op_free(&g->op);
    free(g->wire);
    if (g->sharded) shard_free(&g->own);
    free(g->counts);
    free(g->starts);
    free(g->ring);
    free(g->gb);
    free(g->gcounts);
    free(g->gdispls);
    free(g->fetched);
    free(g->row_ids);
    free(g->rows);
    free(g->b);
    free(g->req);
    free(g);
}

int gradsync_buckets(const GradSync *g) { return g->n; }

/* Starts the next bucket's allreduce and hands it to the progress thread. */
static void start_bucket(GradSync *g) {
    Bucket *b = &g->b[g->next];
    if (g->wire) bf16_pack(g->wire + b->offset, g->m->grads + b->offset, 1, (int)b->count, 0);
    if (!g->sharded)
        MPI_Iallreduce(MPI_IN_PLACE, on_wire(g, b->offset), (int)b->count, g->type, g->op, MPI_COMM_WORLD,
                       &g->req[g->next]);
    g->next++;
    if (!g->threaded) {
        if (g->sharded) reduce_scatter(g, g->next - 1, 1); /* in order, without overlap */
        return;
    }
    pthread_mutex_lock(&g->lock);
    g->started = g->next;
    pthread_cond_signal(&g->work);
    pthread_mutex_unlock(&g->lock);
}

/* The head's backward pass is done: wte's output-projection part can go. */
static void output_ready(void *ctx) {
    GradSync *g = ctx;
    if (!g->armed || g->blocking) return;
    while (g->next < g->n_out) start_bucket(g);
}

static void grad_ready(void *ctx, size_t from) {
    GradSync *g = ctx;
    if (!g->armed || g->blocking) return;
    output_ready(ctx); /* a pass without the head (finetune, lambda 0) never called it */
    while (g->next < g->n && g->b[g->next].offset >= from) start_bucket(g);
    if (!g->threaded && !g->sharded) {
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
    watchdog_enter(g->sharded ? "the gradient reduce-scatter" : "the gradient allreduce");
    if (g->blocking && g->armed) {
        if (g->wire) bf16_pack(g->wire, g->m->grads, 1, (int)g->m->n_params, 0);
        if (g->sharded)
            for (int i = 0; i < g->n; i++) reduce_scatter(g, i, 1);
        else if (!g->wire) dist_sum_floats(g->m->grads, g->m->n_params);
        else {
            MPI_Allreduce(MPI_IN_PLACE, g->wire, (int)g->m->n_params, g->type, g->op, MPI_COMM_WORLD);
            widen(g, &g->b[0]);
        }
    } else if (!g->blocking) {
        /* buckets no backward pass started (a rank with nothing to compute this step)
         * start now, in the same order as on every other rank */
        while (g->armed && g->next < g->n) start_bucket(g);
    }
    /* the token rows, on this thread and rowsum's communicator, while the progress thread
     * completes the buckets */
    TokenGrads *rows = g->m->token_grads;
    if (g->rowsum && g->armed) rowsum_reduce(g->rowsum, rows->token, rows->rows, rows->n);
    if (!g->blocking && g->threaded) {
        pthread_mutex_lock(&g->lock);
        g->hurry = 1;
        pthread_cond_signal(&g->work);
        while (g->done < g->started) pthread_cond_wait(&g->idle, &g->lock);
        g->hurry = 0;
        pthread_mutex_unlock(&g->lock);
    } else if (!g->blocking && !g->sharded) {
        MPI_Waitall(g->next, g->req, MPI_STATUSES_IGNORE);
        for (int i = 0; i < g->next; i++) widen(g, &g->b[i]);
    }
    if (g->rowsum && g->armed) rowsum_apply(g->rowsum, g->m->grads); /* onto the reduced output part */
    if (rows) token_grads_clear(rows);
    watchdog_leave();
    g->armed = 0;
    return now_seconds() - t0;
}

double gradsync_norm_sq(GradSync *g) {
    if (!g->sharded) return sum_squares(g->m->grads, g->m->n_params);
    double sq = 0.0;
    for (int k = 0; k < g->own.n_ranges; k++) sq += sum_squares(g->m->grads + g->own.begin[k], g->own.end[k] - g->own.begin[k]);
    dist_sum(&sq, 1);
    return sq;
}

/* Main thread: waits until the first k gather buckets are in; the hook goes once all are. */
static void wait_gathered(GradSync *g, int k) {
    pthread_mutex_lock(&g->lock);
    if (k > g->gstarted) k = g->gstarted; /* none in flight: nothing to wait for */
    if (g->gdone < k) {
        watchdog_enter("the parameters' allgather");
        while (g->gdone < k) pthread_cond_wait(&g->gathered, &g->lock);
        watchdog_leave();
    }
    int all = g->gdone == g->gstarted;
    pthread_mutex_unlock(&g->lock);
    if (all && g->m->params_ready_ctx == g)
        g->m->params_ready = NULL, g->m->token_rows = NULL, g->m->params_ready_ctx = NULL;
}

/* The model's params_ready hook while a gather is in flight (model.h): the buckets below
 * upto; wte last, those after wte, and wte with the head's n_params. */
static void params_ready(void *ctx, size_t upto) {
    GradSync *g = ctx;
    int k = 0, before_wte = g->wte_last ? g->gn - g->n_wte : g->gn;
    if (g->wte_last && upto >= g->m->n_params) k = g->gn;
    else
        while (k < before_wte && g->gb[gather_bucket(g, k)].offset < upto) k++;
    wait_gathered(g, k);
}

/* The model's token_rows hook, wte last (model.h): the fetched rows if these are the
 * tokens fetched, else (a pass the client did not announce) all of wte, waited for. */
static const float *token_rows(void *ctx, const int *tokens, int n, const int **ids) {
    GradSync *g = ctx;
    if (g->n_fetched && n == g->n_fetched && !memcmp(tokens, g->fetched, sizeof(int) * (size_t)n)) {
        *ids = g->row_ids;
        return g->rows;
    }
    wait_gathered(g, g->gn);
    return NULL;
}

static int overlapped(const GradSync *g) { return g->sharded && g->threaded && g->gn > 0; }

/* The wte rows of the next forward pass's tokens from their owners, while the link is
 * idle: fetched behind the gather's first buckets, they waited 0.19 s (gpt1, 1 Gbit/s). */
static void fetch_rows(GradSync *g, const int *tokens, int n) {
    if (n > g->cap_fetched) {
        g->cap_fetched = n;
        g->fetched = xrealloc(g->fetched, sizeof(int) * (size_t)n);
        g->row_ids = xrealloc(g->row_ids, sizeof(int) * (size_t)n);
        g->rows = xrealloc(g->rows, sizeof(float) * (size_t)n * g->m->cfg.n_embd);
    }
    watchdog_enter("the embedding rows' fetch");
    rowsum_fetch(g->rowsum, tokens, n, g->m->w.wte, g->rows);
    watchdog_leave();
    memcpy(g->fetched, tokens, sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) g->row_ids[i] = i;
    g->n_fetched = n;
}

void gradsync_gather(GradSync *g, const int *next_tokens, int n) {
    if (!g->sharded) return;
    if (overlapped(g)) {
        gradsync_gather_wait(g); /* the last one's, if no pass has waited for it */
        int last = next_tokens && g->rowsum && g->n_wte < g->gn;
        g->n_fetched = 0;
        if (last) fetch_rows(g, next_tokens, n);
        pthread_mutex_lock(&g->lock);
        g->wte_last = last;
        g->gdone = 0, g->gstarted = g->gn;
        pthread_cond_signal(&g->work);
        pthread_mutex_unlock(&g->lock);
        g->m->token_rows = last ? token_rows : NULL;
        g->m->params_ready = params_ready;
        g->m->params_ready_ctx = g;
        return;
    }
    watchdog_enter("the parameters' allgather");
    for (int i = 0; i < g->gn; i++) allgather(g, i, NULL);
    watchdog_leave();
}

void gradsync_gather_wait(GradSync *g) {
    if (g && overlapped(g)) wait_gathered(g, g->gn);
}
