/* test_finetune.c: the task metrics (accuracy, Pearson, Spearman with ties, MSE), the
 * linear fine-tuning schedule, and LoRA's merge against the adapted forward pass. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/rng.h"
#include "base/util.h"
#include "model/config.h"
#include "model/lora.h"
#include "model/model.h"
#include "model/optim.h"
#include "run/finetune.h"
#include "run/task_metrics.h"

static void accuracy_counts_exact_matches(void **state) {
    (void)state;
    double pred[] = {0, 1, 2, 1}, label[] = {0, 1, 1, 1};
    TaskMetrics m = task_metrics(LABEL_CLASS, pred, label, 4);
    assert_float_equal(m.accuracy, 0.75, 1e-12);
    assert_true(isnan(m.pearson));
    m = task_metrics(LABEL_CHOICE, pred, label, 4);
    assert_float_equal(m.accuracy, 0.75, 1e-12);
}

static void correlations_of_real_labels(void **state) {
    (void)state;
    /* Spearman of a monotone but non-linear relation is 1; Pearson is below 1 */
    double x[] = {1, 2, 3, 4, 5}, y[] = {1, 4, 9, 16, 100};
    TaskMetrics m = task_metrics(LABEL_REAL, x, y, 5);
    assert_float_equal(m.spearman, 1.0, 1e-12);
    assert_true(m.pearson > 0.7 && m.pearson < 0.95);
    /* one swap among four: Spearman 1 - 6*2/(4*15) = 0.8 */
    double a[] = {1, 2, 3, 4}, b[] = {1, 3, 2, 4};
    m = task_metrics(LABEL_REAL, a, b, 4);
    assert_float_equal(m.spearman, 0.8, 1e-12);
    assert_float_equal(m.pearson, 0.8, 1e-12);
    assert_float_equal(m.mse, 0.5, 1e-12);
    /* ties share their mean rank: ranks of (1, 1, 2) are (1.5, 1.5, 3) */
    double t[] = {1, 1, 2}, u[] = {1.5, 1.5, 3};
    m = task_metrics(LABEL_REAL, t, u, 3);
    assert_float_equal(m.spearman, 1.0, 1e-12);
    /* a constant prediction has no correlation */
    double c[] = {2, 2, 2};
    m = task_metrics(LABEL_REAL, c, u, 3);
    assert_true(isnan(m.pearson) && isnan(m.spearman));
}

static void linear_schedule_reaches_the_floor(void **state) {
    (void)state;
    OptimConfig c = optim_defaults(100);
    c.warmup = 10, c.linear_decay = 1, c.lr = 1e-3f, c.min_lr = 0.0f;
    assert_float_equal(optim_lr_at(&c, 9), 1e-3f, 1e-9);
    assert_float_equal(optim_lr_at(&c, 10), 1e-3f, 1e-9);
    assert_float_equal(optim_lr_at(&c, 55), 0.5e-3f, 1e-9);
    assert_float_equal(optim_lr_at(&c, 100), 0.0f, 1e-12);
}

/* Logits of the adapted model (B != 0) equal those of the merged model. */
static void lora_merge_computes_the_adapted_model(void **state) {
    (void)state;
    GPTConfig c;
    assert_int_equal(config_preset("tiny", &c), 0);
    c.dropout_embd = c.dropout_resid = c.dropout_attn = 0.0f;
    int T = 8;
    GPT *m = gpt_create(&c, 1, 0);
    gpt_init_weights(m, 1, 0.1f, 0);
    GPTLora *lo = lora_create(&c, T, 4, 8.0f, LORA_ATTN | LORA_MLP);
    lora_init(lo, 2);
    Rng rng;
    rng_seed(&rng, 3);
    for (int i = 0; i < lo->n_tensors; i++) /* B away from zero */
        if (lo->tensors[i].init == INIT_ZERO)
            for (size_t j = 0; j < lo->tensors[i].numel; j++) lo->params[lo->tensors[i].offset + j] = 0.05f * rng_normal(&rng);
    int tokens[8] = {1, 5, 9, 2, 7, 3, 3, 0};
    float *adapted = xalloc_floats((size_t)T * c.vocab_size), *merged = xalloc_floats((size_t)T * c.vocab_size),
          *base = xalloc_floats((size_t)T * c.vocab_size);
    gpt_logits(m, tokens, 1, T, base);
    m->lora = lo;
    gpt_logits(m, tokens, 1, T, adapted);
    m->lora = NULL;
    lora_merge(lo, m);
    gpt_logits(m, tokens, 1, T, merged);
    double diff = 0, change = 0;
    for (int i = 0; i < T * c.vocab_size; i++) {
        diff = fmax(diff, fabs(adapted[i] - merged[i]));
        change = fmax(change, fabs(adapted[i] - base[i]));
    }
    assert_true(change > 1e-3); /* the adapters matter */
    assert_true(diff < 1e-5);
    free(adapted), free(merged), free(base);
    lora_free(lo);
    gpt_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accuracy_counts_exact_matches),
        cmocka_unit_test(correlations_of_real_labels),
        cmocka_unit_test(linear_schedule_reaches_the_floor),
        cmocka_unit_test(lora_merge_computes_the_adapted_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
