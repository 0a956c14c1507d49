/* test_atomic.c: base/atomic.h, the one writer of every file the tool writes. A commit
 * leaves the file whole under its name and no PATH.tmp; an abort, and every failure,
 * leave an old file as it was and no PATH.tmp, with -1 and a message naming the path.
 * The failures: a directory that does not exist (the create), a write past the file-size
 * limit (RLIMIT_FSIZE: a write error as a full disk gives, seen at the commit), and a
 * rename onto a directory (the publication). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/atomic.h"
#include "base/util.h"

static char dir[64];

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_atomic.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path_in_dir(char *buf, size_t size, const char *name) { snprintf(buf, size, "%s/%s", dir, name); }

/* The whole content of path ("" when it is missing: then *exists is 0). */
static char *slurp(const char *path, int *exists) {
    static char buf[1 << 16];
    FILE *f = fopen(path, "rb");
    *exists = f != NULL;
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    return buf;
}

static void assert_no_tmp(const char *path) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_not_equal(access(tmp, F_OK), 0);
}

static void write_file(const char *path, const char *text) {
    AtomicFile a;
    assert_int_equal(atomic_open(&a, path), 0);
    fputs(text, a.f);
    assert_int_equal(atomic_commit(&a), 0);
}

static void commit_makes_the_file_whole(void **state) {
    (void)state;
    char path[256];
    int exists;
    path_in_dir(path, sizeof path, "a.txt");
    write_file(path, "first\n");
    assert_string_equal(slurp(path, &exists), "first\n");
    assert_no_tmp(path);
    write_file(path, "second, longer\n"); /* over an old file */
    assert_string_equal(slurp(path, &exists), "second, longer\n");
    assert_no_tmp(path);
}

static void abort_leaves_the_old_file(void **state) {
    (void)state;
    char path[256];
    int exists;
    path_in_dir(path, sizeof path, "b.txt");
    write_file(path, "old\n");
    AtomicFile a;
    assert_int_equal(atomic_open(&a, path), 0);
    fputs("new, never published\n", a.f);
    atomic_abort(&a);
    assert_string_equal(slurp(path, &exists), "old\n");
    assert_no_tmp(path);
}

static void create_in_a_missing_directory_fails(void **state) {
    (void)state;
    char path[256];
    path_in_dir(path, sizeof path, "no/such/dir/c.txt");
    AtomicFile a;
    assert_int_equal(atomic_open(&a, path), -1);
    assert_non_null(strstr(gpt_last_error(), path));
    assert_null(a.f);
}

static void a_failed_write_leaves_the_old_file(void **state) {
    (void)state;
    char path[256];
    int exists;
    path_in_dir(path, sizeof path, "d.txt");
    write_file(path, "old\n");
    struct rlimit old, small = {.rlim_cur = 4096};
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    small.rlim_max = old.rlim_max;
    void (*was)(int) = signal(SIGXFSZ, SIG_IGN); /* the write fails with EFBIG instead */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    AtomicFile a;
    assert_int_equal(atomic_open(&a, path), 0);
    for (int i = 0; i < 1000; i++) fputs("more than the limit allows, line after line\n", a.f);
    int rc = atomic_commit(&a);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, was);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(gpt_last_error(), path));
    assert_string_equal(slurp(path, &exists), "old\n");
    assert_no_tmp(path);
}

static void a_failed_publication_leaves_the_target(void **state) {
    (void)state;
    char path[256], inside[300];
    int exists;
    path_in_dir(path, sizeof path, "e");
    AtomicFile a;
    char tmp[300];
    assert_int_equal(atomic_tmp_path(path, tmp, sizeof tmp), 0);
    assert_int_equal(atomic_open(&a, path), 0);
    fputs("data\n", a.f);
    assert_int_equal(atomic_finish(&a), 0); /* complete, not yet published */
    assert_int_equal(access(tmp, F_OK), 0);
    /* meanwhile a non-empty directory took the name: rename cannot replace it */
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(inside, sizeof inside, "%s/keep", path);
    write_file(inside, "kept\n");
    assert_int_equal(atomic_publish(tmp, path), -1);
    assert_non_null(strstr(gpt_last_error(), path));
    assert_string_equal(slurp(inside, &exists), "kept\n");
    assert_no_tmp(path);
}

static void a_directory_is_refused_before_anything_is_written(void **state) {
    (void)state;
    char path[256];
    path_in_dir(path, sizeof path, "d");
    assert_int_equal(mkdir(path, 0755), 0);
    AtomicFile a;
    assert_int_equal(atomic_open(&a, path), -1);
    assert_non_null(strstr(gpt_last_error(), "is a directory"));
    assert_non_null(strstr(gpt_last_error(), path));
    assert_no_tmp(path);
}

static void a_path_too_long_is_named(void **state) {
    (void)state;
    char tmp[8];
    assert_int_equal(atomic_tmp_path("/a/long/path", tmp, sizeof tmp), -1);
    assert_non_null(strstr(gpt_last_error(), "/a/long/path"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(commit_makes_the_file_whole),
        cmocka_unit_test(abort_leaves_the_old_file),
        cmocka_unit_test(create_in_a_missing_directory_fails),
        cmocka_unit_test(a_failed_write_leaves_the_old_file),
        cmocka_unit_test(a_failed_publication_leaves_the_target),
        cmocka_unit_test(a_directory_is_refused_before_anything_is_written),
        cmocka_unit_test(a_path_too_long_is_named),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
