/* blas.c: OpenBLAS kernel selection, and the threads of BLAS and the kernels (see blas.h). */
#include "cpu/blas.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/rng.h"
#include "base/util.h"

#define AUTO_MARK "GPT_OPENBLAS_CORE_AUTO"

/* Generic fallbacks OpenBLAS uses for CPUs it cannot identify. */
static int is_generic(const char *core) {
    return !strcmp(core, "Prescott") || !strcmp(core, "Core2") || !strcmp(core, "Nehalem") ||
           !strcmp(core, "Katmai") || !strcmp(core, "Northwood");
}

static const char *best_core_for_cpu(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}

void blas_select_core(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") || getenv(AUTO_MARK)) return;
    const char *best = best_core_for_cpu();
    if (!best || !is_generic(openblas_get_corename())) return;
    /* the resolved path, not /proc/self/exe, so that ps and pgrep still show "gpt" */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return;
    self[n] = '\0';
    setenv("OPENBLAS_CORETYPE", best, 1);
    setenv(AUTO_MARK, best, 1);
    execv(self, argv);
    /* exec failed: carry on with the generic kernels */
    unsetenv("OPENBLAS_CORETYPE");
}

const char *blas_core_name(void) { return openblas_get_corename(); }

const char *cpu_model_name(void) {
    static char name[128];
    if (name[0]) return name;
    char line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) || !colon) continue;
        colon++;
        while (*colon == ' ' || *colon == '\t') colon++;
        snprintf(name, sizeof name, "%s", colon);
        name[strcspn(name, "\n")] = '\0';
        break;
    }
    if (f) fclose(f);
    if (!name[0]) snprintf(name, sizeof name, "unknown CPU");
    return name;
}

const char *blas_core_origin(void) {
    const char *mark = getenv(AUTO_MARK), *set = getenv("OPENBLAS_CORETYPE");
    if (mark && set && !strcmp(mark, set)) return "auto-selected";
    return set ? "set by OPENBLAS_CORETYPE" : "detected";
}

void compute_threads_set(int n) {
    /* OpenBLAS's OpenMP build runs sgemm on the same OpenMP team, so one count serves
     * both; both calls are made so that neither depends on the other's side effects. */
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
}

int compute_threads(void) { return omp_get_max_threads(); }

int blas_threads(void) { return openblas_get_num_threads(); }

double product_peak_gflops(void (*product)(void *ctx, const float *a, const float *b, float *c, int n), void *ctx) {
    enum { N = 2048, REPS = 4 };
    size_t nn = (size_t)N * N;
    float *a = xalloc_floats(nn), *b = xalloc_floats(nn), *c = xalloc_floats(nn);
    Rng r;
    rng_seed(&r, 1);
    for (size_t i = 0; i < nn; i++) a[i] = rng_uniform(&r) - 0.5f, b[i] = rng_uniform(&r) - 0.5f;
    double best = 0.0;
    for (int i = 0; i <= REPS; i++) { /* the first is a warm-up */
        double t0 = now_seconds();
        product(ctx, a, b, c, N);
        double g = 2.0 * N * (double)nn / (now_seconds() - t0) / 1e9;
        if (i > 0 && g > best) best = g;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

static void sgemm_product(void *ctx, const float *a, const float *b, float *c, int n) {
    (void)ctx;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
}

double blas_sgemm_peak_gflops(void) { return product_peak_gflops(sgemm_product, NULL); }
