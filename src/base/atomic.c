/* atomic.c: temp file, fsync, rename, fsync of the directory (atomic.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/atomic.h"
#include "base/util.h"

int atomic_tmp_path(const char *path, char *tmp, size_t size) {
    int n = snprintf(tmp, size, "%s.tmp", path);
    if (n < 0 || (size_t)n >= size) return gpt_error("%s: path too long", path);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return gpt_error("%s: is a directory, not a name for the output file", path);
    return 0;
}

int fsync_path(const char *path, int directory) {
    int fd = open(path, O_RDONLY | (directory ? O_DIRECTORY : 0));
    if (fd < 0) return gpt_error("%s: cannot open to flush to disk: %s", path, strerror(errno));
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    return rc ? gpt_error("%s: cannot flush to disk: %s", path, strerror(err)) : 0;
}

static int fsync_parent(const char *path) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    return fsync_path(dir, 1);
}

int atomic_publish(const char *tmp, const char *path) {
    if (fsync_path(tmp, 0)) {
        remove(tmp);
        return -1;
    }
    fault_point("atomic-rename", -1, -1); /* the crash tests' kill: tmp whole, path still the old file */
    if (rename(tmp, path)) {
        int err = errno;
        remove(tmp);
        return gpt_error("%s: cannot rename %s into place: %s", path, tmp, strerror(err));
    }
    return fsync_parent(path);
}

int atomic_open(AtomicFile *a, const char *path) {
    *a = (AtomicFile){0};
    char tmp[PATH_MAX];
    if (atomic_tmp_path(path, tmp, sizeof tmp)) return -1;
    a->f = fopen(tmp, "wb");
    if (!a->f) return gpt_error("%s: cannot create: %s", tmp, strerror(errno));
    a->path = xstrdup(path);
    a->tmp = xstrdup(tmp);
    return 0;
}

static void atomic_free(AtomicFile *a) {
    free(a->path);
    free(a->tmp);
    *a = (AtomicFile){0};
}

/* Checks that every write reached PATH.tmp and closes it; on failure removes it. */
static int close_checked(AtomicFile *a) {
    int err = ferror(a->f) ? EIO : 0;
    if (fflush(a->f) && !err) err = errno; /* a full disk shows here */
    if (fclose(a->f) && !err) err = errno;
    a->f = NULL;
    if (!err) return 0;
    remove(a->tmp);
    return gpt_error("%s: cannot write: %s", a->tmp, strerror(err));
}

int atomic_commit(AtomicFile *a) {
    int rc = close_checked(a);
    if (!rc) rc = atomic_publish(a->tmp, a->path);
    atomic_free(a);
    return rc;
}

int atomic_finish(AtomicFile *a) {
    int rc = close_checked(a);
    atomic_free(a);
    return rc;
}

void atomic_abort(AtomicFile *a) {
    if (a->f) fclose(a->f);
    if (a->tmp) remove(a->tmp);
    atomic_free(a);
}
