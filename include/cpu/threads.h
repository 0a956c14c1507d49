/* threads.h: how many threads a rank runs when --threads does not say.
 *
 * Every command that computes resolves its thread count here, so all of them default
 * alike. Highest first:
 *   1. --threads T (given > 0);
 *   2. OMP_NUM_THREADS (its first entry: "4" or "4,2"), as OpenMP programs read it;
 *   3. SLURM_CPUS_PER_TASK (srun/sbatch --cpus-per-task);
 *   4. the cores this process may run on (its CPU affinity mask: sched_getaffinity, the
 *      CPUs grouped into physical cores by /sys's topology, the CPUs themselves where that
 *      cannot be read) divided by the ranks on this node: Open MPI's
 *      OMPI_COMM_WORLD_LOCAL_SIZE, else MPICH's MPI_LOCALNRANKS, else srun's
 *      SLURM_STEP_TASKS_PER_NODE entry of SLURM_NODEID, else 1 (no launcher); at least 1.
 * A variable that is set but not a positive integer is skipped, and the reason says so.
 * OMP_NUM_THREADS outranks SLURM_CPUS_PER_TASK because it is the variable that names
 * threads (a job script that sets it means it); --cpus-per-task only sizes the
 * allocation. Under a launcher that binds each rank to cores of its own, the mask is
 * already that rank's share and dividing it again under-counts: such launches pass
 * --threads or OMP_NUM_THREADS (jobs/ does), and the reason shows the division. */
#ifndef GPT_THREADS_H
#define GPT_THREADS_H

#include <stddef.h>

/* The thread count for `given` (--threads, 0: not given) and, into why (size bytes; NULL:
 * none), the reason in words for an opening line: "--threads 4", "OMP_NUM_THREADS=1",
 * "SLURM_CPUS_PER_TASK=8", "2 cores, 1 rank on this node". Reads the environment and
 * the affinity mask; sets nothing. */
int compute_threads_choose(int given, char *why, size_t size);
/* compute_threads_choose, then compute_threads_set (blas.h) with the result, which it
 * returns: what OpenBLAS and the kernels' OpenMP team use from then on. */
int compute_threads_setup(int given, char *why, size_t size);
/* "2 threads: 2 cores, 1 rank on this node": n, then why, into buf. */
const char *compute_threads_describe(int n, const char *why, char *buf, size_t size);

#endif
