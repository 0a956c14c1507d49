"""--shard-optimizer (ZeRO-1) on one host.

  * gpt train on 2 and 3 ranks has the losses of an unsharded run to 1e-6 over 50 steps,
    with dropout, clipping and gradient accumulation, on a model whose embedding spans
    several checkpoint chunks, so that shards cut a tensor;
  * checkpoints written sharded hold whole logical tensors: P=2 sharded -> P=3 sharded
    -> P=1 unsharded resumes with the uninterrupted run's losses to 1e-5, an unsharded
    checkpoint resumes sharded, and the same P and mode resume bit for bit;
  * gpt finetune (continued pre-training, and a task with its head) sharded equals
    unsharded;
  * the parameters' all-gather overlapped with the next forward pass gives the blocking
    gather's (--bucket-mb 0) losses, checkpoints and model.h5 bit for bit, in fp32 and bf16;
  * config.json records the mode, and the opening line says it.

tests/cluster runs a sharded run across hosts; tests/unit/test_optim.c checks the
partition and AdamW on shards against one AdamW."""

import json
import random

import h5py
import numpy as np
import pytest

from conftest import checkpoint_tensors, read_metrics, sh

STEPS, CKPT = 50, 10
VOCAB = 20000  # wte 20000 x 64 floats: five 1 MiB chunks, so every P cuts it
ARGS = ["--model", "tiny", "--vocab", VOCAB, "--steps", STEPS, "--seed", 7, "--lr", "1e-3", "--min-lr", "1e-4",
        "--warmup", 5, "--weight-decay", "0.01", "--clip", "0.5", "--eval-every", 25, "--eval-windows", 8,
        "--log-every", 10, "--ckpt-every", CKPT, "--keep", 0]
BATCH = {1: (6, 2), 2: (3, 2), 3: (2, 2)}  # ranks: (batch, accum), 12 windows a step


def train(gpt_bin, corpus, out, P, extra=(), check=True):
    batch, accum = BATCH[P]
    return sh([gpt_bin, "train", "--data", corpus, "--out", out, *ARGS, "--batch", batch, "--accum", accum, *extra],
              ranks=P, check=check)


def losses(run_dir):
    return {m["step"]: (m["loss"], m.get("val_loss")) for m in read_metrics(run_dir)}


def assert_close(got, want, rel):
    assert got.keys() <= want.keys() and got
    for step, (loss, val) in got.items():
        assert loss == pytest.approx(want[step][0], rel=rel), f"step {step}"
        assert (val is None) == (want[step][1] is None)
        if val is not None:
            assert val == pytest.approx(want[step][1], rel=rel), f"step {step} val"


@pytest.fixture(scope="module")
def runs(gpt_bin, tiny_corpus, tmp_path_factory):
    """Uninterrupted runs: {(P, sharded): run directory}."""
    d = tmp_path_factory.mktemp("zero")
    out = {}
    for P, sharded in ((2, False), (2, True), (3, False), (3, True)):
        out[P, sharded] = d / f"p{P}{'s' if sharded else 'u'}"
        train(gpt_bin, tiny_corpus["corpus"], out[P, sharded], P, ["--shard-optimizer"] if sharded else [])
    return out


@pytest.mark.parametrize("P", [2, 3])
def test_sharded_training_has_the_unsharded_losses(runs, P):
    sharded, unsharded = losses(runs[P, True]), losses(runs[P, False])
    assert len(sharded) == STEPS
    assert_close(sharded, unsharded, 1e-6)
    config = json.loads((runs[P, True] / "config.json").read_text())
    assert config["run"]["shard_optimizer"] is True and config["ranks"] == P
    assert json.loads((runs[P, False] / "config.json").read_text())["run"]["shard_optimizer"] is False


def test_the_opening_line_says_sharded(gpt_bin, tiny_corpus, workdir):
    proc = train(gpt_bin, tiny_corpus["corpus"], workdir / "run", 2, ["--shard-optimizer", "--steps", 1])
    assert "bucket(s), optimizer sharded;" in proc.stdout


def test_sharded_checkpoints_resume_on_any_ranks_in_either_mode(gpt_bin, tiny_corpus, runs, workdir):
    corpus, want = tiny_corpus["corpus"], losses(runs[2, True])
    # the same P and mode: bit for bit
    same = workdir / "same"
    same.mkdir()
    train(gpt_bin, corpus, same, 2, ["--shard-optimizer", "--resume", runs[2, True] / "ckpt_10.h5"])
    got = losses(same)
    assert sorted(got) == list(range(11, STEPS + 1)) and all(got[s] == want[s] for s in got)
    # P=2 sharded -> P=3 sharded -> P=1 unsharded
    three = workdir / "three"
    three.mkdir()
    train(gpt_bin, corpus, three, 3, ["--shard-optimizer", "--resume", runs[2, True] / "ckpt_10.h5"])
    assert_close(losses(three), want, 1e-5)
    with h5py.File(three / "ckpt_20.h5", "r") as f:
        assert f.attrs["ranks"] == 3
    one = workdir / "one"
    one.mkdir()
    train(gpt_bin, corpus, one, 1, ["--resume", three / "ckpt_20.h5"])
    assert_close(losses(one), want, 1e-5)
    assert sorted(losses(one)) == list(range(21, STEPS + 1))
    # and the reverse: an unsharded checkpoint resumes sharded
    back = workdir / "back"
    back.mkdir()
    train(gpt_bin, corpus, back, 3, ["--shard-optimizer", "--resume", runs[2, False] / "ckpt_10.h5"])
    assert_close(losses(back), losses(runs[2, False]), 1e-5)
    # what three ranks wrote, each its shard, is the whole state of the unsharded run (to
    # what 40 steps of AdamW make of rounding: near-zero gradients, as the query biases
    # get, flip their normalised updates)
    sharded, whole = checkpoint_tensors(three / "ckpt_50.h5"), checkpoint_tensors(runs[2, False] / "ckpt_50.h5")
    assert sharded.keys() == whole.keys() and any(k.startswith("optimizer/v/") for k in whole)
    for name, x in whole.items():
        assert sharded[name].shape == x.shape
        np.testing.assert_allclose(sharded[name], x, rtol=1e-3, atol=1e-3 * float(np.abs(x).max()), err_msg=name)


@pytest.mark.parametrize("case", ["fp32", "bf16"])
def test_the_overlapped_gather_gives_the_blocking_gathers_bits(gpt_bin, tiny_corpus, workdir, case):
    """The shards' new parameters gathered in buckets on the progress thread while the next
    step's forward pass waits layer by layer (gradsync.h), against one blocking
    MPI_Allgatherv after the update (--bucket-mb 0): every loss and val_loss, every
    checkpoint and model.h5 equal bit for bit. fp32: the default buckets (wte's two
    pieces, then the layers), accumulation, evaluation and background checkpoints within
    the run; bf16: buckets of half layers, each layer's bf16 copy remade as it arrives, and
    no evaluation, so that the last step's gather is still in flight when the run ends.
    Without the forward pass's wait the losses differ from step 2 on."""
    common = ["--model", "tiny", "--vocab", VOCAB, "--seed", 7, "--lr", "1e-3", "--warmup", 2, "--clip", "0.5",
              "--log-every", 100, "--keep", 0, "--shard-optimizer"]
    if case == "fp32":
        common += ["--steps", 8, "--batch", 3, "--accum", 2, "--eval-every", 4, "--eval-windows", 8, "--ckpt-every",
                   4, "--async-ckpt"]
        modes = {"overlapped": [], "blocking": ["--bucket-mb", 0]}
        ckpts = [4, 8]
    else:
        common += ["--steps", 6, "--batch", 2, "--eval-every", 0, "--ckpt-every", 3, "--precision", "bf16"]
        modes = {"overlapped": ["--bucket-mb", "0.1"], "blocking": ["--bucket-mb", 0]}
        ckpts = [3, 6]
    got = {}
    for mode, extra in modes.items():
        out = workdir / mode
        sh([gpt_bin, "train", "--data", tiny_corpus["corpus"], "--out", out, *common, *extra], ranks=2)
        got[mode] = out
    a, b = (read_metrics(got[k]) for k in ("overlapped", "blocking"))
    assert [(m["step"], m["loss"], m.get("val_loss")) for m in a] == [(m["step"], m["loss"], m.get("val_loss"))
                                                                       for m in b]
    assert len(a) == common[common.index("--steps") + 1] and any("val_loss" in m for m in a) == (case == "fp32")
    for name in [f"ckpt_{s}.h5" for s in ckpts] + ["model.h5"]:
        x, y = checkpoint_tensors(got["overlapped"] / name), checkpoint_tensors(got["blocking"] / name)
        assert x.keys() == y.keys() and x
        for k in x:
            assert np.array_equal(x[k], y[k]), f"{name}: {k}"


@pytest.fixture(scope="module")
def task(gpt_bin, tiny_corpus, tmp_path_factory):
    """A classification task file of Moby Dick's lines in tiny_corpus's tokenizer."""
    d = tmp_path_factory.mktemp("zero_task")
    lines = [ln.strip() for ln in open(tiny_corpus["dir"] / "moby_slice.txt") if len(ln.strip()) > 20][:60]
    rng = random.Random(3)
    src = d / "task.jsonl"
    src.write_text("".join(json.dumps({"text": ln[:80], "label": rng.randrange(3)}) + "\n" for ln in lines))
    out = d / "task.h5"
    sh([gpt_bin, "prepare-task", "--tokenizer", tiny_corpus["tokenizer"], "--task", "classify", "--out", out,
        "--n-ctx", 64, "--val-fraction", 0.25, src])
    return out


@pytest.mark.parametrize("data", ["corpus", "task"])
def test_sharded_finetuning_equals_unsharded(gpt_bin, tiny_corpus, runs, task, workdir, data):
    """And on the corpus, --grad-reduce bf16 reaches gpt finetune: its losses are the
    sharded fp32 run's to test_dist.py's tolerance, not bit for bit."""
    init = runs[2, False] / "model.h5"
    spec = tiny_corpus["corpus"] if data == "corpus" else task
    modes = [(False, "fp32"), (True, "fp32"), *([(True, "bf16")] if data == "corpus" else [])]
    result = {}
    for sharded, wire in modes:
        out = workdir / f"ft{int(sharded)}{wire}"
        sh([gpt_bin, "finetune", "--init", init, "--corpus" if data == "corpus" else "--data", spec, "--out", out, "--batch", 6, "--epochs", 1,
            "--lr", "1e-3", "--seed", 3, "--eval-every", 5, "--log-every", 1, "--ckpt-every", 5, "--grad-reduce", wire,
            *(["--shard-optimizer"] if sharded else [])], ranks=2)
        result[sharded, wire] = [(m["step"], m["loss"], m.get("val_loss")) for m in read_metrics(out)]
        config = json.loads((out / "config.json").read_text())
        assert config["shard_optimizer"] is sharded and config["grad_reduce"] == wire
    sharded = result[True, "fp32"]
    assert len(sharded) >= 5 and [s for s, *_ in sharded] == [s for s, *_ in result[False, "fp32"]]
    for (_, a, va), (_, b, vb) in zip(sharded, result[False, "fp32"]):
        assert a == pytest.approx(b, rel=1e-6)
        assert (va is None) == (vb is None) and (va is None or va == pytest.approx(vb, rel=1e-6))
    if data == "corpus":
        bf16 = result[True, "bf16"]
        assert [s for s, *_ in bf16] == [s for s, *_ in sharded] and bf16 != sharded
        assert [a for _, a, _ in bf16] == pytest.approx([a for _, a, _ in sharded], rel=1e-4)
