"""Threads and kernel sets at the command line: a rank's --threads T drives every kernel
and OpenBLAS; T=1 and T=2 agree, the same T repeats itself bit for bit, and the kernel
set is reported and can be forced (GPT_KERNELS). Without --threads a rank takes
OMP_NUM_THREADS, else SLURM_CPUS_PER_TASK, else the cores of its affinity mask divided
by the ranks on its node (the order itself: tests/unit/test_threads.c); here the
opening line, config.json and what OpenMP and OpenBLAS report, under taskset and
mpirun. conftest's MPI_ENV runs the rest of the suite on OMP_NUM_THREADS=1.

The kernels themselves are bit-identical across thread counts (tests/unit/test_kernels.c)
and match the float64 PyTorch reference on each kernel set and thread count
(tests/test_oracle.py); here whole training runs are compared, sgemm included, which
OpenBLAS's Haswell kernels round differently when their threads split the work
differently."""

import json
import os
import shutil

import h5py
import numpy as np
import pytest

from conftest import KERNEL_SETS, TINY_ARGS, physical_cores, read_metrics, sh

STEPS = 20


def train(gpt_bin, corpus, out, threads, env=None):
    sh([gpt_bin, "train", "--data", corpus, "--model", "tiny", "--out", out, "--steps", STEPS,
        "--batch", 8, "--threads", threads, *TINY_ARGS], env=env)
    return [m["loss"] for m in read_metrics(out)]


def tensors(path):
    with h5py.File(path, "r") as f:
        return {name: f["model"][name][()] for name in f["model"]}


def test_one_and_two_threads_agree_and_repeat(gpt_bin, tiny_corpus, tmp_path):
    corpus = tiny_corpus["corpus"]
    one = train(gpt_bin, corpus, tmp_path / "t1", 1)
    two = train(gpt_bin, corpus, tmp_path / "t2", 2)
    again = train(gpt_bin, corpus, tmp_path / "t2b", 2)
    assert len(one) == len(two) == STEPS
    rel = np.abs(np.array(one) - np.array(two)) / np.abs(np.array(one))
    print(f"\nmax relative loss difference, 1 vs 2 threads over {STEPS} steps: {rel.max():.2e}")
    assert rel.max() <= 1e-6, f"1 vs 2 threads: losses {one} vs {two}"
    # the same thread count: the same run, bit for bit
    assert two == again
    a, b = tensors(tmp_path / "t2" / "model.h5"), tensors(tmp_path / "t2b" / "model.h5")
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), f"{name} differs between two 2-thread runs"
    config = json.loads((tmp_path / "t2" / "config.json").read_text())
    assert config["run"]["threads"] == 2


@pytest.mark.parametrize("kernels", KERNEL_SETS)
def test_bench_reports_the_forced_kernel_set(kernels, gpt_bin):
    proc = sh([gpt_bin, "bench", "--model", "tiny", "--batch", 1, "--steps", 1, "--warmup-steps", 0,
               "--threads", 2, "--json"], env={"GPT_KERNELS": kernels})
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["kernels"] == kernels and result["threads"] == 2
    text = sh([gpt_bin, "bench", "--model", "tiny", "--batch", 1, "--steps", 1, "--warmup-steps", 0],
              env={"GPT_KERNELS": kernels}).stdout
    assert f"kernels {kernels}" in text


def test_default_kernel_set_is_the_best_this_cpu_runs(gpt_bin):
    proc = sh([gpt_bin, "bench", "--model", "tiny", "--batch", 1, "--steps", 1, "--warmup-steps", 0,
               "--json"], env={"GPT_KERNELS": ""})
    assert json.loads(proc.stdout.strip().splitlines()[-1])["kernels"] == KERNEL_SETS[-1]


@pytest.mark.parametrize("value", ["sse2", "AVX2", "avx512x"])
def test_unknown_kernel_set_is_a_clear_error(value, gpt_bin, tmp_path):
    proc = sh([gpt_bin, "init", "--model", "tiny", "--out", tmp_path / "m.h5"],
              env={"GPT_KERNELS": value}, check=False)
    assert proc.returncode == 2
    assert f"GPT_KERNELS={value}: expected avx2, avx512 or auto" in proc.stderr
    assert not (tmp_path / "m.h5").exists()


# --------------------------------------------------------------------------- the default

# what a launcher or a job script may have set; removed so that the default is gpt's own
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "SLURM_CPUS_PER_TASK", "SLURM_STEP_TASKS_PER_NODE",
               "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS")


def threads_word(n):
    return f"{n} thread{'s' if n != 1 else ''}"


def cores_word(n):
    return f"{n} core{'s' if n != 1 else ''}"


def default_train(gpt_bin, corpus, out, prefix=(), ranks=None, env=None):
    """Two steps of gpt train without --threads, OMP_NUM_THREADS or a launcher's variables
    but those of `env`: (the opening line, config.json's run)."""
    proc = sh([*prefix, gpt_bin, "train", "--data", corpus, "--model", "tiny", "--out", out, "--steps", 2,
               "--batch", 2, "--eval-every", 0, "--log-every", 1], ranks=ranks, env=env, unset=THREAD_VARS)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("training "))
    return line, json.loads((out / "config.json").read_text())["run"]


def test_default_is_the_cores_of_the_affinity_mask(gpt_bin, tiny_corpus, tmp_path):
    cores = len(physical_cores())
    line, run = default_train(gpt_bin, tiny_corpus["corpus"], tmp_path / "all")
    assert f"; {threads_word(cores)}: {cores_word(cores)}, 1 rank on this node;" in line, line
    assert run["threads"] == cores and run["threads_reason"] == f"{cores_word(cores)}, 1 rank on this node"


@pytest.mark.skipif(not shutil.which("taskset"), reason="taskset (util-linux) is missing")
def test_taskset_narrows_the_default(gpt_bin, tiny_corpus, tmp_path):
    first = min(os.sched_getaffinity(0))
    line, run = default_train(gpt_bin, tiny_corpus["corpus"], tmp_path / "one", prefix=["taskset", "-c", first])
    assert "; 1 thread: 1 core, 1 rank on this node;" in line, line
    assert run["threads"] == 1


def test_ranks_on_a_node_share_its_cores(gpt_bin, tiny_corpus, tmp_path):
    """2 ranks of mpirun, not bound (so each sees every core): each takes half; bound to
    a core each (Open MPI's default for 2 ranks), one."""
    cores = len(physical_cores())
    half = max(1, cores // 2)
    line, run = default_train(gpt_bin, tiny_corpus["corpus"], tmp_path / "two",
                              prefix=["mpirun", "-np", 2, "--bind-to", "none"])
    assert f"; {threads_word(half)}: {cores_word(cores)}, 2 ranks on this node;" in line, line
    assert run["threads"] == half
    if cores >= 2:
        line, run = default_train(gpt_bin, tiny_corpus["corpus"], tmp_path / "bound",
                                  prefix=["mpirun", "-np", 2, "--bind-to", "core", "--map-by", "core"])
        assert "; 1 thread: 1 core, 2 ranks on this node;" in line, line


@pytest.mark.parametrize("env, args, threads, reason", [
    ({"OMP_NUM_THREADS": 2, "SLURM_CPUS_PER_TASK": 1}, [], 2, "OMP_NUM_THREADS=2"),
    ({"SLURM_CPUS_PER_TASK": 2}, [], 2, "SLURM_CPUS_PER_TASK=2"),
    ({"OMP_NUM_THREADS": 2, "OPENBLAS_NUM_THREADS": 2}, ["--threads", 1], 1, "--threads 1"),
], ids=["omp-over-slurm", "slurm", "threads-over-omp"])
def test_what_openmp_and_openblas_run(gpt_bin, env, args, threads, reason):
    """The count chosen is the one OpenMP and OpenBLAS report, whatever they read at load."""
    proc = sh([gpt_bin, "bench", "--model", "tiny", "--batch", 1, "--steps", 1, "--warmup-steps", 0, "--json", *args],
              env=env, unset=[v for v in THREAD_VARS if v not in env])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (result["threads"], result["threads_reason"]) == (threads, reason)
    assert result["omp_threads"] == result["blas_threads"] == threads
