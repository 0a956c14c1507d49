/* shard.c: the partition of the parameters among the ranks (see shard.h). */
#include "model/shard.h"

#include <stdint.h>
#include <stdlib.h>

#include "base/util.h"

size_t shard_chunk_rows(size_t rows, size_t row_bytes) {
    size_t r = SHARD_CHUNK_BYTES / row_bytes;
    return r < 1 ? 1 : r < rows ? r : rows;
}

int shard_tensor_chunk_rows(const GPTTensor *t) {
    return (int)shard_chunk_rows((size_t)t->shape[0], sizeof(float) * (t->ndim == 2 ? (size_t)t->shape[1] : 1));
}

Shard shard_of(const GPT *m, int r, int P) {
    Shard s = {xmalloc(sizeof(int) * (size_t)m->n_tensors), xmalloc(sizeof(int) * (size_t)m->n_tensors), 0, 0};
    uint64_t N = m->n_params;
    int any = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const GPTTensor *t = &m->tensors[i];
        uint64_t row = t->ndim == 2 ? (uint64_t)t->shape[1] : 1;
        int rows = t->shape[0], step = shard_tensor_chunk_rows(t);
        s.lo[i] = s.hi[i] = rows;
        for (int c = 0; c < rows; c += step) {
            uint64_t owner = (t->offset + (uint64_t)c * row) * (uint64_t)P / N;
            if (owner == (uint64_t)r && s.lo[i] == rows) s.lo[i] = c;
            if (owner > (uint64_t)r) {
                s.hi[i] = c;
                break;
            }
        }
        if (s.lo[i] == rows) s.hi[i] = rows; /* none of it */
        if (s.lo[i] < s.hi[i]) {
            size_t b = t->offset + (size_t)s.lo[i] * row, e = t->offset + (size_t)s.hi[i] * row;
            if (!any || b < s.begin) s.begin = b;
            if (!any || e > s.end) s.end = e;
            any = 1;
        }
    }
    return s;
}

void shard_free(Shard *s) {
    free(s->lo);
    free(s->hi);
}

AdamW *shard_optimizer_create(const OptimConfig *cfg, const GPT *m, int r, int P, int sharded) {
    if (!sharded || P == 1) return adamw_create(cfg, m->n_params);
    Shard s = shard_of(m, r, P);
    AdamW *o = adamw_create_range(cfg, s.begin, s.end - s.begin);
    shard_free(&s);
    return o;
}

size_t shard_largest(const GPTConfig *cfg, int P) {
    GPT shell = {.cfg = *cfg};
    shell.tensors = gpt_tensor_table(cfg, &shell.n_tensors, &shell.n_params);
    size_t most = 0;
    for (int r = 0; r < P; r++) {
        Shard s = shard_of(&shell, r, P);
        if (s.end - s.begin > most) most = s.end - s.begin;
        shard_free(&s);
    }
    free(shell.tensors);
    return most;
}
