/* test_optim.c: the learning-rate schedule, AdamW's decay mask and clipping, the
 * partition of the parameters among ranks and AdamW on shards of it, and the validation
 * of configurations. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/util.h"
#include "files/model_file.h"
#include "model/config.h"
#include "model/model.h"
#include "model/optim.h"
#include "model/shard.h"

static void schedule_warms_up_then_decays(void **state) {
    (void)state;
    OptimConfig c = optim_defaults(10000); /* lr 2.5e-4, warm-up 2000, floor 0 */
    assert_float_equal(optim_lr_at(&c, 0), 2.5e-4f / 2000, 1e-12);
    assert_float_equal(optim_lr_at(&c, 999), 2.5e-4f * 1000 / 2000, 1e-10);
    assert_float_equal(optim_lr_at(&c, 1999), 2.5e-4f, 1e-10);
    assert_float_equal(optim_lr_at(&c, 2000), 2.5e-4f, 1e-10);
    assert_float_equal(optim_lr_at(&c, 6000), 1.25e-4f, 1e-9); /* half way: cos = 0 */
    assert_float_equal(optim_lr_at(&c, 10000), 0.0f, 1e-12);
    assert_float_equal(optim_lr_at(&c, 20000), 0.0f, 1e-12); /* stays at the floor */
    c.min_lr = 1e-5f;
    assert_float_equal(optim_lr_at(&c, 10000), 1e-5f, 1e-12);
    for (long s = 2001; s < 10000; s += 97) assert_true(optim_lr_at(&c, s) <= optim_lr_at(&c, s - 1));
}

/* With zero gradients Adam's step is zero, leaving only weight decay: matrices shrink
 * by exactly (1 - lr*wd), biases and LayerNorm gains never change. */
static void weight_decay_only_on_matrices(void **state) {
    (void)state;
    GPTConfig c;
    assert_int_equal(config_preset("tiny", &c), 0);
    c.ln = GPT_LN_PRE; /* includes ln_f */
    GPT *m = gpt_create(&c, 1, 1);
    gpt_init_weights(m, 1, 0.02f, 0);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] += 0.5f; /* biases nonzero too */
    float *before = xalloc_floats(m->n_params);
    memcpy(before, m->params, sizeof(float) * m->n_params);
    OptimConfig oc = optim_defaults(10);
    oc.warmup = 0;
    oc.lr = 0.1f;
    oc.weight_decay = 0.5f;
    AdamW *o = adamw_create(&oc, m->n_params);
    gpt_zero_grad(m);
    OptimStats st = adamw_step(o, m->params, m->grads, m->tensors, m->n_tensors);
    int n_decayed = 0, n_kept = 0;
    for (int t = 0; t < m->n_tensors; t++) {
        const GPTTensor *ten = &m->tensors[t];
        float factor = ten->decay ? 1.0f - st.lr * 0.5f : 1.0f;
        assert_int_equal(ten->decay, ten->ndim == 2);
        if (ten->decay) n_decayed++;
        else n_kept++;
        for (size_t i = 0; i < ten->numel; i++)
            assert_float_equal(m->params[ten->offset + i], before[ten->offset + i] * factor, 1e-6);
    }
    assert_int_equal(n_decayed, 2 + 4 * c.n_layer);   /* wte, wpe, four matrices a layer */
    assert_int_equal(n_kept, 8 * c.n_layer + 2);      /* biases and LayerNorm, ln_f */
    free(before);
    adamw_free(o);
    gpt_free(m);
}

static void clipping_scales_to_max_norm(void **state) {
    (void)state;
    GPTTensor t = {.name = "w", .ndim = 1, .shape = {4, 0}, .offset = 0, .numel = 4, .decay = 0};
    float p[4] = {0}, g[4] = {3, 4, 0, 0}; /* norm 5 */
    OptimConfig oc = optim_defaults(10);
    oc.clip = 1.0f;
    AdamW *o = adamw_create(&oc, 4);
    OptimStats st = adamw_step(o, p, g, &t, 1);
    assert_float_equal(st.grad_norm, 5.0, 1e-9);
    assert_float_equal(st.clip_scale, 1.0f / (5.0f + 1e-6f), 1e-7);
    /* first moment is (1-beta1) * clipped gradient */
    assert_float_equal(o->m[0], 0.1f * 3.0f / 5.0f, 1e-6);
    oc.clip = 0.0f; /* off */
    AdamW *o2 = adamw_create(&oc, 4);
    assert_float_equal(adamw_step(o2, p, g, &t, 1).clip_scale, 1.0f, 0);
    adamw_free(o);
    adamw_free(o2);
}

static void expect_invalid(GPTConfig c, const char *fragment) {
    assert_int_equal(config_validate(&c), -1);
    if (!strstr(gpt_last_error(), fragment)) fail_msg("error '%s' lacks '%s'", gpt_last_error(), fragment);
}

static void bad_configs_are_named(void **state) {
    (void)state;
    GPTConfig ok;
    assert_int_equal(config_preset("small", &ok), 0);
    assert_int_equal(config_validate(&ok), 0);
    GPTConfig c = ok;
    c.n_head = 3;
    expect_invalid(c, "divisible by n_head");
    c = ok, c.n_layer = 0;
    expect_invalid(c, "n_layer");
    c = ok, c.n_embd = -4;
    expect_invalid(c, "n_embd");
    c = ok, c.vocab_size = 0;
    expect_invalid(c, "vocab_size");
    c = ok, c.n_ctx = -1;
    expect_invalid(c, "n_ctx");
    c = ok, c.dropout_attn = 1.0f;
    expect_invalid(c, "dropout_attn");
    c = ok, c.ln_eps = 0.0f;
    expect_invalid(c, "ln_eps");
    assert_int_equal(config_preset("gpt3", &c), -1);
    assert_non_null(strstr(gpt_last_error(), "gpt3"));
}

static void overrides_apply_after_preset(void **state) {
    (void)state;
    ConfigArgs a = {0};
    assert_int_equal(config_args_add(&a, CONFIG_OPT_N_EMBD, 96), 0);
    assert_int_equal(config_args_add(&a, CONFIG_OPT_LN, GPT_LN_PRE), 0);
    a.preset = "tiny"; /* order free */
    GPTConfig c;
    assert_int_equal(config_from_args(&a, &c), 0);
    assert_int_equal(c.n_embd, 96);
    assert_int_equal(c.n_ffn, 4 * 96); /* follows n_embd unless given */
    assert_int_equal(c.ln, GPT_LN_PRE);
    assert_int_equal(config_args_add(&a, CONFIG_OPT_N_LAYER, 0), 0);
    assert_int_equal(config_from_args(&a, &c), -1);
    assert_non_null(strstr(gpt_last_error(), "n_layer"));
}

/* tiny with a vocabulary whose wte spans several 1 MiB chunks, so shards cut tensors */
static GPT *tiny_big_vocab(void) {
    GPTConfig c;
    assert_int_equal(config_preset("tiny", &c), 0);
    c.vocab_size = 20000;
    GPT *m = gpt_create(&c, 1, 1);
    gpt_init_weights(m, 3, 0.02f, 0);
    return m;
}

/* Each segment is tiled by the ranks' parts, one range each (wte's in rank order), that
 * start at chunk starts and differ from the segment's 1/P by less than a chunk; each
 * rank's rows of a tensor, its ranges and its packed positions agree. */
static void shards_split_every_segment(void **state) {
    (void)state;
    GPT *m = tiny_big_vocab();
    size_t chunk = 0; /* the largest chunk */
    for (int i = 0; i < m->n_tensors; i++) {
        const GPTTensor *t = &m->tensors[i];
        size_t c = (size_t)shard_tensor_chunk_rows(t) * (t->ndim == 2 ? (size_t)t->shape[1] : 1);
        if (c > chunk) chunk = c;
    }
    assert_true(m->tensors[0].numel > 2 * chunk); /* wte: several chunks */
    size_t bounds[2 * 2 + 3];
    int n_seg = shard_segments(m, bounds);
    assert_int_equal(n_seg, 2 * m->cfg.n_layer + 2);
    assert_int_equal(bounds[0], 0), assert_int_equal(bounds[1], m->tensors[0].numel);
    assert_int_equal(bounds[n_seg], m->n_params);
    for (int P = 1; P <= 7; P++) {
        Shard s[7];
        for (int r = 0; r < P; r++) s[r] = shard_of(m, r, P);
        for (int seg = 0; seg < n_seg; seg++) {
            size_t a = bounds[seg], b = bounds[seg + 1], covered = 0, next = a;
            for (int j = 0; j < P; j++) { /* the parts follow each other from the segment's start */
                for (int r = 0; r < P; r++) {
                    int pieces = 0;
                    for (int k = 0; k < s[r].n_ranges; k++) {
                        size_t x = s[r].begin[k] > a ? s[r].begin[k] : a, y = s[r].end[k] < b ? s[r].end[k] : b;
                        if (x >= y) continue;
                        pieces++;
                        if (x == next) next = y, covered += y - x;
                    }
                    assert_true(pieces <= 1);
                }
            }
            assert_int_equal(next, b);
            assert_int_equal(covered, b - a);
            size_t wte_at = 0; /* where the last rank's part of wte ended */
            for (int r = 0; r < P; r++) {
                size_t part = 0, lo_wte = 0;
                for (int k = 0; k < s[r].n_ranges; k++) {
                    size_t x = s[r].begin[k] > a ? s[r].begin[k] : a, y = s[r].end[k] < b ? s[r].end[k] : b;
                    if (x < y) part = y - x, lo_wte = x;
                }
                assert_true(part + chunk > (b - a) / (size_t)P && part < (b - a) / (size_t)P + chunk);
                if (seg == 0 && part) { /* wte: rank order */
                    assert_true(lo_wte >= wte_at);
                    wte_at = lo_wte + part;
                }
            }
        }
        int cut_inside = 0;
        for (int r = 0; r < P; r++) {
            size_t n = 0;
            for (int i = 0; i < m->n_tensors; i++) {
                const GPTTensor *t = &m->tensors[i];
                size_t row = t->ndim == 2 ? (size_t)t->shape[1] : 1;
                assert_true(s[r].lo[i] <= s[r].hi[i] && s[r].hi[i] <= t->shape[0]);
                if (s[r].lo[i] < s[r].hi[i]) assert_int_equal(s[r].lo[i] % shard_tensor_chunk_rows(t), 0);
                assert_int_equal(s[r].at[i], n);
                n += (size_t)(s[r].hi[i] - s[r].lo[i]) * row;
                cut_inside |= s[r].lo[i] > 0 && s[r].lo[i] < t->shape[0];
            }
            size_t in_ranges = 0;
            for (int k = 0; k < s[r].n_ranges; k++) in_ranges += s[r].end[k] - s[r].begin[k];
            assert_int_equal(n, s[r].n), assert_int_equal(in_ranges, n);
            shard_free(&s[r]);
        }
        if (P > 1) assert_true(cut_inside);
    }
    gpt_free(m);
}

/* AdamW on P shards, each with moments for its range only, updates every parameter
 * exactly as one AdamW on all of them does (clipping by the same global norm). */
static void sharded_updates_equal_whole(void **state) {
    (void)state;
    enum { P = 3, STEPS = 3 };
    GPT *m = tiny_big_vocab();
    float *whole = xalloc_floats(m->n_params), *grads = m->grads;
    memcpy(whole, m->params, sizeof(float) * m->n_params);
    OptimConfig oc = optim_defaults(10);
    oc.warmup = 1, oc.lr = 1e-2f, oc.weight_decay = 0.1f, oc.clip = 0.5f;
    AdamW *all = adamw_create(&oc, m->n_params), *shard[P];
    for (int r = 0; r < P; r++) shard[r] = shard_optimizer_create(&oc, m, r, P, 1);
    size_t owned = 0;
    for (int r = 0; r < P; r++) owned += shard[r]->n;
    assert_int_equal(owned, m->n_params);
    for (int s = 0; s < STEPS; s++) {
        for (size_t i = 0; i < m->n_params; i++) grads[i] = (float)sin(0.37 * (double)i + s);
        double norm = optim_grad_norm(grads, m->n_params);
        adamw_step_norm(all, whole, grads, m->tensors, m->n_tensors, norm);
        for (int r = 0; r < P; r++) adamw_step_norm(shard[r], m->params, grads, m->tensors, m->n_tensors, norm);
    }
    for (size_t i = 0; i < m->n_params; i++) assert_float_equal(m->params[i], whole[i], 0.0f);
    for (int r = 0; r < P; r++) {
        assert_int_equal(shard[r]->step, STEPS);
        for (size_t k = 0, at = 0; k < (size_t)shard[r]->n_ranges; k++) { /* the ranges' moments end to end */
            size_t b = shard[r]->begin[k], n = shard[r]->end[k] - b;
            assert_memory_equal(shard[r]->v + at, all->v + b, sizeof(float) * n);
            at += n;
        }
        adamw_free(shard[r]);
    }
    adamw_free(all);
    free(whole);
    gpt_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(schedule_warms_up_then_decays),
        cmocka_unit_test(weight_decay_only_on_matrices),
        cmocka_unit_test(clipping_scales_to_max_norm),
        cmocka_unit_test(shards_split_every_segment),
        cmocka_unit_test(sharded_updates_equal_whole),
        cmocka_unit_test(bad_configs_are_named),
        cmocka_unit_test(overrides_apply_after_preset),
    };
    return cmocka_run_group_tests_name("optimizer and config", tests, NULL, NULL);
}
