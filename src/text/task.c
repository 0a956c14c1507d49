/* task.c: labelled task data (task.h): the names of tasks and label kinds, the options
 * checked, a file of records read (task_jsonl.c, task_csv.c) and split
 * (task_split.c), and the data's accessors. The task file is files/task_file.c.
 *
 * Reading is one pass over the records in file order: each record's pieces of text are
 * stripped, tokenized and laid out as the task's sequences in one growing set (Records);
 * only then, with the number of records known, are they split into /train and /val by
 * a seeded shuffle, each split keeping file order. Labels are resolved per record, except
 * that the number of classes, when neither given nor named, is known only at the end. */
#include "task_records.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

const char *const task_type_names[TASK_N + 1] = {"classify", "entail", "similar", "choice", NULL};
static const char *const kind_names[] = {"class", "real", "choice"};
const char *const task_fields[TASK_N][2] = {
    {"text", NULL}, {"premise", "hypothesis"}, {"text_a", "text_b"}, {"context", NULL}};

int task_type_parse(const char *name, TaskType *out) {
    for (int t = 0; t < TASK_N; t++)
        if (!strcmp(name, task_type_names[t])) return *out = (TaskType)t, 0;
    return gpt_error("unknown task '%s' (expected classify, entail, similar or choice)", name);
}

const char *task_type_name(TaskType t) { return t >= 0 && t < TASK_N ? task_type_names[t] : "?"; }

int task_n_fields(TaskType t) { return task_fields[t][1] ? 2 : 1; }

int label_kind_parse(const char *name, LabelKind *out) {
    for (int k = 0; k < 3; k++)
        if (!strcmp(name, kind_names[k])) return *out = (LabelKind)k, 0;
    return -1;
}

const char *label_kind_name(LabelKind k) { return k >= 0 && k < 3 ? kind_names[k] : "?"; }

int task_tokenizer_check(const Tokenizer *tok, const char *where) {
    static const char *const special[3] = {TOK_START, TOK_DELIM, TOK_EXTRACT};
    for (int i = 0; i < 3; i++)
        if (tokenizer_special_id(tok, special[i]) < 0)
            return gpt_error("%s has no %s token (a tokenizer from `gpt tokenizer train` has %s, %s and %s)", where,
                             special[i], TOK_START, TOK_DELIM, TOK_EXTRACT);
    return 0;
}

/* The options against each other and the tokenizer. */
static int check_options(Reader *r, const TaskPrepare *opt, TaskInfo *info) {
    if (opt->type < 0 || opt->type >= TASK_N) return gpt_error("unknown task type %d", (int)opt->type);
    if (!(opt->val_fraction >= 0.0 && opt->val_fraction < 1.0))
        return gpt_error("the validation fraction %g is outside [0, 1)", opt->val_fraction);
    int need = opt->type == TASK_CLASSIFY ? 3 : 5; /* the special tokens and a token a piece */
    if (opt->n_ctx < need)
        return gpt_error("n_ctx %d is too small for %s: a sequence needs at least %d tokens", opt->n_ctx,
                         task_type_names[opt->type], need);
    if (opt->type == TASK_CHOICE && (opt->n_classes || opt->label_names))
        return gpt_error("choice labels are the index of the right answer: classes and label names do not apply");
    if (opt->n_classes == 1 || opt->n_classes < 0)
        return gpt_error("%d classes: a classifier needs at least 2", opt->n_classes);
    if (opt->label_names && task_parse_names(opt->label_names, r)) return -1;
    if (opt->n_classes && r->names && opt->n_classes != r->n_names)
        return gpt_error("%d classes, but %d label names (%s)", opt->n_classes, r->n_names, opt->label_names);
    r->kind = opt->type == TASK_CHOICE                                             ? LABEL_CHOICE
              : opt->type == TASK_SIMILAR && !opt->n_classes && !opt->label_names ? LABEL_REAL
                                                                                  : LABEL_CLASS;
    r->n_classes = r->names ? r->n_names : opt->n_classes;
    if (task_tokenizer_check(r->tok, "the tokenizer")) return -1;
    *info = (TaskInfo){.type = opt->type, .label_kind = r->kind, .n_ctx = opt->n_ctx,
                       .vocab_size = tokenizer_vocab_size(r->tok), .start = tokenizer_special_id(r->tok, TOK_START),
                       .delim = tokenizer_special_id(r->tok, TOK_DELIM),
                       .extract = tokenizer_special_id(r->tok, TOK_EXTRACT)};
    return 0;
}

TaskData *task_from_text(const char *path, Tokenizer *tok, const TaskPrepare *opt) {
    Reader r = {.path = path, .tok = tok, .opt = opt, .max_label = -1};
    TaskInfo info;
    size_t len = 0;
    char *buf = NULL;
    int rc = check_options(&r, opt, &info);
    if (!rc) rc = !(buf = (char *)read_file(path, &len)) || check_text(path, (const uint8_t *)buf, len, 0);
    if (!rc) {
        size_t bom = utf8_bom_len((const uint8_t *)buf, len);
        char *text = buf + bom;
        len -= bom;
        size_t n = strlen(path);
        int csv = n >= 4 && !strcmp(path + n - 4, ".csv"), json = (n >= 6 && !strcmp(path + n - 6, ".jsonl")) ||
                                                                  (n >= 5 && !strcmp(path + n - 5, ".json"));
        if (!csv && !json) json = text[strspn(text, " \t\r\n")] == '{';
        if (!json) rc = task_read_csv(&r, text, len);
        else if (len) { /* the text is read already (and checked): the JSON Lines reader reads it from memory */
            FILE *f = fmemopen(text, len, "r");
            rc = f ? task_read_jsonl(&r, f) : gpt_error("%s: cannot read from memory: %s", path, strerror(errno));
            if (f) fclose(f);
        }
    }
    if (!rc && r.rec.n_ex == 0) rc = gpt_error("%s: no records", path);
    if (!rc && r.kind == LABEL_CLASS && !r.n_classes) {
        r.n_classes = r.max_label + 1;
        if (r.n_classes < 2)
            rc = gpt_error("%s: the labels reach only %d: a classifier needs at least 2 classes (give the number of "
                           "classes or their names)", path, r.max_label);
    }
    TaskData *d = NULL;
    if (!rc) {
        d = xcalloc(1, sizeof *d);
        info.n_classes = r.kind == LABEL_CLASS ? r.n_classes : 0;
        info.truncated = r.truncated;
        d->info = info;
        d->names = r.names;
        r.names = NULL;
        task_split_records(d, &r.rec, opt);
    }
    for (int i = 0; r.names && i < r.n_names; i++) free(r.names[i]);
    free(r.names);
    free(r.name_value);
    for (int i = 0; i < r.cap_piece_tok; i++) free(r.piece_tok[i].ids);
    free(r.piece_tok);
    free(r.rec.tokens.ids);
    free(r.rec.seq_len);
    free(r.rec.ex_seqs);
    free(r.rec.labels);
    free(buf);
    return d;
}

void task_free(TaskData *d) {
    if (!d) return;
    for (int i = 0; d->names && i < d->info.n_classes; i++) free(d->names[i]);
    free(d->names);
    for (int s = 0; s < 2; s++) {
        TaskSplit *sp = &d->split[s];
        free(sp->tokens);
        free(sp->seq_off);
        free(sp->ex_off);
        free(sp->len);
        free(sp->labels);
    }
    free(d);
}

const TaskInfo *task_info(const TaskData *d) { return &d->info; }

int64_t task_examples(const TaskData *d, int split) { return d->split[split].n_examples; }

void task_example(const TaskData *d, int split, int64_t i, TaskExample *out) {
    const TaskSplit *s = &d->split[split];
    int64_t first = s->ex_off[i];
    out->n_seqs = (int)(s->ex_off[i + 1] - first);
    out->tokens = s->tokens + s->seq_off[first];
    out->len = s->len + first;
    out->label = s->labels[i];
}

const char *task_class_name(const TaskData *d, int k) {
    return d->names && k >= 0 && k < d->info.n_classes ? d->names[k] : NULL;
}
