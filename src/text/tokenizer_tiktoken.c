/* tokenizer_tiktoken.c: GPT-2's vocabulary from tiktoken's rank file (tokenizer.h).
 *
 * The file only ranks tokens (base64 bytes and a rank a line), so each token's merge is
 * found by running BPE over its bytes with the lower-ranked tokens until two parts
 * remain (tiktoken's rule). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "tokenizer_vocab.h"

static int base64_value(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Standard base64 with padding; -1 on anything else. */
static int base64_decode(const char *s, size_t n, uint8_t *out, size_t *out_len) {
    if (n == 0 || n % 4) return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        for (int j = 0; j < 4; j++) {
            v[j] = s[i + j] == '=' && i + 4 == n && j >= 2 ? 0 : base64_value((unsigned char)s[i + j]);
            if (v[j] < 0) return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[k++] = (uint8_t)(w >> 16);
        if (s[i + 2] != '=') out[k++] = (uint8_t)(w >> 8);
        if (s[i + 3] != '=') out[k++] = (uint8_t)w;
    }
    *out_len = k;
    return 0;
}

/* The merge that forms token `rank`: BPE over its bytes with concatenation ranks below
 * `rank` (tiktoken's rule), which must leave exactly two parts. */
static int derive_merge(const Vocab *v, int32_t rank, int32_t out[3], int32_t *part, size_t *start) {
    const uint8_t *p = v->bytes + v->offsets[rank];
    size_t n = vocab_len(v, rank), parts = n;
    for (size_t i = 0; i <= n; i++) start[i] = i;
    for (;;) {
        int32_t best = -1;
        size_t at = 0;
        for (size_t i = 0; i + 1 < parts; i++) {
            int32_t r = vocab_find(v, p + start[i], start[i + 2] - start[i]);
            if (r >= 0 && r < rank && (best < 0 || r < best)) best = r, at = i;
        }
        if (best < 0) break;
        memmove(start + at + 1, start + at + 2, (parts - at - 1) * sizeof *start);
        parts--;
    }
    if (parts != 2) return -1;
    for (int j = 0; j < 2; j++) part[j] = vocab_find(v, p + start[j], start[j + 1] - start[j]);
    out[0] = part[0], out[1] = part[1], out[2] = rank;
    return 0;
}

Tokenizer *tokenizer_import_tiktoken(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return gpt_error("%s: cannot open: %s", path, strerror(errno)), NULL;
    Vocab v;
    vocab_init(&v);
    char line[4096];
    int lineno = 0, bad = 0;
    while (!bad && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0]) continue;
        char *sp = strchr(line, ' ');
        uint8_t bytes[3072];
        size_t n;
        long rank;
        if (!sp || base64_decode(line, (size_t)(sp - line), bytes, &n) || parse_long(sp + 1, &rank) ||
            rank != v.n)
            bad = gpt_error("%s:%d: expected 'BASE64 RANK' with rank %d (ranks count up from 0)", path, lineno, v.n);
        else if (vocab_find(&v, bytes, n) >= 0)
            bad = gpt_error("%s:%d: token repeats an earlier one", path, lineno);
        else
            vocab_add(&v, bytes, n);
    }
    fclose(f);
    Tokenizer *t = NULL;
    if (!bad && v.n < 256) gpt_error("%s: %d tokens; a byte-level vocabulary needs at least 256", path, v.n), bad = 1;
    if (!bad) {
        int32_t(*m3)[3] = xmalloc((size_t)v.n * sizeof *m3);
        size_t maxlen = 0;
        for (int i = 0; i < v.n; i++) maxlen = vocab_len(&v, i) > maxlen ? vocab_len(&v, i) : maxlen;
        size_t *start = xmalloc((maxlen + 2) * sizeof *start);
        int n_merges = 0;
        for (int32_t r = 0; r < v.n && !bad; r++) {
            int32_t part[2];
            if (vocab_len(&v, r) < 2) continue;
            if (derive_merge(&v, r, m3[n_merges], part, start))
                bad = gpt_error("%s: token of rank %d is not a merge of two lower-ranked tokens", path, r);
            else
                n_merges++;
        }
        if (!bad) t = vocab_finish_gpt2(&v, m3, n_merges);
        free(start);
        free(m3);
    }
    vocab_free(&v);
    return t;
}

