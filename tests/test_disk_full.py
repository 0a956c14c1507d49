"""A full disk while gpt train writes a checkpoint, model.h5 or metrics.jsonl, on 1 and 2
ranks (issue 12).

    make && /usr/bin/python3 -m pytest -q tests/test_disk_full.py   (as root: it mounts tmpfs)

The run directory is a tmpfs sized from the checkpoint measured in an ordinary directory:
room for the first checkpoint but not the second, room for none, or a disk full to its
last block when the first one starts. Each is one `gpt train:` error naming the
checkpoint and the space (needed and free), a non-zero exit without a signal (no crash,
and no hang: a run past its timeout is killed and fails the test), no `.tmp` left, and
`latest` and the earlier checkpoint as they were: `gpt inspect` verifies it, and
`--resume auto` from a copy in a bigger directory ends bit-identical to a run never
interrupted."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import TINY_ARGS, read_metrics, sh

STEPS, EVERY, BATCH = 10, 5, 2   # checkpoints at steps 5 and 10
ARGS = ["--model", "tiny", "--steps", STEPS, "--batch", BATCH, "--ckpt-every", EVERY, *TINY_ARGS]
TIMEOUT = 90                     # a run that hangs is killed after this and fails the test
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20
SPACE_RE = re.compile(r"cannot reserve the ([\d.]+) MiB the checkpoint needs \(([\d.]+) MiB free\): "
                      r"No space left on device")


def train(gpt_bin, corpus, out, ranks, extra=(), check=True):
    return sh([gpt_bin, "train", "--data", corpus, "--out", out, *ARGS, *extra], ranks=ranks,
              timeout=TIMEOUT, check=check)


def pages(n_bytes):
    return -(-n_bytes // PAGE) * PAGE


@pytest.fixture(scope="module")
def reference(gpt_bin, tiny_corpus, tmp_path_factory):
    """reference(P): the run directory of the uninterrupted run on P ranks (made once)."""
    runs = {}

    def get(ranks):
        if ranks not in runs:
            out = tmp_path_factory.mktemp(f"reference{ranks}") / "run"
            train(gpt_bin, tiny_corpus["corpus"], out, ranks)
            runs[ranks] = out
        return runs[ranks]
    return get


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size): a new directory on a tmpfs of `size` bytes, unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = []

    def mount(size):
        d = tmp_path / f"tmpfs{len(mounted)}"
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], check=True,
                       capture_output=True)
        mounted.append(d)
        return d
    yield mount
    for d in reversed(mounted):
        if subprocess.run(["umount", str(d)], capture_output=True).returncode:
            subprocess.run(["umount", "--lazy", str(d)], capture_output=True)


def assert_disk_full_error(proc, run_dir, step, ckpt_bytes, ranks):
    """A clean failure of the checkpoint of `step` for lack of space; no .tmp left."""
    what = f"{ranks} rank(s), checkpoint {step}"
    streams = f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert 0 < proc.returncode < 128, f"{what}: exit {proc.returncode}, expected an error exit\n{streams}"
    assert not re.search(r"Segmentation fault|signal \d+|core dumped", proc.stderr), \
        f"{what}: a crash\n{streams}"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("gpt train:")]
    assert 1 <= len(errors) <= ranks, f"{what}: expected one 'gpt train:' error (a rank)\n{streams}"
    m = SPACE_RE.search(errors[0])
    assert m and f"{run_dir}/ckpt_{step}.h5:" in errors[0], \
        f"{what}: the error should name ckpt_{step}.h5 and the space it needs\n{streams}"
    needed, free = float(m.group(1)), float(m.group(2))
    assert ckpt_bytes / MIB - 0.05 <= needed <= 1.5 * ckpt_bytes / MIB, \
        f"{what}: needs {needed} MiB for a checkpoint of {ckpt_bytes / MIB:.2f} MiB"
    assert free < needed, f"{what}: {free} MiB free, {needed} MiB needed"
    left = sorted(p.name for p in Path(run_dir).iterdir() if p.name.endswith(".tmp"))
    assert left == [], f"{what}: left behind: {left}"


def model_tensors(path):
    with h5py.File(path, "r") as f:
        return {k: v[()] for k, v in f["model"].items()}


def assert_resumes_like(gpt_bin, corpus, run_dir, bigger, ref_dir, ranks):
    """A copy of run_dir in a bigger directory continues from ckpt_5 and ends as ref_dir."""
    shutil.copytree(run_dir, bigger)
    proc = train(gpt_bin, corpus, bigger, ranks, extra=["--resume", "auto"])
    assert f"resuming from {bigger}/ckpt_{EVERY}.h5" in proc.stdout, proc.stdout
    ref, got = read_metrics(ref_dir), read_metrics(bigger)
    assert [m["step"] for m in got] == list(range(1, STEPS + 1)), [m["step"] for m in got]
    for a, b in zip(ref, got):
        assert b["loss"] == a["loss"], f"step {a['step']}: loss {b['loss']} vs uninterrupted {a['loss']}"
    want, have = model_tensors(ref_dir / "model.h5"), model_tensors(bigger / "model.h5")
    assert sorted(have) == sorted(want)
    for k in want:
        assert np.array_equal(have[k], want[k]), f"model.h5 tensor {k} differs from the uninterrupted run's"


@pytest.mark.parametrize("ranks", [1, 2])
def test_a_later_checkpoint_without_room(gpt_bin, tiny_corpus, reference, tmpfs, tmp_path, ranks):
    ref = reference(ranks)
    size = (ref / f"ckpt_{EVERY}.h5").stat().st_size
    # the first checkpoint and the small files fit with room to spare, a second one cannot
    run_dir = tmpfs(pages(size * 8 // 5) + 8 * PAGE) / "run"
    proc = train(gpt_bin, tiny_corpus["corpus"], run_dir, ranks, check=False)
    assert_disk_full_error(proc, run_dir, 2 * EVERY, size, ranks)
    assert (run_dir / "latest").read_text() == f"ckpt_{EVERY}.h5\n"
    assert sorted(p.name for p in run_dir.glob("ckpt_*")) == [f"ckpt_{EVERY}.h5"]
    sh([gpt_bin, "inspect", run_dir / f"ckpt_{EVERY}.h5"], timeout=TIMEOUT)
    assert_resumes_like(gpt_bin, tiny_corpus["corpus"], run_dir, tmp_path / "bigger", ref, ranks)


@pytest.mark.parametrize("ranks", [1, 2])
def test_the_first_checkpoint_without_room(gpt_bin, tiny_corpus, reference, tmpfs, ranks):
    size = (reference(ranks) / f"ckpt_{EVERY}.h5").stat().st_size
    run_dir = tmpfs(pages(size // 2)) / "run"
    proc = train(gpt_bin, tiny_corpus["corpus"], run_dir, ranks, check=False)
    assert_disk_full_error(proc, run_dir, EVERY, size, ranks)
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "lock", "metrics.jsonl"]


@pytest.mark.parametrize("ranks", [1, 2])
def test_a_disk_full_to_the_last_block(gpt_bin, tiny_corpus, reference, tmpfs, ranks):
    """No room even for the empty HDF5 file that the first checkpoint starts with."""
    size = (reference(ranks) / f"ckpt_{EVERY}.h5").stat().st_size
    disk = tmpfs(pages(2 * size))
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(disk / "filler", "wb") as f:  # leaves a page each for config.json, lock and metrics.jsonl
        os.posix_fallocate(f.fileno(), 0, free - 3 * PAGE)
    run_dir = disk / "run"
    proc = train(gpt_bin, tiny_corpus["corpus"], run_dir, ranks, check=False)
    assert os.statvfs(disk).f_bavail == 0, "the disk should be full after the failure"
    assert_disk_full_error(proc, run_dir, EVERY, size, ranks)
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "lock", "metrics.jsonl"]


@pytest.mark.parametrize("ranks", [1, 2])
def test_model_file_without_room(gpt_bin, tiny_corpus, reference, tmpfs, ranks):
    """No checkpoints, and room for the metrics but not for model.h5 at the end (this
    crashed in MPI_Finalize too: HDF5 could not close the file it failed to write)."""
    size = (reference(ranks) / "model.h5").stat().st_size
    run_dir = tmpfs(pages(size // 2)) / "run"
    proc = sh([gpt_bin, "train", "--data", tiny_corpus["corpus"], "--out", run_dir, "--model", "tiny", "--steps", STEPS,
               "--batch", BATCH, *TINY_ARGS], ranks=ranks, timeout=TIMEOUT, check=False)
    streams = f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert 0 < proc.returncode < 128, f"exit {proc.returncode}, expected an error exit\n{streams}"
    assert re.search(rf"gpt train: {re.escape(str(run_dir))}/model.h5: cannot reserve the [\d.]+ MiB the model "
                     r"file needs \([\d.]+ MiB free\): No space left on device", proc.stderr), streams
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "lock", "metrics.jsonl"]
    assert [m["step"] for m in read_metrics(run_dir)] == list(range(1, STEPS + 1))


@pytest.mark.parametrize("ranks", [1, 2])
def test_metrics_without_room(gpt_bin, tiny_corpus, tmpfs, ranks):
    """metrics.jsonl fills the disk: one error naming it, every rank stops, no line lost
    silently (a run used to go on with its metrics cut), and the file ends with a whole
    line (it used to end mid-line, which JSON readers and tools/plot_loss.sh refuse)."""
    run_dir = tmpfs(4 * PAGE) / "run"  # config.json, lock and a page or two of metrics
    proc = sh([gpt_bin, "train", "--data", tiny_corpus["corpus"], "--out", run_dir, "--model", "tiny", "--steps", 400,
               "--batch", BATCH, "--eval-every", 0], ranks=ranks, timeout=TIMEOUT, check=False)
    streams = f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert 0 < proc.returncode < 128, f"exit {proc.returncode}, expected an error exit\n{streams}"
    assert f"gpt train: {run_dir}/metrics.jsonl: cannot write: No space left on device" in proc.stderr, streams
    assert "step 400/400" not in proc.stdout, f"the run went on without its metrics\n{streams}"
    text = (run_dir / "metrics.jsonl").read_text()
    assert text.endswith("\n"), f"metrics.jsonl ends mid-line: ...{text[-120:]!r}"
    assert [json.loads(line)["step"] for line in text.splitlines()] == list(range(1, text.count("\n") + 1))


@pytest.mark.parametrize("ranks", [1, 2])
def test_prepare_without_room(gpt_bin, moby, tiny_corpus, tmpfs, tmp_path, ranks):
    """gpt prepare onto a disk that fills in a later round: one error, no file at all."""
    src = tmp_path / "moby.txt"
    src.write_bytes(moby.read_bytes() * 2)  # 2.5 MB: about 2.5 MB of uint16 tokens
    small = tmpfs(str(512 * 1024))
    out = small / "corpus.h5"
    proc = sh([gpt_bin, "prepare", "--tokenizer", tiny_corpus["tokenizer"], "--out", out,
               "--split-on-blank-lines", "--max-memory", "1", src], ranks=ranks, timeout=TIMEOUT, check=False)
    assert 0 < proc.returncode < 128, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("gpt prepare:")]
    assert len(errors) == 1 and re.search(re.escape(str(out)) + r": cannot reserve the [\d.]+ MiB the corpus needs "
                                          r"\([\d.]+ MiB free\): No space left on device", errors[0]), proc.stderr[-3000:]
    assert sorted(p.name for p in small.iterdir()) == []
