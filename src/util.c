/* util.c: error messages, checked allocation, clocks and strict number parsing. */
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static char last_error[1024];

int gpt_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return -1;
}

const char *gpt_last_error(void) { return last_error; }

static void out_of_memory(size_t bytes) {
    fprintf(stderr, "gpt: out of memory allocating %zu bytes (%.1f MiB)\n", bytes,
            (double)bytes / (1 << 20));
    exit(2);
}

void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) out_of_memory(bytes);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) out_of_memory(count * size);
    return p;
}

float *xalloc_floats(size_t count) {
    if (count > SIZE_MAX / sizeof(float) - 64) out_of_memory(SIZE_MAX);
    size_t bytes = (count * sizeof(float) + 63) / 64 * 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) out_of_memory(bytes);
    memset(p, 0, bytes);
    return p;
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

int parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

int parse_int(const char *s, int *out) {
    long v;
    if (parse_long(s, &v) || v < INT_MIN || v > INT_MAX) return -1;
    *out = (int)v;
    return 0;
}

int parse_u64(const char *s, unsigned long long *out) {
    char *end;
    errno = 0;
    if (*s == '-') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

int parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}
