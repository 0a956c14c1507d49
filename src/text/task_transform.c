/* task_transform.c: GPT-1's input transformations (task.h, section 3.3): a record's
 * pieces of text stripped, tokenized, cut to n_ctx when asked, and framed by the start,
 * delimiter and extract tokens as its task's sequences. */
#include "task_records.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

void task_record_reset(Record *r) { *r = (Record){.pieces = r->pieces, .cap_pieces = r->cap_pieces}; }

void task_add_piece(Record *r, const char *p, size_t n, const char *field, int index) {
    if (r->n_pieces == r->cap_pieces)
        r->pieces = xrealloc(r->pieces, (size_t)(r->cap_pieces = r->cap_pieces ? 2 * r->cap_pieces : 8) * sizeof *r->pieces);
    r->pieces[r->n_pieces++] = (Piece){p, n, field, index};
}

int task_record_error(const Reader *r, const Piece *pc, const char *what) {
    if (pc->index >= 0)
        return gpt_error("%s:%zu: field \"%s\"[%d] %s", r->path, r->line, pc->field, pc->index, what);
    return gpt_error("%s:%zu: field \"%s\" %s", r->path, r->line, pc->field, what);
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
int task_add_record(Reader *r, Record *rec) {
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
        if (!pc->n) rc = task_record_error(r, pc, "is empty");
        else if (tokenizer_encode(r->tok, (const uint8_t *)pc->p, pc->n, 0, &r->piece_tok[i])) rc = -1;
        else if (r->piece_tok[i].n > INT_MAX / 2) rc = task_record_error(r, pc, "is too long");
        else len[i] = (int)r->piece_tok[i].n;
    }
    double label;
    if (!rc) rc = task_resolve_label(r, rec, n - 1, &label);
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
