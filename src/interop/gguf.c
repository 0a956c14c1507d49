/* gguf.c: the GGUF v3 writer (see gguf.h). */
#include "interop/gguf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

/* gguf_type of a value (ggml's docs/gguf.md, github.com/ggml-org/ggml) */
enum { V_UINT32 = 4, V_INT32 = 5, V_FLOAT32 = 6, V_STRING = 8, V_ARRAY = 9 };

typedef struct {
    uint8_t *p;
    size_t n, cap;
} Bytes;

typedef struct {
    char *name;
    int ndim, type;
    uint64_t ne[2];
} TensorInfo;

struct GgufWriter {
    Bytes kv;
    uint64_t n_kv;
    TensorInfo *tensors;
    int n_tensors, cap_tensors;
};

static void put(Bytes *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        while (b->n + n > b->cap) b->cap = b->cap ? 2 * b->cap : 4096;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void put_u32(Bytes *b, uint32_t v) { put(b, &v, 4); } /* little-endian, as x86-64 */
static void put_u64(Bytes *b, uint64_t v) { put(b, &v, 8); }
static void put_str(Bytes *b, const char *s, size_t n) {
    put_u64(b, n);
    put(b, s, n);
}
static void put_key(GgufWriter *g, const char *key, uint32_t type) {
    put_str(&g->kv, key, strlen(key));
    put_u32(&g->kv, type);
    g->n_kv++;
}

GgufWriter *gguf_writer_create(void) { return xcalloc(1, sizeof(GgufWriter)); }

void gguf_writer_free(GgufWriter *g) {
    if (!g) return;
    for (int i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->tensors);
    free(g->kv.p);
    free(g);
}

void gguf_add_string(GgufWriter *g, const char *key, const char *value) {
    put_key(g, key, V_STRING);
    put_str(&g->kv, value, strlen(value));
}

void gguf_add_u32(GgufWriter *g, const char *key, uint32_t value) {
    put_key(g, key, V_UINT32);
    put_u32(&g->kv, value);
}

void gguf_add_f32(GgufWriter *g, const char *key, float value) {
    put_key(g, key, V_FLOAT32);
    put(&g->kv, &value, 4);
}

void gguf_add_strings(GgufWriter *g, const char *key, const char *const *values, const size_t *lengths, size_t n) {
    put_key(g, key, V_ARRAY);
    put_u32(&g->kv, V_STRING);
    put_u64(&g->kv, n);
    for (size_t i = 0; i < n; i++) put_str(&g->kv, values[i], lengths[i]);
}

void gguf_add_i32s(GgufWriter *g, const char *key, const int32_t *values, size_t n) {
    put_key(g, key, V_ARRAY);
    put_u32(&g->kv, V_INT32);
    put_u64(&g->kv, n);
    put(&g->kv, values, 4 * n);
}

void gguf_add_tensor(GgufWriter *g, const char *name, int ndim, const uint64_t *ne, int type) {
    if (g->n_tensors == g->cap_tensors)
        g->tensors = xrealloc(g->tensors, (size_t)(g->cap_tensors = g->cap_tensors ? 2 * g->cap_tensors : 64) *
                                              sizeof *g->tensors);
    TensorInfo *t = &g->tensors[g->n_tensors++];
    t->name = xstrdup(name), t->ndim = ndim, t->type = type;
    t->ne[0] = ne[0], t->ne[1] = ndim > 1 ? ne[1] : 1;
}

static uint64_t numel(const TensorInfo *t) { return t->ne[0] * t->ne[1]; }
static uint64_t data_bytes(const TensorInfo *t) { return numel(t) * (t->type == GGUF_TYPE_F16 ? 2 : 4); }
static uint64_t aligned(uint64_t n) { return (n + GGUF_ALIGNMENT - 1) / GGUF_ALIGNMENT * GGUF_ALIGNMENT; }

/* float16 conversion in pieces of this many values, so that no tensor-sized buffer is needed */
#define HALF_CHUNK ((size_t)1 << 16)

int gguf_write(GgufWriter *g, FILE *f, const char *path, const float *(*get)(void *ctx, int i, float *scratch),
               void *ctx, size_t scratch_floats) {
    Bytes head = {0};
    put(&head, "GGUF", 4);
    put_u32(&head, 3);
    put_u64(&head, (uint64_t)g->n_tensors);
    put_u64(&head, g->n_kv);
    put(&head, g->kv.p, g->kv.n);
    uint64_t offset = 0;
    for (int i = 0; i < g->n_tensors; i++) {
        const TensorInfo *t = &g->tensors[i];
        put_str(&head, t->name, strlen(t->name));
        put_u32(&head, (uint32_t)t->ndim);
        for (int d = 0; d < t->ndim; d++) put_u64(&head, t->ne[d]);
        put_u32(&head, (uint32_t)t->type);
        put_u64(&head, offset);
        offset = aligned(offset + data_bytes(t));
    }
    static const uint8_t zeros[GGUF_ALIGNMENT];
    put(&head, zeros, aligned(head.n) - head.n);
    int bad = fwrite(head.p, 1, head.n, f) != head.n;
    free(head.p);
    float *scratch = xmalloc((scratch_floats ? scratch_floats : 1) * sizeof *scratch);
    uint16_t *half = xmalloc(HALF_CHUNK * sizeof *half);
    for (int i = 0; i < g->n_tensors && !bad; i++) {
        const TensorInfo *t = &g->tensors[i];
        size_t n = (size_t)numel(t);
        const float *x = get(ctx, i, scratch);
        if (t->type == GGUF_TYPE_F16) {
            for (size_t at = 0; at < n && !bad; at += HALF_CHUNK) {
                size_t k = n - at < HALF_CHUNK ? n - at : HALF_CHUNK;
                floats_to_halves(x + at, half, k);
                bad = fwrite(half, 2, k, f) != k;
            }
        } else {
            bad = fwrite(x, 4, n, f) != n;
        }
        size_t pad = (size_t)(aligned(data_bytes(t)) - data_bytes(t));
        if (!bad && pad) bad = fwrite(zeros, 1, pad, f) != pad;
    }
    free(scratch);
    free(half);
    return bad ? gpt_error("%s: cannot write: %s", path, strerror(errno)) : 0;
}
