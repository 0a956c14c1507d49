/* test_prune.c: the pruning mask keeps exactly a pruned model's zeros through an
 * update, ties are pruned in buffer order, bad sparsities are refused, and model files
 * record pruning (the CLI and the selection against numpy: tests/test_prune.py). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/util.h"
#include "files/model_file.h"
#include "model/config.h"
#include "model/model.h"
#include "model/prune.h"

static GPT *tiny_model(void) {
    GPTConfig c;
    assert_int_equal(config_preset("tiny", &c), 0);
    GPT *m = gpt_create(&c, 1, 0);
    gpt_init_weights(m, 3, 0.02f, 0); /* biases and LayerNorm shifts are exactly 0 */
    return m;
}

/* After pruning, a fake optimizer update moves every parameter; applying the mask
 * zeroes exactly the pruned entries again and leaves every other one as updated
 * (the zero biases, not prunable, included). */
static void mask_restores_exactly_the_zeros(void **state) {
    (void)state;
    GPT *m = tiny_model();
    PruneStats st;
    assert_int_equal(prune_magnitude(m, 0.6, PRUNE_GLOBAL, &st), 0);
    assert_true(st.n_zero == st.n_pruned && st.n_pruned == (size_t)floor(0.6 * (double)st.n_prunable));
    float *pruned = xalloc_floats(m->n_params);
    memcpy(pruned, m->params, sizeof(float) * m->n_params);
    PruneMask *k = prune_mask_create(m);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] += 0.001f * (float)(i % 7 + 1);
    prune_mask_apply(k, m->params);
    size_t zeros = 0;
    for (int t = 0; t < m->n_tensors; t++) {
        const GPTTensor *ten = &m->tensors[t];
        for (size_t i = ten->offset; i < ten->offset + ten->numel; i++) {
            int masked = prune_is_prunable(ten) && pruned[i] == 0.0f;
            if (masked) assert_true(m->params[i] == 0.0f);
            else assert_true(m->params[i] == pruned[i] + 0.001f * (float)(i % 7 + 1));
            zeros += masked;
        }
    }
    assert_true(zeros == st.n_zero);
    assert_true(fabs(prune_sparsity(m) - st.sparsity) < 1e-12);
    prune_stats_free(&st);
    prune_mask_free(k);
    prune_mask_apply(NULL, m->params);
    prune_mask_free(NULL);
    free(pruned);
    gpt_free(m);
}

/* All prunable weights equal in magnitude: the first floor(S n) of each matrix (layer
 * scope) are pruned, in buffer order, whatever their sign. */
static void ties_are_pruned_in_buffer_order(void **state) {
    (void)state;
    GPT *m = tiny_model();
    for (int t = 0; t < m->n_tensors; t++)
        if (prune_is_prunable(&m->tensors[t]))
            for (size_t i = 0; i < m->tensors[t].numel; i++) m->params[m->tensors[t].offset + i] = i % 2 ? 0.5f : -0.5f;
    PruneStats st;
    assert_int_equal(prune_magnitude(m, 0.3, PRUNE_LAYER, &st), 0);
    int n_prunable = 0;
    for (int t = 0; t < m->n_tensors; t++) {
        const GPTTensor *ten = &m->tensors[t];
        if (!prune_is_prunable(ten)) continue;
        n_prunable++;
        size_t k = (size_t)floor(0.3 * (double)ten->numel);
        assert_true(st.zeros[t] == k);
        for (size_t i = 0; i < ten->numel; i++)
            assert_true((m->params[ten->offset + i] == 0.0f) == (i < k));
    }
    assert_int_equal(n_prunable, 4 * m->cfg.n_layer);
    prune_stats_free(&st);
    gpt_free(m);
}

static void bad_input_is_refused(void **state) {
    (void)state;
    GPT *m = tiny_model();
    assert_int_equal(prune_magnitude(m, 1.0, PRUNE_GLOBAL, NULL), -1);
    assert_non_null(strstr(gpt_last_error(), "[0, 1)"));
    assert_int_equal(prune_magnitude(m, -0.1, PRUNE_GLOBAL, NULL), -1);
    assert_int_equal(prune_magnitude(m, NAN, PRUNE_GLOBAL, NULL), -1);
    for (int t = 0; t < m->n_tensors; t++)
        if (prune_is_prunable(&m->tensors[t])) {
            m->params[m->tensors[t].offset + 5] = NAN;
            break;
        }
    assert_int_equal(prune_magnitude(m, 0.5, PRUNE_LAYER, NULL), -1);
    assert_non_null(strstr(gpt_last_error(), "cannot prune"));
    assert_string_equal(prune_scope_name(PRUNE_GLOBAL), "global");
    assert_string_equal(prune_scope_name(PRUNE_LAYER), "layer");
    assert_null(prune_scope_names[PRUNE_LAYER + 1]);
    gpt_free(m);
}

static void model_files_record_pruning(void **state) {
    (void)state;
    char path[] = "/tmp/test_prune_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    GPT *m = tiny_model();
    double s = -1.0;
    assert_int_equal(model_file_write(path, m, NULL), 0);
    assert_int_equal(model_file_read_pruned(path, &s), 0);
    assert_true(s == 0.0);
    assert_int_equal(prune_magnitude(m, 0.25, PRUNE_GLOBAL, NULL), 0);
    assert_int_equal(model_file_write_pruned(path, m, NULL, prune_sparsity(m), "global"), 0);
    assert_int_equal(model_file_read_pruned(path, &s), 0);
    assert_true(s == prune_sparsity(m));
    assert_int_equal(model_file_read_pruned("/nonexistent/model.h5", &s), -1);
    remove(path);
    gpt_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mask_restores_exactly_the_zeros),
        cmocka_unit_test(ties_are_pruned_in_buffer_order),
        cmocka_unit_test(bad_input_is_refused),
        cmocka_unit_test(model_files_record_pruning),
    };
    return cmocka_run_group_tests_name("pruning", tests, NULL, NULL);
}
