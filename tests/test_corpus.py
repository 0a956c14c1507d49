"""gpt prepare: the HDF5 corpus (docs/formats.md) from text, paragraphs and JSON Lines,
identical for any number of MPI ranks, with clear errors for bad input."""

import gzip
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import MPI_ENV, kill_group, mpi_environ, run_cmd


def words(rng, n):
    vocab = ["whale", "sea", "ship", "captain", "the", "a", "of", "and", "harpoon", "Ishmael", "ocean",
             "café", "naïve", "日本語", "Ωμέγα", "emoji🐋", "42", "1851", "—", "!", "?", ","]
    return " ".join(rng.choice(vocab, n))


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """A few text files of paragraphs, deterministic."""
    d = tmp_path_factory.mktemp("texts")
    rng = np.random.default_rng(5)
    paths = []
    for i in range(3):
        paras = ["\n".join(words(rng, rng.integers(3, 40)) for _ in range(rng.integers(1, 4)))
                 for _ in range(rng.integers(20, 60))]
        p = d / f"book{i}.txt"
        p.write_text("\n\n".join(paras) + "\n", encoding="utf-8")
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def tokenizer(gpt_bin, texts, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tok.h5"
    run_cmd([gpt_bin, "tokenizer", "train", "--merges", "300", "--out", out, *texts], check=True)
    return out


def prepare(run, gpt_bin, tokenizer, out, inputs, np_=1, extra=(), check=True):
    cmd = [gpt_bin, "prepare", "--tokenizer", tokenizer, "--out", out, *extra, *inputs]
    if np_ > 1:
        cmd = ["mpirun", "-np", np_, *cmd]
    return run(cmd, check=check, env=MPI_ENV, timeout=300)


def read_corpus(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in ("train/tokens", "train/doc_offsets", "val/tokens", "val/doc_offsets")}, dict(f.attrs)


def decode(run, gpt_bin, tokenizer, ids, workdir):
    p = workdir / "ids.txt"
    p.write_text(" ".join(map(str, ids)))
    return subprocess.run([gpt_bin, "detokenize", "--tokenizer", str(tokenizer), str(p)],
                          check=True, capture_output=True).stdout


@pytest.mark.parametrize("ranks", [2, 3])
def test_same_file_for_any_number_of_ranks(run, gpt_bin, tokenizer, texts, workdir, ranks):
    one, many = workdir / "one.h5", workdir / "many.h5"
    args = ["--split-on-blank-lines", "--val-fraction", "0.1"]
    prepare(run, gpt_bin, tokenizer, one, texts, 1, args)
    prepare(run, gpt_bin, tokenizer, many, texts, ranks, args)
    a, attrs_a = read_corpus(one)
    b, attrs_b = read_corpus(many)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    for k in ("train_tokens", "train_docs", "val_tokens", "val_docs", "vocab_size"):
        assert attrs_a[k] == attrs_b[k], k
    assert not (workdir / "many.h5.tmp").exists()


def test_schema_and_documents_round_trip(run, gpt_bin, tokenizer, texts, workdir):
    out = workdir / "c.h5"
    prepare(run, gpt_bin, tokenizer, out, texts, 2, ["--split-on-blank-lines", "--val-fraction", "0.25"])
    paragraphs = [p for t in texts for p in t.read_text(encoding="utf-8").rstrip("\n").split("\n\n")]
    with h5py.File(out, "r") as f:
        a = dict(f.attrs)
        assert a["format"] == "gpt-corpus" and a["eot_token"] == a["vocab_size"] - 4
        for split in ("train", "val"):
            t = f[f"{split}/tokens"]
            assert t.dtype == np.uint16 and t.fletcher32 and t.chunks is not None
            assert f[f"{split}/doc_offsets"].dtype == np.int64
        assert list(a["input_bytes"]) == [p.stat().st_size for p in texts]
        assert [str(x) for x in a["input_files"]] == [str(p) for p in texts]
        assert "tokenizer" in f and f["tokenizer"].attrs["vocab_size"] == a["vocab_size"]
        n = len(paragraphs)
        val_index = [g for g in range(n) if int((g + 1) * 0.25) > int(g * 0.25)]
        assert a["val_docs"] == len(val_index) and a["train_docs"] == n - len(val_index)
        # every document decodes back to its paragraph, in input order, ending in <|endoftext|>
        split_of = {g: "val" if g in set(val_index) else "train" for g in range(n)}
        seen = {"train": 0, "val": 0}
        for g, para in enumerate(paragraphs):
            s = split_of[g]
            off = f[f"{s}/doc_offsets"][seen[s]:seen[s] + 2]
            ids = f[f"{s}/tokens"][off[0]:off[1]]
            seen[s] += 1
            assert ids[-1] == a["eot_token"]
            if g % 7 == 0:  # decoding every document would be slow; a spread sample
                assert decode(run, gpt_bin, tokenizer, ids[:-1], workdir) == para.encode()
        assert f["train/doc_offsets"][-1] == len(f["train/tokens"]) == a["train_tokens"]


def test_jsonl_documents(run, gpt_bin, tokenizer, workdir):
    src = workdir / "docs.jsonl"
    recs = [{"text": f"document number {i} about the whale", "id": i} for i in range(50)]
    recs[3]["text"] = ""  # empty documents are skipped
    src.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n", encoding="utf-8")
    out = workdir / "j.h5"
    prepare(run, gpt_bin, tokenizer, out, [src], 2, ["--val-fraction", "0"])
    data, attrs = read_corpus(out)
    assert attrs["train_docs"] == 49 and attrs["val_docs"] == 0 and len(data["val/tokens"]) == 0
    first = data["train/tokens"][data["train/doc_offsets"][0]:data["train/doc_offsets"][1] - 1]
    assert decode(run, gpt_bin, tokenizer, first, workdir) == b"document number 0 about the whale"


def test_thousands_of_inputs_from_a_list(run, gpt_bin, tokenizer, workdir):
    """More paths than a command line holds, and an input_files attribute over 64 KiB
    (the limit of HDF5's original file format, which the corpus must not use)."""
    d = workdir / "many"
    d.mkdir()
    paths = []
    for i in range(5000):  # an attribute holds 16 bytes a path: over 64 KiB at 4096
        p = d / f"document_with_a_long_file_name_{i:05d}.txt"
        p.write_text(f"text number {i}\n")
        paths.append(p)
    listing = workdir / "inputs.txt"
    listing.write_text("\n".join(map(str, paths[1:])) + "\n")
    out = workdir / "c.h5"
    prepare(run, gpt_bin, tokenizer, out, [paths[0], "--input-list", listing], 2, ["--val-fraction", "0"])
    with h5py.File(out, "r") as f:
        assert f.attrs["train_docs"] == 5000
        assert [str(x) for x in f.attrs["input_files"]] == [str(p) for p in paths]
        ids = f["train/tokens"][f["train/doc_offsets"][4999]:-1]
    assert decode(run, gpt_bin, tokenizer, ids, workdir) == b"text number 4999\n"


def test_inspect_corpus_and_detects_corruption(run, gpt_bin, tokenizer, texts, workdir):
    out = workdir / "c.h5"
    prepare(run, gpt_bin, tokenizer, out, texts[:1])
    proc = run([gpt_bin, "inspect", out], check=True)
    assert "train:" in proc.stdout and "checksums verified" in proc.stdout and "first tokens" in proc.stdout
    with h5py.File(out, "r") as f:
        offset = f["train/tokens"].id.get_chunk_info(0).byte_offset
    raw = bytearray(out.read_bytes())
    raw[offset + 10] ^= 0xFF
    bad = workdir / "bad.h5"
    bad.write_bytes(bytes(raw))
    proc = run([gpt_bin, "inspect", bad])
    assert proc.returncode != 0 and "corrupted" in proc.stderr and str(bad) in proc.stderr


def test_corpus_checked_against_a_tokenizer(run, gpt_bin, tokenizer, texts, workdir):
    out = workdir / "c.h5"
    prepare(run, gpt_bin, tokenizer, out, texts[:1])
    run([gpt_bin, "inspect", out, "--tokenizer", tokenizer], check=True)
    run([gpt_bin, "inspect", out, "--tokenizer", out], check=True)  # a corpus carries its tokenizer
    other = workdir / "other.h5"
    run([gpt_bin, "tokenizer", "train", "--merges", 50, "--out", other, texts[0]], check=True)
    proc = run([gpt_bin, "inspect", out, "--tokenizer", other])
    assert proc.returncode != 0
    with h5py.File(tokenizer) as a, h5py.File(other) as b:
        sizes = a["tokenizer"].attrs["vocab_size"], b["tokenizer"].attrs["vocab_size"]
    assert f"{out} was tokenized with a different tokenizer than {other} (vocabulary {sizes[0]} vs {sizes[1]})" in proc.stderr


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("content,message", [
    (b"", "empty file"),
    (b"good text\n\n\x00\x01\x02binary\n", "NUL byte at offset 11"),
    (b"caf\xc3\xa9 ok\n\nbad \xff\xfe here\n", "invalid UTF-8 at byte offset 14"),
    (b"truncated \xe6\x97\n", "invalid UTF-8 at byte offset 10"),
])
def test_bad_text_is_named(run, gpt_bin, tokenizer, workdir, ranks, content, message):
    good = workdir / "good.txt"
    good.write_text("fine text\n" * 1000)
    bad = workdir / "bad.txt"
    bad.write_bytes(content)
    out = workdir / "c.h5"
    proc = prepare(run, gpt_bin, tokenizer, out, [good, bad], ranks, ["--split-on-blank-lines"], check=False)
    assert proc.returncode != 0
    assert f"{bad}: {message}" in proc.stderr
    assert proc.stderr.count("gpt prepare:") == 1  # printed once, by rank 0
    assert not out.exists() and not (workdir / "c.h5.tmp").exists()


def test_bad_inputs_and_tokenizer(run, gpt_bin, tokenizer, workdir):
    out = workdir / "c.h5"
    good = workdir / "good.txt"
    good.write_text("some text\n")
    proc = prepare(run, gpt_bin, tokenizer, out, [workdir / "missing.txt"], check=False)
    assert proc.returncode != 0 and "missing.txt: cannot open" in proc.stderr
    notok = workdir / "notok.h5"
    with h5py.File(notok, "w") as f:
        f["x"] = np.zeros(3)
    proc = prepare(run, gpt_bin, notok, out, [good], check=False)
    assert proc.returncode != 0 and f"{notok}: no /tokenizer group" in proc.stderr
    proc = prepare(run, gpt_bin, good, out, [good], check=False)
    assert proc.returncode != 0 and f"{good}: cannot open" in proc.stderr
    jl = workdir / "bad.jsonl"
    jl.write_text('{"text": "ok"}\n{"txt": "wrong field"}\n')
    proc = prepare(run, gpt_bin, tokenizer, out, [jl], check=False)
    assert proc.returncode != 0 and f"{jl}:2: expected an object with a string field \"text\"" in proc.stderr
    jl.write_text('{"text": "ok"}\n{"text": "unterminated\n')
    proc = prepare(run, gpt_bin, tokenizer, out, [jl], check=False)
    assert proc.returncode != 0 and f"{jl}:2: not valid JSON" in proc.stderr
    big = workdir / "big.txt"
    big.write_text("word " * 300000)  # 1.5 MB, one document
    proc = prepare(run, gpt_bin, tokenizer, out, [big], extra=["--max-doc-mb", "1"], check=False)
    assert proc.returncode != 0 and f"{big}: the document at byte 0 has 1500000 bytes" in proc.stderr
    assert not out.exists()
    hollow = workdir / "hollow.jsonl"
    hollow.write_text('{"text": ""}\n\n{"text": ""}\n')
    proc = prepare(run, gpt_bin, tokenizer, out, [hollow], extra=["--val-fraction", "0.9"], check=False)
    assert proc.returncode != 0 and "no documents: the inputs hold no text" in proc.stderr
    # an --out that is a directory is named before any tokenizing, not when the rename fails
    folder = workdir / "folder.h5"
    folder.mkdir()
    proc = prepare(run, gpt_bin, tokenizer, folder, [good], check=False)
    assert proc.returncode == 1 and f"{folder}: is a directory, not a name for the output file" in proc.stderr
    assert "tokenized" not in proc.stdout and not (workdir / "folder.h5.tmp").exists() and folder.is_dir()


# ---- bounded memory and compressed inputs ----

@pytest.fixture(scope="module")
def big_inputs(tmp_path_factory):
    """About 20 MB: paragraphs of text and JSON Lines records, deterministic."""
    d = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(17)
    text = d / "book.txt"
    with open(text, "w", encoding="utf-8") as f:
        for i in range(60000):
            f.write(words(rng, int(rng.integers(3, 60))) + ("\n\n" if i % 3 == 0 else "\n"))
    jl = d / "web.jsonl"
    with open(jl, "w", encoding="utf-8") as f:
        for i in range(40000):
            f.write(json.dumps({"text": words(rng, int(rng.integers(3, 60))), "id": i}) + "\n")
    assert text.stat().st_size + jl.stat().st_size > 18e6
    return [text, jl]


def rounds_of(proc):
    return int(proc.stdout.split(" round(s)")[0].rsplit(" ", 1)[1])


@pytest.fixture(scope="module")
def big_reference(gpt_bin, tokenizer, big_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    proc = prepare(run_cmd, gpt_bin, tokenizer, out, big_inputs, 1, ["--split-on-blank-lines", "--val-fraction", "0.05"])
    assert rounds_of(proc) == 1
    return read_corpus(out)[0]


def assert_same_corpus(a, b):
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("ranks", [1, 2, 3])
@pytest.mark.parametrize("above", [None, 6])
def test_bounded_memory_gives_the_same_corpus(run, gpt_bin, tokenizer, big_inputs, big_reference, workdir, ranks,
                                              above):
    """--max-memory far below the corpus: many rounds, the same datasets as one round.
    None: a bound below the program's own size (rounds of the least size); 6: 6 MB above
    it, where each rank's own measure of the program would size the rounds differently
    if the ranks did not agree on it."""
    bound = 1
    if above:
        tiny = workdir / "tiny.txt"
        tiny.write_text("a few words\n")
        probe = prepare(run, gpt_bin, tokenizer, workdir / "tiny.h5", [tiny], ranks)
        bound = int(float(probe.stdout.split("peak RSS ")[1].split(" MB")[0])) + above
    out = workdir / "rounds.h5"
    proc = prepare(run, gpt_bin, tokenizer, out, big_inputs, ranks,
                   ["--split-on-blank-lines", "--val-fraction", "0.05", "--max-memory", bound])
    assert rounds_of(proc) > (1 if above else 5)
    assert_same_corpus(big_reference, read_corpus(out)[0])


def test_compressed_inputs_give_the_same_corpus(run, gpt_bin, tokenizer, big_inputs, big_reference, workdir):
    text, jl = big_inputs
    gz = workdir / "book.txt.gz"
    # two gzip members, as `cat a.gz b.gz` makes: read as one stream, like zcat
    raw = text.read_bytes()
    half = raw.index(b"\n\n", len(raw) // 2) + 2
    gz.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    zst = workdir / "web.jsonl.zst"
    subprocess.run(["zstd", "-q", "-f", "-o", str(zst), str(jl)], check=True)
    hidden = workdir / "web.jsonl"  # zstd content under a plain name: told by content
    hidden.write_bytes(zst.read_bytes())
    for inputs, ranks in (([gz, zst], 1), ([gz, hidden], 2), ([text, zst], 3)):
        out = workdir / "z.h5"
        proc = prepare(run, gpt_bin, tokenizer, out, inputs, ranks,
                       ["--split-on-blank-lines", "--val-fraction", "0.05", "--max-memory", "2"])
        assert_same_corpus(big_reference, read_corpus(out)[0])
        with h5py.File(out) as f:
            assert list(f.attrs["input_bytes"]) == [p.stat().st_size for p in inputs]
        assert f"{(text.stat().st_size + jl.stat().st_size) / 1e6:.1f} MB of text" in proc.stdout


@pytest.mark.parametrize("mode", ["file", "paragraphs", "jsonl"])
def test_compressed_documents_split_as_plain_ones(run, gpt_bin, tokenizer, workdir, mode):
    """Edge cases of document splitting: a byte order mark, blank lines of spaces and
    \\r, no final newline, empty JSON lines."""
    if mode == "jsonl":
        content = '\ufeff{"text": "one"}\n\n  \n{"text": "two\\nlines"}\r\n{"text": ""}\n{"text": "last"}'
    else:
        content = "\ufeff\n\n first para\nsame para \r\n \t\r\nsecond\n\n\n\nthird no newline"
    name = "docs.jsonl" if mode == "jsonl" else "docs.txt"
    plain = workdir / name
    plain.write_text(content, encoding="utf-8")
    packed = workdir / (name + ".gz")
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    extra = ["--val-fraction", "0"] + (["--split-on-blank-lines"] if mode == "paragraphs" else [])
    a, b = workdir / "a.h5", workdir / "b.h5"
    prepare(run, gpt_bin, tokenizer, a, [plain], 1, extra)
    prepare(run, gpt_bin, tokenizer, b, [packed], 1, extra)
    da, db = read_corpus(a)[0], read_corpus(b)[0]
    assert len(da["train/doc_offsets"]) - 1 == {"file": 1, "paragraphs": 3, "jsonl": 3}[mode]
    assert_same_corpus(da, db)


@pytest.mark.parametrize("ranks", [1, 2])
def test_bad_compressed_inputs_are_named(run, gpt_bin, tokenizer, big_inputs, workdir, ranks):
    text, jl = big_inputs
    packed = gzip.compress(text.read_bytes())
    zst = subprocess.run(["zstd", "-q", "-c", str(jl)], check=True, capture_output=True).stdout
    lines = jl.read_bytes().split(b"\n")
    cases = {
        "truncated.txt.gz": (packed[: len(packed) // 2], "truncated gzip stream"),
        # the checksums at the end: damage anywhere else may decode to text that is merely wrong
        "corrupt.txt.gz": (packed[:-8] + bytes(b ^ 0xFF for b in packed[-8:-4]) + packed[-4:], "corrupt gzip stream"),
        "truncated.jsonl.zst": (zst[: len(zst) // 2], "truncated zstd stream"),
        "corrupt.jsonl.zst": (zst[:-4] + bytes(b ^ 0xFF for b in zst[-4:]), "corrupt zstd stream"),
        "notext.jsonl.gz": (gzip.compress(b"\n".join(lines[:999] + [b'{"txt": "no text"}'] + lines[999:2000])),
                            ':1000: expected an object with a string field "text"'),
        "empty.txt.gz": (gzip.compress(b""), "empty after decompression"),
    }
    out = workdir / "c.h5"
    for name, (data, message) in cases.items():
        bad = workdir / name
        bad.write_bytes(data)
        proc = prepare(run, gpt_bin, tokenizer, out, [bad], ranks, ["--split-on-blank-lines"], check=False)
        assert proc.returncode != 0, name
        assert f"{bad}:" in proc.stderr and message in proc.stderr, (name, proc.stderr)
        if "stream" in message:  # the line the damage was found at
            assert re.search(re.escape(str(bad)) + r":\d+: ", proc.stderr), proc.stderr
        assert proc.stderr.count("gpt prepare:") == 1
        assert not out.exists() and not (workdir / "c.h5.tmp").exists()


@pytest.mark.parametrize("name,byte,message", [
    ("nul.txt.zst", b"\0", "NUL byte at offset {}: binary data, expected UTF-8 text"),
    ("bad.txt.gz", b"\xff", "invalid UTF-8 at byte offset {} (expected UTF-8 text)"),
], ids=["nul-zstd", "invalid-utf8-gzip"])
def test_binary_in_a_compressed_input_is_named_at_once(run, gpt_bin, tokenizer, workdir, name, byte, message):
    """3 MB of binary after some text: named as it is decompressed, at its offset in the
    decompressed file as the plain file names it, not read up to --max-doc-mb as one line
    (it read 256 MiB of NUL bytes before)."""
    head = b"\xef\xbb\xbf" + "ünïcode text\n".encode() * 1000  # the byte order mark counts, as in a plain file
    raw = head + byte * (3 << 20)
    plain = workdir / "plain.txt"
    plain.write_bytes(raw)
    bad = workdir / name
    bad.write_bytes(gzip.compress(raw) if name.endswith(".gz") else
                    subprocess.run(["zstd", "-q", "-c", str(plain)], check=True, capture_output=True).stdout)
    out = workdir / "c.h5"
    for src in (plain, bad):
        proc = prepare(run, gpt_bin, tokenizer, out, [src], 1, ["--max-doc-mb", "1"], check=False)
        assert proc.returncode == 1
        assert f"{src}: {message.format(len(head))}" in proc.stderr
        assert not out.exists() and not (workdir / "c.h5.tmp").exists()


def test_a_line_of_nul_bytes_is_no_paragraph_break(run, gpt_bin, tokenizer, workdir):
    """With --split-on-blank-lines, a line of NUL bytes is binary data named at its offset,
    not a blank line that quietly splits two paragraphs."""
    src = workdir / "nul_line.txt"
    src.write_bytes(b"first paragraph\n\0\0\nsecond paragraph\n")
    out = workdir / "c.h5"
    proc = prepare(run, gpt_bin, tokenizer, out, [src], 1, ["--split-on-blank-lines"], check=False)
    assert proc.returncode == 1
    assert f"{src}: NUL byte at offset 16" in proc.stderr
    assert not out.exists() and not (workdir / "c.h5.tmp").exists()


def test_a_signal_leaves_no_file(run, gpt_bin, tokenizer, big_inputs, workdir):
    """SIGTERM in the middle of a prepare (sent by the process itself at its third round,
    GPT_FAULT, so that no timing decides where it lands): no file, no .tmp."""
    out = workdir / "c.h5"
    proc = run([gpt_bin, "prepare", "--tokenizer", tokenizer, "--out", out, "--max-memory", "1", *big_inputs],
               env={"GPT_FAULT": "prepare-round:3/TERM"})
    assert proc.returncode != 0 and "interrupted by SIGTERM" in proc.stderr
    assert not out.exists() and not (workdir / "c.h5.tmp").exists()


def test_max_memory_bounds_the_resident_set(run, gpt_bin, tokenizer, big_inputs, workdir):
    """The peak RSS follows the bound: a bound well below the data keeps the peak below
    what the unbounded run needs."""
    big = workdir / "all.txt"
    big.write_bytes(b"".join(big_inputs[0].read_bytes() for _ in range(4)))  # 50 MB of text
    # under AddressSanitizer, freed memory would wait in its quarantine, not be reused
    quiet = {"ASAN_OPTIONS": "quarantine_size_mb=0:detect_leaks=0"}

    def run_quiet(cmd, check=True, env=None, timeout=300):
        return run(cmd, check=check, env={**(env or {}), **quiet}, timeout=timeout)
    free = prepare(run_quiet, gpt_bin, tokenizer, workdir / "a.h5", [big], 1, ["--split-on-blank-lines"])
    tight = prepare(run_quiet, gpt_bin, tokenizer, workdir / "b.h5", [big], 1,
                    ["--split-on-blank-lines", "--max-memory", "8"])
    rss = [float(p.stdout.split("peak RSS ")[1].split(" MB")[0]) for p in (free, tight)]
    assert rounds_of(free) == 1 and rounds_of(tight) > 10
    assert rss[1] < rss[0] - 40, rss
    assert_same_corpus(read_corpus(workdir / "a.h5")[0], read_corpus(workdir / "b.h5")[0])


def stopped_in_session(sid):
    """How many processes of session sid are stopped (state T)."""
    n = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        n += fields[0] == "T" and int(fields[3]) == sid
    return n


@pytest.mark.parametrize("name,ranks", [("book.txt", 1), ("book.txt", 2), ("book.txt.gz", 1)])
def test_input_truncated_while_read(gpt_bin, tokenizer, workdir, name, ranks):
    """An input cut short while prepare reads it: every rank stops itself at round 1
    (GPT_FAULT .../STOP), the input is truncated to one page, the ranks go on. A mapped
    input's lost pages raised SIGBUS (exit 135, a .tmp left); now: exit 1 naming the file."""
    rng = np.random.default_rng(3)
    text = "\n\n".join(words(rng, 60) for _ in range(6000)).encode()  # 2 MB: many rounds of --max-memory 1
    src = workdir / name
    src.write_bytes(gzip.compress(text, 1) if name.endswith(".gz") else text)
    out = workdir / "c.h5"
    cmd = [gpt_bin, "prepare", "--tokenizer", tokenizer, "--out", out, "--max-memory", 1, "--split-on-blank-lines",
           src]
    cmd = [str(a) for a in (["mpirun", "-np", ranks, *cmd] if ranks > 1 else cmd)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=mpi_environ({"GPT_FAULT": "prepare-round:1/STOP"}))
    try:
        hang = time.monotonic() + 120
        while stopped_in_session(proc.pid) < ranks:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < hang, "hung: no rank stopped at round 1"
            time.sleep(0.02)
        os.truncate(src, 4096)
        os.killpg(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
    finally:
        kill_group(proc)
    assert proc.returncode == 1, err
    assert f"{src}: changed while being read" in err
    assert err.count("gpt prepare:") == 1
    assert not out.exists() and not (workdir / "c.h5.tmp").exists()


def test_stopped_rank_ends_prepare_with_no_file(gpt_bin, tokenizer, workdir):
    """Rank 1 stops itself at round 1 (GPT_FAULT .../STOP): rank 0, waiting in the round's
    agreement past --collective-timeout 2, ends the job with exit 69 within the timeout +
    30 s, naming the round, the phase and rank 1, and removes the .tmp that MPI_Abort
    would leave: no corpus, no .tmp."""
    rng = np.random.default_rng(3)
    src = workdir / "book.txt"
    src.write_text("\n\n".join(words(rng, 60) for _ in range(1500)))  # 500 kB: rounds of 2 x 83 kB
    out, timeout = workdir / "c.h5", 2
    cmd = ["mpirun", "-np", "2", gpt_bin, "prepare", "--tokenizer", tokenizer, "--out", out, "--max-memory", 1,
           "--split-on-blank-lines", "--collective-timeout", timeout, src]
    proc = subprocess.Popen([str(a) for a in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=mpi_environ({"GPT_FAULT": "prepare-round:1@1/STOP"}))
    try:
        hang = time.monotonic() + 120
        while not stopped_in_session(proc.pid):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < hang, "hung: rank 1 did not stop at round 1"
            time.sleep(0.02)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=timeout + 30)
        secs = time.monotonic() - t0
    finally:
        kill_group(proc)
    assert proc.returncode == 69, err[-3000:]
    assert secs <= timeout + 30
    assert re.search(r"gpt prepare: round 2: the agreement on the round's tokenizing has not completed in \d+ s "
                     rf"\(--collective-timeout {timeout}\) on rank 0 \(host \S+\); ranks that did not answer: 1 "
                     rf"\(host \S+\)\. Ending the job with exit code 69: {re.escape(str(out))} is as it was .* the "
                     rf"unfinished {re.escape(str(out))}\.tmp is removed", err), err[-3000:]
    assert err.count("has not completed") == 1
    assert not out.exists() and not (workdir / "c.h5.tmp").exists()
