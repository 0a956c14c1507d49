/* shard.c: the partition of the parameters among the ranks (see shard.h). */
#include "model/shard.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

size_t shard_chunk_rows(size_t rows, size_t row_bytes) {
    size_t r = SHARD_CHUNK_BYTES / row_bytes;
    return r < 1 ? 1 : r < rows ? r : rows;
}

int shard_tensor_chunk_rows(const GPTTensor *t) {
    return (int)shard_chunk_rows((size_t)t->shape[0], sizeof(float) * (t->ndim == 2 ? (size_t)t->shape[1] : 1));
}

int shard_segments(const GPT *m, size_t *bounds) {
    int n = gpt_grad_ready_points(m, bounds); /* from the last layer's feed-forward half down to 0 */
    for (int i = 0; i < n / 2; i++) {
        size_t x = bounds[i];
        bounds[i] = bounds[n - 1 - i], bounds[n - 1 - i] = x;
    }
    memmove(bounds + 2, bounds + 1, sizeof *bounds * (size_t)(n - 1));
    bounds[1] = m->tensors[0].numel; /* wte apart from wpe */
    bounds[n + 1] = m->n_params;
    return n + 1;
}

Shard shard_of(const GPT *m, int r, int P) {
    size_t nt = (size_t)m->n_tensors, *bounds = xmalloc(sizeof *bounds * (2 * (size_t)m->cfg.n_layer + 3));
    Shard s = {xmalloc(sizeof(int) * nt), xmalloc(sizeof(int) * nt), xmalloc(sizeof(size_t) * nt), 0,
               xmalloc(sizeof(size_t) * nt), xmalloc(sizeof(size_t) * nt), 0};
    int n_seg = shard_segments(m, bounds);
    for (int i = 0, seg = 0; i < m->n_tensors; i++) {
        const GPTTensor *t = &m->tensors[i];
        while (seg + 1 < n_seg && t->offset >= bounds[seg + 1]) seg++;
        uint64_t a = bounds[seg], len = bounds[seg + 1] - a, part = (uint64_t)(((r - seg) % P + P) % P);
        uint64_t row = t->ndim == 2 ? (uint64_t)t->shape[1] : 1;
        int rows = t->shape[0], step = shard_tensor_chunk_rows(t);
        s.lo[i] = s.hi[i] = rows;
        for (int c = 0; c < rows; c += step) {
            uint64_t owner = (t->offset + (uint64_t)c * row - a) * (uint64_t)P / len;
            if (owner == part && s.lo[i] == rows) s.lo[i] = c;
            if (owner > part) {
                s.hi[i] = c;
                break;
            }
        }
        if (s.lo[i] == rows) s.hi[i] = rows; /* none of it */
        s.at[i] = s.n;
        if (s.lo[i] == s.hi[i]) continue;
        size_t b = t->offset + (size_t)s.lo[i] * row, e = t->offset + (size_t)s.hi[i] * row;
        if (s.n_ranges && s.end[s.n_ranges - 1] == b) s.end[s.n_ranges - 1] = e;
        else s.begin[s.n_ranges] = b, s.end[s.n_ranges++] = e;
        s.n += e - b;
    }
    free(bounds);
    return s;
}

void shard_free(Shard *s) {
    free(s->lo);
    free(s->hi);
    free(s->at);
    free(s->begin);
    free(s->end);
}

AdamW *shard_optimizer_create(const OptimConfig *cfg, const GPT *m, int r, int P, int sharded) {
    if (!sharded || P == 1) return adamw_create(cfg, m->n_params);
    Shard s = shard_of(m, r, P);
    AdamW *o = adamw_create_ranges(cfg, s.n_ranges, s.begin, s.end);
    shard_free(&s);
    return o;
}

ShardSizes shard_sizes(const GPTConfig *cfg, int P) {
    GPT shell = {.cfg = *cfg};
    shell.tensors = gpt_tensor_table(cfg, &shell.n_tensors, &shell.n_params);
    size_t *bounds = xmalloc(sizeof *bounds * (2 * (size_t)cfg->n_layer + 3));
    int n_seg = shard_segments(&shell, bounds);
    size_t *most = xcalloc((size_t)n_seg, sizeof *most), *part = xmalloc(sizeof *part * (size_t)n_seg);
    ShardSizes z = {0, 0};
    for (int r = 0; r < P; r++) {
        Shard s = shard_of(&shell, r, P);
        memset(part, 0, sizeof *part * (size_t)n_seg);
        for (int i = 0, seg = 0; i < shell.n_tensors; i++) {
            const GPTTensor *t = &shell.tensors[i];
            while (seg + 1 < n_seg && t->offset >= bounds[seg + 1]) seg++;
            part[seg] += (size_t)(s.hi[i] - s.lo[i]) * (t->ndim == 2 ? (size_t)t->shape[1] : 1);
        }
        for (int k = 0; k < n_seg; k++) most[k] = part[k] > most[k] ? part[k] : most[k];
        if (s.n > z.largest) z.largest = s.n;
        shard_free(&s);
    }
    for (int k = 0; k < n_seg; k++) z.hop += most[k];
    free(most);
    free(part);
    free(bounds);
    free(shell.tensors);
    return z;
}
