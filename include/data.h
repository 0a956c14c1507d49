/* data.h: reading a corpus for training and evaluation, and the sampler that decides
 * which windows each step trains on.
 *
 * A window is n_ctx + 1 consecutive tokens of a split starting at k * n_ctx (inputs are
 * its first n_ctx tokens, targets its last n_ctx), for k in [0, n_windows) with
 * n_windows = floor((N - 1) / n_ctx). Training visits all windows once per epoch in an
 * order that is a pure function of (seed, epoch): global sample i belongs to epoch
 * i / n_windows and reads window perm(seed, epoch)(i mod n_windows). The permutation
 * is a keyed Feistel network with cycle walking, so it needs no memory at all and any
 * rank can compute any sample's window: the data of a step depends only on the seed,
 * the step and the global batch, never on the number of ranks. */
#ifndef GPT_DATA_H
#define GPT_DATA_H

#include <stdint.h>

enum { SPLIT_TRAIN = 0, SPLIT_VAL = 1 };

typedef struct Corpus Corpus;

/* Collective over MPI_COMM_WORLD: opens a corpus with the MPI-IO driver (every rank then
 * reads what it needs, independently). NULL with gpt_error() on every rank if the file
 * is missing or not a corpus. */
Corpus *corpus_open(const char *path);
void corpus_close(Corpus *c);
int corpus_vocab_size(const Corpus *c);
int64_t corpus_split_tokens(const Corpus *c, int split);
/* Reads tokens [start, start + n) of a split into out; -1 with gpt_error() on failure
 * (a checksum mismatch names the file). */
int corpus_read(Corpus *c, int split, int64_t start, int64_t n, int32_t *out);

/* A hash of the corpus's contents (vocabulary, split sizes, and the first and last
 * tokens of each split), to tell whether a run resumes on the same corpus wherever the
 * file has moved. Reads a few thousand tokens; -1 with gpt_error() if they are unreadable. */
int corpus_fingerprint(Corpus *c, uint64_t *out);

/* Windows of n_ctx + 1 tokens in a split of N tokens. */
int64_t windows_in(int64_t n_tokens, int n_ctx);
/* The window of global sample i (see above). */
int64_t sampler_window(uint64_t seed, int64_t n_windows, int64_t i);
/* The dropout key of global sample i: masks follow the sample, not the rank. */
uint64_t sampler_dropout_key(uint64_t seed, int64_t i);

#endif
