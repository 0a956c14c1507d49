#!/usr/bin/python3
"""Checkpoint write and load speed for a preset (default gpt1: parameters plus both Adam
moments, 1.4 GB) on 1 and 2 ranks, each beside a plain sequential write and read of the
same bytes to the same directory in the same run (build/tools/ckpt_bench). Then the
cost of checkpoints inside `gpt train` (--vocab 40478: GPT-1's 117 M parameters), as
PyTorch DCP's benchmarks report it: the seconds training is blocked, the write's whole
duration, and the speed of the steps the write overlaps, for synchronous and
background (--async-ckpt) checkpoints beside the plain write. Prints two tables.
Measurements, not tests.

    make bench-ckpt        # or: /usr/bin/python3 tools/bench_ckpt.py [--preset gpt1] [--reps 3] [--dir DIR]
                           #     [--train-steps 10] [--no-train]

Both writes include fsync (the checkpoint also its rename and the directory's fsync).
Before each read the page cache is dropped where this process may (root with a writable
/proc/sys/vm/drop_caches), so both reads come from the disk; the table says whether they
did ("cold") or came from the cache ("warm")."""

import argparse
import json
import os
import statistics
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
    ap.add_argument("--train-steps", type=int, default=10, help="steps of each training run (checkpoints every 3)")
    ap.add_argument("--no-train", action="store_true", help="only the first table")
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
        training = [] if args.no_train else train_table(work, args)
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
    if training:
        plain = {r["ranks"]: r["plain_write_s"] for r in rows}
        print(f"\ncheckpoints in gpt train --model {args.preset} --vocab {VOCAB}, batch 1, {args.train_steps} steps, one every "
              f"{EVERY} (medians over them; the plain write of the same bytes from the table above)")
        print(f"{'ranks':>5} | {'mode':>10} | {'first blocked s':>15} | {'blocked s':>9} | {'write s':>7} | {'plain s':>7} | "
              f"{'blocked/sync':>12} | {'sync/plain':>10} | {'step s':>6} | {'overlapped step s':>17}")
        sync = {t["ranks"]: t for t in training if not t["async"]}
        for t in training:
            ref = sync[t["ranks"]]
            print(f"{t['ranks']:>5} | {'background' if t['async'] else 'sync':>10} | {t['first_blocked_s']:>15.3f} | "
                  f"{t['blocked_s']:>9.3f} | "
                  f"{t['write_s']:>7.3f} | {plain[t['ranks']]:>7.3f} | {t['blocked_s'] / ref['blocked_s']:>11.1%} | "
                  f"{ref['write_s'] / plain[t['ranks']]:>9.2f}x | {t['step_s']:>6.3f} | {t['overlap_step_s']:>17.3f}")
        print("first blocked s: the first checkpoint, which allocates the staging buffer; blocked s: the later ones' "
              "median; blocked/sync: training blocked by the checkpoint over the synchronous write (target: at most 10%); "
              "sync/plain: the synchronous write over the plain write (target: within 1.5x); overlapped step s: the "
              "steps after a background checkpoint until it commits (synchronous: the steps after one)")


VOCAB, EVERY = 40478, 3


def train_table(work, args):
    """gpt train with checkpoints every EVERY steps, synchronous and background, on 1 and 2
    ranks: blocked, write and step times from metrics.jsonl."""
    tok, text = os.path.join(work, "tok.h5"), os.path.join(work, "text.txt")
    corpus = os.path.join(work, "corpus.h5")
    run([GPT, "prepare", "--tokenizer", tok, "--out", corpus, text])
    out = []
    for ranks in (1, 2):
        for bg in (False, True):
            d = os.path.join(work, f"train{ranks}{int(bg)}")
            run(["mpirun", "-np", ranks, GPT, "train", "--data", corpus, "--model", args.preset, "--vocab", VOCAB,
                 "--out", d, "--steps", args.train_steps, "--batch", 1, "--eval-every", 0, "--log-every", 1000,
                 "--ckpt-every", EVERY, "--keep", 1, "--overwrite", "--threads", 1, *(["--async-ckpt"] if bg else [])])
            with open(os.path.join(d, "metrics.jsonl")) as f:
                lines = [json.loads(x) for x in f]
            ckpts = [m for m in lines if "ckpt_blocked_s" in m and m["step"] < args.train_steps]  # the last one waits
            overlap, plain_steps = [], []
            for m in lines[1:]:  # the first step warms up
                before = [c for c in ckpts if c["step"] < m["step"]]
                recent = before[-1] if before else None
                # a step overlaps the write of the checkpoint before it until the write's end
                if recent and (m["step"] == recent["step"] + 1 or sum(
                        x["step_s"] for x in lines if recent["step"] < x["step"] < m["step"]) < recent["ckpt_write_s"]):
                    overlap.append(m["step_s"])
                elif "ckpt_blocked_s" not in m:
                    plain_steps.append(m["step_s"])
            later = ckpts[1:] or ckpts  # the first allocates the staging buffer (first touch of its pages)
            out.append({"ranks": ranks, "async": bg, "first_blocked_s": ckpts[0]["ckpt_blocked_s"],
                        "blocked_s": statistics.median(c["ckpt_blocked_s"] for c in later),
                        "write_s": statistics.median(c["ckpt_write_s"] for c in later),
                        "step_s": statistics.median(plain_steps) if plain_steps else float("nan"),
                        "overlap_step_s": statistics.median(overlap) if overlap else float("nan")})
    return out


if __name__ == "__main__":
    main()
