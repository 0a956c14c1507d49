/* run_dir.c: the run directory's lock, files and resume report (see run_dir.h); the
 * files' names are run_layout.h's. */
#include "run/run_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/atomic.h"
#include "base/jsonl.h"
#include "base/util.h"
#include "files/run_layout.h"

static int mkdir_p(const char *dir) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(path, 0777) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(path, 0777) && errno != EEXIST ? -1 : 0;
}

static int make_run_dir(const char *out) {
    struct stat st;
    if (mkdir_p(out)) return gpt_error("%s: cannot create the run directory: %s", out, strerror(errno));
    if (stat(out, &st) || !S_ISDIR(st.st_mode))
        return gpt_error("%s: not a directory (--out names the run directory, which holds several files)", out);
    return 0;
}

int run_dir_lock(const char *out) {
    if (make_run_dir(out)) return -1;
    char path[PATH_MAX], holder[256] = "";
    if (run_path(path, sizeof path, out, RUN_LOCK)) return -1;
    /* never followed: the lock is written to, and jobs often run as root in shared directories */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
    struct stat st;
    if (fd < 0 && errno != ELOOP) return gpt_error("%s: cannot create the run's lock: %s", path, strerror(errno));
    if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        return gpt_error("%s: the run's lock is not a regular file (a symbolic link, a FIFO or a device); remove it "
                         "if no run is using %s", path, out);
    }
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        if (errno != EWOULDBLOCK) { /* a file system without flock: run unprotected rather than not at all */
            fprintf(stderr, "gpt: warning: %s: cannot lock (%s); nothing stops a second run in %s\n", path,
                    strerror(errno), out);
            return fd;
        }
        ssize_t n = read(fd, holder, sizeof holder - 1);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        close(fd);
        return gpt_error("%s is in use by another run (%s, holding %s); wait for it to end or stop it, or use "
                         "another --out", out, holder[0] ? holder : "its PID unknown", path);
    }
    return fd;
}

void run_dir_claim(int fd) {
    char host[128] = "?";
    gethostname(host, sizeof host - 1);
    if (fd >= 0 && ftruncate(fd, 0) == 0) dprintf(fd, "PID %ld on host %s\n", (long)getpid(), host);
}

void run_dir_unlock(int fd) {
    if (fd >= 0) close(fd); /* closing the last descriptor releases the flock */
}

int run_dir_clear(const char *out) {
    char path[PATH_MAX];
    DIR *d = opendir(out);
    if (!d) return gpt_error("%s: cannot read: %s", out, strerror(errno));
    int rc = 0;
    for (struct dirent *e; !rc && (e = readdir(d));) {
        if (!run_is_run_file(e->d_name)) continue;
        if (run_path(path, sizeof path, out, e->d_name)) rc = -1;
        else if (remove(path) && errno != ENOENT)
            rc = gpt_error("--overwrite: cannot remove the old run's %s: %s", path, strerror(errno));
    }
    closedir(d);
    return rc;
}

/* What in out would make a resume or a prune mistake it for this run's own; NULL if nothing. */
static const char *run_evidence(const char *out, char *buf, size_t size) {
    long *steps;
    int n = run_ckpt_list(out, &steps);
    if (n) run_ckpt_path(buf, size, out, steps[0]);
    free(steps);
    if (n) return buf;
    static const char *const names[] = {RUN_LATEST, RUN_MODEL, RUN_METRICS};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct stat st;
        if (!run_path(buf, size, out, names[i]) && stat(buf, &st) == 0 && (i < 2 || st.st_size > 0)) return buf;
    }
    return NULL;
}

/* Keeps the lines of metrics.jsonl up to `step`, whatever their length (a line that is
 * no record, such as a torn last one, is dropped). */
static int cut_metrics(const char *path, long step) {
    if (access(path, F_OK)) return 0; /* none yet */
    JsonlReader *in = jsonl_open(path, NULL, JSONL_SKIP_BAD);
    AtomicFile out;
    if (!in || atomic_open(&out, path)) {
        jsonl_close(in);
        return -1;
    }
    json_t *j;
    int rc;
    while ((rc = jsonl_next(in, &j)) > 0) {
        json_t *s = json_object_get(j, "step");
        size_t len;
        const char *line = jsonl_text(in, &len);
        if (json_is_integer(s) && json_integer_value(s) <= step) fwrite(line, 1, len, out.f), fputc('\n', out.f);
        json_decref(j);
    }
    jsonl_close(in);
    if (rc < 0) {
        atomic_abort(&out);
        return -1;
    }
    return atomic_commit(&out);
}

int run_dir_check_unused(const char *out) {
    char found[PATH_MAX];
    return run_evidence(out, found, sizeof found)
               ? gpt_error("%s holds another run (%s exists); pass --overwrite to replace it, or --resume auto to "
                           "continue it", out, found)
               : 0;
}

int run_dir_prepare(const char *out, json_t *config, long resumed_step) {
    char path[PATH_MAX];
    AtomicFile a;
    if (resumed_step > 0 && run_retire_checkpoints(out, resumed_step)) return -1;
    if (run_path(path, sizeof path, out, RUN_CONFIG) || atomic_open(&a, path)) return -1;
    if (json_dumpf(config, a.f, JSON_INDENT(2) | JSON_SORT_KEYS)) {
        atomic_abort(&a);
        return gpt_error("%s: cannot write: %s", path, strerror(errno ? errno : EIO));
    }
    if (atomic_commit(&a) || run_path(path, sizeof path, out, RUN_METRICS)) return -1;
    if (resumed_step > 0) return cut_metrics(path, resumed_step);
    return atomic_open(&a, path) ? -1 : atomic_commit(&a); /* empty: the run appends */
}

int run_metrics_open(const char *out) {
    char path[PATH_MAX];
    if (run_path(path, sizeof path, out, RUN_METRICS)) return -1;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) gpt_error("%s: cannot open for appending: %s", path, strerror(errno));
    return fd;
}

int run_metrics_write(int fd, const char *out, json_t *line) {
    size_t n = json_dumpb(line, NULL, 0, JSON_COMPACT), done = 0;
    if (!n) return gpt_error("%s/" RUN_METRICS ": cannot encode a line", out);
    char *text = xmalloc(n + 1);
    json_dumpb(line, text, n, JSON_COMPACT);
    text[n++] = '\n';
    errno = 0;
    off_t end = lseek(fd, 0, SEEK_END); /* where the line starts: a torn one is cut back to it */
    while (end >= 0 && done < n) {
        ssize_t w = write(fd, text + done, n - done);
        if (w > 0) done += (size_t)w;
        else if (w == 0 || errno != EINTR) break;
    }
    int err = errno ? errno : EIO;
    free(text);
    if (done == n) return 0;
    if (end >= 0 && done > 0 && ftruncate(fd, end))
        return gpt_error("%s/" RUN_METRICS ": cannot write: %s; nor cut its torn last line off: %s", out,
                         strerror(err), strerror(errno));
    return gpt_error("%s/" RUN_METRICS ": cannot write: %s", out, strerror(err));
}

/* Prints "name: old -> new", after "changed on resume:" the first time. */
static void print_change(int *n, const char *section, const char *key, json_t *old, json_t *now) {
    char *a = old ? json_dumps(old, JSON_ENCODE_ANY) : NULL, *b = json_dumps(now, JSON_ENCODE_ANY);
    printf("%s %s%s%s: %s -> %s", (*n)++ ? "," : "changed on resume:", section, key ? "." : "", key ? key : "",
           a ? a : "(none)", b ? b : "?");
    free(a), free(b);
}

void run_report_changes(const char *saved_text, const char *now_text) {
    json_t *saved = json_loads(saved_text, 0, NULL), *now = json_loads(now_text, 0, NULL);
    const char *section, *key;
    json_t *value, *v;
    int n = 0;
    json_object_foreach(now, section, value) {
        json_t *old = json_object_get(saved, section);
        if (!strcmp(section, "versions") || !strcmp(section, "resume") || json_equal(old, value)) continue;
        if (!json_is_object(value)) print_change(&n, section, NULL, old, value);
        else json_object_foreach(value, key, v) {
                if (!json_equal(json_object_get(old, key), v)) print_change(&n, section, key, json_object_get(old, key), v);
            }
    }
    if (n) printf("\n");
    json_decref(saved);
    json_decref(now);
}
