/* dist.h: the MPI layer: start-up, rank and size, and agreement on errors.
 *
 * Commands that may run under mpirun call dist_init(); a plain run is a job of one
 * rank. Any error that only some ranks see must be agreed on before the next
 * collective operation, or the others would wait forever: dist_agree() is that point.
 * The collectives here are watched by the watchdog (watchdog.h), which ends a job whose
 * collective stalls. */
#ifndef GPT_DIST_H
#define GPT_DIST_H

#include <mpi.h>

void dist_init(int *argc, char ***argv);
/* Ends MPI if it was started. */
void dist_finalize(void);
/* The rank the launcher (mpirun, srun, MPICH's hydra) gave this process, known before
 * MPI starts: 0 for a plain run. */
int dist_launch_rank(void);
/* 1 if MPI-IO is ROMIO (dist_init's choice under Open MPI, unless OMPI_MCA_io says
 * otherwise), 0 for Open MPI's OMPIO: they read file names differently (h5util.h). */
int dist_mpiio_is_romio(void);
int dist_rank(void);
int dist_size(void);
/* Collective. Returns 0 if local_rc was 0 on every rank; otherwise -1 on every rank,
 * with the message of the lowest failing rank as gpt_last_error() everywhere. */
int dist_agree(int local_rc);
/* The same on a communicator of the caller's (a background thread's), unwatched. */
int dist_agree_on(MPI_Comm comm, int local_rc);
/* Collective: x[0..n) becomes its sum over the ranks, on every rank. A value that one
 * rank computes and the others leave at 0 arrives exactly, whatever the number of ranks. */
void dist_sum(double *x, size_t n);
void dist_sum_floats(float *x, size_t n);

#endif
