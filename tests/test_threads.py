"""Threads and kernel sets at the command line: a rank's --threads T drives every kernel
and OpenBLAS; T=1 and T=2 agree, the same T repeats itself bit for bit, and the kernel
set is reported and can be forced (GPT_KERNELS).

The kernels themselves are bit-identical across thread counts (tests/unit/test_kernels.c)
and match the float64 PyTorch reference on each kernel set and thread count
(tests/test_oracle.py); here whole training runs are compared, sgemm included, which
OpenBLAS's Haswell kernels round differently when their threads split the work
differently."""

import json

import h5py
import numpy as np
import pytest

from conftest import KERNEL_SETS, TINY_ARGS, read_metrics, sh

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
