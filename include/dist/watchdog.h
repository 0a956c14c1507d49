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
 *    removes the job's unpublished output, if it named one, and calls
 *    MPI_Abort(WATCHDOG_EXIT), which ends the job.
 * A stopped (SIGSTOP), frozen or cut-off rank cannot answer; one that is alive but late
 * answers with where it is. The questions travel on a communicator of their own
 * (MPI_Comm_dup) from the second thread, so MPI runs with MPI_THREAD_MULTIPLE; without it
 * the watchdog still ends the job, but cannot say who did not arrive.
 * Checkpoints on disk stay as they were: one is renamed into place only after every rank
 * has written its part (checkpoint.h). A corpus (gpt prepare) is published only when
 * whole, and its .tmp is removed before the abort: the job leaves no output. */
#ifndef GPT_WATCHDOG_H
#define GPT_WATCHDOG_H

#define WATCHDOG_EXIT 69        /* EX_UNAVAILABLE: a rank stopped answering; resume elsewhere */
#define WATCHDOG_DEFAULT_S 600  /* --collective-timeout's default: torch.distributed's too */
#define WATCHDOG_GRACE_S 5.0    /* how long answers are awaited after a timeout */

/* What a watched job says and leaves. The strings live until watchdog_stop. */
typedef struct {
    const char *cmd;      /* "train": the command, in the messages */
    const char *step;     /* what watchdog_step counts ("step", "round"), in the messages */
    const char *outcome;  /* what is on disk after the abort: the message's end */
    const char *remove;   /* NULL, or the output's unpublished .tmp: each rank that ends the job removes it */
    double timeout_s;     /* 0: no watchdog */
} WatchdogJob;

/* Collective: starts the watchdog of job; a timeout of 0 starts none. Returns 0, or -1
 * (nothing started) with an error. */
int watchdog_start(const WatchdogJob *job);
/* Collective: stops the thread and frees the communicator. */
void watchdog_stop(void);
/* The step (or round) in progress (1-based), for the message. */
void watchdog_step(long step);
/* Main thread, cheap (atomics): a collective phase named op (a string that lives as long
 * as the program, "the gradient allreduce") begins, or the innermost one ends. */
void watchdog_enter(const char *op);
void watchdog_leave(void);

#endif
