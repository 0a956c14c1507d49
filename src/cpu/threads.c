/* threads.c: the default thread count of a rank (see threads.h). */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "cpu/threads.h"

#include <ctype.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/blas.h"

/* A positive integer from s[0..n) with nothing else; 0 if it is not one. */
static int positive(const char *s, size_t n) {
    long v = 0;
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return 0;
        v = v * 10 + (s[i] - '0');
        if (v > INT_MAX) return 0;
    }
    return (int)v;
}

/* The variable's value as a thread count: the whole value, or with list its first
 * comma-separated entry (OMP_NUM_THREADS="4,2" gives the outermost level's 4); 0 if
 * unset; -1 (and a note appended to skipped) if set but not a positive integer. */
static int env_count(const char *name, int list, char *skipped, size_t size) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    size_t n = list ? strcspn(v, ",") : strlen(v);
    int c = positive(v, n);
    if (c > 0) return c;
    size_t used = strlen(skipped);
    snprintf(skipped + used, size - used, "; %s='%.40s' ignored: not a positive integer", name, v);
    return -1;
}

/* The tasks of this node in srun's SLURM_STEP_TASKS_PER_NODE ("2(x3),1": 2 on each of
 * the first 3 nodes, 1 on the fourth) at node SLURM_NODEID; 0 if unknown. */
static int slurm_local_tasks(void) {
    const char *s = getenv("SLURM_STEP_TASKS_PER_NODE"), *id = getenv("SLURM_NODEID");
    if (!s) return 0;
    long node = id ? strtol(id, NULL, 10) : 0;
    while (*s) {
        char *end;
        long tasks = strtol(s, &end, 10), times = 1;
        if (end == s || tasks < 1) return 0;
        if (end[0] == '(' && end[1] == 'x') {
            times = strtol(end + 2, &end, 10);
            if (times < 1 || *end != ')') return 0;
            end++;
        }
        if (node < times) return tasks > INT_MAX ? 0 : (int)tasks;
        node -= times;
        if (*end != ',') return 0;
        s = end + 1;
    }
    return 0;
}

/* The ranks on this node; 1 without a launcher. */
static int local_ranks(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        int n = v ? positive(v, strlen(v)) : 0;
        if (n > 0) return n;
    }
    int n = slurm_local_tasks();
    return n > 0 ? n : 1;
}

/* The physical cores among the CPUs of the affinity mask, by (package, core) from sysfs;
 * *cpus the CPUs themselves. 0 if sysfs's topology cannot be read for every CPU. */
static int mask_cores(const cpu_set_t *set, int *cpus) {
    enum { MAX_CORES = 4096 };
    long seen[MAX_CORES];
    int n = 0, ok = 1;
    *cpus = CPU_COUNT(set);
    for (int c = 0; c < CPU_SETSIZE && ok; c++) {
        if (!CPU_ISSET(c, set)) continue;
        long ids[2];
        const char *what[2] = {"physical_package_id", "core_id"};
        for (int k = 0; k < 2 && ok; k++) {
            char path[96];
            snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/%s", c, what[k]);
            FILE *f = fopen(path, "r");
            ok = f && fscanf(f, "%ld", &ids[k]) == 1 && ids[k] >= 0 && ids[k] < (1L << 20);
            if (f) fclose(f);
        }
        if (!ok) break;
        long key = ids[0] << 20 | ids[1];
        int dup = 0;
        for (int i = 0; i < n && !dup; i++) dup = seen[i] == key;
        if (!dup && n == MAX_CORES) ok = 0;
        else if (!dup) seen[n++] = key;
    }
    return ok ? n : 0;
}

int compute_threads_choose(int given, char *why, size_t size) {
    char skipped[160] = "", own[160];
    if (!why) why = own, size = sizeof own;
    if (given > 0) {
        snprintf(why, size, "--threads %d", given);
        return given;
    }
    int n = env_count("OMP_NUM_THREADS", 1, skipped, sizeof skipped);
    if (n > 0) {
        snprintf(why, size, "OMP_NUM_THREADS=%d", n);
        return n;
    }
    n = env_count("SLURM_CPUS_PER_TASK", 0, skipped, sizeof skipped);
    if (n > 0) {
        snprintf(why, size, "SLURM_CPUS_PER_TASK=%d%s", n, skipped);
        return n;
    }
    cpu_set_t set;
    int cpus = 1, cores = 0;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) cores = mask_cores(&set, &cpus);
    if (cpus < 1) cpus = 1;
    int ranks = local_ranks(), have = cores > 0 ? cores : cpus;
    n = have / ranks > 0 ? have / ranks : 1;
    snprintf(why, size, "%d %s%s, %d rank%s on this node%s", have, cores > 0 ? "core" : "CPU", have == 1 ? "" : "s",
             ranks, ranks == 1 ? "" : "s", skipped);
    return n;
}

int compute_threads_setup(int given, char *why, size_t size) {
    int n = compute_threads_choose(given, why, size);
    compute_threads_set(n);
    return n;
}

const char *compute_threads_describe(int n, const char *why, char *buf, size_t size) {
    snprintf(buf, size, "%d thread%s: %s", n, n == 1 ? "" : "s", why);
    return buf;
}
