/* task_csv.c: task records from CSV (RFC 4180: quoted fields with "" for a quote, line
 * breaks inside quotes, CRLF or LF): a header row naming the columns, recognised by a
 * column "label", or the label first and the task's fields in order. */
#include "task_records.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

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
        if (!memchr(" \t\r", row->buf[i], 3)) return 0; /* not strchr, which finds a NUL byte */
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
    for (int f = 0; f < task_n_fields(type); f++) {
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
    int want = 1 + task_n_fields(type);
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

int task_read_csv(Reader *r, const char *buf, size_t len) {
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
        task_record_reset(&rec);
        for (int k = 0; !rc && k < c.n; k++) {
            int f = k < task_n_fields(r->opt->type) ? k : -1; /* a field of the task, or an answer */
            const char *name = header ? c.names[k] : f >= 0 ? task_fields[r->opt->type][f] : TASK_ANSWERS;
            int index = !header && f < 0 ? k - task_n_fields(r->opt->type) : -1;
            if (c.cols[k] >= row.n_fields)
                rc = gpt_error("%s:%zu: field \"%s\" is missing (the row has %d columns)", r->path, r->line, name,
                               row.n_fields);
            else
                task_add_piece(&rec, row.buf + row.start[c.cols[k]], row.start[c.cols[k] + 1] - row.start[c.cols[k]], name,
                          index);
        }
        if (!rc && c.label >= 0 && c.label < row.n_fields && row.start[c.label + 1] > row.start[c.label]) {
            rec.has_label = 1;
            rec.label_text = row.buf + row.start[c.label];
            rec.label_len = row.start[c.label + 1] - row.start[c.label];
        }
        if (!rc) rc = task_add_record(r, &rec);
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
