/* precision.c: the bf16 path and a model's bf16 products (see precision.h). */
#include "cpu/precision.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "cpu/blas.h"
#include "cpu/kernels.h"
#include "cpu/onednn.h"

const char *const precision_names[] = {"fp32", "bf16", NULL};

const char *precision_name(Precision p) { return precision_names[p]; }

static int chosen; /* 0: not yet, else 1 + Bf16Path */
static char description[128];

static int cpu_has_amx(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("amx-bf16");
}

int bf16_path_select(void) {
    const char *want = getenv("GPT_MATMUL");
    if (want && !*want) want = NULL;
    if (want && strcmp(want, "onednn") && strcmp(want, "emulate"))
        return gpt_error("GPT_MATMUL=%s: expected onednn or emulate", want);
    int amx = cpu_has_amx();
    const char *impl = amx ? onednn_impl(ONEDNN_BF16) : NULL;
    if (want && !strcmp(want, "onednn") && !impl)
        return gpt_error("GPT_MATMUL=onednn: this CPU has no %s, so oneDNN has no fast bf16 product here "
                         "(GPT_MATMUL=emulate computes the same definition)",
                         amx ? "bf16 matmul in oneDNN" : "AMX-BF16");
    Bf16Path path = impl && (!want || !strcmp(want, "onednn")) ? BF16_ONEDNN : BF16_EMULATED;
    if (path == BF16_ONEDNN)
        snprintf(description, sizeof description, "oneDNN AMX (%s)", impl);
    else
        snprintf(description, sizeof description, "emulated, %s",
                 want ? "GPT_MATMUL=emulate" : amx ? "oneDNN has no AMX product" : "no AMX on this CPU");
    chosen = 1 + (int)path;
    return 0;
}

Bf16Path bf16_path(void) {
    if (!chosen && bf16_path_select()) {
        chosen = 1 + BF16_EMULATED;
        snprintf(description, sizeof description, "emulated");
    }
    return (Bf16Path)(chosen - 1);
}

const char *bf16_path_description(void) {
    bf16_path();
    return description;
}

const char *precision_description(Precision p) {
    static char text[160];
    if (p != PRECISION_BF16) return "fp32";
    snprintf(text, sizeof text, "bf16: %s", bf16_path_description());
    return text;
}

struct Bf16Products {
    Bf16Path path;
    const float *params;
    size_t n_params, scratch;
    size_t first;      /* the refresh order starts there and wraps round to [0, first) */
    size_t fresh;      /* the copy of the first `fresh` params in that order is current */
    void *copy;        /* n_params: uint16_t bits (oneDNN) or rounded floats (emulated) */
    float *in_r, *dout_r;               /* emulated: rounded operands */
    uint16_t *in_h, *dout_h, *dout_t;   /* oneDNN: packed operands, dout also transposed */
};

/* A path's element: bf16 bits (oneDNN) or rounded floats (emulated); and its scratch
 * buffers: in, dout and dout transposed (oneDNN) or in and dout (emulated). */
static size_t path_elem(Bf16Path path) { return path == BF16_ONEDNN ? sizeof(uint16_t) : sizeof(float); }
static size_t path_scratch_buffers(Bf16Path path) { return path == BF16_ONEDNN ? 3 : 2; }

size_t bf16_products_bytes(Bf16Path path, size_t n_params, size_t scratch, size_t *scratch_bytes) {
    if (scratch_bytes) *scratch_bytes = path_scratch_buffers(path) * scratch * path_elem(path);
    return n_params * path_elem(path);
}

Bf16Products *bf16_products_create(const float *params, size_t n_params, size_t first, size_t scratch) {
    assert(first <= n_params);
    Bf16Products *p = xcalloc(1, sizeof *p);
    *p = (Bf16Products){.path = bf16_path(), .params = params, .n_params = n_params, .first = first,
                        .scratch = scratch, .fresh = 0};
    size_t scratch_bytes, copy_bytes = bf16_products_bytes(p->path, n_params, scratch, &scratch_bytes);
    size_t one = scratch_bytes / path_scratch_buffers(p->path);
    if (p->path == BF16_ONEDNN) {
        p->copy = xmalloc(copy_bytes);
        p->in_h = xmalloc(one);
        p->dout_h = xmalloc(one);
        p->dout_t = xmalloc(one);
    } else {
        p->copy = xalloc_floats(copy_bytes / sizeof(float));
        p->in_r = xalloc_floats(one / sizeof(float));
        p->dout_r = xalloc_floats(one / sizeof(float));
    }
    return p;
}

void bf16_products_free(Bf16Products *p) {
    if (!p) return;
    free(p->copy);
    free(p->in_r);
    free(p->dout_r);
    free(p->in_h);
    free(p->dout_h);
    free(p->dout_t);
    free(p);
}

void bf16_products_stale(Bf16Products *p) { p->fresh = 0; }

/* Remakes the copy of params [lo, hi). */
static void remake(Bf16Products *p, size_t lo, size_t hi) {
    if (p->path == BF16_ONEDNN) {
        enum { PIECE = 1 << 30 }; /* bf16_pack counts in int */
        for (size_t i = lo; i < hi; i += PIECE) {
            size_t n = hi - i < PIECE ? hi - i : PIECE;
            bf16_pack((uint16_t *)p->copy + i, p->params + i, 1, (int)n, 0);
        }
    } else {
        bf16_round((float *)p->copy + lo, p->params + lo, hi - lo);
    }
}

/* Where params[i] comes in the refresh order. */
static size_t order_of(const Bf16Products *p, size_t i) {
    return i >= p->first ? i - p->first : i + p->n_params - p->first;
}

void bf16_products_refresh_upto(Bf16Products *p, size_t upto) {
    size_t n = p->n_params, want = upto >= n ? n : upto > p->first ? upto - p->first : 0;
    if (want <= p->fresh) return;
    size_t tail = n - p->first; /* [first, n) comes first in the order, then [0, first) */
    if (p->fresh < tail) remake(p, p->first + p->fresh, p->first + (want < tail ? want : tail));
    if (want > tail) remake(p, p->fresh > tail ? p->fresh - tail : 0, want - tail);
    p->fresh = want;
}

/* The copy of params [i, i + numel) is current (a weight lies on one side of first). */
static int is_fresh(const Bf16Products *p, size_t i, size_t numel) { return order_of(p, i) + numel <= p->fresh; }

void bf16_products_refresh(Bf16Products *p) { bf16_products_refresh_upto(p, p->n_params); }

/* The copy of master weight w. */
static size_t weight_index(const Bf16Products *p, const float *w, size_t numel) {
    assert(w >= p->params && w + numel <= p->params + p->n_params);
    (void)numel;
    return (size_t)(w - p->params);
}

void bf16_linear_forward(Bf16Products *p, float *out, const float *in, const float *w, const float *bias, int N,
                         int Cin, int Cout) {
    size_t wi = weight_index(p, w, (size_t)Cout * Cin), nin = (size_t)N * Cin;
    assert(is_fresh(p, wi, (size_t)Cout * Cin) && nin <= p->scratch);
    if (p->path == BF16_EMULATED) {
        bf16_round(p->in_r, in, nin);
        matmul_forward(out, p->in_r, (const float *)p->copy + wi, bias, N, Cin, Cout);
        return;
    }
    bf16_pack(p->in_h, in, N, Cin, 0);
    if (bias)
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * Cout, bias, (size_t)Cout * sizeof(float));
    /* out (N,Cout) = in (N,Cin) w^T: w (Cout,Cin) row-major is the transpose's storage */
    onednn_matmul(ONEDNN_BF16, N, Cout, Cin, p->in_h, 0, (const uint16_t *)p->copy + wi, 1, out, bias != NULL);
}

void bf16_linear_backward(Bf16Products *p, float *din, float *dw, float *dbias, const float *dout, const float *in,
                          const float *w, int N, int Cin, int Cout, int accumulate_din) {
    size_t wi = weight_index(p, w, (size_t)Cout * Cin), nin = (size_t)N * Cin, nout = (size_t)N * Cout;
    assert(is_fresh(p, wi, (size_t)Cout * Cin) && nin <= p->scratch && nout <= p->scratch);
    if (dbias) matmul_backward(NULL, NULL, dbias, dout, NULL, NULL, N, Cin, Cout, 0);
    if (p->path == BF16_EMULATED) {
        bf16_round(p->dout_r, dout, nout);
        if (dw) bf16_round(p->in_r, in, nin);
        matmul_backward(din, dw, NULL, p->dout_r, dw ? p->in_r : NULL, (const float *)p->copy + wi, N, Cin, Cout,
                        accumulate_din);
        return;
    }
    if (din) { /* din (N,Cin) = dout (N,Cout) w (Cout,Cin) */
        bf16_pack(p->dout_h, dout, N, Cout, 0);
        onednn_matmul(ONEDNN_BF16, N, Cin, Cout, p->dout_h, 0, (const uint16_t *)p->copy + wi, 0, din, accumulate_din);
    }
    if (dw) { /* dw (Cout,Cin) += dout^T (Cout,N) in (N,Cin), dout^T packed as a plain matrix */
        bf16_pack(p->dout_t, dout, N, Cout, 1);
        bf16_pack(p->in_h, in, N, Cin, 0);
        onednn_matmul(ONEDNN_BF16, Cout, Cin, N, p->dout_t, 0, p->in_h, 0, dw, 1);
    }
}

/* b plays the weights: their copy is made at the first call, as a model's is once a step. */
static void bf16_product(void *ctx, const float *a, const float *b, float *c, int n) {
    Bf16Products **p = ctx;
    if (!*p) {
        *p = bf16_products_create(b, (size_t)n * n, 0, (size_t)n * n);
        bf16_products_refresh(*p);
    }
    bf16_linear_forward(*p, c, a, b, NULL, n, n, n);
}

double bf16_peak_gflops(void) {
    Bf16Products *p = NULL;
    double best = product_peak_gflops(bf16_product, &p);
    bf16_products_free(p);
    return best;
}
