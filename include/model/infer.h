/* infer.h: inference with a key/value cache, and sampling.
 *
 * The cache holds every layer's keys and values for the positions seen so far, so a new
 * token costs one position's work plus attention over the cache, instead of a forward
 * pass over the whole prefix. gpt_forward_cached() takes several new tokens at once (a
 * prompt in one pass: its matrix products run on all rows together). Single sequence;
 * positions are absolute (learned position embeddings), so a full cache cannot slide:
 * the caller resets it and re-encodes the tokens it keeps. */
#ifndef GPT_INFER_H
#define GPT_INFER_H

#include "base/rng.h"
#include "model/model.h"

typedef struct {
    int len;                  /* positions cached */
    int capacity;             /* n_ctx */
    float *k, *v;             /* (L, n_ctx, C) */
    float *buf;               /* scratch for up to n_ctx rows, owned */
    float *x, *a, *qkv, *y, *tmp, *f, *g, *mean, *rstd;
    float *att;               /* (att_slots, n_ctx) attention weights, one row per thread */
    int att_slots;            /* compute_threads() when the cache was created */
} GPTCache;

GPTCache *cache_create(const GPTConfig *c);
void cache_free(GPTCache *c);
static inline void cache_reset(GPTCache *c) { c->len = 0; }
/* Forgets the positions from len on, so that continuations of a shared prefix each
 * start from its cache (len <= c->len). */
static inline void cache_truncate(GPTCache *c, int len) { c->len = len; }

/* Runs tokens[0..n) at positions len .. len+n-1 (len + n <= n_ctx), appends their keys
 * and values, and writes the logits of the last one (V) to logits_last and, if not
 * NULL, of all of them (n, V) to logits_all. */
void gpt_forward_cached(const GPT *m, GPTCache *c, const int *tokens, int n, float *logits_last,
                        float *logits_all);

typedef struct {
    float temperature;        /* 0: greedy (argmax, lowest id on ties) */
    int top_k;                /* 0: off */
    float top_p;              /* 1: off; keep the most likely tokens up to this mass */
} SampleOptions;

/* Continuations of the cached prefix, each on its own: branch b is branch_len[b] >= 1
 * tokens (tokens holds them back to back) at positions c->len, c->len + 1, ..., seeing
 * the prefix and its own earlier tokens, never another branch's. All rows go through
 * each product together, so a prompt's several endings cost one pass over the weights.
 * Writes the logits of every row (sum of branch_len, V); the cache keeps the prefix
 * only. The sum of branch_len and c->len + each branch_len are at most n_ctx. */
void gpt_forward_branches(const GPT *m, GPTCache *c, const int *tokens, const int *branch_len, int n_branches,
                          float *logits);

/* log softmax(z)[target] of logits z (V), computed in double. */
double logprob_of(const float *z, int V, int target);

/* Draws a token from logits (V), which it overwrites. */
int sample_token(float *logits, int V, const SampleOptions *o, Rng *rng);

#endif
