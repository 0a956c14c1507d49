/* corpus_tokenize.c: the documents of a round that start in this rank's slot,
 * tokenized (corpus_parts.h): plain text checked as UTF-8, JSON Lines read by
 * base/jsonl.h's rule (field "text"), each document ended by <|endoftext|>. */
#include "corpus_parts.h"

#include <stdlib.h>
#include <string.h>

#include "base/jsonl.h"
#include "base/stop.h"
#include "base/util.h"

#define TEXT_RECORD "an object with a string field \"text\""

static size_t line_number(const Input *in, size_t pos) {
    size_t n = 1;
    for (const uint8_t *p = in->buf, *end = in->buf + pos; (p = memchr(p, '\n', (size_t)(end - p))); p++) n++;
    return n;
}

/* Where a document is, for messages: its line (0: count it from start in a plain input)
 * and its byte offset in the (decompressed) file. */
typedef struct {
    const Input *in;
    size_t start, line;
} DocAt;

static size_t doc_line(const DocAt *at) { return at->line ? at->line : line_number(at->in, at->start); }

static int add_document(Work *w, const DocAt *at, const uint8_t *text, size_t len) {
    if (stop_signal_caught()) return gpt_error("interrupted by %s", stop_signal_name());
    if (len > w->opt->max_doc_bytes)
        return gpt_error("%s: the document at byte %zu has %zu bytes, more than the %zu MiB buffer (--max-doc-mb)",
                         at->in->path, at->in->bom + at->start, len, w->opt->max_doc_bytes >> 20);
    size_t before = w->tokens.n;
    if (tokenizer_encode(w->tok, text, len, 0, &w->tokens)) return -1;
    tokvec_push(&w->tokens, w->eot);
    if (w->n_docs == w->cap_docs)
        w->doc_len = xrealloc(w->doc_len, (w->cap_docs = w->cap_docs ? 2 * w->cap_docs : 1024) * sizeof *w->doc_len);
    w->doc_len[w->n_docs++] = (int64_t)(w->tokens.n - before);
    return 0;
}

static int process_document(Work *w, const DocAt *at, const uint8_t *text, size_t len) {
    const Input *in = at->in;
    w->text_bytes += (int64_t)len;
    if (in->mode != DOC_JSONL) { /* a compressed input was checked as it was decompressed (corpus_scan.c) */
        if (in->format == ZS_PLAIN && check_text(in->path, text, len, in->bom + at->start)) return -1;
        return add_document(w, at, text, len);
    }
    json_t *doc;
    json_error_t err;
    int got = jsonl_decode((const char *)text, len, &doc, &err);
    if (got <= 0) return got ? jsonl_refused(in->path, doc_line(at), TEXT_RECORD, &err) : 0;
    json_t *field = json_object_get(doc, "text");
    int rc = 0;
    if (!json_is_string(field)) rc = jsonl_error(in->path, doc_line(at), "expected %s", TEXT_RECORD);
    else if (json_string_length(field) > 0)
        rc = add_document(w, at, (const uint8_t *)json_string_value(field), json_string_length(field));
    json_decref(doc);
    return rc;
}

/* The documents of plain input i that start in stream positions [a, b). */
static int tokenize_plain(Work *w, Stream *s, int i, int64_t a, int64_t b) {
    const Input *in = &s->in[i];
    size_t local = (size_t)(a > s->offs[i] ? a - s->offs[i] : 0), first = SIZE_MAX, last = 0;
    for (;;) {
        size_t start = corpus_doc_start(in, local), next;
        if (start >= in->size || s->offs[i] + (int64_t)start >= b) break;
        size_t end = corpus_doc_end(in, start, &next);
        DocAt at = {in, start, 0};
        if (process_document(w, &at, in->buf + start, end - start)) return -1;
        if (first == SIZE_MAX) first = start;
        last = next, local = next;
    }
    if (first != SIZE_MAX) corpus_drop_pages(in, first, last);
    return 0;
}

/* The documents of compressed input i that start in [a, b), read on from where this
 * rank left it: 1 when the input is finished, 0 when a later document is read ahead. */
static int tokenize_compressed(Work *w, Stream *s, int i, int64_t a, int64_t b) {
    Input *in = &s->in[i];
    if (!in->sc && !(in->sc = corpus_scanner_open(in))->z) return -1;
    Scanner *sc = in->sc;
    for (;;) {
        if (!sc->have_doc) {
            int rc = corpus_scan_document(sc, in, w->opt->max_doc_bytes);
            if (rc < 0) return -1;
            if (rc == 0) break;
            sc->have_doc = 1;
        }
        int64_t p = s->offs[i] + sc->doc_pos;
        if (p >= b) return 0;
        if (p >= a) {
            DocAt at = {in, (size_t)sc->doc_pos, sc->doc_line};
            if (process_document(w, &at, sc->doc, sc->doc_len)) return -1;
        }
        sc->have_doc = 0;
    }
    if (sc->at == 0) return gpt_error("%s: empty after decompression (expected UTF-8 text)", in->path);
    in->size = (size_t)sc->at;
    corpus_scanner_free(sc);
    in->sc = NULL;
    return 1;
}

int corpus_tokenize_slot(Work *w, Stream *s, int64_t a, int64_t b, int *at_end) {
    for (; s->cur < s->n; s->cur++) {
        int i = s->cur;
        Input *in = &s->in[i];
        if (s->offs[i] >= b) return 0;
        if (in->format == ZS_PLAIN) {
            if (s->offs[i] + (int64_t)in->size > a) {
                int rc = tokenize_plain(w, s, i, a, b);
                if (corpus_input_check(in) || rc) return -1;
            }
            if (s->offs[i] + (int64_t)in->size > b) return 0;
        } else {
            int rc = tokenize_compressed(w, s, i, a, b);
            if (rc != 0 && corpus_input_check(in)) return -1; /* read to its end, or failed */
            if (rc <= 0) return rc;
        }
        s->offs[i + 1] = s->offs[i] + (int64_t)in->size;
    }
    *at_end = 1;
    return 0;
}

int64_t corpus_file_bytes_read(const Stream *s, int64_t b) {
    int64_t n = 0;
    for (int i = 0; i < s->cur; i++) n += s->in[i].file_size;
    if (s->cur < s->n) {
        const Input *in = &s->in[s->cur];
        if (in->sc) n += zs_compressed_pos(in->sc->z);
        else if (in->format == ZS_PLAIN && b > s->offs[s->cur]) n += b - s->offs[s->cur];
    }
    return n;
}
