#!/usr/bin/python3
"""gpt plan against what gpt train measures on this host: each layout's memory a rank
beside the largest rank's peak RSS, and its tokens/s beside the median of the steps after
the first. Prints one table. Measurements, not tests (this machine is shared: its speed
varies between runs by more than the plan's claim of 30%).

    make bench-plan        # or: /usr/bin/python3 tools/bench_plan.py [--steps 4]

The layouts: gpt1 (GPT-1's vocabulary of 40478) at batch 4 on 1 rank of 1 thread, and
small (vocabulary 8192) at batch 4 on 2 ranks of 1 thread. The plan is calibrated again
(--recalibrate, in a cache of its own) just before each run, so both see the same load.

Then docs/scaling.md's 2-host cluster at 1 Gbit/s: the plan's step and wait for small
(batch 8) and gpt1 (batch 2), one rank a host, from a calibration that reproduces the
compute measured there (C per step: 0.622 s and 5.41 s), beside `make bench-cluster`'s
figures in docs/scaling.md's table."""

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

# docs/scaling.md, "Measured overlap", 1 Gbit/s rows: (model, vocab, batch, C a step, step s, wait s, tok/s)
CLUSTER = [("small", 2260, 8, 0.622, 0.708, 0.029, 5789), ("gpt1", 2260, 2, 5.41, 7.271, 1.122, 282)]


def sh(cmd, env=ENV):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=7200)
    if proc.returncode != 0:
        sys.exit(f"bench_plan: {' '.join(map(str, cmd))} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def plan(cache, *args):
    return json.loads(sh([GPT, "plan", "--json", "--recalibrate", *args], env={**ENV, "XDG_CACHE_HOME": cache}))


def train(work, corpus, model, vocab, ranks, steps):
    out = os.path.join(work, f"run-{model}-{ranks}")
    text = sh(["mpirun", "-np", ranks, GPT, "train", "--data", corpus, "--model", model, "--vocab", vocab, "--out", out,
               "--steps", steps, "--batch", 4, "--eval-every", 0, "--log-every", 1000, "--overwrite"])
    peak = int(re.search(r"peak memory: (\d+) MiB", text).group(1))
    with open(os.path.join(out, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f][1:]
    return peak, statistics.median(s["tokens_per_s"] for s in lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4, help="of each gpt train run (the first is left out)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        cache = os.path.join(work, "cache")
        tok, corpus = os.path.join(work, "tok.h5"), os.path.join(work, "corpus.h5")
        sh([GPT, "tokenizer", "train", "--merges", 2000, "--out", tok, MOBY])
        sh([GPT, "prepare", "--tokenizer", tok, "--out", corpus, "--split-on-blank-lines", MOBY])
        print(f"{'layout':<28}{'plan MiB':>10}{'peak MiB':>10}{'ratio':>7}{'plan tok/s':>12}{'train tok/s':>13}"
              f"{'ratio':>7}")
        for model, vocab, ranks in [("gpt1", 40478, 1), ("small", 8192, 2)]:
            p = plan(cache, "--model", model, "--vocab", vocab, "--batch", 4, "--nodes", 1, "--cores", ranks,
                     "--ranks-per-node", ranks, "--threads", 1)
            peak, tok_s = train(work, corpus, model, vocab, ranks, args.steps)
            name = f"{model} b4, {ranks} rank(s) x 1 thread"
            print(f"{name:<28}{p['memory_per_rank_mb']:>10.0f}{peak:>10}{p['memory_per_rank_mb'] / peak:>7.2f}"
                  f"{p['tokens_per_s']:>12.0f}{tok_s:>13.0f}{p['tokens_per_s'] / tok_s:>7.2f}")
            sys.stdout.flush()
        print("\n2 hosts x 1 rank at 1 Gbit/s (docs/scaling.md's cluster; measured: make bench-cluster's table)")
        print(f"{'model':<8}{'plan step s':>12}{'step s':>8}{'plan wait s':>12}{'wait s':>8}{'plan tok/s':>11}"
              f"{'tok/s':>7}{'ratio':>7}")
        for model, vocab, batch, c_step, step, wait, tok_s in CLUSTER:
            cfg = json.loads(sh([GPT, "bench", "--model", model, "--vocab", vocab, "--batch", batch, "--steps", 1,
                                 "--warmup-steps", 0, "--json"]))
            # the compute measured there, all of it put in the head: the plan's C is then c_step
            cal = {**cfg, "forward_s": 0.0, "backward_s": 0.0, "head_s": c_step, "optim_s": 0.0}
            path = os.path.join(work, f"cal-{model}.json")
            with open(path, "w") as f:
                json.dump(cal, f)
            p = plan(cache, "--model", model, "--vocab", vocab, "--batch", batch, "--nodes", 2, "--cores", 1,
                     "--link", 1, "--calibration", path)
            print(f"{model:<8}{p['step_s']:>12.3f}{step:>8.3f}{p['comm_wait_s']:>12.3f}{wait:>8.3f}"
                  f"{p['tokens_per_s']:>11.0f}{tok_s:>7}{p['tokens_per_s'] / tok_s:>7.2f}")


if __name__ == "__main__":
    main()
