/* rng.c: the parts of rng.h that are not inline. */
#include "base/rng.h"

#include <math.h>

float rng_normal(Rng *r) {
    /* Box-Muller; 1 - u keeps the logarithm's argument in (0, 1]. */
    float u1 = 1.0f - rng_uniform(r), u2 = rng_uniform(r);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}
