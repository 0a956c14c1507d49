"""gpt generate and gpt score against the PyTorch reference (tools/torch_gpt.py).

    make && /usr/bin/python3 -m pytest -q tests/test_generate.py

  * the reference's KV-cache forward equals its full forward (the tool under test is
    checked against the cached reference, so the cache itself is checked first);
  * greedy `gpt generate --temperature 0 --ids` equals the float64 reference token for
    token: from a prompt, from an empty prompt (<|endoftext|>), past n_ctx (the context
    slides: the last n_ctx/2 tokens are re-encoded), from a prompt longer than n_ctx (cut
    from the left, with a notice), from a bare `gpt init` model with --tokenizer, and
    with --no-cache (a full pass over the context for every token);
  * sampling: the same seed gives the same tokens, another seed others; top-k 1 and a tiny
    top-p are greedy; every token drawn with --top-k K is among the reference's K most
    likely, with --top-p P inside the reference's nucleus; --num-samples;
  * the text output is the detokenized --ids output, byte for byte;
  * `gpt score --json` equals the reference's windowed log-likelihood, and its derived
    fields follow their definitions;
  * bad options fail with a message naming the option.

The model is the tiny preset trained for a few seconds on a Moby Dick slice (2 ranks)."""

import json
import math

import pytest
import torch

import torch_gpt
from conftest import MOBY, moby_slice, sh

N_CTX = 64          # tiny
LL_RTOL = 1e-5      # float32 engine against float64 torch
TIE_TOL = 1e-4      # logits this close to the maximum count as a tie (float32 vs float64)

PROMPT = "Call me Ishmael. Some years ago"
PROMPT_20 = "Now, when I say that I am in the habit of going to sea"


# --------------------------------------------------------------------------- helpers

def sh_bytes(args, check=True, timeout=120, ranks=None, input=None):
    """conftest's sh with bytes stdout/stderr (and input) and this module's 120 s default."""
    return sh(args, ranks=ranks, timeout=timeout, check=check, input=input, text=False)


def generate(gpt_bin, model, *opts, check=True):
    return sh_bytes([gpt_bin, "generate", "--model", model, *opts], check=check)


def ids_lines(proc):
    """The --ids output: one list of ints per line."""
    return [[int(t) for t in line.split()] for line in proc.stdout.decode().splitlines()]


def gen_ids(gpt_bin, model, *opts):
    lines = ids_lines(generate(gpt_bin, model, "--ids", *opts))
    assert len(lines) == 1, f"expected one line of ids, got {len(lines)}"
    return lines[0]


def encode(gpt_bin, tok, text, tmp):
    f = tmp / "encode.txt"
    f.write_bytes(text.encode())
    return [int(t) for t in sh_bytes([gpt_bin, "tokenize", "--tokenizer", tok, f]).stdout.split()]


def detokenize(gpt_bin, tok, ids):
    return sh_bytes([gpt_bin, "detokenize", "--tokenizer", tok],
              input=" ".join(map(str, ids)).encode()).stdout


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b)) if len(a) != len(b) else None


def error_of(proc, option):
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, f"expected failure mentioning {option!r}, got exit 0:\n{err}"
    assert option in err, f"expected {option!r} in the message:\n{err}"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def trained(gpt_bin, moby, tmp_path_factory):
    """A tiny pre-LN model (dropout 0.1) trained 400 steps on a 25 KB Moby Dick slice with a 500-merge
    tokenizer; its model.h5 carries /tokenizer. Also a bare `gpt init` model."""
    d = tmp_path_factory.mktemp("generate")
    src = moby_slice(moby, d / "moby_slice.txt")
    tok, corpus, run = d / "tok.h5", d / "corpus.h5", d / "run"
    sh_bytes([gpt_bin, "tokenizer", "train", "--merges", 500, "--out", tok, src])
    sh_bytes([gpt_bin, "prepare", "--tokenizer", tok, "--out", corpus, "--split-on-blank-lines",
        "--val-fraction", "0.1", src])
    sh_bytes([gpt_bin, "train", "--data", corpus, "--model", "tiny", "--out", run, "--steps", 400,
        "--batch", 4, "--ln", "pre", "--seed", 1, "--lr", "1e-3", "--min-lr", "1e-4",
        "--warmup", 10, "--eval-every", 0, "--log-every", 100], ranks=2, timeout=300)
    bare = d / "bare.h5"
    sh_bytes([gpt_bin, "init", "--model", "tiny", "--vocab", 760, "--seed", 5, "--init-std", 0.2, "--out", bare])
    model = run / "model.h5"
    ref = torch_gpt.GPT.from_file(model, torch.float64).eval()
    eot = 756  # 256 bytes + 500 merges
    return {"gpt": gpt_bin, "dir": d, "tok": tok, "model": model, "bare": bare, "ref": ref, "eot": eot,
            "bare_ref": torch_gpt.GPT.from_file(bare, torch.float64).eval()}


# --------------------------------------------------------------------------- the reference

@pytest.mark.parametrize("ln", ["pre", "post"])
def test_reference_cached_forward_equals_full_forward(ln):
    cfg = dict(n_layer=2, n_head=4, n_embd=32, n_ctx=40, vocab_size=50, n_ffn=64, ln=ln, ln_eps=1e-5,
               dropout_embd=0.0, dropout_resid=0.0, dropout_attn=0.0)
    model = torch_gpt.GPT(cfg).init_weights(seed=1, std=0.2).double().eval()
    idx = torch.randint(0, 50, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(idx)
        past, parts = None, []
        for a, b in [(0, 7), (7, 8), (8, 9), (9, 25), (25, 40)]:  # blocks and single tokens
            logits, past = model.forward_cached(idx[:, a:b], past)
            parts.append(logits)
    assert past[0][0].shape == (2, 4, 40, 8)
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-12)


def test_reference_score_rule():
    cfg = dict(n_layer=1, n_head=2, n_embd=16, n_ctx=16, vocab_size=30, n_ffn=32, ln="pre", ln_eps=1e-5,
               dropout_embd=0.0, dropout_resid=0.0, dropout_attn=0.0)
    model = torch_gpt.GPT(cfg).init_weights(seed=2, std=0.3).double().eval()
    ids = torch.randint(0, 30, (41,), generator=torch.Generator().manual_seed(1)).tolist()

    def ll_given(j, lo):  # log p(x_j | x[lo:j])
        with torch.no_grad():
            logits = model(torch.tensor([ids[lo:j]]))[0, -1]
        return float(torch.log_softmax(logits, -1)[ids[j]])

    short = ids[:11]  # n = 10 < n_ctx: one window, every token with its whole prefix
    r = torch_gpt.score(model, short)
    assert (r["tokens"], r["windows"], r["stride"]) == (10, 1, 8)
    assert r["log_likelihood"] == pytest.approx(sum(ll_given(j, 0) for j in range(1, 11)), rel=1e-12)
    # n = 40, n_ctx 16, stride 8: windows [0,16) [8,24) [16,32) [24,40); x_j for j > 16
    # is scored in the window whose end first reaches it: begin = end - 16
    r = torch_gpt.score(model, ids)
    assert (r["tokens"], r["windows"]) == (40, 4)
    want = sum(ll_given(j, 0) for j in range(1, 17)) + \
        sum(ll_given(j, 8 * ((j - 1) // 8) - 8) for j in range(17, 41))
    assert r["log_likelihood"] == pytest.approx(want, rel=1e-12)
    r = torch_gpt.score(model, ids, stride=16)  # no overlap: windows of 16 from scratch
    assert r["windows"] == 3
    want = sum(ll_given(j, 16 * ((j - 1) // 16)) for j in range(1, 41))
    assert r["log_likelihood"] == pytest.approx(want, rel=1e-12)


# --------------------------------------------------------------------------- greedy

def check_greedy(ref, prompt_ids, got, n, eot, what):
    """got (gpt generate's ids) equals the reference's greedy decoding. A difference is
    reported with its position and, in case it is a float32-vs-float64 near-tie, the
    logits there; the test accepts only exact equality."""
    want = torch_gpt.generate_greedy(ref, prompt_ids, n, eot)
    if got == want:
        return want
    i = first_difference(got, want)
    detail = ""
    if i < len(got):
        rows = torch_gpt.logits_along(ref, prompt_ids, got[: i + 1], eot)
        row = rows[i]
        top = torch.topk(row, 3)
        detail = (f"; reference logits there: top-3 ids {top.indices.tolist()} values "
                  f"{[f'{v:.6f}' for v in top.values.tolist()]}, gpt's token {got[i]} has {float(row[got[i]]):.6f}")
    pytest.fail(f"{what}: gpt generate differs from the reference at generated position {i}: "
                f"gpt {got[max(0, i - 3): i + 5]} vs reference {want[max(0, i - 3): i + 5]} "
                f"(lengths {len(got)} vs {len(want)}){detail}\ngpt: {got}\nref: {want}", pytrace=False)


def test_greedy_equals_reference(gpt_bin, trained, workdir):
    ref, eot, model = trained["ref"], trained["eot"], trained["model"]
    prompt = encode(gpt_bin, trained["tok"], PROMPT, workdir)
    got = gen_ids(gpt_bin, model, "--prompt", PROMPT, "--temperature", 0, "--max-new-tokens", 60)
    check_greedy(ref, prompt, got, 60, eot, "prompt")
    # the default is 100 new tokens
    got = gen_ids(gpt_bin, model, "--prompt", PROMPT, "--temperature", 0)
    want = check_greedy(ref, prompt, got, 100, eot, "prompt, default --max-new-tokens")
    # greedy decoding of a tiny model loops, but over more than a few tokens
    assert len(set(want)) > 8, f"the trained model should say something less trivial: {want}"


def test_greedy_past_n_ctx(gpt_bin, trained, workdir):
    """~20 prompt tokens + up to 100 new ones: the cache fills at 64 and slides."""
    ref, eot = trained["ref"], trained["eot"]
    prompt = encode(gpt_bin, trained["tok"], PROMPT_20, workdir)
    assert 15 <= len(prompt) <= 30, len(prompt)
    pfile = workdir / "prompt.txt"
    pfile.write_bytes(PROMPT_20.encode())
    got = gen_ids(gpt_bin, trained["model"], "--prompt-file", pfile, "--temperature", 0,
                  "--max-new-tokens", 100)
    want = check_greedy(ref, prompt, got, 100, eot, "past n_ctx")
    assert len(prompt) + len(want) > N_CTX + 10, \
        f"the reference stopped at <|endoftext|> after {len(want)} tokens: the slide was not exercised"


def test_greedy_without_cache(gpt_bin, trained, workdir):
    """--no-cache (offered for comparison) runs a full forward pass over the context for
    every token, the context sliding as with the cache: the same tokens as the cached
    reference, and as a reference that never caches (full forward passes over the window
    ctx[start:], start moved to the last n_ctx/2 tokens whenever the window would exceed
    n_ctx)."""
    ref, eot = trained["ref"], trained["eot"]
    prompt = encode(gpt_bin, trained["tok"], PROMPT_20, workdir)
    got = gen_ids(gpt_bin, trained["model"], "--prompt", PROMPT_20, "--temperature", 0,
                  "--max-new-tokens", 100, "--no-cache")
    check_greedy(ref, prompt, got, 100, eot, "--no-cache")
    ctx, start, want = list(prompt), 0, []
    with torch.no_grad():
        while len(want) < 100:
            tok = int(torch.argmax(ref(torch.tensor([ctx[start:]]))[0, -1]))
            if tok == eot:
                break
            want.append(tok)
            ctx.append(tok)
            if len(ctx) - start > N_CTX:
                start = len(ctx) - N_CTX // 2
    assert got == want, f"--no-cache differs from the uncached reference at {first_difference(got, want)}"


def test_greedy_empty_prompt_starts_from_eot(gpt_bin, trained):
    got = gen_ids(gpt_bin, trained["model"], "--prompt", "", "--temperature", 0, "--max-new-tokens", 40)
    want = check_greedy(trained["ref"], [], got, 40, trained["eot"], "empty prompt")
    assert want == torch_gpt.generate_greedy(trained["ref"], [trained["eot"]], 40, trained["eot"])
    assert len(want) > 0


def test_prompt_longer_than_n_ctx_is_cut_from_the_left(gpt_bin, trained, workdir):
    text = MOBY.read_bytes()[2000:2600].decode()
    prompt = encode(gpt_bin, trained["tok"], text, workdir)
    assert len(prompt) > N_CTX + 10
    proc = generate(gpt_bin, trained["model"], "--prompt", text, "--temperature", 0,
                    "--max-new-tokens", 30, "--ids")
    got = ids_lines(proc)[0]
    err = proc.stderr.decode(errors="replace")
    notice = [line for line in err.splitlines() if "prompt" in line and ("n_ctx" in line or str(N_CTX) in line)]
    assert notice, f"a prompt longer than n_ctx should give a notice on stderr naming the context length:\n{err}"
    want = check_greedy(trained["ref"], prompt, got, 30, trained["eot"], "prompt longer than n_ctx")
    assert want == torch_gpt.generate_greedy(trained["ref"], prompt[-N_CTX:], 30, trained["eot"])
    assert len(got) > 0


def test_bare_model_needs_tokenizer(gpt_bin, trained):
    bare = trained["bare"]
    proc = generate(gpt_bin, bare, "--prompt", PROMPT, "--temperature", 0, check=False)
    error_of(proc, "--tokenizer")
    proc = sh_bytes([gpt_bin, "score", "--model", bare, "--text", PROMPT], check=False)
    error_of(proc, "--tokenizer")
    # with --tokenizer it works: a post-LN model (GPT-1's layout) against the reference,
    # 100 tokens from a 20-token prompt so that it slides too
    prompt = encode(gpt_bin, trained["tok"], PROMPT_20, trained["dir"])
    got = gen_ids(gpt_bin, bare, "--tokenizer", trained["tok"], "--prompt", PROMPT_20,
                  "--temperature", 0, "--max-new-tokens", 100)
    check_greedy(trained["bare_ref"], prompt, got, 100, trained["eot"], "bare post-LN model")


# --------------------------------------------------------------------------- sampling

SAMPLE = ["--temperature", 1, "--top-k", 50, "--max-new-tokens", 60]


def test_same_seed_same_sample_other_seed_other(gpt_bin, trained):
    m = trained["model"]
    a = gen_ids(gpt_bin, m, "--prompt", PROMPT, *SAMPLE, "--seed", 1)
    b = gen_ids(gpt_bin, m, "--prompt", PROMPT, *SAMPLE, "--seed", 1)
    c = gen_ids(gpt_bin, m, "--prompt", PROMPT, *SAMPLE, "--seed", 2)
    assert a == b, f"same seed, different samples at {first_difference(a, b)}"
    assert a != c, "seeds 1 and 2 gave the same sample"
    # the default seed is 1337
    d = gen_ids(gpt_bin, m, "--prompt", PROMPT, *SAMPLE)
    e = gen_ids(gpt_bin, m, "--prompt", PROMPT, *SAMPLE, "--seed", 1337)
    assert d == e
    # sampling differs from greedy (T = 1 on a small model)
    g = gen_ids(gpt_bin, m, "--prompt", PROMPT, "--temperature", 0, "--max-new-tokens", 60)
    assert a != g


def test_num_samples(gpt_bin, trained):
    proc = generate(gpt_bin, trained["model"], "--prompt", PROMPT, *SAMPLE, "--seed", 3,
                    "--num-samples", 3, "--ids")
    lines = ids_lines(proc)
    assert len(lines) == 3, f"--num-samples 3 --ids should print 3 lines:\n{proc.stdout.decode()}"
    assert len({tuple(x) for x in lines}) > 1, "three identical samples"
    # every sample is a valid draw from the prompt (not a continuation of the previous one)
    for ids in lines:
        check_top_k(trained, PROMPT, ids, 50)


def check_top_k(trained, prompt_text, ids, k):
    """Every drawn token is among the reference's k most likely at its step."""
    prompt = encode_cached(trained, prompt_text)
    rows = torch_gpt.logits_along(trained["ref"], prompt, ids, trained["eot"])
    for i, (row, t) in enumerate(zip(rows, ids)):
        kth = torch.topk(row, k).values[-1]
        assert row[t] >= kth - TIE_TOL, \
            f"token {i} ({t}) is not among the {k} most likely (logit {float(row[t]):.5f} < {float(kth):.5f})"


def encode_cached(trained, text):
    cache = trained.setdefault("encoded", {})
    if text not in cache:
        f = trained["dir"] / "enc.txt"
        f.write_bytes(text.encode())
        cache[text] = [int(t) for t in sh_bytes([trained["gpt"], "tokenize",
                                           "--tokenizer", trained["tok"], f]).stdout.split()]
    return cache[text]


def test_top_k_draws_from_the_k_most_likely(gpt_bin, trained):
    for seed in (1, 2):
        ids = gen_ids(gpt_bin, trained["model"], "--prompt", PROMPT_20, "--temperature", 1.5,
                      "--top-k", 3, "--max-new-tokens", 100, "--seed", seed)
        assert len(ids) > 0
        check_top_k(trained, PROMPT_20, ids, 3)


def test_top_p_draws_from_the_nucleus(gpt_bin, trained):
    """With --top-p P the drawn token is one of the smallest set of most likely tokens
    whose probability (at the sampling temperature) reaches P: the mass of the tokens
    more likely than it is below P."""
    T, P = 1.0, 0.9
    prompt = encode_cached(trained, PROMPT_20)
    for seed in (1, 2):
        ids = gen_ids(gpt_bin, trained["model"], "--prompt", PROMPT_20, "--temperature", T,
                      "--top-p", P, "--max-new-tokens", 100, "--seed", seed)
        assert len(ids) > 0
        rows = torch_gpt.logits_along(trained["ref"], prompt, ids, trained["eot"])
        for i, (row, t) in enumerate(zip(rows, ids)):
            p = torch.softmax(row / T, -1)
            above = float(p[p > p[t] * (1 + 1e-4)].sum())
            assert above < P + 1e-4, f"token {i} ({t}, p={float(p[t]):.4f}) is outside the top-p {P} nucleus: " \
                                     f"tokens more likely than it hold {above:.4f}"


def test_top_k_1_and_tiny_top_p_are_greedy(gpt_bin, trained):
    m = trained["model"]
    greedy = gen_ids(gpt_bin, m, "--prompt", PROMPT_20, "--temperature", 0, "--max-new-tokens", 100)
    k1 = gen_ids(gpt_bin, m, "--prompt", PROMPT_20, "--temperature", 1, "--top-k", 1,
                 "--max-new-tokens", 100, "--seed", 9)
    p0 = gen_ids(gpt_bin, m, "--prompt", PROMPT_20, "--temperature", 1, "--top-p", "1e-6",
                 "--max-new-tokens", 100, "--seed", 9)
    assert k1 == greedy, f"--top-k 1 differs from greedy at {first_difference(k1, greedy)}"
    assert p0 == greedy, f"--top-p 1e-6 differs from greedy at {first_difference(p0, greedy)}"


def test_text_output_is_the_detokenized_ids(gpt_bin, trained):
    """Byte for byte. The bare model (random weights, std 0.2) samples byte tokens 128-255
    freely, so its text has UTF-8 characters split across tokens and invalid sequences,
    which the streamed output must pass through unchanged."""
    m, tok, bare = trained["model"], trained["tok"], trained["bare"]
    n_regular = trained["eot"]  # ids below eot have bytes; eot and later are special
    cases = [(m, ["--seed", 4, *SAMPLE]), (m, ["--temperature", 0, "--max-new-tokens", 100]),
             (m, ["--seed", 5, "--temperature", 1, "--top-p", 0.9, "--max-new-tokens", 100]),
             (bare, ["--tokenizer", tok, "--seed", 2, "--temperature", 1, "--max-new-tokens", 100]),
             (bare, ["--tokenizer", tok, "--seed", 3, "--temperature", 1, "--max-new-tokens", 100])]
    high = 0
    for model, opts in cases:
        text = generate(gpt_bin, model, "--prompt", PROMPT, *opts).stdout
        ids = gen_ids(gpt_bin, model, "--prompt", PROMPT, *opts)
        high += sum(128 <= i < 256 for i in ids)
        gens = {detokenize(gpt_bin, tok, ids), detokenize(gpt_bin, tok, [i for i in ids if i < n_regular])}
        # the generated text (special tokens spelled out or not), possibly after the
        # prompt and with a final newline
        candidates = {p + g + e for g in gens for p in (b"", PROMPT.encode()) for e in (b"", b"\n")}
        assert text in candidates, f"{model.name} {opts}: text output\n{text!r}\nis not the detokenized ids\n{gens}"
    assert high > 10, "the bare model's samples should hold raw byte tokens 128-255"


# --------------------------------------------------------------------------- score

def gpt_score(gpt_bin, model, *opts):
    proc = sh_bytes([gpt_bin, "score", "--model", model, *opts, "--json"])
    lines = [line for line in proc.stdout.decode().splitlines() if line.strip().startswith("{")]
    assert len(lines) == 1, f"gpt score --json should print one JSON object:\n{proc.stdout.decode()}"
    return json.loads(lines[0])


def check_score(r, want, text_bytes, what):
    ll = r["log_likelihood"]
    assert ll <= 0
    assert r["tokens"] == want["tokens"], what
    assert r["windows"] == want["windows"], f"{what}: windows {r['windows']} vs reference {want['windows']}"
    assert r["stride"] == want["stride"], what
    assert ll == pytest.approx(want["log_likelihood"], rel=LL_RTOL), \
        f"{what}: gpt score {ll!r} vs reference {want['log_likelihood']!r}"
    n = r["tokens"]
    assert r["nll_per_token"] == pytest.approx(-ll / n, rel=1e-6), what
    assert r["perplexity"] == pytest.approx(math.exp(-ll / n), rel=1e-5), what
    assert r["bytes"] == text_bytes, what
    assert r["bits_per_byte"] == pytest.approx(-ll / math.log(2) / text_bytes, rel=1e-6), what


def test_score_equals_reference(gpt_bin, trained, workdir):
    ref, eot, model, tok = trained["ref"], trained["eot"], trained["model"], trained["tok"]
    # short (< n_ctx), not ASCII: bytes are not characters
    short = "Call me Ishmael, said the naïve harpooneer — “a whale!”"
    ids = [eot] + encode(gpt_bin, tok, short, workdir)
    assert len(ids) - 1 < N_CTX
    want = torch_gpt.score(ref, ids)
    assert want["windows"] == 1
    check_score(gpt_score(gpt_bin, model, "--text", short), want, len(short.encode()), "short text")
    # long: held-out Moby Dick (after the training slice), several windows, three strides
    raw = MOBY.read_bytes()[40_000:42_500]
    text = raw[raw.index(b"\n\n") + 2:].decode()
    f = workdir / "long.txt"
    f.write_bytes(text.encode())
    ids = [eot] + encode(gpt_bin, tok, text, workdir)
    assert len(ids) - 1 > 4 * N_CTX
    for stride in (None, 16, N_CTX):
        want = torch_gpt.score(ref, ids, stride=stride)
        opts = ["--file", f] + ([] if stride is None else ["--stride", stride])
        r = gpt_score(gpt_bin, model, *opts)
        check_score(r, want, len(text.encode()), f"long text, --stride {stride}")
        if stride is None:
            assert r["stride"] == N_CTX // 2
            default = r
    # the overlapping windows give each token more context: a better score than stride n_ctx
    assert default["log_likelihood"] > want["log_likelihood"]
    # a trained model beats a uniform one on held-out text
    assert default["nll_per_token"] < math.log(ref.cfg["vocab_size"]) - 0.5
    # the bare model with --tokenizer, stride 1 (every token with the longest context)
    ids2 = ids[:150]
    want = torch_gpt.score(trained["bare_ref"], ids2, stride=1)
    g = workdir / "mid.txt"
    g.write_bytes(detokenize(gpt_bin, tok, ids2[1:]))
    assert [eot] + encode(gpt_bin, tok, g.read_text(), workdir) == ids2, "re-encoding changed the tokens"
    r = gpt_score(gpt_bin, trained["bare"], "--tokenizer", tok, "--file", g, "--stride", 1)
    check_score(r, want, g.stat().st_size, "bare model, --stride 1")


# --------------------------------------------------------------------------- bad options

@pytest.mark.parametrize("opts, option", [
    (["--top-p", 0], "--top-p"), (["--top-p", 1.5], "--top-p"), (["--top-p", -0.2], "--top-p"),
    (["--temperature", -1], "--temperature"), (["--top-k", -1], "--top-k"),
])
def test_bad_sampling_options(gpt_bin, trained, opts, option):
    proc = generate(gpt_bin, trained["model"], "--prompt", PROMPT, *opts, check=False)
    error_of(proc, option)
    assert proc.stdout == b"", "a refused run printed text"


def test_score_refuses_empty_text(gpt_bin, trained, workdir):
    proc = sh_bytes([gpt_bin, "score", "--model", trained["model"], "--text", ""], check=False)
    assert proc.returncode != 0 and proc.stderr.strip()
    empty = workdir / "empty.txt"
    empty.write_bytes(b"")
    proc = sh_bytes([gpt_bin, "score", "--model", trained["model"], "--file", empty], check=False)
    assert proc.returncode != 0 and proc.stderr.strip()
