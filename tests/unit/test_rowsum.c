/* test_rowsum.c: the sparse sum of matrix rows over the ranks (dist/rowsum.h) against
 * the dense reduction in rank order, bit for bit, on any number of ranks: make test-unit
 * runs it on 1, tests/test_dist.py on 2 and 3. On 2 ranks it also equals MPI_Allreduce
 * (whose order on more ranks is MPI's own). Rows are drawn over six decades, so that
 * another order of summation would change their bits. Every rank checks, and the ranks
 * agree on the result before asserting, so that a failure on one cannot hang the others.
 * rowsum_fetch, the rows from their owners, is checked the same ways. */
#include <math.h>
#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/rng.h"
#include "base/util.h"
#include "cpu/kernels.h"
#include "dist/rowsum.h"

enum { V = 997, C = 5 };

typedef struct {
    int n;
    int *token;
    float *rows;   /* (n, C) */
    float *dense;  /* (V, C) the same rows in place, zeros elsewhere */
} Held;

/* This rank's rows of a trial: `share` of the vocabulary, drawn at random, from a seed
 * of (trial, rank); the last rank holds none in trial 1. */
static Held draw(int trial, int rank, int P, double share) {
    Rng rng;
    rng_seed(&rng, 1000u * (unsigned)trial + (unsigned)rank);
    Held h = {0, xmalloc(sizeof(int) * V), xmalloc(sizeof(float) * V * C), xcalloc((size_t)V * C, sizeof(float))};
    for (int t = 0; t < V; t++) {
        if (trial == 1 && rank == P - 1) break;
        if (rng_uniform(&rng) >= share) continue;
        h.token[h.n] = t;
        for (int c = 0; c < C; c++) {
            float x = rng_normal(&rng) * powf(10.0f, (float)(6.0 * rng_uniform(&rng) - 3.0));
            h.rows[(size_t)h.n * C + c] = h.dense[(size_t)t * C + c] = x;
        }
        h.n++;
    }
    /* the rows in an order other than the tokens' */
    for (int i = h.n - 1; i > 0; i--) {
        int j = (int)(rng_uniform(&rng) * (i + 1)), t = h.token[i];
        h.token[i] = h.token[j], h.token[j] = t;
        for (int c = 0; c < C; c++) {
            float x = h.rows[(size_t)i * C + c];
            h.rows[(size_t)i * C + c] = h.rows[(size_t)j * C + c], h.rows[(size_t)j * C + c] = x;
        }
    }
    return h;
}

static void held_free(Held *h) { free(h->token), free(h->rows), free(h->dense); }

/* 1 on every rank if ok holds on every rank. */
static int everywhere(int ok) {
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return ok;
}

/* bf16: every rank's rows rounded to bf16, summed in rank order from zero in fp32, each
 * sum rounded once (rowsum.h). */
static void check(int gather, int bf16, const int *lo) {
    int P, rank;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    RowSum *rs = rowsum_create(V, C, lo, gather, bf16, MPI_COMM_WORLD);
    static const double share[] = {0.05, 0.3, 1.0, 0.01};
    for (int trial = 0; trial < 4; trial++) {
        Held h = draw(trial, rank, P, share[trial]);
        /* the reference: every rank's dense matrix, summed in rank order from zero */
        float *all = xmalloc(sizeof(float) * (size_t)P * V * C), *want = xcalloc((size_t)V * C, sizeof(float));
        MPI_Allgather(h.dense, V * C, MPI_FLOAT, all, V * C, MPI_FLOAT, MPI_COMM_WORLD);
        if (bf16) bf16_round(all, all, (size_t)P * V * C);
        long touched = 0;
        for (int t = 0; t < V; t++) {
            int any = 0;
            for (int r = 0; r < P; r++)
                for (int c = 0; c < C; c++) {
                    float x = all[((size_t)r * V + t) * C + c];
                    want[(size_t)t * C + c] += x;
                    any |= x != 0.0f;
                }
            touched += any;
        }
        if (bf16) bf16_round(want, want, (size_t)V * C);
        float *got = xcalloc((size_t)V * C, sizeof(float));
        long summed = rowsum_reduce(rs, h.token, h.rows, h.n);
        rowsum_apply(rs, got);
        int ok = summed == touched;
        for (int t = 0; t < V; t++) {
            int mine = gather || (t >= lo[rank] && t < lo[rank + 1]);
            for (int c = 0; c < C; c++) {
                float x = got[(size_t)t * C + c], y = mine ? want[(size_t)t * C + c] : 0.0f;
                ok &= memcmp(&x, &y, sizeof x) == 0;
            }
        }
        if (gather && !bf16 && P <= 2) { /* two summands: MPI_Allreduce's order cannot differ */
            MPI_Allreduce(MPI_IN_PLACE, h.dense, V * C, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            ok &= memcmp(h.dense, got, sizeof(float) * V * C) == 0;
        }
        if (!everywhere(ok))
            fail_msg("trial %d (gather %d, bf16 %d, %d rank(s)): the sparse sum differs", trial, gather, bf16, P);
        free(all), free(want), free(got);
        held_free(&h);
    }
    rowsum_free(rs);
}

/* The owners' boundaries (P + 1) on this many ranks: equal ranges of the vocabulary, or,
 * as the sharded optimizer's owners, uneven ones with the first rank owning nothing. */
static int *owners(int uneven) {
    int P;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    int *lo = xmalloc(sizeof(int) * (size_t)(P + 1));
    for (int r = 0; r <= P; r++) lo[r] = V * r / P;
    for (int r = 1; r < P && uneven; r++) lo[r] = r == 1 ? 0 : V - (V / 3) / r;
    return lo;
}

static void gathered_sums_are_the_dense_sums_in_rank_order(void **state) {
    (void)state;
    int *lo = owners(0);
    check(1, 0, lo);
    free(lo);
}

static void owners_keep_their_rows(void **state) {
    (void)state;
    int *lo = owners(1);
    check(0, 0, lo);
    free(lo);
}

/* --grad-reduce bf16's rows, gathered and kept by their owners. */
static void bf16_rows_are_the_rounded_sum_of_the_rounded_rows(void **state) {
    (void)state;
    int *lo = owners(0);
    check(1, 1, lo);
    check(0, 1, lo);
    free(lo);
}

/* rowsum_fetch: the rows asked for (with repeats), in their order, each from its owner
 * bit for bit, and the rank's own matrix untouched. */
static void fetch(const int *lo) {
    int P, rank;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    RowSum *rs = rowsum_create(V, C, lo, 0, 0, MPI_COMM_WORLD);
    static const double share[] = {0.05, 0.3, 1.0, 0.01};
    for (int trial = 0; trial < 4; trial++) {
        Held h = draw(trial, rank, P, share[trial]);
        float *dense = xmalloc(sizeof(float) * V * C), *before = xmalloc(sizeof(float) * V * C);
        float *rows = xmalloc(sizeof(float) * (size_t)(h.n ? h.n : 1) * C);
        for (int t = 0; t < V; t++) /* the owner's rows, and other ranks' stale ones */
            for (int c = 0; c < C; c++)
                dense[(size_t)t * C + c] = t >= lo[rank] && t < lo[rank + 1] ? (float)t + 0.25f * c : -1.0f - rank;
        memcpy(before, dense, sizeof(float) * V * C);
        for (int i = 0; i + 1 < h.n; i += 3) h.token[i + 1] = h.token[i]; /* repeats */
        rowsum_fetch(rs, h.token, h.n, dense, rows);
        int ok = memcmp(before, dense, sizeof(float) * V * C) == 0;
        for (int i = 0; i < h.n; i++)
            for (int c = 0; c < C; c++) ok &= rows[(size_t)i * C + c] == (float)h.token[i] + 0.25f * c;
        if (!everywhere(ok)) fail_msg("trial %d (%d rank(s)): the fetched rows differ", trial, P);
        free(dense), free(before), free(rows);
        held_free(&h);
    }
    rowsum_free(rs);
}

static void fetch_brings_the_owners_rows(void **state) {
    (void)state;
    for (int uneven = 0; uneven < 2; uneven++) {
        int *lo = owners(uneven);
        fetch(lo);
        free(lo);
    }
}

/* Under ASan (make sanitize): no leak report at exit. Open MPI's own allocations are
 * reported from modules already unloaded, which no suppression can name; the MPI runs of
 * tests/conftest.py turn leak detection off for the same reason. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gathered_sums_are_the_dense_sums_in_rank_order),
        cmocka_unit_test(owners_keep_their_rows),
        cmocka_unit_test(bf16_rows_are_the_rounded_sum_of_the_rounded_rows),
        cmocka_unit_test(fetch_brings_the_owners_rows),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    MPI_Finalize();
    return failed;
}
