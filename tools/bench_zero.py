#!/usr/bin/python3
"""--shard-optimizer (ZeRO-1) against the unsharded optimizer, for one preset (default
gpt1 with GPT-1's vocabulary of 40478, 117 M parameters) on 1 and 2 ranks of this host:
the peak resident memory of the largest rank, in bytes a parameter beside the model
16 -> 8 + 8/P (parameters and gradients whole, Adam's m and v split), and the step time.
Prints one table. Measurements, not tests.

    make bench-zero        # or: /usr/bin/python3 tools/bench_zero.py [--preset gpt1] [--steps 6] [--reps 3]

Each layout runs --reps times, interleaved with the others (this shared machine's speed
drifts); a run's step time is the median of its steps after the first two, the table's
the median over runs. Peak memory is what `gpt train` reports at the end (VmHWM, the
largest over the ranks), with evaluation and checkpoints off."""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT = os.environ.get("GPT_BIN") or os.path.join(ROOT, "bin", "gpt")
MOBY = os.path.join(ROOT, "tests", "js", "node_modules", "@stdlib", "datasets-moby-dick", "data", "data.txt")
ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "OMPI_MCA_rmaps_base_oversubscribe": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
SKIP = 2  # warm-up steps left out of the step time


def sh(cmd):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=ENV, timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"bench_zero: {' '.join(map(str, cmd))} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def train(work, corpus, args, ranks, sharded):
    out = os.path.join(work, f"run{ranks}{int(sharded)}")
    cmd = ["mpirun", "-np", ranks, GPT, "train", "--data", corpus, "--model", args.preset, "--vocab", args.vocab,
           "--out", out, "--steps", args.steps, "--batch", 1, "--eval-every", 0, "--log-every", 1000, "--overwrite",
           "--threads", 1]
    text = sh(cmd + (["--shard-optimizer"] if sharded else []))
    peak = re.search(r"peak memory: (\d+) MiB on the largest", text)
    params = re.search(r"training (\d+) parameters", text)
    if not peak or not params:
        sys.exit(f"bench_zero: no peak memory or parameter count in gpt train's output:\n{text[-2000:]}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        steps = [json.loads(line) for line in f][SKIP:]
    return {"peak_mib": int(peak.group(1)), "params": int(params.group(1)),
            "step_s": statistics.median(s["step_s"] for s in steps),
            "wait_s": statistics.median(s["comm_wait_s"] for s in steps)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="gpt1")
    ap.add_argument("--vocab", type=int, default=40478, help="GPT-1's")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object too")
    args = ap.parse_args()
    if args.steps <= SKIP:
        ap.error(f"--steps must exceed {SKIP}")
    if not os.path.exists(MOBY):
        sys.exit(f"bench_zero: {MOBY} not found: run `make deps`")
    layouts = [(1, False), (1, True), (2, False), (2, True)]
    runs = {k: [] for k in layouts}
    with tempfile.TemporaryDirectory(prefix="bench_zero.") as work:
        tok, corpus = os.path.join(work, "tok.h5"), os.path.join(work, "corpus.h5")
        sh([GPT, "tokenizer", "train", "--merges", 2000, "--out", tok, MOBY])
        sh([GPT, "prepare", "--tokenizer", tok, "--out", corpus, "--split-on-blank-lines", MOBY])
        for _ in range(args.reps):
            for k in layouts:
                runs[k].append(train(work, corpus, args, *k))
    n = runs[layouts[0]][0]["params"]
    res = {}
    for k, rs in runs.items():
        res[k] = {"peak_mib": statistics.median(r["peak_mib"] for r in rs),
                  "step_s": statistics.median(r["step_s"] for r in rs),
                  "wait_s": statistics.median(r["wait_s"] for r in rs)}
    print(f"gpt train --model {args.preset} --vocab {args.vocab} ({n / 1e6:.1f} M parameters), batch 1, steps "
          f"{SKIP + 1}-{args.steps}, median of {args.reps} interleaved runs")
    print(f"{'ranks':>5} | {'optimizer':>9} | {'peak MiB':>8} | {'B/param':>7} | {'model B/param':>13} | "
          f"{'step s':>6} | {'comm wait s':>11}")
    for (P, sharded), r in res.items():
        print(f"{P:>5} | {'sharded' if sharded else 'whole':>9} | {r['peak_mib']:>8.0f} | "
              f"{r['peak_mib'] * 2**20 / n:>7.2f} | {8 + 8 / P if sharded else 16:>13.1f} | {r['step_s']:>6.3f} | "
              f"{r['wait_s']:>11.3f}")
    for P in (1, 2):
        saved = (res[P, False]["peak_mib"] - res[P, True]["peak_mib"]) * 2**20
        model = 8 * (1 - 1 / P) * n
        line = f"P={P}: sharding saves {saved / 2**20:.0f} MiB a rank"
        if P > 1:
            line += (f", {100 * saved / model:.1f}% of the model's 8 (1 - 1/P) bytes a parameter "
                     f"({model / 2**20:.0f} MiB; target: within 5%); step time sharded/whole "
                     f"{res[P, True]['step_s'] / res[P, False]['step_s']:.3f} (target: within 3%)")
        print(line)
    if args.json:
        print(json.dumps({"params": n, "layouts": [{"ranks": P, "sharded": s, **r} for (P, s), r in res.items()]}))


if __name__ == "__main__":
    main()
