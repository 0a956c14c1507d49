/* corpus_parts.h (private to src/files/corpus*.c): the pieces of `gpt prepare`
 * (corpus.h) and what they share. corpus.c runs the rounds; corpus_input.c maps the
 * inputs as one stream; corpus_docs.c finds the documents of a mapped input and
 * corpus_scan.c those of a compressed one; corpus_tokenize.c tokenizes this rank's
 * documents of a round; corpus_output.c appends them to the HDF5 file. */
#ifndef GPT_CORPUS_PARTS_H
#define GPT_CORPUS_PARTS_H

#include <hdf5.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "base/zstream.h"
#include "files/corpus.h"
#include "text/tokenizer.h"

typedef enum { DOC_FILE, DOC_JSONL, DOC_PARAGRAPH } DocMode;

/* A compressed input's reader: decompressed bytes buf[pos, len) not yet split, of
 * which those before buf[checked] are known to be text (checked as they arrive, so that
 * binary data is named at once, not read up to --max-doc-mb as one line), the document
 * read ahead of the current slot, and the line count for messages. */
typedef struct {
    ZStream *z;
    uint8_t *buf;
    size_t cap, len, pos, checked;
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
    dev_t dev;           /* the file as opened: a change before prepare has read it is an error */
    ino_t ino;
    struct timespec mtime;
    volatile sig_atomic_t lost; /* plain: a read found mapped pages that a truncation took away */
} Input;

typedef struct {
    Input *in;
    int n;
    int64_t *offs;  /* (n + 1) start of each input in the stream, known once this rank finished those before */
    int cur;        /* the first input this rank has not finished */
    int64_t file_bytes;
} Stream;

/* ---- corpus_input.c ---- */

/* Opens (and maps, if plain) every input: -1 naming one that is missing, not a
 * regular file or empty. Until corpus_close_inputs, a read of a mapped page that the
 * file no longer has (SIGBUS) reads zeros and marks the input lost. */
int corpus_open_inputs(Stream *s, const char *const *paths, int n, int paragraphs);
void corpus_close_inputs(Stream *s);
/* -1 naming the input if it was lost or its size, time of modification or inode is no
 * longer what it was when opened; asked after each read, whose result it takes
 * precedence over (a truncation reads as NUL bytes or a stream cut short). */
int corpus_input_check(const Input *in);
/* Drops the mapped pages of buf[from, to) from this process's memory (a plain input is
 * read again from the page cache if touched later). */
void corpus_drop_pages(const Input *in, size_t from, size_t to);

/* ---- corpus_docs.c: documents of a mapped input ---- */

/* Only spaces, tabs and \r. */
int corpus_blank(const uint8_t *p, size_t n);
/* The first document start at or after x (in->size if none). */
size_t corpus_doc_start(const Input *in, size_t x);
/* End (exclusive) of the document starting at `start`; *next: where to look on. */
size_t corpus_doc_end(const Input *in, size_t start, size_t *next);

/* ---- corpus_scan.c: documents of a compressed input ---- */

Scanner *corpus_scanner_open(const Input *in);
void corpus_scanner_free(Scanner *sc);
/* Reads the next document of a compressed input ahead into sc->doc, split as
 * corpus_doc_start and corpus_doc_end split a plain one: 1, 0 at the end of the input,
 * -1 on an error. */
int corpus_scan_document(Scanner *sc, Input *in, size_t max_doc);

/* ---- corpus_tokenize.c ---- */

typedef struct {
    Tokenizer *tok;
    int32_t eot;
    const PrepareOptions *opt;
    TokenVec tokens;   /* this round's documents of this rank, each ending with eot */
    int64_t text_bytes;/* of the documents tokenized, as in the input (JSON included) */
    int64_t *doc_len;  /* tokens per document */
    size_t n_docs, cap_docs;
} Work;

/* This rank's documents in stream positions [a, b): those of every input from the
 * first it has not finished. *at_end: the stream ended before b. */
int corpus_tokenize_slot(Work *w, Stream *s, int64_t a, int64_t b, int *at_end);
/* Bytes of the input files behind this rank (compressed ones as read so far), for progress. */
int64_t corpus_file_bytes_read(const Stream *s, int64_t b);

/* ---- corpus_output.c: collective unless said ---- */

typedef struct {
    int64_t tokens[2], docs[2];
} Counts;

/* The datasets being appended to, and what the rounds so far wrote. */
typedef struct {
    hid_t f, group[2], tokens[2], offsets[2];
    int wide;
    Counts done;
} Output;

/* The file tmp with empty, extensible /train and /val (wide: 32-bit tokens). */
int corpus_output_create(Output *o, const char *tmp, int wide);
/* Closes everything; -1 if the last writes failed. */
int corpus_output_close(Output *o);
/* Appends the round's documents (split[k]: 0 train, 1 val), this rank's at `before`
 * (within the round) of the counts `round` of all ranks. */
int corpus_output_append(Output *o, const Work *w, const char *split, const Counts *mine, const Counts *before,
                         const Counts *round);
/* The last entry of each doc_offsets, the end of the last document. */
int corpus_output_finish(Output *o);
/* An upper bound of the file's size once it holds `c` and the tokenizer (elem: bytes a
 * token): what rank 0 reserves before each write, since a full disk must never meet
 * HDF5 (h5_reserve). */
uint64_t corpus_file_bytes_needed(const Counts *c, size_t elem, const Tokenizer *t);
/* Rank 0 reserves room for the file holding c; agreed. */
int corpus_reserve(const char *out, const char *tmp, const Counts *c, size_t elem, const Tokenizer *t);
/* Rank 0, serial driver: the tokenizer and the root attributes. */
int corpus_write_metadata(const char *tmp, const Tokenizer *t, const Stream *s, const Counts *total,
                          const PrepareOptions *opt);

#endif
