/* dist.c: MPI start-up and error agreement (see dist.h). */
#include "dist.h"

#include <stdio.h>
#include <stdlib.h>

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
    MPI_Init(argc, argv);
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
