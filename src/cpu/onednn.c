/* onednn.c: oneDNN matmul primitives kept per shape (see onednn.h). */
#include "cpu/onednn.h"

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <stdio.h>
#include <stdlib.h>

/* Distinct shapes of a model: about a dozen per layer shape plus the head's chunks. */
#define KEPT 64

typedef struct {
    int used;
    OnednnType t;
    int M, N, K, trans_a, trans_b, accumulate;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t a, b, c;
} Kept;

static dnnl_engine_t engine;
static dnnl_stream_t stream;
static Kept kept[KEPT];
static int next_slot;

static int setup(void) {
    if (engine) return 0;
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) return -1;
    if (dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) {
        dnnl_engine_destroy(engine);
        engine = NULL;
        return -1;
    }
    return 0;
}

static dnnl_data_type_t dtype(OnednnType t) { return t == ONEDNN_BF16 ? dnnl_bf16 : dnnl_f32; }

/* A (rows, cols) matrix stored row-major, or as its transpose's row-major storage. */
static void matrix_desc(dnnl_memory_desc_t *d, dnnl_data_type_t dt, int rows, int cols, int trans) {
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides = {trans ? 1 : cols, trans ? rows : 1};
    dnnl_memory_desc_init_by_strides(d, 2, dims, dt, strides);
}

/* The primitive descriptor of a product, or NULL with its status in *st. */
static dnnl_primitive_desc_t product_desc(Kept *k, dnnl_status_t *st) {
    matrix_desc(&k->a, dtype(k->t), k->M, k->K, k->trans_a);
    matrix_desc(&k->b, dtype(k->t), k->K, k->N, k->trans_b);
    matrix_desc(&k->c, dnnl_f32, k->M, k->N, 0);
    dnnl_matmul_desc_t md;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_primitive_desc_t pd = NULL;
    *st = dnnl_matmul_desc_init(&md, &k->a, &k->b, NULL, &k->c);
    if (*st == dnnl_success && k->accumulate) { /* C += A B: the sum post-op */
        *st = dnnl_primitive_attr_create(&attr);
        if (*st == dnnl_success) *st = dnnl_post_ops_create(&ops);
        if (*st == dnnl_success) *st = dnnl_post_ops_append_sum(ops, 1.0f);
        if (*st == dnnl_success) *st = dnnl_primitive_attr_set_post_ops(attr, ops);
    }
    if (*st == dnnl_success) *st = dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL);
    if (ops) dnnl_post_ops_destroy(ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return *st == dnnl_success ? pd : NULL;
}

/* A product of 256 x 1024 x 256 without accumulation: what onednn_available and
 * onednn_impl ask about. */
static dnnl_primitive_desc_t probe(OnednnType t) {
    if (setup()) return NULL;
    Kept k = {.t = t, .M = 256, .N = 1024, .K = 256};
    dnnl_status_t st;
    return product_desc(&k, &st);
}

const char *onednn_impl(OnednnType t) {
    static char name[2][64];
    dnnl_primitive_desc_t pd = probe(t);
    const char *impl = NULL;
    if (pd && dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
        snprintf(name[t], sizeof name[t], "%s", impl);
    else
        snprintf(name[t], sizeof name[t], "%s", "unnamed");
    if (pd) dnnl_primitive_desc_destroy(pd);
    return pd ? name[t] : NULL;
}

int onednn_available(OnednnType t) { return onednn_impl(t) != NULL; }

static Kept *find_or_create(OnednnType t, int M, int N, int K, int trans_a, int trans_b, int accumulate) {
    for (int i = 0; i < KEPT && kept[i].used; i++) {
        Kept *k = &kept[i];
        if (k->t == t && k->M == M && k->N == N && k->K == K && k->trans_a == trans_a && k->trans_b == trans_b &&
            k->accumulate == accumulate)
            return k;
    }
    Kept *k = &kept[next_slot];
    next_slot = (next_slot + 1) % KEPT;
    if (k->used) dnnl_primitive_destroy(k->prim);
    *k = (Kept){.used = 0, .t = t, .M = M, .N = N, .K = K, .trans_a = trans_a, .trans_b = trans_b,
                .accumulate = accumulate};
    dnnl_status_t st = setup() ? dnnl_runtime_error : dnnl_success;
    dnnl_primitive_desc_t pd = st == dnnl_success ? product_desc(k, &st) : NULL;
    if (pd) st = dnnl_primitive_create(&k->prim, pd);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (st != dnnl_success) {
        fprintf(stderr, "gpt: oneDNN cannot run a %s product of %d x %d x %d (%s); GPT_MATMUL=emulate avoids "
                        "oneDNN\n", t == ONEDNN_BF16 ? "bf16" : "f32", M, N, K, dnnl_status2str(st));
        exit(1);
    }
    k->used = 1;
    return k;
}

void onednn_matmul(OnednnType t, int M, int N, int K, const void *A, int trans_a, const void *B, int trans_b,
                   float *C, int accumulate) {
    Kept *k = find_or_create(t, M, N, K, trans_a, trans_b, accumulate);
    dnnl_memory_t a, b, c;
    /* the handles are the caller's buffers: oneDNN reads A and B only */
    dnnl_memory_create(&a, &k->a, engine, (void *)A);
    dnnl_memory_create(&b, &k->b, engine, (void *)B);
    dnnl_memory_create(&c, &k->c, engine, C);
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}};
    dnnl_status_t st = dnnl_primitive_execute(k->prim, stream, 3, args);
    if (st == dnnl_success) st = dnnl_stream_wait(stream);
    dnnl_memory_destroy(a);
    dnnl_memory_destroy(b);
    dnnl_memory_destroy(c);
    if (st != dnnl_success) {
        fprintf(stderr, "gpt: oneDNN failed a product of %d x %d x %d: %s\n", M, N, K, dnnl_status2str(st));
        exit(1);
    }
}
