/* rowsum.h: the sum over the ranks of a few rows of a (V, C) matrix, and their fetch.
 *
 * For the token embedding's gradient (model/token_grads.h): a rank holds the rows of its
 * batch's tokens, at most B*T of V. A dense allreduce sends all V rows; this sends only
 * the rows that exist. Each row has an owner, rows [lo[r], lo[r+1]) rank r:
 *   1. every rank sends its rows to their owners (MPI_Alltoallv of token ids, then of
 *      rows, in ascending token order);
 *   2. an owner sums each token's rows in rank order, from zero;
 *   3. gathering, every owner's sums go to every rank (MPI_Allgatherv); not gathering
 *      (--shard-optimizer, whose shards own wte's rows), each owner keeps its own.
 * rowsum_apply then adds the sums into the caller's dense matrix. Every row's sum is
 * made once, by its owner, so every rank adds the same bits; and a sum in rank order
 * from zero is, bit for bit, what a dense reduction of the whole matrices in rank order
 * gives (tests/unit/test_rowsum.c checks it on 2 and 3 ranks). A rank sends its rows
 * once and, gathering, receives the union's once: about 2 B T C floats where a ring
 * allreduce sends 2 (P-1)/P V C.
 *
 * bf16 (--grad-reduce bf16): the rows travel as bf16, half the bytes. Each rank's rows
 * are rounded to bf16, the owner sums them in fp32 in rank order from zero and rounds
 * each sum once, as gradsync's bf16 operation treats a pair; the sums are then exact in
 * bf16 on the wire. The result is that reference's bits (test_rowsum.c). */
#ifndef GPT_ROWSUM_H
#define GPT_ROWSUM_H

#include <mpi.h>

typedef struct RowSum RowSum;

/* Collective over comm (duplicated). lo: (P+1) ascending owner boundaries, lo[0] = 0,
 * lo[P] = V (copied). gather: 1 every rank receives every sum, 0 only its own rows'.
 * bf16: 1 the rows go as bf16 (above), 0 as fp32. */
RowSum *rowsum_create(int V, int C, const int *lo, int gather, int bf16, MPI_Comm comm);
void rowsum_free(RowSum *r);
/* Collective: the sums over the ranks of the rows token[0, n) (distinct ids in [0, V)),
 * rows (n, C). Returns the number of rows summed on all ranks together. */
long rowsum_reduce(RowSum *r, const int *token, const float *rows, int n);
/* dense (V, C) += the last rowsum_reduce's sums: of every token any rank held when
 * gathering, else of those this rank owns. */
void rowsum_apply(const RowSum *r, float *dense);
/* Collective: rows (n, C) the rows of the tokens token[0, n) (ids in [0, V), repeats
 * allowed), each from its owner's dense (V, C) matrix: this rank's own from its dense,
 * the others asked of their owners, each distinct one once (MPI_Alltoallv of ids, then
 * of fp32 rows). For a sharded optimizer's next forward pass, whose embedding lookup
 * reads only those rows of wte, before wte's all-gather is in (gradsync.h). */
void rowsum_fetch(RowSum *r, const int *token, int n, const float *dense, float *rows);

#endif
