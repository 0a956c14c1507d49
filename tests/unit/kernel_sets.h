/* kernel_sets.h: runs a unit-test group on every kernel set this CPU runs (see
 * include/cpu/kernels.h), on one thread and on two, so that an AVX-512 machine tests the
 * AVX2 set too and every kernel is tested split across threads. */
#ifndef TEST_KERNEL_SETS_H
#define TEST_KERNEL_SETS_H

#include <stdio.h>

#include "cpu/blas.h"
#include "cpu/kernels.h"

/* The number of failed tests, or 1 if no set could run at all. */
static int run_on_kernel_sets(const char *group, const struct CMUnitTest *tests, size_t n) {
    static const char *sets[] = {"avx2", "avx512"};
    int failed = 0, ran = 0;
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        if (!kernels_supported(sets[i])) {
            printf("%s: kernels %s not run, this CPU lacks them\n", group, sets[i]);
            continue;
        }
        for (int threads = 1; threads <= 2; threads++) {
            if (kernels_select(sets[i])) return 1;
            compute_threads_set(threads);
            char name[128];
            snprintf(name, sizeof name, "%s, kernels %s, %d thread(s)", group, sets[i], threads);
            failed += _cmocka_run_group_tests(name, tests, n, NULL, NULL);
            ran++;
        }
    }
    return ran ? failed : 1;
}

#endif
