/* task_metrics.h: how good a fine-tuned model's predictions are: accuracy for classes
 * and choices; Pearson and Spearman correlation and the mean squared error for real
 * labels (GLUE's measures). Pure functions of the predictions and labels, so gpt
 * finetune's evaluation and gpt eval (cli/finetune.c) report the same numbers. */
#ifndef GPT_TASK_METRICS_H
#define GPT_TASK_METRICS_H

#include <jansson.h>
#include <stdint.h>

/* NAN where a measure does not apply to the label kind (or n is 0). */
typedef struct { double accuracy, pearson, spearman, mse; } TaskMetrics;

/* The metrics of pred (n) against label (n) for label_kind (task.h's LABEL_*). */
TaskMetrics task_metrics(int label_kind, const double *pred, const double *label, int64_t n);
/* Into a metrics line: PREFIXloss and each metric that is not NAN (PREFIXaccuracy, ...). */
void task_metrics_json(json_t *line, const char *prefix, const TaskMetrics *tm, double loss);

#endif
