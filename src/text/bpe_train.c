/* bpe_train.c: learning BPE merges incrementally.
 *
 * Every word is an array of token ids in one shared buffer, rewritten in place as
 * merges shrink it. Every pair that occurs has a count and a list of the words that may
 * hold it (a superset: a word stays listed after losing the pair, and is skipped when
 * visited). A binary max-heap orders pairs by (count, then smallest ids) lazily: entries
 * are never updated; a pair whose count grew during a merge is pushed again, and a
 * popped entry whose count is stale is pushed back with the current one. So every pair
 * with count >= 2 has an entry at least its count, and a popped entry that is current
 * is the best pair.
 *
 * Merging (a, b) visits only the words on its list. In each it rewrites windows around
 * the occurrences, subtracting the pair counts of a window's old tokens and adding
 * those of its new ones. A window runs from the start of the run of equal tokens left
 * of an occurrence to the end of the run right of it (overlapping windows are joined).
 * Its edge tokens, unless at the word's ends, stay as they were and differ from their
 * outside neighbours, so no run crosses its edges and the pairs outside it keep their
 * counts: the floor(r/2) rule for runs (bpe_train.h) applies to the window alone. The
 * old and new counts of a word meet in a small delta list first, so pairs a merge
 * leaves unchanged cost no hash-table work and are not listed again.
 *
 * Pairs are found through a hash map (hashmap.h) on left << 32 | right. Indices are 32
 * bits: list entries number at most the initial pairs (< total length) plus, per
 * occurrence merged (< total length), two for each run of the new window (at most
 * four runs an occurrence), and BPE_MAX_TOTAL_BYTES keeps 9 x total in range. */
#include "text/bpe_train.h"

#include <stdlib.h>
#include <string.h>

#include "base/hashmap.h"
#include "base/util.h"

#define NIL UINT32_MAX
#define DELTA_CAP 64
#define PROGRESS_EVERY 1000

typedef struct {
    uint64_t key;          /* left << 32 | right */
    uint64_t count;
    uint32_t head;         /* first node of the list of words that may hold the pair */
    uint32_t last_word;    /* the word listed last: a word is listed once per change */
    uint32_t dirty;        /* tag of the last step in which the count grew */
} Pair;

typedef struct { uint32_t word, next; } Node;
typedef struct { uint64_t count, key; } HeapItem;
typedef struct { uint64_t key; int64_t n; } Delta;

typedef struct {
    const BpeWord *words;
    int32_t *tok;                 /* word w is tok[off[w] .. off[w] + len[w]) */
    size_t *off, *len;
    uint32_t *seen;               /* tag of the step that last rewrote the word */
    uint32_t tag;                 /* current step: 1 while counting, 2 + k in merge k */
    Pair *pairs;
    size_t n_pairs, cap_pairs;
    HashMap index;                /* pair key -> index into pairs */
    Node *nodes;
    size_t n_nodes, cap_nodes;
    uint32_t free_nodes;          /* nodes of merged pairs, reused */
    HeapItem *heap;
    size_t n_heap, cap_heap;
    uint32_t *dirty;              /* pairs whose count grew this step */
    size_t n_dirty, cap_dirty;
    Delta delta[DELTA_CAP];       /* pending count changes of the current word */
    int n_delta;
} Trainer;

/* Grows an array to hold at least `need` elements, doubling. */
static void *grow(void *p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return p;
    size_t n = *cap ? *cap : 64;
    while (n < need) n *= 2;
    *cap = n;
    return xrealloc(p, n * size);
}

static inline uint64_t pair_key(int32_t left, int32_t right) {
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

/* Index of the pair `key`, added with count 0 if it is new. */
static uint32_t pair_get(Trainer *tr, uint64_t key) {
    int64_t *p = hm_put(&tr->index, key, (int64_t)tr->n_pairs);
    if (*p == (int64_t)tr->n_pairs) {
        tr->pairs = grow(tr->pairs, &tr->cap_pairs, tr->n_pairs + 1, sizeof *tr->pairs);
        tr->pairs[tr->n_pairs++] = (Pair){.key = key, .count = 0, .head = NIL, .last_word = NIL, .dirty = 0};
    }
    return (uint32_t)*p;
}

static inline int heap_before(HeapItem x, HeapItem y) {
    return x.count != y.count ? x.count > y.count : x.key < y.key;
}

static void heap_push(Trainer *tr, uint64_t count, uint64_t key) {
    tr->heap = grow(tr->heap, &tr->cap_heap, tr->n_heap + 1, sizeof *tr->heap);
    HeapItem it = {count, key};
    size_t i = tr->n_heap++;
    while (i > 0 && heap_before(it, tr->heap[(i - 1) / 2])) {
        tr->heap[i] = tr->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    tr->heap[i] = it;
}

static void heap_pop(Trainer *tr) {
    size_t n = --tr->n_heap, i = 0;
    if (n == 0) return;
    HeapItem last = tr->heap[n];
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= n) break;
        if (k + 1 < n && heap_before(tr->heap[k + 1], tr->heap[k])) k++;
        if (!heap_before(tr->heap[k], last)) break;
        tr->heap[i] = tr->heap[k];
        i = k;
    }
    tr->heap[i] = last;
}

static void list_add(Trainer *tr, uint32_t p, uint32_t w) {
    uint32_t n = tr->free_nodes;
    if (n != NIL) {
        tr->free_nodes = tr->nodes[n].next;
    } else {
        tr->nodes = grow(tr->nodes, &tr->cap_nodes, tr->n_nodes + 1, sizeof *tr->nodes);
        n = (uint32_t)tr->n_nodes++;
    }
    tr->nodes[n] = (Node){w, tr->pairs[p].head};
    tr->pairs[p].head = n;
}

/* Applies the pending changes of word w: counts move by the word's count, pairs that
 * grew are listed under w and marked for the heap. */
static void delta_flush(Trainer *tr, uint32_t w) {
    uint64_t wc = tr->words[w].count;
    for (int i = 0; i < tr->n_delta; i++) {
        int64_t n = tr->delta[i].n;
        if (n == 0) continue;
        uint32_t p = pair_get(tr, tr->delta[i].key);
        Pair *pp = &tr->pairs[p];
        if (n < 0) {
            pp->count -= (uint64_t)-n * wc;
            continue;
        }
        pp->count += (uint64_t)n * wc;
        if (pp->dirty != tr->tag) {
            pp->dirty = tr->tag;
            tr->dirty = grow(tr->dirty, &tr->cap_dirty, tr->n_dirty + 1, sizeof *tr->dirty);
            tr->dirty[tr->n_dirty++] = p;
        }
        if (pp->last_word != w) {
            pp->last_word = w;
            list_add(tr, p, w);
        }
    }
    tr->n_delta = 0;
}

static void delta_add(Trainer *tr, uint32_t w, uint64_t key, int64_t n) {
    for (int i = 0; i < tr->n_delta; i++)
        if (tr->delta[i].key == key) {
            tr->delta[i].n += n;
            return;
        }
    /* a long window overflows the list: flushing early is still exact, only less
     * cancels */
    if (tr->n_delta == DELTA_CAP) delta_flush(tr, w);
    tr->delta[tr->n_delta++] = (Delta){key, n};
}

/* Adds sign x the pair counts of t[0 .. n), which begins and ends with whole runs. */
static void count_span(Trainer *tr, uint32_t w, const int32_t *t, size_t n, int64_t sign) {
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && t[j] == t[i]) j++;
        if (j - i >= 2) delta_add(tr, w, pair_key(t[i], t[i]), sign * (int64_t)((j - i) / 2));
        if (j < n) delta_add(tr, w, pair_key(t[j - 1], t[j]), sign);
        i = j;
    }
}

/* First occurrence of (a, b) in t[from .. n), or n. */
static size_t find_pair(const int32_t *t, size_t n, size_t from, int32_t a, int32_t b) {
    for (size_t i = from; i + 1 < n; i++)
        if (t[i] == a && t[i + 1] == b) return i;
    return n;
}

/* Merges every occurrence of (a, b) in word w into c, window by window (see the top of
 * the file), compacting the word in place: rd is the first old token not yet consumed,
 * wr the first free slot, and wr <= rd throughout. */
static void merge_word(Trainer *tr, uint32_t w, int32_t a, int32_t b, int32_t c) {
    int32_t *t = tr->tok + tr->off[w];
    size_t n = tr->len[w], rd = 0, wr = 0;
    size_t p = find_pair(t, n, 0, a, b);
    while (p < n) {
        size_t s = p ? p - 1 : 0, e, q = p;
        while (s > 0 && t[s - 1] == t[s]) s--;
        /* the window of an occurrence at or before e + 1 would overlap: join it */
        for (;;) {
            e = q + 1;
            if (e + 1 < n) {
                e++;
                while (e + 1 < n && t[e + 1] == t[e]) e++;
            }
            q = find_pair(t, n, q + 2, a, b);
            if (q >= n || q > e + 1) break;
        }
        count_span(tr, w, t + s, e + 1 - s, -1);
        memmove(t + wr, t + rd, (s - rd) * sizeof *t);
        wr += s - rd;
        size_t start = wr;
        /* no occurrence starts in [s, p), so scanning the window alone finds them all */
        for (size_t i = s; i <= e;) {
            if (i < e && t[i] == a && t[i + 1] == b) {
                t[wr++] = c;
                i += 2;
            } else {
                t[wr++] = t[i++];
            }
        }
        count_span(tr, w, t + start, wr - start, 1);
        rd = e + 1;
        p = q;
    }
    memmove(t + wr, t + rd, (n - rd) * sizeof *t);
    tr->len[w] = wr + n - rd;
    delta_flush(tr, w);
}

/* Pushes the pairs that grew this step; pairs below 2 can never be merged and stay out
 * until they grow. */
static void queue_dirty(Trainer *tr) {
    for (size_t i = 0; i < tr->n_dirty; i++) {
        const Pair *p = &tr->pairs[tr->dirty[i]];
        if (p->count >= 2) heap_push(tr, p->count, p->key);
    }
    tr->n_dirty = 0;
}

/* The best pair with count >= 2, or NIL; its entry stays on top of the heap. */
static uint32_t best_pair(Trainer *tr) {
    while (tr->n_heap > 0) {
        HeapItem top = tr->heap[0];
        uint32_t p = pair_get(tr, top.key);
        uint64_t count = tr->pairs[p].count;
        if (count == top.count) return p;
        heap_pop(tr);
        if (count >= 2) heap_push(tr, count, top.key);
    }
    return NIL;
}

static int check_args(const BpeWord *words, size_t n_words, int n_merges, int32_t (*merges)[2]) {
    if (n_merges < 0) return gpt_error("bpe_learn: n_merges is %d, must be >= 0", n_merges);
    if (n_merges > INT32_MAX - 256)
        return gpt_error("bpe_learn: n_merges %d is too large for 32-bit token ids", n_merges);
    if (n_merges > 0 && !merges) return gpt_error("bpe_learn: merges is NULL");
    if (n_words > 0 && !words) return gpt_error("bpe_learn: words is NULL but n_words is %zu", n_words);
    size_t total = 0;
    for (size_t w = 0; w < n_words; w++) {
        if (words[w].len == 0) return gpt_error("bpe_learn: word %zu is empty (len 0)", w);
        if (!words[w].bytes) return gpt_error("bpe_learn: word %zu has NULL bytes", w);
        if (words[w].len > BPE_MAX_TOTAL_BYTES - total)
            return gpt_error("bpe_learn: the words hold more than %zu bytes", BPE_MAX_TOTAL_BYTES);
        total += words[w].len;
    }
    return 0;
}

static void trainer_free(Trainer *tr) {
    free(tr->tok);
    free(tr->off);
    free(tr->len);
    free(tr->seen);
    free(tr->pairs);
    hm_free(&tr->index);
    free(tr->nodes);
    free(tr->heap);
    free(tr->dirty);
}

int bpe_learn(const BpeWord *words, size_t n_words, int n_merges, int32_t (*merges)[2],
              void (*progress)(int done, int total, void *ctx), void *ctx) {
    if (check_args(words, n_words, n_merges, merges)) return -1;
    Trainer tr = {.words = words, .free_nodes = NIL, .tag = 1};
    size_t total = 0;
    for (size_t w = 0; w < n_words; w++) total += words[w].len;
    tr.tok = xmalloc(total * sizeof *tr.tok);
    tr.off = xmalloc(n_words * sizeof *tr.off);
    tr.len = xmalloc(n_words * sizeof *tr.len);
    tr.seen = xcalloc(n_words, sizeof *tr.seen);
    hm_init(&tr.index, 1024);

    size_t at = 0;
    for (size_t w = 0; w < n_words; w++) {
        tr.off[w] = at;
        tr.len[w] = words[w].len;
        for (size_t i = 0; i < words[w].len; i++) tr.tok[at + i] = words[w].bytes[i];
        at += words[w].len;
        if (words[w].count == 0) continue;
        count_span(&tr, (uint32_t)w, tr.tok + tr.off[w], tr.len[w], 1);
        delta_flush(&tr, (uint32_t)w);
    }
    queue_dirty(&tr);

    int done = 0, reported = -1;
    while (done < n_merges) {
        uint32_t best = best_pair(&tr);
        if (best == NIL) break;
        heap_pop(&tr);
        int32_t a = (int32_t)(tr.pairs[best].key >> 32), b = (int32_t)(uint32_t)tr.pairs[best].key;
        int32_t c = 256 + done;
        merges[done][0] = a;
        merges[done][1] = b;
        tr.tag = (uint32_t)done + 2;
        uint32_t node = tr.pairs[best].head;
        tr.pairs[best].head = NIL;
        while (node != NIL) {
            /* read the node, then recycle it: merge_word may take nodes */
            uint32_t w = tr.nodes[node].word, next = tr.nodes[node].next;
            tr.nodes[node].next = tr.free_nodes;
            tr.free_nodes = node;
            if (tr.seen[w] != tr.tag) {
                tr.seen[w] = tr.tag;
                merge_word(&tr, w, a, b, c);
            }
            node = next;
        }
        queue_dirty(&tr);
        done++;
        if (progress && done % PROGRESS_EVERY == 0) {
            progress(done, n_merges, ctx);
            reported = done;
        }
    }
    if (progress && reported != done) progress(done, n_merges, ctx);
    trainer_free(&tr);
    return done;
}
