/* test_config.c: the presets. GPT-2's four have the published models' shapes and their
 * exact parameter counts; every preset is listed in the one list that messages and
 * --help use; GPT-2's initialise the residual projections with std / sqrt(2 n_layer). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/util.h"
#include "model/config.h"
#include "model/model.h"

/* Every parameter of the layout: the FLOP count's N plus wpe (model.h). */
static size_t params_of(const GPTConfig *c) { return gpt_params_no_wpe(c) + (size_t)c->n_ctx * c->n_embd; }

static void gpt2_presets_are_the_published_models(void **state) {
    (void)state;
    static const struct {
        const char *name;
        int n_layer, n_head, n_embd;
        size_t params; /* Hugging Face's gpt2, gpt2-medium, gpt2-large, gpt2-xl */
    } want[] = {{"gpt2", 12, 12, 768, 124439808},
                {"gpt2-medium", 24, 16, 1024, 354823168},
                {"gpt2-large", 36, 20, 1280, 774030080},
                {"gpt2-xl", 48, 25, 1600, 1557611200}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        GPTConfig c;
        assert_int_equal(config_preset(want[i].name, &c), 0);
        assert_int_equal(c.n_layer, want[i].n_layer);
        assert_int_equal(c.n_head, want[i].n_head);
        assert_int_equal(c.n_embd, want[i].n_embd);
        assert_int_equal(c.n_ffn, 4 * want[i].n_embd);
        assert_int_equal(c.n_ctx, 1024);
        assert_int_equal(c.vocab_size, 50257);
        assert_int_equal(c.ln, GPT_LN_PRE);
        assert_float_equal(c.ln_eps, 1e-5f, 0.0f);
        assert_float_equal(c.dropout_embd, 0.1f, 0.0f);
        assert_float_equal(c.dropout_resid, 0.1f, 0.0f);
        assert_float_equal(c.dropout_attn, 0.1f, 0.0f);
        assert_int_equal(config_validate(&c), 0);
        assert_int_equal(params_of(&c), want[i].params);
        assert_int_equal(config_preset_scales_residual(want[i].name), 1);
    }
    /* GPT-1's, for comparison: 116,534,784 with its 40478 rows and 512 positions */
    GPTConfig g;
    assert_int_equal(config_preset("gpt1", &g), 0);
    assert_int_equal(params_of(&g), 116534784);
    assert_int_equal(config_preset_scales_residual("gpt1"), 0);
    assert_int_equal(config_preset_scales_residual("small"), 0);
    assert_int_equal(config_preset_scales_residual("nonesuch"), 0);
    assert_int_equal(config_preset_scales_residual(NULL), 0);
}

static void one_list_names_every_preset(void **state) {
    (void)state;
    const char *names[] = {"gpt1", "small", "tiny", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", NULL};
    for (int i = 0; names[i] || config_preset_names[i]; i++) {
        assert_non_null(names[i]);
        assert_non_null(config_preset_names[i]);
        assert_string_equal(config_preset_names[i], names[i]);
        GPTConfig c;
        assert_int_equal(config_preset(names[i], &c), 0);
    }
    assert_string_equal(config_preset_list(), "gpt1, small, tiny, gpt2, gpt2-medium, gpt2-large or gpt2-xl");
    GPTConfig c;
    assert_int_equal(config_preset("gpt3", &c), -1);
    assert_string_equal(gpt_last_error(), "unknown model preset 'gpt3' (expected gpt1, small, tiny, gpt2, "
                                          "gpt2-medium, gpt2-large or gpt2-xl)");
    ConfigArgs none = {0};
    assert_int_equal(config_from_args(&none, &c), -1);
    assert_non_null(strstr(gpt_last_error(), "gpt2-medium, gpt2-large or gpt2-xl"));
}

/* The std of a tensor's values (mean 0 by construction). */
static double std_of(const GPT *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) {
            const float *p = m->params + m->tensors[i].offset;
            double s = 0.0;
            for (size_t k = 0; k < m->tensors[i].numel; k++) s += (double)p[k] * p[k];
            return sqrt(s / (double)m->tensors[i].numel);
        }
    fail_msg("no tensor %s", name);
    return 0.0;
}

static void residual_projections_scaled_by_depth(void **state) {
    (void)state;
    GPTConfig c;
    assert_int_equal(config_preset("gpt2", &c), 0);
    c.n_layer = 8, c.n_embd = 128, c.n_head = 4, c.n_ffn = 512, c.n_ctx = 16, c.vocab_size = 64;
    GPT *m = gpt_create(&c, 1, 0);
    gpt_init_weights(m, 5, 0.02f, config_preset_scales_residual("gpt2"));
    double resid = 0.02 / sqrt(2.0 * 8); /* 0.005 */
    /* 16384 and 65536 draws: the sample std within 3% */
    assert_float_equal(std_of(m, "h.3.attn.c_proj.weight"), resid, 0.03 * resid);
    assert_float_equal(std_of(m, "h.7.mlp.c_proj.weight"), resid, 0.03 * resid);
    assert_float_equal(std_of(m, "h.3.attn.c_attn.weight"), 0.02, 0.03 * 0.02);
    assert_float_equal(std_of(m, "h.0.mlp.c_fc.weight"), 0.02, 0.03 * 0.02);
    gpt_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gpt2_presets_are_the_published_models),
        cmocka_unit_test(one_list_names_every_preset),
        cmocka_unit_test(residual_projections_scaled_by_depth),
    };
    return cmocka_run_group_tests_name("presets", tests, NULL, NULL);
}
