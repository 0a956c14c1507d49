/* hashmap.h: an open-addressing hash map from 64-bit keys to 64-bit values.
 *
 * Linear probing over a power-of-two table that doubles at 50% load; one key value,
 * HM_EMPTY, is reserved. Byte strings are keyed by hash_bytes() and the caller keeps
 * the bytes to confirm a hit (two strings can share a 64-bit hash). */
#ifndef GPT_HASHMAP_H
#define GPT_HASHMAP_H

#include <stddef.h>
#include <stdint.h>

#define HM_EMPTY UINT64_MAX

typedef struct {
    uint64_t *keys;
    int64_t *vals;
    size_t cap, n;
} HashMap;

void hm_init(HashMap *m, size_t expected);
void hm_free(HashMap *m);
void hm_clear(HashMap *m);
/* The value slot of key, or NULL. */
int64_t *hm_get(const HashMap *m, uint64_t key);
/* Inserts key (value v) unless present; returns its value slot either way. */
int64_t *hm_put(HashMap *m, uint64_t key, int64_t v);
/* Probing continuation for keys that share a hash: the next slot with the same key
 * after `slot`, or NULL. Used by byte-string maps to walk colliding entries. */
int64_t *hm_get_next(const HashMap *m, uint64_t key, const int64_t *slot);
/* Inserts a further entry for a key already present (byte-string collisions). */
int64_t *hm_put_dup(HashMap *m, uint64_t key, int64_t v);

uint64_t hash_bytes(const uint8_t *p, size_t n);

#endif
