/* token_grads.h: the token embedding's gradient kept as rows, apart from wte's.
 *
 * wte is tied, so its gradient has two parts. The output projection's is dense (every
 * row) and complete once the head's backward pass ends; the input embedding's touches
 * only the rows of the batch's tokens (at most B*T of V) and is complete only at the end
 * of the backward pass. gradsync reduces the two apart (gradsync.h): the dense part in a
 * bucket of its own as soon as the head is done, these rows sparsely at the end. With a
 * TokenGrads attached (GPT.token_grads), the backward pass adds the input embedding's
 * gradient here instead of into g.wte.
 *
 * A row is made, zeroed, the first time its token is touched after a clear, and the
 * embedding kernel adds to it in the batch's row order as it adds to g.wte: a row holds
 * exactly what this part would have added to g.wte. Its storage grows to the most
 * distinct tokens a step has had (at most V rows). */
#ifndef GPT_TOKEN_GRADS_H
#define GPT_TOKEN_GRADS_H

typedef struct TokenGrads {
    int V, C;
    int n, cap;    /* rows in use, rows allocated */
    int *row_of;   /* (V) each token's row; -1: not touched since the last clear */
    int *token;    /* (cap) each row's token, in the order first touched */
    float *rows;   /* (cap, C) */
    int *ids;      /* (n_ids) scratch: a pass's tokens as row numbers */
    int n_ids;
} TokenGrads;

TokenGrads *token_grads_create(int V, int C);
void token_grads_free(TokenGrads *t);
/* Forgets every row (in O(rows)). */
void token_grads_clear(TokenGrads *t);
/* The rows of tokens[0, n) (ids in [0, V)), made where new: returns ids (n), ids[i] the
 * row of tokens[i]; valid, with t->rows, until the next call. */
const int *token_grads_rows(TokenGrads *t, const int *tokens, int n);

#endif
