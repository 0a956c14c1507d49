/* token_grads.c: the token embedding's gradient as rows (see token_grads.h). */
#include "model/token_grads.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

TokenGrads *token_grads_create(int V, int C) {
    TokenGrads *t = xcalloc(1, sizeof *t);
    t->V = V, t->C = C;
    t->row_of = xmalloc(sizeof(int) * (size_t)V);
    memset(t->row_of, -1, sizeof(int) * (size_t)V);
    return t;
}

void token_grads_free(TokenGrads *t) {
    if (!t) return;
    free(t->row_of), free(t->token), free(t->rows), free(t->ids);
    free(t);
}

void token_grads_clear(TokenGrads *t) {
    for (int i = 0; i < t->n; i++) t->row_of[t->token[i]] = -1;
    t->n = 0;
}

const int *token_grads_rows(TokenGrads *t, const int *tokens, int n) {
    if (n > t->n_ids) t->ids = xrealloc(t->ids, sizeof(int) * (size_t)n), t->n_ids = n;
    for (int i = 0; i < n; i++) {
        int *row = &t->row_of[tokens[i]];
        if (*row < 0) {
            if (t->n == t->cap) {
                t->cap = t->cap ? (t->cap * 2 < t->V ? t->cap * 2 : t->V) : (n < t->V ? n : t->V);
                t->token = xrealloc(t->token, sizeof(int) * (size_t)t->cap);
                t->rows = xrealloc(t->rows, sizeof(float) * (size_t)t->cap * t->C);
            }
            *row = t->n++;
            t->token[*row] = tokens[i];
            memset(t->rows + (size_t)*row * t->C, 0, sizeof(float) * t->C);
        }
        t->ids[i] = *row;
    }
    return t->ids;
}
