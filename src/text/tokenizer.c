/* tokenizer.c: byte-level BPE encoding and decoding (see tokenizer.h).
 *
 * Pre-tokenization is PCRE2 (UTF + UCP, JIT) with PCRE2_MATCH_INVALID_UTF: invalid
 * UTF-8 never matches, so the bytes between two matches form a piece of their own.
 * Merging a piece uses a min-heap of (rank, position) over a linked list of its
 * tokens, so a long piece (a run of whitespace, binary junk) costs O(n log n), not the
 * O(n^2) of rescanning; ranks are unique per pair and always larger for pairs that
 * contain a newer token, so popping in (rank, position) order reproduces GPT-2's
 * "lowest-rank pair first, left to right". Short pieces repeat a lot in text, so their
 * tokens are cached. */
#define _GNU_SOURCE /* memmem */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/tokenizer.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/hashmap.h"
#include "base/util.h"

/* JavaScript's \s (ECMAScript WhiteSpace and LineTerminator): the oracle, js-tiktoken,
 * runs GPT-2's pattern in JavaScript, and PCRE2's own \s lacks U+FEFF. */
#define WS "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}"
const char *const PRETOK_PATTERN =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])|[" WS "]+";

struct Pretokenizer {
    pcre2_code *re;
    pcre2_match_data *md;
    int jit;
};

Pretokenizer *pretok_create(void) {
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)PRETOK_PATTERN, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        gpt_error("PCRE2 cannot compile the pre-tokenization pattern at %zu: %s", (size_t)off, msg);
        return NULL;
    }
    Pretokenizer *p = xcalloc(1, sizeof *p);
    p->re = re;
    p->jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    p->md = pcre2_match_data_create_from_pattern(re, NULL);
    return p;
}

void pretok_free(Pretokenizer *p) {
    if (!p) return;
    pcre2_match_data_free(p->md);
    pcre2_code_free(p->re);
    free(p);
}

int pretok_split(Pretokenizer *p, const uint8_t *text, size_t len,
                 void (*fn)(const uint8_t *piece, size_t len, void *ctx), void *ctx) {
    size_t pos = 0;
    while (pos < len) {
        int rc = p->jit ? pcre2_jit_match(p->re, text, len, pos, 0, p->md, NULL)
                        : pcre2_match(p->re, text, len, pos, 0, p->md, NULL);
        size_t start = len, end = len;
        if (rc >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(p->md);
            start = ov[0];
            end = ov[1];
        } else if (rc != PCRE2_ERROR_NOMATCH) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return gpt_error("pre-tokenization failed at byte %zu: %s", pos, msg);
        }
        if (start > pos) fn(text + pos, start - pos, ctx); /* bytes no alternative matches */
        if (end > start) fn(text + start, end - start, ctx);
        pos = end > pos ? end : len;
    }
    return 0;
}

void tokvec_push(TokenVec *v, int32_t id) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 256;
        v->ids = xrealloc(v->ids, v->cap * sizeof *v->ids);
    }
    v->ids[v->n++] = id;
}

/* Pieces up to this long are cached; the cache is emptied when it grows past its cap. */
#define CACHE_MAX_PIECE 48
#define CACHE_MAX_ENTRIES (1 << 18)

typedef struct {
    uint32_t bytes_off, len, ids_off, n_ids;
} CacheEntry;

struct Tokenizer {
    int n_tokens, n_merges, n_special;
    uint8_t *bytes;             /* token bytes, concatenated */
    int64_t *offsets;           /* (n_tokens + 1) */
    int32_t (*merges)[3];       /* (n_merges) left, right, result */
    char **special_names;       /* (n_special) */
    int32_t *special_ids;       /* (n_special) */
    int32_t byte_id[256];
    HashMap pair_rank;          /* (left << 32 | right) -> merge rank */
    Pretokenizer *pre;
    /* piece cache */
    HashMap cache;              /* hash of piece -> index into entries */
    CacheEntry *entries;
    size_t n_entries;
    uint8_t *cache_bytes;
    int32_t *cache_ids;
    size_t cache_bytes_len, cache_ids_len;
    /* merge scratch, grown to the longest piece seen */
    int32_t *id, *next, *prev;
    uint64_t *heap;
    size_t scratch_cap;
};

static uint64_t pair_key(int32_t l, int32_t r) { return (uint64_t)(uint32_t)l << 32 | (uint32_t)r; }

static int rank_of(const Tokenizer *t, int32_t l, int32_t r) {
    const int64_t *v = hm_get(&t->pair_rank, pair_key(l, r));
    return v ? (int)*v : -1;
}

const uint8_t *tokenizer_token_bytes(const Tokenizer *t, int32_t id, size_t *len) {
    if (id >= 0 && id < t->n_tokens) {
        *len = (size_t)(t->offsets[id + 1] - t->offsets[id]);
        return t->bytes + t->offsets[id];
    }
    for (int i = 0; i < t->n_special; i++)
        if (t->special_ids[i] == id) {
            *len = strlen(t->special_names[i]);
            return (const uint8_t *)t->special_names[i];
        }
    return NULL;
}

static int check_parts(const uint8_t *bytes, const int64_t *offsets, int n_tokens,
                       const int32_t (*merges)[3], int n_merges, const char *const *names,
                       const int32_t *ids, int n_special, int32_t byte_id[256]) {
    if (n_tokens < 256) return gpt_error("a byte-level vocabulary needs at least 256 tokens, got %d", n_tokens);
    if (offsets[0] != 0) return gpt_error("token offsets must start at 0");
    for (int b = 0; b < 256; b++) byte_id[b] = -1;
    for (int i = 0; i < n_tokens; i++) {
        if (offsets[i + 1] <= offsets[i]) return gpt_error("token %d is empty or its offsets decrease", i);
        if (offsets[i + 1] - offsets[i] == 1) {
            uint8_t b = bytes[offsets[i]];
            if (byte_id[b] >= 0) return gpt_error("tokens %d and %d are both the byte 0x%02x", byte_id[b], i, b);
            byte_id[b] = i;
        }
    }
    for (int b = 0; b < 256; b++)
        if (byte_id[b] < 0) return gpt_error("no token for the byte 0x%02x", b);
    for (int k = 0; k < n_merges; k++) {
        int32_t l = merges[k][0], r = merges[k][1], res = merges[k][2];
        if (l < 0 || r < 0 || res < 0 || l >= n_tokens || r >= n_tokens || res >= n_tokens)
            return gpt_error("merge %d (%d, %d -> %d) names a token outside [0, %d)", k, l, r, res, n_tokens);
        int64_t ll = offsets[l + 1] - offsets[l], lr = offsets[r + 1] - offsets[r];
        if (offsets[res + 1] - offsets[res] != ll + lr ||
            memcmp(bytes + offsets[res], bytes + offsets[l], (size_t)ll) ||
            memcmp(bytes + offsets[res] + ll, bytes + offsets[r], (size_t)lr))
            return gpt_error("merge %d: token %d is not the concatenation of tokens %d and %d", k, res, l, r);
    }
    for (int i = 0; i < n_special; i++) {
        if (ids[i] != n_tokens + i)
            return gpt_error("special token '%s' has id %d, expected %d (special tokens follow the %d others)",
                             names[i], ids[i], n_tokens + i, n_tokens);
        if (!names[i][0]) return gpt_error("special token %d has an empty name", i);
    }
    return 0;
}

Tokenizer *tokenizer_create(const uint8_t *token_bytes, const int64_t *token_offsets,
                            int n_tokens, const int32_t (*merges)[3], int n_merges,
                            const char *const *special_names, const int32_t *special_ids,
                            int n_special) {
    int32_t byte_id[256];
    if (check_parts(token_bytes, token_offsets, n_tokens, merges, n_merges, special_names,
                    special_ids, n_special, byte_id))
        return NULL;
    Pretokenizer *pre = pretok_create();
    if (!pre) return NULL;
    Tokenizer *t = xcalloc(1, sizeof *t);
    t->pre = pre;
    t->n_tokens = n_tokens;
    t->n_merges = n_merges;
    t->n_special = n_special;
    memcpy(t->byte_id, byte_id, sizeof byte_id);
    size_t nbytes = (size_t)token_offsets[n_tokens];
    t->bytes = xmalloc(nbytes);
    memcpy(t->bytes, token_bytes, nbytes);
    t->offsets = xmalloc(((size_t)n_tokens + 1) * sizeof *t->offsets);
    memcpy(t->offsets, token_offsets, ((size_t)n_tokens + 1) * sizeof *t->offsets);
    t->merges = xmalloc(((size_t)n_merges + 1) * sizeof *t->merges);
    memcpy(t->merges, merges, (size_t)n_merges * sizeof *t->merges);
    hm_init(&t->pair_rank, (size_t)n_merges);
    for (int k = 0; k < n_merges; k++) {
        int64_t *slot = hm_put(&t->pair_rank, pair_key(merges[k][0], merges[k][1]), k);
        if (*slot != k) {
            gpt_error("merges %d and %d join the same pair (%d, %d)", (int)*slot, k, merges[k][0], merges[k][1]);
            tokenizer_free(t);
            return NULL;
        }
    }
    t->special_names = xcalloc((size_t)n_special + 1, sizeof *t->special_names);
    t->special_ids = xcalloc((size_t)n_special + 1, sizeof *t->special_ids);
    for (int i = 0; i < n_special; i++) {
        t->special_names[i] = xstrdup(special_names[i]);
        t->special_ids[i] = special_ids[i];
    }
    hm_init(&t->cache, 1024);
    return t;
}

void tokenizer_free(Tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_special; i++) free(t->special_names[i]);
    free(t->special_names);
    free(t->special_ids);
    free(t->bytes);
    free(t->offsets);
    free(t->merges);
    hm_free(&t->pair_rank);
    hm_free(&t->cache);
    free(t->entries);
    free(t->cache_bytes);
    free(t->cache_ids);
    free(t->id);
    free(t->next);
    free(t->prev);
    free(t->heap);
    pretok_free(t->pre);
    free(t);
}

TokenizerParts tokenizer_parts(const Tokenizer *t) {
    TokenizerParts p = {t->bytes, t->offsets, t->n_tokens, (const int32_t(*)[3])t->merges,
                        t->n_merges, (const char *const *)t->special_names, t->special_ids,
                        t->n_special};
    return p;
}

int tokenizer_equal(const Tokenizer *a, const Tokenizer *b, char *why, size_t size) {
    if (a->n_tokens + a->n_special != b->n_tokens + b->n_special)
        return snprintf(why, size, "vocabulary %d vs %d", a->n_tokens + a->n_special, b->n_tokens + b->n_special), 0;
    if (a->n_tokens != b->n_tokens || a->n_merges != b->n_merges)
        return snprintf(why, size, "%d vs %d merges", a->n_merges, b->n_merges), 0;
    for (int i = 0; i < a->n_tokens; i++) {
        int64_t la = a->offsets[i + 1] - a->offsets[i];
        if (la != b->offsets[i + 1] - b->offsets[i] || memcmp(a->bytes + a->offsets[i], b->bytes + b->offsets[i], (size_t)la))
            return snprintf(why, size, "token %d differs", i), 0;
    }
    for (int k = 0; k < a->n_merges; k++)
        if (memcmp(a->merges[k], b->merges[k], sizeof a->merges[k]))
            return snprintf(why, size, "merge %d differs", k), 0;
    for (int i = 0; i < a->n_special; i++)
        if (strcmp(a->special_names[i], b->special_names[i]) || a->special_ids[i] != b->special_ids[i])
            return snprintf(why, size, "special token %d differs", i), 0;
    return 1;
}

int tokenizer_vocab_size(const Tokenizer *t) { return t->n_tokens + t->n_special; }
int tokenizer_n_merges(const Tokenizer *t) { return t->n_merges; }

int32_t tokenizer_special_id(const Tokenizer *t, const char *name) {
    for (int i = 0; i < t->n_special; i++)
        if (!strcmp(t->special_names[i], name)) return t->special_ids[i];
    return -1;
}

/* ---- min-heap of (rank << 32 | position) ---- */

static void heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0 && h[(i - 1) / 2] > v) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (h[c] >= last) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

static void grow_scratch(Tokenizer *t, size_t n) {
    if (n <= t->scratch_cap) return;
    size_t cap = t->scratch_cap ? t->scratch_cap : 64;
    while (cap < n) cap *= 2;
    free(t->id), free(t->next), free(t->prev), free(t->heap);
    t->id = xmalloc(cap * sizeof *t->id);
    t->next = xmalloc(cap * sizeof *t->next);
    t->prev = xmalloc(cap * sizeof *t->prev);
    t->heap = xmalloc(2 * cap * sizeof *t->heap); /* each merge pushes at most two pairs */
    t->scratch_cap = cap;
}

static void push_pair(Tokenizer *t, size_t *nheap, int32_t pos) {
    int32_t nx = t->next[pos];
    if (nx < 0) return;
    int r = rank_of(t, t->id[pos], t->id[nx]);
    if (r >= 0) heap_push(t->heap, nheap, (uint64_t)r << 32 | (uint32_t)pos);
}

/* BPE over one piece of n >= 2 bytes; appends its tokens to out. */
static void merge_piece(Tokenizer *t, const uint8_t *p, size_t n, TokenVec *out) {
    grow_scratch(t, n);
    for (size_t i = 0; i < n; i++) {
        t->id[i] = t->byte_id[p[i]];
        t->prev[i] = (int32_t)i - 1;
        t->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    size_t nheap = 0;
    for (size_t i = 0; i + 1 < n; i++) push_pair(t, &nheap, (int32_t)i);
    while (nheap) {
        uint64_t top = heap_pop(t->heap, &nheap);
        int32_t pos = (int32_t)(uint32_t)top, nx = t->next[pos];
        int rank = (int)(top >> 32);
        /* stale: the left token was absorbed, or either side has changed since */
        if (t->id[pos] < 0 || nx < 0 || rank_of(t, t->id[pos], t->id[nx]) != rank) continue;
        t->id[pos] = t->merges[rank][2];
        t->id[nx] = -1;
        t->next[pos] = t->next[nx];
        if (t->next[nx] >= 0) t->prev[t->next[nx]] = pos;
        if (t->prev[pos] >= 0) push_pair(t, &nheap, t->prev[pos]);
        push_pair(t, &nheap, pos);
    }
    for (int32_t i = 0; i >= 0; i = t->next[i]) tokvec_push(out, t->id[i]);
}

static const CacheEntry *cache_find(const Tokenizer *t, uint64_t h, const uint8_t *p, size_t n) {
    for (const int64_t *v = hm_get(&t->cache, h); v; v = hm_get_next(&t->cache, h, v)) {
        const CacheEntry *e = &t->entries[*v];
        if (e->len == n && !memcmp(t->cache_bytes + e->bytes_off, p, n)) return e;
    }
    return NULL;
}

static void cache_add(Tokenizer *t, uint64_t h, const uint8_t *p, size_t n, const int32_t *ids,
                      size_t n_ids) {
    if (t->n_entries == CACHE_MAX_ENTRIES) { /* start afresh rather than evict */
        hm_clear(&t->cache);
        t->n_entries = t->cache_bytes_len = t->cache_ids_len = 0;
    }
    if (!t->entries) {
        t->entries = xmalloc(CACHE_MAX_ENTRIES * sizeof *t->entries);
        t->cache_bytes = xmalloc((size_t)CACHE_MAX_ENTRIES * CACHE_MAX_PIECE);
        t->cache_ids = xmalloc((size_t)CACHE_MAX_ENTRIES * CACHE_MAX_PIECE * sizeof *t->cache_ids);
    }
    CacheEntry *e = &t->entries[t->n_entries];
    e->bytes_off = (uint32_t)t->cache_bytes_len;
    e->len = (uint32_t)n;
    e->ids_off = (uint32_t)t->cache_ids_len;
    e->n_ids = (uint32_t)n_ids;
    memcpy(t->cache_bytes + t->cache_bytes_len, p, n);
    memcpy(t->cache_ids + t->cache_ids_len, ids, n_ids * sizeof *ids);
    t->cache_bytes_len += n;
    t->cache_ids_len += n_ids;
    hm_put_dup(&t->cache, h, (int64_t)t->n_entries++);
}

typedef struct {
    Tokenizer *t;
    TokenVec *out;
} EncodeCtx;

static void encode_piece(const uint8_t *p, size_t n, void *ctx) {
    EncodeCtx *c = ctx;
    Tokenizer *t = c->t;
    if (n == 1) {
        tokvec_push(c->out, t->byte_id[p[0]]);
        return;
    }
    if (n > CACHE_MAX_PIECE) {
        merge_piece(t, p, n, c->out);
        return;
    }
    uint64_t h = hash_bytes(p, n);
    const CacheEntry *e = cache_find(t, h, p, n);
    if (e) {
        for (uint32_t i = 0; i < e->n_ids; i++) tokvec_push(c->out, t->cache_ids[e->ids_off + i]);
        return;
    }
    size_t start = c->out->n;
    merge_piece(t, p, n, c->out);
    cache_add(t, h, p, n, c->out->ids + start, c->out->n - start);
}

/* Earliest occurrence of any special token's name in text; -1 if none. */
static int find_special(const Tokenizer *t, const uint8_t *text, size_t len, size_t *at) {
    int best = -1;
    for (int i = 0; i < t->n_special; i++) {
        const uint8_t *hit = memmem(text, len, t->special_names[i], strlen(t->special_names[i]));
        if (hit && (best < 0 || (size_t)(hit - text) < *at)) {
            best = i;
            *at = (size_t)(hit - text);
        }
    }
    return best;
}

int tokenizer_encode(Tokenizer *t, const uint8_t *text, size_t len, int allow_special,
                     TokenVec *out) {
    EncodeCtx ctx = {t, out};
    while (allow_special && len) {
        size_t at = 0;
        int s = find_special(t, text, len, &at);
        if (s < 0) break;
        if (pretok_split(t->pre, text, at, encode_piece, &ctx)) return -1;
        tokvec_push(out, t->special_ids[s]);
        size_t skip = at + strlen(t->special_names[s]);
        text += skip;
        len -= skip;
    }
    return pretok_split(t->pre, text, len, encode_piece, &ctx);
}
