/* run_layout.c: the run directory's file names, its checkpoints listed, latest and the
 * pruning (see run_layout.h). A checkpoint's file is ckpt_<step>.h5 with a decimal step;
 * nothing else in the directory is taken for one. */
#include "files/run_layout.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int run_point_latest(const char *run_dir, long step) {
    char path[PATH_MAX];
    AtomicFile a;
    if (run_path(path, sizeof path, run_dir, RUN_LATEST) || atomic_open(&a, path)) return -1;
    fprintf(a.f, CKPT_PREFIX "%ld" CKPT_SUFFIX "\n", step); /* a failure shows at the commit */
    return atomic_commit(&a);
}

void run_prune_checkpoints(const char *cmd, const char *run_dir, int keep) {
    long *steps;
    int n = run_ckpt_list(run_dir, &steps);
    for (int i = keep; i < n; i++) {
        char path[PATH_MAX];
        if (!run_ckpt_path(path, sizeof path, run_dir, steps[i]) && remove(path))
            fprintf(stderr, "gpt %s: warning: cannot remove old checkpoint %s: %s\n", cmd, path, strerror(errno));
    }
    free(steps);
}
