/* optim.c: AdamW, the warm-up + cosine schedule and gradient clipping (see optim.h). */
#include "model/optim.h"

#include <math.h>
#include <stdlib.h>

#include "base/util.h"
#include "cpu/kernels.h"

OptimConfig optim_defaults(long total_steps) {
    OptimConfig c = {.lr = 2.5e-4f, .min_lr = 0.0f, .warmup = 2000, .total_steps = total_steps,
                     .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f,
                     .clip = 1.0f};
    return c;
}

int optim_validate(const OptimConfig *c) {
    if (!(c->lr > 0.0f)) return gpt_error("lr must be positive, got %g", c->lr);
    if (!(c->min_lr >= 0.0f && c->min_lr <= c->lr))
        return gpt_error("min_lr must be in [0, lr], got %g", c->min_lr);
    if (c->warmup < 0) return gpt_error("warmup must be >= 0, got %ld", c->warmup);
    if (c->total_steps < 1) return gpt_error("total steps must be >= 1, got %ld", c->total_steps);
    if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f)) return gpt_error("beta1 must be in [0, 1), got %g", c->beta1);
    if (!(c->beta2 >= 0.0f && c->beta2 < 1.0f)) return gpt_error("beta2 must be in [0, 1), got %g", c->beta2);
    if (!(c->eps > 0.0f)) return gpt_error("eps must be positive, got %g", c->eps);
    if (!(c->weight_decay >= 0.0f)) return gpt_error("weight decay must be >= 0, got %g", c->weight_decay);
    if (!(c->clip >= 0.0f)) return gpt_error("clip must be >= 0 (0 = off), got %g", c->clip);
    return 0;
}

float optim_lr_at(const OptimConfig *c, long step) {
    if (step < c->warmup) return c->lr * (float)(step + 1) / (float)c->warmup;
    long decay_steps = c->total_steps - c->warmup;
    double progress = (double)(step - c->warmup) / (double)(decay_steps > 1 ? decay_steps : 1);
    if (progress > 1.0) progress = 1.0;
    if (c->linear_decay) return c->min_lr + (c->lr - c->min_lr) * (float)(1.0 - progress);
    return c->min_lr + 0.5f * (c->lr - c->min_lr) * (float)(1.0 + cos(M_PI * progress));
}

AdamW *adamw_create_ranges(const OptimConfig *cfg, int n_ranges, const size_t *begin, const size_t *end) {
    AdamW *o = xcalloc(1, sizeof *o);
    o->cfg = *cfg;
    o->n_ranges = n_ranges;
    o->begin = xmalloc(sizeof(size_t) * (size_t)(n_ranges + 1));
    o->end = xmalloc(sizeof(size_t) * (size_t)(n_ranges + 1));
    for (int k = 0; k < n_ranges; k++) o->begin[k] = begin[k], o->end[k] = end[k], o->n += end[k] - begin[k];
    o->m = xalloc_floats(adamw_bytes(o->n) / 2 / sizeof(float));
    o->v = xalloc_floats(adamw_bytes(o->n) / 2 / sizeof(float));
    return o;
}

size_t adamw_bytes(size_t n) { return 2 * n * sizeof(float); }

AdamW *adamw_create(const OptimConfig *cfg, size_t n_params) {
    size_t zero = 0;
    return adamw_create_ranges(cfg, 1, &zero, &n_params);
}

int adamw_whole(const AdamW *o, size_t n_params) { return o->n_ranges == 1 && o->begin[0] == 0 && o->n == n_params; }

void adamw_free(AdamW *o) {
    if (!o) return;
    free(o->begin);
    free(o->end);
    free(o->m);
    free(o->v);
    free(o);
}

double optim_grad_norm(const float *g, size_t n) { return sqrt(sum_squares(g, n)); }

OptimStats adamw_step(AdamW *o, float *params, const float *grads, const GPTTensor *tensors,
                      int n_tensors) {
    double sq = 0.0;
    for (int k = 0; k < o->n_ranges; k++) sq += sum_squares(grads + o->begin[k], o->end[k] - o->begin[k]);
    return adamw_step_norm(o, params, grads, tensors, n_tensors, sqrt(sq));
}

OptimStats adamw_step_norm(AdamW *o, float *params, const float *grads, const GPTTensor *tensors,
                           int n_tensors, double norm) {
    const OptimConfig *c = &o->cfg;
    OptimStats st;
    st.lr = optim_lr_at(c, o->step);
    st.grad_norm = norm;
    st.clip_scale = 1.0f;
    if (c->clip > 0.0f) {
        double coef = c->clip / (st.grad_norm + 1e-6);
        if (coef < 1.0) st.clip_scale = (float)coef;
    }
    o->step++;
    double bc1 = 1.0 - pow(c->beta1, (double)o->step), bc2 = 1.0 - pow(c->beta2, (double)o->step);
    AdamWCoeffs k = {.grad_scale = st.clip_scale, .beta1 = c->beta1, .beta2 = c->beta2, .eps = c->eps,
                     .step_size = (float)(st.lr / bc1), .bc2_sqrt = (float)sqrt(bc2)};
    size_t at = 0; /* where range r's moments start */
    for (int r = 0, first = 0; r < o->n_ranges; at += o->end[r] - o->begin[r], r++)
        for (int t = first; t < n_tensors; t++) { /* both ascending: from the last range's last tensor on */
            size_t lo = o->begin[r], hi = o->end[r];
            if (tensors[t].offset >= hi) break;
            first = t;
            size_t b = tensors[t].offset > lo ? tensors[t].offset : lo;
            size_t e = tensors[t].offset + tensors[t].numel < hi ? tensors[t].offset + tensors[t].numel : hi;
            if (b >= e) continue;
            k.decay = tensors[t].decay ? 1.0f - st.lr * c->weight_decay : 1.0f;
            adamw_update(params + b, o->m + at + (b - lo), o->v + at + (b - lo), grads + b, e - b, &k);
        }
    return st;
}
