/* task_split.c: labels and splits of task data (task.h): a record's label resolved as a
 * class (by index or by name), a real value or an answer's index; and the records dealt
 * into /train and /val by a seeded shuffle. */
#include "task_records.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/util.h"

/* The label as text for messages: the JSON number as read, or the text. */
static void label_repr(const Record *rec, char *buf, size_t size) {
    if (rec->label_is_number) snprintf(buf, size, "%.15g", rec->label_number);
    else snprintf(buf, size, "'%.*s'", (int)(rec->label_len < 64 ? rec->label_len : 64), rec->label_text);
}

/* Parses the whole of text[0..n) as a number; -1 if it is not one. */
static int text_number(const char *text, size_t n, double *out) {
    char buf[64], *end;
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, text, n);
    buf[n] = '\0';
    errno = 0;
    *out = strtod(buf, &end);
    return *end || errno || !isfinite(*out) ? -1 : 0;
}

int task_resolve_label(Reader *r, const Record *rec, int n_answers, double *out) {
    char shown[80];
    *out = NAN;
    if (!rec->has_label)
        return r->opt->labels_optional ? 0 : gpt_error("%s:%zu: field \"label\" is missing", r->path, r->line);
    label_repr(rec, shown, sizeof shown);
    double v = rec->label_number;
    if (!rec->label_is_number && text_number(rec->label_text, rec->label_len, &v) && (r->kind != LABEL_CLASS || !r->names))
        return gpt_error("%s:%zu: label %s is not a number%s", r->path, r->line, shown,
                         r->kind == LABEL_CLASS ? " (name the classes to use other values)" : "");
    if (r->kind == LABEL_REAL) return *out = v, 0;
    if (r->names) {
        for (int k = 0; k < r->n_names; k++)
            if (rec->label_is_number ? r->name_value[k] == v
                                     : strlen(r->names[k]) == rec->label_len && !memcmp(r->names[k], rec->label_text, rec->label_len))
                return *out = k, 0;
        return gpt_error("%s:%zu: label %s is not one of the label names (%s)", r->path, r->line, shown, r->opt->label_names);
    }
    if (v != floor(v) || fabs(v) > INT_MAX) return gpt_error("%s:%zu: label %s is not an integer", r->path, r->line, shown);
    int k = (int)v, n = r->kind == LABEL_CHOICE ? n_answers : r->n_classes;
    if (n > 0 && (k < 0 || k >= n))
        return gpt_error("%s:%zu: label %d is outside the %d %s [0, %d)", r->path, r->line, k, n,
                         r->kind == LABEL_CHOICE ? "choices" : "classes", n);
    if (k < 0)
        return gpt_error("%s:%zu: label %d is negative: classes count from 0 (name the classes to use other values)",
                         r->path, r->line, k);
    if (k > r->max_label) r->max_label = k;
    return *out = k, 0;
}

static void split_alloc(TaskSplit *s) {
    s->tokens = xmalloc(((size_t)s->n_tokens + 1) * sizeof *s->tokens);
    s->seq_off = xmalloc(((size_t)s->n_seqs + 1) * sizeof *s->seq_off);
    s->ex_off = xmalloc(((size_t)s->n_examples + 1) * sizeof *s->ex_off);
    s->len = xmalloc(((size_t)s->n_seqs + 1) * sizeof *s->len);
    s->labels = xmalloc(((size_t)s->n_examples + 1) * sizeof *s->labels);
}

void task_split_records(TaskData *d, const Records *R, const TaskPrepare *opt) {
    int64_t n = (int64_t)R->n_ex, n_val = (int64_t)floor(opt->val_fraction * (double)n + 0.5);
    int64_t *perm = xmalloc(((size_t)n + 1) * sizeof *perm);
    char *in_val = xcalloc((size_t)n + 1, 1);
    Rng g;
    rng_seed(&g, opt->seed);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(rng_next(&g) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int64_t k = 0; k < n_val; k++) in_val[perm[k]] = 1;
    for (int pass = 0; pass < 2; pass++) { /* count, then fill */
        TaskSplit *out[2] = {&d->split[0], &d->split[1]};
        if (pass == 1) split_alloc(out[0]), split_alloc(out[1]);
        for (int s = 0; s < 2; s++) {
            out[s]->n_examples = out[s]->n_seqs = out[s]->n_tokens = 0;
            if (pass) out[s]->ex_off[0] = out[s]->seq_off[0] = 0;
        }
        size_t seq = 0, tok = 0;
        for (int64_t i = 0; i < n; i++) {
            TaskSplit *s = out[(int)in_val[i]];
            if (pass) s->labels[s->n_examples] = R->labels[i];
            for (int k = 0; k < R->ex_seqs[i]; k++, seq++) {
                int l = R->seq_len[seq];
                if (pass) {
                    memcpy(s->tokens + s->n_tokens, R->tokens.ids + tok, (size_t)l * sizeof *s->tokens);
                    s->len[s->n_seqs] = l;
                    s->seq_off[s->n_seqs + 1] = s->n_tokens + l;
                }
                s->n_seqs++;
                s->n_tokens += l;
                tok += (size_t)l;
            }
            s->n_examples++;
            if (pass) s->ex_off[s->n_examples] = s->n_seqs;
        }
    }
    free(perm);
    free(in_val);
}

int task_parse_names(const char *list, Reader *r) {
    char *copy = xstrdup(list);
    for (char *p = copy, *comma;; p = comma + 1) {
        comma = strchr(p, ',');
        if (comma) *comma = '\0';
        r->names = xrealloc(r->names, (size_t)(r->n_names + 1) * sizeof *r->names);
        r->name_value = xrealloc(r->name_value, (size_t)(r->n_names + 1) * sizeof *r->name_value);
        r->names[r->n_names] = xstrdup(p);
        if (text_number(p, strlen(p), &r->name_value[r->n_names])) r->name_value[r->n_names] = NAN;
        r->n_names++;
        int dup = 0;
        for (int k = 0; k + 1 < r->n_names; k++) dup |= !strcmp(r->names[k], p);
        if (!*p || dup) {
            free(copy);
            return gpt_error("label names '%s': %s", list, *p ? "a name repeats" : "a name is empty");
        }
        if (!comma) break;
    }
    free(copy);
    return r->n_names < 2 ? gpt_error("label names '%s': need at least 2 classes", list) : 0;
}
