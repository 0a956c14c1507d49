/* infer.c: the cached forward pass and sampling (see infer.h).
 *
 * The block mirrors model.c's training forward pass without dropout and without keeping
 * activations: rows are the new tokens only, and attention reads the cache. With one new
 * token every product is a matrix-vector product (matmul_forward switches to sgemv), so
 * decoding reads each weight once per token: its speed is bound by memory bandwidth. */
#include "model/infer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "cpu/blas.h"
#include "cpu/kernels.h"

GPTCache *cache_create(const GPTConfig *cfg) {
    GPTCache *c = xcalloc(1, sizeof *c);
    size_t T = (size_t)cfg->n_ctx, C = (size_t)cfg->n_embd, F = (size_t)cfg->n_ffn;
    c->capacity = cfg->n_ctx;
    c->k = xalloc_floats((size_t)cfg->n_layer * T * C);
    c->v = xalloc_floats((size_t)cfg->n_layer * T * C);
    c->att_slots = compute_threads();
    c->buf = xalloc_floats(T * (C * 7 + 2 * F + 2) + T * (size_t)c->att_slots);
    float *p = c->buf;
    c->x = p, p += T * C;
    c->a = p, p += T * C;
    c->qkv = p, p += 3 * T * C;
    c->y = p, p += T * C;
    c->tmp = p, p += T * C;
    c->f = p, p += T * F;
    c->g = p, p += T * F;
    c->mean = p, p += T;
    c->rstd = p, p += T;
    c->att = p;
    return c;
}

void cache_free(GPTCache *c) {
    if (!c) return;
    free(c->k);
    free(c->v);
    free(c->buf);
    free(c);
}

/* Rows tokens[0..n) after the cache's len positions, as n_seg segments of seg_len[s]
 * rows: each segment continues the cached prefix on its own (its rows are at positions
 * len, len + 1, ... and attend to the prefix and to the rows of their segment before
 * them). Every product runs on all n rows at once; attention runs a segment at a time,
 * with the segment's keys and values written after the prefix. One segment stays
 * appended; with several the cache keeps the prefix only. */
static void forward_rows(const GPT *m, GPTCache *c, const int *tokens, int n, const int *seg_len, int n_seg,
                         float *logits_last, float *logits_all) {
    const GPTConfig *cfg = &m->cfg;
    int C = cfg->n_embd, F = cfg->n_ffn, V = cfg->vocab_size, pos0 = c->len;
    size_t nC = (size_t)n * C;
    int pre = cfg->ln == GPT_LN_PRE, bf16 = gpt_precision(m) == PRECISION_BF16;
    gpt_refresh_weights(m);
    for (int s = 0, t = 0; s < n_seg; s++)
        for (int j = 0; j < seg_len[s]; j++, t++) {
            const float *te = m->w.wte + (size_t)tokens[t] * C, *pe = m->w.wpe + (size_t)(pos0 + j) * C;
            for (int i = 0; i < C; i++) c->x[(size_t)t * C + i] = te[i] + pe[i];
        }
    for (int l = 0; l < cfg->n_layer; l++) {
        const GPTLayerWeights *w = &m->w.h[l];
        float *K = c->k + (size_t)l * c->capacity * C, *Vc = c->v + (size_t)l * c->capacity * C;
        const float *attn_in = c->x;
        if (pre) {
            layernorm_forward(c->a, c->mean, c->rstd, c->x, w->ln_1_w, w->ln_1_b, n, C, cfg->ln_eps);
            attn_in = c->a;
        }
        gpt_matmul_forward(m, c->qkv, attn_in, w->c_attn_w, w->c_attn_b, n, C, 3 * C);
        gpt_round_operands(m, c->qkv, 3 * nC); /* so the cache holds bf16 keys and values */
        for (int s = 0, t0 = 0; s < n_seg; t0 += seg_len[s++]) {
            for (int j = 0; j < seg_len[s]; j++) {
                const float *q = c->qkv + (size_t)(t0 + j) * 3 * C;
                memcpy(K + (size_t)(pos0 + j) * C, q + C, (size_t)C * sizeof(float));
                memcpy(Vc + (size_t)(pos0 + j) * C, q + 2 * C, (size_t)C * sizeof(float));
            }
            attention_cached(c->y + (size_t)t0 * C, c->qkv + (size_t)t0 * 3 * C, K, Vc, pos0, seg_len[s], C,
                             cfg->n_head, c->att, c->att_slots, bf16);
        }
        gpt_matmul_forward(m, c->tmp, c->y, w->attn_proj_w, w->attn_proj_b, n, C, C);
        vec_add(c->tmp, c->x, nC); /* res1 */
        if (pre) { /* x = res1, a = LN2(res1) */
            memcpy(c->x, c->tmp, nC * sizeof(float));
            layernorm_forward(c->a, c->mean, c->rstd, c->x, w->ln_2_w, w->ln_2_b, n, C, cfg->ln_eps);
        } else { /* x = a = LN1(res1) */
            layernorm_forward(c->a, c->mean, c->rstd, c->tmp, w->ln_1_w, w->ln_1_b, n, C, cfg->ln_eps);
            memcpy(c->x, c->a, nC * sizeof(float));
        }
        gpt_matmul_forward(m, c->f, c->a, w->c_fc_w, w->c_fc_b, n, C, F);
        gelu_forward(c->g, c->f, (size_t)n * F);
        gpt_matmul_forward(m, c->tmp, c->g, w->mlp_proj_w, w->mlp_proj_b, n, F, C);
        vec_add(c->x, c->tmp, nC); /* res2 */
        if (!pre) {
            layernorm_forward(c->a, c->mean, c->rstd, c->x, w->ln_2_w, w->ln_2_b, n, C, cfg->ln_eps);
            memcpy(c->x, c->a, nC * sizeof(float));
        }
    }
    if (pre) {
        layernorm_forward(c->a, c->mean, c->rstd, c->x, m->w.ln_f_w, m->w.ln_f_b, n, C, cfg->ln_eps);
        memcpy(c->x, c->a, nC * sizeof(float));
    }
    if (n_seg == 1) c->len += n;
    if (logits_all) {
        gpt_matmul_forward(m, logits_all, c->x, m->w.wte, NULL, n, C, V);
        if (logits_last) memcpy(logits_last, logits_all + (size_t)(n - 1) * V, (size_t)V * sizeof(float));
    } else {
        gpt_matmul_forward(m, logits_last, c->x + (size_t)(n - 1) * C, m->w.wte, NULL, 1, C, V);
    }
}

void gpt_forward_cached(const GPT *m, GPTCache *c, const int *tokens, int n, float *logits_last,
                        float *logits_all) {
    forward_rows(m, c, tokens, n, &n, 1, logits_last, logits_all);
}

void gpt_forward_branches(const GPT *m, GPTCache *c, const int *tokens, const int *branch_len, int n_branches,
                          float *logits) {
    int n = 0, prefix = c->len;
    for (int b = 0; b < n_branches; b++) n += branch_len[b];
    forward_rows(m, c, tokens, n, branch_len, n_branches, NULL, logits);
    c->len = prefix; /* a single branch stays appended in forward_rows: the prefix only, as for several */
}

double logprob_of(const float *z, int V, int target) {
    float mx = z[0];
    for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    double sum = 0.0;
    for (int v = 0; v < V; v++) sum += exp((double)(z[v] - mx));
    return (double)(z[target] - mx) - log(sum);
}

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

int sample_token(float *z, int V, const SampleOptions *o, Rng *rng) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (z[i] > z[best]) best = i;
    if (o->temperature == 0.0f) return best;
    float mx = z[best], sum = 0.0f;
    for (int i = 0; i < V; i++) sum += z[i] = kern_expf((z[i] - mx) / o->temperature);
    for (int i = 0; i < V; i++) z[i] /= sum;
    /* the smallest probability kept: the k-th largest, and the one that completes top_p */
    float keep = 0.0f;
    if ((o->top_k > 0 && o->top_k < V) || o->top_p < 1.0f) {
        float *sorted = xmalloc((size_t)V * sizeof *sorted);
        memcpy(sorted, z, (size_t)V * sizeof *sorted);
        qsort(sorted, (size_t)V, sizeof *sorted, cmp_desc);
        int k = o->top_k > 0 && o->top_k < V ? o->top_k : V;
        keep = sorted[k - 1];
        float cum = 0.0f;
        for (int i = 0; i < k; i++)
            if ((cum += sorted[i]) >= o->top_p) {
                keep = sorted[i] > keep ? sorted[i] : keep;
                break;
            }
        free(sorted);
    }
    double total = 0.0;
    for (int i = 0; i < V; i++) total += z[i] >= keep ? z[i] : 0.0f;
    double u = rng_uniform(rng) * total, acc = 0.0;
    int last = best;
    for (int i = 0; i < V; i++) {
        if (z[i] < keep) continue;
        last = i;
        if ((acc += z[i]) > u) return i;
    }
    return last; /* rounding left u beyond the sum */
}
