"""The tools `make demo` ends with (tools/demo.sh): tools/heldout_pairs.py, whose pairs
must come from the validation documents `gpt prepare` keeps and be records `gpt
eval-choice` reads, and tools/plot_loss.sh's text plot. The demo itself is not run
here (minutes of training): `make demo`."""

import json
import re

import h5py
import pytest

from conftest import ROOT, moby_slice, sh

PAIRS = ROOT / "tools/heldout_pairs.py"
PLOT = ROOT / "tools/plot_loss.sh"


def pairs(text, *opts):
    return sh(["/usr/bin/python3", PAIRS, *opts, text]).stdout


@pytest.fixture(scope="module")
def prepared(gpt_bin, moby, tmp_path_factory):
    """A 120 kB slice of Moby Dick prepared as the demo prepares it, with a fifth of its
    paragraphs in /val, a 500-merge tokenizer, and each validation document's text."""
    d = tmp_path_factory.mktemp("demo_tools")
    src = moby_slice(moby, d / "slice.txt", end=120_000)
    tok, corpus = d / "tok.h5", d / "corpus.h5"
    sh([gpt_bin, "tokenizer", "train", "--merges", 500, "--out", tok, src])
    sh([gpt_bin, "prepare", "--tokenizer", tok, "--out", corpus, "--split-on-blank-lines",
        "--val-fraction", 0.2, src])
    with h5py.File(corpus, "r") as f:
        ids, offsets = f["val/tokens"][()], f["val/doc_offsets"][()]
    docs = [sh([gpt_bin, "detokenize", "--tokenizer", tok],
               input=" ".join(str(int(t)) for t in ids[a:b])).stdout.removesuffix("<|endoftext|>")
            for a, b in zip(offsets[:-1], offsets[1:])]
    return {"dir": d, "src": src, "tok": tok, "val_docs": docs,
            "train_text": src.read_text()}


def test_stats_are_the_validation_split_prepare_keeps(prepared):
    stats = json.loads(pairs(prepared["src"], "--val-fraction", 0.2, "--stats"))
    assert stats["val_docs"] == len(prepared["val_docs"]) > 0
    assert stats["val_bytes"] == sum(len(doc.encode()) for doc in prepared["val_docs"])


def test_pairs_are_held_out_sentences_against_their_words_shuffled(prepared):
    out = pairs(prepared["src"], "--val-fraction", 0.2, "--n", 12, "--seed", 3)
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 12
    val_text = [" ".join(doc.split()) for doc in prepared["val_docs"]]
    labels = set()
    for r in records:
        assert r["context"] == "" and len(r["endings"]) == 2 and r["label"] in (0, 1)
        true, other = r["endings"][r["label"]], r["endings"][1 - r["label"]]
        assert 8 <= len(true.split()) <= 30 and re.fullmatch(r"[A-Z].*[.!?]", true)
        assert any(true in doc for doc in val_text)  # from a validation document
        assert sorted(other.split()) == sorted(true.split()) and other != true
        assert other.split()[0] == true.split()[0]  # the one word without a leading space
        labels.add(r["label"])
    assert labels == {0, 1}
    # deterministic for a seed, another draw for another seed
    assert pairs(prepared["src"], "--val-fraction", 0.2, "--n", 12, "--seed", 3) == out
    assert pairs(prepared["src"], "--val-fraction", 0.2, "--n", 12, "--seed", 4) != out


def test_sentences_also_in_training_documents_are_left_out(workdir):
    # 10 paragraphs, the 10th in /val at --val-fraction 0.1; its first sentence also
    # occurs in paragraph 3, its second nowhere else
    seen = "The ship sailed on through the long grey night without a single light."
    fresh = "Nobody aboard could tell where the wind would carry them before dawn."
    paras = [f"Paragraph {i} is about nothing at all." for i in range(9)] + [f"{seen} {fresh}"]
    paras[3] += " " + seen
    src = workdir / "text.txt"
    src.write_text("\n\n".join(paras) + "\n")
    records = [json.loads(line) for line in pairs(src, "--val-fraction", 0.1, "--n", 1).splitlines()]
    assert [r["endings"][r["label"]] for r in records] == [fresh]
    r = sh(["/usr/bin/python3", PAIRS, "--val-fraction", 0.1, "--n", 2, src], check=False)
    assert r.returncode != 0 and "only 1 held-out sentences" in r.stderr


def test_eval_choice_reads_the_pairs(gpt_bin, prepared):
    data = prepared["dir"] / "pairs.jsonl"
    data.write_text(pairs(prepared["src"], "--val-fraction", 0.2, "--n", 12))
    model = prepared["dir"] / "fresh.h5"
    sh([gpt_bin, "init", "--model", "tiny", "--vocab", 760, "--n-ctx", 128, "--out", model])  # 30 words: < 128 tokens
    out = json.loads(sh([gpt_bin, "eval-choice", "--model", model, "--tokenizer", prepared["tok"],
                         "--data", data, "--json"]).stdout)
    assert out["records"] == 12 and out["chance"] == 0.5 and 0 <= out["accuracy"] <= 1
    # the two endings are the same tokens in another order
    tok = lambda text: sorted(sh([gpt_bin, "tokenize", "--tokenizer", prepared["tok"]], input=text).stdout.split())
    for line in data.read_text().splitlines():
        a, b = json.loads(line)["endings"]
        assert tok(a) == tok(b)


def test_plot_loss_draws_text(workdir):
    run = workdir / "run"
    run.mkdir()
    run.joinpath("metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 9 - s / 20, **({"val_loss": 9.2 - s / 20} if s % 25 == 0 else {})}) + "\n"
        for s in range(1, 101)))
    png = workdir / "loss.png"
    out = sh(["bash", PLOT, "-o", png, "-d", "-t", "the title", run]).stdout
    lines = out.splitlines()
    assert "the title" in out and "step" in out and f"wrote {png}" in lines[-1]
    assert max(len(line) for line in lines[:-1]) <= 79 and 20 <= len(lines) - 1 <= 26
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # text alone
    out = sh(["bash", PLOT, "-d", run]).stdout
    assert "step" in out and "wrote" not in out
