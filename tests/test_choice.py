"""gpt eval-choice: multiple-choice scoring by log-likelihood, zero- and few-shot.

    make && /usr/bin/python3 -m pytest -q tests/test_choice.py

  * every ending's summed and mean log-likelihood equals the float64 PyTorch reference
    (tools/torch_gpt.py, full forward passes, no cache) to 1e-5, for post-LN and pre-LN
    models, with 0 shots and with shots; the prompt is rebuilt here from the documented
    rules (pieces tokenized separately, the context's trailing whitespace moved to the
    endings, one space between words, shots oldest first, the oldest dropped and then
    the prompt cut from the left to fit n_ctx), and accuracy, accuracy_norm, chance and
    the gold log-likelihood follow from the reference's numbers;
  * the shots are distinct, never the record itself, the same for a seed and others for
    another seed, and come from --shots-from when given;
  * the results and the predictions file are the same for 1, 2 and 3 ranks and for 1 and
    2 threads, and with --no-cache (the prompt run again for every ending, each ending
    alone) the same to 1e-6;
  * bad records and options are clear errors naming FILE:LINE (or the option), and leave
    no predictions file behind."""

import json
import random
import re
import shutil

import h5py
import pytest
import torch

import torch_gpt
from conftest import moby_slice, sh

RTOL = 1e-5
WS = " \t\n\r\v\f"
SEP = "\n\n"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def setup(gpt_bin, moby, tmp_path_factory):
    """A 500-merge tokenizer, a post-LN and a pre-LN tiny model (random weights of std
    0.2, so that endings' scores differ widely), and records made of Moby Dick's
    sentences: a sentence's start as the context, its true end and the ends of three other
    sentences as the endings."""
    d = tmp_path_factory.mktemp("choice")
    src = moby_slice(moby, d / "slice.txt")
    tok = d / "tok.h5"
    sh([gpt_bin, "tokenizer", "train", "--merges", 500, "--out", tok, src])
    models = {}
    for ln in ("post", "pre"):
        models[ln] = d / f"{ln}.h5"
        sh([gpt_bin, "init", "--model", "tiny", "--ln", ln, "--vocab", 760, "--seed", 3, "--init-std", 0.2,
            "--out", models[ln]])
    text = " ".join(src.read_text().split())
    sentences = [s for s in re.split(r"(?<=[.!?]) ", text) if 6 <= len(s.split()) <= 14]
    rng = random.Random(5)
    records = []
    for i in range(24):
        words = sentences[i].split()
        cut = rng.randint(2, len(words) - 2)
        others = rng.sample([s for j, s in enumerate(sentences) if j != i], 3)
        endings = [" ".join(words[cut:])] + [" ".join(o.split()[-rng.randint(1, 5):]) for o in others]
        label = rng.randrange(4)
        endings[0], endings[label] = endings[label], endings[0]
        records.append({"context": " ".join(words[:cut]), "endings": endings, "label": label})
    # the whitespace rules: trailing whitespace moves to the endings, leading kept, "ctx", empty
    records[3]["context"] += " "
    records[4]["endings"] = [" " + e for e in records[4]["endings"]]
    records[5]["context"] += "\n"
    records[6] = {"ctx": records[6]["context"], "endings": records[6]["endings"], "label": records[6]["label"]}
    records[7]["context"] = ""
    data = d / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" + ("\n" if i == 10 else "") for i, r in enumerate(records)))
    # n_ctx pressure: long contexts make 3 shots too long (the oldest dropped), and a
    # context of 60 tokens with a longer ending needs the prompt cut from the left
    long_ctx = " ".join(text.split()[200:224])
    tight = [{"context": " ".join(text.split()[300 + 30 * i: 300 + 30 * i + 8]), "endings": ["the whale", "a ship"],
              "label": i % 2} for i in range(6)]
    tight.append({"context": long_ctx, "endings": ["and so on to the end of it all", "no"], "label": 0})
    tight_path = d / "tight.jsonl"
    tight_path.write_text("".join(json.dumps(r) + "\n" for r in tight))
    return {"gpt": gpt_bin, "dir": d, "tok": tok, "models": models, "data": data, "records": records,
            "tight": tight_path, "tight_records": tight,
            "refs": {ln: torch_gpt.GPT.from_file(p, torch.float64).eval() for ln, p in models.items()},
            "eot": 756}


class Tokens:
    """`gpt tokenize` with a cache: the ids of a piece of text."""

    def __init__(self, gpt, tok):
        self.gpt, self.tok, self.cache = gpt, tok, {}

    def __call__(self, text):
        if text not in self.cache:
            out = sh([self.gpt, "tokenize", "--tokenizer", self.tok], input=text).stdout.split()
            self.cache[text] = [int(t) for t in out]
        return self.cache[text]


@pytest.fixture(scope="module")
def tokens(setup):
    return Tokens(setup["gpt"], setup["tok"])


def eval_choice(setup, data, *opts, model="post", ranks=None, check=True, out=None):
    """Runs gpt eval-choice --json --predictions; (summary, predictions) or the process."""
    pred = out or setup["dir"] / "pred.jsonl"
    if pred.exists():
        pred.unlink()
    proc = sh([setup["gpt"], "eval-choice", "--model", setup["models"][model], "--tokenizer", setup["tok"],
               "--data", data, "--json", "--predictions", pred, *opts], ranks=ranks, check=check)
    if not check:
        return proc
    return json.loads(proc.stdout), [json.loads(line) for line in pred.read_text().splitlines()]


# --------------------------------------------------------------------------- the reference

def pieces(rec, tokens):
    """The context's tokens and every ending's, by the documented rules."""
    ctx = rec["context"] if "context" in rec else rec["ctx"]
    keep = ctx.rstrip(WS)
    ws = ctx[len(keep):]
    ends = [ws + (" " if not ws and keep and e[0] not in WS else "") + e for e in rec["endings"]]
    return (tokens(keep) if keep else []), [tokens(e) for e in ends]


def prompt_of(rec, pool, shot_lines, line_index, n_ctx, eot, tokens, sep=SEP):
    """Record rec's prompt with the shots of the given lines (oldest first): drops the
    oldest while the prompt and the longest ending minus one token exceed n_ctx, then cuts
    from the left. Returns (prompt, shots kept, tokens cut)."""
    ctx, ends = pieces(rec, tokens)
    shots = []
    for line in shot_lines:
        s_ctx, s_ends = pieces(pool[line_index[line]], tokens)
        shots.append(s_ctx + s_ends[pool[line_index[line]]["label"]] + (tokens(sep) if sep else []))
    budget = n_ctx + 1 - max(len(e) for e in ends)
    while shots and 1 + sum(map(len, shots)) + len(ctx) > budget:
        shots.pop(0)
    prompt = [eot] + [t for s in shots for t in s] + ctx
    cut = max(0, len(prompt) - budget)
    return prompt[cut:], len(shots), cut


def reference_sums(model, prompt, ends):
    """Each ending's summed log-probability after prompt: one full forward pass a ending."""
    sums = []
    for e in ends:
        seq = prompt + e
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([seq[:-1]]))[0], -1)
        sums.append(sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(e)))
    return sums


def line_numbers(path):
    """Line number (1-based) -> record index, skipping blank lines."""
    index, i = {}, 0
    for n, line in enumerate(path.read_text().split("\n"), 1):
        if line.strip():
            index[n], i = i, i + 1
    return index


def check_against_reference(setup, tokens, data, records, pool, pool_path, summary, preds, ln, shots):
    ref = setup["refs"][ln]
    index = line_numbers(pool_path)
    right = right_norm = gold = gold_tokens = chance = 0.0
    lines = line_numbers(data)
    assert [lines[p["line"]] for p in preds] == list(range(len(records)))
    for p, rec in zip(preds, records):
        assert len(p["shot_lines"]) == shots
        prompt, kept, cut = prompt_of(rec, pool, p["shot_lines"], index, 64, setup["eot"], tokens)
        assert (p["shots_used"], p["cut"]) == (kept, cut), f"line {p['line']}"
        _, ends = pieces(rec, tokens)
        want = reference_sums(ref, prompt, ends)
        assert p["tokens"] == [len(e) for e in ends]
        assert p["sum"] == pytest.approx(want, rel=RTOL), f"line {p['line']}: {p['sum']} vs {want}"
        mean = [s / len(e) for s, e in zip(want, ends)]
        assert p["mean"] == pytest.approx(mean, rel=RTOL)
        assert p["choice"] == max(range(len(want)), key=lambda k: (want[k], -k))
        assert p["choice_norm"] == max(range(len(mean)), key=lambda k: (mean[k], -k))
        right += p["choice"] == rec["label"]
        right_norm += p["choice_norm"] == rec["label"]
        gold += want[rec["label"]]
        gold_tokens += len(ends[rec["label"]])
        chance += 1 / len(ends)
    n = len(records)
    assert summary["records"] == n and summary["shots"] == shots
    assert summary["accuracy"] == pytest.approx(right / n)
    assert summary["accuracy_norm"] == pytest.approx(right_norm / n)
    assert summary["chance"] == pytest.approx(chance / n)
    assert summary["gold_loglik"] == pytest.approx(gold / n, rel=RTOL)
    assert summary["gold_loglik_per_token"] == pytest.approx(gold / gold_tokens, rel=RTOL)
    assert summary["records_fewer_shots"] == sum(p["shots_used"] < shots for p in preds)
    assert summary["records_cut"] == sum(p["cut"] > 0 for p in preds)


# --------------------------------------------------------------------------- against the reference

@pytest.mark.parametrize("ln", ["post", "pre"])
@pytest.mark.parametrize("shots", [0, 2])
def test_scores_equal_reference(setup, tokens, ln, shots):
    summary, preds = eval_choice(setup, setup["data"], "--shots", shots, model=ln)
    check_against_reference(setup, tokens, setup["data"], setup["records"], setup["records"], setup["data"],
                            summary, preds, ln, shots)
    for p in preds:
        assert p["line"] not in p["shot_lines"], "a record is never its own shot"
        assert len(set(p["shot_lines"])) == shots


def test_shots_from_another_file(setup, tokens):
    summary, preds = eval_choice(setup, setup["data"], "--shots", 3, "--shots-from", setup["tight"])
    check_against_reference(setup, tokens, setup["data"], setup["records"], setup["tight_records"], setup["tight"],
                            summary, preds, "post", 3)


def test_long_prompts_drop_shots_then_cut(setup, tokens):
    summary, preds = eval_choice(setup, setup["tight"], "--shots", 3, model="pre")
    check_against_reference(setup, tokens, setup["tight"], setup["tight_records"], setup["tight_records"],
                            setup["tight"], summary, preds, "pre", 3)
    assert 0 < summary["records_fewer_shots"] and summary["records_cut"] == 1
    assert preds[-1]["shots_used"] == 0 and preds[-1]["cut"] > 0
    text = sh([setup["gpt"], "eval-choice", "--model", setup["models"]["pre"], "--tokenizer", setup["tok"], "--data",
               setup["tight"], "--shots", 3]).stdout
    assert f"{summary['records_fewer_shots']} record(s) had fewer than 3 shots and 1 their context cut" in text


def test_seed_draws_shots(setup):
    _, a = eval_choice(setup, setup["data"], "--shots", 4, "--seed", 9)
    _, b = eval_choice(setup, setup["data"], "--shots", 4, "--seed", 9)
    _, c = eval_choice(setup, setup["data"], "--shots", 4, "--seed", 10)
    assert [p["shot_lines"] for p in a] == [p["shot_lines"] for p in b]
    assert [p["shot_lines"] for p in a] != [p["shot_lines"] for p in c]


# --------------------------------------------------------------------------- the same for any P

STABLE = ("records", "accuracy", "accuracy_norm", "chance", "gold_loglik", "gold_loglik_per_token", "shots",
          "records_fewer_shots", "records_cut")


@pytest.mark.parametrize("how", [{"ranks": 2}, {"ranks": 3}, {"threads": 2}, {"no_cache": True}])
def test_same_results_for_ranks_threads_and_cache(setup, how):
    base_summary, base = eval_choice(setup, setup["data"], "--shots", 2, out=setup["dir"] / "base.jsonl")
    opts = ["--shots", 2] + (["--threads", how["threads"]] if "threads" in how else []) + \
           (["--no-cache"] if how.get("no_cache") else [])
    summary, preds = eval_choice(setup, setup["data"], *opts, ranks=how.get("ranks"))
    # Without the cache the endings' products run over other row counts, and with 2 threads
    # cblas_sgemm splits them into slabs (docs/architecture.md): the rounding may differ.
    if how.get("no_cache") or "threads" in how:
        for p, b in zip(preds, base):
            assert p["sum"] == pytest.approx(b["sum"], rel=1e-6) and p["mean"] == pytest.approx(b["mean"], rel=1e-6)
            p["sum"], p["mean"] = b["sum"], b["mean"]
        summary["gold_loglik"] = pytest.approx(base_summary["gold_loglik"], rel=1e-6)
        summary["gold_loglik_per_token"] = pytest.approx(base_summary["gold_loglik_per_token"], rel=1e-6)
    assert preds == base, "the predictions differ"
    assert {k: summary[k] for k in STABLE} == {k: base_summary[k] for k in STABLE}
    assert summary["ranks"] == how.get("ranks", 1) and summary["shared_prompt"] == (not how.get("no_cache"))


def test_endings_in_batches_of_one(setup, workdir):
    """Endings too long to share n_ctx's rows run in several batches. A batch of a single
    ending used to stay appended to the cache, so the next batch ran at later positions,
    past n_ctx: wrong scores, and a write past the cache's end (heap corruption)."""
    endings = ["the whale " * 20, "a ship " * 20, "the sea " * 20]  # about 40 tokens each
    path = workdir / "long.jsonl"
    path.write_text("".join(json.dumps({"context": "Call me", "endings": endings[k:] + endings[:k], "label": k})
                            + "\n" for k in range(3)))
    _, cached = eval_choice(setup, path, model="pre")
    _, plain = eval_choice(setup, path, "--no-cache", model="pre")
    assert all(2 * (t - 1) > 64 for p in cached for t in p["tokens"])  # one ending a batch
    for c, p in zip(cached, plain):
        assert c["sum"] == pytest.approx(p["sum"], rel=1e-6)


# --------------------------------------------------------------------------- bad input

GOOD = {"context": "Call me", "endings": ["Ishmael", "Ahab"], "label": 0}


@pytest.mark.parametrize("bad, message", [
    ({"context": "Call me", "endings": ["Ishmael"], "label": 0}, 'field "endings" is not an array of at least 2'),
    ({"context": "Call me", "endings": ["Ishmael", "Ahab"], "label": 2}, 'field "label" is 2, outside 0..1'),
    ({"context": "Call me", "endings": ["Ishmael", "Ahab"], "label": -1}, 'field "label" is -1, outside 0..1'),
    ({"context": "Call me", "endings": ["Ishmael", " \n"], "label": 0}, 'field "endings"[1] is empty'),
    ({"context": "whale " * 70, "endings": ["Ishmael", "Ahab"], "label": 0}, 'field "context" has'),
    ({"context": "Call me", "endings": ["Ishmael", "whale " * 70], "label": 0}, 'field "endings"[1] has'),
    ({"context": "Call me", "endings": ["Ishmael", 3], "label": 0}, 'field "endings"[1] is not a string'),
    ({"context": "Call me", "endings": ["Ishmael", "Ahab"], "label": "0"}, 'field "label" is not an integer'),
    ({"context": "Call me", "endings": ["Ishmael", "Ahab"]}, 'field "label" is missing'),
    ({"question": "Call me", "choices": ["Ishmael", "Ahab"], "label": 0}, 'field "context" is missing'),
    ({"ctx": "a", "context": "b", "endings": ["Ishmael", "Ahab"], "label": 0}, 'both "context" and "ctx"'),
    ("[1, 2]", "expected a JSON object"),
    ('{"context": "Call me", ', "not valid JSON"),
    ('{"context": "Call me", "endings": ["Ishmael", "Ahab"], "label": 0, "label": 1}', 'duplicate object key'),
])
def test_bad_record(setup, workdir, bad, message):
    path = workdir / "bad.jsonl"
    bad_line = bad if isinstance(bad, str) else json.dumps(bad)
    path.write_text(json.dumps(GOOD) + "\n\n" + bad_line + "\n" + json.dumps(GOOD) + "\n")
    pred = workdir / "pred.jsonl"
    proc = eval_choice(setup, path, check=False, out=pred)
    assert proc.returncode == 1
    assert f"{path}:3: " in proc.stderr and message in proc.stderr, proc.stderr
    if " has" in message:
        assert "tokens, more than n_ctx = 64" in proc.stderr
    assert not pred.exists() and not (workdir / "pred.jsonl.tmp").exists()


def test_bad_files_and_options(setup, workdir):
    empty = workdir / "empty.jsonl"
    empty.write_text("\n  \n")
    proc = eval_choice(setup, empty, check=False)
    assert proc.returncode == 1 and f"{empty}: holds no record" in proc.stderr
    proc = eval_choice(setup, workdir / "missing.jsonl", check=False)
    assert proc.returncode == 1 and "missing.jsonl" in proc.stderr
    two = workdir / "two.jsonl"
    two.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    proc = eval_choice(setup, two, "--shots", 2, check=False)  # 1 other record
    assert proc.returncode == 1 and f"{two}: --shots 2, but the shot pool has 2 records" in proc.stderr
    proc = eval_choice(setup, setup["data"], "--shots", 3, "--shots-from", two, check=False)
    assert proc.returncode == 1 and f"{two}: --shots 3, but the shot pool has 2 records" in proc.stderr
    proc = eval_choice(setup, setup["data"], "--shots", 3, "--shots-from", two, ranks=2, check=False)
    assert proc.returncode == 1 and proc.stderr.count("--shots 3, but") == 1, "one message, from rank 0"
    for opts, message in [(["--shots", "-1"], "--shots: expected an integer >= 0"),
                          (["--threads", "0"], "--threads: expected an integer >= 1"),
                          (["--seed", "x"], "--seed: expected an integer >= 0")]:
        proc = eval_choice(setup, setup["data"], *opts, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    proc = eval_choice(setup, setup["data"], check=False, out=workdir / "no-such-dir" / "p.jsonl")
    assert proc.returncode == 1 and "no-such-dir/p.jsonl.tmp: cannot create" in proc.stderr


def test_shots_from_the_evaluated_file_never_make_a_record_its_own_shot(setup, workdir):
    """--shots-from naming --data (by another path) is --data's own pool: a record is never its own shot."""
    alias = workdir / "alias.jsonl"
    alias.symlink_to(setup["data"])
    base = eval_choice(setup, setup["data"], "--shots", 3)
    same = eval_choice(setup, setup["data"], "--shots", 3, "--shots-from", alias)
    assert same[1] == base[1]
    assert {k: same[0][k] for k in STABLE} == {k: base[0][k] for k in STABLE}


def test_a_tokenizer_other_than_the_models_own_is_refused(setup, workdir):
    """--tokenizer must not silently replace the tokenizer a model file carries."""
    model, other = workdir / "with_tok.h5", workdir / "other.h5"
    shutil.copy(setup["models"]["post"], model)
    with h5py.File(setup["tok"], "r") as src, h5py.File(model, "a") as dst:
        src.copy(src["tokenizer"], dst, "tokenizer")
    sh([setup["gpt"], "tokenizer", "train", "--merges", 400, "--out", other, setup["dir"] / "slice.txt"])
    ok = sh([setup["gpt"], "eval-choice", "--model", model, "--tokenizer", setup["tok"], "--data", setup["data"]])
    assert "accuracy" in ok.stdout
    proc = sh([setup["gpt"], "eval-choice", "--model", model, "--tokenizer", other, "--data", setup["data"]],
              check=False)
    assert proc.returncode == 1, proc.stdout
    assert f"--tokenizer {other} is not the tokenizer {model} carries" in proc.stderr, proc.stderr
