/* corpus.h: the tokenized corpus in HDF5 (docs/formats.md), and `gpt prepare`.
 *
 * A corpus holds /train and /val, each with the tokens of whole documents concatenated
 * (every document followed by <|endoftext|>) and the offset where each document starts,
 * plus the tokenizer that produced them. prepare runs on any number of MPI ranks, in
 * rounds that fit a memory bound, and writes the same file for any number of ranks and
 * any bound: each round, every rank tokenizes the documents that start in its slot of
 * the input stream, prefix sums place them, and the ranks append them collectively
 * (parallel HDF5 over MPI-IO). Inputs may be gzip or zstd compressed. */
#ifndef GPT_CORPUS_H
#define GPT_CORPUS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double val_fraction;     /* share of documents in /val, exact: doc g is in val when
                                floor((g+1) F) > floor(g F), g its global index */
    int split_on_blank_lines;/* text files: paragraphs are documents (else a file is one) */
    size_t max_doc_bytes;    /* a larger document is an error, not an out-of-memory */
    size_t max_memory;       /* bytes a rank may hold, the program's own included */
    double collective_timeout;/* seconds a collective may take before the job ends (watchdog.h); 0: no limit */
} PrepareOptions;

typedef struct {
    int64_t tokens[2], docs[2]; /* [0] train, [1] val */
    int64_t text_bytes;      /* of the inputs, decompressed */
    int64_t file_bytes;      /* of the input files */
    int rounds;
    double peak_rss_mb;      /* the largest of the ranks' */
} PrepareStats;

/* Collective over MPI_COMM_WORLD. Inputs named .jsonl (also .jsonl.gz, .jsonl.zst) are
 * JSON Lines (base/jsonl.h's rules) with a string field "text" per line; others are
 * UTF-8 text. Writes out + ".tmp" and publishes it when complete (base/atomic.h). Returns 0, or -1 on every rank with the same
 * message and no file left (also when SIGTERM or SIGINT arrives). A rank that stops
 * answering ends the job with WATCHDOG_EXIT and no file left (watchdog.h). */
int corpus_prepare(const char *tokenizer_path, const char *out, const char *const *inputs,
                   int n_inputs, const PrepareOptions *opt, PrepareStats *stats);

#endif
