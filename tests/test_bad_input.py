"""Bad input of every kind is a clear error, never undefined behaviour, garbage or a hang
(issue 12):

  * gpt predict on records without labels (NAN labels are never converted to int);
  * every command that prints JSON accepts --json and prints valid JSON (null for a
    number that is not finite);
  * a model, checkpoint, fine-tuned model or adapters holding a NaN or an infinity is
    refused naming the file and the tensor, and never written; gpt inspect still
    describes such a file;
  * a bad value on the command line is a usage error (exit 2) naming the option, in every
    command taking it; --warmup longer than --steps is a warning;
  * a UTF-8 byte order mark is skipped by every text reader; a FIFO is refused, not waited
    on; a corpus with damaged metadata is reported as corrupted, not as another kind of file;
  * a message naming a path of thousands of characters shortens it and keeps its cause.

    make && /usr/bin/python3 -m pytest -q tests/test_bad_input.py

The unlabelled-records test fails on the old code only where float-to-int conversions are
checked: build with SANFLAGS="-fsanitize=address,undefined,float-cast-overflow
-fno-sanitize-recover=all" (GCC's -fsanitize=undefined leaves that check out)."""

import json
import os
import random

import h5py
import numpy as np
import pytest

from conftest import sh

WORDS = "the whale ship sea captain ahab white boat harpoon crew deck storm wind moby dick".split()
USAGE = 2  # docs/operations.md: a bad command line


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_jsonl(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def poke(path, dataset, value, index=(0, 0)):
    """Writes value into one element of a dataset of an HDF5 file (a copy, usually)."""
    with h5py.File(path, "r+") as f:
        d = f[dataset]
        d[index[: d.ndim]] = value


def copy(src, dst):
    dst.write_bytes(src.read_bytes())
    return dst


def fails(proc, *needles, code=None):
    """proc failed (with exit `code` when given) and stderr names every needle."""
    assert proc.returncode != 0, f"expected a failure, got exit 0\nstdout:\n{proc.stdout[-2000:]}"
    if code is not None:
        assert proc.returncode == code, f"exit {proc.returncode}, expected {code}\n{proc.stderr}"
    for n in needles:
        assert str(n) in proc.stderr, f"expected {n!r} in stderr:\n{proc.stderr}"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def env(gpt_bin, tmp_path_factory):
    """tok.h5, corpus.h5, model.h5 (init), a checkpoint, a fine-tuned classifier (full and
    LoRA) with its records."""
    d = tmp_path_factory.mktemp("bad_input")
    rng = random.Random(12)
    text = d / "text.txt"
    text.write_text("\n\n".join(sentence(rng, 40) + "." for _ in range(60)))
    tok, corpus, model = d / "tok.h5", d / "corpus.h5", d / "model.h5"
    sh([gpt_bin, "tokenizer", "train", "--merges", 60, "--out", tok, text])
    sh([gpt_bin, "prepare", "--tokenizer", tok, "--out", corpus, "--split-on-blank-lines",
        "--val-fraction", 0.2, text])
    with h5py.File(tok, "r") as f:
        vocab = int(f["tokenizer"].attrs["vocab_size"])
    shape = ["--model", "tiny", "--vocab", vocab, "--n-ctx", 32, "--n-layer", 2, "--n-head", 2, "--n-embd", 32]
    sh([gpt_bin, "init", *shape, "--out", model])
    run = d / "run"
    sh([gpt_bin, "train", "--data", corpus, *shape, "--out", run, "--steps", 1, "--batch", 2,
        "--eval-every", 0, "--ckpt-every", 1])
    recs = [{"text": sentence(rng, 5), "label": rng.randrange(3)} for _ in range(12)]
    records = write_jsonl(d / "cls.jsonl", recs)
    task = d / "cls.h5"
    sh([gpt_bin, "prepare-task", "--tokenizer", tok, "--task", "classify", "--n-ctx", 32, "--out", task, records])
    for name, extra in (("ft", []), ("lora", ["--lora-rank", 2])):
        sh([gpt_bin, "finetune", "--init", model, "--data", task, "--out", d / name, "--epochs", 1, "--batch", 4,
            "--eval-every", 0, *extra])
    return {"dir": d, "tok": tok, "corpus": corpus, "model": model, "ckpt": run / "ckpt_1.h5",
            "train_model": run / "model.h5", "task": task, "records": records, "recs": recs,
            "ft": d / "ft" / "model.h5", "lora": d / "lora" / "model.h5", "shape": shape}


# --------------------------------------------------------------------------- labels

def test_predict_on_records_without_labels(env, gpt_bin):
    """Labels are optional for predict: records without one, alone or among labelled ones
    in the same pass, get a prediction (their NAN label adds no loss)."""
    d, recs = env["dir"], env["recs"]
    # a pass with a labelled first example computes the loss of all of them
    mixed = [write_jsonl(d / f"mixed{k}.jsonl", [r if i % 2 == k else {"text": r["text"]} for i, r in enumerate(recs)])
             for k in (0, 1)]
    bare = write_jsonl(d / "bare.jsonl", [{"text": r["text"]} for r in recs])
    for model in (env["ft"], env["lora"]):
        for data in (*mixed, bare, env["records"]):
            pred = sh([gpt_bin, "predict", "--model", model, "--data", data]).stdout.split()
            assert len(pred) == len(recs) and set(pred) <= {"0", "1", "2"}, (model, data, pred)


# --------------------------------------------------------------------------- JSON

def one_json(proc):
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def test_every_command_printing_json_accepts_json(env, gpt_bin):
    m = one_json(sh([gpt_bin, "eval-task", "--model", env["ft"], "--data", env["task"], "--json"]))
    assert m["examples"] == len(env["recs"]) and 0 <= m["accuracy"] <= 1
    assert one_json(sh([gpt_bin, "eval-task", "--model", env["ft"], "--data", env["task"]])) == m
    ev = one_json(sh([gpt_bin, "eval", "--model", env["model"], "--data", env["corpus"], "--json"]))
    assert ev["loss"] > 0 and ev["perplexity"] == pytest.approx(np.exp(ev["loss"]), rel=1e-6)
    sc = one_json(sh([gpt_bin, "score", "--model", env["train_model"], "--text", "the whale", "--json"]))
    assert sc["tokens"] > 0 and sc["log_likelihood"] < 0
    bench = one_json(sh([gpt_bin, "bench", *env["shape"], "--steps", 1, "--json"]))
    assert bench["tokens_per_s"] > 0
    fails(sh([gpt_bin, "predict", "--model", env["ft"], "--data", env["records"], "--json"], check=False),
          "--json", code=USAGE)


def test_json_is_valid_when_a_number_overflows(env, gpt_bin):
    """A finite model so confident and so wrong that exp(loss) overflows: the perplexity is
    null, not inf (which is not JSON)."""
    wild = copy(env["train_model"], env["dir"] / "wild.h5")
    with h5py.File(wild, "r+") as f:
        f["model/wte"][...] = f["model/wte"][()] * 1e5
    ev = one_json(sh([gpt_bin, "eval", "--model", wild, "--data", env["corpus"], "--json"]))
    sc = one_json(sh([gpt_bin, "score", "--model", wild, "--text", "the whale ship", "--json"]))
    for r in (ev, sc):
        assert r["perplexity"] is None, r
    assert ev["loss"] > 710 and sc["log_likelihood"] < 0


# --------------------------------------------------------------------------- non-finite tensors

COMMANDS = {
    "eval": lambda env, m: ["eval", "--model", m, "--data", env["corpus"], "--json"],
    "score": lambda env, m: ["score", "--model", m, "--tokenizer", env["tok"], "--text", "the whale", "--json"],
    "generate": lambda env, m: ["generate", "--model", m, "--tokenizer", env["tok"], "--prompt", "the",
                                "--max-new-tokens", 5],
    "prune": lambda env, m: ["prune", "--model", m, "--sparsity", 0.5, "--out", env["dir"] / "pruned.h5"],
}


@pytest.mark.parametrize("source,tensor", [("model", "/model/h.1.mlp.c_fc.weight"), ("ckpt", "/model/wte")])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_model_is_refused_naming_the_tensor(env, gpt_bin, source, tensor, value):
    bad = copy(env[source], env["dir"] / f"nonfinite_{source}.h5")
    poke(bad, tensor, value)
    for name, args in COMMANDS.items():
        proc = sh([gpt_bin, *args(env, bad)], check=False)
        fails(proc, bad, tensor, "NaN or an infinity", code=1)
        assert proc.stdout == "", f"{name} printed {proc.stdout!r}"
    assert not (env["dir"] / "pruned.h5").exists()
    fails(sh([gpt_bin, "finetune", "--init", bad, "--data", env["task"], "--out", env["dir"] / "ft_bad"],
             check=False), bad, tensor)
    # inspect is how the file is diagnosed: it still describes it
    proc = sh([gpt_bin, "inspect", bad], check=False)
    assert proc.returncode == 1 and "non-finite" in proc.stderr, proc.stderr
    assert "NON-FINITE VALUES" in proc.stdout and tensor.rsplit("/", 1)[1] in proc.stdout


@pytest.mark.parametrize("source,tensor", [("ft", "/head/bias"), ("ft", "/model/wpe"),
                                           ("lora", "/lora/h.0.attn.c_attn.lora_A"), ("lora", "/head/weight")])
def test_non_finite_fine_tuned_model_is_refused(env, gpt_bin, source, tensor):
    bad = copy(env[source], env["dir"] / f"nonfinite_{source}.h5")
    poke(bad, tensor, np.nan)
    for cmd in ("predict", "eval-task"):
        proc = sh([gpt_bin, cmd, "--model", bad, "--data", env["records"]], check=False)
        fails(proc, bad, tensor, "NaN or an infinity", code=1)
        assert proc.stdout == ""
    proc = sh([gpt_bin, "inspect", bad], check=False)
    assert proc.returncode == 1 and "non-finite" in proc.stderr and "fine-tuned model" in proc.stdout


def test_base_of_adapters_with_non_finite_weights(env, gpt_bin):
    base = copy(env["model"], env["dir"] / "nan_base.h5")
    poke(base, "/model/h.0.ln_1.weight", np.nan, (3,))
    proc = sh([gpt_bin, "predict", "--model", env["lora"], "--base", base, "--data", env["records"]], check=False)
    fails(proc, base, "/model/h.0.ln_1.weight", code=1)


def test_a_non_finite_merge_is_not_written(env, gpt_bin):
    """Finite adapters whose product overflows: merge-lora refuses to write the result."""
    big = copy(env["lora"], env["dir"] / "big_lora.h5")
    with h5py.File(big, "r+") as f:
        for name in ("lora_A", "lora_B"):
            d = f[f"lora/h.0.attn.c_attn.{name}"]
            d[...] = np.full(d.shape, 3e38, np.float32)
    out = env["dir"] / "merged.h5"
    proc = sh([gpt_bin, "merge-lora", "--model", big, "--out", out], check=False)
    fails(proc, out, "not written", "/model/h.0.attn.c_attn.weight", code=1)
    assert not out.exists() and not (env["dir"] / "merged.h5.tmp").exists()


# --------------------------------------------------------------------------- command line

# Paths that do not exist: a usage error comes before any file is opened or written.
NOWHERE = "/nonexistent-gpt-test-dir"
TRAIN = ["train", "--data", f"{NOWHERE}/corpus.h5", "--out", f"{NOWHERE}/run", "--steps", 5, "--model", "tiny"]
INIT = ["init", "--out", f"{NOWHERE}/m.h5", "--model", "tiny"]
BENCH = ["bench", "--steps", 1, "--model", "tiny"]
FINETUNE = ["finetune", "--init", f"{NOWHERE}/m.h5", "--data", f"{NOWHERE}/t.h5", "--out", f"{NOWHERE}/run"]


@pytest.mark.parametrize("cmd", [TRAIN, INIT, BENCH], ids=["train", "init", "bench"])
@pytest.mark.parametrize("args,option", [
    (["--n-ctx", 0], "--n-ctx"), (["--dropout", 1.5], "--dropout"), (["--n-head", 3], "--n-head"),
    (["--ln", "middle"], "--ln"), (["--n-embd", 1 << 30], "--n-embd"), (["--vocab", "many"], "--vocab"),
])
def test_bad_model_option_is_a_usage_error(gpt_bin, cmd, args, option):
    proc = sh([gpt_bin, *cmd, *args], check=False)
    fails(proc, f"gpt {cmd[0]}: {option}", code=USAGE)


@pytest.mark.parametrize("cmd", [TRAIN, FINETUNE], ids=["train", "finetune"])
@pytest.mark.parametrize("args,option", [
    (["--lr", -1], "--lr"), (["--lr", 0], "--lr"), (["--weight-decay", -0.1], "--weight-decay"),
    (["--clip", -1], "--clip"), (["--time-limit", "12:99"], "--time-limit"), (["--time-limit", "1:60:00"], "--time-limit"),
    (["--time-limit", "1-24"], "--time-limit"), (["--time-limit", "2-03:04:60"], "--time-limit"),
])
def test_bad_optimizer_or_run_option_is_a_usage_error(gpt_bin, cmd, args, option):
    proc = sh([gpt_bin, *cmd, *args], check=False)
    fails(proc, f"gpt {cmd[0]}: {option}", "expected", code=USAGE)


def test_other_usage_errors_of_train_and_finetune(gpt_bin):
    fails(sh([gpt_bin, *TRAIN, "--min-lr", 1e-3], check=False), "--min-lr", code=USAGE)  # above --lr
    fails(sh([gpt_bin, *TRAIN, "--bucket-mb", 1e30], check=False), "--bucket-mb", code=USAGE)
    fails(sh([gpt_bin, *FINETUNE, "--lora-rank", 2, "--lora-targets", "ffn"], check=False), "--lora-targets",
          code=USAGE)


@pytest.mark.parametrize("limit", ["90", "61:00", "30:00:00", "1-23", "1-23:59:59", "0:59", "UNLIMITED"])
def test_valid_time_limits_are_accepted(env, gpt_bin, limit):
    out = env["dir"] / "tl"
    proc = sh([gpt_bin, "train", "--data", env["corpus"], *env["shape"], "--out", out, "--steps", 1, "--batch", 2,
               "--eval-every", 0, "--overwrite", "--time-limit", limit])
    assert "time-limit" not in proc.stderr


@pytest.mark.parametrize("ranks", [1, 2])
def test_warmup_longer_than_the_run_is_a_warning(env, gpt_bin, ranks):
    proc = sh([gpt_bin, "train", "--data", env["corpus"], *env["shape"], "--out", env["dir"] / f"wu{ranks}",
               "--steps", 2, "--batch", 1, "--eval-every", 0, "--warmup", 50], ranks=ranks)
    assert proc.stderr.count("warning: --warmup 50 is longer than --steps 2") == 1, proc.stderr
    assert (env["dir"] / f"wu{ranks}" / "model.h5").exists()


# --------------------------------------------------------------------------- inputs

BOM = b"\xef\xbb\xbf"


def tokens_of(path):
    with h5py.File(path, "r") as f:
        return f["train/tokens"][()].tolist()


@pytest.mark.parametrize("name,content,extra", [
    ("docs.jsonl", b'{"text": "the whale and the ship"}\n{"text": "a storm"}\n', []),
    ("doc.txt", b"the whale and the ship\n", []),
    ("paras.txt", b"the whale\n\nthe ship\n", ["--split-on-blank-lines"]),
])
def test_byte_order_mark_is_skipped_by_prepare(env, gpt_bin, name, content, extra):
    d = env["dir"]
    plain, marked = d / f"plain_{name}", d / f"marked_{name}"
    plain.write_bytes(content)
    marked.write_bytes(BOM + content)
    outs = []
    for src in (plain, marked):
        out = d / f"{src.stem}.h5"
        sh([gpt_bin, "prepare", "--tokenizer", env["tok"], "--out", out, "--val-fraction", 0, *extra, src])
        outs.append(tokens_of(out))
    assert outs[0] == outs[1]


def test_byte_order_mark_alone_is_an_empty_file(env, gpt_bin):
    src = env["dir"] / "only_bom.txt"
    src.write_bytes(BOM)
    fails(sh([gpt_bin, "prepare", "--tokenizer", env["tok"], "--out", env["dir"] / "x.h5", src], check=False),
          f"{src}: empty file")


def test_byte_order_mark_offsets_count_in_the_file(env, gpt_bin):
    src = env["dir"] / "bom_nul.txt"
    src.write_bytes(BOM + b"ok\x00")
    fails(sh([gpt_bin, "prepare", "--tokenizer", env["tok"], "--out", env["dir"] / "x.h5", src], check=False),
          f"{src}: NUL byte at offset 5")


@pytest.fixture
def fifo(workdir):
    path = workdir / "fifo.h5"
    os.mkfifo(path)
    return path


def test_fifo_is_refused_not_waited_on(env, gpt_bin, fifo):
    """No writer ever opens the FIFO: a command that opened it would block forever (the
    timeout fails the test as a hang)."""
    commands = [
        ["inspect", fifo],
        ["eval", "--model", fifo, "--data", env["corpus"]],
        ["eval", "--model", env["model"], "--data", fifo],
        ["generate", "--model", fifo, "--prompt", "x"],
        ["predict", "--model", fifo, "--data", env["records"]],
        ["prepare", "--tokenizer", fifo, "--out", env["dir"] / "x.h5", env["records"]],
        ["prepare", "--tokenizer", env["tok"], "--out", env["dir"] / "x.h5", fifo],
        ["tokenize", "--tokenizer", fifo, env["records"]],
    ]
    for args in commands:
        fails(sh([gpt_bin, *args], check=False, timeout=20), fifo, "not a regular file", code=1)


def test_text_from_a_pipe_still_reads(env, gpt_bin, fifo):
    """Text inputs other than gpt prepare's (mapped) read a FIFO with a writer, as they read
    standard input: only HDF5 files must be regular."""
    import threading
    lines = "".join(json.dumps({"text": r["text"]}) + "\n" for r in env["recs"])
    writer = threading.Thread(target=fifo.write_text, args=(lines,), daemon=True)
    writer.start()
    pred = sh([gpt_bin, "predict", "--model", env["ft"], "--data", fifo], timeout=20).stdout.split()
    writer.join(timeout=5)
    assert len(pred) == len(env["recs"])


def damaged_root(src, dst):
    """A copy of src with one byte of its root group's object header flipped (its checksum
    fails: a corpus uses HDF5's 1.8 format)."""
    with h5py.File(src, "r") as f:
        addr = h5py.h5o.get_info(f.id).addr
    raw = bytearray(src.read_bytes())
    assert raw[addr:addr + 4] == b"OHDR"
    raw[addr + 20] ^= 0xFF
    dst.write_bytes(bytes(raw))
    return dst


def test_corpus_with_damaged_metadata_is_corrupted_not_something_else(env, gpt_bin):
    bad = damaged_root(env["corpus"], env["dir"] / "damaged.h5")
    shape = env["shape"]
    for args in (["inspect", bad], ["eval", "--model", env["model"], "--data", bad],
                 ["train", "--data", bad, *shape, "--out", env["dir"] / "dmg", "--steps", 1],
                 ["prepare", "--tokenizer", bad, "--out", env["dir"] / "x.h5", env["records"]]):
        proc = sh([gpt_bin, *args], check=False)
        fails(proc, bad, "corrupted", "checksum", code=1)
        for wrong in ("not a corpus", "not a model", "no /model", "no /tokenizer"):
            assert wrong not in proc.stderr, proc.stderr


def test_another_kind_of_file_names_its_format(env, gpt_bin):
    proc = sh([gpt_bin, "eval", "--model", env["model"], "--data", env["model"]], check=False)
    fails(proc, f"{env['model']}: not a corpus", "'gpt-model'", code=1)
    proc = sh([gpt_bin, "eval", "--model", env["model"], "--data", env["task"]], check=False)
    fails(proc, f"{env['task']}: not a corpus", "'gpt-task'", code=1)
    proc = sh([gpt_bin, "predict", "--model", env["model"], "--data", env["records"]], check=False)
    fails(proc, f"{env['model']}: not a fine-tuned model", "'gpt-model'", code=1)
    proc = sh([gpt_bin, "finetune", "--init", env["model"], "--data", env["ft"], "--out", env["dir"] / "k"],
              check=False)
    fails(proc, env["ft"])


def test_an_output_onto_an_input_is_refused_before_any_work(gpt_bin, tiny_corpus, workdir):
    """Every output compared with every input by device and inode: exit 2 naming it, the
    input untouched (docs/operations.md)."""
    text = workdir / "t.txt"
    text.write_text("Call me Ishmael. Some years ago, never mind how long precisely.\n" * 20)
    alias = workdir / "alias.txt"
    alias.symlink_to(text)
    tok, model, hf = tiny_corpus["tokenizer"], workdir / "m.h5", workdir / "hf"
    sh([gpt_bin, "init", "--model", "tiny", "--vocab", 460, "--out", model])
    sh([gpt_bin, "export", "--model", model, "--tokenizer", tok, "--format", "hf", "--out", hf])
    records = workdir / "quiz.jsonl"
    write_jsonl(records, [{"context": "Call me", "endings": ["Ishmael", "Ahab"], "label": 0}])
    cases = [
        (["prepare", "--tokenizer", tok, "--out", alias, text], "--out", alias, text),
        (["tokenizer", "train", "--merges", 10, "--out", text, text], "--out", text, text),
        (["eval-choice", "--model", model, "--tokenizer", tok, "--data", records, "--predictions", records],
         "--predictions", records, records),
        (["eval-choice", "--model", model, "--tokenizer", tok, "--data", records, "--predictions", model],
         "--predictions", model, model),
        (["export", "--model", model, "--tokenizer", tok, "--format", "gguf", "--out", model], "--out", model, model),
        (["import", "--hf", hf, "--out", hf / "model.safetensors"], "--out", hf / "model.safetensors",
         hf / "model.safetensors"),
    ]
    for args, opt, out, victim in cases:
        before = victim.read_bytes()
        proc = sh([gpt_bin, *args], check=False)
        assert proc.returncode == USAGE, (args, proc.stderr)
        assert f"{opt} {out} is also an input" in proc.stderr, (args, proc.stderr)
        assert victim.read_bytes() == before, args


def test_a_long_path_keeps_its_cause(gpt_bin, workdir):
    """A message naming a path of about 4,000 characters (nested directories: a name has at
    most 255) shortens the path in its middle and keeps its start, its end and the cause."""
    deep = workdir.joinpath(*["d" * 200] * ((3990 - len(str(workdir)) - 6) // 201))
    deep.mkdir(parents=True)
    data = deep / "x.h5"
    data.write_text("not HDF5\n")
    assert len(str(data)) > 3800
    proc = sh([gpt_bin, "train", "--data", data, "--model", "tiny", "--out", workdir / "run", "--steps", 1],
              check=False)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and line.endswith("d/x.h5: cannot open: not an HDF5 file"), line
    assert line.startswith(f"gpt train: {str(data)[:50]}") and "..." in line and len(line) < 1024, line
