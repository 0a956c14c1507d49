/* prune.c: magnitude pruning and the pruning mask (see prune.h).
 *
 * A pool (all prunable tensors, or one of them) is pruned in three passes: copy the
 * magnitudes into one float buffer, select the k-th smallest t with Hoare's selection,
 * then zero, in buffer order, every entry below t and the first (k - count below t)
 * entries equal to t. The buffer is the only allocation besides the statistics: one
 * float per prunable entry (global) or per entry of the largest matrix (layer). */
#include "model/prune.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

const char *const prune_scope_names[] = {"global", "layer", NULL};

const char *prune_scope_name(PruneScope s) { return prune_scope_names[s]; }

int prune_is_prunable(const GPTTensor *t) {
    static const char *const suffixes[] = {".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight",
                                           ".mlp.c_proj.weight"};
    if (strncmp(t->name, "h.", 2) != 0) return 0;
    size_t len = strlen(t->name);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t sl = strlen(suffixes[i]);
        if (len > sl && !strcmp(t->name + len - sl, suffixes[i])) return 1;
    }
    return 0;
}

/* The k-th smallest (0-based) of a[0, n), reordering a (Wirth's form of Hoare's
 * selection, median-of-three pivot). Equal values stop both scans, so long runs of
 * equal magnitudes (the zeros of a pruned model) still split evenly. */
static float select_kth(float *a, size_t n, size_t k) {
    int64_t lo = 0, hi = (int64_t)n - 1, kk = (int64_t)k;
    while (lo < hi) {
        float x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi];
        float p = x < y ? (y < z ? y : x < z ? z : x) : (x < z ? x : y < z ? z : y);
        int64_t i = lo, j = hi;
        do {
            while (a[i] < p) i++;
            while (p < a[j]) j--;
            if (i <= j) {
                float t = a[i];
                a[i++] = a[j];
                a[j--] = t;
            }
        } while (i <= j);
        if (j < kk) lo = i;
        if (kk < i) hi = j;
    }
    return a[k];
}

/* Prunes the k smallest magnitudes of the pool made of the listed tensors. */
static void prune_pool(GPT *m, const int *tensors, int n_tensors, size_t n, size_t k, float *buf) {
    if (k == 0) return;
    size_t at = 0;
    for (int i = 0; i < n_tensors; i++) {
        const GPTTensor *t = &m->tensors[tensors[i]];
        const float *w = m->params + t->offset;
        for (size_t j = 0; j < t->numel; j++) buf[at++] = fabsf(w[j]);
    }
    float thr = select_kth(buf, n, k - 1);
    size_t below = 0;
    for (size_t j = 0; j < n; j++) below += buf[j] < thr;
    size_t ties = k - below; /* entries equal to thr to prune, the first ones in buffer order */
    for (int i = 0; i < n_tensors; i++) {
        const GPTTensor *t = &m->tensors[tensors[i]];
        float *w = m->params + t->offset;
        for (size_t j = 0; j < t->numel; j++) {
            float a = fabsf(w[j]);
            if (a < thr || (a == thr && ties && ties--)) w[j] = 0.0f;
        }
    }
}

static size_t count_zeros(const float *w, size_t n) {
    size_t z = 0;
    for (size_t j = 0; j < n; j++) z += w[j] == 0.0f;
    return z;
}

int prune_magnitude(GPT *m, double sparsity, PruneScope scope, PruneStats *out) {
    if (!(sparsity >= 0.0 && sparsity < 1.0)) return gpt_error("sparsity must be in [0, 1), got %g", sparsity);
    int *idx = xmalloc(sizeof(int) * (size_t)m->n_tensors), n_idx = 0;
    size_t total = 0, largest = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const GPTTensor *t = &m->tensors[i];
        if (!prune_is_prunable(t)) continue;
        const float *w = m->params + t->offset;
        for (size_t j = 0; j < t->numel; j++)
            if (!isfinite(w[j])) {
                free(idx);
                return gpt_error("cannot prune: %s[%zu] is %g", t->name, j, (double)w[j]);
            }
        idx[n_idx++] = i;
        total += t->numel;
        if (t->numel > largest) largest = t->numel;
    }
    size_t pruned = 0;
    if (scope == PRUNE_GLOBAL) {
        /* floor(S n) computed in double, as Python's math.floor(S * n) does */
        size_t k = (size_t)floor(sparsity * (double)total);
        float *buf = k ? xmalloc(sizeof(float) * total) : NULL;
        prune_pool(m, idx, n_idx, total, k, buf);
        free(buf);
        pruned = k;
    } else {
        float *buf = sparsity > 0.0 ? xmalloc(sizeof(float) * largest) : NULL;
        for (int i = 0; i < n_idx; i++) {
            size_t n = m->tensors[idx[i]].numel, k = (size_t)floor(sparsity * (double)n);
            prune_pool(m, &idx[i], 1, n, k, buf);
            pruned += k;
        }
        free(buf);
    }
    if (out) {
        *out = (PruneStats){.n_prunable = total, .n_pruned = pruned, .n_tensors = m->n_tensors,
                            .zeros = xcalloc((size_t)m->n_tensors, sizeof(size_t))};
        for (int i = 0; i < n_idx; i++) {
            const GPTTensor *t = &m->tensors[idx[i]];
            out->zeros[idx[i]] = count_zeros(m->params + t->offset, t->numel);
            out->n_zero += out->zeros[idx[i]];
        }
        out->sparsity = total ? (double)out->n_zero / (double)total : 0.0;
    }
    free(idx);
    return 0;
}

void prune_stats_free(PruneStats *s) {
    if (!s) return;
    free(s->zeros);
    s->zeros = NULL;
}

double prune_sparsity(const GPT *m) {
    size_t zeros = 0, total = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const GPTTensor *t = &m->tensors[i];
        if (!prune_is_prunable(t)) continue;
        zeros += count_zeros(m->params + t->offset, t->numel);
        total += t->numel;
    }
    return total ? (double)zeros / (double)total : 0.0;
}

struct PruneMask {
    size_t n_words;
    uint64_t *bits; /* bit i of word i / 64: parameter i is held at zero */
};

PruneMask *prune_mask_create(const GPT *m) {
    PruneMask *k = xmalloc(sizeof *k);
    k->n_words = (m->n_params + 63) / 64;
    k->bits = xcalloc(k->n_words, sizeof(uint64_t));
    for (int i = 0; i < m->n_tensors; i++) {
        const GPTTensor *t = &m->tensors[i];
        if (!prune_is_prunable(t)) continue;
        for (size_t j = t->offset; j < t->offset + t->numel; j++)
            if (m->params[j] == 0.0f) k->bits[j / 64] |= (uint64_t)1 << (j % 64);
    }
    return k;
}

void prune_mask_apply(const PruneMask *k, float *params) {
    if (!k) return;
    for (size_t w = 0; w < k->n_words; w++)
        for (uint64_t b = k->bits[w]; b; b &= b - 1) /* each set bit, lowest first */
            params[w * 64 + (size_t)__builtin_ctzll(b)] = 0.0f;
}

void prune_mask_free(PruneMask *k) {
    if (!k) return;
    free(k->bits);
    free(k);
}
