/* staged.h: all-or-nothing writes of several files, for the exporters (an HF directory
 * is seven files; a reader must never find some new and some old, or a torn one).
 *
 * Each file is written whole to PATH.tmp first; staged_commit then publishes them one by
 * one with atomic_publish (base/atomic.h: fsync, rename, fsync of the directory), so a
 * crash leaves every file whole, old or new; staged_abort removes the .tmp files and
 * leaves every PATH as it was. Not thread-safe; one Staged per set of files. */
#ifndef GPT_STAGED_H
#define GPT_STAGED_H

#include <stdio.h>

/* Zero-initialised by the caller ({0}); owns the PATHs it remembers until
 * staged_commit or staged_abort, exactly one of which the caller calls. */
typedef struct {
    int n;
    char **paths;
} Staged;
/* Writes PATH.tmp with write(f, path, ctx) and remembers PATH; -1 (the tmp file removed)
 * on failure, naming PATH.tmp (a full disk included). */
int staged_write(Staged *s, const char *path, int (*write)(FILE *f, const char *path, const void *ctx),
                 const void *ctx);
/* Publishes every file written; on a failure the rest are removed and -1 names the file. */
int staged_commit(Staged *s);
void staged_abort(Staged *s);

#endif
