#!/usr/bin/python3
"""`gpt prepare` of a large corpus in bounded memory: peak RSS and MB/s per rank.

About --gb GB (default 2) of text, Moby Dick repeated (tests/js/node_modules, `make
deps`), as paragraphs, with GPT-2's vocabulary (r50k_base.tiktoken), prepared:
  * with 1 and 2 ranks, unbounded (--max-memory 1048576) and with --max-memory MB
    (default 256), and the same bounded run on a .zst of the same text (zstd -3);
  * for each: prepare's own seconds and MB/s of text per rank, its rounds, and the peak
    RSS of its largest rank (VmHWM), beside the targets:
      peak RSS <= (bound + tokenizer) x 1.10, the tokenizer's memory measured here as
      the peak of a tiny prepare with GPT-2's vocabulary less that with a 256-token one;
      bounded MB/s >= 90% of unbounded at the same P.
Every corpus written is checked to be identical to the first (h5py). Nothing here is a
pass/fail test; the targets are printed as met or not.

    /usr/bin/python3 tools/bench_prepare.py [--gb 2] [--max-memory 256] [--keep DIR]"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT = os.environ.get("GPT_BIN") or os.path.join(ROOT, "bin", "gpt")
NM = os.path.join(ROOT, "tests", "js", "node_modules")
TIKTOKEN = os.path.join(NM, "gpt-tokenizer", "data", "r50k_base.tiktoken")
MOBY = os.path.join(NM, "@stdlib", "datasets-moby-dick", "data", "data.txt")
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
       "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1"}
WROTE = re.compile(r"([\d.]+) MB of text \(([\d.]+) MB of files\) in ([\d.]+) s \(([\d.]+) MB/s\) on (\d+) rank\(s\), "
                   r"(\d+) round\(s\), peak RSS (\d+) MB a rank")


def prepare(tok, out, inputs, ranks, max_memory):
    cmd = [GPT, "prepare", "--tokenizer", tok, "--out", out, "--split-on-blank-lines", "--max-memory",
           str(max_memory), *inputs]
    cmd = ["mpirun", "-np", str(ranks), "--bind-to", "none", *cmd]  # both under mpirun: alike start-up
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=ENV, timeout=7200)
    if proc.returncode != 0:
        sys.exit(f"bench_prepare: {' '.join(map(str, cmd))} failed:\n{proc.stderr[-3000:]}")
    m = WROTE.search(proc.stdout)
    text_mb, _, secs, rate, p, rounds, rss = m.groups()
    return {"text_mb": float(text_mb), "seconds": float(secs), "rate": float(rate) / int(p),
            "rounds": int(rounds), "rss": float(rss)}


def same_corpus(a, b):
    with h5py.File(a) as x, h5py.File(b) as y:
        for k in ("train/tokens", "train/doc_offsets", "val/tokens", "val/doc_offsets"):
            n = len(x[k])
            if n != len(y[k]):
                return False
            for at in range(0, n, 1 << 26):  # in pieces: the datasets are GBs
                if not np.array_equal(x[k][at:at + (1 << 26)], y[k][at:at + (1 << 26)]):
                    return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--max-memory", type=int, default=256)
    ap.add_argument("--keep", help="work in this directory and keep it (default: a temp dir)")
    args = ap.parse_args()
    for path, hint in ((GPT, "run `make`"), (MOBY, "run `make deps`"), (TIKTOKEN, "run `make deps`")):
        if not os.path.exists(path):
            sys.exit(f"bench_prepare: {path} not found: {hint}")
    work = args.keep or tempfile.mkdtemp(prefix="bench_prepare.", dir=os.environ.get("TMPDIR", "/var/tmp"))
    os.makedirs(work, exist_ok=True)
    try:
        run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(args, work):
    tok, small_tok = os.path.join(work, "gpt2.h5"), os.path.join(work, "bytes.h5")
    subprocess.run([GPT, "tokenizer", "import", "--out", tok, "--tiktoken", TIKTOKEN], check=True, env=ENV,
                   capture_output=True)
    moby = open(MOBY, "rb").read()
    tiny = os.path.join(work, "tiny.txt")
    with open(tiny, "wb") as f:
        f.write(moby[:20000])
    subprocess.run([GPT, "tokenizer", "train", "--merges", "1", "--out", small_tok, tiny], check=True, env=ENV,
                   capture_output=True)
    text = os.path.join(work, "text.txt")
    copies = max(1, int(args.gb * 1e9 / len(moby)))
    with open(text, "wb") as f:
        for _ in range(copies):
            f.write(moby)
    zst = text + ".zst"
    subprocess.run(["zstd", "-q", "-f", "-3", "-T0", "-o", zst, text], check=True)
    print(f"bench_prepare: {len(moby) * copies / 1e9:.2f} GB of text (Moby Dick x{copies}), .zst "
          f"{os.path.getsize(zst) / 1e6:.0f} MB, in {work}", file=sys.stderr, flush=True)

    base = prepare(small_tok, os.path.join(work, "t0.h5"), [tiny], 1, 1 << 20)["rss"]
    with_tok = prepare(tok, os.path.join(work, "t1.h5"), [tiny], 1, 1 << 20)["rss"]
    tok_mb = max(0.0, with_tok - base)
    bound = args.max_memory
    rss_target = (bound + tok_mb) * 1.10

    rows, ref = [], None
    for ranks in (1, 2):
        for label, inputs, mem in (("plain, unbounded", [text], 1 << 20), (f"plain, --max-memory {bound}", [text], bound),
                                   (f".zst, --max-memory {bound}", [zst], bound)):
            if ranks == 2 and label.startswith(".zst"):
                continue
            out = os.path.join(work, f"c_{ranks}_{len(rows)}.h5")
            r = prepare(tok, out, inputs, ranks, mem)
            r.update(ranks=ranks, label=label, bounded=mem == bound)
            if ref is None:
                ref = out
                r["same"] = "reference"
            else:
                r["same"] = "identical" if same_corpus(ref, out) else "DIFFERS"
                os.remove(out)
            rows.append(r)
            print(f"  {ranks} rank(s), {label}: {r['rate']:.1f} MB/s a rank, {r['rounds']} rounds, "
                  f"peak {r['rss']:.0f} MB", file=sys.stderr, flush=True)

    print(f"\n{'ranks':>5}  {'input':<28}{'seconds':>8}{'MB/s/rank':>10}{'rounds':>7}{'peak RSS MB':>12}  "
          f"{'vs unbounded':>12}  corpus")
    print("-" * 100)
    for r in rows:
        unb = next(u for u in rows if u["ranks"] == r["ranks"] and u["label"] == "plain, unbounded")
        share = f"{100 * r['rate'] / unb['rate']:.0f}%" if r is not unb else "-"
        print(f"{r['ranks']:>5}  {r['label']:<28}{r['seconds']:8.1f}{r['rate']:10.1f}{r['rounds']:7d}"
              f"{r['rss']:12.0f}  {share:>12}  {r['same']}")
    print(f"\nprogram alone (tiny prepare, 256-token vocabulary): {base:.0f} MB; GPT-2 tokenizer: {tok_mb:.0f} MB")
    for r in rows:
        if not r["bounded"]:
            continue
        unb = next(u for u in rows if u["ranks"] == r["ranks"] and u["label"] == "plain, unbounded")
        print(f"target {r['ranks']} rank(s) {r['label']}: peak {r['rss']:.0f} MB <= (bound {bound} + tokenizer "
              f"{tok_mb:.0f}) x 1.1 = {rss_target:.0f}: {'met' if r['rss'] <= rss_target else 'NOT met'}; "
              f"{100 * r['rate'] / unb['rate']:.0f}% of unbounded MB/s >= 90%: "
              f"{'met' if r['rate'] >= 0.9 * unb['rate'] else 'NOT met'}")
    print(f"CPU: {cpu_name()}; {os.cpu_count()} CPUs; OPENBLAS_NUM_THREADS=1")


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


if __name__ == "__main__":
    main()
