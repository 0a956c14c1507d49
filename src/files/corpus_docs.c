/* corpus_docs.c: where the documents of a mapped (plain) input start and end
 * (corpus_parts.h): a line of JSON Lines, lines up to a blank one (paragraphs), or the
 * whole file. Found from any byte offset, so that a rank reaches its slot directly. */
#define _GNU_SOURCE /* memrchr */
#include "corpus_parts.h"

#include <string.h>

static size_t line_end(const Input *in, size_t p) {
    const uint8_t *q = memchr(in->buf + p, '\n', in->size - p);
    return q ? (size_t)(q - in->buf) : in->size;
}

static size_t line_start_at_or_after(const Input *in, size_t x) {
    if (x == 0 || in->buf[x - 1] == '\n') return x;
    size_t e = line_end(in, x);
    return e < in->size ? e + 1 : in->size;
}

int corpus_blank(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!memchr(" \t\r", p[i], 3)) return 0; /* not strchr, which finds a NUL byte */
    return 1;
}

static int blank_line(const Input *in, size_t p) { return corpus_blank(in->buf + p, line_end(in, p) - p); }

/* Start of the line before the line that starts at p > 0. */
static size_t prev_line_start(const Input *in, size_t p) {
    const uint8_t *q = p >= 2 ? memrchr(in->buf, '\n', p - 1) : NULL;
    return q ? (size_t)(q - in->buf) + 1 : 0;
}

size_t corpus_doc_start(const Input *in, size_t x) {
    switch (in->mode) {
    case DOC_FILE: return x == 0 ? 0 : in->size;
    case DOC_JSONL: return line_start_at_or_after(in, x);
    case DOC_PARAGRAPH:
        for (size_t p = line_start_at_or_after(in, x); p < in->size;) {
            if (!blank_line(in, p) && (p == 0 || blank_line(in, prev_line_start(in, p)))) return p;
            size_t e = line_end(in, p);
            p = e < in->size ? e + 1 : in->size;
        }
        return in->size;
    }
    return in->size;
}

size_t corpus_doc_end(const Input *in, size_t start, size_t *next) {
    size_t e = line_end(in, start);
    if (in->mode == DOC_FILE) e = in->size;
    if (in->mode == DOC_PARAGRAPH)
        while (e + 1 < in->size && !blank_line(in, e + 1)) e = line_end(in, e + 1);
    *next = e < in->size ? e + 1 : in->size;
    return e;
}
