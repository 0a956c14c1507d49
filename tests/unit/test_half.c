/* test_half.c: float16 conversion (GGUF --dtype f16, safetensors F16) against the CPU's
 * own F16C instructions, which round to nearest even: every half round-trips, float32
 * values across the whole range (subnormals, ties, overflow, NaN) round as F16C does, and
 * the vector conversion of whole buffers agrees with the scalar one. */
#include <immintrin.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/util.h"

static float bits_to_float(uint32_t x) {
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

static void every_half_round_trips(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = half_to_float((uint16_t)h);
        assert_true(memcmp(&(float){_cvtsh_ss((uint16_t)h)}, &f, sizeof f) == 0 || (isnan(f) && isnan(_cvtsh_ss((uint16_t)h))));
        if (isnan(f)) assert_true((float_to_half(f) & 0x7c00) == 0x7c00 && (float_to_half(f) & 0x3ff));
        else assert_int_equal(float_to_half(f), h);
    }
}

static void floats_round_as_f16c(void **state) {
    (void)state;
    /* a stride through every bit pattern, and each pattern next to the float32 halfway points */
    for (uint64_t x = 0; x < ((uint64_t)1 << 32); x += 251) {
        float f = bits_to_float((uint32_t)x);
        uint16_t want = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT), got = float_to_half(f);
        if (isnan(f)) assert_true((got & 0x7c00) == 0x7c00 && (got & 0x3ff));
        else assert_int_equal(got, want);
    }
    for (uint32_t h = 0; h < 0x7c00; h++) { /* between h and h + 1: the tie and its neighbours */
        for (int sign = 0; sign < 2; sign++) {
            float lo = half_to_float((uint16_t)h), hi = half_to_float((uint16_t)(h + 1));
            double mid = ((double)lo + (double)hi) / 2;
            float tie = (float)mid, below = nextafterf(tie, 0.0f), above = nextafterf(tie, INFINITY);
            float cases[3] = {tie, below, above};
            for (int k = 0; k < 3; k++) {
                float f = sign ? -cases[k] : cases[k];
                assert_int_equal(float_to_half(f), _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
            }
        }
    }
    /* the vector conversion gives the same, tails included */
    enum { N = 4099 };
    static float xs[N];
    static uint16_t hs[N];
    for (int k = 0; k < N; k++) xs[k] = bits_to_float((uint32_t)k * 1048573u);
    floats_to_halves(xs, hs, N);
    for (int k = 0; k < N; k++)
        if (!isnan(xs[k])) assert_int_equal(hs[k], float_to_half(xs[k]));
    assert_int_equal(float_to_half(65504.0f), 0x7bff);
    assert_int_equal(float_to_half(65520.0f), 0x7c00); /* the tie above the largest half rounds to infinity */
    assert_int_equal(float_to_half(ldexpf(1.0f, -25)), 0x0000);
    assert_int_equal(float_to_half(ldexpf(1.5f, -25)), 0x0001);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_half_round_trips),
        cmocka_unit_test(floats_round_as_f16c),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
