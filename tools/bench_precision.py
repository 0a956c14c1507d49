#!/usr/bin/python3
"""Training quality in bf16 (docs/precision.md): the same runs in fp32 and bf16, their
final validation losses and wall times. Measurements, not tests.

    make bench-precision     # or: /usr/bin/python3 tools/bench_precision.py [--text FILE] [--threads T]

1. `tiny` for 300 steps on Moby Dick (the npm package the tests use), a BPE of 500 merges.
2. nanoGPT's shakespeare-char setup: 4 layers, 4 heads, 128 wide, context 64, batch 12,
   2000 steps, lr 1e-3 to 1e-4 with 100 warm-up steps, no dropout, on characters (a
   byte-level tokenizer without merges), 90/10 split. The text: --text (default
   tinyshakespeare.txt from ../shared/data if it is there; skipped otherwise).
Runs fp32 and bf16 one after the other on the same threads; the emulated or oneDNN path
is whichever this CPU gets (printed)."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT = os.environ.get("GPT_BIN") or os.path.join(ROOT, "bin", "gpt")
MOBY = os.path.join(ROOT, "tests", "js", "node_modules", "@stdlib", "datasets-moby-dick", "data", "data.txt")
SHAKESPEARE = os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt")


def sh(cmd):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        sys.exit(f"bench_precision: {' '.join(map(str, cmd))} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def corpus(work, name, text, merges):
    tok, out = os.path.join(work, f"{name}_tok.h5"), os.path.join(work, f"{name}.h5")
    sh([GPT, "tokenizer", "train", "--merges", merges, "--out", tok, text])
    sh([GPT, "prepare", "--tokenizer", tok, "--out", out, "--val-fraction", "0.1", "--split-on-blank-lines", text])
    return out


def run(work, data, name, precision, args):
    out = os.path.join(work, f"{name}_{precision}")
    t0 = time.time()
    p = sh([GPT, "train", "--data", data, "--out", out, "--precision", precision, "--ckpt-every", 0, "--keep", 1,
            *args])
    secs = time.time() - t0
    lines = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    val = [x["val_loss"] for x in lines if "val_loss" in x][-1]
    return val, secs, p.stdout.splitlines()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text", default=SHAKESPEARE if os.path.exists(SHAKESPEARE) else None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    cases = [("tiny", lambda w: corpus(w, "moby", MOBY, 500),
              ["--model", "tiny", "--steps", 300, "--batch", 8, "--eval-every", 300, "--eval-windows", 200])]
    if args.text:
        cases.append(("shakespeare-char", lambda w: corpus(w, "shakespeare", args.text, 0),
                      ["--model", "tiny", "--n-layer", 4, "--n-head", 4, "--n-embd", 128, "--n-ctx", 64,
                       "--dropout", 0, "--steps", 2000, "--batch", 12, "--lr", 1e-3, "--min-lr", 1e-4,
                       "--warmup", 100, "--weight-decay", 0.1, "--eval-every", 2000, "--eval-windows", 400]))
    else:
        print("shakespeare-char: skipped (no --text)", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, make, targs in cases:
            data = make(work)
            res = {p: run(work, data, name, p, [*targs, "--threads", args.threads]) for p in ("fp32", "bf16")}
            rows.append((name, res))
            print(f"  done: {name}", file=sys.stderr)
    print(f"{'case':<18}{'fp32 val':>10}{'bf16 val':>10}{'bf16/fp32':>11}{'fp32 s':>8}{'bf16 s':>8}")
    for name, res in rows:
        (vf, sf, _), (vb, sb, line) = res["fp32"], res["bf16"]
        print(f"{name:<18}{vf:>10.4f}{vb:>10.4f}{vb / vf:>10.4f}x{sf:>8.0f}{sb:>8.0f}")
    print("bf16 path:", rows[0][1]["bf16"][2].split("; ")[-1] if rows else "?")


if __name__ == "__main__":
    main()
