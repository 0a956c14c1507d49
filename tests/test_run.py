"""The run lifecycle that gpt train and gpt finetune share (src/run/run.c, src/run/run_dir.c).

    make && /usr/bin/python3 -m pytest -q tests/test_run.py

  * a run holds its run directory: a second run there is refused, naming the PID and
    host of the first, and the lock goes with the process however it ends;
  * --overwrite leaves nothing of the old run that a resume or a prune could take for
    the new one's, and contradicts --resume;
  * a start that failed before its first step does not block the next attempt;
  * an --out that is a regular file is "not a directory"; a lock that is a symlink (or
    anything but a regular file) is refused, its target untouched;
  * rank 0 failing to write model.h5 is one error and a non-zero exit on every rank,
    not a hang (the fine-tuning twin is in tests/test_finetune.py);
  * a checkpoint holding a non-finite value is not resumed from: --resume auto falls
    back to an older one. (A full disk: tests/test_disk_full.py.)
  * a resume keeps metrics.jsonl's lines up to the resumed step whatever their length
    (a blend's val_losses over many long corpus paths runs past 8 KiB)."""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import MPI_ENV, kill_group, read_metrics, sh


def train_args(gpt_bin, corpus, out, steps, extra=()):
    return [gpt_bin, "train", "--data", corpus, "--model", "tiny", "--out", out, "--steps", steps,
            "--batch", 2, "--eval-every", 0, "--log-every", 1, *extra]


def checkpoints(run_dir):
    return sorted(int(p.name[5:-3]) for p in Path(run_dir).glob("ckpt_*.h5"))


def latest(run_dir):
    return (Path(run_dir) / "latest").read_text().strip()


def steps_done(run_dir):
    """Lines in metrics.jsonl so far (0 before the file exists)."""
    try:
        return len(read_metrics(run_dir))
    except (OSError, json.JSONDecodeError):  # not there yet, or a line being written
        return 0


def test_a_second_run_in_the_same_directory_is_refused(gpt_bin, tiny_corpus, workdir):
    out = workdir / "run"
    first = subprocess.Popen([str(a) for a in train_args(gpt_bin, tiny_corpus["corpus"], out, 100000)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, **MPI_ENV}, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not steps_done(out):
            assert first.poll() is None, f"the first run ended early: {first.stderr.read()}"
            assert time.time() < deadline, "the first run wrote no step in 60 s"
            time.sleep(0.2)
        for how in ([], ["--resume", "auto"], ["--overwrite"]):
            proc = sh(train_args(gpt_bin, tiny_corpus["corpus"], out, 5, how), check=False, timeout=60)
            assert proc.returncode != 0, f"a second run {how} was let into a directory in use:\n{proc.stdout}"
            assert "in use by another run" in proc.stderr and f"PID {first.pid} on host {socket.gethostname()}" \
                in proc.stderr, f"the refusal should name the first run's PID and host:\n{proc.stderr}"
            assert "step " not in proc.stdout, f"the refused run trained:\n{proc.stdout}"
        assert first.poll() is None, "the first run did not survive the refused ones"
        steps = [m["step"] for m in read_metrics(out)]
        assert steps == list(range(1, len(steps) + 1)), "metrics.jsonl got lines of another run"
    finally:
        kill_group(first)
        first.wait()
    # the kernel released the dead run's lock: the directory is usable again
    proc = sh(train_args(gpt_bin, tiny_corpus["corpus"], out, 2, ["--overwrite"]), timeout=120)
    assert [m["step"] for m in read_metrics(out)] == [1, 2]


def test_overwrite_leaves_nothing_of_the_old_run(gpt_bin, tiny_corpus, workdir):
    corpus, out = tiny_corpus["corpus"], workdir / "run"
    sh(train_args(gpt_bin, corpus, out, 6, ["--ckpt-every", 2, "--keep", 0]), timeout=120)
    assert checkpoints(out) == [2, 4, 6]
    (out / "ckpt_8.h5.tmp").write_bytes(b"a torn checkpoint of the old run")
    # a new, shorter run: pruning by step number must not take the old run's 6 and 4 for its newest
    sh(train_args(gpt_bin, corpus, out, 3, ["--ckpt-every", 1, "--keep", 2, "--overwrite"]), timeout=120)
    assert checkpoints(out) == [2, 3], f"checkpoints after the overwriting run: {sorted(os.listdir(out))}"
    assert latest(out) == "ckpt_3.h5"
    assert not list(out.glob("*.tmp")), sorted(os.listdir(out))
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3]
    # --resume auto continues the new run, never the old one
    proc = sh(train_args(gpt_bin, corpus, out, 6, ["--ckpt-every", 1, "--keep", 2, "--resume", "auto"]),
              timeout=120)
    assert f"resuming from {out}/ckpt_3.h5: step 3" in proc.stdout, proc.stdout
    # the two cannot be meant together
    proc = sh(train_args(gpt_bin, corpus, out, 6, ["--overwrite", "--resume", "auto"]), check=False, timeout=60)
    assert proc.returncode == 2 and "--overwrite and --resume" in proc.stderr, proc.stderr
    assert checkpoints(out) == [5, 6], "a refused --overwrite --resume removed checkpoints"


def test_overwrite_loses_nothing_when_the_model_cannot_be_made(gpt_bin, tiny_corpus, workdir):
    """--overwrite clears the old run only once the new model exists: an impossible shape
    is out of memory (exit 1, the MiB named) and leaves the old run whole."""
    corpus, out = tiny_corpus["corpus"], workdir / "run"
    sh(train_args(gpt_bin, corpus, out, 2, ["--ckpt-every", 1]))
    before = sorted(p.name for p in out.iterdir())
    proc = sh(train_args(gpt_bin, corpus, out, 2, ["--overwrite", "--n-layer", 1000, "--n-embd", 4096,
                                                   "--n-head", 32]), check=False, timeout=120,
              env={"ASAN_OPTIONS": "detect_leaks=0:allocator_may_return_null=1"})  # ASan: NULL, as malloc gives
    assert proc.returncode == 1 and "out of memory" in proc.stderr and "MiB" in proc.stderr, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == before
    assert checkpoints(out) == [1, 2] and [m["step"] for m in read_metrics(out)] == [1, 2]


def test_a_failed_start_does_not_block_the_retry(gpt_bin, tiny_corpus, workdir):
    corpus, out = tiny_corpus["corpus"], workdir / "run"
    proc = sh(train_args(gpt_bin, corpus, out, 3, ["--batch", 1000000]), check=False, timeout=60)
    assert proc.returncode != 0 and "out of memory" in proc.stderr, proc.stderr
    proc = sh(train_args(gpt_bin, corpus, out, 3), check=False, timeout=120)
    assert proc.returncode == 0, f"the retry after a failed start was refused:\n{proc.stderr}"
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3]


def test_out_that_is_a_file(gpt_bin, tiny_corpus, workdir):
    out = workdir / "run"
    out.write_text("not a directory\n")
    proc = sh(train_args(gpt_bin, tiny_corpus["corpus"], out, 2), check=False, timeout=60)
    assert proc.returncode != 0 and f"{out}: not a directory" in proc.stderr, proc.stderr
    assert out.read_text() == "not a directory\n"


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_lock_that_is_not_a_regular_file_is_refused(gpt_bin, tiny_corpus, workdir, kind):
    """A symlinked lock is not followed (its target would be truncated and overwritten),
    nor is any lock that is not a regular file used."""
    out, victim = workdir / "run", workdir / "victim.txt"
    out.mkdir()
    victim.write_text("precious\n")
    if kind == "symlink":
        (out / "lock").symlink_to(victim)
    else:
        os.mkfifo(out / "lock")
    proc = sh(train_args(gpt_bin, tiny_corpus["corpus"], out, 2), check=False, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert f"{out}/lock: the run's lock is not a regular file" in proc.stderr, proc.stderr
    assert victim.read_text() == "precious\n"
    assert not (out / "metrics.jsonl").exists()


@pytest.mark.parametrize("ranks", [1, 2])
def test_model_file_unwritable_is_an_error_on_every_rank(gpt_bin, tiny_corpus, workdir, ranks):
    out = workdir / "run"
    (out / "model.h5").mkdir(parents=True)  # rank 0 alone writes it, and cannot
    (out / "model.h5" / "keep").write_text("")
    proc = sh(train_args(gpt_bin, tiny_corpus["corpus"], out, 2, ["--resume", "auto"]), ranks=ranks,
              check=False, timeout=120)
    assert proc.returncode != 0, proc.stdout
    assert proc.stderr.count("model.h5") >= 1 and "gpt train:" in proc.stderr, proc.stderr
    assert proc.stderr.count("gpt train:") == 1, f"one message, from rank 0:\n{proc.stderr}"
    assert [m["step"] for m in read_metrics(out)] == [1, 2]


def test_resume_skips_a_checkpoint_with_non_finite_values(gpt_bin, tiny_corpus, workdir):
    """A NaN in a moment (written with a valid checksum) makes the checkpoint unusable:
    --resume auto falls back to the older one, naming the tensor."""
    corpus, out = tiny_corpus["corpus"], workdir / "run"
    sh(train_args(gpt_bin, corpus, out, 4, ["--ckpt-every", 2, "--keep", 0]), timeout=120)
    with h5py.File(out / "ckpt_4.h5", "r+") as f:
        v = f["optimizer/v/wte"]
        a = v[()]
        a[3, 5] = np.inf
        v[...] = a
    proc = sh(train_args(gpt_bin, corpus, out, 6, ["--ckpt-every", 2, "--keep", 0, "--resume", "auto"]),
              timeout=120)
    assert "/optimizer/v/wte holds a NaN or an infinity" in proc.stderr and "falling back" in proc.stderr, \
        proc.stderr
    assert f"resuming from {out}/ckpt_2.h5: step 2" in proc.stdout, proc.stdout


def test_resume_keeps_metrics_lines_of_any_length(gpt_bin, tiny_corpus, workdir):
    """Resuming cuts metrics.jsonl to the resumed step: every line up to it stays, however
    long, and the lines after it go, a torn last line (a crash mid-write) with them."""
    corpus, out = tiny_corpus["corpus"], workdir / "run"
    sh(train_args(gpt_bin, corpus, out, 4, ["--ckpt-every", 2, "--keep", 0]), timeout=120)
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines()
    # as long as a blend's validation losses over 100 corpora with long paths
    long = json.loads(lines[0])
    long["val_losses"] = {f"/data/{'corpora/' * 10}{'shard' * 10}_{i:03d}.h5": 5.0 + i / 1000 for i in range(100)}
    lines[0] = json.dumps(long, separators=(",", ":"))
    assert len(lines[0]) > 8192
    path.write_text("\n".join(lines) + "\n" + '{"step":5,"loss":6.0')  # torn
    os.remove(out / "ckpt_4.h5")  # resume from step 2: lines 3 and 4 must go
    (out / "latest").write_text("ckpt_2.h5\n")
    proc = sh(train_args(gpt_bin, corpus, out, 5, ["--ckpt-every", 2, "--keep", 0, "--resume", "auto"]),
              timeout=120)
    assert f"resuming from {out}/ckpt_2.h5: step 2" in proc.stdout, proc.stdout
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5], [m["step"] for m in metrics]
    assert metrics[0] == long, "the long line was not kept as it was"
