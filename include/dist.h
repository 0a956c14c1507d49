/* dist.h: the MPI layer: start-up, rank and size, and agreement on errors.
 *
 * Commands that may run under mpirun call dist_init(); a plain run is a job of one
 * rank. Any error that only some ranks see must be agreed on before the next
 * collective operation, or the others would wait forever: dist_agree() is that point. */
#ifndef GPT_DIST_H
#define GPT_DIST_H

#include <mpi.h>

void dist_init(int *argc, char ***argv);
void dist_finalize(void);
int dist_rank(void);
int dist_size(void);
/* Collective. Returns 0 if local_rc was 0 on every rank; otherwise -1 on every rank,
 * with the message of the lowest failing rank as gpt_last_error() everywhere. */
int dist_agree(int local_rc);
/* Collective: x[0..n) becomes its sum over the ranks, on every rank. A value that one
 * rank computes and the others leave at 0 arrives exactly, whatever the number of ranks. */
void dist_sum(double *x, size_t n);

/* Gradient averaging that overlaps the backward pass. The gradient buffer is cut into
 * buckets of whole layers, about bucket_bytes each, taken from its end (the last layer,
 * whose gradients the backward pass finishes first) to its start (wte and wpe, finished
 * last). The model's grad_ready hook starts a bucket's MPI_Iallreduce as soon as its
 * lowest layer is done and lets the ones in flight progress; gradsync_finish() waits
 * for the rest. Only an armed pass communicates, so gradient accumulation over several
 * micro-steps sends once. */
struct GPT;
typedef struct GradSync GradSync;
#define GRADSYNC_BUCKET_MB 25 /* default bucket size (gpt train --bucket-mb) */
GradSync *gradsync_create(struct GPT *m, size_t bucket_bytes);
void gradsync_free(GradSync *g);
void gradsync_arm(GradSync *g);
/* Waits for every bucket of the armed pass, first starting those the pass did not (all
 * of them on a rank that armed but ran no backward pass); returns the seconds waited. */
double gradsync_finish(GradSync *g);
int gradsync_buckets(const GradSync *g);

#endif
