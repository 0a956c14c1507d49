#!/usr/bin/python3
"""Serial fraction of a multi-threaded training step: `gpt bench` under `perf record`, the share
of the timed steps' wall time in which only one thread works, and Amdahl's projection of it.

    /usr/bin/python3 tools/profile_threads.py [--model small] [--batch 8] [--threads 2] [--steps 6]
        [--reps 3] [--freq 2000] [--window-ms 1] [--project 16,32,64] [--no-synthetic] [--keep DIR]

How: `perf record -e cpu-clock -c 1e9/FREQ -g -k CLOCK_MONOTONIC` samples every thread of the
process once per 1/FREQ of its CPU time (a thread that is blocked gives no samples). A sample is
"wait" when its user-space instruction is in a threading runtime (libgomp, whose barriers and
spins have no symbols; OpenBLAS's thread server, its unnamed static code and its sched_yield
loops; futex, condition-variable, sleep and poll waits; the MPI libraries' progress threads) or
its kernel stack is in sched_yield, a futex wait, a sleep or a poll; every other sample is work.
The timed steps are the span between the warm-up step's line on gpt bench's stderr and the last
step's line, stamped with CLOCK_MONOTONIC as they arrive. Each sample stands for the 1/FREQ of its
thread's CPU time before it (work or wait; no sample: not running); on a grid of 1/(8 FREQ) the
serial fraction is the time with exactly one thread working over the time with at least one.
Beside it the same with --window-ms windows (a thread works in a window if it has a work sample
there), which blurs waits shorter than a window and so reads low on today's binary.

Checks of the method, in the same run: a synthetic OpenMP program with a known serial share (a
busy loop on the main thread, then every thread busy in `omp parallel`), the same with a threaded
cblas_sgemm as the parallel part (OpenBLAS's own idle loop; its clock gives only a lower bound),
and `gpt bench` with one thread (must give 1.0). Beside each, an estimate without any grid: with
W the wall time and B the threads' summed work time, exact when every instant is either serial or
uses all T threads, s = (T W - B) / ((T - 1) W); for gpt also the share implied by the tokens/s
of 1 and T threads without perf, which also counts parallel code that runs slower on T threads.
The projection converts the wall-time share s_T at T threads to Amdahl's s, the serial share of
the one-thread time: s = s_T / (s_T + T (1 - s_T)). Measurements, not tests."""

import argparse
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from machine_load import children_cpu_s, machine_busy_s

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT = os.environ.get("GPT_BIN") or os.path.join(ROOT, "bin", "gpt")  # GPT_BIN: another build
BLAS_CFLAGS = ["-I/usr/include/x86_64-linux-gnu/openblas-pthread"]

# user-space leaf symbols that are waiting, not working
WAIT_SYMS = {
    "sched_yield", "__sched_yield", "__GI___sched_yield",
    "blas_thread_server", "exec_blas_async_wait",
    "pthread_cond_wait", "__pthread_cond_wait", "___pthread_cond_wait", "__pthread_cond_wait_common",
    "pthread_cond_timedwait", "__pthread_cond_timedwait", "___pthread_cond_timedwait",
    "__futex_abstimed_wait_common", "__futex_abstimed_wait_common64", "__futex_abstimed_wait_cancelable64",
    "futex_wait", "do_futex_wait", "__lll_lock_wait", "__lll_lock_wait_private", "pthread_spin_lock",
    "sem_wait", "__new_sem_wait_slow64", "__new_sem_wait_slow", "pthread_barrier_wait",
    "nanosleep", "__nanosleep", "clock_nanosleep", "__clock_nanosleep", "__GI___clock_nanosleep", "usleep",
    "epoll_wait", "__epoll_wait", "poll", "__poll", "ppoll", "select", "__select", "pselect",
    "syscall",  # libgomp's futex waits go through syscall()
    "gomp_team_barrier_wait_end", "gomp_barrier_wait_end", "gomp_team_barrier_wait_final",
    "gomp_team_barrier_wait", "gomp_barrier_wait", "gomp_barrier_wait_last", "do_spin", "do_wait",
    "gomp_mutex_lock_slow", "gomp_sem_wait_slow", "gomp_ptrlock_get_slow", "cpu_relax",
}
# kernel frames that mean the thread is waiting
WAIT_KERNEL = {
    "do_sched_yield", "__x64_sys_sched_yield", "__ia32_sys_sched_yield",
    "futex_wait", "__futex_wait", "futex_wait_queue", "futex_wait_queue_me", "do_futex_wait",
    "do_nanosleep", "hrtimer_nanosleep", "common_nsleep", "schedule_hrtimeout_range_clock",
    "ep_poll", "do_epoll_wait", "do_sys_poll", "do_select", "core_sys_select", "pipe_read",
    "do_idle", "cpu_idle_poll", "default_idle",
}
# libraries whose code is all runtime (synchronisation, progress threads), never the model's work
WAIT_DSO = ("libgomp", "libmpi", "libopen-pal", "libopen-rte", "libpmix", "libevent", "libhwloc",
            "mca_", "libucp", "libucs", "libfabric", "libpsm", "libpthread")

SYNTH_C = r"""
#define _GNU_SOURCE
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static volatile double sink;
static void busy(double s) { /* arithmetic, no memory traffic, until s seconds have passed */
    double t0 = now(), x = 1.0;
    while (now() - t0 < s) for (int i = 0; i < 2000; i++) x = x * 1.0000001 + 1e-9;
    sink = x;
}
int main(int argc, char **argv) { /* synth omp|blas THREADS SERIAL_MS PARALLEL_MS|N REPS */
    if (argc != 6) return 2;
    int blas = !strcmp(argv[1], "blas"), T = atoi(argv[2]), reps = atoi(argv[5]), n = atoi(argv[4]);
    double ser = atof(argv[3]) / 1e3, par = atof(argv[4]) / 1e3, t_ser = 0, t_par = 0;
    float *a = NULL, *b = NULL, *c = NULL;
    if (blas) {
        openblas_set_num_threads(T);
        a = malloc(sizeof(float) * n * n), b = malloc(sizeof(float) * n * n), c = malloc(sizeof(float) * n * n);
        for (long i = 0; i < (long)n * n; i++) a[i] = (float)(i % 7) - 3, b[i] = (float)(i % 5) - 2;
    }
    for (int r = -2; r < reps; r++) { /* two untimed rounds */
        if (r == 0) { fprintf(stderr, "start\n"); t_ser = t_par = 0; }
        double t0 = now();
        busy(ser);
        double t1 = now();
        if (blas)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        else {
#pragma omp parallel num_threads(T)
            busy(par);
        }
        t_ser += t1 - t0, t_par += now() - t1;
    }
    fprintf(stderr, "end\n");
    printf("{\"serial_s\": %.6f, \"parallel_s\": %.6f}\n", t_ser, t_par);
    return 0;
}
"""


def sh(cmd, env=None):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"profile_threads: {' '.join(map(str, cmd))} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def perf_record(cmd, data, period_ns, env):
    """Runs cmd under perf record; returns (stdout, [(CLOCK_MONOTONIC time, stderr line)], other load in
    cores: the CPU time the rest of the machine used meanwhile over the wall time)."""
    m0, c0, t0 = machine_busy_s(), children_cpu_s(), time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen(["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-e", "cpu-clock", "-c",
                                 str(period_ns), "-g", "-o", data, "--", *map(str, cmd)],
                                stdout=out, stderr=subprocess.PIPE, text=True, bufsize=1, env=env)
        lines = [(time.clock_gettime(time.CLOCK_MONOTONIC), line.rstrip("\n")) for line in proc.stderr]
        if proc.wait() != 0:
            sys.exit(f"profile_threads: perf record of {' '.join(map(str, cmd))} failed:\n"
                     + "\n".join(l for _, l in lines[-20:]))
        other = max(0.0, machine_busy_s() - m0 - (children_cpu_s() - c0)) / (time.monotonic() - t0)
        out.seek(0)
        return out.read(), lines, other


def perf_samples(data):
    """[(tid, time, is_work, label)] from perf script, label = the symbol that decided."""
    proc = subprocess.run(["perf", "script", "-i", data, "-F", "tid,time,ip,sym,dso"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"profile_threads: perf script failed:\n{proc.stderr[-2000:]}")
    samples, head, frames = [], None, []
    for line in proc.stdout.splitlines() + [""]:
        if not line.strip():
            if head:
                samples.append((*head, *classify(frames)))
            head, frames = None, []
        elif m := re.match(r"\s*(\d+)\s+([\d.]+):\s*$", line):  # "tid time:", then the chain, leaf first
            head = (int(m.group(1)), float(m.group(2)))
        else:
            m = re.match(r"\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$", line)
            if m:
                frames.append((int(m.group(1), 16) >= 0xffff800000000000, m.group(2), m.group(3)))
    return samples


def classify(frames):
    """(is_work, label) of one sample's call chain [(in_kernel, symbol, dso)], leaf first."""
    for kernel, sym, dso in frames:
        if not kernel:  # the user-space instruction the thread was at (or entered the kernel from)
            sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
            base = os.path.basename(dso)
            if sym in WAIT_SYMS or base.startswith(WAIT_DSO):
                return False, f"{sym} ({base})"
            if sym == "[unknown]" and "openblas" in base:
                return False, f"[unknown] ({base})"  # its unnamed static code: the thread server's loops
            return True, f"{sym} ({base})"
        if sym in WAIT_KERNEL:
            return False, f"{sym} (kernel)"
    return True, (f"{frames[0][1]} (kernel)" if frames else "?")


def analyse(samples, t0, t1, T, window_s, period_s):
    """Serial share of [t0, t1]: by sample intervals (each sample stands for the period of the
    thread's CPU time before it: work or wait; no sample, not running) on a grid of period/8, and by
    windows of window_s (a thread works in a window with a work sample in it); and the busy-time
    estimate for T threads. Threads with under 0.1% of the work samples (start-up, runtime threads)
    are left out."""
    import numpy as np
    span = [x for x in samples if t0 <= x[1] < t1]
    busy = collections.Counter(tid for tid, _, work, _ in span if work)
    total = sum(busy.values())
    keep = {tid for tid, n in busy.items() if n >= max(3, total / 1000)}
    labels = {True: collections.Counter(), False: collections.Counter()}
    for _, _, work, label in span:
        labels[work][label] += 1
    # sample intervals
    step = period_s / 8
    n = max(1, int((t1 - t0) / step))
    count = np.zeros(n, dtype=np.int32)
    work_times = collections.defaultdict(list)
    for tid, t, work, _ in span:
        if work and tid in keep:
            work_times[tid].append(t)
    for times in work_times.values():
        mine = np.zeros(n, dtype=bool)
        for t in times:
            mine[max(0, int((t - period_s - t0) / step)):int((t - t0) / step) + 1] = True
        count += mine
    any_ = int((count > 0).sum())
    # windows
    n_win = max(1, int((t1 - t0) / window_s))
    working = collections.defaultdict(set)
    for tid, t, work, _ in span:
        if work and tid in keep and t < t0 + n_win * window_s:
            working[int((t - t0) / window_s)].add(tid)
    per_win = collections.Counter(len(v) for v in working.values())
    W, B = t1 - t0, sum(busy[tid] for tid in keep) * period_s
    return {"serial": int((count == 1).sum()) / any_ if any_ else float("nan"),
            "idle": 1 - any_ / n,
            "serial_win": per_win[1] / sum(per_win.values()) if per_win else float("nan"),
            "busy_est": (T * W - B) / ((T - 1) * W) if T > 1 else 1.0,
            "threads": len(keep), "threads_seen": len({x[0] for x in span}), "wall_s": W,
            "busy_s": {tid: busy[tid] * period_s for tid in sorted(keep, key=lambda k: -busy[k])},
            "top_work": labels[True].most_common(3), "top_wait": labels[False].most_common(3)}


def gpt_span(lines):
    """(t0, t1, timed step seconds) from gpt bench's stderr: end of the warm-up to the last step."""
    steps = [(t, m) for t, l in lines if (m := re.match(r"step (\d+)/(\d+): .*?([\d.]+) s", l))]
    warm = [t for t, m in steps if "warm-up" in m.string]
    timed = [float(m.group(3)) for t, m in steps if "warm-up" not in m.string]
    if not warm or not timed:
        sys.exit("profile_threads: no warm-up and timed step lines on gpt bench's stderr:\n"
                 + "\n".join(l for _, l in lines[-10:]))
    return warm[-1], steps[-1][0], sum(timed)


def marker_span(lines):
    t = {l: t for t, l in lines if l in ("start", "end")}
    return t["start"], t["end"]


def amdahl_s(s_wall, T):
    """Amdahl's serial fraction (of the one-thread time) from the share of wall time at T threads."""
    return s_wall / (s_wall + T * (1.0 - s_wall))


def speedup(s, n):
    return 1.0 / (s + (1.0 - s) / n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6, help="timed steps of gpt bench (after 1 warm-up)")
    ap.add_argument("--freq", type=int, default=2000, help="samples a second of each thread's CPU time")
    ap.add_argument("--window-ms", type=float, default=1.0)
    ap.add_argument("--project", default="16,32,64", help="thread counts for Amdahl's projection")
    ap.add_argument("--reps", type=int, default=3, help="runs of gpt bench at T threads (profiled and not)")
    ap.add_argument("--no-synthetic", action="store_true", help="skip the synthetic checks")
    ap.add_argument("--keep", help="keep perf.data files in this directory")
    args = ap.parse_args()
    T = args.threads
    if T < 2 or args.steps < 1 or args.freq < 100 or args.window_ms <= 0 or args.reps < 1:
        ap.error("--threads must be at least 2, --steps and --reps at least 1, --freq at least 100")
    if not shutil.which("perf"):
        sys.exit("profile_threads: perf not found (Debian: linux-perf)")
    project = [int(x) for x in args.project.split(",") if x]
    period_ns = int(1e9 / args.freq)
    period_s, window_s = period_ns / 1e9, args.window_ms / 1e3
    env = dict(os.environ)
    work = args.keep or tempfile.mkdtemp(prefix="profile_threads.")
    os.makedirs(work, exist_ok=True)
    started = time.monotonic()
    try:
        bench = ["bench", "--model", args.model, "--batch", args.batch, "--steps", args.steps, "--warmup-steps", 1]
        plain = {}  # the best of --reps runs without perf, alternating 1 and T threads
        for _ in range(args.reps):
            for n in (1, T):
                r = json.loads(sh([GPT, *bench, "--threads", n, "--json"], env).strip().splitlines()[-1])
                if n not in plain or r["tokens_per_s"] > plain[n]["tokens_per_s"]:
                    plain[n] = r
        core = plain[T]["openblas_core"]
        rows = []
        if not args.no_synthetic and not shutil.which("gcc"):
            print("profile_threads: no gcc, so no synthetic checks", file=sys.stderr)
        elif not args.no_synthetic:
            exe = os.path.join(work, "synth")
            with open(exe + ".c", "w") as f:
                f.write(SYNTH_C)
            sh(["gcc", "-O2", "-fopenmp", *BLAS_CFLAGS, exe + ".c", "-o", exe, "-lopenblas"])
            senv = {**env, "OPENBLAS_CORETYPE": core, "OMP_NUM_THREADS": str(T)}
            for name, mode, par in (("synthetic OpenMP, known share", "omp", "7"),
                                    ("synthetic sgemm 1024, OpenBLAS threads", "blas", "1024")):
                data = os.path.join(work, f"synth_{mode}.data")
                # without OpenBLAS's own threads in the OpenMP case: idle, they spin in sched_yield for
                # about 0.1 s after start-up and take a core from the measured threads
                menv = {**senv, "OPENBLAS_NUM_THREADS": "1"} if mode == "omp" else senv
                out, lines, other = perf_record([exe, mode, T, 3, par, 100], data, period_ns, menv)
                own = json.loads(out.strip().splitlines()[-1])
                a = analyse(perf_samples(data), *marker_span(lines), T, window_s, period_s)
                a["other"] = other
                expect = own["serial_s"] / (own["serial_s"] + own["parallel_s"])
                rows.append((name, T, f"{expect:.3f}" + ("" if mode == "omp" else "+"), a, None))
                print(f"  done: {name}", file=sys.stderr)
        prof = []
        sp = plain[T]["tokens_per_s"] / plain[1]["tokens_per_s"]
        bound = (T / sp - 1) / (T - 1)  # Amdahl's s implied by the throughput
        for k, n in enumerate([1] + [T] * args.reps):
            data = os.path.join(work, f"gpt_{n}_{k}.data")
            out, lines, other = perf_record([GPT, *bench, "--threads", n], data, period_ns, env)
            t0, t1, timed = gpt_span(lines)
            a = analyse(perf_samples(data), t0, t1, n, window_s, period_s)
            a["other"] = other
            a["timed_s"], a["tokens_per_s"] = timed, float(re.search(r"([\d.]+) tokens/s", out).group(1))
            if n > 1:
                prof.append(a)
            rows.append((f"gpt bench {args.model} B={args.batch}, {n} thread{'s' * (n > 1)}"
                         + (f", run {k}" if n > 1 and args.reps > 1 else ""), n,
                         "1.000" if n == 1 else "-", a, T * bound / (1 + (T - 1) * bound) if n > 1 else None))
            print(f"  done: gpt bench, {n} thread(s)", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started

    kernels = plain[T].get("kernels", "?")
    print(f"serial fraction: share of the timed wall time in which exactly one thread works, of the time at least "
          f"one does; perf cpu-clock every {period_s * 1e3:g} ms of a thread's CPU time; OpenBLAS {core}, "
          f"kernels {kernels}")
    print(f"{'case':<44}{'thr':>4}{'expected':>10}{'serial':>8}{f'{args.window_ms:g} ms win':>10}"
          f"{'busy-time':>10}{'throughput':>11}{'no work':>8}{'wall s':>8}{'other load':>11}")
    for name, n, expect, a, thr in rows:
        th = f"{thr:>11.3f}" if thr is not None else f"{'-':>11}"
        print(f"{name:<44}{n:>4}{expect:>10}{a['serial']:>8.3f}{a['serial_win']:>10.3f}{a['busy_est']:>10.3f}{th}"
              f"{a['idle']:>8.1%}{a['wall_s']:>8.2f}{a['other']:>11.2f}")
    print(f"expected: the synthetic program's own clock (+: a lower bound, sgemm's own imbalance adds to it); "
          f"serial: each sample stands for the {period_s * 1e3:g} ms of CPU time before it; {args.window_ms:g} ms win: "
          f"a thread works in a window if it has a work sample there (blurs waits shorter than a window); "
          f"busy-time: (T W - B) / ((T-1) W) from the summed work samples B over the wall time W (exact if every "
          f"instant is serial or uses all T threads); throughput: the share implied by gpt bench's tokens/s at "
          f"1 and {T} threads without perf (best of {args.reps}: {plain[1]['tokens_per_s']:.1f} and {plain[T]['tokens_per_s']:.1f}), which "
          f"also counts parallel code that runs slower on {T} threads; no work: time in which no thread works; "
          f"other load: CPU time the rest of the machine used meanwhile, in cores (above about 0.1 the figures "
          f"are not to be trusted)")
    g = sorted(prof, key=lambda a: a["serial"])[len(prof) // 2]  # the median run
    print(f"gpt bench {T} threads under perf{' (the median run)' * (len(prof) > 1)}: {g['threads']} threads did work, "
          + ", ".join(f"{s:.2f} s" for s in g["busy_s"].values())
          + f" of work in {g['wall_s']:.2f} s of timed steps (step times add to {g['timed_s']:.2f} s; "
          f"{g['tokens_per_s']:.1f} tokens/s under perf)")
    print("  most sampled work:  " + ", ".join(f"{l} {c}" for l, c in g["top_work"]))
    print("  most sampled waits: " + ", ".join(f"{l} {c}" for l, c in g["top_wait"]))

    s_wall = g["serial"]  # the median of the T-thread runs
    s = amdahl_s(s_wall, T)
    base = plain[1]["tokens_per_s"]
    print()
    print(f"Amdahl: serial share of the wall time at {T} threads {s_wall:.3f}{' (median)' * (len(prof) > 1)} = serial fraction s = {s:.3f} of the "
          f"one-thread time (s_wall / (s_wall + {T} (1 - s_wall))); speedup(n) = 1 / (s + (1 - s) / n), "
          f"tokens/s = {base:.1f} (1 thread, measured) x speedup")
    print(f"{'threads':>8}{'speedup':>9}{'tokens/s':>10}{'measured':>10}")
    for n in sorted({1, T, *project}):
        meas = f"{plain[n]['tokens_per_s']:>10.1f}" if n in plain else f"{'-':>10}"
        print(f"{n:>8}{speedup(s, n):>8.2f}x{base * speedup(s, n):>10.1f}{meas}")
    print(f"limit (n -> infinity): {1 / s:.1f}x; the whole script took {elapsed:.0f} s")


if __name__ == "__main__":
    main()
