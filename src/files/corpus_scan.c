/* corpus_scan.c: a compressed input (base/zstream.h) read as one stream and split
 * into documents as corpus_docs.c splits a mapped one (corpus_parts.h). It cannot be
 * entered at an offset: every rank reads all of it, holding one document ahead. */
#include "corpus_parts.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

Scanner *corpus_scanner_open(const Input *in) {
    Scanner *sc = xcalloc(1, sizeof *sc);
    sc->line = 1;
    sc->buf = xmalloc(sc->cap = 1 << 17); /* never NULL: memchr and memcpy take no NULL */
    sc->doc = xmalloc(sc->doc_cap = 1 << 12);
    sc->z = zs_open(in->path, in->format);
    return sc;
}

void corpus_scanner_free(Scanner *sc) {
    if (!sc) return;
    zs_close(sc->z);
    free(sc->buf);
    free(sc->doc);
    free(sc);
}

/* ---- splitting a compressed input into documents ---- */

/* The next line of sc into *line (without its '\n', *nl: whether it had one), whole in
 * sc->buf: 1, or 0 at the end of the input, or -1 with a message naming file and line. */
static int next_line(Scanner *sc, Input *in, size_t max_line, const uint8_t **line, size_t *len, int *nl) {
    for (;;) {
        const uint8_t *end = memchr(sc->buf + sc->pos, '\n', sc->checked - sc->pos);
        if (end || (sc->eof && sc->pos < sc->len)) {
            *line = sc->buf + sc->pos;
            *len = end ? (size_t)(end - *line) : sc->len - sc->pos;
            *nl = end != NULL;
            sc->pos += *len + (size_t)*nl, sc->at += (int64_t)(*len + (size_t)*nl), sc->line++;
            return 1;
        }
        if (sc->eof) return 0;
        if (sc->len - sc->pos > max_line)
            return gpt_error("%s:%zu: a line of more than %zu MiB (--max-doc-mb)", in->path, sc->line,
                             max_line >> 20);
        /* keep the unsplit tail, read more after it */
        memmove(sc->buf, sc->buf + sc->pos, sc->len - sc->pos);
        sc->len -= sc->pos, sc->checked -= sc->pos, sc->pos = 0;
        if (sc->cap - sc->len < (1 << 16)) sc->buf = xrealloc(sc->buf, sc->cap = 2 * sc->cap + (1 << 16));
        ssize_t got = zs_read(sc->z, sc->buf + sc->len, sc->cap - sc->len);
        if (got < 0)
            return gpt_error("%s:%zu: %s, %lld bytes into the decompressed text", in->path, sc->line,
                             zs_error(sc->z), (long long)(in->bom + (size_t)sc->at + (sc->len - sc->pos)));
        if (!sc->started) { /* a byte order mark is not content */
            sc->started = 1;
            sc->pos = sc->checked = in->bom = utf8_bom_len(sc->buf, (size_t)got);
        }
        sc->len += (size_t)got;
        if (got == 0) sc->eof = 1;
        size_t done; /* named by its offset in the decompressed file, as in a plain one */
        if (check_text_piece(in->path, sc->buf + sc->checked, sc->len - sc->checked,
                             in->bom + (size_t)sc->at + (sc->checked - sc->pos), sc->eof, &done))
            return -1;
        sc->checked += done;
    }
}

static void doc_append(Scanner *sc, const uint8_t *p, size_t n) {
    if (sc->doc_len + n > sc->doc_cap) sc->doc = xrealloc(sc->doc, sc->doc_cap = 2 * (sc->doc_len + n));
    memcpy(sc->doc + sc->doc_len, p, n);
    sc->doc_len += n;
}

int corpus_scan_document(Scanner *sc, Input *in, size_t max_doc) {
    const uint8_t *line = NULL;
    size_t len = 0;
    int nl = 0, rc;
    sc->doc_len = 0;
    for (;;) {
        int64_t line_pos = sc->at;
        size_t line_no = sc->line;
        if ((rc = next_line(sc, in, max_doc, &line, &len, &nl)) <= 0) break;
        int blank = corpus_blank(line, len);
        if (in->mode == DOC_PARAGRAPH && blank) {
            if (sc->doc_len) return 1;
            continue;
        }
        if (sc->doc_len == 0) sc->doc_pos = line_pos, sc->doc_line = line_no;
        else if (in->mode == DOC_PARAGRAPH) doc_append(sc, (const uint8_t *)"\n", 1);
        doc_append(sc, line, len);
        if (in->mode == DOC_FILE && nl) doc_append(sc, (const uint8_t *)"\n", 1);
        if (sc->doc_len > max_doc)
            return gpt_error("%s:%zu: the document has more than %zu MiB (--max-doc-mb)", in->path, sc->doc_line,
                             max_doc >> 20);
        if (in->mode == DOC_JSONL) return 1;
    }
    return rc < 0 ? -1 : sc->doc_len > 0;
}
