/* task_records.h (private to src/text/task*.c): a record of task data on its way from
 * JSON Lines or CSV to token sequences. The readers (task_jsonl.c, task_csv.c) cut a
 * record into pieces of text and a label; task_transform.c lays the pieces out as the
 * task's sequences in one growing set (Records), file order; task_split.c resolves the
 * labels and, at the end, deals the records into /train and /val. */
#ifndef GPT_TASK_RECORDS_H
#define GPT_TASK_RECORDS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "text/task.h"
#include "text/tokenizer.h"

/* The text fields of each task in sequence order (task.c); choice's answers follow its
 * context, from the field (JSON) or columns (CSV) TASK_ANSWERS. */
extern const char *const task_fields[TASK_N][2];
#define TASK_ANSWERS "choices"
int task_n_fields(TaskType t);

/* The records read so far, their sequences back to back. */
typedef struct {
    TokenVec tokens;
    int *seq_len;
    size_t n_seqs, cap_seqs;
    int *ex_seqs;   /* sequences per example */
    double *labels;
    size_t n_ex, cap_ex;
} Records;

/* A piece of text of a record, and the field it came from (index >= 0: an element of it). */
typedef struct {
    const char *p;
    size_t n;
    const char *field;
    int index;
} Piece;

/* A record as read: its pieces (views into the reader's text) and its label. */
typedef struct {
    Piece *pieces;  /* the task's fields in order, then choice's answers */
    int n_pieces, cap_pieces;
    int has_label, label_is_number;
    double label_number;
    const char *label_text;
    size_t label_len;
} Record;

/* One task_from_text: the options, the label state and the records so far. */
typedef struct {
    const char *path;
    size_t line;           /* of the record being read */
    Tokenizer *tok;
    const TaskPrepare *opt;
    LabelKind kind;
    int n_classes;         /* 0 while it is to come from the labels */
    char **names;          /* label names (n_names), or NULL */
    double *name_value;    /* each name as a number, NAN if it is not one */
    int n_names;
    int max_label;         /* largest class index seen */
    TokenVec *piece_tok;   /* the tokens of each piece of the current record */
    int cap_piece_tok;
    int64_t truncated;
    Records rec;
} Reader;

/* ---- task_transform.c: GPT-1's input transformations ---- */

/* Empties a record, keeping its array of pieces. */
void task_record_reset(Record *r);
void task_add_piece(Record *r, const char *p, size_t n, const char *field, int index);
/* "PATH:LINE: field "F"[i] what"; -1. */
int task_record_error(const Reader *r, const Piece *pc, const char *what);
/* Strips, tokenizes and lays out one record as its task's sequences; its label resolved. */
int task_add_record(Reader *r, Record *rec);

/* ---- task_split.c: labels and splits ---- */

/* The record's label as a class index, real value or answer index (NAN: none). */
int task_resolve_label(Reader *r, const Record *rec, int n_answers, double *out);
/* "a,b,c" into r->names (none empty, none twice); -1 otherwise. */
int task_parse_names(const char *list, Reader *r);
/* Deals R's records into d's splits: a seeded shuffle sends round(F n) to /val, and
 * both keep file order. */
void task_split_records(TaskData *d, const Records *R, const TaskPrepare *opt);

/* ---- the readers: every record through task_add_record ---- */

/* JSON Lines from f (task_jsonl.c); CSV, RFC 4180, from buf[0..len) (task_csv.c). */
int task_read_jsonl(Reader *r, FILE *f);
int task_read_csv(Reader *r, const char *buf, size_t len);

#endif
