/* atomic.h: every file the tool writes appears whole under its name, or not at all.
 *
 * A file is written as PATH.tmp, flushed to disk (fsync), renamed over PATH, and the
 * directory is flushed too, so that neither a failed write nor a crash of the machine
 * leaves an empty or partial file under the final name. Writers that hold a FILE use
 * atomic_open/atomic_commit; writers that create the file by name (HDF5, the checkpoint's
 * collective writes) write atomic_tmp_path's name and call atomic_publish. */
#ifndef GPT_ATOMIC_H
#define GPT_ATOMIC_H

#include <stddef.h>
#include <stdio.h>

/* PATH.tmp into tmp[size]; -1 with a message naming PATH if it does not fit, or if PATH
 * is a directory (which the rename would find only after all the work). Every writer
 * calls it (or atomic_open) before it writes anything. */
int atomic_tmp_path(const char *path, char *tmp, size_t size);
/* Flushes the file (or, with directory set, the directory) at path to disk. */
int fsync_path(const char *path, int directory);
/* Flushes tmp to disk, renames it over path and flushes path's directory. On failure
 * tmp is removed and -1 returned with a message naming path. GPT_FAULT=atomic-rename
 * (util.h; no step or rank) kills the process between the flush and the rename. */
int atomic_publish(const char *tmp, const char *path);

/* A FILE open on PATH.tmp. The caller owns it until atomic_commit or atomic_abort,
 * exactly one of which it calls. */
typedef struct {
    FILE *f;
    char *path, *tmp;
} AtomicFile;
/* Creates PATH.tmp for writing (binary); -1 with a message naming it. */
int atomic_open(AtomicFile *a, const char *path);
/* Checks that every write reached the file (a full disk shows at the flush), closes it
 * and publishes it; on any failure removes PATH.tmp, -1 with a message naming path. */
int atomic_commit(AtomicFile *a);
/* Closes and removes PATH.tmp: PATH stays as it was. */
void atomic_abort(AtomicFile *a);
/* As atomic_commit, but leaves PATH.tmp complete and unpublished, for files that appear
 * together (interop/staged.h) through atomic_publish later. */
int atomic_finish(AtomicFile *a);

#endif
