/* corpus.c: `gpt prepare`: raw text to the HDF5 corpus, on any number of ranks.
 *
 * Every rank maps all inputs (mmap: nothing is read until touched) and views them as
 * one byte stream. Rank r owns the documents that start in [B r/P, B (r+1)/P), each
 * end moved forward to the next document start, so documents are never split and the
 * global order of documents is the input order whatever P is. Tokens stay in memory
 * until the counts of all ranks are known (MPI_Exscan), then every rank writes its
 * slice of each dataset in one collective call (rounds of at most WRITE_ROUND elements,
 * because MPI-IO misbehaves above 2 GiB a call). /tokenizer and the root attributes are
 * written afterwards by rank 0 alone, through the serial driver, and the file is
 * renamed into place only when all of it is complete. */
#define _GNU_SOURCE /* memrchr */
#include "corpus.h"

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

#include "dist.h"
#include "h5util.h"
#include "tokenizer.h"
#include "util.h"
#include "version.h"

#define WRITE_ROUND ((hsize_t)1 << 28)
/* Small enough that reading one training window verifies little more than itself
 * (Fletcher32 checks whole chunks); larger chunks did not write faster. */
#define TOKEN_CHUNK ((hsize_t)1 << 16)
#define OFFSET_CHUNK ((hsize_t)1 << 16)

typedef enum { DOC_FILE, DOC_JSONL, DOC_PARAGRAPH } DocMode;

typedef struct {
    const char *path;
    const uint8_t *buf;  /* the file's bytes after its byte order mark, if any */
    size_t size;
    size_t bom;          /* bytes of the byte order mark: byte p of buf is byte bom + p of the file */
    DocMode mode;
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

static int blank_line(const Input *in, size_t p) {
    for (size_t e = line_end(in, p); p < e; p++)
        if (!strchr(" \t\r", in->buf[p])) return 0;
    return 1;
}

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
    int64_t *offs; /* (n + 1) start of each input in the stream */
} Stream;

static int open_inputs(Stream *s, const char *const *paths, int n, int paragraphs) {
    s->n = n;
    s->in = xcalloc((size_t)n, sizeof *s->in);
    s->offs = xcalloc((size_t)n + 1, sizeof *s->offs);
    for (int i = 0; i < n; i++) {
        Input *in = &s->in[i];
        in->path = paths[i];
        size_t len = strlen(paths[i]);
        in->mode = len > 6 && !strcmp(paths[i] + len - 6, ".jsonl") ? DOC_JSONL
                   : paragraphs                                       ? DOC_PARAGRAPH
                                                                      : DOC_FILE;
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
        in->size = (size_t)st.st_size;
        void *p = mmap(NULL, in->size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (p == MAP_FAILED) return gpt_error("%s: cannot map: %s", paths[i], strerror(errno));
        in->bom = utf8_bom_len(p, in->size);
        in->buf = (const uint8_t *)p + in->bom;
        in->size -= in->bom;
        if (in->size == 0) return gpt_error("%s: empty file (expected UTF-8 text)", paths[i]);
        s->offs[i + 1] = s->offs[i] + (int64_t)in->size;
    }
    return 0;
}

static void close_inputs(Stream *s) {
    for (int i = 0; i < s->n; i++)
        if (s->in[i].buf) munmap((void *)(s->in[i].buf - s->in[i].bom), s->in[i].bom + s->in[i].size);
    free(s->in);
    free(s->offs);
}

/* The first document start at or after stream position x. */
static int64_t stream_doc_start(const Stream *s, int64_t x) {
    for (int i = 0; i < s->n; i++) {
        if (x >= s->offs[i + 1]) continue;
        int64_t local = x > s->offs[i] ? x - s->offs[i] : 0;
        size_t d = doc_start(&s->in[i], (size_t)local);
        if (d < s->in[i].size) return s->offs[i] + (int64_t)d;
    }
    return s->offs[s->n];
}

/* ---- tokenizing this rank's documents ---- */

typedef struct {
    Tokenizer *tok;
    int32_t eot;
    const PrepareOptions *opt;
    TokenVec tokens;   /* all documents of this rank, each ending with eot */
    int64_t *doc_len;  /* tokens per document */
    size_t n_docs, cap_docs;
} Work;

static size_t line_number(const Input *in, size_t pos) {
    size_t n = 1;
    for (const uint8_t *p = in->buf, *end = in->buf + pos; (p = memchr(p, '\n', (size_t)(end - p))); p++) n++;
    return n;
}

static int add_document(Work *w, const Input *in, size_t start, const uint8_t *text, size_t len) {
    if (len > w->opt->max_doc_bytes)
        return gpt_error("%s: the document at byte %zu has %zu bytes, more than the %zu MiB buffer (--max-doc-mb)",
                         in->path, in->bom + start, len, w->opt->max_doc_bytes >> 20);
    size_t before = w->tokens.n;
    if (tokenizer_encode(w->tok, text, len, 0, &w->tokens)) return -1;
    tokvec_push(&w->tokens, w->eot);
    if (w->n_docs == w->cap_docs)
        w->doc_len = xrealloc(w->doc_len, (w->cap_docs = w->cap_docs ? 2 * w->cap_docs : 1024) * sizeof *w->doc_len);
    w->doc_len[w->n_docs++] = (int64_t)(w->tokens.n - before);
    return 0;
}

static int process_document(Work *w, const Input *in, size_t start, size_t end) {
    if (in->mode != DOC_JSONL) {
        if (check_text(in->path, in->buf + start, end - start, in->bom + start)) return -1;
        return add_document(w, in, start, in->buf + start, end - start);
    }
    int blank = 1;
    for (size_t p = start; p < end && blank; p++) blank = strchr(" \t\r", in->buf[p]) != NULL;
    if (blank) return 0;
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)in->buf + start, end - start, 0, &jerr);
    json_t *text = json_is_object(doc) ? json_object_get(doc, "text") : NULL;
    int rc = 0;
    if (!doc)
        rc = gpt_error("%s:%zu: not valid JSON (%s); expected an object with a string field \"text\"", in->path,
                       line_number(in, start), jerr.text);
    else if (!json_is_string(text))
        rc = gpt_error("%s:%zu: expected an object with a string field \"text\"", in->path, line_number(in, start));
    else if (json_string_length(text) > 0)
        rc = add_document(w, in, start, (const uint8_t *)json_string_value(text), json_string_length(text));
    json_decref(doc);
    return rc;
}

static int tokenize_range(Work *w, const Stream *s, int64_t from, int64_t to) {
    int64_t pos = from;
    for (int i = 0; i < s->n && pos < to; i++) {
        if (pos >= s->offs[i + 1]) continue;
        const Input *in = &s->in[i];
        size_t local = (size_t)(pos > s->offs[i] ? pos - s->offs[i] : 0);
        for (;;) {
            size_t start = doc_start(in, local), next;
            if (start >= in->size || s->offs[i] + (int64_t)start >= to) break;
            size_t end = doc_end(in, start, &next);
            if (process_document(w, in, start, end)) return -1;
            local = next;
        }
        pos = s->offs[i + 1];
    }
    return 0;
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

/* Writes /train and /val collectively into the open file f. */
static int write_splits(hid_t f, const Work *w, const char *split, const Counts *mine, const Counts *before,
                        const Counts *total, int wide) {
    static const char *const names[2] = {"train", "val"};
    hid_t file_type = wide ? H5T_STD_U32LE : H5T_STD_U16LE, mem_type = wide ? H5T_NATIVE_UINT32 : H5T_NATIVE_UINT16;
    size_t elem = wide ? 4 : 2;
    int last = dist_rank() == dist_size() - 1, rc = 0;
    for (int s = 0; s < 2; s++) {
        void *buf = xmalloc((size_t)mine->tokens[s] * elem + 1);
        int64_t *offsets = xmalloc(((size_t)mine->docs[s] + 1) * sizeof *offsets);
        int64_t nt = 0, nd = 0, src = 0;
        for (size_t k = 0; k < w->n_docs; src += w->doc_len[k++]) {
            if (split[k] != s) continue;
            offsets[nd++] = before->tokens[s] + nt;
            for (int64_t j = 0; j < w->doc_len[k]; j++, nt++) {
                int32_t id = w->tokens.ids[src + j];
                if (wide) ((uint32_t *)buf)[nt] = (uint32_t)id;
                else ((uint16_t *)buf)[nt] = (uint16_t)id;
            }
        }
        if (last) offsets[nd] = total->tokens[s]; /* the end of the last document */
        hid_t g = H5Gcreate2(f, names[s], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        hid_t dt = create_1d(g, "tokens", file_type, (hsize_t)total->tokens[s], TOKEN_CHUNK);
        hid_t dof = create_1d(g, "doc_offsets", H5T_STD_I64LE, (hsize_t)total->docs[s] + 1, OFFSET_CHUNK);
        if (g < 0 || dt < 0 || dof < 0 ||
            write_slice(dt, mem_type, elem, buf, (hsize_t)before->tokens[s], (hsize_t)nt) ||
            write_slice(dof, H5T_NATIVE_INT64, 8, offsets, (hsize_t)before->docs[s], (hsize_t)(nd + last)))
            rc = -1;
        H5Dclose(dof);
        H5Dclose(dt);
        H5Gclose(g);
        free(buf);
        free(offsets);
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
    for (int i = 0; i < s->n; i++) sizes[i] = (int64_t)(s->in[i].bom + s->in[i].size), paths[i] = s->in[i].path;
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, H5T_VARIABLE);
    H5Tset_cset(str, H5T_CSET_UTF8);
    char created[32];
    time_t now = time(NULL);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    int rc = tokenizer_write_h5(t, f) || h5_write_attr_string(f, "format", "gpt-corpus") ||
             h5_write_attr_int(f, "format_version", 1) || h5_write_attr_string(f, "tool_version", GPT_VERSION) ||
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

int corpus_prepare(const char *tokenizer_path, const char *out, const char *const *inputs,
                   int n_inputs, const PrepareOptions *opt, PrepareStats *stats) {
    h5_quiet();
    int rank = dist_rank(), P = dist_size();
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", out) >= (int)sizeof tmp) return gpt_error("%s: path too long", out);
    Tokenizer *t = tokenizer_load(tokenizer_path);
    Stream s = {0};
    Work w = {.tok = t, .opt = opt};
    int rc = !t || open_inputs(&s, inputs, n_inputs, opt->split_on_blank_lines);
    if (!rc && (w.eot = tokenizer_special_id(t, TOK_EOT)) < 0)
        rc = gpt_error("%s: the tokenizer has no %s token to end documents with", tokenizer_path, TOK_EOT);
    if (!rc) {
        /* this rank's documents: those starting in its share of the byte stream */
        int64_t B = s.offs[s.n];
        int64_t from = stream_doc_start(&s, (int64_t)((__int128)B * rank / P));
        int64_t to = stream_doc_start(&s, (int64_t)((__int128)B * (rank + 1) / P));
        rc = tokenize_range(&w, &s, from, to);
    }
    if ((rc = dist_agree(rc))) goto out;

    /* global document index -> split; counts and this rank's offsets in each split */
    int64_t first_doc = 0, n_docs = (int64_t)w.n_docs;
    MPI_Exscan(&n_docs, &first_doc, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) first_doc = 0;
    char *split = xmalloc(w.n_docs + 1);
    Counts mine = {{0, 0}, {0, 0}}, before = {{0, 0}, {0, 0}}, total;
    for (size_t k = 0; k < w.n_docs; k++) {
        split[k] = (char)is_val(first_doc + (int64_t)k, opt->val_fraction);
        mine.tokens[(int)split[k]] += w.doc_len[k];
        mine.docs[(int)split[k]]++;
    }
    MPI_Exscan(&mine, &before, 4, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) memset(&before, 0, sizeof before);
    MPI_Allreduce(&mine, &total, 4, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    /* document 0 always goes to train, so train is empty only when there are no documents */
    rc = total.docs[0] == 0 ? gpt_error("no documents: the inputs hold no text") : 0;
    if (!rc) {
        hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
        H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL);
        /* the 1.8 format stores attributes over 64 KiB (thousands of input paths) densely */
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
        hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
        H5Pclose(fapl);
        if (f < 0) rc = gpt_error("%s: cannot create the file (check the directory exists and is writable)", tmp);
        else {
            rc = write_splits(f, &w, split, &mine, &before, &total, tokenizer_vocab_size(t) > 65536);
            if (H5Fclose(f) < 0) rc = -1;
            if (rc) gpt_error("%s: writing the tokens failed (disk full?)", tmp);
        }
    }
    free(split);
    if ((rc = dist_agree(rc))) goto out;
    if (rank == 0) {
        rc = write_metadata(tmp, t, &s, &total, opt) ? gpt_error("%s: writing the metadata failed", tmp)
             : rename(tmp, out)                      ? gpt_error("%s: cannot rename %s into place: %s", out, tmp, strerror(errno))
                                                     : 0;
    }
    if ((rc = dist_agree(rc))) goto out;
    memcpy(stats->tokens, total.tokens, sizeof total.tokens);
    memcpy(stats->docs, total.docs, sizeof total.docs);
    stats->input_bytes = s.offs[s.n];
out:
    /* every rank agreed on rc, and none has the file open any more */
    if (rc && rank == 0) remove(tmp);
    free(w.tokens.ids);
    free(w.doc_len);
    close_inputs(&s);
    tokenizer_free(t);
    return rc;
}
