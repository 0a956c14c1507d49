/* task.c: labelled task data (see task.h): records from JSON Lines or CSV, GPT-1's input
 * transformations, and the task file.
 *
 * Reading is one pass over the records in file order: each record's pieces of text are
 * stripped, tokenized and laid out as the task's sequences in one growing set (Records);
 * only then, with the number of records known, are they split into /train and /val by
 * a seeded shuffle, each split keeping file order. Labels are resolved per record, except
 * that the number of classes, when neither given nor named, is known only at the end. */
#include "text/task.h"

#include <errno.h>
#include <hdf5.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files/data.h"
#include "files/h5util.h"
#include "base/rng.h"
#include "base/util.h"
#include "base/version.h"
#include "files/formats.h"


static const char *const type_names[TASK_N] = {"classify", "entail", "similar", "choice"};
static const char *const kind_names[] = {"class", "real", "choice"};
/* The text fields of each task in sequence order; choice's answers follow its context. */
static const char *const task_fields[TASK_N][2] = {
    {"text", NULL}, {"premise", "hypothesis"}, {"text_a", "text_b"}, {"context", NULL}};
static const char ANSWERS[] = "choices";

int task_type_parse(const char *name, TaskType *out) {
    for (int t = 0; t < TASK_N; t++)
        if (!strcmp(name, type_names[t])) return *out = (TaskType)t, 0;
    return gpt_error("unknown task '%s' (expected classify, entail, similar or choice)", name);
}

const char *task_type_name(TaskType t) { return t >= 0 && t < TASK_N ? type_names[t] : "?"; }

static int n_fields(TaskType t) { return task_fields[t][1] ? 2 : 1; }

/* One split, every array exactly sized. */
typedef struct {
    int64_t n_examples, n_seqs, n_tokens;
    int32_t *tokens;  /* (n_tokens) */
    int64_t *seq_off; /* (n_seqs + 1) */
    int64_t *ex_off;  /* (n_examples + 1), into the sequences */
    int *len;         /* (n_seqs) */
    double *labels;   /* (n_examples) */
} Split;

struct TaskData {
    TaskInfo info;
    char **names; /* (n_classes) the label names, or NULL */
    Split split[2];
};

/* ---- records in file order ---- */

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

typedef struct {
    Piece *pieces;  /* the task's fields in order, then choice's answers */
    int n_pieces, cap_pieces;
    int has_label, label_is_number;
    double label_number;
    const char *label_text;
    size_t label_len;
} Record;

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

/* Empties a record, keeping its array of pieces. */
static void record_reset(Record *r) { *r = (Record){.pieces = r->pieces, .cap_pieces = r->cap_pieces}; }

static void add_piece(Record *r, const char *p, size_t n, const char *field, int index) {
    if (r->n_pieces == r->cap_pieces)
        r->pieces = xrealloc(r->pieces, (size_t)(r->cap_pieces = r->cap_pieces ? 2 * r->cap_pieces : 8) * sizeof *r->pieces);
    r->pieces[r->n_pieces++] = (Piece){p, n, field, index};
}

static int record_error(const Reader *r, const Piece *pc, const char *what) {
    if (pc->index >= 0)
        return gpt_error("%s:%zu: field \"%s\"[%d] %s", r->path, r->line, pc->field, pc->index, what);
    return gpt_error("%s:%zu: field \"%s\" %s", r->path, r->line, pc->field, what);
}

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

/* The record's label as a class index, real value or answer index (NAN: none). */
static int resolve_label(Reader *r, const Record *rec, int n_answers, double *out) {
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

/* Cuts the longest piece (the first of equal ones) by its last token until `specials`
 * plus the pieces fit n_ctx; n_ctx holds the specials and a token a piece (checked
 * beforehand), so the longest piece always has a token to spare. 1 if anything was cut. */
static int fit(int *len, int n, int specials, int n_ctx) {
    int total = specials, cut = 0;
    for (int i = 0; i < n; i++) total += len[i];
    for (; total > n_ctx; total--, cut = 1) {
        int longest = 0;
        for (int i = 1; i < n; i++)
            if (len[i] > len[longest]) longest = i;
        len[longest]--;
    }
    return cut;
}

/* Appends <start> a [<delim> b] <extract>, the pieces cut to la and lb tokens. */
static void push_seq(Reader *r, const TokenVec *a, int la, const TokenVec *b, int lb) {
    Records *R = &r->rec;
    size_t before = R->tokens.n;
    tokvec_push(&R->tokens, tokenizer_special_id(r->tok, TOK_START));
    for (int i = 0; i < la; i++) tokvec_push(&R->tokens, a->ids[i]);
    if (b) {
        tokvec_push(&R->tokens, tokenizer_special_id(r->tok, TOK_DELIM));
        for (int i = 0; i < lb; i++) tokvec_push(&R->tokens, b->ids[i]);
    }
    tokvec_push(&R->tokens, tokenizer_special_id(r->tok, TOK_EXTRACT));
    if (R->n_seqs == R->cap_seqs)
        R->seq_len = xrealloc(R->seq_len, (R->cap_seqs = R->cap_seqs ? 2 * R->cap_seqs : 256) * sizeof *R->seq_len);
    R->seq_len[R->n_seqs++] = (int)(R->tokens.n - before);
}

/* Checks that a sequence of `specials` + the pieces fits, or cuts it with --truncate. */
static int fit_or_fail(Reader *r, int *len, int n, int answer, int *cut) {
    int specials = n + 1, total = specials;
    for (int i = 0; i < n; i++) total += len[i];
    if (total <= r->opt->n_ctx) return 0;
    if (r->opt->truncate) return *cut |= fit(len, n, specials, r->opt->n_ctx), 0;
    char which[48] = "the record";
    if (answer >= 0) snprintf(which, sizeof which, "the record's answer %d", answer);
    return gpt_error("%s:%zu: %s is %d tokens with its start %sextract tokens, more than n_ctx %d; "
                     "pass --truncate to cut the longest piece",
                     r->path, r->line, which, total, n > 1 ? ", delimiter and " : "and ", r->opt->n_ctx);
}

/* Strips, tokenizes and lays out one record as its task's sequences. */
static int add_record(Reader *r, Record *rec) {
    TaskType type = r->opt->type;
    int n = rec->n_pieces;
    if (n > r->cap_piece_tok) {
        r->piece_tok = xrealloc(r->piece_tok, (size_t)n * sizeof *r->piece_tok);
        memset(r->piece_tok + r->cap_piece_tok, 0, (size_t)(n - r->cap_piece_tok) * sizeof *r->piece_tok);
        r->cap_piece_tok = n;
    }
    int *len = xmalloc((size_t)n * sizeof *len), rc = 0;
    for (int i = 0; !rc && i < n; i++) {
        Piece *pc = &rec->pieces[i];
        while (pc->n && strchr(" \t\r\n\v\f", pc->p[0])) pc->p++, pc->n--;
        while (pc->n && strchr(" \t\r\n\v\f", pc->p[pc->n - 1])) pc->n--;
        r->piece_tok[i].n = 0;
        if (!pc->n) rc = record_error(r, pc, "is empty");
        else if (tokenizer_encode(r->tok, (const uint8_t *)pc->p, pc->n, 0, &r->piece_tok[i])) rc = -1;
        else if (r->piece_tok[i].n > INT_MAX / 2) rc = record_error(r, pc, "is too long");
        else len[i] = (int)r->piece_tok[i].n;
    }
    double label;
    if (!rc) rc = resolve_label(r, rec, n - 1, &label);
    int cut = 0, n_seqs = 0;
    const TokenVec *t = r->piece_tok;
    if (!rc && type == TASK_CHOICE) {
        for (int k = 1; !rc && k < n; k++) {
            int l[2] = {len[0], len[k]};
            if (!(rc = fit_or_fail(r, l, 2, k - 1, &cut))) push_seq(r, &t[0], l[0], &t[k], l[1]);
        }
        n_seqs = n - 1;
    } else if (!rc && !(rc = fit_or_fail(r, len, n, -1, &cut))) {
        push_seq(r, &t[0], len[0], n > 1 ? &t[1] : NULL, n > 1 ? len[1] : 0);
        /* similar: both orders, cut alike, since the order of the texts means nothing */
        if (type == TASK_SIMILAR) push_seq(r, &t[1], len[1], &t[0], len[0]);
        n_seqs = type == TASK_SIMILAR ? 2 : 1;
    }
    free(len);
    if (rc) return -1;
    r->truncated += cut;
    Records *R = &r->rec;
    if (R->n_ex == R->cap_ex) {
        R->cap_ex = R->cap_ex ? 2 * R->cap_ex : 256;
        R->ex_seqs = xrealloc(R->ex_seqs, R->cap_ex * sizeof *R->ex_seqs);
        R->labels = xrealloc(R->labels, R->cap_ex * sizeof *R->labels);
    }
    R->ex_seqs[R->n_ex] = n_seqs;
    R->labels[R->n_ex++] = label;
    return 0;
}

/* ---- JSON Lines ---- */

static int json_piece(Reader *r, json_t *obj, const char *field, Record *rec) {
    json_t *v = json_object_get(obj, field);
    if (!v) return gpt_error("%s:%zu: field \"%s\" is missing", r->path, r->line, field);
    if (!json_is_string(v)) return gpt_error("%s:%zu: field \"%s\" is not a string", r->path, r->line, field);
    add_piece(rec, json_string_value(v), json_string_length(v), field, -1);
    return 0;
}

static int json_record(Reader *r, json_t *obj, Record *rec) {
    if (!json_is_object(obj)) return gpt_error("%s:%zu: expected a JSON object", r->path, r->line);
    TaskType type = r->opt->type;
    for (int i = 0; i < n_fields(type); i++)
        if (json_piece(r, obj, task_fields[type][i], rec)) return -1;
    if (type == TASK_CHOICE) {
        json_t *a = json_object_get(obj, ANSWERS);
        if (!a) return gpt_error("%s:%zu: field \"%s\" is missing", r->path, r->line, ANSWERS);
        if (!json_is_array(a) || json_array_size(a) < 2)
            return gpt_error("%s:%zu: field \"%s\" is not an array of at least 2 strings", r->path, r->line, ANSWERS);
        for (size_t k = 0; k < json_array_size(a); k++) {
            json_t *s = json_array_get(a, k);
            if (!json_is_string(s))
                return gpt_error("%s:%zu: field \"%s\"[%zu] is not a string", r->path, r->line, ANSWERS, k);
            add_piece(rec, json_string_value(s), json_string_length(s), ANSWERS, (int)k);
        }
    }
    json_t *label = json_object_get(obj, "label");
    rec->has_label = label && !json_is_null(label);
    if (json_is_number(label)) rec->label_is_number = 1, rec->label_number = json_number_value(label);
    else if (json_is_string(label)) rec->label_text = json_string_value(label), rec->label_len = json_string_length(label);
    else if (rec->has_label)
        return gpt_error("%s:%zu: field \"label\" is not a number or a string", r->path, r->line);
    return add_record(r, rec);
}

static int read_jsonl(Reader *r, const char *buf, size_t len) {
    Record rec = {0};
    int rc = 0;
    r->line = 0;
    for (size_t p = 0; !rc && p < len;) {
        const char *nl = memchr(buf + p, '\n', len - p);
        size_t e = nl ? (size_t)(nl - buf) : len;
        r->line++;
        if (strspn(buf + p, " \t\r") < e - p) {
            json_error_t jerr;
            json_t *obj = json_loadb(buf + p, e - p, 0, &jerr);
            record_reset(&rec);
            rc = obj ? json_record(r, obj, &rec) : gpt_error("%s:%zu: not valid JSON (%s)", r->path, r->line, jerr.text);
            json_decref(obj);
        }
        p = e + 1;
    }
    free(rec.pieces);
    return rc;
}

/* ---- CSV (RFC 4180) ---- */

typedef struct {
    char *buf;          /* the row's fields, unescaped, back to back */
    size_t n, cap;
    size_t *start;      /* field i is buf[start[i] .. start[i + 1]) */
    int n_fields, cap_fields;
} CsvRow;

static void csv_put(CsvRow *row, char c) {
    if (row->n == row->cap) row->buf = xrealloc(row->buf, row->cap = row->cap ? 2 * row->cap : 1024);
    row->buf[row->n++] = c;
}

static void csv_start_field(CsvRow *row) {
    if (row->n_fields + 1 >= row->cap_fields)
        row->start = xrealloc(row->start, (size_t)(row->cap_fields = row->cap_fields ? 2 * row->cap_fields : 16) * sizeof *row->start);
    row->start[row->n_fields++] = row->n;
}

/* Reads the row at *pos into row (r->line: its first line, *line: the next row's);
 * 1 for a row, 0 at the end of the input, -1 on a malformed quoted field. */
static int csv_row(Reader *r, const char *s, size_t len, size_t *pos, size_t *line, CsvRow *row) {
    size_t p = *pos;
    if (p >= len) return 0;
    r->line = *line;
    row->n = 0;
    row->n_fields = 0;
    for (;;) {
        csv_start_field(row);
        if (p < len && s[p] == '"') {
            for (p++;; p++) {
                if (p >= len) return gpt_error("%s:%zu: a quoted field is not closed", r->path, r->line);
                if (s[p] == '"' && (p + 1 >= len || s[p + 1] != '"')) break;
                if (s[p] == '"') p++; /* "" is one quote */
                else if (s[p] == '\n') (*line)++;
                csv_put(row, s[p]);
            }
            p++;
            if (p < len && s[p] == '\r' && p + 1 < len && s[p + 1] == '\n') p++;
            if (p < len && s[p] != ',' && s[p] != '\n')
                return gpt_error("%s:%zu: text after the closing quote of column %d", r->path, *line, row->n_fields);
        } else {
            while (p < len && s[p] != ',' && s[p] != '\n') csv_put(row, s[p++]);
            if (row->n > row->start[row->n_fields - 1] && row->buf[row->n - 1] == '\r' && (p == len || s[p] == '\n'))
                row->n--; /* CRLF line ends */
        }
        if (p < len && s[p] == ',') {
            p++;
            continue;
        }
        if (p < len) p++, (*line)++;
        break;
    }
    row->start[row->n_fields] = row->n;
    *pos = p;
    return 1;
}

static int csv_blank(const CsvRow *row) {
    if (row->n_fields != 1) return 0;
    for (size_t i = 0; i < row->n; i++)
        if (!strchr(" \t\r", row->buf[i])) return 0;
    return 1;
}

static int csv_is(const CsvRow *row, int i, const char *name) {
    size_t n = row->start[i + 1] - row->start[i];
    return strlen(name) == n && !memcmp(row->buf + row->start[i], name, n);
}

/* Which columns hold what: the label, the task's fields in order, then the answers. */
typedef struct {
    int label;
    int *cols;
    char **names; /* of cols, as the header has them (NULL without a header) */
    int n;
} CsvColumns;

static int csv_header(Reader *r, const CsvRow *row, CsvColumns *c) {
    TaskType type = r->opt->type;
    c->cols = xmalloc((size_t)row->n_fields * sizeof *c->cols);
    c->names = xcalloc((size_t)row->n_fields, sizeof *c->names);
    for (int i = 0; i < row->n_fields; i++)
        if (csv_is(row, i, "label")) c->label = i;
    for (int f = 0; f < n_fields(type); f++) {
        int i = 0;
        while (i < row->n_fields && !csv_is(row, i, task_fields[type][f])) i++;
        if (i == row->n_fields)
            return gpt_error("%s:%zu: the header has no column \"%s\"", r->path, r->line, task_fields[type][f]);
        c->names[c->n] = xstrdup(task_fields[type][f]);
        c->cols[c->n++] = i;
    }
    for (int i = 0; type == TASK_CHOICE && i < row->n_fields; i++)
        if (row->start[i + 1] - row->start[i] >= 6 && !memcmp(row->buf + row->start[i], "choice", 6)) {
            size_t n = row->start[i + 1] - row->start[i];
            c->names[c->n] = xmalloc(n + 1);
            memcpy(c->names[c->n], row->buf + row->start[i], n);
            c->names[c->n][n] = '\0';
            c->cols[c->n++] = i;
        }
    if (type == TASK_CHOICE && c->n < 3)
        return gpt_error("%s:%zu: the header names fewer than 2 answer columns (choice*)", r->path, r->line);
    return 0;
}

/* Without a header: the label, then the task's fields (choice: the context, then the answers). */
static int csv_positional(Reader *r, const CsvRow *row, CsvColumns *c) {
    TaskType type = r->opt->type;
    int want = 1 + n_fields(type);
    if (type == TASK_CHOICE ? row->n_fields < 4 : row->n_fields != want) {
        if (type == TASK_CHOICE)
            return gpt_error("%s:%zu: expected a label, a context and at least 2 answers, found %d columns", r->path,
                             r->line, row->n_fields);
        return gpt_error("%s:%zu: expected %d columns (label, %s%s%s), found %d (a header row needs a column \"label\")",
                         r->path, r->line, want, task_fields[type][0], want > 2 ? ", " : "",
                         want > 2 ? task_fields[type][1] : "", row->n_fields);
    }
    c->cols = xrealloc(c->cols, (size_t)row->n_fields * sizeof *c->cols);
    c->n = 0;
    for (int i = 1; i < row->n_fields; i++) c->cols[c->n++] = i;
    return 0;
}

static int read_csv(Reader *r, const char *buf, size_t len) {
    CsvRow row = {0};
    CsvColumns c = {.label = -1};
    Record rec = {0};
    size_t pos = 0, line = 1;
    int rc = 0, first = 1, header = 0, got = 0;
    while (!rc && (got = csv_row(r, buf, len, &pos, &line, &row)) > 0) {
        if (csv_blank(&row)) continue;
        if (first) {
            first = 0;
            for (int i = 0; i < row.n_fields; i++) header |= csv_is(&row, i, "label");
            if (header) {
                rc = csv_header(r, &row, &c);
                continue;
            }
            c.label = 0;
        }
        if (!header && (rc = csv_positional(r, &row, &c))) break;
        record_reset(&rec);
        for (int k = 0; !rc && k < c.n; k++) {
            int f = k < n_fields(r->opt->type) ? k : -1; /* a field of the task, or an answer */
            const char *name = header ? c.names[k] : f >= 0 ? task_fields[r->opt->type][f] : ANSWERS;
            int index = !header && f < 0 ? k - n_fields(r->opt->type) : -1;
            if (c.cols[k] >= row.n_fields)
                rc = gpt_error("%s:%zu: field \"%s\" is missing (the row has %d columns)", r->path, r->line, name,
                               row.n_fields);
            else
                add_piece(&rec, row.buf + row.start[c.cols[k]], row.start[c.cols[k] + 1] - row.start[c.cols[k]], name,
                          index);
        }
        if (!rc && c.label >= 0 && c.label < row.n_fields && row.start[c.label + 1] > row.start[c.label]) {
            rec.has_label = 1;
            rec.label_text = row.buf + row.start[c.label];
            rec.label_len = row.start[c.label + 1] - row.start[c.label];
        }
        if (!rc) rc = add_record(r, &rec);
    }
    if (got < 0) rc = -1;
    for (int i = 0; c.names && i < c.n; i++) free(c.names[i]);
    free(c.names);
    free(c.cols);
    free(rec.pieces);
    free(row.buf);
    free(row.start);
    return rc;
}

/* ---- the data set ---- */

static void split_alloc(Split *s) {
    s->tokens = xmalloc(((size_t)s->n_tokens + 1) * sizeof *s->tokens);
    s->seq_off = xmalloc(((size_t)s->n_seqs + 1) * sizeof *s->seq_off);
    s->ex_off = xmalloc(((size_t)s->n_examples + 1) * sizeof *s->ex_off);
    s->len = xmalloc(((size_t)s->n_seqs + 1) * sizeof *s->len);
    s->labels = xmalloc(((size_t)s->n_examples + 1) * sizeof *s->labels);
}

/* Shuffles the records with the seed: the first round(F n) go to /val; both keep file order. */
static void split_records(TaskData *d, const Records *R, const TaskPrepare *opt) {
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
        Split *out[2] = {&d->split[0], &d->split[1]};
        if (pass == 1) split_alloc(out[0]), split_alloc(out[1]);
        for (int s = 0; s < 2; s++) {
            out[s]->n_examples = out[s]->n_seqs = out[s]->n_tokens = 0;
            if (pass) out[s]->ex_off[0] = out[s]->seq_off[0] = 0;
        }
        size_t seq = 0, tok = 0;
        for (int64_t i = 0; i < n; i++) {
            Split *s = out[(int)in_val[i]];
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

/* "a,b,c" into names (none empty, none twice); -1 otherwise. */
static int parse_names(const char *list, Reader *r) {
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
                         type_names[opt->type], need);
    if (opt->type == TASK_CHOICE && (opt->n_classes || opt->label_names))
        return gpt_error("choice labels are the index of the right answer: classes and label names do not apply");
    if (opt->n_classes == 1 || opt->n_classes < 0)
        return gpt_error("%d classes: a classifier needs at least 2", opt->n_classes);
    if (opt->label_names && parse_names(opt->label_names, r)) return -1;
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
        const char *text = buf + bom;
        len -= bom;
        size_t n = strlen(path);
        int csv = n >= 4 && !strcmp(path + n - 4, ".csv"), json = (n >= 6 && !strcmp(path + n - 6, ".jsonl")) ||
                                                                  (n >= 5 && !strcmp(path + n - 5, ".json"));
        if (!csv && !json) json = text[strspn(text, " \t\r\n")] == '{';
        rc = json ? read_jsonl(&r, text, len) : read_csv(&r, text, len);
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
        split_records(d, &r.rec, opt);
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

/* ---- the task file ---- */

int task_write(const char *path, const TaskData *d, const Tokenizer *tok, const char *source) {
    h5_quiet();
    const TaskInfo *in = &d->info;
    for (int s = 0; s < 2; s++)
        for (int64_t i = 0; i < d->split[s].n_examples; i++)
            if (isnan(d->split[s].labels[i])) return gpt_error("%s: records without labels cannot go into a task file", path);
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return gpt_error("%s: path too long", path);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return gpt_error("%s: cannot create the file (check the directory exists and is writable)", tmp);
    int rc = h5_write_attr_string(f, "format", TASK_FORMAT) || h5_write_attr_int(f, "format_version", TASK_FORMAT_VERSION) ||
             h5_write_attr_string(f, "tool_version", GPT_VERSION) ||
             h5_write_attr_string(f, "task", type_names[in->type]) ||
             h5_write_attr_string(f, "label_kind", kind_names[in->label_kind]) ||
             h5_write_attr_int(f, "n_classes", in->n_classes) || h5_write_attr_int(f, "n_ctx", in->n_ctx) ||
             h5_write_attr_int(f, "vocab_size", in->vocab_size) || h5_write_attr_int(f, "start_token", in->start) ||
             h5_write_attr_int(f, "delim_token", in->delim) || h5_write_attr_int(f, "extract_token", in->extract) ||
             h5_write_attr_i64(f, "truncated", in->truncated) || h5_write_attr_string(f, "source", source) ||
             (d->names && h5_write_strings(f, "label_names", (const char *const *)d->names, (hsize_t)in->n_classes)) ||
             tokenizer_write_h5(tok, f);
    static const char *const groups[2] = {"train", "val"};
    for (int s = 0; !rc && s < 2; s++) {
        const Split *sp = &d->split[s];
        hsize_t nt = (hsize_t)sp->n_tokens, ns = (hsize_t)sp->n_seqs + 1, ne = (hsize_t)sp->n_examples + 1, nl = ne - 1;
        hid_t g = H5Gcreate2(f, groups[s], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        /* labels convert from double: int32 for classes and answers, float32 for real values */
        rc = g < 0 || h5_write_array(g, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &nt, sp->tokens) ||
             h5_write_array(g, "seq_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &ns, sp->seq_off) ||
             h5_write_array(g, "example_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &ne, sp->ex_off) ||
             h5_write_array(g, "labels", in->label_kind == LABEL_REAL ? H5T_IEEE_F32LE : H5T_STD_I32LE,
                            H5T_NATIVE_DOUBLE, 1, &nl, sp->labels);
        if (g >= 0) H5Gclose(g);
    }
    if (H5Fclose(f) < 0) rc = -1;
    if (rc || rename(tmp, path)) {
        remove(tmp);
        return gpt_error("%s: writing the task file failed", path);
    }
    return 0;
}

/* Reads and checks one split: offsets in order and in range, sequences of [3, n_ctx] tokens
 * framed by the start and extract tokens, examples of as many sequences as the task has,
 * labels in range. */
static int load_split(const char *path, hid_t f, const char *name, const TaskInfo *in, Split *s) {
    char where[16];
    snprintf(where, sizeof where, "/%s", name);
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0) return gpt_error("%s: group %s is missing", path, where);
    hid_t g = H5Gopen2(f, name, H5P_DEFAULT);
    hsize_t nt = 0, ns = 0, ne = 0, nl = 0;
    int rc = !(s->tokens = h5_read_all(path, where, g, "tokens", 1, H5T_NATIVE_INT32, 4, &nt)) ||
             !(s->seq_off = h5_read_all(path, where, g, "seq_offsets", 1, H5T_NATIVE_INT64, 8, &ns)) ||
             !(s->ex_off = h5_read_all(path, where, g, "example_offsets", 1, H5T_NATIVE_INT64, 8, &ne)) ||
             !(s->labels = h5_read_all(path, where, g, "labels", 1, H5T_NATIVE_DOUBLE, 8, &nl));
    H5Gclose(g);
    if (rc) return -1;
    if (ns < 1 || ne < 1 || nl != ne - 1)
        return gpt_error("%s: %s has %llu sequence offsets, %llu example offsets and %llu labels: they disagree", path,
                         where, (unsigned long long)ns, (unsigned long long)ne, (unsigned long long)nl);
    s->n_tokens = (int64_t)nt, s->n_seqs = (int64_t)ns - 1, s->n_examples = (int64_t)ne - 1;
    s->len = xmalloc((size_t)ns * sizeof *s->len);
    for (hsize_t i = 0; i < nt; i++)
        if (s->tokens[i] < 0 || s->tokens[i] >= in->vocab_size)
            return gpt_error("%s: %s/tokens[%llu] = %d is outside the vocabulary of %d", path, where,
                             (unsigned long long)i, s->tokens[i], in->vocab_size);
    if (s->seq_off[0] != 0 || s->seq_off[s->n_seqs] != s->n_tokens)
        return gpt_error("%s: %s/seq_offsets must run from 0 to the %lld tokens", path, where, (long long)s->n_tokens);
    for (int64_t i = 0; i < s->n_seqs; i++) {
        int64_t a = s->seq_off[i], b = s->seq_off[i + 1];
        if (b - a < 3 || b - a > in->n_ctx || a < 0 || b > s->n_tokens)
            return gpt_error("%s: %s/seq_offsets: sequence %lld has %lld tokens, outside [3, n_ctx %d]", path, where,
                             (long long)i, (long long)(b - a), in->n_ctx);
        if (s->tokens[a] != in->start || s->tokens[b - 1] != in->extract)
            return gpt_error("%s: %s: sequence %lld does not run from the start to the extract token", path, where,
                             (long long)i);
        s->len[i] = (int)(b - a);
    }
    if (s->ex_off[0] != 0 || s->ex_off[s->n_examples] != s->n_seqs)
        return gpt_error("%s: %s/example_offsets must run from 0 to the %lld sequences", path, where, (long long)s->n_seqs);
    for (int64_t i = 0; i < s->n_examples; i++) {
        int64_t k = s->ex_off[i + 1] - s->ex_off[i];
        double y = s->labels[i];
        int ok = in->type == TASK_CHOICE ? k >= 2 : k == (in->type == TASK_SIMILAR ? 2 : 1);
        if (!ok || s->ex_off[i] < 0 || s->ex_off[i + 1] > s->n_seqs)
            return gpt_error("%s: %s/example_offsets: example %lld has %lld sequences, wrong for %s", path, where,
                             (long long)i, (long long)k, type_names[in->type]);
        int n = in->label_kind == LABEL_CLASS ? in->n_classes : (int)k;
        if (in->label_kind == LABEL_REAL ? !isfinite(y) : !(y >= 0 && y < n && y == floor(y)))
            return gpt_error("%s: %s/labels[%lld] = %g is outside [0, %d)", path, where, (long long)i, y, n);
    }
    return 0;
}

/* The root attributes and /label_names into d. */
static int load_info(const char *path, hid_t f, TaskData *d) {
    TaskInfo *in = &d->info;
    char task[32], kind[32];
    int version;
    if (h5_expect_format(path, f, TASK_FORMAT, "a task file (made by gpt prepare-task)")) return -1;
    if (h5_read_attr_int(path, "", f, "format_version", &version) ||
        h5_read_attr_string(path, "", f, "task", task, sizeof task) ||
        h5_read_attr_string(path, "", f, "label_kind", kind, sizeof kind) ||
        h5_read_attr_int(path, "", f, "n_classes", &in->n_classes) || h5_read_attr_int(path, "", f, "n_ctx", &in->n_ctx) ||
        h5_read_attr_int(path, "", f, "vocab_size", &in->vocab_size) ||
        h5_read_attr_int(path, "", f, "start_token", &in->start) ||
        h5_read_attr_int(path, "", f, "delim_token", &in->delim) ||
        h5_read_attr_int(path, "", f, "extract_token", &in->extract) ||
        h5_read_attr_i64(path, "", f, "truncated", &in->truncated))
        return -1;
    if (version != 1) return gpt_error("%s: task file version %d; this tool reads version 1", path, version);
    if (task_type_parse(task, &in->type)) return gpt_error("%s: attribute task: %s", path, gpt_last_error());
    int k = 0;
    while (k < 3 && strcmp(kind, kind_names[k])) k++;
    if (k == 3) return gpt_error("%s: attribute label_kind is '%s', expected class, real or choice", path, kind);
    in->label_kind = (LabelKind)k;
    if (in->label_kind == LABEL_CLASS ? in->n_classes < 2 : in->n_classes != 0)
        return gpt_error("%s: n_classes %d does not suit %s labels", path, in->n_classes, kind);
    if (in->n_ctx < 3) return gpt_error("%s: n_ctx %d is below 3", path, in->n_ctx);
    Tokenizer *t = tokenizer_read_h5(f, path);
    if (!t) return -1;
    int same = tokenizer_vocab_size(t) == in->vocab_size && tokenizer_special_id(t, TOK_START) == in->start &&
               tokenizer_special_id(t, TOK_DELIM) == in->delim && tokenizer_special_id(t, TOK_EXTRACT) == in->extract;
    tokenizer_free(t);
    if (!same) return gpt_error("%s: vocab_size or the special tokens' ids disagree with /tokenizer", path);
    if (H5Lexists(f, "label_names", H5P_DEFAULT) <= 0) return 0;
    hid_t ds = H5Dopen2(f, "label_names", H5P_DEFAULT), type = ds < 0 ? -1 : H5Dget_type(ds);
    if (ds >= 0) H5Dclose(ds);
    int fixed = type >= 0 && H5Tget_class(type) == H5T_STRING && H5Tis_variable_str(type) == 0;
    size_t width = fixed ? H5Tget_size(type) : 0;
    hsize_t n = 0;
    char *all = fixed ? h5_read_all(path, "", f, "label_names", 1, type, width, &n) : NULL;
    if (type >= 0) H5Tclose(type);
    if (!fixed) return gpt_error("%s: /label_names is not a dataset of fixed-length strings", path);
    if (!all) return -1;
    if (n != (hsize_t)in->n_classes || in->label_kind != LABEL_CLASS) {
        free(all);
        return gpt_error("%s: /label_names has %llu names for %d classes", path, (unsigned long long)n, in->n_classes);
    }
    d->names = xcalloc(n, sizeof *d->names);
    for (hsize_t i = 0; i < n; i++) {
        d->names[i] = xmalloc(width + 1);
        memcpy(d->names[i], all + i * width, width);
        d->names[i][width] = '\0';
    }
    free(all);
    return 0;
}

TaskData *task_load(const char *path) {
    hid_t f = h5_open_read(path);
    if (f < 0) return NULL;
    TaskData *d = xcalloc(1, sizeof *d);
    int rc = load_info(path, f, d) || load_split(path, f, "train", &d->info, &d->split[SPLIT_TRAIN]) ||
             load_split(path, f, "val", &d->info, &d->split[SPLIT_VAL]);
    H5Fclose(f);
    if (rc) {
        task_free(d);
        return NULL;
    }
    return d;
}

void task_free(TaskData *d) {
    if (!d) return;
    for (int i = 0; d->names && i < d->info.n_classes; i++) free(d->names[i]);
    free(d->names);
    for (int s = 0; s < 2; s++) {
        Split *sp = &d->split[s];
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
    const Split *s = &d->split[split];
    int64_t first = s->ex_off[i];
    out->n_seqs = (int)(s->ex_off[i + 1] - first);
    out->tokens = s->tokens + s->seq_off[first];
    out->len = s->len + first;
    out->label = s->labels[i];
}

const char *task_class_name(const TaskData *d, int k) {
    return d->names && k >= 0 && k < d->info.n_classes ? d->names[k] : NULL;
}
