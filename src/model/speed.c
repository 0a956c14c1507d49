/* speed.c: timing a model's training steps in parts (see speed.h). */
#include "model/speed.h"

#include <stdlib.h>

#include "base/rng.h"
#include "base/util.h"
#include "model/optim.h"

StepTimes gpt_time_steps(GPT *m, int B, int warmup, int steps, uint64_t seed, StepTimesProgress progress, void *ctx) {
    const GPTConfig *cfg = &m->cfg;
    int T = cfg->n_ctx;
    OptimConfig oc = optim_defaults(warmup + steps);
    oc.warmup = 0;
    AdamW *o = adamw_create(&oc, m->n_params);
    int *tokens = xmalloc((size_t)B * (T + 1) * sizeof(int));
    int *inputs = xmalloc((size_t)B * T * sizeof(int)), *targets = xmalloc((size_t)B * T * sizeof(int));
    uint64_t *keys = xmalloc((size_t)B * sizeof(uint64_t));
    Rng r;
    rng_seed(&r, seed);
    StepTimes st = {.batch = B, .steps = steps};
    for (int s = 0; s < warmup + steps; s++) {
        for (int b = 0; b < B; b++) {
            for (int t = 0; t <= T; t++) tokens[b * (T + 1) + t] = (int)(rng_next(&r) % (uint64_t)cfg->vocab_size);
            for (int t = 0; t < T; t++) {
                inputs[b * T + t] = tokens[b * (T + 1) + t];
                targets[b * T + t] = tokens[b * (T + 1) + t + 1];
            }
            keys[b] = rng_key(seed, (uint64_t)s * B + b);
        }
        /* gpt_forward_backward's three pieces, timed apart */
        double t0 = now_seconds();
        gpt_zero_grad(m);
        double t1 = now_seconds();
        const float *hidden = gpt_forward_hidden(m, inputs, B, T, keys);
        double t2 = now_seconds();
        double loss = gpt_lm_loss(m, hidden, targets, B * T, 1.0f / (float)(B * T), gpt_hidden_grad(m)) / ((double)B * T);
        double t3 = now_seconds();
        gpt_backward_hidden(m, inputs, B, T, keys);
        double t4 = now_seconds();
        adamw_step(o, m->params, m->grads, m->tensors, m->n_tensors);
        gpt_weights_changed(m); /* in bf16 the next forward pass remakes the copy: timed there */
        double t5 = now_seconds();
        if (s >= warmup) {
            st.forward_s += t2 - t1, st.head_s += t3 - t2, st.backward_s += t4 - t3;
            st.optim_s += (t1 - t0) + (t5 - t4);
        }
        st.loss = loss;
        if (progress) progress(ctx, s + 1, warmup + steps, loss, t5 - t0, s >= warmup);
    }
    st.forward_s /= steps, st.head_s /= steps, st.backward_s /= steps, st.optim_s /= steps;
    free(tokens);
    free(inputs);
    free(targets);
    free(keys);
    adamw_free(o);
    return st;
}
