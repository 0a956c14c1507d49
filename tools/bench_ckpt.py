#!/usr/bin/python3
"""Checkpoint write and load speed for a preset (default gpt1: parameters plus both Adam
moments, 1.4 GB) on 1 and 2 ranks, each beside a plain sequential write and read of the
same bytes to the same directory in the same run (build/tools/ckpt_bench). Prints one
table. Measurements, not tests.

    make bench-ckpt        # or: /usr/bin/python3 tools/bench_ckpt.py [--preset gpt1] [--reps 3] [--dir DIR]

Both writes include fsync (the checkpoint also its rename and the directory's fsync).
Before each read the page cache is dropped where this process may (root with a writable
/proc/sys/vm/drop_caches), so both reads come from the disk; the table says whether they
did ("cold") or came from the cache ("warm")."""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT = os.path.join(ROOT, "bin", "gpt")
BENCH = os.path.join(ROOT, "build", "tools", "ckpt_bench")
ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "OMPI_MCA_rmaps_base_oversubscribe": "1", "OPENBLAS_NUM_THREADS": "1"}


def run(cmd):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=ENV, timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gpt1")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default=os.path.join(ROOT, "build"), help="where to write (default: build/)")
    args = ap.parse_args()
    for path in (GPT, BENCH):
        if not os.access(path, os.X_OK):
            sys.exit(f"{path} is missing: run `make bin/gpt build/tools/ckpt_bench`")
    os.makedirs(args.dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        text = os.path.join(work, "text.txt")
        with open(text, "w") as f:  # a tokenizer only to ride along in the checkpoint
            f.write("the quick brown fox jumps over the lazy dog\n" * 200)
        tok = os.path.join(work, "tok.h5")
        run([GPT, "tokenizer", "train", "--merges", 50, "--out", tok, text])
        rows = []
        for ranks in (1, 2):
            out = run(["mpirun", "-np", ranks, BENCH, work, tok, args.preset, args.reps])
            rows.append(json.loads(out.strip().splitlines()[-1]))
    gb = rows[0]["bytes"] / 1e9
    print(f"checkpoint of {args.preset}: {gb:.2f} GB (parameters + Adam's m and v), best of {args.reps}, "
          f"directory {args.dir}")
    print(f"{'ranks':>5} | {'plain write':>11} | {'ckpt write':>10} | {'ckpt/plain':>10} | "
          f"{'plain read':>10} | {'ckpt load':>9} | {'load/plain':>10} | reads")
    for r in rows:
        pw, cw, pr, cl = (r[k] for k in ("plain_write_s", "ckpt_write_s", "plain_read_s", "ckpt_load_s"))
        print(f"{r['ranks']:>5} | {gb / pw:>6.2f} GB/s | {gb / cw:>5.2f} GB/s | {cw / pw:>9.2f}x | "
              f"{gb / pr:>5.2f} GB/s | {gb / cl:>4.2f} GB/s | {cl / pr:>9.2f}x | {'cold' if r['cold'] else 'warm'}")
    print("ckpt/plain and load/plain: the checkpoint's time over the plain file's (target: write within 1.5x)")


if __name__ == "__main__":
    main()
