"""CPU time the machine and this process's children have used: the benchmarks print the
load of everything else beside each run, because these machines are shared."""

import os


def machine_busy_s():
    """CPU seconds the whole machine has spent busy (everything but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    r = os.times()
    return r.children_user + r.children_system
