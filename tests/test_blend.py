"""Blends: gpt train, gpt finetune (continued pre-training) and gpt eval on several
corpora in fixed proportions (--data 0.7:a.h5 --data 0.3:b.h5, data.h).

    make && /usr/bin/python3 -m pytest -q tests/test_blend.py

  * the windows a step reads follow the blend: 70/30 of the samples, each corpus's in
    its own epoch order (checked against the sampler re-implemented here);
  * the same losses on 1 and 2 ranks; a resume continues the blend bit for bit;
  * per-corpus validation losses and their weighted mean;
  * a changed blend on resume is refused unless --allow-data-change;
  * corpora of different tokenizers, and bad weights, are clear errors.
The exactness of the proportions over 10,000 samples is tests/unit/test_data.c's."""

import json

import pytest

from conftest import moby_slice, read_metrics, sh

STEPS = 20
ARGS = ["--model", "tiny", "--steps", STEPS, "--batch", 4, "--seed", 7, "--lr", "1e-3", "--warmup", 2,
        "--eval-every", 10, "--eval-windows", 6, "--log-every", 5]


@pytest.fixture(scope="module")
def corpora(gpt_bin, moby, tiny_corpus, tmp_path_factory):
    """Two corpora of the tiny corpus's tokenizer from other parts of Moby Dick, and one
    of another tokenizer."""
    d = tmp_path_factory.mktemp("blend")
    out = {}
    for name, (start, end) in {"web": (40_000, 70_000), "books": (100_000, 125_000)}.items():
        src = moby_slice(moby, d / f"{name}.txt", start, end)
        out[name] = d / f"{name}.h5"
        sh([gpt_bin, "prepare", "--tokenizer", tiny_corpus["tokenizer"], "--out", out[name],
            "--split-on-blank-lines", "--val-fraction", "0.15", src])
    other_tok = d / "other_tok.h5"
    sh([gpt_bin, "tokenizer", "train", "--merges", 150, "--out", other_tok, d / "web.txt"])
    out["other"] = d / "other.h5"
    sh([gpt_bin, "prepare", "--tokenizer", other_tok, "--out", out["other"], "--split-on-blank-lines",
        "--val-fraction", "0.15", d / "books.txt"])
    return out


def train(gpt_bin, data, out, ranks=1, extra=(), check=True):
    cmd = [gpt_bin, "train", *[a for spec in data for a in ("--data", spec)], "--out", out, *ARGS, *extra]
    return sh(cmd, ranks=ranks, timeout=300, check=check)


@pytest.fixture(scope="module")
def blend_runs(gpt_bin, corpora, tmp_path_factory):
    d = tmp_path_factory.mktemp("blend_runs")
    data = [f"0.7:{corpora['web']}", f"0.3:{corpora['books']}"]
    runs = {}
    for P, accum in ((1, 2), (2, 1)):
        runs[P] = d / f"p{P}"
        train(gpt_bin, data, runs[P], ranks=P, extra=["--batch", 4, "--accum", accum, "--ckpt-every", 10])
    return data, runs


def test_blend_losses_do_not_depend_on_ranks(blend_runs):
    _, runs = blend_runs
    a, b = read_metrics(runs[1]), read_metrics(runs[2])
    assert [m["step"] for m in a] == list(range(1, STEPS + 1))
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5), x["step"]


def test_validation_per_corpus(blend_runs, corpora):
    data, runs = blend_runs
    evals = [m for m in read_metrics(runs[1]) if "val_loss" in m]
    assert [m["step"] for m in evals] == [10, 20]
    for m in evals:
        each = m["val_losses"]
        assert sorted(each) == sorted([str(corpora["web"]), str(corpora["books"])])
        assert m["val_loss"] == pytest.approx(0.7 * each[str(corpora["web"])] + 0.3 * each[str(corpora["books"])],
                                              rel=1e-12)
    config = json.loads((runs[1] / "config.json").read_text())
    blend = config["data"]["blend"]
    assert [b["path"] for b in blend] == [str(corpora["web"]), str(corpora["books"])]
    assert [b["weight"] for b in blend] == [0.7, 0.3]
    assert config["data"]["corpus"] == f"0.7:{corpora['web']},0.3:{corpora['books']}"


def test_resume_continues_the_blend_bit_exactly(gpt_bin, blend_runs, workdir):
    data, runs = blend_runs
    out = workdir / "resumed"
    proc = train(gpt_bin, data, out, extra=["--batch", 4, "--accum", 2, "--resume", runs[1] / "ckpt_10.h5"])
    assert "resuming from" in proc.stdout
    want, got = read_metrics(runs[1]), read_metrics(out)
    assert [m["step"] for m in got] == list(range(11, STEPS + 1))
    for x, y in zip(want[10:], got):
        assert y["loss"] == x["loss"] and y.get("val_loss") == x.get("val_loss"), x["step"]


def test_a_changed_blend_needs_allow_data_change(gpt_bin, blend_runs, corpora, workdir):
    data, runs = blend_runs
    out = workdir / "changed"
    changed = [f"0.5:{corpora['web']}", f"0.5:{corpora['books']}"]
    proc = train(gpt_bin, changed, out, extra=["--resume", runs[1] / "ckpt_10.h5"], check=False)
    assert proc.returncode != 0 and proc.stderr.count("gpt train:") == 1
    assert (f"was trained on 0.7:{corpora['web']},0.3:{corpora['books']}, other data than "
            f"0.5:{corpora['web']},0.5:{corpora['books']}") in proc.stderr
    assert "--allow-data-change" in proc.stderr
    for other in ([str(corpora["web"])], [f"0.3:{corpora['books']}", f"0.7:{corpora['web']}"]):
        proc = train(gpt_bin, other, out, extra=["--resume", runs[1] / "ckpt_10.h5"], check=False)
        assert proc.returncode != 0 and "--allow-data-change" in proc.stderr, other
    proc = train(gpt_bin, changed, out, extra=["--resume", runs[1] / "ckpt_10.h5", "--allow-data-change"])
    assert "--allow-data-change:" in proc.stdout
    assert [m["step"] for m in read_metrics(out)] == list(range(11, STEPS + 1))


def test_one_weighted_corpus_is_the_corpus(gpt_bin, corpora, workdir):
    """--data 3:a.h5 and --data a.h5 are the same run: a blend of one is the corpus."""
    bare, weighted = workdir / "bare", workdir / "weighted"
    train(gpt_bin, [str(corpora["web"])], bare, extra=["--steps", 6])
    train(gpt_bin, [f"3:{corpora['web']}"], weighted, extra=["--steps", 6, "--ckpt-every", 3])
    assert [m["loss"] for m in read_metrics(bare)] == [m["loss"] for m in read_metrics(weighted)]
    # and its checkpoints resume under the bare path
    train(gpt_bin, [str(corpora["web"])], weighted, extra=["--steps", 6, "--resume", weighted / "ckpt_3.h5"])


def test_samples_go_where_the_chain_sends_them(gpt_bin, corpora, workdir):
    """A first corpus of weight 1e-9 gets no sample of the first 10^9, so the others keep
    their indices: the run trains on the second corpus's windows, in its own order, as a
    run on that corpus alone does, loss for loss."""
    alone, blended = workdir / "alone", workdir / "blended"
    train(gpt_bin, [str(corpora["books"])], alone, extra=["--steps", 8, "--eval-every", 0])
    train(gpt_bin, [f"1e-9:{corpora['web']}", f"1:{corpora['books']}"], blended, extra=["--steps", 8, "--eval-every", 0])
    assert [m["loss"] for m in read_metrics(alone)] == [m["loss"] for m in read_metrics(blended)]
    # the other way round the minor corpus takes sample 0 (the chain's rounding), so the runs differ
    swapped = workdir / "swapped"
    train(gpt_bin, [f"1:{corpora['books']}", f"1e-9:{corpora['web']}"], swapped, extra=["--steps", 8, "--eval-every", 0])
    assert read_metrics(swapped)[0]["loss"] != read_metrics(alone)[0]["loss"]


@pytest.mark.parametrize("ranks", [1, 2])
def test_eval_of_a_blend(gpt_bin, blend_runs, corpora, ranks):
    _, runs = blend_runs
    model = runs[1] / "model.h5"
    single = {}
    for name in ("web", "books"):
        proc = sh([gpt_bin, "eval", "--model", model, "--data", corpora[name], "--windows", 6, "--json"], ranks=ranks)
        single[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    proc = sh([gpt_bin, "eval", "--model", model, "--data", f"0.7:{corpora['web']}", "--data",
               f"0.3:{corpora['books']}", "--windows", 6, "--json"], ranks=ranks)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [c["corpus"] for c in got["corpora"]] == [str(corpora["web"]), str(corpora["books"])]
    for c, name in zip(got["corpora"], ("web", "books")):
        assert c["loss"] == single[name]["loss"] and c["tokens"] == single[name]["tokens"]
    assert got["loss"] == pytest.approx(0.7 * single["web"]["loss"] + 0.3 * single["books"]["loss"], rel=1e-8)
    text = sh([gpt_bin, "eval", "--model", model, "--data", f"0.7:{corpora['web']}", "--data",
               f"0.3:{corpora['books']}", "--windows", 6], ranks=ranks).stdout
    assert "on the blend 0.7:" in text and "(the weighted mean)" in text


def test_continued_pretraining_on_a_blend(gpt_bin, blend_runs, corpora, workdir):
    _, runs = blend_runs
    outs = {}
    for P in (1, 2):
        outs[P] = workdir / f"ft{P}"
        sh([gpt_bin, "finetune", "--init", runs[1] / "model.h5", "--corpus", f"0.25:{corpora['web']}",
            "--corpus", f"0.75:{corpora['books']}", "--out", outs[P], "--epochs", 0.05, "--batch", 4,
            "--eval-every", 5, "--log-every", 5], ranks=P, timeout=300)
    a, b = read_metrics(outs[1]), read_metrics(outs[2])
    assert len(a) >= 5 and [m["step"] for m in a] == [m["step"] for m in b]
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5)
    last = a[-1]
    each = last["val_losses"]
    assert last["val_loss"] == pytest.approx(0.25 * each[str(corpora["web"])] + 0.75 * each[str(corpora["books"])],
                                             rel=1e-12)


@pytest.mark.parametrize("ranks", [1, 2])
def test_bad_blends(gpt_bin, corpora, workdir, ranks):
    out = workdir / "run"
    cases = [
        ([str(corpora["web"]), str(corpora["other"])], "were prepared with different tokenizers"),
        ([f"0:{corpora['web']}", str(corpora["books"])], f"--data 0:{corpora['web']}: the weight must be a positive"),
        ([f"-1:{corpora['web']}"], "the weight must be a positive number"),
        ([str(corpora["web"]), f"2:{corpora['web']}"], f"--data: {corpora['web']} is given twice"),
        ([str(corpora["web"]), str(workdir / "missing.h5")], "missing.h5"),
        ([f"1e-12:{corpora['web']}", str(corpora["books"])],
         f"--data 1e-12:{corpora['web']}: the weight is too small beside the others"),
    ]
    for data, message in cases:
        proc = train(gpt_bin, data, out, ranks=ranks, check=False)
        assert proc.returncode != 0 and proc.stderr.count("gpt train:") == 1, (data, proc.stderr)
        assert message in proc.stderr, (data, proc.stderr)


def test_huge_weights_are_normalised_without_overflow(gpt_bin, blend_runs, corpora):
    """1e308 + 1e308 overflows a double: the weights are still an even blend, not 0 and 0."""
    _, runs = blend_runs
    args = ["--model", runs[1] / "model.h5", "--windows", 6, "--json"]
    even = json.loads(sh([gpt_bin, "eval", *args, "--data", f"1:{corpora['web']}", "--data",
                          f"1:{corpora['books']}"]).stdout.strip().splitlines()[-1])
    huge = json.loads(sh([gpt_bin, "eval", *args, "--data", f"1e308:{corpora['web']}", "--data",
                          f"1e308:{corpora['books']}"]).stdout.strip().splitlines()[-1])
    assert [c["weight"] for c in huge["corpora"]] == [0.5, 0.5]
    assert huge["loss"] == even["loss"] > 0
