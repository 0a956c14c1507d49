#!/usr/bin/python3
"""Speed of `gpt eval-choice` on gpt1-shaped weights (a fresh `gpt init --model gpt1`,
117 M parameters, vocabulary 40478), 4 endings a record, 1 thread a rank: records/s with
the shared prompt (the context runs once, every ending continues from its key/value
cache) and with --no-cache (the prompt runs again for every ending), on 1 and 2 ranks,
with 0 shots and with --shots 4. Prints one table. Measurements, not tests.

    /usr/bin/python3 tools/bench_choice.py [--records 24] [--shots 0,4] [--repeat 2]

The records are HellaSwag-shaped: a context of 40 words of Moby Dick and 4 endings of 18
words each from elsewhere in the book (HellaSwag's validation set averages about 40
context and 4 x 20 ending tokens with GPT-2's tokenizer), tokenized with a tokenizer
trained on Moby Dick (8000 merges). records/s is what eval-choice reports: records over
the scoring loop and the final sum over the ranks, the model's loading excluded; best of
--repeat. "other load" is the CPU the rest of the machine used during the run, in
cores, because these machines are shared."""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from machine_load import children_cpu_s, machine_busy_s  # noqa: E402

GPT = os.path.join(ROOT, "bin", "gpt")
MOBY = os.path.join(ROOT, "tests", "js", "node_modules", "@stdlib", "datasets-moby-dick", "data", "data.txt")
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1",
       "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def sh(cmd):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=ENV)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def records(n, seed=1):
    words = open(MOBY, encoding="utf-8").read().split()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        at = rng.randrange(len(words) - 200)
        ends = [" ".join(words[at + 40: at + 58])]
        for _ in range(3):
            o = rng.randrange(len(words) - 20)
            ends.append(" ".join(words[o: o + 18]))
        out.append({"context": " ".join(words[at: at + 40]), "endings": ends, "label": 0})
    return out


def run(model, tok, data, ranks, shots, cache, repeat):
    cmd = [GPT, "eval-choice", "--model", model, "--tokenizer", tok, "--data", data, "--shots", shots, "--json",
           "--threads", 1]  # 1 thread a rank, as measured (the default divides the node's cores among the ranks)
    if not cache:
        cmd.append("--no-cache")
    if ranks > 1:
        cmd = ["mpirun", "-np", ranks, "--bind-to", "core"] + cmd
    best, other = 0.0, 0.0
    for _ in range(repeat):
        m0, c0, t0 = machine_busy_s(), children_cpu_s(), time.monotonic()
        r = json.loads(sh(cmd))
        wall = time.monotonic() - t0
        load = max(0.0, (machine_busy_s() - m0) - (children_cpu_s() - c0)) / wall
        if r["records_per_s"] > best:
            best, other = r["records_per_s"], load
    return best, other


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=24)
    ap.add_argument("--shots", default="0,4")
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tok, model, data = f"{d}/tok.h5", f"{d}/gpt1.h5", f"{d}/data.jsonl"
        sh([GPT, "tokenizer", "train", "--merges", 8000, "--out", tok, MOBY])
        sh([GPT, "init", "--model", "gpt1", "--seed", 1, "--out", model])
        with open(data, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records(a.records))
        pred = f"{d}/pred.jsonl"
        sh([GPT, "eval-choice", "--model", model, "--tokenizer", tok, "--data", data, "--predictions", pred])
        toks = [json.loads(line)["tokens"] for line in open(pred)]
        print(f"gpt eval-choice, gpt1-shaped weights, {a.records} records of 4 endings "
              f"({sum(map(sum, toks)) / len(toks) / 4:.1f} tokens an ending), 1 thread a rank, best of {a.repeat}")
        print(f"{'shots':>5} {'ranks':>5} {'shared rec/s':>12} {'no-cache rec/s':>14} {'gain':>6} "
              f"{'2-rank speedup':>14} {'other load':>10}")
        for shots in [int(s) for s in a.shots.split(",")]:
            base = None
            for ranks in (1, 2):
                shared, load1 = run(model, tok, data, ranks, shots, True, a.repeat)
                plain, load2 = run(model, tok, data, ranks, shots, False, a.repeat)
                base = base or shared
                speedup = f"{shared / base:.2f}x" if ranks > 1 else "-"
                print(f"{shots:>5} {ranks:>5} {shared:>12.2f} {plain:>14.2f} {shared / plain:>5.2f}x "
                      f"{speedup:>14} {max(load1, load2):>9.2f}c", flush=True)


if __name__ == "__main__":
    main()
