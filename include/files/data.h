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

/* ---- blends: training data drawn from several corpora in fixed proportions ----
 *
 * `--data 0.7:web.h5 --data 0.3:books.h5` (a bare path has weight 1; the weights are
 * normalised) gives each corpus c an integer quota q_c out of BLEND_QUOTA = 10^9, the
 * normalised weights rounded by largest remainder (so weights of up to nine decimals,
 * and their ratios, are exact). Global sample i goes to a corpus by
 * a chain of exact splits: corpus 0 takes sample x = i when floor((x + 1) q_0 / Q) >
 * floor(x q_0 / Q), as its sample floor(x q_0 / Q); the others' samples are renumbered
 * x - floor(x q_0 / Q) and split the same way among corpora 1.. with Q - q_0, and so on;
 * the last corpus takes what is left. So the mapping is stateless (independent of P, B
 * and accumulation, exactly resumable) and a deterministic interleaving: in any range of
 * N samples corpus c has exactly N w_c samples when that is a whole number (0.7 and 0.3
 * over 10,000: 7,000 and 3,000), else within one per corpus before it in the chain.
 * Corpus c's j-th sample reads its window sampler_window(seed, n_windows_c, j): every
 * corpus runs through its own epochs. A blend of one corpus is that corpus, sample for
 * sample, as before blends existed. */
enum { BLEND_MAX = 64 };
#define BLEND_QUOTA ((uint64_t)1000000000)

/* Quotas summing to BLEND_QUOTA for n weights summing to 1 (largest remainder). */
void blend_quotas(const double *weight, int n, uint64_t *quota);
/* The corpus of global sample i and its sample index there, for quotas summing to
 * BLEND_QUOTA. */
void blend_pick(const uint64_t *quota, int n, int64_t i, int *corpus, int64_t *j);

typedef struct {
    int n;
    Corpus *corpus[BLEND_MAX];
    const char *path[BLEND_MAX];  /* as given, not owned */
    double weight[BLEND_MAX];     /* normalised */
    uint64_t quota[BLEND_MAX];
    int64_t windows[BLEND_MAX];   /* of /train at blend_windows' n_ctx */
    uint64_t fingerprint;         /* one corpus: its own; else of every corpus and quota, in order */
    char spec[1024];              /* "PATH", or "W:PATH,W:PATH,..." with the normalised weights */
} Blend;

/* Collective: opens the corpora of specs "W:PATH" or "PATH" (n of them), checks that
 * they share one tokenizer (rank 0 compares them) and fingerprints them. NULL with the
 * same message on every rank for a bad weight, a missing or foreign file, or corpora of
 * different tokenizers. */
Blend *blend_open(const char *const *specs, int n);
/* The path of a spec ("W:PATH" or "PATH"). */
const char *blend_spec_path(const char *spec);
void blend_close(Blend *b);
int blend_vocab_size(const Blend *b);
/* Sets windows[] for n_ctx; -1 naming the corpus if one has no /train window. */
int blend_windows(Blend *b, int n_ctx);
/* Windows of n_ctx + 1 tokens of each corpus's split, at most cap each, into n[c]. */
void blend_split_windows(const Blend *b, int split, int n_ctx, int64_t cap, int64_t *n);
/* Corpus and window of global sample i. */
void blend_sample(const Blend *b, uint64_t seed, int64_t i, int *corpus, int64_t *window);

#endif
