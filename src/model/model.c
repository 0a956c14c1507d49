/* model.c: the GPT: buffer layout, initialisation, forward and backward passes.
 *
 * One layout function walks the tensors in buffer order and serves three purposes:
 * counting (base NULL), building the tensor table, and pointing a GPTWeights view at a
 * buffer (parameters or gradients), so the order can never disagree between them.
 * The same holds for activations. Dropout masks come from per-row keys combined with
 * a "site" number (embedding, or layer l's attention/residual dropouts) so that the
 * backward pass regenerates exactly the forward masks. */
#include "model/model.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/util.h"
#include "cpu/blas.h"
#include "cpu/kernels.h"
#include "model/lora.h"
#include "model/token_grads.h"

/* Logits chunk of the vocabulary projection: at most this many floats. */
#define HEAD_CHUNK_FLOATS (1u << 23)

enum { SITE_EMBD = 0, SITE_ATTN = 1, SITE_RESID_ATTN = 2, SITE_RESID_MLP = 3 };
static uint64_t site(int layer, int which) { return 1 + (uint64_t)layer * 4 + (uint64_t)which; }

/* ---- parameter layout ---- */

typedef struct {
    float *base;
    GPTTensor *tab; /* NULL when only counting or only viewing */
    int n;
    size_t off;
} Layout;

static float *tensor(Layout *lay, int init, int d0, int d1, const char *fmt, int layer) {
    size_t numel = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    if (lay->tab) {
        GPTTensor *t = &lay->tab[lay->n];
        snprintf(t->name, sizeof t->name, fmt, layer);
        t->ndim = d1 ? 2 : 1;
        t->shape[0] = d0;
        t->shape[1] = d1;
        t->offset = lay->off;
        t->numel = numel;
        t->decay = t->ndim == 2;
        t->init = init;
    }
    float *p = lay->base ? lay->base + lay->off : NULL;
    lay->off += numel;
    lay->n++;
    return p;
}

/* Walks every tensor; fills w (if not NULL) with views into base. Returns the count. */
static size_t layout_params(const GPTConfig *c, float *base, GPTWeights *w, GPTTensor *tab,
                            int *n_tensors) {
    Layout lay = {base, tab, 0, 0};
    int C = c->n_embd, F = c->n_ffn;
    GPTWeights tmp = {0};
    GPTWeights *v = w ? w : &tmp;
    v->wte = tensor(&lay, INIT_NORMAL, c->vocab_size, C, "wte", 0);
    v->wpe = tensor(&lay, INIT_NORMAL, c->n_ctx, C, "wpe", 0);
    for (int l = 0; l < c->n_layer; l++) {
        GPTLayerWeights dummy, *h = w ? &w->h[l] : &dummy;
        h->ln_1_w = tensor(&lay, INIT_ONE, C, 0, "h.%d.ln_1.weight", l);
        h->ln_1_b = tensor(&lay, INIT_ZERO, C, 0, "h.%d.ln_1.bias", l);
        h->c_attn_w = tensor(&lay, INIT_NORMAL, 3 * C, C, "h.%d.attn.c_attn.weight", l);
        h->c_attn_b = tensor(&lay, INIT_ZERO, 3 * C, 0, "h.%d.attn.c_attn.bias", l);
        h->attn_proj_w = tensor(&lay, INIT_NORMAL_RESIDUAL, C, C, "h.%d.attn.c_proj.weight", l);
        h->attn_proj_b = tensor(&lay, INIT_ZERO, C, 0, "h.%d.attn.c_proj.bias", l);
        h->ln_2_w = tensor(&lay, INIT_ONE, C, 0, "h.%d.ln_2.weight", l);
        h->ln_2_b = tensor(&lay, INIT_ZERO, C, 0, "h.%d.ln_2.bias", l);
        h->c_fc_w = tensor(&lay, INIT_NORMAL, F, C, "h.%d.mlp.c_fc.weight", l);
        h->c_fc_b = tensor(&lay, INIT_ZERO, F, 0, "h.%d.mlp.c_fc.bias", l);
        h->mlp_proj_w = tensor(&lay, INIT_NORMAL_RESIDUAL, C, F, "h.%d.mlp.c_proj.weight", l);
        h->mlp_proj_b = tensor(&lay, INIT_ZERO, C, 0, "h.%d.mlp.c_proj.bias", l);
    }
    v->ln_f_w = v->ln_f_b = NULL;
    if (c->ln == GPT_LN_PRE) {
        v->ln_f_w = tensor(&lay, INIT_ONE, C, 0, "ln_f.weight", 0);
        v->ln_f_b = tensor(&lay, INIT_ZERO, C, 0, "ln_f.bias", 0);
    }
    if (n_tensors) *n_tensors = lay.n;
    return lay.off;
}

/* The per-layer tensor count of layout_params, with wte and wpe first. */
enum { TENSORS_BEFORE_LAYERS = 2, TENSORS_PER_LAYER = 12 };

/* ---- activation layout ---- */

static float *act(float *base, size_t *off, size_t n) {
    float *p = base ? base + *off : NULL;
    *off += n;
    return p;
}

/* Walks every activation for (max_batch, n_ctx) and `threads` attention scratch blocks;
 * fills a (its h, when not NULL, with the layers' views) with pointers into base (NULL:
 * counting). Returns the count. */
static size_t layout_acts(const GPTConfig *c, int max_batch, int threads, float *base, GPTActs *a) {
    size_t N = (size_t)max_batch * c->n_ctx, C = c->n_embd, F = c->n_ffn;
    size_t off = 0;
    int pre = c->ln == GPT_LN_PRE;
    a->head_rows = (int)(HEAD_CHUNK_FLOATS / (size_t)c->vocab_size);
    if (a->head_rows < 1) a->head_rows = 1;
    if ((size_t)a->head_rows > N) a->head_rows = (int)N;
    a->att_slots = threads;

    a->x0 = act(base, &off, N * C);
    const float *layer_in = a->x0;
    for (int l = 0; l < c->n_layer; l++) {
        GPTLayerActs dummy, *h = a->h ? &a->h[l] : &dummy;
        h->attn_in = pre ? act(base, &off, N * C) : (float *)layer_in;
        h->qkv = act(base, &off, 3 * N * C);
        h->att_lse = act(base, &off, N * c->n_head);
        h->atty = act(base, &off, N * C);
        h->res1 = act(base, &off, N * C);
        h->mlp_in = act(base, &off, N * C);
        h->fch = act(base, &off, N * F);
        h->res2 = act(base, &off, N * C);
        h->out = pre ? h->res2 : act(base, &off, N * C);
        h->ln1_mean = act(base, &off, N);
        h->ln1_rstd = act(base, &off, N);
        h->ln2_mean = act(base, &off, N);
        h->ln2_rstd = act(base, &off, N);
        layer_in = h->out;
    }
    a->lnf_out = pre ? act(base, &off, N * C) : NULL;
    a->lnf_mean = pre ? act(base, &off, N) : NULL;
    a->lnf_rstd = pre ? act(base, &off, N) : NULL;
    a->buf_c = act(base, &off, N * C);
    a->buf_f = act(base, &off, N * F);
    a->dres = act(base, &off, N * C);
    a->dbuf_c = act(base, &off, N * C);
    a->dqkv = act(base, &off, 3 * N * C);
    a->dbuf_f = act(base, &off, N * F);
    a->logits = act(base, &off, (size_t)a->head_rows * c->vocab_size);
    a->att_s = act(base, &off, (size_t)a->att_slots * ATT_BLOCK * c->n_ctx);
    a->att_dp = act(base, &off, (size_t)a->att_slots * ATT_BLOCK * c->n_ctx);
    return off;
}

/* The bf16 operand scratch of a model: the largest product's operand over (max(1,
 * max_batch) * n_ctx) rows, or the logits' gradient of one head chunk. */
static size_t bf16_scratch_elems(const GPTConfig *c, int max_batch, int head_rows) {
    size_t rows = (size_t)(max_batch > 1 ? max_batch : 1) * c->n_ctx;
    size_t widest = (size_t)(3 * c->n_embd > c->n_ffn ? 3 * c->n_embd : c->n_ffn);
    size_t head = (size_t)head_rows * c->vocab_size;
    return rows * widest > head ? rows * widest : head;
}

GPTMemory gpt_memory(const GPTConfig *cfg, int max_batch, int with_grads, int threads, Precision p) {
    GPTMemory g = {0};
    GPTActs a = {0};
    g.n_params = layout_params(cfg, NULL, NULL, NULL, NULL);
    g.n_acts = layout_acts(cfg, max_batch, threads, NULL, &a);
    g.params = g.n_params * sizeof(float);
    g.grads = with_grads ? g.params : 0;
    g.acts = g.n_acts * sizeof(float);
    if (p == PRECISION_BF16) {
        g.bf16_scratch = bf16_scratch_elems(cfg, max_batch, a.head_rows);
        g.bf16_copy = bf16_products_bytes(bf16_path(), g.n_params, g.bf16_scratch, &g.bf16_scratch_bytes);
    }
    return g;
}

GPT *gpt_create(const GPTConfig *cfg, int max_batch, int with_grads) {
    GPT *m = xcalloc(1, sizeof *m);
    m->cfg = *cfg;
    m->max_batch = max_batch;
    /* every size below is gpt_memory's, so that gpt plan's account is this allocation */
    GPTMemory mem = gpt_memory(cfg, max_batch, with_grads, compute_threads(), PRECISION_FP32);
    m->n_params = mem.n_params;
    layout_params(cfg, NULL, NULL, NULL, &m->n_tensors);
    assert(m->n_tensors == TENSORS_BEFORE_LAYERS + TENSORS_PER_LAYER * cfg->n_layer + 2 * (cfg->ln == GPT_LN_PRE));
    m->tensors = xcalloc((size_t)m->n_tensors, sizeof *m->tensors);
    layout_params(cfg, NULL, NULL, m->tensors, NULL);

    m->params = xalloc_floats(mem.params / sizeof(float));
    m->w.h = xcalloc((size_t)cfg->n_layer, sizeof *m->w.h);
    layout_params(cfg, m->params, &m->w, NULL, NULL);
    if (with_grads) {
        m->grads = xalloc_floats(mem.grads / sizeof(float));
        m->g.h = xcalloc((size_t)cfg->n_layer, sizeof *m->g.h);
        layout_params(cfg, m->grads, &m->g, NULL, NULL);
    }
    m->act.h = xcalloc((size_t)cfg->n_layer, sizeof *m->act.h);
    m->n_acts = mem.n_acts;
    m->act_buf = xalloc_floats(mem.acts / sizeof(float));
    layout_acts(cfg, max_batch, compute_threads(), m->act_buf, &m->act);
    return m;
}

GPTTensor *gpt_tensor_table(const GPTConfig *cfg, int *n_tensors, size_t *n_params) {
    layout_params(cfg, NULL, NULL, NULL, n_tensors);
    GPTTensor *t = xcalloc((size_t)*n_tensors, sizeof *t);
    size_t n = layout_params(cfg, NULL, NULL, t, NULL);
    if (n_params) *n_params = n;
    return t;
}

void gpt_free(GPT *m) {
    if (!m) return;
    bf16_products_free(m->bf16);
    free(m->tensors);
    free(m->params);
    free(m->grads);
    free(m->w.h);
    free(m->g.h);
    free(m->act.h);
    free(m->act_buf);
    free(m);
}

void gpt_set_precision(GPT *m, Precision p) {
    bf16_products_free(m->bf16);
    m->bf16 = NULL;
    if (p != PRECISION_BF16) return;
    GPTMemory mem = gpt_memory(&m->cfg, m->max_batch, m->grads != NULL, m->act.att_slots, PRECISION_BF16);
    /* wte, the tied head, last: the forward pass's last product reads it, and a sharded
     * all-gather may bring it last (its lookup reads fp32 rows) */
    m->bf16 = bf16_products_create(m->params, m->n_params, (size_t)m->cfg.vocab_size * m->cfg.n_embd, mem.bf16_scratch);
}

Precision gpt_precision(const GPT *m) { return m->bf16 ? PRECISION_BF16 : PRECISION_FP32; }

void gpt_weights_changed(GPT *m) {
    if (m->bf16) bf16_products_stale(m->bf16);
}

void gpt_refresh_weights(const GPT *m) {
    if (m->bf16) bf16_products_refresh(m->bf16);
}

void gpt_matmul_forward(const GPT *m, float *out, const float *in, const float *w, const float *bias, int N,
                        int Cin, int Cout) {
    if (m->bf16) bf16_linear_forward(m->bf16, out, in, w, bias, N, Cin, Cout);
    else matmul_forward(out, in, w, bias, N, Cin, Cout);
}

static void linear_backward(const GPT *m, float *din, float *dw, float *dbias, const float *dout, const float *in,
                            const float *w, int N, int Cin, int Cout, int accumulate_din) {
    if (m->bf16) bf16_linear_backward(m->bf16, din, dw, dbias, dout, in, w, N, Cin, Cout, accumulate_din);
    else matmul_backward(din, dw, dbias, dout, in, w, N, Cin, Cout, accumulate_din);
}

void gpt_round_operands(const GPT *m, float *x, size_t n) {
    if (m->bf16) bf16_round(x, x, n);
}

void gpt_init_weights(GPT *m, uint64_t seed, float std, int scale_residual) {
    Rng rng;
    rng_seed(&rng, seed);
    float resid_std = scale_residual ? std / sqrtf(2.0f * (float)m->cfg.n_layer) : std;
    for (int i = 0; i < m->n_tensors; i++) {
        const GPTTensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        for (size_t j = 0; j < t->numel; j++) {
            switch (t->init) {
            case INIT_NORMAL: p[j] = std * rng_normal(&rng); break;
            case INIT_NORMAL_RESIDUAL: p[j] = resid_std * rng_normal(&rng); break;
            case INIT_ONE: p[j] = 1.0f; break;
            case INIT_ZERO: p[j] = 0.0f; break;
            }
        }
    }
}

size_t gpt_layer_offset(const GPT *m, int l) {
    int i = TENSORS_BEFORE_LAYERS + TENSORS_PER_LAYER * l;
    return i < m->n_tensors ? m->tensors[i].offset : m->n_params;
}

/* A layer's ln_2.weight: the first tensor of its feed-forward half. */
enum { LN_2_IN_LAYER = 6 };

static size_t mlp_half_offset(const GPT *m, int l) {
    return m->tensors[TENSORS_BEFORE_LAYERS + TENSORS_PER_LAYER * l + LN_2_IN_LAYER].offset;
}

int gpt_grad_ready_points(const GPT *m, size_t *points) {
    int n = 0;
    for (int l = m->cfg.n_layer - 1; l >= 0; l--) {
        points[n++] = mlp_half_offset(m, l);
        points[n++] = gpt_layer_offset(m, l);
    }
    points[n++] = 0;
    return n;
}

int gpt_params_ready_points(const GPT *m, size_t *points) {
    int n = 0;
    points[n++] = gpt_layer_offset(m, 0);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        points[n++] = mlp_half_offset(m, l);
        points[n++] = gpt_layer_offset(m, l + 1);
    }
    points[n++] = m->n_params;
    return n;
}

/* Before a forward pass reads the parameters below upto: they have arrived (params_ready;
 * wte only with n_params while token_rows is set) and, in bf16, their copy is remade from
 * them (wte's last: precision.h). */
static void params_need(GPT *m, size_t upto) {
    if (m->params_ready) m->params_ready(m->params_ready_ctx, upto);
    if (m->bf16) bf16_products_refresh_upto(m->bf16, upto);
}

uint64_t gpt_params_fingerprint(const GPT *m) {
    uint64_t h = rng_key(0x6770742d62617365ULL, m->n_params);
    for (size_t i = 0; i < m->n_params; i++) {
        uint32_t bits;
        memcpy(&bits, m->params + i, sizeof bits);
        h = rng_mix64(h ^ bits);
    }
    return h;
}

const GPTTensor *tensors_first_nonfinite(const GPTTensor *tensors, int n, const float *buf) {
    for (int i = 0; i < n; i++) {
        const float *x = buf + tensors[i].offset;
        for (size_t k = 0; k < tensors[i].numel; k++)
            if (!isfinite(x[k])) return &tensors[i];
    }
    return NULL;
}

size_t gpt_params_no_wpe(const GPTConfig *c) {
    return layout_params(c, NULL, NULL, NULL, NULL) - (size_t)c->n_ctx * c->n_embd;
}

double gpt_train_flops_per_token(const GPTConfig *c) {
    return 6.0 * (double)gpt_params_no_wpe(c) +
           12.0 * c->n_layer * (double)c->n_embd * c->n_ctx;
}

int gpt_check_tokens(const GPT *m, const int *tokens, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return gpt_error("%s: token id %d at position %zu is outside the vocabulary "
                             "[0, %d)", what, tokens[i], i, m->cfg.vocab_size);
    return 0;
}

void gpt_zero_grad(GPT *m) {
    if (m->grads) memset(m->grads, 0, m->n_params * sizeof(float));
    if (m->token_grads) token_grads_clear(m->token_grads);
}

/* Runs the blocks; returns the final hidden states (B,T,C). */
static const float *forward_trunk(GPT *m, const int *inputs, int B, int T,
                                  const uint64_t *keys) {
    assert(B >= 1 && B <= m->max_batch && T >= 1 && T <= m->cfg.n_ctx);
    const GPTConfig *c = &m->cfg;
    GPTActs *a = &m->act;
    int C = c->n_embd, F = c->n_ffn, H = c->n_head, N = B * T;
    size_t NC = (size_t)N * C;
    int pre = c->ln == GPT_LN_PRE;
    GPTLora *lo = m->lora;
    int bf16 = m->bf16 != NULL;

    params_need(m, gpt_layer_offset(m, 0));
    const int *ids = inputs;
    const float *rows = m->token_rows ? m->token_rows(m->params_ready_ctx, inputs, N, &ids) : NULL;
    embedding_forward(a->x0, ids, rows ? rows : m->w.wte, m->w.wpe, B, T, C);
    dropout_apply(a->x0, B, (size_t)T * C, keys, SITE_EMBD, c->dropout_embd);
    const float *x = a->x0;
    for (int l = 0; l < c->n_layer; l++) {
        GPTLayerActs *h = &a->h[l];
        const GPTLayerWeights *w = &m->w.h[l];
        params_need(m, mlp_half_offset(m, l));
        if (pre)
            layernorm_forward(h->attn_in, h->ln1_mean, h->ln1_rstd, x, w->ln_1_w, w->ln_1_b, N,
                              C, c->ln_eps);
        gpt_matmul_forward(m, h->qkv, h->attn_in, w->c_attn_w, w->c_attn_b, N, C, 3 * C);
        if (lo) lora_forward(lo, l, LORA_C_ATTN, h->qkv, h->attn_in, N, C, 3 * C);
        gpt_round_operands(m, h->qkv, 3 * NC);
        attention_forward(h->atty, h->att_lse, h->qkv, B, T, C, H, a->att_s, a->att_slots,
                          keys, site(l, SITE_ATTN), c->dropout_attn, bf16);
        gpt_matmul_forward(m, a->buf_c, h->atty, w->attn_proj_w, w->attn_proj_b, N, C, C);
        if (lo) lora_forward(lo, l, LORA_ATTN_PROJ, a->buf_c, h->atty, N, C, C);
        dropout_apply(a->buf_c, B, (size_t)T * C, keys, site(l, SITE_RESID_ATTN),
                      c->dropout_resid);
        vec_sum(h->res1, x, a->buf_c, NC);
        params_need(m, gpt_layer_offset(m, l + 1));
        if (pre)
            layernorm_forward(h->mlp_in, h->ln2_mean, h->ln2_rstd, h->res1, w->ln_2_w,
                              w->ln_2_b, N, C, c->ln_eps);
        else
            layernorm_forward(h->mlp_in, h->ln1_mean, h->ln1_rstd, h->res1, w->ln_1_w,
                              w->ln_1_b, N, C, c->ln_eps);
        gpt_matmul_forward(m, h->fch, h->mlp_in, w->c_fc_w, w->c_fc_b, N, C, F);
        if (lo) lora_forward(lo, l, LORA_C_FC, h->fch, h->mlp_in, N, C, F);
        gelu_forward(a->buf_f, h->fch, (size_t)N * F);
        gpt_matmul_forward(m, a->buf_c, a->buf_f, w->mlp_proj_w, w->mlp_proj_b, N, F, C);
        if (lo) lora_forward(lo, l, LORA_MLP_PROJ, a->buf_c, a->buf_f, N, F, C);
        dropout_apply(a->buf_c, B, (size_t)T * C, keys, site(l, SITE_RESID_MLP),
                      c->dropout_resid);
        vec_sum(h->res2, pre ? h->res1 : h->mlp_in, a->buf_c, NC);
        if (!pre)
            layernorm_forward(h->out, h->ln2_mean, h->ln2_rstd, h->res2, w->ln_2_w,
                              w->ln_2_b, N, C, c->ln_eps);
        x = h->out;
    }
    params_need(m, m->n_params); /* ln_f and the head's wte; the backward pass reads them all */
    if (pre) {
        layernorm_forward(a->lnf_out, a->lnf_mean, a->lnf_rstd, x, m->w.ln_f_w, m->w.ln_f_b, N,
                          C, c->ln_eps);
        x = a->lnf_out;
    }
    return x;
}

/* Backward of the blocks; a->dres holds dL/d(final hidden states) on entry. */
static void backward_trunk(GPT *m, const int *inputs, int B, int T, const uint64_t *keys) {
    const GPTConfig *c = &m->cfg;
    GPTActs *a = &m->act;
    int C = c->n_embd, F = c->n_ffn, H = c->n_head, N = B * T, L = c->n_layer;
    size_t NC = (size_t)N * C;
    int pre = c->ln == GPT_LN_PRE;
    float *dres = a->dres;
    GPTLora *lo = m->lora;
    int bf16 = m->bf16 != NULL;
    GPTLayerWeights frozen = {0}; /* no gradient buffer: the kernels skip parameter gradients */

    if (pre)
        layernorm_backward(dres, m->g.ln_f_w, m->g.ln_f_b, dres, a->h[L - 1].out, m->w.ln_f_w,
                           a->lnf_mean, a->lnf_rstd, N, C);
    for (int l = L - 1; l >= 0; l--) {
        GPTLayerActs *h = &a->h[l];
        const GPTLayerWeights *w = &m->w.h[l];
        GPTLayerWeights *g = m->grads ? &m->g.h[l] : &frozen;
        const float *x = l ? a->h[l - 1].out : a->x0;

        /* dres: dL/d(layer output) -> dL/d(res2) */
        if (!pre)
            layernorm_backward(dres, g->ln_2_w, g->ln_2_b, dres, h->res2, w->ln_2_w, h->ln2_mean,
                               h->ln2_rstd, N, C);
        /* MLP branch */
        memcpy(a->dbuf_c, dres, NC * sizeof(float));
        dropout_apply(a->dbuf_c, B, (size_t)T * C, keys, site(l, SITE_RESID_MLP),
                      c->dropout_resid);
        gelu_forward(a->buf_f, h->fch, (size_t)N * F);
        linear_backward(m, a->dbuf_f, g->mlp_proj_w, g->mlp_proj_b, a->dbuf_c, a->buf_f,
                        w->mlp_proj_w, N, F, C, 0);
        if (lo) lora_backward(lo, l, LORA_MLP_PROJ, a->dbuf_f, a->dbuf_c, a->buf_f, N, F, C);
        gelu_backward(a->dbuf_f, a->dbuf_f, h->fch, (size_t)N * F);
        if (pre) {
            linear_backward(m, a->dbuf_c, g->c_fc_w, g->c_fc_b, a->dbuf_f, h->mlp_in, w->c_fc_w, N,
                            C, F, 0);
            if (lo) lora_backward(lo, l, LORA_C_FC, a->dbuf_c, a->dbuf_f, h->mlp_in, N, C, F);
            layernorm_backward(a->dbuf_c, g->ln_2_w, g->ln_2_b, a->dbuf_c, h->res1, w->ln_2_w,
                               h->ln2_mean, h->ln2_rstd, N, C);
            vec_add(dres, a->dbuf_c, NC);
        } else {
            linear_backward(m, dres, g->c_fc_w, g->c_fc_b, a->dbuf_f, h->mlp_in, w->c_fc_w, N, C,
                            F, 1);
            if (lo) lora_backward(lo, l, LORA_C_FC, dres, a->dbuf_f, h->mlp_in, N, C, F);
            layernorm_backward(dres, g->ln_1_w, g->ln_1_b, dres, h->res1, w->ln_1_w, h->ln1_mean,
                               h->ln1_rstd, N, C);
        }
        if (m->grad_ready) m->grad_ready(m->grad_ready_ctx, mlp_half_offset(m, l));
        /* dres = dL/d(res1); attention branch */
        memcpy(a->dbuf_c, dres, NC * sizeof(float));
        dropout_apply(a->dbuf_c, B, (size_t)T * C, keys, site(l, SITE_RESID_ATTN),
                      c->dropout_resid);
        linear_backward(m, a->buf_c, g->attn_proj_w, g->attn_proj_b, a->dbuf_c, h->atty,
                        w->attn_proj_w, N, C, C, 0);
        if (lo) lora_backward(lo, l, LORA_ATTN_PROJ, a->buf_c, a->dbuf_c, h->atty, N, C, C);
        gpt_round_operands(m, a->buf_c, NC); /* dY */
        attention_backward(a->dqkv, a->buf_c, h->qkv, h->att_lse, B, T, C, H, a->att_s,
                           a->att_dp, a->att_slots, keys, site(l, SITE_ATTN), c->dropout_attn, bf16);
        if (pre) {
            linear_backward(m, a->dbuf_c, g->c_attn_w, g->c_attn_b, a->dqkv, h->attn_in,
                            w->c_attn_w, N, C, 3 * C, 0);
            if (lo) lora_backward(lo, l, LORA_C_ATTN, a->dbuf_c, a->dqkv, h->attn_in, N, C, 3 * C);
            layernorm_backward(a->dbuf_c, g->ln_1_w, g->ln_1_b, a->dbuf_c, x, w->ln_1_w,
                               h->ln1_mean, h->ln1_rstd, N, C);
            vec_add(dres, a->dbuf_c, NC);
        } else {
            linear_backward(m, dres, g->c_attn_w, g->c_attn_b, a->dqkv, x, w->c_attn_w, N, C,
                            3 * C, 1);
            if (lo) lora_backward(lo, l, LORA_C_ATTN, dres, a->dqkv, x, N, C, 3 * C);
        }
        /* dres = dL/dx, the previous layer's output */
        if (m->grad_ready) m->grad_ready(m->grad_ready_ctx, gpt_layer_offset(m, l));
    }
    if (!m->grads) return; /* frozen: the embeddings need no gradient */
    dropout_apply(dres, B, (size_t)T * C, keys, SITE_EMBD, c->dropout_embd);
    if (m->token_grads) {
        const int *rows = token_grads_rows(m->token_grads, inputs, N);
        embedding_backward(m->token_grads->rows, m->g.wpe, dres, rows, B, T, C);
    } else {
        embedding_backward(m->g.wte, m->g.wpe, dres, inputs, B, T, C);
    }
    if (m->grad_ready) m->grad_ready(m->grad_ready_ctx, 0);
}

/* Vocabulary projection and cross-entropy in row chunks; with dh != NULL also the
 * gradient: dh (N,C) = dL/dhidden, and dwte accumulated. Returns the summed NLL. */
static double head(GPT *m, const float *hidden, const int *targets, int N, float grad_scale,
                   float *dh) {
    const GPTConfig *c = &m->cfg;
    int C = c->n_embd, V = c->vocab_size, R = m->act.head_rows;
    float *logits = m->act.logits;
    double total = 0.0;
    for (int r0 = 0; r0 < N; r0 += R) {
        int rows = N - r0 < R ? N - r0 : R;
        const float *hr = hidden + (size_t)r0 * C;
        gpt_matmul_forward(m, logits, hr, m->w.wte, NULL, rows, C, V);
        total += softmax_xent(logits, targets + r0, rows, V, dh ? grad_scale : 0.0f);
        if (dh)
            linear_backward(m, dh + (size_t)r0 * C, m->grads ? m->g.wte : NULL, NULL, logits, hr, m->w.wte,
                            rows, C, V, 0);
    }
    if (dh && m->output_grad_ready) m->output_grad_ready(m->grad_ready_ctx);
    return total;
}

double gpt_forward_backward(GPT *m, const int *inputs, const int *targets, int B, int T,
                            const uint64_t *dropout_keys, float grad_scale) {
    assert(m->grads || m->lora); /* something must receive gradients */
    const float *hidden = forward_trunk(m, inputs, B, T, dropout_keys);
    double total = head(m, hidden, targets, B * T, grad_scale, m->act.dres);
    backward_trunk(m, inputs, B, T, dropout_keys);
    return total / ((double)B * T);
}

const float *gpt_forward_hidden(GPT *m, const int *inputs, int B, int T, const uint64_t *dropout_keys) {
    return forward_trunk(m, inputs, B, T, dropout_keys);
}

double gpt_lm_loss(GPT *m, const float *hidden, const int *targets, int N, float grad_scale, float *dhidden) {
    return head(m, hidden, targets, N, grad_scale, dhidden);
}

float *gpt_hidden_grad(GPT *m) { return m->act.dres; }

void gpt_backward_hidden(GPT *m, const int *inputs, int B, int T, const uint64_t *dropout_keys) {
    backward_trunk(m, inputs, B, T, dropout_keys);
}

double gpt_loss(GPT *m, const int *inputs, const int *targets, int B, int T) {
    const float *hidden = forward_trunk(m, inputs, B, T, NULL);
    return head(m, hidden, targets, B * T, 0.0f, NULL) / ((double)B * T);
}

void gpt_logits(GPT *m, const int *inputs, int B, int T, float *out) {
    const float *hidden = forward_trunk(m, inputs, B, T, NULL);
    gpt_matmul_forward(m, out, hidden, m->w.wte, NULL, B * T, m->cfg.n_embd, m->cfg.vocab_size);
}
