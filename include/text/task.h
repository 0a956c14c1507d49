/* task.h: labelled task data for fine-tuning: records read from JSON Lines or CSV and
 * turned into token sequences by GPT-1's input transformations, split into /train and
 * /val. The task file that holds the result is files/task_file.h.
 *
 * Every record becomes one or more token sequences, each built as in GPT-1 (section 3.3):
 *   classify  <start> text <extract>                                  one sequence
 *   entail    <start> premise <delim> hypothesis <extract>            one sequence
 *   similar   <start> text_a <delim> text_b <extract>, and the same    two sequences
 *             with text_b first (the model adds their extract states)
 *   choice    <start> context <delim> choice_k <extract>, per answer   one per answer
 * A sequence longer than n_ctx is an error naming the record, unless truncation is asked
 * for: then the longest piece loses its last token until the sequence fits (special
 * tokens are never cut). Every piece of text loses its leading and trailing whitespace
 * (CSV exports often end a field with " \n"); a piece that is then empty is an error.
 *
 * Task data is small next to a corpus: it is held whole, each split as the tokens of all
 * its sequences, the sequences' offsets, the examples' offsets into the sequences and
 * one label per example (the layout of the task file, docs/formats.md). */
#ifndef GPT_TASK_H
#define GPT_TASK_H

#include <stdint.h>

#include "model/task_kind.h"
#include "text/tokenizer.h"

/* The tasks' names in TaskType's order, NULL-terminated (the command line's choices). */
extern const char *const task_type_names[];
/* "classify", "entail", "similar", "choice"; -1 with gpt_error() for another name. */
int task_type_parse(const char *name, TaskType *out);
const char *task_type_name(TaskType t);
/* "class", "real", "choice"; -1 (no message) for another name. */
int label_kind_parse(const char *name, LabelKind *out);
const char *label_kind_name(LabelKind k);

typedef struct {
    TaskType type;
    LabelKind label_kind;
    int n_classes;          /* LABEL_CLASS: K >= 2; otherwise 0 */
    int n_ctx;              /* every sequence has at most this many tokens */
    int vocab_size;         /* of the tokenizer the file was made with */
    int start, delim, extract; /* the special tokens' ids */
    int64_t truncated;      /* records cut to fit n_ctx */
} TaskInfo;

typedef struct {
    int n_seqs;             /* 1, 2 (similar) or the number of answers (choice) */
    const int32_t *tokens;  /* the example's sequences back to back */
    const int *len;         /* (n_seqs) their lengths, each in [3, n_ctx] */
    double label;           /* class index, real value, or the right answer's index; NAN: none */
} TaskExample;

/* Options of the transformation (gpt prepare-task and the reading of a JSONL/CSV file
 * by predict and eval-task). */
typedef struct {
    TaskType type;
    int n_ctx;
    int truncate;           /* cut long sequences instead of failing */
    int n_classes;          /* 0: from the labels (largest index + 1), or regression for similar */
    const char *label_names;/* "neg,pos": label values in class order, mapped to 0, 1, ... ; NULL: integers */
    double val_fraction;    /* this share of the records (rounded) goes to /val, chosen by seed */
    uint64_t seed;
    int labels_optional;    /* records may lack "label" (prediction input): label NAN */
} TaskPrepare;

/* One split, every array exactly sized; the task data owns them (task_free). */
typedef struct {
    int64_t n_examples, n_seqs, n_tokens;
    int32_t *tokens;  /* (n_tokens) the sequences back to back */
    int64_t *seq_off; /* (n_seqs + 1) where each sequence starts in tokens, then n_tokens */
    int64_t *ex_off;  /* (n_examples + 1) each example's first sequence, then n_seqs */
    int *len;         /* (n_seqs) each sequence's length */
    double *labels;   /* (n_examples) */
} TaskSplit;

typedef struct TaskData {
    TaskInfo info;
    char **names;     /* (info.n_classes) the label names, or NULL */
    TaskSplit split[2]; /* [0] /train, [1] /val (files/data.h: SPLIT_TRAIN, SPLIT_VAL) */
} TaskData;

/* 0 if tok has the special tokens the transformations need; else -1 with gpt_error()
 * naming `where` (the tokenizer's file) and the missing token. */
int task_tokenizer_check(const Tokenizer *tok, const char *where);

/* Reads JSON Lines (one object per line, fields by task as above, "label") or CSV (a header
 * row naming the fields, recognised by a field "label", the answers being the columns
 * named choice*; or, without one, the label first and then the task's fields in
 * order; for choice, every column after the context is an answer) and applies the
 * transformation with tok. Records go to /train and /val as the options say. NULL with
 * gpt_error() naming the file, the line and the field on any bad record. */
TaskData *task_from_text(const char *path, Tokenizer *tok, const TaskPrepare *opt);

/* Frees d and all it holds (NULL is fine). */
void task_free(TaskData *d);

const TaskInfo *task_info(const TaskData *d);
int64_t task_examples(const TaskData *d, int split);   /* split: SPLIT_TRAIN or SPLIT_VAL */
/* Example i of a split; the pointers stay valid until task_free(). */
void task_example(const TaskData *d, int split, int64_t i, TaskExample *out);
/* Names of the classes (label_names), NULL if the labels were integers. */
const char *task_class_name(const TaskData *d, int k);

#endif
