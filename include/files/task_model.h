/* task_model.h: fine-tuned model files: a model (or the adapters on a named base), the
 * task head, the task's description and the tokenizer, so that predict and eval-task
 * need nothing else.
 *
 * Layout (docs/formats.md): format "gpt-task-model"; /model as in a model file (for a
 * LoRA fine-tuning its configuration only); /head/weight and /head/bias; the task as root
 * attributes (task, label_kind, n_classes, n_ctx) and /label_names; for LoRA, /lora/<name>
 * per adapter tensor with attributes rank, alpha, targets, base (the base model's path as
 * given) and base_fingerprint (gpt_params_fingerprint of the base), checked on loading. */
#ifndef GPT_TASK_MODEL_H
#define GPT_TASK_MODEL_H

#include "model/head.h"
#include "model/lora.h"
#include "model/model.h"
#include "text/task.h"
#include "text/tokenizer.h"

typedef struct {
    GPT *m;                  /* with m->lora = lora when adapters were trained */
    GPTLora *lora;           /* NULL after a full fine-tuning or a merge */
    TaskHead *head;          /* NULL for adapters from continued pre-training */
    Tokenizer *tok;
    TaskInfo info;
    int n_names;
    char **names;            /* class names, or NULL */
    char base[4096];         /* LoRA: the base model file */
} TaskModel;

/* m: the model (with tensors unless lora is given); base, base_fingerprint: LoRA only.
 * head may be NULL (adapters from continued pre-training). info/names: the task's. */
int task_model_write(const char *path, const GPT *m, const GPTLora *lora, const char *base, uint64_t base_fingerprint,
                     const TaskHead *head, const TaskInfo *info, char *const *names, int n_names, const Tokenizer *tok);
/* Loads a task model (or, for adapters, its base: base_override, or the path it names)
 * for passes of up to max_batch sequences. NULL with gpt_error() naming the file; with
 * check_finite also if a tensor holds a NaN or an infinity (0: as stored, for gpt inspect).
 * task_model_write refuses such tensors as model_file_write does. */
TaskModel *task_model_load(const char *path, const char *base_override, int max_batch, int check_finite);
void task_model_free(TaskModel *t);

#endif
