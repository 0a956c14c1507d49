/* watchdog.c: the collective timeout (see watchdog.h). */
#include "dist/watchdog.h"

#include <errno.h>
#include <mpi.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"

enum { TAG_QUESTION = 1, TAG_ANSWER = 2 };

typedef struct { /* a rank's answer: where it is */
    long question;  /* the asker's number of the question answered */
    long step;
    double phase_s; /* how long it has been in its phase; < 0: in none (computing) */
    char op[80];
} Answer;

static struct {
    _Atomic(const char *) op;
    _Atomic double since;
    atomic_int depth;
    atomic_long entered; /* outermost phases entered: which one is current */
    atomic_long step;
    atomic_int stopping;
    WatchdogJob job;
    int running, has_thread, threaded, rank, size;
    char (*host)[MPI_MAX_PROCESSOR_NAME]; /* each rank's */
    Answer *answer;                       /* the last one sent to each rank */
    long asked;                           /* the number of this rank's last question, sent from here */
    MPI_Comm comm;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
} wd = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

void watchdog_step(long step) { atomic_store(&wd.step, step); }

void watchdog_enter(const char *op) {
    if (atomic_load(&wd.depth) == 0) {
        atomic_fetch_add(&wd.entered, 1);
        atomic_store(&wd.op, op);
        atomic_store(&wd.since, now_seconds());
    }
    atomic_fetch_add(&wd.depth, 1);
}

void watchdog_leave(void) { atomic_fetch_sub(&wd.depth, 1); }

static Answer where_am_i(void) {
    Answer a = {.step = atomic_load(&wd.step), .phase_s = -1.0};
    if (atomic_load(&wd.depth) > 0) {
        a.phase_s = now_seconds() - atomic_load(&wd.since);
        snprintf(a.op, sizeof a.op, "%s", atomic_load(&wd.op));
    }
    return a;
}

/* Answers every question that has arrived. */
static void answer_questions(void) {
    for (;;) {
        int any;
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, TAG_QUESTION, wd.comm, &any, &st);
        if (!any) return;
        long question;
        MPI_Recv(&question, 1, MPI_LONG, st.MPI_SOURCE, TAG_QUESTION, wd.comm, MPI_STATUS_IGNORE);
        Answer *a = &wd.answer[st.MPI_SOURCE]; /* never waited for: the buffer outlives the send */
        *a = where_am_i();
        a->question = question;
        MPI_Request req;
        MPI_Isend(a, sizeof *a, MPI_BYTE, st.MPI_SOURCE, TAG_ANSWER, wd.comm, &req);
        MPI_Request_free(&req);
    }
}

static void nap(double s) {
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

/* Whether the id-th phase entered is still this rank's. */
static int in_phase(long id) { return atomic_load(&wd.depth) > 0 && atomic_load(&wd.entered) == id; }

/* Appends to buf (n bytes, *at of them used) as much as fits. */
__attribute__((format(printf, 4, 5))) static void append(char *buf, size_t n, size_t *at, const char *fmt, ...) {
    if (*at >= n) return;
    va_list ap;
    va_start(ap, fmt);
    *at += (size_t)vsnprintf(buf + *at, n - *at, fmt, ap);
    va_end(ap);
}

/* This rank's phase, the id-th, has lasted past a multiple of the timeout: asks the
 * others where they are. Every rank answering from this step and phase waits on one
 * slow operation (a long checkpoint write): the lowest rank warns, and the wait goes
 * on. A rank silent or elsewhere: the lowest rank alive names them and where they are,
 * and every rank that timed out ends the job. Returns only to go on waiting. */
static void check_stall(double age, long id) {
    Answer me = where_am_i(), *ans = xcalloc((size_t)wd.size, sizeof *ans);
    int *got = xcalloc((size_t)wd.size, sizeof *got), lowest_alive = wd.rank;
    if (wd.threaded) {
        wd.asked++;
        MPI_Request *req = xcalloc((size_t)wd.size, sizeof *req);
        for (int r = 0; r < wd.size; r++) {
            req[r] = MPI_REQUEST_NULL;
            if (r == wd.rank) continue;
            MPI_Request q;
            MPI_Isend(&wd.asked, 1, MPI_LONG, r, TAG_QUESTION, wd.comm, &q);
            MPI_Request_free(&q);
            MPI_Irecv(&ans[r], sizeof ans[r], MPI_BYTE, r, TAG_ANSWER, wd.comm, &req[r]);
        }
        double deadline = now_seconds() + WATCHDOG_GRACE_S;
        for (int pending = wd.size - 1; pending > 0 && now_seconds() < deadline && in_phase(id);) {
            answer_questions(); /* the others ask too */
            for (int r = 0; r < wd.size; r++) {
                if (req[r] == MPI_REQUEST_NULL) continue;
                MPI_Test(&req[r], &got[r], MPI_STATUS_IGNORE);
                if (got[r] && ans[r].question != wd.asked) { /* a late answer to an earlier question */
                    got[r] = 0;
                    MPI_Irecv(&ans[r], sizeof ans[r], MPI_BYTE, r, TAG_ANSWER, wd.comm, &req[r]);
                } else if (got[r]) pending--;
            }
            if (pending) nap(0.05);
        }
        if (!in_phase(id)) { /* it ended while asking (the others may be past it, or gone): no stall */
            for (int r = 0; r < wd.size; r++)
                if (req[r] != MPI_REQUEST_NULL) MPI_Cancel(&req[r]), MPI_Wait(&req[r], MPI_STATUS_IGNORE);
            free(req), free(ans), free(got);
            return;
        }
        free(req); /* unanswered ones stay posted, into ans: kept until the abort */
        for (int r = 0; r < wd.size; r++)
            if (got[r] && r < lowest_alive) lowest_alive = r;
    }
    char silent[4096] = "", elsewhere[4096] = "";
    size_t ns = 0, ne = 0;
    for (int r = 0; r < wd.size; r++) {
        Answer *a = &ans[r];
        if (r == wd.rank) continue;
        if (!got[r]) {
            append(silent, sizeof silent, &ns, "%s%d (host %s)", ns ? ", " : "", r, wd.host[r]);
            continue;
        }
        a->op[sizeof a->op - 1] = '\0';
        if (a->phase_s < 0)
            append(elsewhere, sizeof elsewhere, &ne, "%srank %d (host %s) from %s %ld, outside any collective",
                   ne ? "; " : "", r, wd.host[r], wd.job.step, a->step);
        else if (a->step != me.step || strcmp(a->op, me.op))
            append(elsewhere, sizeof elsewhere, &ne, "%srank %d (host %s) from %s %ld, in %s", ne ? "; " : "", r,
                   wd.host[r], wd.job.step, a->step, a->op);
    }
    if (wd.threaded && !ns && !ne) {
        free(ans), free(got);
        if (wd.rank == lowest_alive) {
            fprintf(stderr, "gpt %s: warning: %s %ld: %s has not completed in %.0f s (--collective-timeout %g), "
                    "but every rank answered from this %s and phase: still waiting\n", wd.job.cmd, wd.job.step,
                    me.step, me.op, age, wd.job.timeout_s, wd.job.step);
            fflush(stderr);
        }
        return;
    }
    if (wd.rank == lowest_alive) {
        char why[128];
        if (!wd.threaded)
            snprintf(why, sizeof why, "which ranks did not arrive cannot be known (MPI without MPI_THREAD_MULTIPLE)");
        else if (ns) snprintf(why, sizeof why, "ranks that did not answer: ");
        else snprintf(why, sizeof why, "every rank answered, not all from this %s and phase: ", wd.job.step);
        fprintf(stderr,
                "gpt %s: %s %ld: %s has not completed in %.0f s (--collective-timeout %g) on rank %d (host %s); "
                "%s%s%s%s. Ending the job with exit code %d: %s\n",
                wd.job.cmd, wd.job.step, me.step, me.op, age, wd.job.timeout_s, wd.rank, wd.host[wd.rank], why,
                silent, ns && ne ? "; " : "", elsewhere, WATCHDOG_EXIT, wd.job.outcome);
        fflush(stderr);
    }
    fflush(stdout);
    /* before the abort, on every rank that ends the job: whichever rank stalled, one
     * alive removes it (the file system is shared: parallel HDF5 needs it) */
    if (wd.job.remove) remove(wd.job.remove);
    MPI_Abort(MPI_COMM_WORLD, WATCHDOG_EXIT);
    _exit(WATCHDOG_EXIT); /* MPI_Abort does not return; should it, this rank still ends */
}

static void *watch(void *unused) {
    (void)unused;
    long phase = -1;
    int checks = 0; /* of this phase: the next comes one timeout after the last */
    pthread_mutex_lock(&wd.lock);
    while (!atomic_load(&wd.stopping)) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_sec += 1;
        pthread_cond_timedwait(&wd.wake, &wd.lock, &t);
        if (atomic_load(&wd.stopping)) break;
        if (wd.threaded) answer_questions();
        long id = atomic_load(&wd.entered);
        Answer a = where_am_i();
        if (id != phase) phase = id, checks = 0;
        if (a.phase_s > wd.job.timeout_s * (checks + 1)) check_stall(a.phase_s, id), checks++;
    }
    pthread_mutex_unlock(&wd.lock);
    return NULL;
}

int watchdog_start(const WatchdogJob *job) {
    if (job->timeout_s <= 0 || wd.running) return 0;
    int level;
    MPI_Query_thread(&level);
    wd.threaded = level == MPI_THREAD_MULTIPLE;
    wd.job = *job;
    MPI_Comm_rank(MPI_COMM_WORLD, &wd.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &wd.size);
    wd.host = xcalloc((size_t)wd.size, sizeof *wd.host);
    wd.answer = xcalloc((size_t)wd.size, sizeof *wd.answer);
    int len;
    MPI_Get_processor_name(wd.host[wd.rank], &len);
    MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, wd.host, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, MPI_COMM_WORLD);
    MPI_Comm_dup(MPI_COMM_WORLD, &wd.comm);
    atomic_store(&wd.stopping, 0);
    wd.running = 1; /* watchdog_stop's barrier needs every rank, threaded or not */
    wd.has_thread = !pthread_create(&wd.thread, NULL, watch, NULL);
    return wd.has_thread ? 0 : gpt_error("--collective-timeout: cannot start the watchdog's thread");
}

void watchdog_stop(void) {
    if (!wd.running) return;
    pthread_mutex_lock(&wd.lock);
    atomic_store(&wd.stopping, 1);
    pthread_cond_signal(&wd.wake);
    pthread_mutex_unlock(&wd.lock);
    if (wd.has_thread) pthread_join(wd.thread, NULL);
    /* no rank asks any more once every rank is here: nothing is left in flight */
    MPI_Barrier(wd.comm);
    MPI_Comm_free(&wd.comm);
    free(wd.host);
    free(wd.answer);
    wd.running = wd.has_thread = 0;
}
