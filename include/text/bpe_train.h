/* bpe_train.h: learning byte-level BPE merges from counted words (`gpt tokenizer train`).
 *
 * The caller pre-tokenizes the corpus and counts its distinct pieces; the learner sees
 * only (bytes, count) pairs and returns the merges in rank order, ready to be turned
 * into a tokenizer (tokenizer.h). Its time and memory follow the total length of the
 * distinct words, not the size of the corpus. */
#ifndef GPT_BPE_TRAIN_H
#define GPT_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const uint8_t *bytes;   /* one pre-tokenized piece (a "word"), not owned */
    size_t len;             /* >= 1 */
    uint64_t count;         /* how often it occurs in the corpus */
} BpeWord;

/* The most bytes all words together may hold (256 MiB): the learner indexes its pairs
 * and word lists, which can reach 9 entries a byte, with 32 bits. */
#define BPE_MAX_TOTAL_BYTES ((size_t)(UINT32_MAX / 16))

/* Learns up to n_merges merges over a byte-level alphabet whose token i (i < 256) is
 * byte i. Merge k creates token 256 + k from the adjacent pair (merges[k][0],
 * merges[k][1]). At each step the pair with the highest total count (sum over words of
 * word count x occurrences of the pair in the word's current tokenisation) is merged;
 * ties go to the smallest (left, right) in lexicographic id order, so the result is
 * deterministic. Pairs never span words. Within a word, occurrences are merged left
 * to right without overlap (a a a -> aa a), exactly as encoding applies merges.
 * Stops early when no pair occurs at least twice (or at all) and returns the number of merges learned.
 * progress (may be NULL) is called with (merges done, n_merges, ctx) about every 1000
 * merges and at the end. Returns -1 with gpt_error() on bad arguments.
 *
 * Occurrences are counted the way merging makes them, left to right without overlap:
 * a run of r equal tokens x holds (x, x) floor(r/2) times (a a a holds (a, a) once,
 * a a a a twice), any other adjacent pair once per adjacency. A pair's count is thus
 * exactly the number of tokens its merge removes from the corpus.
 *
 * Stopping rule: before each merge, if the best count is below 2 (no pair would remove
 * two or more tokens; this includes there being no pair at all) learning stops. The
 * return value r <= n_merges is the number of merges written to merges[0 .. r).
 *
 * words: n_words entries (NULL allowed when n_words is 0); words with count 0 are
 * ignored; the same bytes may appear in several entries (their counts add). Their total
 * length is at most BPE_MAX_TOTAL_BYTES. merges: room for n_merges rows, caller-owned
 * (NULL allowed when n_merges is 0). Bad arguments: n_merges < 0 or so large that
 * 256 + n_merges overflows int32, NULL words or merges where entries are needed, a
 * word with len 0 or NULL bytes, too many bytes in total. */
int bpe_learn(const BpeWord *words, size_t n_words, int n_merges, int32_t (*merges)[2],
              void (*progress)(int done, int total, void *ctx), void *ctx);

#endif
