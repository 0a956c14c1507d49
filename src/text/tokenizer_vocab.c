/* tokenizer_vocab.c: building a vocabulary token by token (tokenizer_vocab.h), and the
 * two tokenizers built that way from merges alone: a freshly trained one
 * (tokenizer_from_merges) and GPT-2's, which the imports finish. */
#include "tokenizer_vocab.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

void vocab_init(Vocab *v) {
    memset(v, 0, sizeof *v);
    v->offsets = xmalloc(sizeof *v->offsets);
    v->offsets[0] = 0;
    hm_init(&v->by_bytes, 1024);
}

void vocab_free(Vocab *v) {
    free(v->bytes);
    free(v->offsets);
    hm_free(&v->by_bytes);
}

int32_t vocab_find(const Vocab *v, const uint8_t *p, size_t n) {
    uint64_t h = hash_bytes(p, n);
    for (const int64_t *s = hm_get(&v->by_bytes, h); s; s = hm_get_next(&v->by_bytes, h, s)) {
        int32_t id = (int32_t)*s;
        if ((size_t)(v->offsets[id + 1] - v->offsets[id]) == n && !memcmp(v->bytes + v->offsets[id], p, n))
            return id;
    }
    return -1;
}

void vocab_add(Vocab *v, const uint8_t *p, size_t n) {
    if (v->n + 1 >= v->cap) {
        v->cap = v->cap ? 2 * v->cap : 1024;
        v->offsets = xrealloc(v->offsets, ((size_t)v->cap + 1) * sizeof *v->offsets);
    }
    while (v->nbytes + n > v->bytes_cap) {
        v->bytes_cap = v->bytes_cap ? 2 * v->bytes_cap : 1 << 16;
        v->bytes = xrealloc(v->bytes, v->bytes_cap);
    }
    memcpy(v->bytes + v->nbytes, p, n);
    v->nbytes += n;
    hm_put_dup(&v->by_bytes, hash_bytes(p, n), v->n);
    v->offsets[++v->n] = (int64_t)v->nbytes;
}

size_t vocab_len(const Vocab *v, int32_t id) { return (size_t)(v->offsets[id + 1] - v->offsets[id]); }

static const char *const special_defaults[] = {TOK_EOT, TOK_START, TOK_DELIM, TOK_EXTRACT};

Tokenizer *tokenizer_from_merges(const int32_t (*merges)[2], int n_merges) {
    Vocab v;
    vocab_init(&v);
    for (int b = 0; b < 256; b++) vocab_add(&v, (const uint8_t[]){(uint8_t)b}, 1);
    int32_t(*m3)[3] = xmalloc(((size_t)n_merges + 1) * sizeof *m3);
    uint8_t *buf = NULL;
    size_t cap = 0;
    for (int k = 0; k < n_merges; k++) {
        int32_t l = merges[k][0], r = merges[k][1];
        if (l < 0 || r < 0 || l >= v.n || r >= v.n) {
            gpt_error("merge %d (%d, %d) names a token that does not exist yet", k, l, r);
            free(buf), free(m3), vocab_free(&v);
            return NULL;
        }
        size_t n = vocab_len(&v, l) + vocab_len(&v, r);
        if (n > cap) buf = xrealloc(buf, cap = 2 * n);
        memcpy(buf, v.bytes + v.offsets[l], vocab_len(&v, l));
        memcpy(buf + vocab_len(&v, l), v.bytes + v.offsets[r], vocab_len(&v, r));
        m3[k][0] = l, m3[k][1] = r, m3[k][2] = v.n;
        vocab_add(&v, buf, n);
    }
    int32_t ids[4];
    for (int i = 0; i < 4; i++) ids[i] = v.n + i;
    Tokenizer *t = tokenizer_create(v.bytes, v.offsets, v.n, (const int32_t(*)[3])m3, n_merges,
                                    special_defaults, ids, 4);
    free(buf), free(m3), vocab_free(&v);
    return t;
}

Tokenizer *vocab_finish_gpt2(const Vocab *v, int32_t (*m3)[3], int n_merges) {
    const char *names[1] = {TOK_EOT};
    int32_t ids[1] = {v->n};
    return tokenizer_create(v->bytes, v->offsets, v->n, (const int32_t(*)[3])m3, n_merges, names, ids, 1);
}
