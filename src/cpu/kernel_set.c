/* kernel_set.c: chooses the kernel set once and forwards every kernel to it
 * (see kernels.h and kernel_set.h). */
#include <stdlib.h>
#include <string.h>

#include "cpu/kernel_set.h"
#include "base/util.h"

static const KernelSet *active;

int kernels_supported(const char *name) {
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!strcmp(name, "avx2")) return avx2;
    /* x86-64-v4, what the avx512 set is compiled for */
    if (!strcmp(name, "avx512"))
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512cd");
    return 0;
}

int kernels_select(const char *name) {
    if (!name || !*name || !strcmp(name, "auto")) {
        if (!kernels_supported("avx2"))
            return gpt_error("this CPU lacks AVX2 or FMA: gpt is built for x86-64-v3 CPUs "
                             "(make NATIVE=1 builds for this one)");
        active = kernels_supported("avx512") ? &kernels_avx512 : &kernels_avx2;
        return 0;
    }
    const KernelSet *want = !strcmp(name, "avx2") ? &kernels_avx2 : !strcmp(name, "avx512") ? &kernels_avx512 : NULL;
    if (!want) return gpt_error("GPT_KERNELS=%s: expected avx2, avx512 or auto", name);
    if (!kernels_supported(name))
        return gpt_error("GPT_KERNELS=%s: this CPU cannot run the %s kernels (it lacks %s)", name, name,
                         want == &kernels_avx2 ? "AVX2 or FMA" : "AVX-512 F/BW/DQ/VL/CD");
    active = want;
    return 0;
}

int kernels_select_from_env(void) { return kernels_select(getenv("GPT_KERNELS")); }

/* The first kernel call chooses; programs call kernels_select_from_env first so that a
 * bad GPT_KERNELS is reported as an error before any work, and this path only falls back. */
static const KernelSet *set(void) {
    if (!active && kernels_select_from_env()) active = &kernels_avx2;
    return active;
}

const char *kernels_name(void) { return set()->name; }

#define FORWARD_V(name, params, args) \
    void name params { set()->name args; }
#define FORWARD_R(type, name, params, args) \
    type name params { return set()->name args; }
KERNELS(FORWARD_V, FORWARD_R)
