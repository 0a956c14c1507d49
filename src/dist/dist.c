/* dist.c: MPI start-up and error agreement (see dist.h). */
#include "dist/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "dist/watchdog.h"

void dist_init(int *argc, char ***argv) {
    int ready;
    MPI_Initialized(&ready);
    if (ready) return;
#ifdef OPEN_MPI
    /* Open MPI's ROMIO, not its default OMPIO, under parallel HDF5: twice as fast for
     * our collective filtered writes, and the pairing HDF5 is tested with. A user's own
     * OMPI_MCA_io wins. */
    setenv("OMPI_MCA_io", "romio321", 0);
    /* A ring for MPI_Iallreduce: libnbc's own choice for in-place buffers or fewer than
     * 4 ranks is a binomial tree (reduce to rank 0, then broadcast), which sends twice
     * the bytes over each link, one direction at a time (docs/scaling.md). */
    setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1", 0);
    /* TCP without its emulated RDMA put (the default's flags less "put"): with it, large
     * messages both ways between two hosts took turns, and the sharded all-gather's
     * buckets, 4 in flight, moved 72 MB/s each way over a 1 Gbit/s link where they move
     * 119 without (docs/benchmarks.md). */
    setenv("OMPI_MCA_btl_tcp_flags", "send,inplace,need-ack,need-csum,hetero-rdma", 0);
#endif
    /* the OpenMP threads of the kernels never call MPI; the main thread, the watchdog's
     * (watchdog.h), the gradients' progress thread (gradsync.h) and the checkpoint
     * writer's (checkpoint_writer.h) do */
    int provided;
    MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
}

int dist_mpiio_is_romio(void) {
#ifdef OPEN_MPI
    const char *io = getenv("OMPI_MCA_io"); /* dist_init's choice or the user's ("^romio321" excludes) */
    return io && (strstr(io, "romio") != NULL) != (io[0] == '^');
#else
    return 1; /* MPICH and its derivatives have no other MPI-IO */
#endif
}

void dist_finalize(void) {
    int started, done;
    MPI_Initialized(&started);
    MPI_Finalized(&done);
    if (started && !done) MPI_Finalize();
}

int dist_launch_rank(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return 0;
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

int dist_agree_on(MPI_Comm comm, int local_rc) {
    int me, P;
    MPI_Comm_rank(comm, &me);
    MPI_Comm_size(comm, &P);
    int first = local_rc ? me : P;
    MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, comm);
    if (first < P) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", gpt_last_error());
        MPI_Bcast(msg, sizeof msg, MPI_CHAR, first, comm);
        gpt_error("%s", msg);
    }
    return first < P ? -1 : 0;
}

int dist_agree(int local_rc) {
    watchdog_enter("an agreement of the ranks on errors");
    int rc = dist_agree_on(MPI_COMM_WORLD, local_rc);
    watchdog_leave();
    return rc;
}

/* In pieces, as MPI counts are ints. */
static void sum(void *x, size_t n, MPI_Datatype type, size_t size) {
    watchdog_enter("a sum over the ranks");
    for (size_t at = 0; at < n; at += 1 << 30) {
        size_t k = n - at < (size_t)1 << 30 ? n - at : (size_t)1 << 30;
        MPI_Allreduce(MPI_IN_PLACE, (char *)x + at * size, (int)k, type, MPI_SUM, MPI_COMM_WORLD);
    }
    watchdog_leave();
}

void dist_sum(double *x, size_t n) { sum(x, n, MPI_DOUBLE, sizeof *x); }

void dist_sum_floats(float *x, size_t n) { sum(x, n, MPI_FLOAT, sizeof *x); }
