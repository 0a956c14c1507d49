/* ckpt_bench.c: checkpoint write and load speed beside plain sequential file I/O of the
 * same bytes to the same directory, in one run (run under mpirun by tools/bench_ckpt.py).
 *
 *   ckpt_bench DIR TOKENIZER.h5 [PRESET] [REPS]
 *
 * The model is PRESET (default gpt1) with random parameters and moments. Each repetition:
 * rank 0 writes one plain file of 3 x n_params floats with write() and fsync(), every rank
 * writes a checkpoint with ckpt_write (collective, fsync and rename included), then rank 0
 * reads the plain file back and every rank loads the checkpoint (ckpt_read_tensors, which
 * verifies every checksum and broadcasts each rank's share). Before each read the page
 * cache is dropped when the process may (root, /proc/sys/vm/drop_caches writable), so
 * both reads come from the disk; "cold" in the output says whether that happened. The
 * loaded tensors are compared with the written ones, so a fast wrong path cannot look
 * good. Prints one JSON object with the best time of each. */
#include <errno.h>
#include <fcntl.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/rng.h"
#include "base/util.h"
#include "dist/dist.h"
#include "files/checkpoint.h"
#include "model/config.h"

static int plain_write(const char *path, const float *const parts[3], size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    for (int p = 0; p < 3; p++)
        for (size_t done = 0; done < n * sizeof(float);) {
            ssize_t w = write(fd, (const char *)parts[p] + done, n * sizeof(float) - done);
            if (w <= 0) return close(fd), -1;
            done += (size_t)w;
        }
    int rc = fsync(fd);
    return close(fd) || rc ? -1 : 0;
}

static int plain_read(const char *path, float *buf, size_t n) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    for (int p = 0; p < 3; p++)
        for (size_t done = 0; done < n * sizeof(float);) {
            ssize_t r = read(fd, (char *)buf + done, n * sizeof(float) - done);
            if (r <= 0) return close(fd), -1;
            done += (size_t)r;
        }
    return close(fd);
}

/* Rank 0: flushes and drops the page cache if allowed; collective. Returns 1 if dropped. */
static int drop_caches(void) {
    int ok = 0;
    if (dist_rank() == 0) {
        sync();
        FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
        if (f) ok = fputs("1\n", f) >= 0, ok &= fclose(f) == 0;
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return ok;
}

static void fill(float *x, size_t n, uint64_t seed, int positive) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = positive ? rng_uniform(&r) * 1e-4f : 0.02f * rng_normal(&r);
}

static double timed_barrier(double t0) {
    MPI_Barrier(MPI_COMM_WORLD);
    return now_seconds() - t0;
}

int main(int argc, char **argv) {
    dist_init(&argc, &argv);
    if (argc < 3) {
        fprintf(stderr, "usage: ckpt_bench DIR TOKENIZER.h5 [PRESET] [REPS]\n");
        return 2;
    }
    const char *dir = argv[1], *preset = argc > 3 ? argv[3] : "gpt1";
    int reps = argc > 4 ? atoi(argv[4]) : 3, rank = dist_rank();
    GPTConfig cfg;
    if (config_preset(preset, &cfg)) return fprintf(stderr, "ckpt_bench: %s\n", gpt_last_error()), 2;
    Tokenizer *tok = rank == 0 ? tokenizer_load(argv[2]) : NULL;
    if (rank == 0 && !tok) return fprintf(stderr, "ckpt_bench: %s\n", gpt_last_error()), 2;
    GPT *m = gpt_create(&cfg, 1, 0);
    OptimConfig oc = optim_defaults(100);
    AdamW *o = adamw_create(&oc, m->n_params);
    fill(m->params, m->n_params, 1, 0);
    fill(o->m, m->n_params, 2, 0);
    fill(o->v, m->n_params, 3, 1);
    size_t n = m->n_params;
    char plain[4096], ckpt[4096];
    snprintf(plain, sizeof plain, "%s/plain.bin", dir);
    snprintf(ckpt, sizeof ckpt, "%s/ckpt_bench.h5", dir);
    CkptState st = {.step = 1, .optim_step = 1, .samples = 8, .tokens = 8 * cfg.n_ctx, .seed = 1,
                    .global_batch = 8, .ranks = dist_size(), .config = "{}"};
    snprintf(st.corpus, sizeof st.corpus, "none");
    const float *parts[3] = {m->params, o->m, o->v};

    GPT *m2 = gpt_create(&cfg, 1, 0);
    AdamW *o2 = adamw_create(&oc, n);
    float *back = rank == 0 ? xalloc_floats(3 * n) : NULL;
    double best[4] = {1e30, 1e30, 1e30, 1e30}; /* plain write, ckpt write, plain read, ckpt load */
    int rc = 0, cold = 1;
    for (int r = 0; r < reps && !rc; r++) {
        double t[4];
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = now_seconds();
        if (rank == 0 && plain_write(plain, parts, n)) rc = gpt_error("%s: plain write failed: %s", plain, strerror(errno));
        t[0] = timed_barrier(t0);
        t0 = now_seconds();
        if (ckpt_write(ckpt, m, o, &st, tok, NULL, 0)) rc = -1;
        t[1] = timed_barrier(t0);
        cold &= drop_caches();
        t0 = now_seconds();
        if (rank == 0 && plain_read(plain, back, n)) rc = gpt_error("%s: plain read failed", plain);
        t[2] = timed_barrier(t0);
        cold &= drop_caches();
        t0 = now_seconds();
        if (ckpt_read_tensors(ckpt, m2, o2)) rc = -1;
        t[3] = timed_barrier(t0);
        if (!rc && (memcmp(m2->params, m->params, n * 4) || memcmp(o2->m, o->m, n * 4) || memcmp(o2->v, o->v, n * 4)))
            rc = gpt_error("the loaded checkpoint differs from what was written");
        for (int k = 0; k < 4; k++)
            if (t[k] < best[k]) best[k] = t[k];
    }
    rc = dist_agree(rc);
    if (!rc && rank == 0) {
        double bytes = 3.0 * (double)n * sizeof(float);
        printf("{\"preset\": \"%s\", \"ranks\": %d, \"bytes\": %.0f, \"reps\": %d, \"plain_write_s\": %.4f, "
               "\"ckpt_write_s\": %.4f, \"plain_read_s\": %.4f, \"ckpt_load_s\": %.4f, \"cold\": %s}\n",
               preset, dist_size(), bytes, reps, best[0], best[1], best[2], best[3], cold ? "true" : "false");
    }
    if (rc && rank == 0) fprintf(stderr, "ckpt_bench: %s\n", gpt_last_error());
    if (rank == 0) remove(plain), remove(ckpt);
    free(back);
    adamw_free(o2);
    gpt_free(m2);
    adamw_free(o);
    gpt_free(m);
    tokenizer_free(tok);
    dist_finalize();
    return rc ? 1 : 0;
}
