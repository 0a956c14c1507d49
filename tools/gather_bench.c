/* gather_bench.c: the sharded optimizer's parameter all-gather alone, on 2 ranks, as
 * gradsync.c runs it: `gpt1`'s segments (wpe, 24 half layers, wte; 40478-token vocabulary)
 * each an in-place MPI_Iallgatherv of two halves, AHEAD in flight, tested from a second
 * thread every 100 us while the main thread computes products (OpenBLAS sgemm of a
 * feed-forward layer's shape) or waits. Run on 2 hosts by tools/bench_cluster.py --gather.
 *
 *   gather_bench AHEAD COMPUTE(0|1) [REPS]
 *
 * MPI starts through dist_init, so with the tool's Open MPI settings (dist.c); the
 * environment may override them. Prints one JSON object: the best of REPS (default 3)
 * seconds for the whole gather and MB/s each way, and the products done meanwhile. */
#include <cblas.h>
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "base/util.h"
#include "dist/dist.h"

enum { C = 768, V = 40478, L = 12, N_TOK = 512 };

static size_t bound[2 * L + 3];
static int n_seg, ahead;
static float *params;
static volatile int gathered;

static void *gather(void *arg) {
    (void)arg;
    MPI_Request req[2 * L + 2];
    int started = 0, done = 0;
    while (done < n_seg) {
        for (; started < n_seg && started < done + ahead; started++) {
            size_t n = bound[started + 1] - bound[started];
            int count[2] = {(int)(n / 2), (int)(n - n / 2)}, displ[2] = {0, (int)(n / 2)};
            MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, params + bound[started], count, displ, MPI_FLOAT,
                            MPI_COMM_WORLD, &req[started]);
        }
        int flag = 0;
        for (int i = started - 1; i >= done; i--) MPI_Test(&req[i], &flag, MPI_STATUS_IGNORE);
        if (!flag) {
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
            continue;
        }
        while (done < started && req[done] == MPI_REQUEST_NULL) done++;
    }
    gathered = 1;
    return NULL;
}

int main(int argc, char **argv) {
    dist_init(&argc, &argv);
    if (argc < 3 || dist_size() != 2) {
        if (dist_rank() == 0) fprintf(stderr, "usage: mpirun -np 2 gather_bench AHEAD COMPUTE(0|1) [REPS]\n");
        dist_finalize();
        return 2;
    }
    ahead = atoi(argv[1]);
    int compute = atoi(argv[2]), reps = argc > 3 ? atoi(argv[3]) : 3;
    if (ahead < 1 || ahead > 2 * L + 2) ahead = 1;
    /* the segments in the forward pass's order: wpe, each layer's halves, then wte */
    size_t size[2 * L + 2];
    size[n_seg++] = (size_t)N_TOK * C;
    for (int l = 0; l < L; l++) size[n_seg++] = 4 * C * C + 6 * C, size[n_seg++] = 8 * C * C + 7 * C;
    size[n_seg++] = (size_t)V * C;
    for (int i = 0; i < n_seg; i++) bound[i + 1] = bound[i] + size[i];
    params = xcalloc(bound[n_seg], sizeof(float));
    float *a = xcalloc((size_t)N_TOK * C, sizeof(float)), *b = xcalloc((size_t)C * 4 * C, sizeof(float));
    float *c = xcalloc((size_t)N_TOK * 4 * C, sizeof(float));
    double best = 1e30;
    long products = 0;
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        gathered = 0;
        double t0 = now_seconds();
        pthread_t thread;
        pthread_create(&thread, NULL, gather, NULL);
        long done = 0;
        while (compute && !gathered) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N_TOK, 4 * C, C, 1.0f, a, C, b, 4 * C, 0.0f, c,
                        4 * C);
            done++;
        }
        pthread_join(thread, NULL);
        double t = now_seconds() - t0;
        if (t < best) best = t, products = done;
    }
    if (dist_rank() == 0)
        printf("{\"ahead\": %d, \"compute\": %d, \"seconds\": %.3f, \"mb_s_each_way\": %.1f, \"products\": %ld}\n",
               ahead, compute, best, (double)bound[n_seg] * sizeof(float) / 2 / best / 1e6, products);
    free(params), free(a), free(b), free(c);
    dist_finalize();
    return 0;
}
