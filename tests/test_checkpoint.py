"""gpt train checkpoints, resume, signals and time limits.

    make && /usr/bin/python3 -m pytest -q tests/test_checkpoint.py

  * a run interrupted (a rank SIGKILLed at a step, or in any phase of writing a
    checkpoint) and resumed with `--resume auto` ends with metrics.jsonl losses and
    model.h5 tensors bit-identical to the uninterrupted run on the same number of
    ranks, and to 1e-5 on another number (global batch kept, accum derived);
  * after a kill every `ckpt_*.h5` is whole and verifies, `latest` names one, a `.tmp` is
    never loaded; a corrupted or truncated newest checkpoint is reported and the next
    older one used; none loading is an error; auto prefers the one `latest` names; any
    writer killed before its rename leaves the old file whole;
  * a resume from an earlier step than the newest checkpoint moves the later ones to
    abandoned/ (1 and 2 ranks), so --keep keeps the resumed run's and the next auto
    continues it, with one metrics line a step;
  * SIGUSR1 to mpirun, SIGTERM/SIGINT to the ranks and `--time-limit` checkpoint and
    exit 75; `--resume auto` then completes the run as if uninterrupted;
  * `--keep`, the checkpoint file's layout (attributes, /model, /optimizer/m|v,
    /tokenizer, Fletcher32 on every dataset), `gpt eval|generate|score|inspect` of a
    checkpoint;
  * a resume that does not match the saved run (model, seed, corpus, global batch) is
    refused and leaves the run directory as it was;
  * paths holding a ':' (which ROMIO would read as a file system's name) are written, read,
    checkpointed and resumed through MPI-IO; a missing file is not called corrupted.

Faults are injected with GPT_FAULT=POINT[:STEP][@RANK] (the rank SIGKILLs itself)."""

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import (TINY_ARGS, alive, children, kill_group, moby_slice, mpi_environ, mpi_rank,
                      read_metrics, sh)

N_CTX = 64
STEPS, EVERY, G = 40, 10, 8           # the shared runs: 40 steps, a checkpoint every 10, 8 windows a step
LAYOUT = {1: (4, 2), 2: (4, 1)}       # ranks P -> (batch B, accum A), P*B*A = G
COMMON = [*TINY_ARGS, "--ckpt-every", EVERY]   # TINY_ARGS: seed 7, lr 1e-3, eval every 25, log every 10
LOSS_RTOL = 1e-5                      # another number of ranks: float sums in another order
EXIT_REQUEUE = 75                     # EX_TEMPFAIL: checkpointed, resume me

# The longer runs that signals and --time-limit interrupt: several seconds at P=2.
SIG_STEPS, SIG_B = 500, 8
SIG_ARGS = ["--seed", 11, "--lr", "1e-3", "--min-lr", "1e-4", "--warmup", 20,
            "--eval-every", 200, "--eval-windows", 4, "--log-every", 100]

CKPT_RE = re.compile(r"^ckpt_(\d+)\.h5$")


# --------------------------------------------------------------------------- helpers

def train_cmd(gpt_bin, data, out, steps=STEPS, batch=None, accum=None, extra=COMMON):
    """A gpt train command line; batch/accum None leaves the option out."""
    cmd = [gpt_bin, "train", "--data", data, "--model", "tiny", "--out", out, "--steps", steps]
    if batch is not None:
        cmd += ["--batch", batch]
    if accum is not None:
        cmd += ["--accum", accum]
    return [*cmd, *extra]


def train(gpt_bin, data, out, ranks, steps=STEPS, layout=True, extra=COMMON, env=None, check=True,
          timeout=180):
    """gpt train on `ranks` ranks (1: without mpirun) with LAYOUT[ranks]'s batch and accum
    (layout=False: neither option given; a (B, A) pair: those)."""
    if layout is True:
        batch, accum = LAYOUT[ranks]
    elif layout:
        batch, accum = layout
    else:
        batch = accum = None
    return sh(train_cmd(gpt_bin, data, out, steps, batch, accum, extra), ranks=ranks, env=env,
              check=check, timeout=timeout)


def crash(gpt_bin, data, out, ranks, fault, **kw):
    """A run that GPT_FAULT kills: it must end with a non-zero exit."""
    proc = train(gpt_bin, data, out, ranks, env={"GPT_FAULT": fault}, check=False, **kw)
    assert proc.returncode != 0, f"GPT_FAULT={fault}: the run was not killed (exit 0)\n{proc.stdout[-2000:]}"
    return proc


def resume(gpt_bin, data, out, ranks, how="auto", **kw):
    kw.setdefault("extra", COMMON)
    kw["extra"] = [*kw["extra"], "--resume", how]
    return train(gpt_bin, data, out, ranks, **kw)


def checkpoints(run_dir):
    """{step: path} of the complete-looking checkpoints ckpt_<step>.h5 (not .tmp)."""
    found = {}
    for p in Path(run_dir).iterdir():
        m = CKPT_RE.match(p.name)
        if m:
            assert str(int(m.group(1))) == m.group(1), f"{p.name}: step is zero-padded"
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def tmp_files(run_dir):
    return sorted(p.name for p in Path(run_dir).iterdir() if p.name.endswith(".tmp"))


def latest(run_dir):
    lines = (Path(run_dir) / "latest").read_text().splitlines()
    assert len(lines) == 1, f"{run_dir}/latest should be one line: {lines}"
    return lines[0]


def text(value):
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode()
    if isinstance(value, np.ndarray) and value.shape == ():
        return text(value[()])
    return str(value)


def read_all(path):
    """Opens a checkpoint in h5py and reads every dataset (HDF5 verifies each chunk's
    Fletcher32 checksum on read); returns its step attribute."""
    with h5py.File(path, "r") as f:
        assert text(f.attrs["format"]) == "gpt-checkpoint", f"{path}: format {f.attrs.get('format')!r}"
        names = []

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                obj[()]
                names.append(name)
        f.visititems(visit)
        assert any(n.startswith("model/") for n in names), f"{path}: no /model datasets"
        return int(f.attrs["step"])


def ckpt_step(path):
    with h5py.File(path, "r") as f:
        return int(f.attrs["step"])


def resumed_from(proc, out):
    """The one `resuming from` line of rank 0 (None if the run started from step 0)."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith("resuming from")]
    assert len(lines) <= 1, f"'resuming from' printed more than once (rank 0 only):\n{proc.stdout}"
    if not lines:
        assert "resuming from" not in proc.stdout + proc.stderr, \
            f"'resuming from' not at the start of a stdout line:\n{proc.stdout}\n{proc.stderr}"
        return None
    m = re.match(r"resuming from (\S+?/ckpt_(\d+)\.h5)\b", lines[0])
    assert m, f"cannot read the checkpoint from {lines[0]!r}"
    assert m.group(1) == f"{out}/ckpt_{m.group(2)}.h5", \
        f"expected 'resuming from {out}/ckpt_<step>.h5', got {lines[0]!r}"
    return int(m.group(2))


def model_tensors(path):
    with h5py.File(path, "r") as f:
        return {k: v[()] for k, v in f["model"].items()}


def assert_same_run(got_dir, ref_dir, exact, what):
    """metrics.jsonl of got_dir equals ref_dir's step for step: loss and val_loss
    bit-identical (exact) or to LOSS_RTOL; with exact, the final model.h5 tensors too."""
    ref, got = read_metrics(ref_dir), read_metrics(got_dir)
    assert [m["step"] for m in got] == [m["step"] for m in ref] == list(range(1, len(ref) + 1)), \
        f"{what}: metrics.jsonl steps {[m['step'] for m in got]}"
    for a, b in zip(ref, got):
        s = a["step"]
        for key in ("loss", "val_loss"):
            if exact:
                assert b.get(key) == a.get(key), \
                    f"{what}: step {s} {key} {b.get(key)!r} vs uninterrupted {a.get(key)!r}"
            else:
                assert (key in a) == (key in b), f"{what}: step {s} {key} only in one run"
                if key in a:
                    assert b[key] == pytest.approx(a[key], rel=LOSS_RTOL), \
                        f"{what}: step {s} {key} {b[key]!r} vs {a[key]!r}"
        assert b["tokens"] == a["tokens"], f"{what}: step {s} tokens {b['tokens']} vs {a['tokens']}"
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-7), f"{what}: step {s} lr {b['lr']} vs {a['lr']}"
        assert b["skipped"] is False, f"{what}: step {s} skipped"
    if exact:
        want, have = model_tensors(Path(ref_dir) / "model.h5"), model_tensors(Path(got_dir) / "model.h5")
        assert sorted(have) == sorted(want), what
        for k in want:
            assert np.array_equal(have[k], want[k]), f"{what}: model.h5 tensor {k} differs from the uninterrupted run's"


def snapshot(run_dir):
    return {p.name: p.read_bytes() for p in sorted(Path(run_dir).iterdir()) if p.is_file()}


def assert_untouched(run_dir, before, what):
    after = snapshot(run_dir)
    assert sorted(after) == sorted(before), f"{what}: files {sorted(before)} -> {sorted(after)}"
    for name in before:
        assert after[name] == before[name], f"{what}: {name} changed"


def chunk_span(path, dataset):
    """(byte offset, size) of the first chunk of a dataset in the file (of its data if it
    is not chunked)."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        if ds.chunks is None:
            return ds.id.get_offset(), ds.id.get_storage_size()
        info = ds.id.get_chunk_info(0)
        return info.byte_offset, info.size


def flip_bytes(path, dataset, count=16):
    """Flips `count` bytes in the middle of the first chunk of `dataset` (its data, not
    its checksum), so only the Fletcher32 check can notice."""
    off, size = chunk_span(path, dataset)
    assert size > 4 * count
    with open(path, "r+b") as fh:
        fh.seek(off + size // 2)
        data = fh.read(count)
        fh.seek(off + size // 2)
        fh.write(bytes(b ^ 0xA5 for b in data))


def truncate_half(path):
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)


def check_after_kill(run_dir, want_latest, what):
    """After a kill: every ckpt_*.h5 opens and verifies, `latest` names a complete one."""
    cks = checkpoints(run_dir)
    for step, path in cks.items():
        try:
            got = read_all(path)
        except Exception as e:  # noqa: BLE001 (h5py raises OSError, KeyError, ...)
            pytest.fail(f"{what}: {path.name} is in place but does not verify: {e!r}", pytrace=False)
        assert got == step, f"{what}: {path.name} has step attribute {got}"
    name = latest(run_dir)
    assert CKPT_RE.match(name) and (Path(run_dir) / name).is_file(), \
        f"{what}: latest names {name!r}, not an existing checkpoint ({sorted(p.name for p in cks.values())})"
    assert name == f"ckpt_{want_latest}.h5", f"{what}: latest names {name}, expected ckpt_{want_latest}.h5"


# --------------------------------------------------------------------------- shared runs

@pytest.fixture(scope="module")
def corpus(tiny_corpus):
    return tiny_corpus["corpus"]


@pytest.fixture(scope="module")
def refs(gpt_bin, corpus, tmp_path_factory):
    """The uninterrupted runs: {P: run dir} for P = 1, 2 (STEPS steps, a checkpoint every
    EVERY, all kept)."""
    d = tmp_path_factory.mktemp("ckpt_refs")
    runs = {}
    for P in (1, 2):
        out = d / f"p{P}"
        train(gpt_bin, corpus, out, P, extra=[*COMMON, "--keep", 0])
        runs[P] = out
    return runs


@pytest.fixture(scope="module")
def sig_ref(gpt_bin, corpus, tmp_path_factory):
    """The uninterrupted longer run (P=2) that signals and --time-limit interrupt, and how
    long it took."""
    out = tmp_path_factory.mktemp("ckpt_sig_ref") / "run"
    t0 = time.monotonic()
    sh(train_cmd(gpt_bin, corpus, out, SIG_STEPS, SIG_B, 1, SIG_ARGS), ranks=2, timeout=300)
    return out, time.monotonic() - t0


# --------------------------------------------------------------------------- 1, 2: resume

def test_checkpointing_does_not_change_the_run(gpt_bin, corpus, refs, workdir):
    out = workdir / "plain"
    train(gpt_bin, corpus, out, 2, extra=TINY_ARGS)  # no --ckpt-every
    assert checkpoints(out) == {} or checkpoints(out).keys() == {STEPS}
    assert_same_run(out, refs[2], True, "P=2 without --ckpt-every vs with")
    # the reference runs themselves: a checkpoint after every 10th step, nothing left over
    for P, run_dir in refs.items():
        assert list(checkpoints(run_dir)) == [10, 20, 30, 40], f"P={P}"
        assert latest(run_dir) == "ckpt_40.h5"
        assert tmp_files(run_dir) == []


@pytest.mark.parametrize("P", [1, 2])
def test_resume_same_ranks_is_bit_exact(gpt_bin, corpus, refs, workdir, P):
    out = workdir / "run"
    crash(gpt_bin, corpus, out, P, "step:23")  # every rank dies at the end of step 23
    assert list(checkpoints(out)) == [10, 20]
    assert max(m["step"] for m in read_metrics(out)) >= 21, "metrics.jsonl should run past the checkpoint"
    proc = resume(gpt_bin, corpus, out, P)
    assert resumed_from(proc, out) == 20
    assert_same_run(out, refs[P], True, f"P={P} killed after step 23, resumed")
    assert list(checkpoints(out)) == [20, 30, 40]  # --keep 3 by default
    assert latest(out) == "ckpt_40.h5"
    assert tmp_files(out) == []


@pytest.mark.parametrize("P_from,P_to,layout", [
    (2, 1, False),      # B stays 4, A derived: 2
    (1, 2, False),      # B stays 4, A derived: 1
    (2, 1, (8, 1)),     # given explicitly, same global batch
    (1, 2, (2, 2)),
], ids=["2to1-derived", "1to2-derived", "2to1-B8A1", "1to2-B2A2"])
def test_resume_on_other_ranks(gpt_bin, corpus, refs, workdir, P_from, P_to, layout):
    out = workdir / "run"
    crash(gpt_bin, corpus, out, P_from, "step:27")
    proc = resume(gpt_bin, corpus, out, P_to, layout=layout)
    assert resumed_from(proc, out) == 20
    what = f"P={P_from} killed after step 27, resumed on P={P_to} ({'B,A derived' if not layout else layout})"
    assert_same_run(out, refs[P_from], False, what)
    assert_same_run(out, refs[P_to], False, what)
    with h5py.File(out / "ckpt_40.h5", "r") as f:
        assert int(f.attrs["ranks"]) == P_to, "ranks: the number at save"
        assert int(f.attrs["global_batch"]) == G
        assert int(f.attrs["samples"]) == STEPS * G
    with h5py.File(out / "ckpt_20.h5", "r") as f:
        assert int(f.attrs["ranks"]) == P_from


def test_resume_auto_without_checkpoints_starts_at_zero(gpt_bin, corpus, refs, workdir):
    # a run dir that does not exist yet
    fresh = workdir / "fresh"
    proc = resume(gpt_bin, corpus, fresh, 2)
    assert resumed_from(proc, fresh) is None
    assert_same_run(fresh, refs[2], True, "--resume auto in a new run dir")
    # a run dir holding a run killed before its first checkpoint: accepted, from step 0,
    # and its metrics.jsonl starts over
    out = workdir / "early"
    crash(gpt_bin, corpus, out, 2, "step:6")
    assert checkpoints(out) == {} and (out / "config.json").is_file() and read_metrics(out)
    proc = resume(gpt_bin, corpus, out, 2)
    assert resumed_from(proc, out) is None
    assert_same_run(out, refs[2], True, "killed after step 6 (no checkpoint), --resume auto")


def test_resume_from_a_given_checkpoint(gpt_bin, corpus, refs, workdir):
    out = workdir / "run"
    crash(gpt_bin, corpus, out, 2, "step:33@0")
    assert list(checkpoints(out)) == [10, 20, 30]
    # a file that is not there, then a corrupted one: each an error naming it, nothing changed
    before = snapshot(out)
    for bad in (out / "ckpt_15.h5", workdir / "nowhere" / "ckpt_20.h5"):
        proc = resume(gpt_bin, corpus, out, 2, how=bad, check=False)
        assert proc.returncode != 0, f"--resume {bad}: exit 0"
        assert str(bad) in proc.stderr, f"--resume {bad}: stderr does not name it:\n{proc.stderr}"
        assert_untouched(out, before, f"--resume {bad}")
    broken = workdir / "broken_ckpt_20.h5"
    shutil.copy(out / "ckpt_20.h5", broken)
    flip_bytes(broken, "model/h.1.mlp.c_fc.weight")
    proc = resume(gpt_bin, corpus, out, 2, how=broken, check=False)
    assert proc.returncode != 0, "--resume of a corrupted checkpoint: exit 0 (no fallback for a PATH)"
    assert str(broken) in proc.stderr, proc.stderr
    assert_untouched(out, before, "--resume of a corrupted checkpoint")
    # an older checkpoint than the newest: metrics.jsonl is cut back to it
    proc = resume(gpt_bin, corpus, out, 2, how=out / "ckpt_10.h5")
    assert resumed_from(proc, out) == 10
    assert_same_run(out, refs[2], True, "--resume RUN_DIR/ckpt_10.h5 with ckpt_30.h5 present")


# --------------------------------------------------------------------------- 3: kill -9

# GPT_FAULT -> (the checkpoints in place after the kill, the one `latest` names, the one
# `auto` must resume from: latest's, even beside a later whole one, which goes to abandoned/)
KILL_CASES = {
    "step:23@1": ({10, 20}, 20, 20),
    "ckpt-create:20": ({10}, 10, 10),
    "ckpt-write:20": ({10}, 10, 10),
    "ckpt-close:20": ({10}, 10, 10),
    "ckpt-rename:20": ({10, 20}, 10, 10),
    "ckpt-latest:20": ({10, 20}, 20, 20),
}


@pytest.mark.parametrize("fault", list(KILL_CASES))
def test_kill_then_resume(gpt_bin, corpus, refs, workdir, fault):
    in_place, want_latest, want_step = KILL_CASES[fault]
    out = workdir / "run"
    crash(gpt_bin, corpus, out, 2, fault)
    what = f"GPT_FAULT={fault}"
    check_after_kill(out, want_latest, what)
    assert set(checkpoints(out)) == in_place, f"{what}: checkpoints in place {sorted(checkpoints(out))}"
    if fault.startswith(("ckpt-create", "ckpt-write", "ckpt-close")):
        assert tmp_files(out) in ([], ["ckpt_20.h5.tmp"]), f"{what}: {tmp_files(out)}"
    proc = resume(gpt_bin, corpus, out, 2)
    got = resumed_from(proc, out)
    assert got == want_step, f"{what}: resumed from step {got}, expected {want_step}"
    assert ".tmp" not in proc.stdout.split("resuming from", 1)[1].splitlines()[0]
    assert_same_run(out, refs[2], True, f"{what}, then --resume auto")
    assert tmp_files(out) == [], f"{what}: left after the resumed run: {tmp_files(out)}"
    assert latest(out) == "ckpt_40.h5"
    assert sorted(p.name for p in (out / "abandoned").glob("*")) == \
        [f"ckpt_{s}.h5" for s in sorted(in_place) if s > want_step], f"{what}: abandoned/"


# A writer of each kind, run over an existing file of its output: an HDF5 file by MPI-IO
# (prepare), one by HDF5's serial driver (tokenizer train), a FILE (export).
ATOMIC_WRITERS = {
    "prepare": lambda c, w: ["prepare", "--tokenizer", c["tokenizer"], c["dir"] / "moby_slice.txt"],
    "tokenizer": lambda c, w: ["tokenizer", "train", "--merges", 20, c["dir"] / "moby_slice.txt"],
    "export": lambda c, w: ["export", "--model", w / "m.h5", "--tokenizer", c["tokenizer"], "--format", "gguf",
                            "--dtype", "f16"],
}


@pytest.mark.parametrize("writer", list(ATOMIC_WRITERS))
def test_kill_before_the_rename_keeps_the_old_file(gpt_bin, tiny_corpus, workdir, writer):
    """Killed between writing NAME.tmp whole and renaming it (GPT_FAULT=atomic-rename), a
    writer leaves NAME as it was, byte for byte."""
    c, out = tiny_corpus, workdir / "out"
    if writer == "export":  # over an f32 export of the same model
        sh([gpt_bin, "init", "--model", "tiny", "--ln", "pre", "--vocab", c["vocab_size"], "--out", workdir / "m.h5"])
        sh([gpt_bin, "export", "--model", workdir / "m.h5", "--tokenizer", c["tokenizer"], "--format", "gguf",
            "--out", out])
    else:
        out.write_bytes(c["corpus" if writer == "prepare" else "tokenizer"].read_bytes())
    before = out.read_bytes()
    proc = sh([gpt_bin, *ATOMIC_WRITERS[writer](c, workdir), "--out", out], env={"GPT_FAULT": "atomic-rename"},
              check=False)
    assert proc.returncode == -signal.SIGKILL, f"{writer}: exit {proc.returncode}, not killed\n{proc.stderr}"
    assert out.read_bytes() == before, f"{writer}: {out} changed"
    assert Path(f"{out}.tmp").stat().st_size > 0, f"{writer}: the new file was not written whole before the kill"


# --------------------------------------------------------------------------- 4: broken checkpoints

@pytest.mark.parametrize("damage", ["model-checksum", "optimizer-checksum", "truncated", "two-broken"])
def test_auto_falls_back_from_a_broken_checkpoint(gpt_bin, corpus, refs, workdir, damage):
    out = workdir / "run"
    crash(gpt_bin, corpus, out, 2, "step:34")
    assert list(checkpoints(out)) == [10, 20, 30]
    ck30 = out / "ckpt_30.h5"
    broken, dataset = ["ckpt_30.h5"], None
    if damage == "model-checksum":
        dataset = "model/h.1.mlp.c_fc.weight"
        flip_bytes(ck30, dataset)
    elif damage == "optimizer-checksum":
        dataset = "optimizer/v/h.0.attn.c_attn.weight"
        flip_bytes(ck30, dataset)
    elif damage == "truncated":
        truncate_half(ck30)
    else:  # the newest truncated, the next one with a bad checksum: down to ckpt_10
        truncate_half(ck30)
        flip_bytes(out / "ckpt_20.h5", "optimizer/m/wte")
        broken.append("ckpt_20.h5")
    # gpt inspect finds it
    insp = sh([gpt_bin, "inspect", ck30], check=False, timeout=60)
    assert insp.returncode != 0, f"gpt inspect of a damaged checkpoint ({damage}): exit 0\n{insp.stdout}"
    assert "ckpt_30.h5" in insp.stderr, f"gpt inspect: no message naming the file:\n{insp.stderr}"
    if dataset:
        name = dataset.rsplit("/", 1)[1]
        assert any(name in line for line in insp.stderr.splitlines()), \
            f"gpt inspect: the checksum error should name {dataset}:\n{insp.stderr}"
    proc = resume(gpt_bin, corpus, out, 2)
    for name in broken:
        hits = [line for line in proc.stderr.splitlines() if name in line and "falling back" in line]
        assert hits, f"{damage}: no stderr line naming {name} with 'falling back':\n{proc.stderr}"
    want = 10 if damage == "two-broken" else 20
    assert resumed_from(proc, out) == want
    assert_same_run(out, refs[2], True, f"newest checkpoint {damage}, --resume auto")


def test_auto_with_every_checkpoint_broken_fails(gpt_bin, corpus, workdir):
    out = workdir / "run"
    crash(gpt_bin, corpus, out, 2, "step:24")
    assert list(checkpoints(out)) == [10, 20]
    truncate_half(out / "ckpt_20.h5")
    flip_bytes(out / "ckpt_10.h5", "model/wpe")
    before = snapshot(out)
    proc = resume(gpt_bin, corpus, out, 2, check=False)
    assert proc.returncode != 0, "no checkpoint loads, yet exit 0"
    assert str(out) in proc.stderr, f"the error should name the run dir {out}:\n{proc.stderr}"
    assert not (out / "model.h5").exists()
    assert_untouched(out, before, "a failed --resume auto")


def test_resume_from_an_earlier_step_abandons_the_later_checkpoints(gpt_bin, corpus, refs, workdir):
    """The newest checkpoint broken, auto falls back: the later one goes to abandoned/, so
    --keep prunes none of the resumed run's and the next auto continues the resumed run."""
    out = workdir / "run"
    shutil.copytree(refs[1], out)  # ckpt_10 ... ckpt_40
    flip_bytes(out / "ckpt_40.h5", "model/wte")
    broken = (out / "ckpt_40.h5").read_bytes()
    again = [*COMMON, "--ckpt-every", 1, "--keep", 1]
    proc = resume(gpt_bin, corpus, out, 1, steps=32, extra=again)
    assert resumed_from(proc, out) == 30
    assert (list(checkpoints(out)), latest(out)) == ([32], "ckpt_32.h5"), "--keep 1 pruned the resumed run"
    assert f"moved {out}/ckpt_40.h5 to {out}/abandoned/ckpt_40.h5" in proc.stdout, proc.stdout
    assert (out / "abandoned/ckpt_40.h5").read_bytes() == broken
    proc = resume(gpt_bin, corpus, out, 1, steps=34, extra=again)
    assert resumed_from(proc, out) == 32
    assert [m["step"] for m in read_metrics(out)] == list(range(1, 35))
    assert (list(checkpoints(out)), latest(out)) == ([34], "ckpt_34.h5")


def test_resume_given_an_earlier_checkpoint_abandons_the_later_ones(gpt_bin, corpus, refs, workdir):
    """--resume RUN_DIR/ckpt_20.h5 on 2 ranks with ckpt_30 and ckpt_40 beside it, and
    abandoned/ckpt_40.h5 already taken by an earlier retirement, which stays."""
    out = workdir / "run"
    shutil.copytree(refs[2], out)
    (out / "abandoned").mkdir()
    (out / "abandoned/ckpt_40.h5").write_bytes(b"retired before")
    proc = resume(gpt_bin, corpus, out, 2, how=out / "ckpt_20.h5", steps=22,
                  extra=[*COMMON, "--ckpt-every", 1, "--keep", 1])
    assert resumed_from(proc, out) == 20
    assert (list(checkpoints(out)), latest(out)) == ([22], "ckpt_22.h5"), "--keep 1 pruned the resumed run"
    for step, name in ((30, "ckpt_30.h5"), (40, "ckpt_40.1.h5")):
        assert f"moved {out}/ckpt_{step}.h5 to {out}/abandoned/{name}" in proc.stdout, proc.stdout
        assert ckpt_step(out / "abandoned" / name) == step
    assert (out / "abandoned/ckpt_40.h5").read_bytes() == b"retired before"
    assert [m["step"] for m in read_metrics(out)] == list(range(1, 23))


# --------------------------------------------------------------------------- 5: signals, time limit

def start(args, logdir, ranks=2, fault=None):
    """mpirun -np ranks args in its own session, output to files, with GPT_FAULT=fault if
    given; (Popen, stdout path, stderr path)."""
    so, se = logdir / "stdout.txt", logdir / "stderr.txt"
    with open(so, "w") as fo, open(se, "w") as fe:
        proc = subprocess.Popen(["mpirun", "-np", str(ranks), *[str(a) for a in args]], stdout=fo,
                                stderr=fe, start_new_session=True,
                                env=mpi_environ({"GPT_FAULT": fault} if fault else None,
                                                base={k: v for k, v in os.environ.items() if k != "GPT_FAULT"}))
    return proc, so, se


def proc_status(pid, field):
    """A field of /proc/PID/status ("State", "ShdPnd"), or None once pid is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(field + ":")), None)


def poll_until(what, ok, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not ok():
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.02)


def finish(proc, timeout=60):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.wait()
        pytest.fail(f"mpirun still running {timeout} s after the signal", pytrace=False)


def check_requeued(out, rc, so, se, what, min_step=1):
    """Exit 75, 'exit code 75' printed, one checkpoint at the last step in metrics.jsonl."""
    stdout, stderr = so.read_text(), se.read_text()
    assert rc == EXIT_REQUEUE, f"{what}: mpirun exit {rc}, expected {EXIT_REQUEUE}\n{stdout[-2000:]}\n{stderr[-2000:]}"
    assert "exit code 75" in stdout + stderr, f"{what}: no line with 'exit code 75'\n{stdout}\n{stderr}"
    cks = checkpoints(out)
    assert len(cks) == 1, f"{what}: checkpoints {sorted(cks)} (expected one, at the step it stopped)"
    (step, path), = cks.items()
    last = read_metrics(out)[-1]["step"]
    assert step == last, f"{what}: checkpoint at step {step}, metrics.jsonl ends at step {last}"
    assert min_step <= step < SIG_STEPS, f"{what}: checkpoint at step {step}"
    assert read_all(path) == step
    assert latest(out) == path.name
    assert tmp_files(out) == []
    return step


@pytest.mark.parametrize("how", ["usr1-to-mpirun", "term-to-ranks", "int-to-ranks"])
def test_signal_checkpoints_and_exits_75(gpt_bin, corpus, sig_ref, workdir, how):
    ref_dir, _ = sig_ref
    out = workdir / "run"
    args = train_cmd(gpt_bin, corpus, out, SIG_STEPS, SIG_B, 1, SIG_ARGS)
    # rank 1 stops itself after step 5 and is continued only once the signal is pending
    # there: the run cannot reach its last step first, however slow the machine
    proc, so, se = start(args, workdir, fault="step:5@1/STOP")
    try:
        ranks = {}

        def rank_1_stopped():
            ranks.update({mpi_rank(p): p for p in children(proc.pid)})
            return 1 in ranks and (proc_status(ranks[1], "State") or "").startswith("T")

        poll_until("rank 1 stopped", rank_1_stopped, proc)
        assert set(ranks) >= {0, 1}, f"cannot find both ranks among mpirun's children: {ranks}"
        sig = {"usr1-to-mpirun": signal.SIGUSR1, "term-to-ranks": signal.SIGTERM, "int-to-ranks": signal.SIGINT}[how]
        for pid in [proc.pid] if how == "usr1-to-mpirun" else ranks.values():
            os.kill(pid, sig)
        poll_until(f"{sig.name} pending at rank 1",
                   lambda: int(proc_status(ranks[1], "ShdPnd") or "0", 16) >> (sig - 1) & 1, proc)
        os.kill(ranks[1], signal.SIGCONT)
        rc = finish(proc)
        deadline = time.monotonic() + 10  # a rank may take a moment to be reaped after mpirun
        while any(alive(pid) for pid in ranks.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for r, pid in ranks.items():
            assert not alive(pid), f"rank {r} (pid {pid}) outlived mpirun by 10 s"
    finally:
        kill_group(proc)
        proc.wait()
    step = check_requeued(out, rc, so, se, how, min_step=5)
    res = sh(train_cmd(gpt_bin, corpus, out, SIG_STEPS, SIG_B, 1, [*SIG_ARGS, "--resume", "auto"]),
             ranks=2, timeout=300)
    assert resumed_from(res, out) == step
    assert_same_run(out, ref_dir, True, f"{how}, then --resume auto")


def test_time_limit_checkpoints_and_exits_75(gpt_bin, corpus, sig_ref, workdir):
    """--time-limit 0:12 on a run that would take minutes: it stops on its own, after many
    steps and before the 12 s are up (its reserve is a few seconds plus the slowest step,
    evaluation and checkpoint), with a checkpoint and exit 75; resuming continues from it."""
    limit, steps = 12, 100 * SIG_STEPS
    out = workdir / "run"
    args = train_cmd(gpt_bin, corpus, out, steps, SIG_B, 1, [*SIG_ARGS, "--time-limit", f"0:{limit}"])
    t0 = time.monotonic()
    proc, so, se = start(args, workdir)
    try:
        rc = finish(proc, timeout=limit + 60)
    finally:
        kill_group(proc)
        proc.wait()
    seconds = time.monotonic() - t0
    stdout = so.read_text()
    assert rc == EXIT_REQUEUE, f"--time-limit: mpirun exit {rc}\n{stdout[-2000:]}\n{se.read_text()[-2000:]}"
    assert "before the time limit" in stdout and "exit code 75" in stdout, stdout[-2000:]
    # the tool's clock starts after MPI_Init: allow mpirun's start and end on top
    assert seconds < limit + 2.5, f"--time-limit 0:{limit}: mpirun ended after {seconds:.1f} s"
    cks = checkpoints(out)
    assert len(cks) == 1, sorted(cks)
    (step, path), = cks.items()
    assert 20 <= step < steps and read_metrics(out)[-1]["step"] == step, step
    assert latest(out) == path.name
    res = sh(train_cmd(gpt_bin, corpus, out, step + 10, SIG_B, 1,
                       [*SIG_ARGS, "--time-limit", "UNLIMITED", "--resume", "auto"]), ranks=2, timeout=300)
    assert resumed_from(res, out) == step
    assert [m["step"] for m in read_metrics(out)] == list(range(1, step + 11))


@pytest.mark.parametrize("value", ["abc", "", "1:2:3:4", "-5", "1-", "5:xx", "1.5", "1-2-3", "2d"])
def test_time_limit_bad_values(gpt_bin, corpus, workdir, value):
    proc = sh(train_cmd(gpt_bin, corpus, workdir / "run", 2, 2, 1, ["--time-limit", value]),
              check=False, timeout=60)
    assert proc.returncode == 2, f"--time-limit {value!r}: exit {proc.returncode}, expected 2 (usage)"
    assert "--time-limit" in proc.stderr, proc.stderr


def test_time_limit_good_values(gpt_bin, corpus, workdir):
    for i, value in enumerate(["UNLIMITED", "90", "5:30", "01:00:00", "1-0", "1-00:30", "2-00:00:00"]):
        proc = sh(train_cmd(gpt_bin, corpus, workdir / f"run{i}", 2, 2, 1,
                            ["--time-limit", value, "--eval-every", 0]), check=False, timeout=60)
        assert proc.returncode == 0, f"--time-limit {value!r}: exit {proc.returncode}\n{proc.stderr}"


# --------------------------------------------------------------------------- 6: --keep

def test_keep(gpt_bin, corpus, workdir):
    cases = {None: [25, 30, 32], 2: [30, 32], 0: [5, 10, 15, 20, 25, 30, 32], 1: [32]}
    for keep, want in cases.items():
        out = workdir / f"keep{keep}"
        extra = [*TINY_ARGS, "--ckpt-every", 5] + ([] if keep is None else ["--keep", keep])
        train(gpt_bin, corpus, out, 1, steps=32, extra=extra)  # 32: the last step is a checkpoint too
        assert list(checkpoints(out)) == want, f"--keep {keep}: {sorted(checkpoints(out))}"
        assert latest(out) == "ckpt_32.h5"
        assert tmp_files(out) == [], f"--keep {keep}"
        assert ckpt_step(out / "ckpt_32.h5") == 32
    # old checkpoints go only after the new one and `latest` are in place
    for fault, want_latest in (("ckpt-rename:15", 10), ("ckpt-latest:15", 15)):
        out = workdir / fault.replace(":", "_")
        crash(gpt_bin, corpus, out, 1, fault, steps=32, extra=[*TINY_ARGS, "--ckpt-every", 5, "--keep", 2])
        assert list(checkpoints(out)) == [5, 10, 15], f"GPT_FAULT={fault}: {sorted(checkpoints(out))}"
        check_after_kill(out, want_latest, f"GPT_FAULT={fault} --keep 2")


# --------------------------------------------------------------------------- 7: the file

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:?00)$")


def test_checkpoint_file(gpt_bin, corpus, tiny_corpus, refs):
    run_dir = refs[2]
    cfg = json.loads((run_dir / "config.json").read_text())
    model_h5 = run_dir / "model.h5"
    unchecked = []
    for step in (20, 40):
        path = run_dir / f"ckpt_{step}.h5"
        with h5py.File(path, "r") as f, h5py.File(model_h5, "r") as m:
            a = f.attrs
            assert text(a["format"]) == "gpt-checkpoint"
            assert int(a["format_version"]) == 1
            assert text(a["tool_version"]) == cfg["versions"]["gpt"]
            assert int(a["step"]) == step
            assert int(a["optim_step"]) == step  # no skipped steps
            assert int(a["samples"]) == step * G
            assert int(a["tokens"]) == step * G * N_CTX
            assert int(a["seed"]) == 7
            assert int(a["global_batch"]) == G
            assert int(a["ranks"]) == 2
            t = text(a["time"])
            assert ISO_UTC.match(t), f"time {t!r} is not ISO 8601 UTC"
            when = datetime.datetime.fromisoformat(t.replace("Z", "+00:00"))
            age = datetime.datetime.now(datetime.timezone.utc) - when
            assert datetime.timedelta(0) <= age < datetime.timedelta(hours=1), f"time {t} is not now"
            assert json.loads(text(a["config"])) == cfg, "attribute config differs from config.json"
            assert Path(text(a["corpus"])).resolve() == Path(corpus).resolve()
            # /model: the model file's layout and configuration
            g = f["model"]
            assert sorted(g.keys()) == sorted(m["model"].keys())
            assert {k: (v.tolist() if hasattr(v, "tolist") else text(v)) for k, v in g.attrs.items()} == \
                   {k: (v.tolist() if hasattr(v, "tolist") else text(v)) for k, v in m["model"].attrs.items()}
            for k in g:
                assert g[k].dtype == np.float32 and g[k].shape == m["model"][k].shape, k
            # /optimizer: Adam's moments, named and shaped like the model
            for moment in ("m", "v"):
                o = f["optimizer"][moment]
                assert sorted(o.keys()) == sorted(g.keys()), f"/optimizer/{moment}"
                for k in g:
                    assert o[k].shape == g[k].shape, f"/optimizer/{moment}/{k}"
                    x = o[k][()]
                    assert np.all(np.isfinite(x)), f"/optimizer/{moment}/{k}"
                    if moment == "v":
                        assert np.all(x >= 0) and np.any(x > 0), f"/optimizer/v/{k}"
                    else:
                        assert np.any(x != 0), f"/optimizer/m/{k}"
            # /tokenizer: the corpus's
            with h5py.File(tiny_corpus["tokenizer"], "r") as tk:
                want = tk["tokenizer"]
                got = f["tokenizer"]
                assert sorted(got.keys()) == sorted(want.keys())
                for k in want:
                    assert np.array_equal(got[k][()], want[k][()]), f"/tokenizer/{k}"
                for k, v in want.attrs.items():
                    assert text(got.attrs[k]) == text(v), f"/tokenizer attribute {k}"
            # every dataset chunked with Fletcher32 (checked last, below)
            datasets = []
            f.visititems(lambda n, o: datasets.append((n, o.chunks, o.fletcher32))
                         if isinstance(o, h5py.Dataset) else None)
            unchecked += [f"{path.name}: /{name} (chunks {chunks}, fletcher32 {fletcher})"
                          for name, chunks, fletcher in datasets if chunks is None or fletcher is not True]
        assert read_all(path) == step
    # the last checkpoint holds the final model
    with h5py.File(run_dir / "ckpt_40.h5", "r") as f:
        final = model_tensors(model_h5)
        for k, v in final.items():
            assert np.array_equal(f["model"][k][()], v), f"ckpt_40.h5 /model/{k} differs from model.h5"
    assert not unchecked, "datasets without the Fletcher32 filter:\n" + "\n".join(unchecked)


def test_commands_take_a_checkpoint(gpt_bin, corpus, refs):
    run_dir = refs[2]
    ck40, ck20, model_h5 = run_dir / "ckpt_40.h5", run_dir / "ckpt_20.h5", run_dir / "model.h5"

    def ev(model):
        p = sh([gpt_bin, "eval", "--model", model, "--data", corpus, "--windows", 8, "--json"], timeout=60)
        lines = [line for line in p.stdout.splitlines() if line.strip().startswith("{")]
        assert len(lines) == 1, p.stdout
        return json.loads(lines[0])["loss"]
    assert ev(ck40) == ev(model_h5)
    assert ev(ck20) != ev(ck40)

    def gen(model):
        return sh([gpt_bin, "generate", "--model", model, "--prompt", "Call me Ishmael.",
                   "--max-new-tokens", 30, "--seed", 5, "--top-k", 20], timeout=60).stdout
    assert gen(ck40) == gen(model_h5) and gen(ck40).strip()

    def score(model):
        return sh([gpt_bin, "score", "--model", model, "--text", "Call me Ishmael. Some years ago.",
                   "--json"], timeout=60).stdout
    assert score(ck40) == score(model_h5)

    insp = sh([gpt_bin, "inspect", ck20], timeout=60)
    out = insp.stdout
    assert "checksums verified" in out, out
    assert re.search(r"\bstep\w*\W{0,20}20\b", out, re.I), f"gpt inspect does not print step 20:\n{out}"
    for key in ("n_layer", "n_embd", "vocab_size"):
        assert key in out, f"gpt inspect does not print the configuration ({key}):\n{out}"
    with h5py.File(ck20, "r") as f:
        for name, ds in f["model"].items():
            lines = [line for line in out.splitlines() if re.search(rf"(^|\s|/){re.escape(name)}(\s|$)", line)]
            assert any(all(str(n) in line for n in ds.shape) for line in lines), \
                f"gpt inspect: no line with {name} and its shape {ds.shape}:\n{out}"


# --------------------------------------------------------------------------- 8: refusals

@pytest.fixture(scope="module")
def other_corpora(gpt_bin, moby, tiny_corpus, tmp_path_factory):
    """Corpora that differ from tiny_corpus: another slice of Moby Dick with the same
    tokenizer; tiny_corpus with one training token changed (same sizes); an exact copy
    at another path."""
    d = tmp_path_factory.mktemp("other_corpora")
    src = moby_slice(moby, d / "slice2.txt", 25_000, 50_000)
    other = d / "other.h5"
    sh([gpt_bin, "prepare", "--tokenizer", tiny_corpus["tokenizer"], "--out", other,
        "--split-on-blank-lines", "--val-fraction", "0.15", src], timeout=180)
    edited = d / "edited.h5"
    shutil.copy(tiny_corpus["corpus"], edited)
    with h5py.File(edited, "r+") as f:
        tok = f["train/tokens"]
        tok[100] = (int(tok[100]) + 1) % 256
    copy = d / "copy.h5"
    shutil.copy(tiny_corpus["corpus"], copy)
    return {"other": other, "edited": edited, "copy": copy}


def test_resume_refusals(gpt_bin, corpus, other_corpora, workdir):
    out = workdir / "run"
    crash(gpt_bin, corpus, out, 2, "step:24")
    assert list(checkpoints(out)) == [10, 20]
    before = snapshot(out)
    cases = [
        ("--n-layer 3", dict(extra=[*COMMON, "--n-layer", 3]), "n_layer"),
        ("--n-embd 32", dict(extra=[*COMMON, "--n-embd", 32]), "n_embd"),
        ("--n-head 2", dict(extra=[*COMMON, "--n-head", 2]), "n_head"),
        ("--vocab 500", dict(extra=[*COMMON, "--vocab", 500]), "vocab"),
        ("--ln pre", dict(extra=[*COMMON, "--ln", "pre"]), "ln"),
        ("--seed 8", dict(extra=[*COMMON, "--seed", 8]), "seed"),
        ("another corpus", dict(data=other_corpora["other"]), "corpus"),
        ("one token of the corpus changed", dict(data=other_corpora["edited"]), "corpus"),
        ("P=2 --batch 2 (global batch 4)", dict(layout=(2, 1)), "global batch"),
        ("P=2 --accum 2 (global batch 16)", dict(layout=(4, 2)), "global batch"),
        ("P=1 --batch 4 --accum 1 (global batch 4)", dict(ranks=1, layout=(4, 1)), "global batch"),
    ]
    failures = []
    for what, kw, field in cases:
        ranks = kw.pop("ranks", 2)
        data = kw.pop("data", corpus)
        proc = resume(gpt_bin, data, out, ranks, check=False, **kw)
        if proc.returncode == 0:
            failures.append(f"{what}: accepted (exit 0)")
            break  # the run dir has changed: the cases after this one mean nothing
        if field not in proc.stderr:
            failures.append(f"{what}: exit {proc.returncode} but stderr does not name {field!r}: "
                            f"{proc.stderr.strip()[-500:]!r}")
        after = snapshot(out)
        if after != before:
            failures.append(f"{what}: the run dir changed: "
                            f"{[n for n in set(before) | set(after) if before.get(n) != after.get(n)]}")
            before = after
    # without --resume, a used run dir is still refused
    proc = train(gpt_bin, corpus, out, 2, check=False)
    if proc.returncode == 0 or "--overwrite" not in proc.stderr:
        failures.append(f"no --resume: exit {proc.returncode}, stderr {proc.stderr.strip()[-300:]!r}")
    assert not failures, "\n".join(failures)


def test_resume_allowed_changes(gpt_bin, corpus, other_corpora, refs, workdir):
    # schedule, learning rate, intervals, --keep, threads, bucket size: accepted, the run
    # goes on from step 20 to the new --steps
    out = workdir / "longer"
    crash(gpt_bin, corpus, out, 2, "step:24")
    extra = ["--seed", 7, "--lr", "5e-4", "--min-lr", "1e-5", "--warmup", 2, "--weight-decay", "0.01",
             "--clip", "1.0", "--eval-every", 7, "--eval-windows", 5, "--log-every", 3,
             "--ckpt-every", 9, "--keep", 1, "--threads", 1, "--bucket-mb", 1, "--time-limit", "1:00:00"]
    proc = resume(gpt_bin, corpus, out, 2, steps=50, extra=extra)
    assert resumed_from(proc, out) == 20
    ms = read_metrics(out)
    assert [m["step"] for m in ms] == list(range(1, 51))
    ref = read_metrics(refs[2])
    assert [m["loss"] for m in ms[:20]] == [m["loss"] for m in ref[:20]], "steps before the checkpoint kept"
    assert ms[20]["loss"] == ref[20]["loss"], "step 21 trains on the same weights and data"
    assert list(checkpoints(out)) == [50]
    assert [m["step"] for m in ms if "val_loss" in m] == [21, 28, 35, 42, 49, 50]
    # dropout rates may change
    out = workdir / "dropout"
    crash(gpt_bin, corpus, out, 2, "step:24")
    proc = resume(gpt_bin, corpus, out, 2, extra=[*COMMON, "--dropout", 0])
    assert resumed_from(proc, out) == 20
    assert [m["step"] for m in read_metrics(out)] == list(range(1, STEPS + 1))
    # the same corpus at another path
    out = workdir / "moved"
    crash(gpt_bin, corpus, out, 2, "step:24")
    proc = resume(gpt_bin, other_corpora["copy"], out, 2)
    assert resumed_from(proc, out) == 20
    assert_same_run(out, refs[2], True, "corpus copied to another path")


# --------------------------------------------------------------------------- 9: paths MPI-IO could misread

def test_paths_with_a_colon(gpt_bin, tiny_corpus, workdir):
    """ROMIO reads the text before a ':' as a file system's name: a corpus written, then
    read, checkpointed and resumed through MPI-IO on 2 ranks, a ':' in every path."""
    data, out = workdir / "we:ird.h5", workdir / "runs" / "2026-12-06T10:00"
    sh([gpt_bin, "prepare", "--tokenizer", tiny_corpus["tokenizer"], "--out", data, "--split-on-blank-lines",
        "--val-fraction", "0.15", tiny_corpus["dir"] / "moby_slice.txt"])  # MPI-IO on one rank too
    extra = [*COMMON[:-1], 2]  # a checkpoint every 2 steps
    crash(gpt_bin, data, out, 2, "step:3", steps=4, extra=extra)
    assert list(checkpoints(out)) == [2]
    proc = resume(gpt_bin, data, out, 2, steps=4, extra=extra)
    assert resumed_from(proc, out) == 2
    assert latest(out) == "ckpt_4.h5" and (out / "model.h5").is_file()
    # a file that is not there cannot be opened; it is not corrupted
    proc = train(gpt_bin, workdir / "no:such.h5", workdir / "other", 1, steps=4, check=False)
    assert proc.returncode == 1 and "no:such.h5: cannot open: No such file or directory" in proc.stderr, proc.stderr
    assert "corrupted" not in proc.stderr, proc.stderr
