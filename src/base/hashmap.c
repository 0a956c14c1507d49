/* hashmap.c: open addressing with linear probing (see hashmap.h). */
#include "base/hashmap.h"

#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/util.h"

static size_t slot_of(const HashMap *m, uint64_t key) { return rng_mix64(key) & (m->cap - 1); }

static void alloc_table(HashMap *m, size_t cap) {
    m->cap = cap;
    m->n = 0;
    m->keys = xmalloc(cap * sizeof *m->keys);
    m->vals = xmalloc(cap * sizeof *m->vals);
    memset(m->keys, 0xff, cap * sizeof *m->keys); /* HM_EMPTY */
}

void hm_init(HashMap *m, size_t expected) {
    size_t cap = 16;
    while (cap < 2 * expected) cap *= 2;
    alloc_table(m, cap);
}

void hm_free(HashMap *m) {
    free(m->keys);
    free(m->vals);
    m->keys = NULL;
    m->vals = NULL;
    m->cap = m->n = 0;
}

void hm_clear(HashMap *m) {
    memset(m->keys, 0xff, m->cap * sizeof *m->keys);
    m->n = 0;
}

static int64_t *insert_new(HashMap *m, uint64_t key, int64_t v);

static void grow(HashMap *m) {
    HashMap old = *m;
    alloc_table(m, old.cap * 2);
    for (size_t i = 0; i < old.cap; i++)
        if (old.keys[i] != HM_EMPTY) insert_new(m, old.keys[i], old.vals[i]);
    hm_free(&old);
}

/* Appends an entry at the end of key's probe run (after any equal keys). */
static int64_t *insert_new(HashMap *m, uint64_t key, int64_t v) {
    if (2 * (m->n + 1) > m->cap) grow(m);
    size_t i = slot_of(m, key);
    while (m->keys[i] != HM_EMPTY) i = (i + 1) & (m->cap - 1);
    m->keys[i] = key;
    m->vals[i] = v;
    m->n++;
    return &m->vals[i];
}

static int64_t *probe_from(const HashMap *m, uint64_t key, size_t i) {
    for (; m->keys[i] != HM_EMPTY; i = (i + 1) & (m->cap - 1))
        if (m->keys[i] == key) return &m->vals[i];
    return NULL;
}

int64_t *hm_get(const HashMap *m, uint64_t key) { return probe_from(m, key, slot_of(m, key)); }

int64_t *hm_get_next(const HashMap *m, uint64_t key, const int64_t *slot) {
    return probe_from(m, key, ((size_t)(slot - m->vals) + 1) & (m->cap - 1));
}

int64_t *hm_put(HashMap *m, uint64_t key, int64_t v) {
    int64_t *p = hm_get(m, key);
    return p ? p : insert_new(m, key, v);
}

int64_t *hm_put_dup(HashMap *m, uint64_t key, int64_t v) { return insert_new(m, key, v); }

uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0x243F6A8885A308D3ULL ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = rng_mix64(h ^ w) + 0x9E3779B97F4A7C15ULL;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = rng_mix64(h ^ w ^ ((uint64_t)n << 56));
    return h == HM_EMPTY ? h - 1 : h;
}
