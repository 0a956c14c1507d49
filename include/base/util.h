/* util.h: checked allocation, error reporting and timing shared by every module.
 *
 * Library functions report recoverable errors (bad input, bad files) by returning -1
 * after gpt_error() has recorded a message; the CLI prints that message and exits
 * non-zero. Running out of memory is not recoverable: the x*alloc helpers print what
 * they were asked for and exit 1, as any other error (2 is a bad command line). */
#ifndef GPT_UTIL_H
#define GPT_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Records a printf-style message as the last error and returns -1. A message longer than
 * the record (1023 bytes: a path of thousands) has each word over 200 bytes shortened in
 * its middle ("/very/long/.../end/file.h5"), so that it keeps its cause. */
int gpt_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The message recorded by the last gpt_error() ("" if none). */
const char *gpt_last_error(void);

void *xmalloc(size_t bytes);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t bytes);
char *xstrdup(const char *s);
/* 64-byte aligned and zero-filled, for the big flat float buffers; free with free(). */
float *xalloc_floats(size_t count);

/* Reads a whole file (path "-" = standard input) into a new buffer (NUL-terminated,
 * *len excludes the NUL); NULL with "PATH: cannot open: reason" on failure. */
uint8_t *read_file(const char *path, size_t *len);
/* 3 if buf starts with the UTF-8 byte order mark (EF BB BF, which some editors write
 * first), else 0: every reader of text skips it instead of taking it for content. */
size_t utf8_bom_len(const uint8_t *buf, size_t len);
/* Checks that buf is text: not empty, no NUL byte, valid UTF-8. -1 with a message
 * naming path and the byte offset (buf starts at byte `base` of the file) otherwise. */
int check_text(const char *path, const uint8_t *buf, size_t len, size_t base);
/* check_text for one piece of a stream as it arrives (an empty piece is no error):
 * *done is the bytes checked, all of them when `last`, else all but a UTF-8 sequence
 * that the piece's end may have cut short, which the next piece starts with. */
int check_text_piece(const char *path, const uint8_t *buf, size_t len, size_t base, int last, size_t *done);
/* 1 if paths a and b name one existing file (the same device and inode, whatever links
 * or spellings lead there), else 0. */
int same_file(const char *a, const char *b);

/* Fault injection for the crash tests (tests/test_checkpoint.py): with the environment
 * variable GPT_FAULT=POINT[:STEP][@RANK][/TERM|/STOP|/SLEEP=S], the process kills itself
 * with SIGKILL (or sends itself SIGTERM, or stops itself: a rank that hangs, for the
 * watchdog's tests; or its thread sleeps S seconds: a slow operation) on reaching the
 * named point (only at that step, only on that rank, when given). */
void fault_point(const char *point, long step, int rank);

/* A JSON number, or null for a NaN or an infinity (JSON has neither): every number the
 * tool writes as JSON (metrics.jsonl, --json) goes through it. */
struct json_t *json_real_or_null(double x);

/* IEEE binary16 <-> binary32, rounding to nearest even (safetensors F16, GGUF F16);
 * floats_to_halves converts n at once with the F16C instructions of every x86-64-v3 CPU,
 * float_to_half is the same rounding in plain C. */
uint16_t float_to_half(float f);
float half_to_float(uint16_t h);
void floats_to_halves(const float *x, uint16_t *h, size_t n);

double now_seconds(void);        /* monotonic clock */
double peak_rss_mb(void);        /* this process's peak resident set, MiB */
double current_rss_mb(void);     /* this process's resident set now, MiB (0 if unknown) */

/* The NULL-terminated names as words, "a, b or c", into buf[size]; returns buf. Every
 * list of choices in a message or in --help is written by it. */
const char *names_or(const char *const *names, char *buf, size_t size);

/* Strict number parsing for command-line values: the whole string must be a number. */
int parse_int(const char *s, int *out);
int parse_long(const char *s, long *out);
int parse_float(const char *s, float *out);
int parse_double(const char *s, double *out);
int parse_u64(const char *s, unsigned long long *out);
/* A positive duration in Slurm's forms (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS)
 * in seconds; "UNLIMITED" gives 0 (no limit). The first field may be any number (90 is
 * 90 minutes, 30:00:00 30 hours); after it hours are below 24 and minutes and seconds
 * below 60, else -1 (12:99 is not 13:39). */
int parse_duration(const char *s, double *seconds);

#endif
