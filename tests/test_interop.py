"""Models leaving the tool and coming in (`gpt export`, `gpt import`, `gpt train --init`),
checked by readers that share no code with the writer:

  * model.safetensors parsed with numpy alone (header, offsets, dtypes), the weights run
    through a float64 PyTorch model written in transformers' own layout (Conv1D [in, out],
    its names, GPT2Block's pre-LN or OpenAI GPT's post-LN Block), against the engine's logits;
  * the GGUF file parsed by the npm package @huggingface/gguf (tests/js/gguf_dump.mjs,
    pinned in tests/js/package-lock.json) and by a numpy reader written from ggml's
    docs/gguf.md, whose tensors feed the same PyTorch model.

Every model's tensors are randomised first (LayerNorm gains and all biases too), so a
swapped, transposed or misnamed tensor changes the logits.

Run: /usr/bin/python3 -m pytest -q tests/test_interop.py"""

import json
import math
import shutil
import struct
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, run_cmd, sh, read_metrics

JS_DIR = ROOT / "tests" / "js"
GGUF_DUMP = JS_DIR / "gguf_dump.mjs"
LOGITS_TOL = 1e-5          # max |engine - reference| / max |reference|
HF_FILES = ["model.safetensors", "config.json", "vocab.json", "merges.txt", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json"]
TEXT = "Call me Ishmael. Some years ago, never mind how long precisely, I went to sea. 1234!\n"


# ---------------------------------------------------------------- models

def randomise(path, seed):
    """Every tensor of a model file gets random values: matrices N(0, 0.3), gains 1 + N(0, 0.2),
    biases N(0, 0.2)."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "r+") as f:
        for name, d in sorted(f["model"].items()):
            gain = name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))
            d[...] = ((1.0 if gain else 0.0) + (0.3 if d.ndim == 2 else 0.2) * rng.standard_normal(d.shape)).astype(np.float32)


def model_tensors(path):
    out = {}
    with h5py.File(path, "r") as f:
        f["model"].visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


@pytest.fixture(scope="module")
def models(gpt_bin, tiny_corpus, tmp_path_factory):
    """A randomised pre-LN (n_ffn 96, not 4 C) and post-LN model with the corpus's tokenizer
    (vocabulary 460, model rows 470: padded): {"pre": path, "post": path}."""
    d = tmp_path_factory.mktemp("interop_models")
    out = {}
    for i, (ln, extra) in enumerate([("pre", ["--n-ffn", 96]), ("post", [])]):
        bare = d / f"{ln}_bare.h5"
        sh([gpt_bin, "init", "--model", "tiny", "--n-ctx", 16, "--vocab", 470, "--ln", ln, "--out", bare, *extra])
        randomise(bare, seed=10 + i)
        out[ln] = bare
    return out


def export(gpt_bin, model, fmt, out, tok=None, extra=()):
    args = [gpt_bin, "export", "--model", model, "--format", fmt, "--out", out, *extra]
    if tok is not None:
        args += ["--tokenizer", tok]
    return sh(args)


def engine_logits(oracle_bin, model, ids, workdir):
    """The C engine's logits (B, T, V) for ids (B, T + 1) (targets unused)."""
    batch, out = workdir / "batch.h5", workdir / "oracle_out.h5"
    with h5py.File(batch, "w") as f:
        f.create_dataset("tokens", data=np.asarray(ids, dtype=np.int32))
    run_cmd([oracle_bin, "grads", model, batch, out], check=True)
    with h5py.File(out, "r") as f:
        return f["logits"][()].astype(np.float64)


def token_batch(V, T, seed=3):
    return np.random.default_rng(seed).integers(0, V, (2, T + 1), dtype=np.int32)


# ---------------------------------------------------------------- transformers' layout, float64

def gelu_new(x):
    """transformers' NewGELUActivation (GPT-2's "gelu_new", openai-gpt's "gelu")."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def hf_logits(sd, cfg, ids):
    """Logits of a transformers GPT2LMHeadModel / OpenAIGPTLMHeadModel state dict (names
    without "transformer.", numpy arrays) for ids (B, T): modeling_gpt2.py's GPT2Block
    (x + attn(ln_1(x)), x + mlp(ln_2(x)), ln_f) or modeling_openai.py's Block
    (n = ln_1(x + attn(x)), ln_2(n + mlp(n))), Conv1D y = x W + b with W [in, out]."""
    gpt2 = cfg["model_type"] == "gpt2"
    C, H, L, eps = cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["layer_norm_epsilon"]
    t = lambda name: torch.from_numpy(np.asarray(sd[name], dtype=np.float64))
    ids = torch.as_tensor(ids, dtype=torch.long)
    B, T = ids.shape
    wte = t("wte.weight" if gpt2 else "tokens_embed.weight")
    x = wte[ids] + t("wpe.weight" if gpt2 else "positions_embed.weight")[:T]

    def ln(x, p):
        return F.layer_norm(x, (C,), t(p + ".weight"), t(p + ".bias"), eps)

    def conv1d(x, p):
        return x @ t(p + ".weight") + t(p + ".bias")

    def attn(x, p):
        q, k, v = conv1d(x, p + ".c_attn").split(C, dim=-1)
        q, k, v = (z.view(B, T, H, C // H).transpose(1, 2) for z in (q, k, v))
        w = q @ k.transpose(-1, -2) / math.sqrt(C // H)
        w = w.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        y = (w.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        return conv1d(y, p + ".c_proj")

    def mlp(x, p):
        return conv1d(gelu_new(conv1d(x, p + ".c_fc")), p + ".c_proj")

    for l in range(L):
        p = f"h.{l}"
        if gpt2:
            x = x + attn(ln(x, p + ".ln_1"), p + ".attn")
            x = x + mlp(ln(x, p + ".ln_2"), p + ".mlp")
        else:
            x = ln(x + attn(x, p + ".attn"), p + ".ln_1")
            x = ln(x + mlp(x, p + ".mlp"), p + ".ln_2")
    if gpt2:
        x = ln(x, "ln_f")
    return (x @ wte.T).numpy()


def rel_err(got, want):
    return np.abs(got - want).max() / np.abs(want).max()


# ---------------------------------------------------------------- independent readers

def read_safetensors(path):
    """numpy-only reader: (tensors by name, metadata). Checks the layout rules of the
    reference implementation: the header is JSON padded to 8 bytes, the tensors' byte
    ranges tile the data exactly (sorted, no gap, no overlap, up to the end of the file)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0, "header not padded to 8 bytes"
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None)
    base, tensors, spans = 8 + n, {}, []
    for name, e in header.items():
        assert set(e) == {"dtype", "shape", "data_offsets"}, e
        assert e["dtype"] == "F32"
        b, end = e["data_offsets"]
        assert end - b == 4 * int(np.prod(e["shape"], dtype=np.int64))
        tensors[name] = np.frombuffer(data, dtype="<f4", count=(end - b) // 4, offset=base + b).reshape(e["shape"])
        spans.append((b, end))
    spans.sort()
    at = 0
    for b, end in spans:
        assert b == at, f"gap or overlap at byte {b} of the data (expected {at})"
        at = end
    assert base + at == len(data), "data does not end at the end of the file"
    return tensors, meta


GGUF_VALUE = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_gguf(path):
    """numpy reader of GGUF v3 from ggml's docs/gguf.md: (key-values, {name: (array, ggml type)})."""
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take("Q")
        s = data[pos:pos + n].decode("utf-8")
        pos += n
        return s

    def value(kind):
        if kind == 8:
            return string()
        if kind == 9:
            item, n = take("I"), take("Q")
            return [value(item) for _ in range(n)]
        return take(GGUF_VALUE[kind])

    assert data[:4] == b"GGUF"
    pos = 4
    assert take("I") == 3
    n_tensors, n_kv = take("Q"), take("Q")
    kv = {}
    for _ in range(n_kv):
        key = string()
        assert key not in kv
        kv[key] = value(take("I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take("Q") for _ in range(take("I"))]
        infos.append((name, dims, take("I"), take("Q")))
    align = kv.get("general.alignment", 32)
    start = (pos + align - 1) // align * align
    assert not any(data[pos:start]), "padding is not zeros"
    tensors, expect = {}, 0
    for name, dims, kind, offset in infos:
        assert kind in (0, 1), f"{name}: ggml type {kind}"
        assert offset == expect, f"{name}: offset {offset}, expected {expect} (each tensor padded to {align})"
        count = int(np.prod(dims, dtype=np.int64))
        nbytes = count * (4 if kind == 0 else 2)
        arr = np.frombuffer(data, dtype="<f4" if kind == 0 else "<f2", count=count, offset=start + offset)
        tensors[name] = (arr.reshape(dims[::-1]), kind)
        expect = (offset + nbytes + align - 1) // align * align
    assert start + expect == len(data)
    return kv, tensors


GGUF_TO_HF = {"attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_norm": "ln_2",
              "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}


def gguf_state_dict(tensors):
    """GGUF tensors as a transformers GPT-2 state dict (matrices back to Conv1D [in, out])."""
    sd = {}
    for name, (arr, _) in tensors.items():
        a = arr.astype(np.float64)
        if name == "token_embd.weight":
            sd["wte.weight"] = a
        elif name == "position_embd.weight":
            sd["wpe.weight"] = a
        elif name.startswith("output_norm."):
            sd["ln_f." + name.split(".")[1]] = a
        elif name.startswith("blk."):
            _, l, part, kind = name.split(".")
            sd[f"h.{l}.{GGUF_TO_HF[part]}.{kind}"] = a.T if a.ndim == 2 else a
        else:
            assert name == "output.weight", name
    return sd


def node_bin():
    path = shutil.which("node") or "/usr/bin/node"
    if not (JS_DIR / "node_modules" / "@huggingface" / "gguf" / "package.json").is_file():
        pytest.fail("npm package @huggingface/gguf is missing: run `make deps`", pytrace=False)
    return path


def js_gguf(path):
    proc = subprocess.run([node_bin(), str(GGUF_DUMP), str(path)], capture_output=True, text=True, timeout=120,
                          env={"GGUF_FULL": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# ---------------------------------------------------------------- tests: Hugging Face

@pytest.fixture(scope="module")
def exported(gpt_bin, models, tiny_corpus, tmp_path_factory):
    d = tmp_path_factory.mktemp("interop_hf")
    out = {}
    for ln, path in models.items():
        export(gpt_bin, path, "hf", d / ln, tok=tiny_corpus["tokenizer"])
        out[ln] = d / ln
    return out


@pytest.mark.parametrize("ln", ["pre", "post"])
def test_hf_files_and_config(exported, models, ln):
    d = exported[ln]
    assert sorted(p.name for p in d.iterdir()) == sorted(HF_FILES)
    cfg = json.loads((d / "config.json").read_text())
    want_type, want_arch = ("gpt2", "GPT2LMHeadModel") if ln == "pre" else ("openai-gpt", "OpenAIGPTLMHeadModel")
    assert cfg["model_type"] == want_type and cfg["architectures"] == [want_arch]
    assert (cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["n_positions"], cfg["vocab_size"]) == (2, 4, 64, 16, 470)
    assert cfg["layer_norm_epsilon"] == 1e-5 and cfg["resid_pdrop"] == 0.1
    if ln == "pre":
        assert cfg["n_inner"] == 96 and cfg["activation_function"] == "gelu_new" and cfg["n_ctx"] == 16
    else:
        assert cfg["afn"] == "gelu" and "n_inner" not in cfg
    tensors, meta = read_safetensors(d / "model.safetensors")
    assert meta == {"format": "pt"}
    assert all(k.startswith("transformer.") for k in tensors) and "transformer.lm_head.weight" not in tensors
    mine = model_tensors(models[ln])
    assert len(tensors) == len(mine)
    emb = ("wte", "wpe") if ln == "pre" else ("tokens_embed", "positions_embed")
    for name, value in mine.items():
        hf = {"wte": emb[0] + ".weight", "wpe": emb[1] + ".weight"}.get(name, name)
        got = tensors["transformer." + hf]
        conv1d = value.ndim == 2 and (".attn." in name or ".mlp." in name)
        assert np.array_equal(got, value.T if conv1d else value), name
    tcfg = json.loads((d / "tokenizer_config.json").read_text())
    assert tcfg["tokenizer_class"] == "GPT2Tokenizer" and tcfg["eos_token"] == "<|endoftext|>"


@pytest.mark.parametrize("ln", ["pre", "post"])
def test_hf_reference_logits_match_the_engine(exported, models, oracle_bin, workdir, ln):
    tensors, _ = read_safetensors(exported[ln] / "model.safetensors")
    sd = {k[len("transformer."):]: v for k, v in tensors.items()}
    cfg = json.loads((exported[ln] / "config.json").read_text())
    ids = token_batch(cfg["vocab_size"], cfg["n_positions"])
    want = hf_logits(sd, cfg, ids[:, :-1])
    got = engine_logits(oracle_bin, models[ln], ids, workdir)
    assert np.std(want) > 0.5, "logits too flat to tell tensors apart"
    assert rel_err(got, want) < LOGITS_TOL


@pytest.mark.parametrize("ln", ["pre", "post"])
def test_hf_round_trip_is_bit_exact(gpt_bin, exported, models, tiny_corpus, workdir, ln):
    back = workdir / "back.h5"
    sh([gpt_bin, "import", "--hf", exported[ln], "--out", back])
    a, b = model_tensors(models[ln]), model_tensors(back)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype == np.float32 and np.array_equal(a[name], b[name]), name
    with h5py.File(models[ln], "r") as f, h5py.File(back, "r") as g:
        assert dict(f["model"].attrs) == dict(g["model"].attrs)
    text = workdir / "text.txt"
    text.write_text(TEXT * 3)
    ids = [sh([gpt_bin, "tokenize", "--tokenizer", t, text]).stdout for t in (tiny_corpus["tokenizer"], back)]
    assert ids[0] == ids[1] and len(ids[0].split()) > 20


def test_tokenizers_library_reads_the_exported_tokenizer(gpt_bin, exported, tiny_corpus, workdir):
    """Hugging Face's tokenizers (npm "tokenizers", its Rust library) encodes with the
    exported tokenizer.json, special tokens included, as gpt tokenize --allow-special does."""
    from test_tokenizer import hf_tokenizers_encode
    text = workdir / "text.txt"
    text.write_text(TEXT * 3 + "<|start|>premise<|delim|>hypothesis<|extract|><|endoftext|>", encoding="utf-8")
    want = [int(x) for x in sh([gpt_bin, "tokenize", "--allow-special", "--tokenizer", tiny_corpus["tokenizer"],
                                text]).stdout.split()]
    (got,) = hf_tokenizers_encode(node_bin(), exported["pre"] / "tokenizer.json", [text])
    assert got == want and [t for t in want if t >= 456] == [457, 458, 459, 456]


def test_export_is_deterministic(gpt_bin, models, tiny_corpus, workdir):
    for fmt, name in [("hf", "d"), ("gguf", "m.gguf")]:
        a, b = workdir / ("a_" + name), workdir / ("b_" + name)
        for out in (a, b):
            export(gpt_bin, models["pre"], fmt, out, tok=tiny_corpus["tokenizer"])
        if fmt == "hf":
            for f in HF_FILES:
                assert (a / f).read_bytes() == (b / f).read_bytes(), f
        else:
            assert a.read_bytes() == b.read_bytes()


def test_import_accepts_names_without_prefix_and_mask_buffers(gpt_bin, exported, models, workdir):
    """GPT-2's published model.safetensors has no "transformer." prefix and keeps the
    attn.bias buffers; a stored lm_head.weight equal to wte is accepted."""
    d = workdir / "hub"
    shutil.copytree(exported["pre"], d)
    tensors, meta = read_safetensors(d / "model.safetensors")
    renamed = {k[len("transformer."):]: v for k, v in tensors.items()}
    for l in range(2):
        renamed[f"h.{l}.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), np.float32))
    renamed["lm_head.weight"] = renamed["wte.weight"]
    write_safetensors(d / "model.safetensors", renamed, meta)
    back = workdir / "back.h5"
    sh([gpt_bin, "import", "--hf", d, "--out", back])
    a, b = model_tensors(models["pre"]), model_tensors(back)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # an untied head cannot be represented
    renamed["lm_head.weight"] = renamed["wte.weight"] + 1
    write_safetensors(d / "model.safetensors", renamed, meta)
    proc = run_cmd([gpt_bin, "import", "--hf", d, "--out", workdir / "untied.h5"])
    assert proc.returncode != 0 and "lm_head.weight differs" in proc.stderr
    assert not (workdir / "untied.h5").exists()


def test_import_reads_sharded_safetensors(gpt_bin, exported, models, workdir):
    d = workdir / "sharded"
    shutil.copytree(exported["post"], d)
    tensors, meta = read_safetensors(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for file, part in shards.items():
        write_safetensors(d / file, {n: tensors[n] for n in part}, meta)
    index = {"metadata": {}, "weight_map": {n: f for f, part in shards.items() for n in part}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    back = workdir / "back.h5"
    sh([gpt_bin, "import", "--hf", d, "--out", back])
    a, b = model_tensors(models["post"]), model_tensors(back)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_import_refuses_ambiguous_or_misindexed_tensors(gpt_bin, exported, workdir):
    """A tensor stored twice (with and without "transformer.", or in two shards) or a
    weight_map entry its shard lacks is an error naming both places, not a guess."""
    d = workdir / "hf"
    shutil.copytree(exported["pre"], d)
    tensors, meta = read_safetensors(d / "model.safetensors")
    name = "transformer.h.0.ln_1.bias"
    write_safetensors(d / "model.safetensors", {**tensors, name[len("transformer."):]: tensors[name] + 1}, meta)
    import_fails(gpt_bin, d, workdir, ["stored twice", f"'{name}'", "'h.0.ln_1.bias'", "model.safetensors"])
    (d / "model.safetensors").unlink()
    one, two = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    names = sorted(tensors)
    first = {n: tensors[n] for n in names[: len(names) // 2]}
    second = {n: tensors[n] for n in names[len(names) // 2:]}
    weight_map = {**{n: one for n in first}, **{n: two for n in second}}

    def shards(a, b, wm):
        write_safetensors(d / one, a, meta)
        write_safetensors(d / two, b, meta)
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))

    moved = names[0]  # in the first shard; a second, different copy in the other, which the index names
    shards(first, {**second, moved: tensors[moved] + 1}, {**weight_map, moved: two})
    import_fails(gpt_bin, d, workdir, ["stored twice", moved, one, two])
    shards(first, second, {**weight_map, moved: two})  # the index names a shard that lacks it
    import_fails(gpt_bin, d, workdir, [f"weight_map.{moved}", two, "has no tensor"])
    shards(first, second, {**weight_map, "transformer.h.7.ln_1.bias": one})  # a tensor that exists nowhere
    import_fails(gpt_bin, d, workdir, ["weight_map.transformer.h.7.ln_1.bias", one, "has no tensor"])
    # a shard's tensor the index leaves out (here an untied head) would go unchecked
    shards(first, {**second, "lm_head.weight": tensors["transformer.wte.weight"] + 1}, weight_map)
    import_fails(gpt_bin, d, workdir, ["'lm_head.weight'", two, "not in", "model.safetensors.index.json"])


def test_gpt2_preset_round_trip(gpt_bin, workdir):
    """The gpt2 preset (GPT-2 small: 124,439,808 parameters, the published model's count)
    with GPT-2's tokenizer (imported from js-tiktoken's pinned rank file) leaves as a
    transformers gpt2 directory of GPT-2's config and comes back with the same tensors and
    the same ids. Half a GB a file: each is removed once read."""
    from test_tokenizer import pinned  # the pinned r50k_base.tiktoken of tests/js
    tok = workdir / "gpt2.h5"
    sh([gpt_bin, "tokenizer", "import", "--out", tok, "--tiktoken", pinned("r50k_base.tiktoken")])
    model = workdir / "m.h5"
    out = sh([gpt_bin, "init", "--model", "gpt2", "--out", model]).stdout
    assert "124439808 parameters" in out, out
    export(gpt_bin, model, "hf", workdir / "hf", tok=tok)
    cfg = json.loads((workdir / "hf" / "config.json").read_text())
    assert (cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["n_positions"], cfg["vocab_size"]) == \
        (12, 12, 768, 1024, 50257), cfg
    vocab = json.loads((workdir / "hf" / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 50257 and vocab["<|endoftext|>"] == 50256 and vocab["\u0120the"] == 262
    merges = (workdir / "hf" / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert merges[0] == "#version: 0.2" and merges[1] == "\u0120 t" and len(merges) == 50002
    back = workdir / "back.h5"
    sh([gpt_bin, "import", "--hf", workdir / "hf", "--out", back])
    (workdir / "hf" / "model.safetensors").unlink()
    with h5py.File(model, "r") as f, h5py.File(back, "r") as g:
        assert sorted(f["model"]) == sorted(g["model"]) and len(f["model"]) == 2 + 12 * 12 + 2
        for name in f["model"]:
            assert np.array_equal(f["model"][name][()], g["model"][name][()]), name
        assert dict(f["model"].attrs) == dict(g["model"].attrs)
    model.unlink()
    text = workdir / "t.txt"
    text.write_text(TEXT + "  naïve café — 日本語 <|endoftext|>\n", encoding="utf-8")
    ids = [sh([gpt_bin, "tokenize", "--tokenizer", t, text]).stdout for t in (tok, back)]
    assert ids[0] == ids[1]


# ---------------------------------------------------------------- tests: GGUF

@pytest.fixture(scope="module")
def gguf_files(gpt_bin, models, tiny_corpus, tmp_path_factory):
    d = tmp_path_factory.mktemp("interop_gguf")
    out = {}
    for dtype in ("f32", "f16"):
        out[dtype] = d / f"pre_{dtype}.gguf"
        export(gpt_bin, models["pre"], "gguf", out[dtype], tok=tiny_corpus["tokenizer"], extra=["--dtype", dtype])
    return out


def expected_gguf_tensors(L=2, C=64, F=96, V=470, T=16):
    t = {"token_embd.weight": [C, V], "position_embd.weight": [C, T], "output_norm.weight": [C],
         "output_norm.bias": [C], "output.weight": [C, V]}
    for l in range(L):
        for part, shape in [("attn_norm", [C]), ("ffn_norm", [C])]:
            t[f"blk.{l}.{part}.weight"] = t[f"blk.{l}.{part}.bias"] = shape
        for part, w, b in [("attn_qkv", [C, 3 * C], [3 * C]), ("attn_output", [C, C], [C]),
                           ("ffn_up", [C, F], [F]), ("ffn_down", [F, C], [C])]:
            t[f"blk.{l}.{part}.weight"], t[f"blk.{l}.{part}.bias"] = w, b
    return t


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_gguf_seen_by_huggingface_gguf(gguf_files, tiny_corpus, dtype):
    got = js_gguf(gguf_files[dtype])
    meta = got["metadata"]
    assert meta["general.architecture"] == "gpt2"
    assert meta["general.file_type"] == (0 if dtype == "f32" else 1)
    assert {k: meta[f"gpt2.{k}"] for k in ["block_count", "context_length", "embedding_length",
                                           "feed_forward_length", "attention.head_count"]} == \
        {"block_count": 2, "context_length": 16, "embedding_length": 64, "feed_forward_length": 96,
         "attention.head_count": 4}
    assert abs(meta["gpt2.attention.layer_norm_epsilon"] - 1e-5) < 1e-12
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == 470
    assert tokens[456:460] == ["<|endoftext|>", "<|start|>", "<|delim|>", "<|extract|>"]
    assert tokens[460:] == [f"[PAD{i}]" for i in range(460, 470)]
    assert types[:456] == [1] * 456 and types[456:460] == [3] * 4 and types[460:] == [5] * 10
    assert tokens[ord("a")] == "a" and tokens[ord(" ")] == "\u0120"  # this tokenizer's byte ids are the bytes
    assert len(meta["tokenizer.ggml.merges"]) == 200 and all(m.count(" ") == 1 for m in meta["tokenizer.ggml.merges"])
    assert meta["tokenizer.ggml.eos_token_id"] == meta["tokenizer.ggml.bos_token_id"] == 456
    want = expected_gguf_tensors()
    infos = {t["name"]: t for t in got["tensorInfos"]}
    assert len(infos) == len(got["tensorInfos"]) == len(want)
    for name, shape in want.items():
        assert infos[name]["shape"] == shape, name
        half = dtype == "f16" and len(shape) == 2 and name != "position_embd.weight"
        assert infos[name]["dtype"] == (1 if half else 0), name


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_gguf_reference_logits(gguf_files, models, oracle_bin, workdir, dtype):
    kv, tensors = read_gguf(gguf_files[dtype])
    mine = model_tensors(models["pre"])
    assert np.array_equal(tensors["output.weight"][0], tensors["token_embd.weight"][0])
    # the stored values: float32 exactly, float16 as numpy rounds float32 (to nearest even)
    for name, arr in [("token_embd.weight", mine["wte"]), ("blk.1.ffn_down.weight", mine["h.1.mlp.c_proj.weight"]),
                      ("blk.0.attn_norm.bias", mine["h.0.ln_1.bias"])]:
        stored, kind = tensors[name]
        half = dtype == "f16" and arr.ndim == 2
        assert kind == (1 if half else 0)
        assert np.array_equal(stored, arr.astype(np.float16) if half else arr), name
    cfg = {"model_type": "gpt2", "n_embd": kv["gpt2.embedding_length"], "n_head": kv["gpt2.attention.head_count"],
           "n_layer": kv["gpt2.block_count"], "layer_norm_epsilon": kv["gpt2.attention.layer_norm_epsilon"]}
    ids = token_batch(470, 16)
    want = engine_logits(oracle_bin, models["pre"], ids, workdir)
    got = hf_logits(gguf_state_dict(tensors), cfg, ids[:, :-1])
    # float16 matrices: each weight off by up to 2^-11 of itself
    assert rel_err(got, want) < (LOGITS_TOL if dtype == "f32" else 5e-3)
    if dtype == "f16":
        assert rel_err(got, want) > 1e-6  # the rounding is really there


def test_gguf_refuses_post_ln(gpt_bin, models, tiny_corpus, workdir):
    out = workdir / "post.gguf"
    proc = run_cmd([gpt_bin, "export", "--model", models["post"], "--tokenizer", tiny_corpus["tokenizer"],
                    "--format", "gguf", "--out", out])
    assert proc.returncode == 1 and "post-LN" in proc.stderr and "llama.cpp" in proc.stderr
    assert list(workdir.iterdir()) == []


# ---------------------------------------------------------------- continuing from an imported model

def test_train_init_continues_from_an_imported_model(gpt_bin, tiny_corpus, exported, models, workdir):
    """gpt train --init: the imported model trains exactly as the model it came from, and
    starts from its weights, not from a fresh initialisation."""
    corpus = tiny_corpus["corpus"]
    imported = workdir / "imported.h5"
    sh([gpt_bin, "import", "--hf", exported["pre"], "--out", imported])
    runs = {}
    for name, init in [("orig", models["pre"]), ("imported", imported)]:
        runs[name] = workdir / name
        sh([gpt_bin, "train", "--data", corpus, "--init", init, "--out", runs[name], "--steps", 3, "--batch", 2,
            "--eval-every", 0, "--dropout", 0])
    a, b = read_metrics(runs["orig"]), read_metrics(runs["imported"])
    assert [m["loss"] for m in a] == [m["loss"] for m in b]
    cfg = json.loads((runs["imported"] / "config.json").read_text())
    assert cfg["model"]["init"] == str(imported) and cfg["model"]["n_ffn"] == 96 and cfg["model"]["dropout_resid"] == 0
    fresh = workdir / "fresh"
    sh([gpt_bin, "train", "--data", corpus, "--model", "tiny", "--n-ctx", 16, "--vocab", 470, "--n-ffn", 96,
        "--out", fresh, "--steps", 3, "--batch", 2, "--eval-every", 0, "--dropout", 0])
    assert read_metrics(fresh)[0]["loss"] != a[0]["loss"]
    # the randomised weights predict badly: far above a fresh model's ln(470)
    assert a[0]["loss"] > read_metrics(fresh)[0]["loss"] + 1


def test_train_init_on_two_ranks_and_resumed(gpt_bin, tiny_corpus, exported, workdir):
    """Every rank starts from the file: 2 ranks give 1 rank's losses; a run started with
    --init resumes from its checkpoint exactly."""
    imported = workdir / "imported.h5"
    sh([gpt_bin, "import", "--hf", exported["pre"], "--out", imported])
    common = ["--data", tiny_corpus["corpus"], "--init", imported, "--steps", 4, "--eval-every", 0, "--dropout", 0]
    one, two, again = workdir / "one", workdir / "two", workdir / "again"
    sh([gpt_bin, "train", *common, "--out", one, "--batch", 2, "--ckpt-every", 2])
    sh([gpt_bin, "train", *common, "--out", two, "--batch", 1], ranks=2)
    a, b = read_metrics(one), read_metrics(two)
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5), (x, y)
    sh([gpt_bin, "train", *common, "--out", again, "--batch", 2, "--resume", one / "ckpt_2.h5"])
    c = read_metrics(again)
    assert [m["step"] for m in c] == [3, 4] and [m["loss"] for m in c] == [m["loss"] for m in a[2:]]


def test_train_init_refuses_shape_options_and_another_tokenizer(gpt_bin, tiny_corpus, exported, workdir):
    imported = workdir / "imported.h5"
    sh([gpt_bin, "import", "--hf", exported["pre"], "--out", imported])
    proc = sh([gpt_bin, "train", "--data", tiny_corpus["corpus"], "--init", imported, "--n-layer", 3,
               "--out", workdir / "r1", "--steps", 2], check=False)
    assert proc.returncode == 2 and "--init takes the model's shape" in proc.stderr
    other_tok, other = workdir / "other_tok.h5", workdir / "other.h5"
    text = workdir / "t.txt"
    text.write_text(TEXT * 200)
    sh([gpt_bin, "tokenizer", "train", "--merges", 200, "--out", other_tok, text])
    sh([gpt_bin, "prepare", "--tokenizer", other_tok, "--out", other, text])
    proc = sh([gpt_bin, "train", "--data", other, "--init", imported, "--out", workdir / "r2", "--steps", 2,
               "--eval-every", 0], check=False)
    assert proc.returncode == 1 and "another tokenizer" in proc.stderr and str(imported) in proc.stderr
    assert not (workdir / "r2" / "model.h5").exists()


def test_finetune_init_takes_an_imported_model(gpt_bin, tiny_corpus, exported, workdir):
    imported = workdir / "imported.h5"
    sh([gpt_bin, "import", "--hf", exported["post"], "--out", imported])
    out = workdir / "ft"
    sh([gpt_bin, "finetune", "--init", imported, "--corpus", tiny_corpus["corpus"], "--out", out, "--epochs", 1,
        "--batch", 64, "--eval-every", 0])
    assert (out / "model.h5").is_file() and len(read_metrics(out)) >= 1


# ---------------------------------------------------------------- bad input

def write_safetensors(path, tensors, meta=None, header_override=None, raw_header=None):
    """Writes a safetensors file from numpy float32 arrays (sorted by name, as the
    reference writer lays them out); header_override(header) may edit the header first;
    raw_header replaces it with the given bytes."""
    header, chunks, at = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [at, at + a.nbytes]}
        chunks.append(a.tobytes())
        at += a.nbytes
    if meta is not None:
        header["__metadata__"] = meta
    if header_override:
        header_override(header)
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def set_in(header, name, key, value):
    header[name][key] = value


BAD_SAFETENSORS = {
    "header_truncated": (lambda d, t, m: (d / "model.safetensors").write_bytes(struct.pack("<Q", 4096) + b"{}"),
                         ["header", "truncated"]),
    "file_truncated": (lambda d, t, m: (d / "model.safetensors").write_bytes(b"\x10\x00"), ["header", "truncated"]),
    "header_too_long": (lambda d, t, m: (d / "model.safetensors").write_bytes(struct.pack("<Q", 200_000_000) + b"{}"),
                        ["header", "limit"]),
    "not_json": (lambda d, t, m: write_safetensors(d / "model.safetensors", t, m, raw_header=b'{"wte.weight": [1,'),
                 ["header", "not a JSON object"]),
    "outside": (lambda d, t, m: write_safetensors(d / "model.safetensors", t, m, lambda h: set_in(
        h, "transformer.ln_f.bias", "data_offsets", [10 ** 9, 10 ** 9 + 256])), ["transformer.ln_f.bias", "outside"]),
    "overlap": (lambda d, t, m: write_safetensors(d / "model.safetensors", t, m, lambda h: set_in(
        h, "transformer.ln_f.bias", "data_offsets", h["transformer.ln_f.weight"]["data_offsets"])),
                ["overlap", "transformer.ln_f"]),
    "trailing": (lambda d, t, m: (write_safetensors(d / "model.safetensors", t, m),
                                  open(d / "model.safetensors", "ab").write(b"\0" * 8)),
                 ["8 bytes after the last tensor", "the data must end with it"]),
    "dtype": (lambda d, t, m: write_safetensors(d / "model.safetensors", t, m, lambda h: set_in(
        h, "transformer.h.0.ln_1.bias", "dtype", "Q7")), ["transformer.h.0.ln_1.bias", "dtype", "Q7"]),
    "missing_tensor": (lambda d, t, m: write_safetensors(
        d / "model.safetensors", {k: v for k, v in t.items() if k != "transformer.h.1.mlp.c_fc.bias"}, m),
                       ["transformer.h.1.mlp.c_fc.bias", "missing"]),
    "shape": (lambda d, t, m: write_safetensors(d / "model.safetensors", t, m, lambda h: set_in(
        h, "transformer.h.0.attn.c_attn.weight", "shape", [192, 64])),
              ["transformer.h.0.attn.c_attn.weight", "[192, 64]", "config.json gives [64, 192]"]),
    "stray_tensor": (lambda d, t, m: write_safetensors(d / "model.safetensors", {
        **t, "transformer.h.2.ln_1.weight": np.ones(64, np.float32)}, m), ["transformer.h.2.ln_1.weight", "n_layer"]),
}

BAD_CONFIG = {
    "missing_key": (lambda c: c.pop("n_embd"), ["config.json", "n_embd", "missing"]),
    "model_type": (lambda c: c.update(model_type="llama"), ["config.json", "model_type", "llama"]),
    "no_model_type": (lambda c: c.pop("model_type"), ["config.json", "model_type", "missing"]),
    "activation": (lambda c: c.update(activation_function="relu"), ["config.json", "activation_function", "relu"]),
    "not_json": (None, ["config.json", "not valid JSON"]),
}


def import_fails(gpt_bin, d, workdir, words):
    out = workdir / "out.h5"
    proc = run_cmd([gpt_bin, "import", "--hf", d, "--out", out])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    msg = proc.stderr.strip()
    assert msg.startswith("gpt import: ") and msg.count("\n") == 0, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    assert not out.exists() and not Path(str(out) + ".tmp").exists()
    return msg


@pytest.mark.parametrize("case", sorted(BAD_SAFETENSORS))
def test_bad_safetensors(gpt_bin, exported, workdir, case):
    d = workdir / "hf"
    shutil.copytree(exported["pre"], d)
    tensors, meta = read_safetensors(d / "model.safetensors")
    make, words = BAD_SAFETENSORS[case]
    make(d, tensors, meta)
    msg = import_fails(gpt_bin, d, workdir, words)
    if case not in ("missing_tensor", "stray_tensor", "shape"):
        assert "model.safetensors" in msg


@pytest.mark.parametrize("case", sorted(BAD_CONFIG))
def test_bad_config(gpt_bin, exported, workdir, case):
    d = workdir / "hf"
    shutil.copytree(exported["pre"], d)
    edit, words = BAD_CONFIG[case]
    if edit is None:
        (d / "config.json").write_text('{"model_type": "gpt2",')
    else:
        cfg = json.loads((d / "config.json").read_text())
        edit(cfg)
        (d / "config.json").write_text(json.dumps(cfg))
    import_fails(gpt_bin, d, workdir, words)


def test_bad_tokenizer_files(gpt_bin, exported, workdir):
    d = workdir / "hf"
    shutil.copytree(exported["pre"], d)
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["model"]["merges"][5] = "nosuchtoken x"
    (d / "tokenizer.json").write_text(json.dumps(tj))
    import_fails(gpt_bin, d, workdir, ["tokenizer.json", "model.merges[5]", "nosuchtoken"])
    tj["model"]["merges"][5] = 7
    (d / "tokenizer.json").write_text(json.dumps(tj))
    import_fails(gpt_bin, d, workdir, ["tokenizer.json", "model.merges[5]"])
    tj = json.loads((exported["pre"] / "tokenizer.json").read_text())
    tj["pre_tokenizer"] = {"type": "Metaspace"}
    (d / "tokenizer.json").write_text(json.dumps(tj))
    import_fails(gpt_bin, d, workdir, ["tokenizer.json", "pre_tokenizer", "ByteLevel"])
    (d / "tokenizer.json").unlink()
    (d / "merges.txt").write_text("#version: 0.2\nĠ t\nthis is wrong\n")
    import_fails(gpt_bin, d, workdir, ["merges.txt:3"])
    (d / "merges.txt").unlink()
    import_fails(gpt_bin, d, workdir, ["no tokenizer", "tokenizer.json", "--tokenizer"])


def test_tokenizer_json_merges_as_pairs(gpt_bin, exported, tiny_corpus, workdir):
    """tokenizers >= 0.20 write merges as ["a", "b"] pairs; both forms read alike."""
    tj = json.loads((exported["pre"] / "tokenizer.json").read_text())
    tj["model"]["merges"] = [m.split(" ") for m in tj["model"]["merges"]]
    (workdir / "tokenizer.json").write_text(json.dumps(tj))
    tok = workdir / "tok.h5"
    sh([gpt_bin, "tokenizer", "import", "--tokenizer-json", workdir / "tokenizer.json", "--out", tok])
    text = workdir / "text.txt"
    text.write_text(TEXT * 2)
    ids = [sh([gpt_bin, "tokenize", "--tokenizer", t, text]).stdout for t in (tiny_corpus["tokenizer"], tok)]
    assert ids[0] == ids[1]


def test_export_errors_leave_nothing(gpt_bin, models, tiny_corpus, workdir):
    proc = run_cmd([gpt_bin, "export", "--model", models["pre"], "--format", "hf", "--out", workdir / "d"])
    assert proc.returncode == 1 and "no tokenizer" in proc.stderr and "--tokenizer" in proc.stderr
    proc = run_cmd([gpt_bin, "export", "--model", models["pre"], "--format", "onnx", "--out", workdir / "d"])
    assert proc.returncode == 2 and "--format" in proc.stderr
    proc = run_cmd([gpt_bin, "export", "--model", workdir / "missing.h5", "--format", "hf", "--out", workdir / "d"])
    assert proc.returncode == 1 and "missing.h5" in proc.stderr
    # a tokenizer larger than the model
    small = workdir / "small.h5"
    sh([gpt_bin, "init", "--model", "tiny", "--ln", "pre", "--vocab", 300, "--out", small])
    proc = run_cmd([gpt_bin, "export", "--model", small, "--tokenizer", tiny_corpus["tokenizer"], "--format", "gguf",
                    "--out", workdir / "s.gguf"])
    assert proc.returncode == 1 and "larger than the model" in proc.stderr
    # an unwritable place
    proc = run_cmd([gpt_bin, "export", "--model", models["pre"], "--tokenizer", tiny_corpus["tokenizer"], "--format",
                    "hf", "--out", workdir / "no" / "such" / "dir"])
    assert proc.returncode == 1 and "cannot create" in proc.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["small.h5"]


def test_export_of_a_checkpoint_and_refusal_of_adapters(gpt_bin, tiny_corpus, workdir):
    """A checkpoint exports its /model with its tokenizer; LoRA adapters must be merged first."""
    run = workdir / "run"
    sh([gpt_bin, "train", "--data", tiny_corpus["corpus"], "--model", "tiny", "--ln", "pre", "--out", run,
        "--steps", 2, "--batch", 2, "--ckpt-every", 2, "--eval-every", 0])
    ckpt = run / "ckpt_2.h5"
    export(gpt_bin, ckpt, "hf", workdir / "hf")
    back = workdir / "back.h5"
    sh([gpt_bin, "import", "--hf", workdir / "hf", "--out", back])
    a, b = model_tensors(ckpt), model_tensors(back)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    lora = workdir / "lora"
    sh([gpt_bin, "finetune", "--init", run / "model.h5", "--corpus", tiny_corpus["corpus"], "--out", lora,
        "--lora-rank", 2, "--epochs", 1, "--batch", 64, "--eval-every", 0])
    proc = run_cmd([gpt_bin, "export", "--model", lora / "model.h5", "--format", "gguf", "--out", workdir / "l.gguf"])
    assert proc.returncode == 1 and "LoRA adapters" in proc.stderr and "gpt merge-lora" in proc.stderr
    assert not (workdir / "l.gguf").exists()
    merged = workdir / "merged.h5"
    sh([gpt_bin, "merge-lora", "--model", lora / "model.h5", "--out", merged])
    export(gpt_bin, merged, "gguf", workdir / "m.gguf")
    assert read_gguf(workdir / "m.gguf")[0]["general.name"] == "merged"


def test_export_of_a_fine_tuned_task_model(gpt_bin, models, tiny_corpus, workdir):
    """A task model (GPT-1's head on top) exports its language model; the head stays behind."""
    csv = workdir / "t.csv"
    csv.write_text("text,label\n" + "".join(f'"a good day {i}",pos\n"a bad day {i}",neg\n' for i in range(20)))
    task = workdir / "task.h5"
    sh([gpt_bin, "prepare-task", "--tokenizer", tiny_corpus["tokenizer"], "--task", "classify", "--labels", "neg,pos",
        "--n-ctx", 16, "--out", task, csv])
    ft = workdir / "ft"
    sh([gpt_bin, "finetune", "--init", models["post"], "--data", task, "--out", ft, "--epochs", 1, "--batch", 8,
        "--eval-every", 0])
    export(gpt_bin, ft / "model.h5", "hf", workdir / "hf")
    tensors, _ = read_safetensors(workdir / "hf" / "model.safetensors")
    assert not any("head" in k for k in tensors)
    back = workdir / "back.h5"
    sh([gpt_bin, "import", "--hf", workdir / "hf", "--out", back])
    a, b = model_tensors(ft / "model.h5"), model_tensors(back)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], model_tensors(models["post"])[k]) for k in a)  # it was fine-tuned
