/* task_metrics.c: accuracy, correlations and squared error of predictions (see
 * task_metrics.h). Spearman's coefficient is Pearson's of the ranks, ties sharing their
 * mean rank. */
#include "run/task_metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/util.h"
#include "text/task.h"

static double pearson(const double *x, const double *y, int64_t n) {
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int64_t i = 0; i < n; i++) mx += x[i], my += y[i];
    mx /= (double)n, my /= (double)n;
    for (int64_t i = 0; i < n; i++) {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx) * (x[i] - mx);
        syy += (y[i] - my) * (y[i] - my);
    }
    return sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : NAN;
}

static const double *rank_keys;
static int by_key(const void *a, const void *b) {
    double x = rank_keys[*(const int64_t *)a], y = rank_keys[*(const int64_t *)b];
    return (x > y) - (x < y);
}

/* Ranks 1..n, ties sharing their mean rank (as Spearman's coefficient needs). */
static void ranks_of(const double *v, int64_t n, double *out) {
    int64_t *idx = xmalloc(sizeof(int64_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    rank_keys = v;
    qsort(idx, (size_t)n, sizeof *idx, by_key);
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j + 1 < n && v[idx[j + 1]] == v[idx[i]]) j++;
        for (int64_t k = i; k <= j; k++) out[idx[k]] = 0.5 * (double)(i + j) + 1.0;
        i = j + 1;
    }
    free(idx);
}

TaskMetrics task_metrics(int label_kind, const double *pred, const double *label, int64_t n) {
    TaskMetrics t = {NAN, NAN, NAN, NAN};
    if (n <= 0) return t;
    if (label_kind != LABEL_REAL) {
        int64_t right = 0;
        for (int64_t i = 0; i < n; i++) right += pred[i] == label[i];
        t.accuracy = (double)right / (double)n;
        return t;
    }
    double se = 0;
    for (int64_t i = 0; i < n; i++) se += (pred[i] - label[i]) * (pred[i] - label[i]);
    t.mse = se / (double)n;
    t.pearson = pearson(pred, label, n);
    double *rp = xmalloc(sizeof(double) * (size_t)n), *rl = xmalloc(sizeof(double) * (size_t)n);
    ranks_of(pred, n, rp);
    ranks_of(label, n, rl);
    t.spearman = pearson(rp, rl, n);
    free(rp), free(rl);
    return t;
}

void task_metrics_json(json_t *j, const char *prefix, const TaskMetrics *tm, double loss) {
    char key[64];
    const char *names[] = {"loss", "accuracy", "pearson", "spearman", "mse"};
    double v[] = {loss, tm->accuracy, tm->pearson, tm->spearman, tm->mse};
    for (int i = 0; i < 5; i++)
        if (!isnan(v[i])) {
            snprintf(key, sizeof key, "%s%s", prefix, names[i]);
            json_object_set_new(j, key, json_real_or_null(v[i]));
        }
}
