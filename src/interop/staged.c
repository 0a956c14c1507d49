/* staged.c: all-or-nothing writes of several files (interop.h). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interop/interop.h"
#include "base/util.h"

static void tmp_name(const char *path, char *buf, size_t size) { snprintf(buf, size, "%s.tmp", path); }

int staged_write(Staged *s, const char *path, int (*write)(FILE *f, const char *path, const void *ctx),
                 const void *ctx) {
    char tmp[PATH_MAX];
    if (strlen(path) + 5 > sizeof tmp) return gpt_error("%s: path too long", path);
    tmp_name(path, tmp, sizeof tmp);
    FILE *f = fopen(tmp, "wb");
    if (!f) return gpt_error("%s: cannot create: %s", tmp, strerror(errno));
    int rc = write(f, path, ctx);
    if (fflush(f) && !rc) rc = gpt_error("%s: cannot write: %s", tmp, strerror(errno)); /* a full disk shows here */
    if (fclose(f) && !rc) rc = gpt_error("%s: cannot write: %s", tmp, strerror(errno));
    if (rc) {
        remove(tmp);
        return -1;
    }
    s->paths = xrealloc(s->paths, (size_t)(s->n + 1) * sizeof *s->paths);
    s->paths[s->n++] = xstrdup(path);
    return 0;
}

static void staged_free(Staged *s) {
    for (int i = 0; i < s->n; i++) free(s->paths[i]);
    free(s->paths);
    s->paths = NULL, s->n = 0;
}

int staged_commit(Staged *s) {
    int rc = 0;
    char tmp[PATH_MAX];
    for (int i = 0; i < s->n && !rc; i++) {
        tmp_name(s->paths[i], tmp, sizeof tmp);
        if (rename(tmp, s->paths[i])) rc = gpt_error("%s: cannot rename %s into place: %s", s->paths[i], tmp, strerror(errno));
    }
    if (rc) staged_abort(s);
    staged_free(s);
    return rc;
}

void staged_abort(Staged *s) {
    char tmp[PATH_MAX];
    for (int i = 0; i < s->n; i++) {
        tmp_name(s->paths[i], tmp, sizeof tmp);
        remove(tmp);
    }
    staged_free(s);
}
