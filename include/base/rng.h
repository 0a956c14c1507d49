/* rng.h: deterministic random numbers.
 *
 * Two kinds: a sequential SplitMix64 stream (weight init, synthetic data), and a
 * counter-based generator, rng_bits24_at(key, i), whose i-th value needs no state.
 * Dropout uses the latter (kernels.h): the backward pass regenerates the forward masks
 * instead of storing them, and a mask depends only on (key, position), never on thread
 * or call order. */
#ifndef GPT_RNG_H
#define GPT_RNG_H

#include <stdint.h>

/* SplitMix64's finaliser: a bijective 64-bit mixer. */
static inline uint64_t rng_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Derives an independent key for a sub-stream (a step, a layer, a site). */
static inline uint64_t rng_key(uint64_t key, uint64_t stream) {
    return rng_mix64(key ^ rng_mix64(stream + 0x9E3779B97F4A7C15ULL));
}

/* 24 uniform bits of the i-th value of the counter-based stream `key`. */
static inline uint32_t rng_bits24_at(uint64_t key, uint64_t i) {
    return (uint32_t)(rng_mix64(key + i * 0x9E3779B97F4A7C15ULL) >> 40);
}

typedef struct { uint64_t state; } Rng;

static inline void rng_seed(Rng *r, uint64_t seed) { r->state = seed; }
static inline uint64_t rng_next(Rng *r) {
    r->state += 0x9E3779B97F4A7C15ULL;
    return rng_mix64(r->state);
}
/* Uniform in [0, 1). */
static inline float rng_uniform(Rng *r) { return (float)(rng_next(r) >> 40) * 0x1.0p-24f; }
/* Standard normal (Box-Muller). */
float rng_normal(Rng *r);

#endif
