/* test_precision.c: bf16 rounding (every kernel set), the oneDNN matmul wrapper (f32
 * here on any CPU, bf16 where oneDNN has it), and bf16 products on each path against
 * double-precision references on rounded operands. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernel_sets.h"

#include "base/rng.h"
#include "base/util.h"
#include "cpu/kernels.h"
#include "cpu/onednn.h"
#include "cpu/precision.h"

static float from_bits(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
static uint32_t to_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }

static float round1(float x) {
    float y;
    bf16_round(&y, &x, 1);
    return y;
}

/* The rounding written from its definition, not from the kernel's bit trick: the nearer
 * of the two bf16 neighbours, the even one on a tie. */
static float nearest_bf16(float x) {
    uint32_t u = to_bits(x);
    float lo = from_bits(u & 0xffff0000u), hi = from_bits((u & 0xffff0000u) + 0x10000u);
    double dl = fabs((double)x - lo), dh = fabs((double)x - hi);
    if (dl != dh) return dl < dh ? lo : hi;
    return (to_bits(lo) >> 16) % 2 == 0 ? lo : hi;
}

static void rounding_is_nearest_even(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < 200000; i++) {
        /* normal floats of every exponent, both signs */
        uint32_t u = (uint32_t)rng_next(&r);
        uint32_t exp = (u >> 23) & 0xff;
        if (exp == 0 || exp >= 0xfe) continue;
        float x = from_bits(u), y = round1(x);
        assert_int_equal(to_bits(y) & 0xffff, 0);
        assert_true(to_bits(y) == to_bits(nearest_bf16(x)) || isinf(y));
    }
    /* ties: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7; goes to the even 1 */
    assert_true(round1(1.0f + 0x1p-8f) == 1.0f);
    assert_true(round1(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f); /* odd below: rounds up */
    assert_true(round1(-1.0f - 0x1p-8f) == -1.0f);
    assert_true(round1(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f);
    /* specials */
    assert_true(isnan(round1(NAN)) && isnan(round1(from_bits(0x7f800001u))) && isnan(round1(from_bits(0xff800001u))));
    assert_true(round1(INFINITY) == INFINITY && round1(-INFINITY) == -INFINITY);
    assert_true(round1(3.4028235e38f) == INFINITY); /* above the largest bf16's halfway point */
    assert_true(to_bits(round1(-0.0f)) == 0x80000000u && to_bits(round1(0.0f)) == 0);
    assert_true(to_bits(round1(from_bits(0x00400000u))) == 0 && to_bits(round1(from_bits(0x80012345u))) == 0x80000000u);
    assert_true(round1(1.17549435e-38f) == 1.17549435e-38f); /* the smallest normal stays */
}

static void pack_matches_round(void **state) {
    (void)state;
    enum { R = 37, Cc = 150 };
    float x[R * Cc], y[R * Cc];
    uint16_t p[R * Cc], t[R * Cc];
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < R * Cc; i++) x[i] = (rng_uniform(&r) - 0.5f) * 100.0f;
    bf16_round(y, x, R * Cc);
    bf16_pack(p, x, R, Cc, 0);
    bf16_pack(t, x, R, Cc, 1);
    float w[R * Cc];
    bf16_unpack(w, p, R * Cc); /* widening is exact: back to the rounded values */
    for (int i = 0; i < R; i++)
        for (int j = 0; j < Cc; j++) {
            assert_int_equal((uint32_t)p[i * Cc + j] << 16, to_bits(y[i * Cc + j]));
            assert_int_equal(t[j * R + i], p[i * Cc + j]);
            assert_int_equal(to_bits(w[i * Cc + j]), to_bits(y[i * Cc + j]));
        }
    /* in place, and beyond one parallel chunk */
    size_t n = 100003;
    float *big = xalloc_floats(n), *ref = xalloc_floats(n);
    for (size_t i = 0; i < n; i++) big[i] = ref[i] = rng_uniform(&r) * 1e-3f;
    bf16_round(big, big, n);
    for (size_t i = 0; i < n; i++) assert_true(big[i] == nearest_bf16(ref[i]));
    free(big);
    free(ref);
}

/* C (M,N) = A B with A, B given plainly or transposed, in double. */
static void reference_product(double *c, const float *a, int ta, const float *b, int tb, int M, int N, int K) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += (double)(ta ? a[(size_t)k * M + i] : a[(size_t)i * K + k]) *
                     (tb ? b[(size_t)j * K + k] : b[(size_t)k * N + j]);
            c[(size_t)i * N + j] = s;
        }
}

static void onednn_products(OnednnType type) {
    enum { M = 67, N = 45, K = 130 };
    float a[M * K], b[K * N], c[M * N], c0[M * N];
    uint16_t ah[M * K], bh[K * N];
    double ref[M * N];
    Rng r;
    rng_seed(&r, 11);
    for (int i = 0; i < M * K; i++) a[i] = rng_uniform(&r) - 0.5f;
    for (int i = 0; i < K * N; i++) b[i] = rng_uniform(&r) - 0.5f;
    for (int i = 0; i < M * N; i++) c0[i] = rng_uniform(&r);
    if (type == ONEDNN_BF16) { /* the operands' bf16 values, which the reference multiplies */
        bf16_round(a, a, M * K);
        bf16_round(b, b, K * N);
    }
    for (int ta = 0; ta <= 1; ta++)
        for (int tb = 0; tb <= 1; tb++)
            for (int acc = 0; acc <= 1; acc++) {
                /* the same numbers laid out as the flags say */
                float at[M * K], bt[K * N];
                for (int i = 0; i < M; i++)
                    for (int k = 0; k < K; k++) at[ta ? k * M + i : i * K + k] = a[i * K + k];
                for (int k = 0; k < K; k++)
                    for (int j = 0; j < N; j++) bt[tb ? j * K + k : k * N + j] = b[k * N + j];
                bf16_pack(ah, at, 1, M * K, 0);
                bf16_pack(bh, bt, 1, K * N, 0);
                memcpy(c, c0, sizeof c);
                onednn_matmul(type, M, N, K, type == ONEDNN_BF16 ? (void *)ah : (void *)at, ta,
                              type == ONEDNN_BF16 ? (void *)bh : (void *)bt, tb, c, acc);
                reference_product(ref, at, ta, bt, tb, M, N, K);
                for (int i = 0; i < M * N; i++)
                    assert_true(fabs(c[i] - (ref[i] + (acc ? c0[i] : 0.0))) < 1e-5);
            }
}

static void onednn_f32(void **state) {
    (void)state;
    assert_true(onednn_available(ONEDNN_F32));
    onednn_products(ONEDNN_F32);
}

static void onednn_bf16(void **state) {
    (void)state;
    onednn_products(ONEDNN_BF16);
}

/* bf16_linear_forward/backward on the chosen path against double sums of rounded
 * operands; the bias and its gradient from unrounded values. */
static void linear_products(void **state) {
    (void)state;
    enum { N = 50, Cin = 70, Cout = 90 };
    size_t nw = (size_t)Cout * Cin;
    float *params = xalloc_floats(nw + Cout), *w = params, *bias = params + nw;
    float in[N * Cin], dout[N * Cout], out[N * Cout], din[N * Cin], dw[Cout * Cin], db[Cout];
    float inr[N * Cin], doutr[N * Cout], wr[Cout * Cin];
    Rng r;
    rng_seed(&r, 5);
    for (size_t i = 0; i < nw + Cout; i++) params[i] = rng_normal(&r);
    for (int i = 0; i < N * Cin; i++) in[i] = rng_normal(&r);
    for (int i = 0; i < N * Cout; i++) dout[i] = rng_normal(&r);
    bf16_round(inr, in, N * Cin);
    bf16_round(doutr, dout, N * Cout);
    bf16_round(wr, w, nw);
    Bf16Products *p = bf16_products_create(params, nw + Cout, 0, (size_t)N * Cout);
    bf16_products_refresh(p);
    bf16_linear_forward(p, out, in, w, bias, N, Cin, Cout);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < Cout; o++) {
            double s = bias[o];
            for (int k = 0; k < Cin; k++) s += (double)inr[n * Cin + k] * wr[o * Cin + k];
            assert_true(fabs(out[n * Cout + o] - s) < 1e-4 * (1 + fabs(s)));
        }
    for (int i = 0; i < N * Cin; i++) din[i] = 1.0f; /* accumulated into */
    memset(dw, 0, sizeof dw);
    memset(db, 0, sizeof db);
    bf16_linear_backward(p, din, dw, db, dout, in, w, N, Cin, Cout, 1);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < Cin; k++) {
            double s = 1.0;
            for (int o = 0; o < Cout; o++) s += (double)doutr[n * Cout + o] * wr[o * Cin + k];
            assert_true(fabs(din[n * Cin + k] - s) < 1e-4 * (1 + fabs(s)));
        }
    for (int o = 0; o < Cout; o++) {
        double sb = 0.0;
        for (int n = 0; n < N; n++) sb += dout[n * Cout + o];
        assert_true(fabs(db[o] - sb) < 1e-4 * (1 + fabs(sb)));
        for (int k = 0; k < Cin; k++) {
            double s = 0.0;
            for (int n = 0; n < N; n++) s += (double)doutr[n * Cout + o] * inr[n * Cin + k];
            assert_true(fabs(dw[o * Cin + k] - s) < 1e-4 * (1 + fabs(s)));
        }
    }
    /* a changed weight is seen only after the copy is remade */
    w[0] += 1.0f;
    bf16_products_stale(p);
    bf16_products_refresh(p);
    float out2[N * Cout];
    bf16_linear_forward(p, out2, in, w, bias, N, Cin, Cout);
    assert_true(out2[0] != out[0]);
    bf16_products_free(p);
    free(params);
}

/* The copy is remade in the forward pass's order, from `first` on and then [0, first)
 * (the tied head): a refresh up to a point before the end leaves the head stale, and the
 * full one does not remake what is current (weights changed unannounced show which). */
static void refresh_order(void **state) {
    (void)state;
    enum { N = 4, Cin = 24, Cout = 16, W = Cout * Cin };
    float *params = xalloc_floats(2 * W), *head = params, *w = params + W;
    float in[N * Cin], out[N * Cout], ref[N * Cout];
    for (int i = 0; i < N * Cin; i++) in[i] = (float)(i % 7) - 3.0f;
    for (int i = 0; i < 2 * W; i++) params[i] = 1.0f;
    Bf16Products *p = bf16_products_create(params, 2 * W, W, (size_t)N * Cin);
    bf16_products_refresh_upto(p, 2 * W - 1); /* w but its last element */
    bf16_products_refresh_upto(p, W);         /* before the order's start: nothing */
    for (int i = 0; i < W; i++) head[i] = 2.0f, w[i] = 3.0f;
    bf16_products_refresh_upto(p, 2 * W); /* w's last element, then the head */
    Bf16Products *q = bf16_products_create(params, 2 * W, 0, (size_t)N * Cin);
    bf16_products_refresh(q);
    bf16_linear_forward(p, out, in, head, NULL, N, Cin, Cout); /* the head remade at the end: 2 */
    bf16_linear_forward(q, ref, in, head, NULL, N, Cin, Cout);
    assert_memory_equal(out, ref, sizeof out);
    for (int i = 0; i < W - 1; i++) w[i] = 1.0f; /* what the copy of w holds but its last */
    bf16_products_stale(q);
    bf16_products_refresh(q);
    bf16_linear_forward(p, out, in, w, NULL, N, Cin, Cout);
    bf16_linear_forward(q, ref, in, w, NULL, N, Cin, Cout);
    assert_memory_equal(out, ref, sizeof out);
    bf16_products_free(p);
    bf16_products_free(q);
    free(params);
}

static void path_choice(void **state) {
    (void)state;
    setenv("GPT_MATMUL", "bogus", 1);
    assert_int_equal(bf16_path_select(), -1);
    assert_non_null(strstr(gpt_last_error(), "GPT_MATMUL=bogus"));
    setenv("GPT_MATMUL", "emulate", 1);
    assert_int_equal(bf16_path_select(), 0);
    assert_int_equal(bf16_path(), BF16_EMULATED);
    setenv("GPT_MATMUL", "onednn", 1);
    int amx = __builtin_cpu_supports("amx-bf16") && onednn_available(ONEDNN_BF16);
    assert_int_equal(bf16_path_select(), amx ? 0 : -1);
    if (amx) assert_int_equal(bf16_path(), BF16_ONEDNN);
    else assert_non_null(strstr(gpt_last_error(), "GPT_MATMUL=onednn"));
    unsetenv("GPT_MATMUL");
    assert_int_equal(bf16_path_select(), 0);
    assert_int_equal(bf16_path(), amx ? BF16_ONEDNN : BF16_EMULATED);
}

/* linear_products and refresh_order on each path this CPU runs. */
static int run_paths(void) {
    const struct CMUnitTest linear[] = {cmocka_unit_test(linear_products), cmocka_unit_test(refresh_order)};
    int failed = 0;
    const char *paths[] = {"emulate", "onednn"};
    for (int i = 0; i < 2; i++) {
        setenv("GPT_MATMUL", paths[i], 1);
        if (bf16_path_select()) {
            printf("bf16 products, GPT_MATMUL=%s: not run: %s\n", paths[i], gpt_last_error());
            continue;
        }
        char name[64];
        snprintf(name, sizeof name, "bf16 products, GPT_MATMUL=%s", paths[i]);
        failed += _cmocka_run_group_tests(name, linear, 2, NULL, NULL);
    }
    unsetenv("GPT_MATMUL");
    return failed;
}

int main(void) {
    const struct CMUnitTest rounding[] = {cmocka_unit_test(rounding_is_nearest_even),
                                          cmocka_unit_test(pack_matches_round)};
    const struct CMUnitTest other[] = {cmocka_unit_test(onednn_f32), cmocka_unit_test(path_choice)};
    const struct CMUnitTest bf16[] = {cmocka_unit_test(onednn_bf16)};
    int failed = run_on_kernel_sets("bf16 rounding", rounding, 2);
    kernels_select(NULL);
    failed += cmocka_run_group_tests_name("oneDNN and the bf16 path", other, NULL, NULL);
    if (onednn_available(ONEDNN_BF16)) failed += cmocka_run_group_tests_name("oneDNN bf16", bf16, NULL, NULL);
    else printf("oneDNN bf16: not run, oneDNN has no bf16 matmul on this CPU\n");
    failed += run_paths();
    return failed;
}
