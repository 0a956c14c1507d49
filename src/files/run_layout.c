/* run_layout.c: the run directory's file names, its checkpoints listed, latest, the
 * retirement of an abandoned timeline and the pruning (see run_layout.h). A checkpoint's
 * file is ckpt_<step>.h5 with a decimal step; nothing else in the directory is taken for
 * one. */
#include "files/run_layout.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/atomic.h"
#include "base/util.h"

#define CKPT_PREFIX "ckpt_"
#define CKPT_SUFFIX ".h5"
#define TMP_SUFFIX ".tmp" /* atomic.h's temporary files */

static int fits(int n, size_t size, const char *run_dir) {
    return n < 0 || (size_t)n >= size ? gpt_error("%s: path too long", run_dir) : 0;
}

int run_path(char *buf, size_t size, const char *run_dir, const char *name) {
    return fits(snprintf(buf, size, "%s/%s", run_dir, name), size, run_dir);
}

int run_ckpt_path(char *buf, size_t size, const char *run_dir, long step) {
    return fits(snprintf(buf, size, "%s/" CKPT_PREFIX "%ld" CKPT_SUFFIX, run_dir, step), size, run_dir);
}

/* The step of a checkpoint's file name, or -1; tmp: of its temporary file instead. */
static long step_of(const char *name, int tmp) {
    size_t p = strlen(CKPT_PREFIX);
    if (strncmp(name, CKPT_PREFIX, p) || name[p] < '0' || name[p] > '9') return -1;
    char *end;
    long step = strtol(name + p, &end, 10);
    return strcmp(end, tmp ? CKPT_SUFFIX TMP_SUFFIX : CKPT_SUFFIX) ? -1 : step;
}

int run_is_run_file(const char *name) {
    static const char *const files[] = {RUN_LATEST, RUN_MODEL, RUN_METRICS, RUN_CONFIG};
    if (step_of(name, 0) >= 0 || step_of(name, 1) >= 0) return 1;
    size_t n = strlen(name), t = strlen(TMP_SUFFIX);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t k = strlen(files[i]);
        if (!strncmp(name, files[i], k) && (n == k || (n == k + t && !strcmp(name + k, TMP_SUFFIX)))) return 1;
    }
    return 0;
}

static int newest_first(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x < y) - (x > y);
}

int run_ckpt_list(const char *run_dir, long **steps) {
    *steps = NULL;
    DIR *d = opendir(run_dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        long step = step_of(e->d_name, 0);
        if (step < 0) continue;
        if (n == cap) *steps = xrealloc(*steps, sizeof(long) * (size_t)(cap = cap ? 2 * cap : 16));
        (*steps)[n++] = step;
    }
    closedir(d);
    if (n) qsort(*steps, (size_t)n, sizeof(long), newest_first);
    return n;
}

int run_resume_order(const char *run_dir, long **steps) {
    int n = run_ckpt_list(run_dir, steps);
    long named = n ? run_latest_step(run_dir) : -1;
    for (int k = 0; k < n; k++)
        if ((*steps)[k] == named) {
            memmove(*steps + 1, *steps, sizeof(long) * (size_t)k);
            (*steps)[0] = named;
            break;
        }
    return n;
}

int run_point_latest(const char *run_dir, long step) {
    char path[PATH_MAX];
    AtomicFile a;
    if (run_path(path, sizeof path, run_dir, RUN_LATEST) || atomic_open(&a, path)) return -1;
    fprintf(a.f, CKPT_PREFIX "%ld" CKPT_SUFFIX "\n", step); /* a failure shows at the commit */
    return atomic_commit(&a);
}

long run_latest_step(const char *run_dir) {
    char path[PATH_MAX], name[64];
    FILE *f = run_path(path, sizeof path, run_dir, RUN_LATEST) ? NULL : fopen(path, "r");
    if (!f) return -1;
    int got = fgets(name, sizeof name, f) != NULL;
    fclose(f);
    if (!got) return -1;
    name[strcspn(name, "\n")] = '\0';
    return step_of(name, 0);
}

/* RUN_DIR/abandoned/ckpt_<step>.h5, or ckpt_<step>.<k>.h5 for the first k not taken (the
 * run's lock keeps any other run from taking it meanwhile). */
static int abandoned_path(char *buf, size_t size, const char *run_dir, long step) {
    struct stat st;
    for (int k = 0;; k++) {
        int n = k ? snprintf(buf, size, "%s/" RUN_ABANDONED "/" CKPT_PREFIX "%ld.%d" CKPT_SUFFIX, run_dir, step, k)
                  : snprintf(buf, size, "%s/" RUN_ABANDONED "/" CKPT_PREFIX "%ld" CKPT_SUFFIX, run_dir, step);
        if (fits(n, size, run_dir)) return -1;
        if (lstat(buf, &st)) return 0;
    }
}

int run_retire_checkpoints(const char *run_dir, long step) {
    char from[PATH_MAX], to[PATH_MAX], dir[PATH_MAX];
    long *steps;
    int n = run_ckpt_list(run_dir, &steps), later = 0, rc = run_path(dir, sizeof dir, run_dir, RUN_ABANDONED);
    while (later < n && steps[later] > step) later++;
    if (!rc && later && mkdir(dir, 0777) && errno != EEXIST)
        rc = gpt_error("%s: cannot create it for the checkpoints past step %ld, the step resumed from: %s", dir,
                       step, strerror(errno));
    for (int i = 0; !rc && i < later; i++) {
        if (run_ckpt_path(from, sizeof from, run_dir, steps[i]) || abandoned_path(to, sizeof to, run_dir, steps[i]))
            rc = -1;
        else if (rename(from, to))
            rc = gpt_error("%s: cannot move it to %s (its step is past %ld, the step resumed from): %s", from, to,
                           step, strerror(errno));
        else printf("moved %s to %s: its step is past %ld, the step resumed from\n", from, to, step);
    }
    /* durable before latest names the resumed timeline, as atomic.h's renames are */
    if (!rc && later) rc = fsync_path(dir, 1) || fsync_path(run_dir, 1) ? -1 : 0;
    long newest = later < n ? steps[later] : -1;
    free(steps);
    if (rc || run_latest_step(run_dir) == newest) return rc;
    if (newest >= 0) return run_point_latest(run_dir, newest);
    if (run_path(from, sizeof from, run_dir, RUN_LATEST)) return -1;
    return remove(from) && errno != ENOENT ? gpt_error("%s: cannot remove: %s", from, strerror(errno)) : 0;
}

void run_prune_checkpoints(const char *cmd, const char *run_dir, int keep, long written) {
    long *steps;
    int n = run_ckpt_list(run_dir, &steps);
    for (int i = keep; i < n; i++) {
        char path[PATH_MAX];
        if (steps[i] != written && !run_ckpt_path(path, sizeof path, run_dir, steps[i]) && remove(path))
            fprintf(stderr, "gpt %s: warning: cannot remove old checkpoint %s: %s\n", cmd, path, strerror(errno));
    }
    free(steps);
}
