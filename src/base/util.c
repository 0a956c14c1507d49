/* util.c: error messages, checked allocation, clocks and strict number parsing. */
#include "base/util.h"

#include <ctype.h>
#include <immintrin.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char last_error[1024]; /* a writer thread's errors are its own */

/* A word (no space) longer than LONG_WORD bytes keeps its first WORD_HEAD and last
 * WORD_TAIL around "...". */
enum { LONG_WORD = 200, WORD_HEAD = 60, WORD_TAIL = 120 };

static size_t put(char *out, size_t o, size_t size, const char *s, size_t n) {
    if (n > size - 1 - o) n = size - 1 - o;
    memcpy(out + o, s, n);
    return o + n;
}

static int utf8_continuation(char c) { return ((unsigned char)c & 0xC0) == 0x80; }

/* in into out[size] with each long word shortened in its middle, cut between UTF-8
 * characters: a message too long is one naming a long path, whose start and end (the
 * file) tell which it is, and the cause after it must stay. */
static void shorten_words(const char *in, char *out, size_t size) {
    size_t o = 0;
    for (const char *p = in; *p;) {
        size_t n = strcspn(p, " \t\n");
        if (n == 0) n = 1; /* a separator */
        if (n > LONG_WORD) {
            size_t head = WORD_HEAD, tail = n - WORD_TAIL;
            while (head && utf8_continuation(p[head])) head--;
            while (tail < n && utf8_continuation(p[tail])) tail++;
            o = put(out, o, size, p, head);
            o = put(out, o, size, "...", 3);
            o = put(out, o, size, p + tail, n - tail);
        } else {
            o = put(out, o, size, p, n);
        }
        p += n;
    }
    out[o] = '\0';
}

int gpt_error(const char *fmt, ...) {
    char msg[sizeof last_error]; /* the arguments may include gpt_last_error() */
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *full = n >= (int)sizeof msg ? malloc((size_t)n + 1) : NULL;
    if (full) {
        vsnprintf(full, (size_t)n + 1, fmt, again);
        shorten_words(full, msg, sizeof msg);
        free(full);
    }
    va_end(again);
    memcpy(last_error, msg, sizeof msg);
    return -1;
}

const char *gpt_last_error(void) { return last_error; }

static void out_of_memory(size_t bytes) {
    fprintf(stderr, "gpt: out of memory allocating %zu bytes (%.1f MiB)\n", bytes,
            (double)bytes / (1 << 20));
    exit(1); /* 2 is a bad command line (docs/operations.md) */
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

void *xrealloc(void *p, size_t bytes) {
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) out_of_memory(bytes);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

float *xalloc_floats(size_t count) {
    if (count > SIZE_MAX / sizeof(float) - 64) out_of_memory(SIZE_MAX);
    size_t bytes = (count * sizeof(float) + 63) / 64 * 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) out_of_memory(bytes);
    memset(p, 0, bytes);
    return p;
}

uint8_t *read_file(const char *path, size_t *len) {
    int is_stdin = !strcmp(path, "-");
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) return gpt_error("%s: cannot open: %s", path, strerror(errno)), NULL;
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = xmalloc(cap + 1);
    for (size_t got; (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) buf = xrealloc(buf, (cap *= 2) + 1);
    }
    int failed = ferror(f);
    if (!is_stdin) fclose(f);
    if (failed) {
        free(buf);
        return gpt_error("%s: read error", path), NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if invalid: no
 * overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const uint8_t *p, size_t n) {
    uint8_t c = p[0];
    if (c < 0x80) return 1;
    size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (!len || len > n || c > 0xF4) return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F) || (c == 0xF0 && p[1] < 0x90) ||
        (c == 0xF4 && p[1] > 0x8F))
        return 0;
    return len;
}

int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return !stat(a, &sa) && !stat(b, &sb) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

size_t utf8_bom_len(const uint8_t *buf, size_t len) { return len >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3) ? 3 : 0; }

int check_text_piece(const char *path, const uint8_t *buf, size_t len, size_t base, int last, size_t *done) {
    /* a sequence that starts 4 bytes or more before the end is whole, if valid */
    size_t stop = last ? len : len > 3 ? len - 3 : 0, i = 0;
    while (i < stop) {
        if (buf[i] == 0)
            return gpt_error("%s: NUL byte at offset %zu: binary data, expected UTF-8 text", path, base + i);
        size_t k = utf8_seq(buf + i, len - i);
        if (!k) return gpt_error("%s: invalid UTF-8 at byte offset %zu (expected UTF-8 text)", path, base + i);
        i += k;
    }
    *done = i;
    return 0;
}

int check_text(const char *path, const uint8_t *buf, size_t len, size_t base) {
    if (len == 0) return gpt_error("%s: empty file (expected UTF-8 text)", path);
    size_t done;
    return check_text_piece(path, buf, len, base, 1, &done);
}

void fault_point(const char *point, long step, int rank) {
    const char *f = getenv("GPT_FAULT");
    size_t n = strlen(point);
    if (!f || strncmp(f, point, n) != 0) return;
    const char *p = f + n;
    char *end;
    if (*p == ':') {
        if (strtol(p + 1, &end, 10) != step) return;
        p = end;
    }
    if (*p == '@') {
        if (strtol(p + 1, &end, 10) != rank) return;
        p = end;
    }
    if (!strncmp(p, "/SLEEP=", 7)) { /* a slow operation, not a dead one */
        double s = strtod(p + 7, &end);
        struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
        if (*end == '\0' && s > 0)
            while (nanosleep(&ts, &ts) && errno == EINTR) {}
        return;
    }
    int sig = SIGKILL;
    if (!strcmp(p, "/TERM")) sig = SIGTERM, p += 5;
    else if (!strcmp(p, "/STOP")) sig = SIGSTOP, p += 5;
    if (*p == '\0') raise(sig);
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double current_rss_mb(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f && fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    if (f) fclose(f);
    return (double)resident * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
}

/* VmHWM of this address space: ru_maxrss would also count the process before its
 * execve (a forked Python test runner, say). */
double peak_rss_mb(void) {
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    if (f) fclose(f);
    if (kb >= 0) return (double)kb / 1024.0;
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

int parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

int parse_float(const char *s, float *out) {
    double v;
    if (parse_double(s, &v) || !isfinite((float)v)) return -1;
    *out = (float)v;
    return 0;
}

int parse_duration(const char *s, double *seconds) {
    if (!strcmp(s, "UNLIMITED") || !strcmp(s, "unlimited")) return *seconds = 0.0, 0;
    long days = 0, f[3] = {0, 0, 0};
    const char *p = s, *dash = strchr(s, '-');
    char *end;
    if (dash) {
        if (!isdigit((unsigned char)*s)) return -1;
        days = strtol(s, &end, 10);
        if (end != dash) return -1;
        p = dash + 1;
    }
    int n = 0;
    while (n < 3) {
        if (!isdigit((unsigned char)*p)) return -1;
        f[n++] = strtol(p, &end, 10);
        p = end;
        if (*p != ':') break;
        p++;
    }
    if (*p) return -1;
    long h = 0, m = 0, sec = 0;
    if (dash) h = f[0], m = f[1], sec = f[2];            /* D-HH[:MM[:SS]] */
    else if (n == 3) h = f[0], m = f[1], sec = f[2];     /* HH:MM:SS */
    else m = f[0], sec = f[1];                          /* MM[:SS] */
    /* the leading field counts its unit freely (90 is 90 minutes); the others are clock fields */
    if ((dash && h >= 24) || ((dash || n == 3) && m >= 60) || sec >= 60) return -1;
    double total = (((double)days * 24 + (double)h) * 60 + (double)m) * 60 + (double)sec;
    if (!(total > 0)) return -1;
    *seconds = total;
    return 0;
}

json_t *json_real_or_null(double x) { return isfinite(x) ? json_real(x) : json_null(); }

uint16_t float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, mant = x & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0)); /* infinity, NaN */
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);                         /* overflow */
    uint32_t h, rem, halfway;
    if (e <= 0) {                                                           /* subnormal or zero */
        if (e < -10) return (uint16_t)sign;
        int shift = 14 - e;
        mant |= 0x800000;
        h = mant >> shift, rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    } else {
        h = (uint32_t)e << 10 | mant >> 13, rem = mant & 0x1fff, halfway = 0x1000;
    }
    if (rem > halfway || (rem == halfway && (h & 1))) h++; /* a carry rounds up into the exponent */
    return (uint16_t)(sign | h);
}

float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, x;
    if (exp == 0 && mant) { /* subnormal: mant * 2^-24 */
        float f = ldexpf((float)mant, -24);
        return sign ? -f : f;
    }
    x = exp == 0x1f ? sign | 0x7f800000 | mant << 13 : exp ? sign | (exp + 112) << 23 | mant << 13 : sign;
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

void floats_to_halves(const float *x, uint16_t *h, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(h + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) h[i] = float_to_half(x[i]);
}

const char *names_or(const char *const *names, char *buf, size_t size) {
    size_t n = 0;
    buf[0] = '\0';
    for (int k = 0; names[k] && n < size; k++)
        n += (size_t)snprintf(buf + n, size - n, "%s%s", k == 0 ? "" : names[k + 1] ? ", " : " or ", names[k]);
    return buf;
}
