/* test_threads.c: the default thread count of a rank (cpu/threads.h): --threads, then
 * OMP_NUM_THREADS, then SLURM_CPUS_PER_TASK, then the cores of the affinity mask divided
 * by the ranks on this node, and the reason given for each. */
#define _GNU_SOURCE /* sched_getaffinity */
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu/threads.h"

static const char *const vars[] = {"OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "OMPI_COMM_WORLD_LOCAL_SIZE",
                                   "MPI_LOCALNRANKS", "SLURM_STEP_TASKS_PER_NODE", "SLURM_NODEID"};

static cpu_set_t mask; /* the test process's own, restored after each test */

static int clean(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
    return sched_setaffinity(0, sizeof mask, &mask);
}

static int choose(int given, char *why) { return compute_threads_choose(given, why, 160); }

/* The default without any variable: the cores of the mask, on 1 rank; the count is
 * read back from the reason, which says "N core(s)" or "N CPU(s)". */
static int own_cores(void) {
    char why[160];
    int n = choose(0, why), have = 0;
    assert_int_equal(sscanf(why, "%d", &have), 1);
    assert_true(strstr(why, ", 1 rank on this node") != NULL);
    assert_int_equal(n, have);
    return have;
}

static void given_outranks_everything(void **state) {
    (void)state;
    char why[160];
    setenv("OMP_NUM_THREADS", "3", 1);
    setenv("SLURM_CPUS_PER_TASK", "5", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2", 1);
    assert_int_equal(choose(7, why), 7);
    assert_string_equal(why, "--threads 7");
    char line[200];
    assert_string_equal(compute_threads_describe(7, why, line, sizeof line), "7 threads: --threads 7");
    assert_string_equal(compute_threads_describe(1, "OMP_NUM_THREADS=1", line, sizeof line),
                        "1 thread: OMP_NUM_THREADS=1");
}

static void omp_num_threads_outranks_slurm(void **state) {
    (void)state;
    char why[160];
    setenv("SLURM_CPUS_PER_TASK", "5", 1);
    setenv("OMP_NUM_THREADS", "3", 1);
    assert_int_equal(choose(0, why), 3);
    assert_string_equal(why, "OMP_NUM_THREADS=3");
    setenv("OMP_NUM_THREADS", "4,2", 1); /* nested levels: the outermost */
    assert_int_equal(choose(0, why), 4);
    unsetenv("OMP_NUM_THREADS");
    assert_int_equal(choose(0, why), 5);
    assert_string_equal(why, "SLURM_CPUS_PER_TASK=5");
}

static void bad_values_are_skipped_and_named(void **state) {
    (void)state;
    char why[160];
    setenv("OMP_NUM_THREADS", "many", 1);
    setenv("SLURM_CPUS_PER_TASK", "6", 1);
    assert_int_equal(choose(0, why), 6);
    assert_string_equal(why, "SLURM_CPUS_PER_TASK=6; OMP_NUM_THREADS='many' ignored: not a positive integer");
    setenv("SLURM_CPUS_PER_TASK", "0", 1);
    setenv("OMP_NUM_THREADS", "-2", 1);
    int n = choose(0, why);
    assert_true(n >= 1);
    assert_true(strstr(why, "rank on this node; OMP_NUM_THREADS='-2' ignored: not a positive integer; "
                            "SLURM_CPUS_PER_TASK='0' ignored: not a positive integer") != NULL);
}

static void one_cpu_in_the_mask_is_one_thread(void **state) {
    (void)state;
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &mask)) {
            CPU_SET(c, &one);
            break;
        }
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
    char why[160];
    assert_int_equal(choose(0, why), 1);
    assert_true(!strcmp(why, "1 core, 1 rank on this node") || !strcmp(why, "1 CPU, 1 rank on this node"));
}

static void the_node_is_shared_among_its_ranks(void **state) {
    (void)state;
    int cores = own_cores();
    char why[160], want[160];
    choose(0, why);
    const char *unit = strstr(why, "CPU") ? "CPU" : "core";
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2", 1);
    assert_int_equal(choose(0, why), cores / 2 > 0 ? cores / 2 : 1);
    snprintf(want, sizeof want, "%d %s%s, 2 ranks on this node", cores, unit, cores == 1 ? "" : "s");
    assert_string_equal(why, want);
    /* more ranks than cores: still one thread each */
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "100000", 1);
    assert_int_equal(choose(0, why), 1);
    unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    setenv("MPI_LOCALNRANKS", "100000", 1); /* MPICH's Hydra */
    assert_int_equal(choose(0, why), 1);
    assert_true(strstr(why, "100000 ranks on this node") != NULL);
}

static void srun_tasks_of_this_node(void **state) {
    (void)state;
    char why[160];
    own_cores();
    setenv("SLURM_STEP_TASKS_PER_NODE", "100000(x2),1", 1);
    setenv("SLURM_NODEID", "1", 1);
    assert_int_equal(choose(0, why), 1);
    assert_true(strstr(why, ", 100000 ranks on this node") != NULL);
    setenv("SLURM_NODEID", "2", 1);
    choose(0, why);
    assert_true(strstr(why, ", 1 rank on this node") != NULL);
    setenv("SLURM_STEP_TASKS_PER_NODE", "7", 1); /* a malformed or short list counts 1 rank */
    setenv("SLURM_NODEID", "3", 1);
    choose(0, why);
    assert_true(strstr(why, ", 1 rank on this node") != NULL);
    setenv("SLURM_NODEID", "0", 1);
    choose(0, why);
    assert_true(strstr(why, ", 7 ranks on this node") != NULL);
    /* Open MPI's count, set by mpirun, comes before srun's (mpirun inside a Slurm job) */
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "3", 1);
    choose(0, why);
    assert_true(strstr(why, ", 3 ranks on this node") != NULL);
}

int main(void) {
    if (sched_getaffinity(0, sizeof mask, &mask)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(given_outranks_everything, clean),
        cmocka_unit_test_setup(omp_num_threads_outranks_slurm, clean),
        cmocka_unit_test_setup(bad_values_are_skipped_and_named, clean),
        cmocka_unit_test_setup(one_cpu_in_the_mask_is_one_thread, clean),
        cmocka_unit_test_setup(the_node_is_shared_among_its_ranks, clean),
        cmocka_unit_test_setup(srun_tasks_of_this_node, clean),
    };
    int rc = cmocka_run_group_tests_name("threads", tests, NULL, NULL);
    sched_setaffinity(0, sizeof mask, &mask);
    return rc;
}
