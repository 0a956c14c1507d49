/* corpus.c: `gpt prepare`: raw text to the HDF5 corpus, on any number of ranks, in
 * bounded memory.
 *
 * The inputs are one stream of documents. Prepare runs in rounds: round k covers the
 * stream positions [base_k, base_k + P R_k), rank r tokenizes the documents that start
 * in its slot [base_k + r R_k, base_k + (r + 1) R_k), and the round ends with an
 * MPI_Exscan of the ranks' counts and one collective append to the extensible datasets.
 * Documents are never split and the slots of a round are in rank order, so the file
 * holds the documents in input order whatever P and R are. R_k is sized from the
 * memory bound and the densest round so far (tokens and documents per byte), the same
 * on every rank.
 *
 * A plain input is mapped (mmap), and a rank reaches its slot directly; the pages it
 * read are dropped after each round. A compressed one (zstream.h) cannot be entered
 * at an offset: every rank decompresses all of it, splits it into documents and
 * tokenizes only those that start in its slots. Positions in it are decompressed
 * bytes. /tokenizer and the root attributes are written at the end by rank 0 alone,
 * through the serial driver, and the file is renamed into place only when all of it
 * is complete. */
#define _GNU_SOURCE /* memrchr */
#include "files/corpus.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dist/dist.h"
#include "files/h5util.h"
#include "base/stop.h"
#include "files/tokenizer_file.h"
#include "base/util.h"
#include "base/version.h"
#include "base/zstream.h"
#include "files/formats.h"

#define WRITE_ROUND ((hsize_t)1 << 28)
/* Small enough that reading one training window verifies little more than itself
 * (Fletcher32 checks whole chunks); larger chunks did not write faster. */
#define TOKEN_CHUNK ((hsize_t)1 << 16)
#define OFFSET_CHUNK ((hsize_t)1 << 16)
/* The least data a round may hold, whatever --max-memory leaves after the program itself. */
#define MIN_ROUND_BUDGET ((double)(1 << 20))
#define PROGRESS_EVERY_S 10.0

typedef enum { DOC_FILE, DOC_JSONL, DOC_PARAGRAPH } DocMode;

/* A compressed input's reader: decompressed bytes buf[pos, len) not yet split, the
 * document read ahead of the current slot, and the line count for messages. */
typedef struct {
    ZStream *z;
    uint8_t *buf;
    size_t cap, len, pos;
    int eof, started;
    int64_t at;                 /* position (after the byte order mark) of buf[pos] */
    size_t line;                /* number of the line at buf[pos] */
    int have_doc;
    int64_t doc_pos;            /* where the document read ahead starts */
    size_t doc_line;
    uint8_t *doc;
    size_t doc_len, doc_cap;
} Scanner;

typedef struct {
    const char *path;
    DocMode mode;
    ZsFormat format;
    int64_t file_size;   /* bytes on disk */
    const uint8_t *buf;  /* plain: the file's bytes after its byte order mark, if any */
    size_t size;         /* plain: bytes in buf; compressed: decompressed bytes, once known */
    size_t bom;          /* bytes of the byte order mark: byte p of buf is byte bom + p of the file */
    Scanner *sc;         /* compressed: while this rank reads it */
} Input;

/* ---- documents inside one input ---- */

static size_t line_end(const Input *in, size_t p) {
    const uint8_t *q = memchr(in->buf + p, '\n', in->size - p);
    return q ? (size_t)(q - in->buf) : in->size;
}

static size_t line_start_at_or_after(const Input *in, size_t x) {
    if (x == 0 || in->buf[x - 1] == '\n') return x;
    size_t e = line_end(in, x);
    return e < in->size ? e + 1 : in->size;
}

/* Only spaces, tabs and \r. */
static int blank_bytes(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strchr(" \t\r", p[i])) return 0;
    return 1;
}

static int blank_line(const Input *in, size_t p) { return blank_bytes(in->buf + p, line_end(in, p) - p); }

/* Start of the line before the line that starts at p > 0. */
static size_t prev_line_start(const Input *in, size_t p) {
    const uint8_t *q = p >= 2 ? memrchr(in->buf, '\n', p - 1) : NULL;
    return q ? (size_t)(q - in->buf) + 1 : 0;
}

/* The first document start at or after x (in->size if none). */
static size_t doc_start(const Input *in, size_t x) {
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

/* End (exclusive) of the document starting at `start`; *next: where to look on. */
static size_t doc_end(const Input *in, size_t start, size_t *next) {
    size_t e = line_end(in, start);
    if (in->mode == DOC_FILE) e = in->size;
    if (in->mode == DOC_PARAGRAPH)
        while (e + 1 < in->size && !blank_line(in, e + 1)) e = line_end(in, e + 1);
    *next = e < in->size ? e + 1 : in->size;
    return e;
}

/* ---- the inputs as one stream ---- */

typedef struct {
    Input *in;
    int n;
    int64_t *offs;  /* (n + 1) start of each input in the stream, known once this rank finished those before */
    int cur;        /* the first input this rank has not finished */
    int64_t file_bytes;
} Stream;

/* .jsonl, also under a compression suffix (.jsonl.gz, .jsonl.zst) */
static DocMode doc_mode(const char *path, int paragraphs) {
    size_t len = strlen(path);
    static const char *const suffixes[] = {".gz", ".gzip", ".zst", ".zstd"};
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        size_t k = strlen(suffixes[i]);
        if (len > k && !strcmp(path + len - k, suffixes[i])) {
            len -= k;
            break;
        }
    }
    return len > 6 && !strncmp(path + len - 6, ".jsonl", 6) ? DOC_JSONL : paragraphs ? DOC_PARAGRAPH : DOC_FILE;
}

static int open_inputs(Stream *s, const char *const *paths, int n, int paragraphs) {
    s->n = n;
    s->in = xcalloc((size_t)n, sizeof *s->in);
    s->offs = xcalloc((size_t)n + 1, sizeof *s->offs);
    for (int i = 0; i < n; i++) {
        Input *in = &s->in[i];
        in->path = paths[i];
        in->mode = doc_mode(paths[i], paragraphs);
        int fd = open(paths[i], O_RDONLY | O_NONBLOCK); /* a FIFO is refused below, not waited on */
        struct stat st;
        if (fd < 0) return gpt_error("%s: cannot open: %s", paths[i], strerror(errno));
        if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
            close(fd);
            return gpt_error("%s: not a regular file (expected a text or .jsonl file)", paths[i]);
        }
        if (st.st_size == 0) {
            close(fd);
            return gpt_error("%s: empty file (expected UTF-8 text)", paths[i]);
        }
        uint8_t head[4];
        ssize_t got = pread(fd, head, sizeof head, 0);
        in->format = zs_detect(head, got > 0 ? (size_t)got : 0);
        in->file_size = st.st_size;
        s->file_bytes += st.st_size;
        if (in->format != ZS_PLAIN) {
            close(fd);
            continue;
        }
        in->size = (size_t)st.st_size;
        void *p = mmap(NULL, in->size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (p == MAP_FAILED) return gpt_error("%s: cannot map: %s", paths[i], strerror(errno));
        in->bom = utf8_bom_len(p, in->size);
        in->buf = (const uint8_t *)p + in->bom;
        in->size -= in->bom;
        if (in->size == 0) return gpt_error("%s: empty file (expected UTF-8 text)", paths[i]);
    }
    return 0;
}

static Scanner *scanner_open(const Input *in) {
    Scanner *sc = xcalloc(1, sizeof *sc);
    sc->line = 1;
    sc->buf = xmalloc(sc->cap = 1 << 17); /* never NULL: memchr and memcpy take no NULL */
    sc->doc = xmalloc(sc->doc_cap = 1 << 12);
    sc->z = zs_open(in->path, in->format);
    return sc;
}

static void scanner_free(Scanner *sc) {
    if (!sc) return;
    zs_close(sc->z);
    free(sc->buf);
    free(sc->doc);
    free(sc);
}

static void close_inputs(Stream *s) {
    for (int i = 0; i < s->n; i++) {
        Input *in = &s->in[i];
        if (in->buf) munmap((void *)(in->buf - in->bom), in->bom + in->size);
        scanner_free(in->sc);
    }
    free(s->in);
    free(s->offs);
}

/* Drops the mapped pages of buf[from, to) from this process's memory (a plain input is
 * read again from the page cache if touched later). */
static void drop_pages(const Input *in, size_t from, size_t to) {
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t base = (uintptr_t)(in->buf - in->bom);
    uintptr_t a = ((uintptr_t)in->buf + from) & ~(uintptr_t)(page - 1);
    uintptr_t b = (uintptr_t)in->buf + to;
    if (a < base) a = base;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

/* ---- splitting a compressed input into documents ---- */

/* The next line of sc into *line (without its '\n', *nl: whether it had one), whole in
 * sc->buf: 1, or 0 at the end of the input, or -1 with a message naming file and line. */
static int next_line(Scanner *sc, Input *in, size_t max_line, const uint8_t **line, size_t *len, int *nl) {
    for (;;) {
        const uint8_t *end = memchr(sc->buf + sc->pos, '\n', sc->len - sc->pos);
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
        sc->len -= sc->pos, sc->pos = 0;
        if (sc->cap - sc->len < (1 << 16)) sc->buf = xrealloc(sc->buf, sc->cap = 2 * sc->cap + (1 << 16));
        ssize_t got = zs_read(sc->z, sc->buf + sc->len, sc->cap - sc->len);
        if (got < 0)
            return gpt_error("%s:%zu: %s, %lld bytes into the decompressed text", in->path, sc->line,
                             zs_error(sc->z), (long long)(in->bom + (size_t)sc->at + (sc->len - sc->pos)));
        if (!sc->started) { /* a byte order mark is not content */
            sc->started = 1;
            sc->pos = in->bom = utf8_bom_len(sc->buf, (size_t)got);
        }
        sc->len += (size_t)got;
        if (got == 0) sc->eof = 1;
    }
}

static void doc_append(Scanner *sc, const uint8_t *p, size_t n) {
    if (sc->doc_len + n > sc->doc_cap) sc->doc = xrealloc(sc->doc, sc->doc_cap = 2 * (sc->doc_len + n));
    memcpy(sc->doc + sc->doc_len, p, n);
    sc->doc_len += n;
}

/* Reads the next document of a compressed input ahead into sc->doc, split as doc_start
 * and doc_end split a plain one (a line; lines up to a blank one; the whole file):
 * 1, 0 at the end of the input, -1 on an error. */
static int scan_document(Scanner *sc, Input *in, size_t max_doc) {
    const uint8_t *line = NULL;
    size_t len = 0;
    int nl = 0, rc;
    sc->doc_len = 0;
    for (;;) {
        int64_t line_pos = sc->at;
        size_t line_no = sc->line;
        if ((rc = next_line(sc, in, max_doc, &line, &len, &nl)) <= 0) break;
        int blank = blank_bytes(line, len);
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
/* ---- tokenizing this rank's documents ---- */

typedef struct {
    Tokenizer *tok;
    int32_t eot;
    const PrepareOptions *opt;
    TokenVec tokens;   /* this round's documents of this rank, each ending with eot */
    int64_t text_bytes;/* of the documents tokenized, as in the input (JSON included) */
    int64_t *doc_len;  /* tokens per document */
    size_t n_docs, cap_docs;
} Work;

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
    if (in->mode != DOC_JSONL) {
        if (check_text(in->path, text, len, in->bom + at->start)) return -1;
        return add_document(w, at, text, len);
    }
    if (blank_bytes(text, len)) return 0;
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)text, len, 0, &jerr);
    json_t *field = json_is_object(doc) ? json_object_get(doc, "text") : NULL;
    int rc = 0;
    if (!doc)
        rc = gpt_error("%s:%zu: not valid JSON (%s); expected an object with a string field \"text\"", in->path,
                       doc_line(at), jerr.text);
    else if (!json_is_string(field))
        rc = gpt_error("%s:%zu: expected an object with a string field \"text\"", in->path, doc_line(at));
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
        size_t start = doc_start(in, local), next;
        if (start >= in->size || s->offs[i] + (int64_t)start >= b) break;
        size_t end = doc_end(in, start, &next);
        DocAt at = {in, start, 0};
        if (process_document(w, &at, in->buf + start, end - start)) return -1;
        if (first == SIZE_MAX) first = start;
        last = next, local = next;
    }
    if (first != SIZE_MAX) drop_pages(in, first, last);
    return 0;
}

/* The documents of compressed input i that start in [a, b), read on from where this
 * rank left it: 1 when the input is finished, 0 when a later document is read ahead. */
static int tokenize_compressed(Work *w, Stream *s, int i, int64_t a, int64_t b) {
    Input *in = &s->in[i];
    if (!in->sc && !(in->sc = scanner_open(in))->z) return -1;
    Scanner *sc = in->sc;
    for (;;) {
        if (!sc->have_doc) {
            int rc = scan_document(sc, in, w->opt->max_doc_bytes);
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
    scanner_free(sc);
    in->sc = NULL;
    return 1;
}

/* This rank's documents in [a, b): those of every input from the first it has not
 * finished. *at_end: the stream ended before b. */
static int tokenize_slot(Work *w, Stream *s, int64_t a, int64_t b, int *at_end) {
    for (; s->cur < s->n; s->cur++) {
        int i = s->cur;
        Input *in = &s->in[i];
        if (s->offs[i] >= b) return 0;
        if (in->format == ZS_PLAIN) {
            if (s->offs[i] + (int64_t)in->size > a && tokenize_plain(w, s, i, a, b)) return -1;
            if (s->offs[i] + (int64_t)in->size > b) return 0;
        } else {
            int rc = tokenize_compressed(w, s, i, a, b);
            if (rc <= 0) return rc;
        }
        s->offs[i + 1] = s->offs[i] + (int64_t)in->size;
    }
    *at_end = 1;
    return 0;
}

/* Bytes of the input files behind this rank (compressed ones as read so far), for progress. */
static int64_t file_bytes_read(const Stream *s, int64_t b) {
    int64_t n = 0;
    for (int i = 0; i < s->cur; i++) n += s->in[i].file_size;
    if (s->cur < s->n) {
        const Input *in = &s->in[s->cur];
        if (in->sc) n += zs_compressed_pos(in->sc->z);
        else if (in->format == ZS_PLAIN && b > s->offs[s->cur]) n += b - s->offs[s->cur];
    }
    return n;
}

/* ---- writing ---- */

static int is_val(int64_t g, double f) { return floor((double)(g + 1) * f) > floor((double)g * f); }

/* Collective: writes count elements at offset of a 1-D dataset, in rounds. */
static int write_slice(hid_t d, hid_t mem_type, size_t elem, const void *data, hsize_t offset, hsize_t count) {
    long long rounds = (long long)((count + WRITE_ROUND - 1) / WRITE_ROUND);
    MPI_Allreduce(MPI_IN_PLACE, &rounds, 1, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    int rc = 0;
    for (long long r = 0; r < rounds; r++) {
        hsize_t done = (hsize_t)r * WRITE_ROUND, n = count > done ? count - done : 0;
        if (n > WRITE_ROUND) n = WRITE_ROUND;
        hsize_t start = offset + done, one = n ? n : 1;
        hid_t fs = H5Dget_space(d), ms = H5Screate_simple(1, &one, NULL);
        if (n) H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &n, NULL);
        else H5Sselect_none(fs), H5Sselect_none(ms);
        if (H5Dwrite(d, mem_type, ms, fs, dxpl, (const char *)data + done * elem) < 0) rc = -1;
        H5Sclose(ms);
        H5Sclose(fs);
    }
    H5Pclose(dxpl);
    return rc;
}

static hid_t create_1d(hid_t g, const char *name, hid_t type, hsize_t n, hsize_t chunk) {
    hsize_t maxdims = H5S_UNLIMITED;
    hid_t space = H5Screate_simple(1, &n, &maxdims), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    H5Pset_fletcher32(dcpl);
    hid_t d = H5Dcreate2(g, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(space);
    return d;
}

typedef struct {
    int64_t tokens[2], docs[2];
} Counts;

/* The datasets being appended to, and what the rounds so far wrote. */
typedef struct {
    hid_t f, group[2], tokens[2], offsets[2];
    int wide;
    Counts done;
} Output;

static const char *const split_names[2] = {"train", "val"};

/* Collective: the file with empty, extensible /train and /val. */
static int output_create(Output *o, const char *tmp, int wide) {
    memset(o, 0, sizeof *o);
    o->wide = wide;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL);
    /* the 1.8 format stores attributes over 64 KiB (thousands of input paths) densely */
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    o->f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (o->f < 0) return gpt_error("%s: cannot create the file (check the directory exists and is writable)", tmp);
    int rc = 0;
    for (int s = 0; s < 2; s++) {
        o->group[s] = H5Gcreate2(o->f, split_names[s], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        o->tokens[s] = create_1d(o->group[s], "tokens", wide ? H5T_STD_U32LE : H5T_STD_U16LE, 0, TOKEN_CHUNK);
        o->offsets[s] = create_1d(o->group[s], "doc_offsets", H5T_STD_I64LE, 0, OFFSET_CHUNK);
        if (o->group[s] < 0 || o->tokens[s] < 0 || o->offsets[s] < 0) rc = gpt_error("%s: cannot create /%s", tmp, split_names[s]);
    }
    return rc;
}

/* Collective: closes everything; -1 if the last writes failed. */
static int output_close(Output *o) {
    if (o->f <= 0) return 0;
    for (int s = 0; s < 2; s++) {
        if (o->offsets[s] > 0) H5Dclose(o->offsets[s]);
        if (o->tokens[s] > 0) H5Dclose(o->tokens[s]);
        if (o->group[s] > 0) H5Gclose(o->group[s]);
    }
    int rc = H5Fclose(o->f) < 0 ? -1 : 0;
    o->f = 0;
    return rc;
}

static int extend(hid_t d, int64_t n) {
    hsize_t dims = (hsize_t)n;
    return H5Dset_extent(d, &dims) < 0 ? -1 : 0;
}

/* Collective: appends the round's documents, this rank's at `before` (within the round)
 * of the counts `round` of all ranks. */
static int output_append(Output *o, const Work *w, const char *split, const Counts *mine, const Counts *before,
                         const Counts *round) {
    hid_t mem_type = o->wide ? H5T_NATIVE_UINT32 : H5T_NATIVE_UINT16;
    size_t elem = o->wide ? 4 : 2;
    int rc = 0;
    for (int s = 0; s < 2; s++) {
        void *buf = xmalloc((size_t)mine->tokens[s] * elem + 1);
        int64_t *offsets = xmalloc(((size_t)mine->docs[s] + 1) * sizeof *offsets);
        int64_t nt = 0, nd = 0, src = 0, at = o->done.tokens[s] + before->tokens[s];
        for (size_t k = 0; k < w->n_docs; src += w->doc_len[k++]) {
            if (split[k] != s) continue;
            offsets[nd++] = at + nt;
            for (int64_t j = 0; j < w->doc_len[k]; j++, nt++) {
                int32_t id = w->tokens.ids[src + j];
                if (o->wide) ((uint32_t *)buf)[nt] = (uint32_t)id;
                else ((uint16_t *)buf)[nt] = (uint16_t)id;
            }
        }
        if (extend(o->tokens[s], o->done.tokens[s] + round->tokens[s]) ||
            extend(o->offsets[s], o->done.docs[s] + round->docs[s]) ||
            write_slice(o->tokens[s], mem_type, elem, buf, (hsize_t)at, (hsize_t)nt) ||
            write_slice(o->offsets[s], H5T_NATIVE_INT64, 8, offsets, (hsize_t)(o->done.docs[s] + before->docs[s]),
                        (hsize_t)nd))
            rc = -1;
        free(buf);
        free(offsets);
        o->done.tokens[s] += round->tokens[s];
        o->done.docs[s] += round->docs[s];
    }
    return rc;
}

/* An upper bound of the file's size once it holds `c` (whole chunks, their index and the
 * file's own metadata) and the tokenizer: what rank 0 reserves before each write, since
 * a full disk must never meet HDF5 (h5_reserve). */
static uint64_t file_bytes_needed(const Counts *c, size_t elem, const Tokenizer *t) {
    uint64_t b = 2 * H5_FILE_OVERHEAD + tokenizer_h5_bytes(t);
    for (int s = 0; s < 2; s++) {
        uint64_t tc = ((uint64_t)c->tokens[s] + TOKEN_CHUNK - 1) / TOKEN_CHUNK;
        uint64_t oc = ((uint64_t)c->docs[s] + 1 + OFFSET_CHUNK - 1) / OFFSET_CHUNK;
        b += tc * (TOKEN_CHUNK * elem + 64) + oc * (OFFSET_CHUNK * 8 + 64) + 8192;
    }
    return b;
}

/* Collective: rank 0 reserves room for the file holding c; agreed. */
static int reserve(const char *out, const char *tmp, const Counts *c, size_t elem, const Tokenizer *t) {
    return dist_agree(dist_rank() == 0 ? h5_reserve(out, tmp, file_bytes_needed(c, elem, t), "the corpus") : 0);
}

/* Collective: the last entry of each doc_offsets, the end of the last document. */
static int output_finish(Output *o) {
    int rc = 0;
    for (int s = 0; s < 2; s++) {
        int64_t end = o->done.tokens[s];
        if (extend(o->offsets[s], o->done.docs[s] + 1) ||
            write_slice(o->offsets[s], H5T_NATIVE_INT64, 8, &end, (hsize_t)o->done.docs[s], dist_rank() == 0))
            rc = -1;
    }
    return rc;
}

/* Rank 0, serial driver: the tokenizer and the root attributes. */
static int write_metadata(const char *tmp, const Tokenizer *t, const Stream *s, const Counts *total,
                          const PrepareOptions *opt) {
    hid_t f = H5Fopen(tmp, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return -1;
    int64_t *sizes = xmalloc((size_t)s->n * sizeof *sizes);
    const char **paths = xmalloc((size_t)s->n * sizeof *paths);
    for (int i = 0; i < s->n; i++) sizes[i] = s->in[i].file_size, paths[i] = s->in[i].path;
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, H5T_VARIABLE);
    H5Tset_cset(str, H5T_CSET_UTF8);
    char created[32];
    time_t now = time(NULL);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    int rc = tokenizer_write_h5(t, f) || h5_write_attr_string(f, "format", CORPUS_FORMAT) ||
             h5_write_attr_int(f, "format_version", CORPUS_FORMAT_VERSION) || h5_write_attr_string(f, "tool_version", GPT_VERSION) ||
             h5_write_attr_string(f, "created", created) ||
             h5_write_attr_int(f, "vocab_size", tokenizer_vocab_size(t)) ||
             h5_write_attr_int(f, "eot_token", tokenizer_special_id(t, TOK_EOT)) ||
             h5_write_attr_i64(f, "train_tokens", total->tokens[0]) ||
             h5_write_attr_i64(f, "train_docs", total->docs[0]) ||
             h5_write_attr_i64(f, "val_tokens", total->tokens[1]) ||
             h5_write_attr_i64(f, "val_docs", total->docs[1]) ||
             h5_write_attr_float(f, "val_fraction", (float)opt->val_fraction) ||
             h5_write_attr_int(f, "split_on_blank_lines", opt->split_on_blank_lines) ||
             h5_write_attr_array(f, "input_files", str, str, (hsize_t)s->n, paths) ||
             h5_write_attr_array(f, "input_bytes", H5T_STD_I64LE, H5T_NATIVE_INT64, (hsize_t)s->n, sizes);
    H5Tclose(str);
    free(sizes);
    free(paths);
    if (H5Fclose(f) < 0) rc = -1;
    return rc;
}

/* ---- rounds ---- */

/* Bytes of text a rank takes a round so that what it holds stays within budget: the
 * mapped text, its tokens (int32 with a growing vector's slack, then their file type)
 * and three numbers a document, at `tokens` and `docs` a byte. */
static int64_t round_bytes(double budget, double tokens, double docs, size_t elem) {
    double per_byte = 1.0 + tokens * (2 * sizeof(int32_t) + (double)elem) + docs * (2 * 8 + 1 + 8);
    double r = budget / per_byte;
    return r < 4096 ? 4096 : (int64_t)r;
}

static void print_progress(double t0, int64_t read, int64_t total, int64_t tokens) {
    double s = now_seconds() - t0, rate = (double)read / s;
    char eta[32] = "";
    if (read > 0 && read < total) {
        long left = (long)((double)(total - read) / rate + 0.5);
        snprintf(eta, sizeof eta, ", ETA %ld:%02ld:%02ld", left / 3600, left / 60 % 60, left % 60);
    }
    printf("prepare: %.1f of %.1f MB read (%.0f%%), %.1f M tokens written, %.1f MB/s%s\n", (double)read / 1e6,
           (double)total / 1e6, 100.0 * (double)read / (double)total, (double)tokens / 1e6, rate / 1e6, eta);
    fflush(stdout);
}

int corpus_prepare(const char *tokenizer_path, const char *out, const char *const *inputs,
                   int n_inputs, const PrepareOptions *opt, PrepareStats *stats) {
    h5_quiet();
    stop_signals_catch();
    int rank = dist_rank(), P = dist_size();
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", out) >= (int)sizeof tmp) return gpt_error("%s: path too long", out);
    /* MPI and HDF5 before any data, the largest rank's: every rank must size rounds alike */
    double program_mb = current_rss_mb();
    MPI_Allreduce(MPI_IN_PLACE, &program_mb, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    Tokenizer *t = tokenizer_load(tokenizer_path);
    Stream s = {0};
    Work w = {.tok = t, .opt = opt};
    Output o = {0};
    char *split = NULL;
    int rc = !t || open_inputs(&s, inputs, n_inputs, opt->split_on_blank_lines);
    if (!rc && (w.eot = tokenizer_special_id(t, TOK_EOT)) < 0)
        rc = gpt_error("%s: the tokenizer has no %s token to end documents with", tokenizer_path, TOK_EOT);
    if ((rc = dist_agree(rc))) goto out;
    int wide = tokenizer_vocab_size(t) > 65536;
    size_t elem = wide ? 4 : 2;
    Counts none = {{0, 0}, {0, 0}};
    /* before and after the create, which truncates */
    if ((rc = reserve(out, tmp, &none, elem, t))) goto out;
    if ((rc = dist_agree(output_create(&o, tmp, wide))) || (rc = reserve(out, tmp, &none, elem, t))) goto out;

    double budget = (double)opt->max_memory - program_mb * 1048576.0;
    if (budget < MIN_ROUND_BUDGET) budget = MIN_ROUND_BUDGET;
    /* tokens and documents a byte: at first the most there can be, then 25% above the densest round */
    double density[2] = {1.0, 1.0 / 16}, densest[2] = {0, 0};
    int64_t base = 0, docs_before = 0;
    double t0 = now_seconds(), printed = t0;
    int rounds = 0;
    for (int at_end = 0; !at_end; rounds++) {
        int64_t R = round_bytes(budget, density[0], density[1], elem);
        int64_t text_before = w.text_bytes;
        fault_point("prepare-round", rounds, rank);
        rc = stop_signal_caught() ? gpt_error("interrupted by %s", stop_signal_name())
                                  : tokenize_slot(&w, &s, base + rank * R, base + (rank + 1) * R, &at_end);
        if ((rc = dist_agree(rc))) break;

        /* global document index -> split; this rank's place in the round */
        int64_t first_doc = 0, n_docs = (int64_t)w.n_docs;
        MPI_Exscan(&n_docs, &first_doc, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
        if (rank == 0) first_doc = 0;
        split = xrealloc(split, w.n_docs + 1);
        Counts mine = {{0, 0}, {0, 0}}, before = {{0, 0}, {0, 0}}, round;
        for (size_t k = 0; k < w.n_docs; k++) {
            split[k] = (char)is_val(docs_before + first_doc + (int64_t)k, opt->val_fraction);
            mine.tokens[(int)split[k]] += w.doc_len[k];
            mine.docs[(int)split[k]]++;
        }
        MPI_Exscan(&mine, &before, 4, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
        if (rank == 0) memset(&before, 0, sizeof before);
        MPI_Allreduce(&mine, &round, 4, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
        docs_before += round.docs[0] + round.docs[1];

        double text = (double)(w.text_bytes - text_before);
        double seen[4] = {at_end, text > 0 ? (double)w.tokens.n / text : 0, text > 0 ? (double)w.n_docs / text : 0,
                          (double)file_bytes_read(&s, base + (rank + 1) * R)};
        MPI_Allreduce(MPI_IN_PLACE, seen, 4, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        at_end = seen[0] > 0;
        for (int k = 0; k < 2; k++)
            if (seen[1 + k] > 0) densest[k] = fmax(densest[k], seen[1 + k]), density[k] = fmin(1.0, 1.25 * densest[k]);

        Counts after = o.done;
        for (int k = 0; k < 2; k++) after.tokens[k] += round.tokens[k], after.docs[k] += round.docs[k];
        if ((rc = reserve(out, tmp, &after, elem, t))) break;
        if ((rc = dist_agree(output_append(&o, &w, split, &mine, &before, &round)))) {
            gpt_error("%s: writing the tokens failed (disk full?)", tmp);
            break;
        }
        w.tokens.n = 0, w.n_docs = 0;
        base += P * R;
        if (rank == 0 && !at_end && now_seconds() - printed >= PROGRESS_EVERY_S) {
            print_progress(t0, (int64_t)seen[3], s.file_bytes, o.done.tokens[0] + o.done.tokens[1]);
            printed = now_seconds();
        }
    }
    /* document 0 always goes to train, so train is empty only when there are no documents */
    if (!rc && o.done.docs[0] == 0) rc = gpt_error("no documents: the inputs hold no text");
    if (!rc && (rc = dist_agree(output_finish(&o)))) gpt_error("%s: writing the tokens failed (disk full?)", tmp);
    if (output_close(&o) && !rc) rc = gpt_error("%s: writing the tokens failed (disk full?)", tmp);
    if ((rc = dist_agree(rc))) goto out;
    if (rank == 0) { /* reserved again: closing the parallel file truncated it */
        rc = h5_reserve(out, tmp, file_bytes_needed(&o.done, elem, t), "the corpus") ? -1
             : write_metadata(tmp, t, &s, &o.done, opt) ? gpt_error("%s: writing the metadata failed", tmp)
             : rename(tmp, out)                       ? gpt_error("%s: cannot rename %s into place: %s", out, tmp, strerror(errno))
                                                      : 0;
    }
    if ((rc = dist_agree(rc))) goto out;
    memcpy(stats->tokens, o.done.tokens, sizeof o.done.tokens);
    memcpy(stats->docs, o.done.docs, sizeof o.done.docs);
    stats->text_bytes = s.offs[s.n]; /* known to the ranks that reached the end */
    MPI_Allreduce(MPI_IN_PLACE, &stats->text_bytes, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
    stats->file_bytes = s.file_bytes;
    stats->rounds = rounds;
    stats->peak_rss_mb = peak_rss_mb();
    MPI_Allreduce(MPI_IN_PLACE, &stats->peak_rss_mb, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
out:
    /* every rank agreed on rc; the file is closed everywhere before it is removed */
    if (output_close(&o)) rc = rc ? rc : -1;
    if (rc && rank == 0) remove(tmp);
    free(split);
    free(w.tokens.ids);
    free(w.doc_len);
    close_inputs(&s);
    tokenizer_free(t);
    return rc;
}
