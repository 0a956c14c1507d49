/* rowsum.c: the sparse sum of matrix rows over the ranks (see rowsum.h). */
#include "dist/rowsum.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "cpu/kernels.h"

struct RowSum {
    int V, C, P, rank, gather, bf16;
    int *lo;               /* (P+1) */
    MPI_Comm comm;
    MPI_Datatype row;      /* a row on the wire: C floats, or C bf16 */
    MPI_Datatype row32;    /* rowsum_fetch's: C floats */
    long long *order;      /* the caller's rows in ascending token order: token << 32 | row */
    int *send_tok, *recv_tok, *sum_tok;
    float *send_row, *recv_row, *sum_row;
    int cap_send, cap_recv, cap_sum;
    uint16_t *wire_send, *wire_recv; /* bf16: the rows on the wire */
    size_t cap_wire_send, cap_wire_recv;
    int *sendcounts, *senddispls, *recvcounts, *recvdispls; /* (P) each */
    int *slot;             /* (lo[rank+1] - lo[rank]) an owned token's sum, -1: none */
    int n_sum;             /* the sums in sum_tok/sum_row: this rank's, or all when gathering */
};

RowSum *rowsum_create(int V, int C, const int *lo, int gather, int bf16, MPI_Comm comm) {
    RowSum *r = xcalloc(1, sizeof *r);
    MPI_Comm_dup(comm, &r->comm);
    MPI_Comm_size(r->comm, &r->P);
    MPI_Comm_rank(r->comm, &r->rank);
    r->V = V, r->C = C, r->gather = gather, r->bf16 = bf16;
    r->lo = xmalloc(sizeof(int) * (size_t)(r->P + 1));
    memcpy(r->lo, lo, sizeof(int) * (size_t)(r->P + 1));
    MPI_Type_contiguous(C, bf16 ? MPI_UINT16_T : MPI_FLOAT, &r->row);
    MPI_Type_commit(&r->row);
    MPI_Type_contiguous(C, MPI_FLOAT, &r->row32);
    MPI_Type_commit(&r->row32);
    int P = r->P, owned = lo[r->rank + 1] - lo[r->rank];
    r->sendcounts = xmalloc(sizeof(int) * 4 * (size_t)P);
    r->senddispls = r->sendcounts + P, r->recvcounts = r->sendcounts + 2 * P, r->recvdispls = r->sendcounts + 3 * P;
    r->slot = xmalloc(sizeof(int) * (size_t)(owned ? owned : 1));
    for (int i = 0; i < owned; i++) r->slot[i] = -1;
    return r;
}

void rowsum_free(RowSum *r) {
    if (!r) return;
    MPI_Type_free(&r->row);
    MPI_Type_free(&r->row32);
    MPI_Comm_free(&r->comm);
    free(r->lo), free(r->order), free(r->send_tok), free(r->recv_tok), free(r->sum_tok);
    free(r->send_row), free(r->recv_row), free(r->sum_row), free(r->sendcounts), free(r->slot);
    free(r->wire_send), free(r->wire_recv);
    free(r);
}

/* Room for n ids and n rows in (*tok, *row) of capacity *cap; never NULL after, even
 * for none (memcpy's arguments must not be, whatever the count). */
static void reserve(int **tok, float **row, int *cap, int n, int C) {
    if (n < 1) n = 1;
    if (n <= *cap) return;
    *cap = n;
    *tok = xrealloc(*tok, sizeof(int) * (size_t)n);
    *row = xrealloc(*row, sizeof(float) * (size_t)n * C);
}

/* bf16: room for n values in *wire (capacity *cap); never NULL after. */
static uint16_t *wire_room(uint16_t **wire, size_t *cap, size_t n) {
    if (n < 1) n = 1;
    if (n > *cap) *wire = xrealloc(*wire, sizeof(uint16_t) * n), *cap = n;
    return *wire;
}

static int ascending(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static int displs(const int *counts, int *d, int P) {
    int total = 0;
    for (int i = 0; i < P; i++) d[i] = total, total += counts[i];
    return total;
}

/* send_tok, sendcounts[owner] of them for each owner in turn, to the owners: returns how
 * many came to this rank, into recv_tok (recvcounts, recvdispls set; recv_row room). */
static int exchange_ids(RowSum *r) {
    int P = r->P;
    displs(r->sendcounts, r->senddispls, P);
    MPI_Alltoall(r->sendcounts, 1, MPI_INT, r->recvcounts, 1, MPI_INT, r->comm);
    int n = displs(r->recvcounts, r->recvdispls, P);
    reserve(&r->recv_tok, &r->recv_row, &r->cap_recv, n, r->C);
    MPI_Alltoallv(r->send_tok, r->sendcounts, r->senddispls, MPI_INT, r->recv_tok, r->recvcounts, r->recvdispls,
                  MPI_INT, r->comm);
    return n;
}

long rowsum_reduce(RowSum *r, const int *token, const float *rows, int n) {
    int P = r->P, C = r->C;
    size_t row_bytes = sizeof(float) * (size_t)C;
    /* 1. the rows to their owners, in ascending token order */
    reserve(&r->send_tok, &r->send_row, &r->cap_send, n, C);
    r->order = xrealloc(r->order, sizeof *r->order * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) r->order[i] = (long long)token[i] << 32 | i;
    qsort(r->order, (size_t)n, sizeof *r->order, ascending);
    memset(r->sendcounts, 0, sizeof(int) * (size_t)P);
    for (int i = 0, owner = 0; i < n; i++) {
        int t = (int)(r->order[i] >> 32), from = (int)(r->order[i] & 0xffffffff);
        while (t >= r->lo[owner + 1]) owner++;
        r->sendcounts[owner]++;
        r->send_tok[i] = t;
        memcpy(r->send_row + (size_t)i * C, rows + (size_t)from * C, row_bytes);
    }
    int n_recv = exchange_ids(r);
    if (r->bf16) {
        bf16_pack(wire_room(&r->wire_send, &r->cap_wire_send, (size_t)n * C), r->send_row, n, C, 0);
        wire_room(&r->wire_recv, &r->cap_wire_recv, (size_t)n_recv * C);
    }
    MPI_Alltoallv(r->bf16 ? (void *)r->wire_send : r->send_row, r->sendcounts, r->senddispls, r->row,
                  r->bf16 ? (void *)r->wire_recv : r->recv_row, r->recvcounts, r->recvdispls, r->row, r->comm);
    if (r->bf16) bf16_unpack(r->recv_row, r->wire_recv, (size_t)n_recv * C);
    /* 2. each owned token's rows summed in rank order (the receive order), from zero */
    reserve(&r->sum_tok, &r->sum_row, &r->cap_sum, n_recv, C);
    int mine = 0, lo = r->lo[r->rank];
    for (int i = 0; i < n_recv; i++) {
        int *s = &r->slot[r->recv_tok[i] - lo];
        if (*s < 0) {
            *s = mine++;
            r->sum_tok[*s] = r->recv_tok[i];
            memset(r->sum_row + (size_t)*s * C, 0, row_bytes);
        }
        float *sum = r->sum_row + (size_t)*s * C;
        const float *x = r->recv_row + (size_t)i * C;
        for (int c = 0; c < C; c++) sum[c] += x[c];
    }
    for (int i = 0; i < mine; i++) r->slot[r->sum_tok[i] - lo] = -1;
    if (r->bf16) bf16_round(r->sum_row, r->sum_row, (size_t)mine * C); /* each sum rounded once */
    r->n_sum = mine;
    long total = mine;
    if (!r->gather) {
        MPI_Allreduce(MPI_IN_PLACE, &total, 1, MPI_LONG, MPI_SUM, r->comm);
        return total;
    }
    /* 3. every owner's sums to every rank (in place: this rank's at its displacement) */
    MPI_Allgather(&mine, 1, MPI_INT, r->recvcounts, 1, MPI_INT, r->comm);
    int n_all = displs(r->recvcounts, r->recvdispls, P);
    int at = r->recvdispls[r->rank];
    reserve(&r->recv_tok, &r->recv_row, &r->cap_recv, n_all, C);
    memcpy(r->recv_tok + at, r->sum_tok, sizeof(int) * (size_t)mine);
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, r->recv_tok, r->recvcounts, r->recvdispls, MPI_INT, r->comm);
    if (r->bf16) { /* the sums are bf16 values: exact on the wire */
        uint16_t *wire = wire_room(&r->wire_recv, &r->cap_wire_recv, (size_t)n_all * C);
        bf16_pack(wire + (size_t)at * C, r->sum_row, mine, C, 0);
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, wire, r->recvcounts, r->recvdispls, r->row, r->comm);
        bf16_unpack(r->recv_row, wire, (size_t)n_all * C);
    } else {
        memcpy(r->recv_row + (size_t)at * C, r->sum_row, row_bytes * (size_t)mine);
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, r->recv_row, r->recvcounts, r->recvdispls, r->row, r->comm);
    }
    /* the sums, all of them, where rowsum_apply reads */
    int *tok = r->sum_tok;
    float *row = r->sum_row;
    int cap = r->cap_sum;
    r->sum_tok = r->recv_tok, r->sum_row = r->recv_row, r->cap_sum = r->cap_recv;
    r->recv_tok = tok, r->recv_row = row, r->cap_recv = cap;
    r->n_sum = n_all;
    return n_all;
}

void rowsum_apply(const RowSum *r, float *dense) {
    int C = r->C;
    for (int i = 0; i < r->n_sum; i++) {
        float *d = dense + (size_t)r->sum_tok[i] * C;
        const float *x = r->sum_row + (size_t)i * C;
        for (int c = 0; c < C; c++) d[c] += x[c];
    }
}

static int compare_ints(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

void rowsum_fetch(RowSum *r, const int *token, int n, const float *dense, float *rows) {
    int P = r->P, C = r->C, mine_lo = r->lo[r->rank], mine_hi = r->lo[r->rank + 1];
    size_t row_bytes = sizeof(float) * (size_t)C;
    /* the distinct tokens others own, ascending, to ask their owners for */
    r->order = xrealloc(r->order, sizeof *r->order * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) r->order[i] = token[i];
    qsort(r->order, (size_t)n, sizeof *r->order, ascending);
    reserve(&r->send_tok, &r->send_row, &r->cap_send, n, C);
    memset(r->sendcounts, 0, sizeof(int) * (size_t)P);
    int n_ask = 0;
    for (int i = 0, owner = 0; i < n; i++) {
        int t = (int)r->order[i];
        if ((n_ask && r->send_tok[n_ask - 1] == t) || (t >= mine_lo && t < mine_hi)) continue;
        while (t >= r->lo[owner + 1]) owner++;
        r->sendcounts[owner]++;
        r->send_tok[n_ask++] = t;
    }
    int n_asked = exchange_ids(r);
    for (int i = 0; i < n_asked; i++)
        memcpy(r->recv_row + (size_t)i * C, dense + (size_t)r->recv_tok[i] * C, row_bytes);
    MPI_Alltoallv(r->recv_row, r->recvcounts, r->recvdispls, r->row32, r->send_row, r->sendcounts, r->senddispls,
                  r->row32, r->comm);
    for (int i = 0; i < n; i++) {
        int t = token[i];
        const float *from = dense + (size_t)t * C;
        if (t < mine_lo || t >= mine_hi) {
            const int *at = bsearch(&t, r->send_tok, (size_t)n_ask, sizeof(int), compare_ints);
            from = r->send_row + (size_t)(at - r->send_tok) * C;
        }
        memcpy(rows + (size_t)i * C, from, row_bytes);
    }
}
