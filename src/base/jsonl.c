/* jsonl.c: the JSON Lines reader (jsonl.h). The rules of a line live in jsonl_decode,
 * its messages in jsonl_refused and jsonl_error; the file reader only finds the lines
 * (getline: as long as they come). */
#include "base/jsonl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

int jsonl_decode(const char *text, size_t len, json_t **record, json_error_t *err) {
    *record = NULL;
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r')) i++;
    if (i == len) return 0;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, err); /* a repeated key is ambiguous */
    if (!j) return -1;
    if (!json_is_object(j)) {
        json_decref(j);
        err->text[0] = '\0';
        return -1;
    }
    *record = j;
    return 1;
}

int jsonl_refused(const char *path, size_t line, const char *what, const json_error_t *err) {
    if (!what) what = "a JSON object";
    if (err->text[0]) return gpt_error("%s:%zu: not valid JSON (%s); expected %s", path, line, err->text, what);
    return gpt_error("%s:%zu: expected %s", path, line, what);
}

int jsonl_error(const char *path, size_t line, const char *fmt, ...) {
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return gpt_error("%s:%zu: %s", path, line, what);
}

struct JsonlReader {
    FILE *f;
    int own;          /* jsonl_open opened f */
    int flags;
    const char *path, *what;
    char *buf;        /* the current line (getline's) */
    size_t cap, len, skip; /* skip: the byte order mark before it */
    size_t line;      /* lines read so far */
};

JsonlReader *jsonl_from(FILE *f, const char *path, const char *what, int flags) {
    JsonlReader *r = xcalloc(1, sizeof *r);
    *r = (JsonlReader){.f = f, .flags = flags, .path = path, .what = what};
    return r;
}

JsonlReader *jsonl_open(const char *path, const char *what, int flags) {
    int is_stdin = !strcmp(path, "-");
    FILE *f = is_stdin ? stdin : fopen(path, "r");
    if (!f) return gpt_error("%s: cannot open: %s", path, strerror(errno)), NULL;
    JsonlReader *r = jsonl_from(f, path, what, flags);
    r->own = !is_stdin;
    return r;
}

int jsonl_next(JsonlReader *r, json_t **record) {
    *record = NULL;
    for (;;) {
        errno = 0;
        ssize_t n = getline(&r->buf, &r->cap, r->f);
        if (n < 0) return ferror(r->f) ? gpt_error("%s: read error: %s", r->path, strerror(errno ? errno : EIO)) : 0;
        r->line++;
        r->len = (size_t)n;
        if (r->len && r->buf[r->len - 1] == '\n') r->buf[--r->len] = '\0';
        r->skip = r->line == 1 ? utf8_bom_len((const uint8_t *)r->buf, r->len) : 0;
        json_error_t err;
        int got = jsonl_decode(r->buf + r->skip, r->len - r->skip, record, &err);
        if (got > 0) return 1;
        if (got < 0 && !(r->flags & JSONL_SKIP_BAD)) return jsonl_refused(r->path, r->line, r->what, &err);
    }
}

size_t jsonl_line(const JsonlReader *r) { return r->line; }

const char *jsonl_text(const JsonlReader *r, size_t *len) {
    *len = r->len - r->skip;
    return r->buf + r->skip;
}

void jsonl_close(JsonlReader *r) {
    if (!r) return;
    if (r->own) fclose(r->f);
    free(r->buf);
    free(r);
}
