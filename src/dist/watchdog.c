/* watchdog.c: the collective timeout (see watchdog.h). */
#include "dist/watchdog.h"

#include <errno.h>
#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"

enum { TAG_QUESTION = 1, TAG_ANSWER = 2 };

typedef struct { /* a rank's answer: where it is */
    long step;
    double phase_s; /* how long it has been in its phase; < 0: in none (computing) */
    char op[80];
} Answer;

static struct {
    _Atomic(const char *) op;
    _Atomic double since;
    atomic_int depth;
    atomic_long step;
    atomic_int stopping;
    double timeout_s;
    const char *cmd;
    int running, has_thread, threaded, rank, size;
    char (*host)[MPI_MAX_PROCESSOR_NAME]; /* each rank's */
    Answer *answer;                       /* the last one sent to each rank */
    MPI_Comm comm;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
} wd = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

void watchdog_step(long step) { atomic_store(&wd.step, step); }

void watchdog_enter(const char *op) {
    if (atomic_load(&wd.depth) == 0) {
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
        long their_step;
        MPI_Recv(&their_step, 1, MPI_LONG, st.MPI_SOURCE, TAG_QUESTION, wd.comm, MPI_STATUS_IGNORE);
        Answer *a = &wd.answer[st.MPI_SOURCE]; /* never waited for: the buffer outlives the send */
        *a = where_am_i();
        MPI_Request req;
        MPI_Isend(a, sizeof *a, MPI_BYTE, st.MPI_SOURCE, TAG_ANSWER, wd.comm, &req);
        MPI_Request_free(&req);
    }
}

static void nap(double s) {
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

/* This rank's phase timed out: asks the others, reports, ends the job. Never returns. */
static void stalled(double age) {
    Answer me = where_am_i(), *ans = xcalloc((size_t)wd.size, sizeof *ans);
    int *got = xcalloc((size_t)wd.size, sizeof *got), lowest_alive = wd.rank;
    if (wd.threaded) {
        long my_step = me.step;
        MPI_Request *req = xcalloc((size_t)wd.size, sizeof *req);
        for (int r = 0; r < wd.size; r++) {
            req[r] = MPI_REQUEST_NULL;
            if (r == wd.rank) continue;
            MPI_Request q;
            MPI_Isend(&my_step, 1, MPI_LONG, r, TAG_QUESTION, wd.comm, &q);
            MPI_Request_free(&q);
            MPI_Irecv(&ans[r], sizeof ans[r], MPI_BYTE, r, TAG_ANSWER, wd.comm, &req[r]);
        }
        double deadline = now_seconds() + WATCHDOG_GRACE_S;
        for (int pending = wd.size - 1; pending > 0 && now_seconds() < deadline;) {
            answer_questions(); /* the others ask too */
            for (int r = 0; r < wd.size; r++) {
                if (req[r] == MPI_REQUEST_NULL) continue;
                MPI_Test(&req[r], &got[r], MPI_STATUS_IGNORE);
                if (got[r]) pending--;
            }
            if (pending) nap(0.05);
        }
        for (int r = 0; r < wd.size; r++)
            if (got[r] && r < lowest_alive) lowest_alive = r;
    }
    if (wd.rank == lowest_alive) {
        char silent[4096] = "", late[4096] = "";
        size_t ns = 0, nl = 0;
        for (int r = 0; r < wd.size; r++) {
            if (r == wd.rank) continue;
            if (!got[r] && ns < sizeof silent)
                ns += (size_t)snprintf(silent + ns, sizeof silent - ns, "%s%d (host %s)", ns ? ", " : "", r, wd.host[r]);
            else if (got[r] && ans[r].phase_s < 0 && nl < sizeof late)
                nl += (size_t)snprintf(late + nl, sizeof late - nl, "; rank %d (host %s) answered from step %ld, "
                                       "outside any collective", r, wd.host[r], ans[r].step);
        }
        fprintf(stderr,
                "gpt %s: step %ld: %s has not completed in %.0f s (--collective-timeout %g) on rank %d (host %s); "
                "%s%s%s%s. Ending the job with exit code %d: the checkpoints on disk are as they were; go on with "
                "--resume auto\n",
                wd.cmd, me.step, me.op, age, wd.timeout_s, wd.rank, wd.host[wd.rank],
                !wd.threaded ? "which ranks did not arrive cannot be known (MPI without MPI_THREAD_MULTIPLE)"
                : ns ? "ranks that did not answer: " : "every rank answered", silent, late,
                ns || !wd.threaded ? "" : " (a rank waits in another collective than the others?)", WATCHDOG_EXIT);
        fflush(stderr);
    }
    fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, WATCHDOG_EXIT);
    _exit(WATCHDOG_EXIT); /* MPI_Abort does not return; should it, this rank still ends */
}

static void *watch(void *unused) {
    (void)unused;
    pthread_mutex_lock(&wd.lock);
    while (!atomic_load(&wd.stopping)) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_sec += 1;
        pthread_cond_timedwait(&wd.wake, &wd.lock, &t);
        if (atomic_load(&wd.stopping)) break;
        if (wd.threaded) answer_questions();
        Answer a = where_am_i();
        if (a.phase_s > wd.timeout_s) stalled(a.phase_s);
    }
    pthread_mutex_unlock(&wd.lock);
    return NULL;
}

int watchdog_start(const char *cmd, double timeout_s) {
    if (timeout_s <= 0 || wd.running) return 0;
    int level;
    MPI_Query_thread(&level);
    wd.threaded = level == MPI_THREAD_MULTIPLE;
    wd.cmd = cmd, wd.timeout_s = timeout_s;
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
