/* lora.c: low-rank adapters (see lora.h). The layout walk mirrors model.c's: one function
 * counts, builds the tensor table and points the views, so they cannot disagree. */
#include "model/lora.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/util.h"
#include "cpu/kernels.h"

static const char *const site_name[LORA_SITES] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};

static int site_adapted(unsigned targets, int site) {
    return site <= LORA_ATTN_PROJ ? (targets & LORA_ATTN) != 0 : (targets & LORA_MLP) != 0;
}

/* (Cout, Cin) of a site's matrix */
static void site_shape(const GPTConfig *c, int site, int *cout, int *cin) {
    int C = c->n_embd, F = c->n_ffn;
    static const int mult_out[LORA_SITES] = {3, 1, 0, 1}; /* 0: F */
    *cout = mult_out[site] ? mult_out[site] * C : F;
    *cin = site == LORA_MLP_PROJ ? F : C;
}

static size_t layout(GPTLora *lo, const GPTConfig *c, float *base, LoraPair (*view)[LORA_SITES], int fill_table) {
    size_t off = 0;
    int n = 0;
    for (int l = 0; l < c->n_layer; l++)
        for (int s = 0; s < LORA_SITES; s++) {
            if (view) view[l][s].a = view[l][s].b = NULL;
            if (!site_adapted(lo->targets, s)) continue;
            int cout, cin;
            site_shape(c, s, &cout, &cin);
            for (int ab = 0; ab < 2; ab++) {
                int d0 = ab ? cout : lo->rank, d1 = ab ? lo->rank : cin;
                if (fill_table) {
                    GPTTensor *t = &lo->tensors[n];
                    snprintf(t->name, sizeof t->name, "h.%d.%s.lora_%c", l, site_name[s], ab ? 'B' : 'A');
                    t->ndim = 2, t->shape[0] = d0, t->shape[1] = d1;
                    t->offset = off, t->numel = (size_t)d0 * d1;
                    t->decay = 1;
                    t->init = ab ? INIT_ZERO : INIT_NORMAL;
                }
                if (view) *(ab ? &view[l][s].b : &view[l][s].a) = base + off;
                off += (size_t)d0 * d1;
                n++;
            }
        }
    lo->n_tensors = n;
    return off;
}

int lora_parse_targets(const char *s, unsigned *out) {
    unsigned t = 0;
    const char *p = s;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len == 4 && !strncmp(p, "attn", 4)) t |= LORA_ATTN;
        else if (len == 3 && !strncmp(p, "mlp", 3)) t |= LORA_MLP;
        else return gpt_error("--lora-targets: unknown target '%.*s' in '%s' (expected attn, mlp or attn,mlp)",
                              (int)len, p, s);
        p += len + (p[len] == ',');
    }
    if (!t) return gpt_error("--lora-targets: empty (expected attn, mlp or attn,mlp)");
    *out = t;
    return 0;
}

const char *lora_targets_name(unsigned targets, char *buf, size_t size) {
    snprintf(buf, size, "%s%s%s", targets & LORA_ATTN ? "attn" : "", targets == (LORA_ATTN | LORA_MLP) ? "," : "",
             targets & LORA_MLP ? "mlp" : "");
    return buf;
}

GPTLora *lora_create(const GPTConfig *c, int max_rows, int rank, float alpha, unsigned targets) {
    GPTLora *lo = xcalloc(1, sizeof *lo);
    lo->rank = rank, lo->alpha = alpha, lo->targets = targets, lo->n_layer = c->n_layer;
    lo->n_params = layout(lo, c, NULL, NULL, 0);
    lo->tensors = xcalloc((size_t)lo->n_tensors, sizeof *lo->tensors);
    lo->params = xalloc_floats(lo->n_params);
    lo->grads = xalloc_floats(lo->n_params);
    lo->w = xcalloc((size_t)c->n_layer, sizeof *lo->w);
    lo->g = xcalloc((size_t)c->n_layer, sizeof *lo->g);
    layout(lo, c, lo->params, lo->w, 1);
    layout(lo, c, lo->grads, lo->g, 0);
    lo->u = xalloc_floats((size_t)max_rows * rank);
    lo->du = xalloc_floats((size_t)max_rows * rank);
    return lo;
}

void lora_free(GPTLora *lo) {
    if (!lo) return;
    free(lo->tensors);
    free(lo->params);
    free(lo->grads);
    free(lo->w);
    free(lo->g);
    free(lo->u);
    free(lo->du);
    free(lo);
}

void lora_init(GPTLora *lo, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    for (int i = 0; i < lo->n_tensors; i++) {
        const GPTTensor *t = &lo->tensors[i];
        float *p = lo->params + t->offset, bound = 1.0f / sqrtf((float)t->shape[1]);
        for (size_t j = 0; j < t->numel; j++)
            p[j] = t->init == INIT_ZERO ? 0.0f : bound * (2.0f * rng_uniform(&rng) - 1.0f);
    }
}

static float scale(const GPTLora *lo) { return lo->alpha / (float)lo->rank; }

void lora_forward(GPTLora *lo, int layer, int site, float *out, const float *in, int N, int Cin, int Cout) {
    const LoraPair *p = &lo->w[layer][site];
    if (!p->a) return;
    int r = lo->rank;
    matmul_forward(lo->u, in, p->a, NULL, N, Cin, r);                     /* u (N,r) = in A^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, Cout, r, scale(lo), lo->u, r, p->b, r, 1.0f, out,
                Cout);                                                     /* out += s u B^T */
}

void lora_backward(GPTLora *lo, int layer, int site, float *din, const float *dout, const float *in, int N,
                   int Cin, int Cout) {
    const LoraPair *p = &lo->w[layer][site], *g = &lo->g[layer][site];
    if (!p->a) return;
    int r = lo->rank;
    float s = scale(lo);
    matmul_forward(lo->u, in, p->a, NULL, N, Cin, r);                     /* u = in A^T */
    /* dB (Cout,r) += s dout^T u */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Cout, r, N, s, dout, Cout, lo->u, r, 1.0f, g->b, r);
    /* du (N,r) = s dout B */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, r, Cout, s, dout, Cout, p->b, r, 0.0f, lo->du, r);
    /* dA (r,Cin) += du^T in; din += du A */
    matmul_backward(din, g->a, NULL, lo->du, in, p->a, N, Cin, r, 1);
}

void lora_merge(const GPTLora *lo, GPT *m) {
    for (int l = 0; l < lo->n_layer; l++) {
        GPTLayerWeights *h = &m->w.h[l];
        float *w[LORA_SITES] = {h->c_attn_w, h->attn_proj_w, h->c_fc_w, h->mlp_proj_w};
        for (int s = 0; s < LORA_SITES; s++) {
            const LoraPair *p = &lo->w[l][s];
            if (!p->a) continue;
            int cout, cin;
            site_shape(&m->cfg, s, &cout, &cin);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, cin, lo->rank, scale(lo), p->b, lo->rank,
                        p->a, cin, 1.0f, w[s], cin);
        }
    }
}
