/* finetune_eval.c: fine-tuning's validation (see finetune_tuner.h): the task's metrics
 * over /val, every example predicted once (example w by rank w mod P) and the
 * predictions summed over the ranks, or on corpora the language-model loss (eval.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/util.h"
#include "dist/dist.h"
#include "finetune_tuner.h"
#include "run/eval.h"
#include "run/task_metrics.h"

/* Collective: predictions for every example of a split (example w on rank w mod P) and
 * the head's mean loss. */
static int evaluate_task(Tuner *t, int split, TaskMetrics *tm, double *loss) {
    int64_t n = task_examples(t->td, split);
    int rank = dist_rank(), P = dist_size();
    double *pred = xcalloc((size_t)(n ? n : 1), sizeof(double)), *label = xcalloc((size_t)(n ? n : 1), sizeof(double));
    int64_t *idx = xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1)), mine = 0;
    for (int64_t w = rank; w < n; w += P) idx[mine++] = w;
    double *local = xcalloc((size_t)(mine ? mine : 1), sizeof(double)), sums[2] = {0, 0};
    int lambda_on = t->lambda_on;
    t->lambda_on = 0;
    finetune_run_examples(t, split, idx, mine, NULL, 0.0f, 0.0f, sums, local);
    t->lambda_on = lambda_on;
    for (int64_t i = 0; i < mine; i++) {
        TaskExample e;
        task_example(t->td, split, idx[i], &e);
        pred[idx[i]] = local[i];
        label[idx[i]] = e.label;
    }
    dist_sum(pred, (size_t)n);
    dist_sum(label, (size_t)n);
    dist_sum(sums, 1);
    *tm = task_metrics(t->info->label_kind, pred, label, n);
    *loss = n ? sums[0] / (double)n : NAN;
    free(pred), free(label), free(idx), free(local);
    return 0;
}

int finetune_evaluate(void *ctx, json_t *line, char *summary, size_t size) {
    Tuner *t = ctx;
    TaskMetrics tm = {NAN, NAN, NAN, NAN};
    double loss;
    gradsync_gather_wait(t->sync);
    if (t->corpus) {
        double losses[BLEND_MAX + 1], nll[BLEND_MAX];
        int64_t tokens[BLEND_MAX];
        if (eval_blend(t->m, t->corpus, SPLIT_VAL, t->corpus_val, losses, nll, tokens)) return -1;
        eval_blend_report(t->corpus, losses, " | val loss", line, summary, size);
        return 0;
    } else {
        if (evaluate_task(t, SPLIT_VAL, &tm, &loss)) return -1;
        if (t->info->label_kind == LABEL_REAL)
            snprintf(summary, size, " | val loss %.4f pearson %.4f spearman %.4f", loss, tm.pearson, tm.spearman);
        else snprintf(summary, size, " | val loss %.4f accuracy %.4f", loss, tm.accuracy);
    }
    task_metrics_json(line, "val_", &tm, loss);
    return 0;
}
