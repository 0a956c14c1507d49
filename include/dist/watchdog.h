/* watchdog.h: ends a job whose collective operation stalls (--collective-timeout).
 *
 * A rank that stops answering without dying (a frozen node, a stalled file system, a
 * partitioned link) leaves every other rank waiting in a collective forever: Open MPI
 * only notices ranks that exit. So the collective helpers (dist.c) and the run loop
 * bracket each collective phase with watchdog_enter()/watchdog_leave(); a nested phase
 * keeps the outer one's name ("writing a checkpoint" holds the agreements inside it).
 * A thread of the watchdog's own wakes every second and
 *  - answers the other ranks' "are you there?" with this rank's step and phase;
 *  - when this rank's phase is older than the timeout (and again each further timeout),
 *    asks every other rank and waits up to WATCHDOG_GRACE_S for the answers. If every
 *    rank answers from this step and phase, all wait on one slow operation (a long
 *    checkpoint write): rank 0 warns and the wait goes on. Otherwise the lowest rank
 *    that is alive prints the step, the operation, the ranks (and hosts) that did not
 *    answer and those elsewhere, with where they are, and every rank that timed out
 *    calls MPI_Abort(WATCHDOG_EXIT), which ends the job.
 * A stopped (SIGSTOP), frozen or cut-off rank cannot answer; one that is alive but late
 * answers with where it is. The questions travel on a communicator of their own
 * (MPI_Comm_dup) from the second thread, so MPI runs with MPI_THREAD_MULTIPLE; without it
 * the watchdog still ends the job, but cannot say who did not arrive.
 * Checkpoints on disk stay as they were: one is renamed into place only after every rank
 * has written its part (checkpoint.h). */
#ifndef GPT_WATCHDOG_H
#define GPT_WATCHDOG_H

#define WATCHDOG_EXIT 69        /* EX_UNAVAILABLE: a rank stopped answering; resume elsewhere */
#define WATCHDOG_DEFAULT_S 600  /* --collective-timeout's default: torch.distributed's too */
#define WATCHDOG_GRACE_S 5.0    /* how long answers are awaited after a timeout */

/* Collective: starts the watchdog of command cmd ("train": in its message) with a
 * timeout in seconds; 0 starts none. Returns 0, or -1 (nothing started) with an error. */
int watchdog_start(const char *cmd, double timeout_s);
/* Collective: stops the thread and frees the communicator. */
void watchdog_stop(void);
/* The step in progress (1-based), for the message. */
void watchdog_step(long step);
/* Main thread, cheap (atomics): a collective phase named op (a string that lives as long
 * as the program, "the gradient allreduce") begins, or the innermost one ends. */
void watchdog_enter(const char *op);
void watchdog_leave(void);

#endif
