/* corpus.h: the tokenized corpus in HDF5 (docs/formats.md), and `gpt prepare`.
 *
 * A corpus holds /train and /val, each with the tokens of whole documents concatenated
 * (every document followed by <|endoftext|>) and the offset where each document starts,
 * plus the tokenizer that produced them. prepare runs on any number of MPI ranks and
 * writes the same file for any number: the input bytes are cut into contiguous ranges
 * at document boundaries, each rank tokenizes its range, prefix sums place every
 * rank's tokens, and the ranks write collectively (parallel HDF5 over MPI-IO). */
#ifndef GPT_CORPUS_H
#define GPT_CORPUS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double val_fraction;     /* share of documents in /val, exact: doc g is in val when
                                floor((g+1) F) > floor(g F), g its global index */
    int split_on_blank_lines;/* text files: paragraphs are documents (else a file is one) */
    size_t max_doc_bytes;    /* a larger document is an error, not an out-of-memory */
} PrepareOptions;

typedef struct {
    int64_t tokens[2], docs[2]; /* [0] train, [1] val */
    int64_t input_bytes;
} PrepareStats;

/* Collective over MPI_COMM_WORLD. Inputs ending in .jsonl are JSON Lines with a string
 * field "text" per line; others are UTF-8 text. Writes out + ".tmp", renames it when
 * complete. Returns 0, or -1 on every rank with the same message. */
int corpus_prepare(const char *tokenizer_path, const char *out, const char *const *inputs,
                   int n_inputs, const PrepareOptions *opt, PrepareStats *stats);

#endif
