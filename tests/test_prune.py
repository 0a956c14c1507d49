"""gpt prune (magnitude pruning, docs/pruning.md).

    make && /usr/bin/python3 -m pytest -q tests/test_prune.py

  * exactly floor(S n) entries become zero and they are the smallest magnitudes (ties in
    buffer order), checked with numpy against the unpruned file: n pooled over the four
    weight matrices of every block (global) or each matrix on its own (layer, each at S);
    every other tensor is bit-identical;
  * S = 0 leaves every tensor bit-identical and the perplexity unchanged;
  * with --data the before/after lines are exactly `gpt eval`'s for the input and output
    files, and at S = 0.9 the perplexity does not improve;
  * 2 ranks write the same file as 1; a checkpoint is accepted as input; the output keeps
    the tokenizer and records pruned_sparsity and pruned_scope;
  * bad input is one clear message and a non-zero exit."""

import math
import re

import h5py
import numpy as np
import pytest

from conftest import sh

MATRICES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
STEPS = 150


def is_prunable(name):
    return name.startswith("h.") and name.split(".", 2)[2] in MATRICES


# A block's tensors in the order of model.c's tensor table (h5py lists names alphabetically).
LAYER = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
         "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
         "mlp.c_proj.weight", "mlp.c_proj.bias"]


def tensors(path):
    """The /model tensors in buffer order: wte, wpe, h.0 ... h.L-1 (and ln_f, pre-LN)."""
    with h5py.File(path, "r") as f:
        g = f["model"]
        order = ["wte", "wpe"] + [f"h.{i}.{n}" for i in range(int(g.attrs["n_layer"])) for n in LAYER]
        order += [n for n in ("ln_f.weight", "ln_f.bias") if n in g]
        assert sorted(order) == sorted(g), f"{path}: unexpected tensors"
        return {n: g[n][()] for n in order}


def pruned_positions(weights, k):
    """Indices (into the concatenation of weights, flattened) of the k smallest |w|,
    ties broken by position: a stable sort."""
    flat = np.concatenate([w.ravel() for w in weights])
    return np.argsort(np.abs(flat), kind="stable")[:k], flat


@pytest.fixture(scope="module")
def trained(gpt_bin, tiny_corpus, tmp_path_factory):
    """The tiny preset trained for STEPS steps, with a checkpoint at the end."""
    d = tmp_path_factory.mktemp("prune_run")
    sh([gpt_bin, "train", "--data", tiny_corpus["corpus"], "--model", "tiny", "--out", d, "--steps", STEPS,
        "--batch", 8, "--lr", "2e-3", "--warmup", 10, "--eval-every", 0, "--ckpt-every", STEPS, "--seed", 3])
    return {"model": d / "model.h5", "ckpt": d / f"ckpt_{STEPS}.h5", "corpus": tiny_corpus["corpus"]}


def prune(gpt_bin, model, out, sparsity, scope=None, data=None, ranks=None, check=True, extra=()):
    cmd = [gpt_bin, "prune", "--model", model, "--sparsity", sparsity, "--out", out, *extra]
    if scope:
        cmd += ["--scope", scope]
    if data:
        cmd += ["--data", data]
    return sh(cmd, ranks=ranks, check=check, timeout=120)


def eval_lines(stdout):
    return [line for line in stdout.splitlines() if " on " in line and "perplexity" in line]


def perplexity(line):
    return float(re.search(r"perplexity ([0-9.]+)", line).group(1))


# --------------------------------------------------------------------------- what is pruned

@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("sparsity", [0.37, 0.9])
def test_prunes_exactly_the_smallest_magnitudes(gpt_bin, trained, workdir, scope, sparsity):
    out = workdir / "pruned.h5"
    proc = prune(gpt_bin, trained["model"], out, sparsity, scope=scope)
    before, after = tensors(trained["model"]), tensors(out)
    assert list(before) == list(after)
    names = [n for n in before if is_prunable(n)]
    assert len(names) == 4 * 2  # tiny: 2 layers
    for n in before:
        if not is_prunable(n):
            assert before[n].tobytes() == after[n].tobytes(), f"{n} changed"
    assert not any((before[n] == 0).any() for n in names), "the trained model should have no exact zeros"
    pools = [names] if scope == "global" else [[n] for n in names]
    n_total = sum(before[n].size for n in names)
    for pool in pools:
        n = sum(before[p].size for p in pool)
        k = math.floor(sparsity * n)
        idx, flat = pruned_positions([before[p] for p in pool], k)
        got = np.concatenate([after[p].ravel() for p in pool])
        expected = flat.copy()
        expected[idx] = 0.0
        assert (got == 0).sum() == k
        assert got.tobytes() == expected.tobytes(), f"{pool}: not the {k} smallest magnitudes"
        if scope == "layer":
            assert abs(k / n - sparsity) < 1 / n
    zeros = sum(int((after[n] == 0).sum()) for n in names)
    with h5py.File(out, "r") as f:
        assert f["model"].attrs["pruned_scope"] == scope
        assert f["model"].attrs["pruned_sparsity"] == zeros / n_total
        assert "tokenizer" in f, "the output should keep the input's tokenizer"
    assert f"{zeros} of {n_total} prunable weights set to zero" in proc.stdout


def test_sparsity_zero_changes_nothing(gpt_bin, trained, workdir):
    out = workdir / "same.h5"
    proc = prune(gpt_bin, trained["model"], out, 0, data=trained["corpus"], extra=["--eval-windows", 10])
    before, after = tensors(trained["model"]), tensors(out)
    for n in before:
        assert before[n].tobytes() == after[n].tobytes(), f"{n} changed"
    lines = eval_lines(proc.stdout)
    assert len(lines) == 2 and perplexity(lines[0]) == perplexity(lines[1]), proc.stdout
    with h5py.File(out, "r") as f:
        assert f["model"].attrs["pruned_sparsity"] == 0.0


# --------------------------------------------------------------------------- evaluation

def test_perplexity_before_and_after_are_gpt_evals(gpt_bin, trained, workdir):
    out = workdir / "p90.h5"
    data = trained["corpus"]
    proc = prune(gpt_bin, trained["model"], out, 0.9, data=data, extra=["--split", "val"])
    lines = eval_lines(proc.stdout)
    assert len(lines) == 2, proc.stdout
    for model, line in zip([trained["model"], out], lines):
        ev = sh([gpt_bin, "eval", "--model", model, "--data", data, "--split", "val"], timeout=120)
        assert ev.stdout.strip() == line, f"gpt eval printed\n{ev.stdout}\ngpt prune printed\n{line}"
    assert perplexity(lines[1]) >= perplexity(lines[0]), proc.stdout
    assert re.search(r"perplexity [0-9.]+ -> [0-9.]+", proc.stdout), proc.stdout


def test_two_ranks_write_the_same_file_and_checkpoints_are_input(gpt_bin, trained, workdir):
    one, two = workdir / "one.h5", workdir / "two.h5"
    p1 = prune(gpt_bin, trained["model"], one, 0.5, scope="layer", data=trained["corpus"])
    p2 = prune(gpt_bin, trained["model"], two, 0.5, scope="layer", data=trained["corpus"], ranks=2)
    a, b = tensors(one), tensors(two)
    assert all(a[n].tobytes() == b[n].tobytes() for n in a)
    assert eval_lines(p1.stdout) == [line.replace(str(two), str(one)) for line in eval_lines(p2.stdout)]
    assert p2.stdout.count("wrote ") == 1, "rank 0 alone should print (and write)"
    # a checkpoint holds the same /model as model.h5 at the same step
    ck = workdir / "from_ckpt.h5"
    prune(gpt_bin, trained["ckpt"], ck, 0.5, scope="layer")
    c = tensors(ck)
    assert all(a[n].tobytes() == c[n].tobytes() for n in a)


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("ranks", [None, 2])
@pytest.mark.parametrize("args, message", [
    (["--sparsity", "1.0"], "--sparsity: expected a number in [0, 1), got '1.0'"),
    (["--sparsity", "-0.1"], "--sparsity: expected a number in [0, 1), got '-0.1'"),
    (["--sparsity", "abc"], "--sparsity: expected a number in [0, 1), got 'abc'"),
    (["--sparsity", "0.5", "--scope", "row"], "--scope: expected global or layer, got 'row'"),
    (["--sparsity", "0.5", "--split", "test"], "--split: expected train or val, got 'test'"),
    (["--sparsity", "0.5", "--model", "MISSING"], "cannot open"),
    (["--sparsity", "0.5", "--out", "/nonexistent/dir/p.h5"], "cannot create the file"),
])
def test_bad_input(gpt_bin, trained, workdir, ranks, args, message):
    args = [str(workdir / "no_such_model.h5") if a == "MISSING" else a for a in args]
    base = {"--model": trained["model"], "--out": workdir / "p.h5"}
    for flag in ("--model", "--out"):
        if flag not in args:
            args = [flag, base[flag], *args]
    proc = sh([gpt_bin, "prune", *args], ranks=ranks, check=False, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.count("gpt prune:") == 1, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert not (workdir / "p.h5").exists()
