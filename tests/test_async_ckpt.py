"""--async-ckpt: checkpoints written by a thread of each rank while training goes on.

  * the files are those of synchronous checkpoints, tensor for tensor and attribute for
    attribute (so no later update leaked into the staged copy), unsharded on 2 ranks and
    sharded (--shard-optimizer) on 3; the losses are the same;
  * metrics.jsonl has every step's line in order, and on each checkpointing step's line
    (only there) ckpt_blocked_s and ckpt_write_s, in synchronous runs too;
  * kill -9 at every point of a background write (its chunks, the close, the rename,
    latest) leaves latest naming a whole checkpoint, and --resume auto continues with
    exactly the uninterrupted run's losses;
  * a stop signal waits for the write: exit 75 with the stop's checkpoint committed.

tests/test_checkpoint.py covers synchronous checkpoints; tests/cluster runs a background
checkpoint across hosts."""

import json

import h5py
import numpy as np
import pytest

from conftest import TINY_ARGS, read_metrics, sh

STEPS, EVERY = 40, 10
LAYOUT = {2: (4, 1), 3: (2, 2)}  # ranks: (batch, accum); 2: 8 windows a step, 3: 12
STOPPED = 75


def train(gpt_bin, corpus, out, P, extra=(), env=None, check=True):
    batch, accum = LAYOUT[P]
    return sh([gpt_bin, "train", "--data", corpus, "--model", "tiny", "--out", out, "--steps", STEPS, "--batch", batch,
               "--accum", accum, "--ckpt-every", EVERY, "--keep", 0, *TINY_ARGS, *extra], ranks=P, env=env,
              check=check)


def contents(path):
    """{name: value} of every dataset and root attribute but the write's time."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        out.update({f"@{k}": v for k, v in f.attrs.items() if k not in ("time", "config")})
    return out


def assert_same_file(a, b):
    x, y = contents(a), contents(b)
    assert x.keys() == y.keys()
    for k in x:
        assert np.array_equal(x[k], y[k]), f"{a} and {b} differ in {k}"


def losses(run_dir):
    return {m["step"]: (m["loss"], m.get("val_loss")) for m in read_metrics(run_dir)}


@pytest.fixture(scope="module")
def runs(gpt_bin, tiny_corpus, tmp_path_factory):
    """{(P, sharded, async): run directory} of the uninterrupted runs."""
    d = tmp_path_factory.mktemp("async_ckpt")
    out = {}
    for P, sharded in ((2, False), (3, True)):
        for bg in (False, True):
            out[P, sharded, bg] = d / f"p{P}{'s' if sharded else ''}{'a' if bg else ''}"
            train(gpt_bin, tiny_corpus["corpus"], out[P, sharded, bg], P,
                  [*(["--shard-optimizer"] if sharded else []), *(["--async-ckpt"] if bg else [])])
    return out


@pytest.mark.parametrize("P,sharded", [(2, False), (3, True)])
def test_background_checkpoints_are_the_synchronous_ones(runs, P, sharded):
    bg, fg = runs[P, sharded, True], runs[P, sharded, False]
    for step in range(EVERY, STEPS + 1, EVERY):
        assert_same_file(bg / f"ckpt_{step}.h5", fg / f"ckpt_{step}.h5")
    assert (bg / "latest").read_text() == f"ckpt_{STEPS}.h5\n"
    assert losses(bg) == losses(fg)
    assert json.loads((bg / "config.json").read_text())["run"]["async_ckpt"] is True


@pytest.mark.parametrize("bg", [False, True])
def test_checkpointing_steps_carry_their_cost(runs, bg):
    lines = read_metrics(runs[2, False, bg])
    assert [m["step"] for m in lines] == list(range(1, STEPS + 1))
    for m in lines:
        if m["step"] % EVERY:
            assert "ckpt_blocked_s" not in m and "ckpt_write_s" not in m, m
            continue
        assert m["ckpt_blocked_s"] > 0 and m["ckpt_write_s"] > 0, m
        if not bg:
            assert m["ckpt_write_s"] == m["ckpt_blocked_s"]


# (the fault, the checkpoint --resume auto must find, what latest names after the kill);
# ckpt-rename: latest's, the whole ckpt_20.h5 beside it is moved to abandoned/
KILLS = {"ckpt-write:20@1": (10, 10), "ckpt-close:20": (10, 10), "ckpt-rename:20": (10, 10),
         "ckpt-latest:20": (20, 20)}


@pytest.mark.parametrize("fault", list(KILLS))
def test_kill_during_a_background_write(gpt_bin, tiny_corpus, runs, workdir, fault):
    resume_step, named = KILLS[fault]
    out = workdir / "run"
    proc = train(gpt_bin, tiny_corpus["corpus"], out, 2, ["--async-ckpt"], env={"GPT_FAULT": fault}, check=False)
    assert proc.returncode != 0, f"GPT_FAULT={fault}: not killed"
    assert (out / "latest").read_text() == f"ckpt_{named}.h5\n"
    with h5py.File(out / f"ckpt_{named}.h5", "r") as f:  # whole: opens, and says its step
        assert f.attrs["step"] == named
    proc = train(gpt_bin, tiny_corpus["corpus"], out, 2, ["--async-ckpt", "--resume", "auto"])
    assert f"resuming from {out}/ckpt_{resume_step}.h5" in proc.stdout
    want = losses(runs[2, False, False])
    got = losses(out)
    assert sorted(got) == list(range(1, STEPS + 1)) and all(got[s] == want[s] for s in got)
    assert not list(out.glob("*.tmp"))


def test_resume_from_a_background_checkpoint_is_bit_identical(gpt_bin, tiny_corpus, runs, workdir):
    got = {}
    for bg in (False, True):
        out = workdir / f"r{int(bg)}"
        out.mkdir()
        train(gpt_bin, tiny_corpus["corpus"], out, 2, ["--resume", runs[2, False, bg] / "ckpt_20.h5"])
        got[bg] = losses(out)
    assert sorted(got[True]) == list(range(21, STEPS + 1)) and got[True] == got[False]


def test_a_stop_waits_for_the_background_write(gpt_bin, tiny_corpus, runs, workdir):
    out = workdir / "run"
    proc = train(gpt_bin, tiny_corpus["corpus"], out, 2, ["--async-ckpt"], env={"GPT_FAULT": "step:15@1/TERM"},
                 check=False)
    assert proc.returncode == STOPPED, proc.stderr[-2000:]
    # rank 1's signal at step 15 is agreed on at step 16's control record
    assert f"stopping after step 16 on a signal to another rank: wrote {out}/ckpt_16.h5" in proc.stdout
    step = 16
    assert (out / "latest").read_text() == "ckpt_16.h5\n" and not list(out.glob("*.tmp"))
    lines = read_metrics(out)
    assert [m["step"] for m in lines] == list(range(1, step + 1))  # the held lines went out
    assert lines[-1]["ckpt_write_s"] > 0 and lines[9]["ckpt_write_s"] > 0
    assert_same_file(out / "ckpt_10.h5", runs[2, False, False] / "ckpt_10.h5")
