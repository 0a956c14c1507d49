"""gpt prepare-task: labelled JSONL/CSV records to GPT-1's input sequences in a task file
(docs/formats.md, "Task file"): the sequences of every task, label mapping, the split, the
truncation rule, CSV with and without a header, a real CSV, and clear errors; gpt inspect
verifies task files and rejects corrupted ones."""

import base64
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

PANG_LEE = Path("/usr/share/doc/python3-pattern/test/corpora/polarity-en-pang&lee2.csv")

TEXT = """The whale swam under the ship, and the captain watched the sea.
A good film is a story well told; a bad one is a long evening.
Premises and hypotheses: the sailor is at sea, so the sailor is not at home.
"""


@pytest.fixture(scope="module")
def tok(gpt_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    (d / "text.txt").write_text(TEXT * 3, encoding="utf-8")
    out = d / "tok.h5"
    from conftest import run_cmd
    run_cmd([gpt_bin, "tokenizer", "train", "--merges", "150", "--out", out, d / "text.txt"], check=True)
    return out


@pytest.fixture(scope="module")
def special(tok):
    with h5py.File(tok, "r") as f:
        names = [n.decode() for n in f["tokenizer/special_tokens"][()]]
        ids = [int(i) for i in f["tokenizer/special_ids"][()]]
    s = dict(zip(names, ids))
    return s["<|start|>"], s["<|delim|>"], s["<|extract|>"]


@pytest.fixture(scope="module")
def encode(gpt_bin, tok, tmp_path_factory):
    """The tokenizer's ids of a text, through `gpt tokenize` (cached)."""
    from conftest import run_cmd
    d, cache = tmp_path_factory.mktemp("enc"), {}

    def enc(text):
        if text not in cache:
            p = d / "piece.txt"
            p.write_bytes(text.encode("utf-8"))
            out = run_cmd([gpt_bin, "tokenize", "--tokenizer", tok, p], check=True).stdout.split()
            cache[text] = [int(x) for x in out]
        return cache[text]
    return enc


def prepare(run, gpt_bin, tok, workdir, content, task, *extra, name="in.jsonl", check=True):
    src = workdir / name
    if isinstance(content, bytes):
        src.write_bytes(content)
    else:
        src.write_text(content, encoding="utf-8")
    out = workdir / "task.h5"
    proc = run([gpt_bin, "prepare-task", "--tokenizer", tok, "--task", task, "--out", out, *extra, src], check=check)
    return proc, out, src


def jsonl(records):
    return "".join(json.dumps(r) + "\n" for r in records)


def read_task(path):
    """{split: [(sequences as lists, label), ...]}, the root attributes, /label_names."""
    res = {}
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        names = [n.decode() for n in f["label_names"][()]] if "label_names" in f else None
        for s in ("train", "val"):
            tokens, so, eo = f[f"{s}/tokens"][()], f[f"{s}/seq_offsets"][()], f[f"{s}/example_offsets"][()]
            labels = f[f"{s}/labels"][()]
            res[s] = [([tokens[so[k]:so[k + 1]].tolist() for k in range(eo[j], eo[j + 1])], labels[j].item())
                      for j in range(len(labels))]
    return res, attrs, names


def seq(special, a, b=None):
    S, D, E = special
    return [S, *a, E] if b is None else [S, *a, D, *b, E]


def test_classify_sequences_and_file_layout(run, gpt_bin, tok, workdir, special, encode):
    recs = [{"text": "  The whale swam under the ship.\n", "label": 1},
            {"text": "a bad one is a long evening", "label": 0, "id": 7},
            {"text": "the captain watched the sea", "label": 2}]
    _, out, src = prepare(run, gpt_bin, tok, workdir, jsonl(recs) + "\n", "classify")
    data, attrs, names = read_task(out)
    assert data["val"] == [] and names is None
    assert [x for x in data["train"]] == [([seq(special, encode(r["text"].strip()))], r["label"]) for r in recs]
    assert attrs["format"] == "gpt-task" and attrs["format_version"] == 1 and attrs["task"] == "classify"
    assert attrs["label_kind"] == "class" and attrs["n_classes"] == 3 and attrs["n_ctx"] == 512
    assert (attrs["start_token"], attrs["delim_token"], attrs["extract_token"]) == special
    assert attrs["source"] == str(src) and attrs["truncated"] == 0
    with h5py.File(out, "r") as f:
        assert f["train/tokens"].dtype == np.int32 and f["train/tokens"].fletcher32
        assert f["train/seq_offsets"].dtype == np.int64 and f["train/example_offsets"].dtype == np.int64
        assert f["train/labels"].dtype == np.int32 and f["val/tokens"].shape == (0,)
        assert f["tokenizer"].attrs["vocab_size"] == attrs["vocab_size"]
    assert not Path(str(out) + ".tmp").exists()


def test_entail_sequences(run, gpt_bin, tok, workdir, special, encode):
    recs = [{"premise": "the sailor is at sea", "hypothesis": "the sailor is not at home", "label": 0},
            {"premise": "a good film", "hypothesis": " a bad film ", "label": 1}]
    _, out, _ = prepare(run, gpt_bin, tok, workdir, jsonl(recs), "entail", "--num-classes", "3")
    data, attrs, _ = read_task(out)
    assert data["train"] == [([seq(special, encode(r["premise"].strip()), encode(r["hypothesis"].strip()))],
                              r["label"]) for r in recs]
    assert attrs["n_classes"] == 3


def test_similar_has_both_orders(run, gpt_bin, tok, workdir, special, encode):
    recs = [{"text_a": "the whale swam", "text_b": "under the ship", "label": 3.25},
            {"text_a": "a story well told", "text_b": "a long evening", "label": -1}]
    _, out, _ = prepare(run, gpt_bin, tok, workdir, jsonl(recs), "similar")
    data, attrs, _ = read_task(out)
    assert attrs["label_kind"] == "real" and attrs["n_classes"] == 0
    with h5py.File(out, "r") as f:
        assert f["train/labels"].dtype == np.float32
    for (seqs, label), r in zip(data["train"], recs):
        a, b = encode(r["text_a"]), encode(r["text_b"])
        assert seqs == [seq(special, a, b), seq(special, b, a)] and label == r["label"]
    # classes on request
    _, out, _ = prepare(run, gpt_bin, tok, workdir, jsonl([{**r, "label": i} for i, r in enumerate(recs)]),
                        "similar", "--num-classes", "2")
    data, attrs, _ = read_task(out)
    assert attrs["label_kind"] == "class" and [x[1] for x in data["train"]] == [0, 1]


def test_choice_has_one_sequence_per_answer(run, gpt_bin, tok, workdir, special, encode):
    recs = [{"context": "the captain watched", "choices": ["the sea", "the film"], "label": 0},
            {"context": "a good film is", "choices": ["a story", "a ship", " a whale "], "label": 2}]
    _, out, _ = prepare(run, gpt_bin, tok, workdir, jsonl(recs), "choice")
    data, attrs, _ = read_task(out)
    assert attrs["label_kind"] == "choice" and attrs["n_classes"] == 0
    for (seqs, label), r in zip(data["train"], recs):
        assert seqs == [seq(special, encode(r["context"]), encode(c.strip())) for c in r["choices"]]
        assert label == r["label"]
    bad = jsonl([recs[0], {**recs[1], "label": 3}])
    proc, _, src = prepare(run, gpt_bin, tok, workdir, bad, "choice", check=False)
    assert proc.returncode == 1 and f"{src}:2: label 3 is outside the 3 choices [0, 3)" in proc.stderr


def test_labels_mapped_by_name(run, gpt_bin, tok, workdir):
    recs = [{"text": "a good film", "label": "pos"}, {"text": "a bad film", "label": "neg"},
            {"text": "the sea", "label": "pos"}]
    proc, out, _ = prepare(run, gpt_bin, tok, workdir, jsonl(recs), "classify", "--labels", "neg,pos")
    data, attrs, names = read_task(out)
    assert [x[1] for x in data["train"]] == [1, 0, 1] and names == ["neg", "pos"] and attrs["n_classes"] == 2
    assert "neg: 1, pos: 2" in proc.stdout
    # JSON numbers compare with the names read as numbers; strings as text
    recs = [{"text": "a good film", "label": 1}, {"text": "a bad film", "label": -1.0},
            {"text": "the sea", "label": "-1"}]
    _, out, _ = prepare(run, gpt_bin, tok, workdir, jsonl(recs), "classify", "--labels", "-1,1")
    data, _, names = read_task(out)
    assert [x[1] for x in data["train"]] == [1, 0, 0] and names == ["-1", "1"]


def test_val_split_is_seeded_and_keeps_file_order(run, gpt_bin, tok, workdir, encode):
    n = 38
    recs = [{"text": f"record {i} of the whale", "label": i % 2} for i in range(n)]
    order = {tuple(encode(r["text"])): i for i, r in enumerate(recs)}

    def split(seed):
        _, out, _ = prepare(run, gpt_bin, tok, workdir, jsonl(recs), "classify", "--val-fraction", "0.25",
                            "--seed", seed)
        data, _, _ = read_task(out)
        return {s: [order[tuple(x[0][0][1:-1])] for x in data[s]] for s in data}

    a, b, c = split(7), split(7), split(8)
    assert len(a["val"]) == round(0.25 * n) == 10 and len(a["train"]) == n - 10
    assert sorted(a["train"] + a["val"]) == list(range(n))
    assert a["train"] == sorted(a["train"]) and a["val"] == sorted(a["val"])
    assert a == b and a["val"] != c["val"]


def cut(lens, budget):
    """The truncation rule: the longest piece (the first of equal ones) loses its last token."""
    lens = list(lens)
    while sum(lens) > budget:
        lens[lens.index(max(lens))] -= 1
    return lens


def test_truncation_cuts_the_longest_piece(run, gpt_bin, tok, workdir, special, encode):
    long_a = "the whale swam under the ship and the captain watched the sea all evening"
    long_b = "a good film is a story well told"
    short = "the sea"
    recs = [{"premise": long_a, "hypothesis": short, "label": 0},
            {"premise": short, "hypothesis": long_b, "label": 1},
            {"premise": long_b, "hypothesis": long_b, "label": 0},  # a tie: the first piece goes first
            {"premise": short, "hypothesis": short, "label": 1}]   # fits: untouched
    n_ctx = 12
    proc, out, _ = prepare(run, gpt_bin, tok, workdir, jsonl(recs), "entail", "--n-ctx", n_ctx, "--truncate")
    data, attrs, _ = read_task(out)
    assert attrs["truncated"] == 3 and "3 truncated" in proc.stdout
    for (seqs, _), r in zip(data["train"], recs):
        a, b = encode(r["premise"]), encode(r["hypothesis"])
        la, lb = cut([len(a), len(b)], n_ctx - 3)
        assert seqs == [seq(special, a[:la], b[:lb])]
        assert len(seqs[0]) == (n_ctx if len(a) + len(b) + 3 > n_ctx else len(a) + len(b) + 3)
    # similar: one cut for both orders; classify: the text alone
    _, out, _ = prepare(run, gpt_bin, tok, workdir, jsonl([{"text_a": long_a, "text_b": long_b, "label": 0.5}]),
                        "similar", "--n-ctx", n_ctx, "--truncate")
    (seqs, _), = read_task(out)[0]["train"]
    la, lb = cut([len(encode(long_a)), len(encode(long_b))], n_ctx - 3)
    a, b = encode(long_a)[:la], encode(long_b)[:lb]
    assert seqs == [seq(special, a, b), seq(special, b, a)] and len(seqs[0]) == n_ctx
    _, out, _ = prepare(run, gpt_bin, tok, workdir, jsonl([{"text": long_a, "label": 1}]), "classify",
                        "--n-ctx", n_ctx, "--truncate", "--num-classes", "2")
    (seqs, _), = read_task(out)[0]["train"]
    assert seqs == [seq(special, encode(long_a)[:n_ctx - 2])]


def test_csv_with_and_without_header(run, gpt_bin, tok, workdir, special, encode):
    multi = 'the whale said "hello"\nand swam on'
    rows = [(1, "a good film "), (0, multi), (1, "the sea")]
    expect = [([seq(special, encode(t.strip()))], y) for y, t in rows]

    def quoted(t):
        return '"' + t.replace('"', '""') + '"'
    # header, other column order, an extra column, CRLF line ends and a byte order mark
    body = "id,text,label\r\n" + "".join(f"{i},{quoted(t)},{y}\r\n" for i, (y, t) in enumerate(rows))
    _, out, _ = prepare(run, gpt_bin, tok, workdir, b"\xef\xbb\xbf" + body.encode(), "classify", name="h.csv")
    assert read_task(out)[0]["train"] == expect
    # no header: label, then text; LF; a field unquoted where it can be
    body = "".join(f"{y},{quoted(t) if t == multi else t}\n" for y, t in rows)
    _, out, _ = prepare(run, gpt_bin, tok, workdir, body, "classify", name="p.csv")
    assert read_task(out)[0]["train"] == expect
    # choice: the answers are the choice* columns with a header, every column after the context without
    _, out, _ = prepare(run, gpt_bin, tok, workdir,
                        "context,choice1,other,choice2,choice3,label\nthe captain,the sea,x,a film,a ship,2\n",
                        "choice", name="c.csv")
    ctx = encode("the captain")
    assert read_task(out)[0]["train"] == [([seq(special, ctx, encode(a)) for a in ("the sea", "a film", "a ship")], 2)]
    _, out, _ = prepare(run, gpt_bin, tok, workdir, "1,the captain,the sea,a film\n", "choice", name="c2.txt")
    assert read_task(out)[0]["train"] == [([seq(special, ctx, encode(a)) for a in ("the sea", "a film")], 1)]


def test_real_csv_pang_lee(run, gpt_bin, tok, workdir, special, encode):
    assert PANG_LEE.is_file(), f"{PANG_LEE} is missing: install python3-pattern (make deb-deps)"
    out = workdir / "pl.h5"
    proc = run([gpt_bin, "prepare-task", "--tokenizer", tok, "--task", "classify", "--labels", "-1,1",
                "--out", out, PANG_LEE], check=True)
    data, attrs, names = read_task(out)
    assert len(data["train"]) == 4000 and data["val"] == [] and names == ["-1", "1"]
    labels = [y for _, y in data["train"]]
    assert labels.count(0) == 2000 and labels.count(1) == 2000 and labels[0] == 1 and labels[-1] == 0
    first = PANG_LEE.read_text(encoding="utf-8-sig").split('"1","', 1)[1].split('"\n', 1)[0].replace('""', '"')
    assert data["train"][0][0] == [seq(special, encode(first.strip()))]
    assert "4000 records" in proc.stdout and "-1: 2000, 1: 2000" in proc.stdout


def test_n_ctx_defaults_to_the_models(run, gpt_bin, tok, workdir):
    model = workdir / "m.h5"
    run([gpt_bin, "init", "--model", "tiny", "--out", model], check=True)
    with h5py.File(model, "a") as m, h5py.File(tok, "r") as t:
        t.copy("tokenizer", m)
    recs = jsonl([{"text": " ".join(["the whale swam under the ship"] * 20), "label": 1},
                  {"text": "the sea", "label": 0}])
    proc, _, src = prepare(run, gpt_bin, model, workdir, recs, "classify", check=False)
    assert proc.returncode == 1 and f"{src}:1: " in proc.stderr and "more than n_ctx 64" in proc.stderr
    proc, _, _ = prepare(run, gpt_bin, model, workdir, recs, "classify", "--n-ctx", "100", check=False)
    assert proc.returncode == 2 and "more than the model's n_ctx 64" in proc.stderr
    _, out, _ = prepare(run, gpt_bin, model, workdir, recs, "classify", "--truncate")
    assert read_task(out)[1]["n_ctx"] == 64


BAD = [  # (content, file name, options, expected message parts with {src} for the input's path, exit status)
    ('{"text": "a", "label": 0}\n', "f.jsonl", ["--task", "summarize"],
     ["--task: expected classify, entail, similar or choice, got 'summarize'"], 2),
    ('{"text": "a", "label": 0}\n{"text": "b", "label": 3}\n', "f.jsonl", ["--num-classes", "2"],
     ["{src}:2: label 3 is outside the 2 classes [0, 2)"], 1),
    ('{"text": "a", "label": "meh"}\n', "f.jsonl", ["--labels", "neg,pos"],
     ["{src}:1: label 'meh' is not one of the label names (neg,pos)"], 1),
    ('{"text": "a", "label": "pos"}\n', "f.jsonl", [], ["{src}:1: label 'pos' is not a number"], 1),
    ('{"text": "a", "label": -1}\n', "f.jsonl", [], ["{src}:1: label -1 is negative"], 1),
    ('{"text": "a", "label": 1}\n\n{"text": "b"}\n', "f.jsonl", [], ['{src}:3: field "label" is missing'], 1),
    ('{"text": "a", "label": [1]}\n', "f.jsonl", [], ['{src}:1: field "label" is not a number or a string'], 1),
    ('{"premise": "a", "label": 1}\n', "f.jsonl", ["--task", "entail"], ['{src}:1: field "hypothesis" is missing'], 1),
    ('{"text": 5, "label": 1}\n', "f.jsonl", [], ['{src}:1: field "text" is not a string'], 1),
    ('{"text": "  \\n ", "label": 1}\n', "f.jsonl", [], ['{src}:1: field "text" is empty'], 1),
    ('{"context": "a", "choices": ["b"], "label": 0}\n', "f.jsonl", ["--task", "choice"],
     ['{src}:1: field "choices" is not an array of at least 2 strings'], 1),
    ('{"context": "a", "choices": ["b", 2], "label": 0}\n', "f.jsonl", ["--task", "choice"],
     ['{src}:1: field "choices"[1] is not a string'], 1),
    ('{"text": "a", "label": 1}\n{"text": "b", "label": 1\n', "f.jsonl", [], ["{src}:2: not valid JSON"], 1),
    ('{"text": "' + "the whale swam " * 10 + '", "label": 1}\n', "f.jsonl", ["--n-ctx", "8"],
     ["{src}:1: the record is", "tokens with its start and extract tokens, more than n_ctx 8; "
      "pass --truncate to cut the longest piece"], 1),
    ("1,a\n0,b,c\n", "f.csv", [], ["{src}:2: expected 2 columns (label, text), found 3"], 1),
    ('1,"a\n0,b\n', "f.csv", [], ["{src}:1: a quoted field is not closed"], 1),
    ("label,txt\n1,a\n", "f.csv", [], ['{src}:1: the header has no column "text"'], 1),
    ("label,text\n1,a\n0\n", "f.csv", [], ['{src}:3: field "text" is missing (the row has 1 columns)'], 1),
    ('{"text": "a", "label": 0}\n', "f.jsonl", ["--val-fraction", "1"], ["--val-fraction: expected a number in [0, 1)"], 2),
    ('{"text": "a", "label": 0}\n', "f.jsonl", ["--val-fraction", "-0.1"], ["--val-fraction"], 2),
    ('{"text": "a", "label": 0}\n{"text": "b", "label": 0}\n', "f.jsonl", [], ["the labels reach only 0"], 1),
    ("", "f.jsonl", [], ["{src}: empty"], 1),
]


@pytest.mark.parametrize("content,name,opts,expected,status", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_is_named(run, gpt_bin, tok, workdir, content, name, opts, expected, status):
    src = workdir / name
    src.write_text(content, encoding="utf-8")
    out = workdir / "task.h5"
    task = [] if "--task" in opts else ["--task", "classify"]
    proc = run([gpt_bin, "prepare-task", "--tokenizer", tok, *task, "--out", out, *opts, src])
    assert proc.returncode == status, proc.stderr
    for part in expected:
        assert part.format(src=src) in proc.stderr, proc.stderr
    assert proc.stderr.startswith("gpt prepare-task: ") and proc.stderr.count("\n") == 1
    assert not out.exists() and not Path(str(out) + ".tmp").exists()


def test_tokenizer_without_special_tokens(run, gpt_bin, workdir):
    ranks = workdir / "bytes.tiktoken"
    ranks.write_text("".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256)))
    plain = workdir / "plain.h5"
    run([gpt_bin, "tokenizer", "import", "--out", plain, "--tiktoken", ranks], check=True)
    proc, _, _ = prepare(run, gpt_bin, plain, workdir, '{"text": "a", "label": 1}\n', "classify", check=False)
    assert proc.returncode == 1 and f"{plain} has no <|start|> token" in proc.stderr


@pytest.fixture
def task_file(run, gpt_bin, tok, workdir):
    recs = [{"text": f"record {i}: " + "the whale swam under the ship " * 30, "label": i % 3} for i in range(300)]
    _, out, _ = prepare(run, gpt_bin, tok, workdir, jsonl(recs), "classify", "--val-fraction", "0.1")
    return out


def test_inspect_describes_a_task_file(run, gpt_bin, task_file):
    proc = run([gpt_bin, "inspect", task_file], check=True)
    assert f"{task_file}: task file, classify; labels are classes (3)" in proc.stdout
    assert "train  270 examples, 270 sequences" in proc.stdout and "val    30 examples" in proc.stdout
    assert "first example (label 0): [<|start|>]" in proc.stdout


def rewrite(path, name, change):
    with h5py.File(path, "a") as f:
        v = f[name][()]
        del f[name]
        f.create_dataset(name, data=change(v))


@pytest.mark.parametrize("damage,message", [
    ("flip", "cannot read /train/tokens (wrong type or corrupted)"),
    ("truncate", "cannot open"),
    ("offsets", "/train/seq_offsets: sequence 0 has"),
    ("example", "/val/example_offsets: example 0 has 2 sequences, wrong for classify"),
    ("label", "/train/labels[4] = 3 is outside [0, 3)"),
    ("token", "/val/tokens[5] = 9999 is outside the vocabulary"),
    ("missing", "dataset /val/labels is missing"),
])
def test_damaged_task_file_is_rejected(run, gpt_bin, task_file, damage, message):
    if damage == "flip":
        with h5py.File(task_file, "r") as f:
            info = f["train/tokens"].id.get_chunk_info(0)
        with open(task_file, "r+b") as fh:
            fh.seek(info.byte_offset + info.size // 2)
            b = fh.read(1)
            fh.seek(info.byte_offset + info.size // 2)
            fh.write(bytes([b[0] ^ 0x40]))
    elif damage == "truncate":
        data = task_file.read_bytes()
        task_file.write_bytes(data[:len(data) // 2])
    elif damage == "offsets":
        rewrite(task_file, "train/seq_offsets", lambda v: np.concatenate([[0, 1], v[1:]]))
    elif damage == "example":
        rewrite(task_file, "val/example_offsets", lambda v: np.where(np.arange(len(v)) == 1, 2, v))
    elif damage == "label":
        rewrite(task_file, "train/labels", lambda v: np.where(np.arange(len(v)) == 4, 3, v).astype(np.int32))
    elif damage == "token":
        rewrite(task_file, "val/tokens", lambda v: np.where(np.arange(len(v)) == 5, 9999, v).astype(np.int32))
    else:
        with h5py.File(task_file, "a") as f:
            del f["val/labels"]
    proc = run([gpt_bin, "inspect", task_file])
    assert proc.returncode == 1 and str(task_file) in proc.stderr and message in proc.stderr, proc.stderr
