/* staged.c: all-or-nothing writes of several files (see staged.h). Each file is an
 * AtomicFile (base/atomic.h) finished but not published until staged_commit, so that no
 * file appears before all of them are complete. */
#include "interop/staged.h"

#include <limits.h>
#include <stdlib.h>

#include "base/atomic.h"
#include "base/util.h"

int staged_write(Staged *s, const char *path, int (*write)(FILE *f, const char *path, const void *ctx),
                 const void *ctx) {
    AtomicFile a;
    if (atomic_open(&a, path)) return -1;
    if (write(a.f, path, ctx)) {
        atomic_abort(&a);
        return -1;
    }
    if (atomic_finish(&a)) return -1;
    s->paths = xrealloc(s->paths, (size_t)(s->n + 1) * sizeof *s->paths);
    s->paths[s->n++] = xstrdup(path);
    return 0;
}

/* Removes the .tmp files of paths [from, n) and forgets them all. */
static void discard(Staged *s, int from) {
    char tmp[PATH_MAX];
    for (int i = 0; i < s->n; i++) {
        if (i >= from && !atomic_tmp_path(s->paths[i], tmp, sizeof tmp)) remove(tmp);
        free(s->paths[i]);
    }
    free(s->paths);
    s->paths = NULL, s->n = 0;
}

int staged_commit(Staged *s) {
    char tmp[PATH_MAX];
    int i = 0;
    while (i < s->n && !atomic_tmp_path(s->paths[i], tmp, sizeof tmp) && !atomic_publish(tmp, s->paths[i])) i++;
    int rc = i < s->n ? -1 : 0; /* atomic_publish removed the failed one's tmp file */
    discard(s, i + 1);
    return rc;
}

void staged_abort(Staged *s) { discard(s, 0); }
