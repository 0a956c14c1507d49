#!/usr/bin/python3
"""Weak scaling of `gpt train`: the same per-rank batch on 1 rank x 1 BLAS thread, 2 ranks
x 1 thread and 1 rank x 2 threads, beside `gpt bench` (the engine alone, no data path or
communication) for the same model and batch. Prints one table. Measurements, not tests.

    /usr/bin/python3 tools/bench_train.py [--model small] [--batch 8] [--steps 30] [--skip 5] [--reps 2]

tokens/s is total tokens over total step time of the steps after --skip (from
metrics.jsonl), the best of --reps runs (this shared machine loses up to a third of a
run's speed to other work); "comm not hidden" is the summed comm_wait_s (time left
waiting for the gradient allreduce after the backward pass) over the summed step time."""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT = os.path.join(ROOT, "bin", "gpt")
MOBY = os.path.join(ROOT, "tests", "js", "node_modules", "@stdlib", "datasets-moby-dick", "data", "data.txt")
ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "OMPI_MCA_rmaps_base_oversubscribe": "1", "OPENBLAS_NUM_THREADS": "1"}


def sh(cmd):
    try:
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=ENV, timeout=1800)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{' '.join(map(str, cmd))} timed out")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def train(work, corpus, name, ranks, threads, args):
    out = os.path.join(work, name)
    cmd = [GPT, "train", "--data", corpus, "--model", args.model, "--out", out, "--steps", args.steps,
           "--batch", args.batch, "--threads", threads, "--eval-every", 0, "--log-every", args.steps, "--overwrite"]
    sh(["mpirun", "-np", ranks, *cmd] if ranks > 1 else cmd)
    try:
        rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))][args.skip:]
        step_s = sum(r["step_s"] for r in rows)
        return {"tokens_per_s": sum(r["tokens_per_s"] * r["step_s"] for r in rows) / step_s,
                "comm": sum(r["comm_wait_s"] for r in rows) / step_s}
    except (OSError, ValueError, KeyError, ZeroDivisionError) as e:
        raise RuntimeError(f"{name}: cannot read {out}/metrics.jsonl: {e!r}")


def best(reps, fn):
    """The run with the highest tokens/s of reps; RuntimeError only if all fail."""
    runs, errors = [], []
    for _ in range(reps):
        try:
            runs.append(fn())
        except RuntimeError as e:
            errors.append(e)
    if not runs:
        raise errors[-1]
    return max(runs, key=lambda r: r["tokens_per_s"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip", type=int, default=5, help="warm-up steps left out")
    ap.add_argument("--reps", type=int, default=2, help="runs of each layout; the best counts")
    args = ap.parse_args()
    if args.steps <= args.skip or args.reps < 1:
        ap.error("--steps must exceed --skip, and --reps be at least 1")
    if not os.path.exists(MOBY):
        sys.exit(f"bench_train: {MOBY} not found: run `make deps`")
    with tempfile.TemporaryDirectory(prefix="bench_train.") as work:
        tok, corpus = os.path.join(work, "tok.h5"), os.path.join(work, "corpus.h5")
        sh([GPT, "tokenizer", "train", "--merges", 7932, "--out", tok, MOBY])
        sh([GPT, "prepare", "--tokenizer", tok, "--out", corpus, "--split-on-blank-lines", MOBY])
        cases = [("1 rank x 1 thread", 1, 1), ("2 ranks x 1 thread", 2, 1), ("1 rank x 2 threads", 1, 2)]
        results = {}
        for name, ranks, threads in cases:
            try:
                results[name] = best(args.reps, lambda: train(work, corpus, name.replace(" ", "_"), ranks, threads, args))
            except RuntimeError as e:
                print(e, file=sys.stderr)
        bench = {}
        for threads in (1, 2):
            try:
                bench[threads] = best(args.reps, lambda: json.loads(sh(
                    [GPT, "bench", "--model", args.model, "--batch", args.batch, "--threads", threads, "--steps", 10,
                     "--json"])))
            except (RuntimeError, ValueError) as e:
                print(e, file=sys.stderr)
    base = results.get(cases[0][0], {}).get("tokens_per_s")
    core = bench.get(1, {}).get("openblas_core", "?")
    print(f"gpt train, {args.model}, batch {args.batch} windows per rank, steps {args.skip + 1}-{args.steps}, "
          f"best of {args.reps}, OpenBLAS {core}")
    print(f"{'layout':<22}{'tokens/s':>10}{'speedup':>9}{'efficiency':>11}{'comm not hidden':>17}"
          f"{'gpt bench tok/s':>17}{'train/bench':>13}")
    for name, ranks, threads in cases:
        r = results.get(name)
        if not r:
            print(f"{name:<22}{'FAILED':>10}")
            continue
        sp = r["tokens_per_s"] / base if base else float("nan")
        b = bench.get(threads, {}).get("tokens_per_s")
        bench_col = f"{b * ranks:>17.1f}" if b else f"{'-':>17}"
        ratio = f"{r['tokens_per_s'] / (b * ranks):>12.1%}" if b else f"{'-':>12}"
        print(f"{name:<22}{r['tokens_per_s']:>10.1f}{sp:>8.2f}x{sp / max(ranks, threads):>10.1%}"
              f"{r['comm']:>16.1%}{bench_col} {ratio}")
    print("gpt bench tok/s: the engine alone with the same threads, times the number of ranks")


if __name__ == "__main__":
    main()
