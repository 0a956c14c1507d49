/* task_kind.h: what a fine-tuning task is, as the model's head and the task data both
 * need it: the task (how a record becomes sequences, text/task.h) and the kind of its
 * labels (what the head outputs, model/head.h). Only the enums: their names and the
 * records live in text/task.h. */
#ifndef GPT_TASK_KIND_H
#define GPT_TASK_KIND_H

typedef enum { TASK_CLASSIFY = 0, TASK_ENTAIL, TASK_SIMILAR, TASK_CHOICE, TASK_N } TaskType;

/* What the labels are: classes (classify, entail, similar with --num-classes), one real
 * number (similar, regression), or the index of the right answer (choice). */
typedef enum { LABEL_CLASS = 0, LABEL_REAL, LABEL_CHOICE } LabelKind;

#endif
