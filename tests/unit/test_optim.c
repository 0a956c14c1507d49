/* test_optim.c: the learning-rate schedule, AdamW's decay mask and clipping, and the
 * validation of configurations. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "model.h"
#include "optim.h"
#include "util.h"

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
    assert_int_equal(config_args_add(&a, CONFIG_OPT_N_EMBD, "96"), 0);
    assert_int_equal(config_args_add(&a, CONFIG_OPT_LN, "pre"), 0);
    assert_int_equal(config_args_add(&a, CONFIG_OPT_MODEL, "tiny"), 0); /* order free */
    GPTConfig c;
    assert_int_equal(config_from_args(&a, &c), 0);
    assert_int_equal(c.n_embd, 96);
    assert_int_equal(c.n_ffn, 4 * 96); /* follows n_embd unless given */
    assert_int_equal(c.ln, GPT_LN_PRE);
    assert_int_equal(config_args_add(&a, CONFIG_OPT_N_LAYER, "two"), 0);
    assert_int_equal(config_from_args(&a, &c), -1);
    assert_non_null(strstr(gpt_last_error(), "--n-layer"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(schedule_warms_up_then_decays),
        cmocka_unit_test(weight_decay_only_on_matrices),
        cmocka_unit_test(clipping_scales_to_max_norm),
        cmocka_unit_test(bad_configs_are_named),
        cmocka_unit_test(overrides_apply_after_preset),
    };
    return cmocka_run_group_tests_name("optimizer and config", tests, NULL, NULL);
}
