#!/usr/bin/python3
"""Hybrid against pure MPI: `gpt train` on 1 rank x T threads beside T ranks x 1 thread at the
same global batch, on each model; tokens/s, their ratio, and peak RSS of every rank against
the pure layout's sum less the model state it keeps T times. Prints one table. Measurements,
not tests.

    /usr/bin/python3 tools/bench_hybrid.py [--threads 2] [--case MODEL:GLOBAL_BATCH:STEPS:SKIP ...]
        [--reps 2] [--mpirun-args ARGS] [--keep DIR]

Default cases small:8:10:2 and gpt1:4:6:2 (global batch windows, steps, leading steps left
out). Pure: `mpirun -np T gpt train --threads 1 --batch G/T`; hybrid: `gpt train --threads T
--batch G` (one process, no mpirun, so no allreduce); both with the preset's vocabulary, on a
corpus made from the Python standard library's sources (a 2000-merge tokenizer), no evaluation,
no checkpoints. tokens/s is the median over the steps after SKIP of metrics.jsonl's
tokens_per_s (global: P x B windows x n_ctx over rank 0's step time); with --reps N the layouts
alternate and each keeps its best median. Peak RSS is each rank's maximum resident set
(`/usr/bin/time -f %M` around every rank; the largest over the reps). Model state: parameters,
gradients and both AdamW moments, 16 bytes a parameter. "other load" is the CPU time the rest of
the machine used during the run (/proc/stat less this run's own), in cores: figures taken while
it is above about 0.1 are not to be trusted; "sgemm GF/s" is one thread's cblas_sgemm rate just
before the run (`gpt bench --model tiny`), since this machine's speed also moves with nothing else
running in it."""

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time

from machine_load import children_cpu_s, machine_busy_s

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT = os.environ.get("GPT_BIN") or os.path.join(ROOT, "bin", "gpt")  # GPT_BIN: another build
ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "OMPI_MCA_rmaps_base_oversubscribe": "1"}
VOCAB = {"gpt1": 40478, "small": 8192, "tiny": 512}


def sh(cmd, timeout=1800):
    """(stdout, stderr, wall s, other load in cores) of cmd; RuntimeError if it fails."""
    m0, c0, t0 = machine_busy_s(), children_cpu_s(), time.monotonic()
    try:
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=ENV, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{' '.join(map(str, cmd))} timed out")
    wall = time.monotonic() - t0
    other = max(0.0, (machine_busy_s() - m0) - (children_cpu_s() - c0)) / wall
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout, proc.stderr, wall, other


def sgemm_probe():
    """One thread's cblas_sgemm GFLOP/s just now: this machine's speed moves by up to 2x over minutes
    with nothing else running in it, so each run is shown beside it."""
    try:
        return json.loads(sh([GPT, "bench", "--model", "tiny", "--batch", 1, "--steps", 1, "--warmup-steps", 0,
                              "--threads", 1, "--json"])[0].strip().splitlines()[-1])["sgemm_peak_gflops"]
    except (RuntimeError, ValueError, KeyError):
        return float("nan")


def make_corpus(work, mb=4.0):
    """Python standard library sources, a document a file, up to mb MB; tokenizer and corpus files."""
    stdlib = sysconfig.get_paths()["stdlib"]
    text, size = os.path.join(work, "stdlib.txt"), 0
    with open(text, "w", encoding="utf-8") as out:
        for d, dirs, files in sorted(os.walk(stdlib)):
            dirs.sort()
            for name in sorted(files):
                if not name.endswith(".py") or size > mb * 1e6:
                    continue
                try:
                    body = open(os.path.join(d, name), encoding="utf-8").read()
                except (OSError, UnicodeDecodeError):
                    continue
                body = re.sub(r"\n\s*\n+", "\n", body).strip()  # one paragraph a file
                out.write(body + "\n\n")
                size += len(body) + 2
    tok, corpus = os.path.join(work, "tok.h5"), os.path.join(work, "corpus.h5")
    sh([GPT, "tokenizer", "train", "--merges", 2000, "--out", tok, text])
    sh([GPT, "prepare", "--tokenizer", tok, "--out", corpus, "--split-on-blank-lines", text])
    return corpus, size


def train(work, corpus, model, ranks, threads, batch, steps, skip, mpirun_args):
    out = os.path.join(work, f"{model}_{ranks}x{threads}")
    vocab = ["--vocab", VOCAB[model]] if model in VOCAB else []  # the preset's, not the corpus's
    rss_file = os.path.join(work, f"rss_{model}_{ranks}x{threads}")
    # each rank under its own /usr/bin/time, writing to its own file (mpirun would interleave stderr lines)
    timed = ["sh", "-c", 'exec /usr/bin/time -f %M -o "$0.${OMPI_COMM_WORLD_RANK:-0}" "$@"', rss_file]
    for f in (f"{rss_file}.{r}" for r in range(ranks)):
        if os.path.exists(f):
            os.remove(f)
    cmd = [*timed, GPT, "train", "--data", corpus, "--model", model, *vocab,
           "--out", out, "--steps", steps, "--batch", batch, "--threads", threads, "--eval-every", 0,
           "--log-every", steps, "--overwrite"]
    if ranks > 1:
        cmd = ["mpirun", "-np", ranks, *mpirun_args, *cmd]
    probe = sgemm_probe()
    stdout, stderr, wall, other = sh(cmd)
    try:
        rss = [int(open(f"{rss_file}.{r}").read().split()[-1]) / 1024 for r in range(ranks)]
    except (OSError, ValueError, IndexError) as e:
        raise RuntimeError(f"{model} {ranks}x{threads}: no peak RSS from /usr/bin/time: {e!r}\n{stderr[-1000:]}")
    m = re.search(r"training (\d+) parameters", stdout)
    try:
        rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))][skip:]
        cfg = json.load(open(os.path.join(out, "config.json")))
        timed = [r["tokens_per_s"] for r in rows]
        res = {"tokens_per_s": statistics.median(timed), "spread": (max(timed) - min(timed)) / statistics.median(timed),
               "step_s": statistics.median(r["step_s"] for r in rows),
               "comm": sum(r["comm_wait_s"] for r in rows) / sum(r["step_s"] for r in rows),
               "steps": len(rows), "rss": rss, "params": int(m.group(1)) if m else None, "wall": wall,
               "other": other, "probe": probe,
               "core": cfg.get("versions", {}).get("openblas_core", "?"),
               "kernels": cfg.get("versions", {}).get("kernels", cfg.get("kernels"))}
    except (OSError, ValueError, KeyError, ZeroDivisionError, statistics.StatisticsError) as e:
        raise RuntimeError(f"{model} {ranks}x{threads}: cannot read {out}: {e!r}")
    if not res["params"] or not rows:
        raise RuntimeError(f"{model} {ranks}x{threads}: no parameter count or no timed step in {out}")
    return res


def parse_case(s):
    try:
        model, g, steps, skip = s.split(":")
        return model, int(g), int(steps), int(skip)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MODEL:GLOBAL_BATCH:STEPS:SKIP, got '{s}'")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="T: ranks of the pure layout, threads of the hybrid")
    ap.add_argument("--case", type=parse_case, action="append", help="MODEL:GLOBAL_BATCH:STEPS:SKIP (repeatable)")
    ap.add_argument("--reps", type=int, default=2, help="runs of each layout; the best median counts")
    ap.add_argument("--mpirun-args", default="", help="extra mpirun options for the pure layout, e.g. '--bind-to none'")
    ap.add_argument("--keep", help="keep the corpus and run directories in this directory")
    args = ap.parse_args()
    T = args.threads
    cases = args.case or [("small", 8, 10, 2), ("gpt1", 4, 6, 2)]
    for model, g, steps, skip in cases:
        if T < 2 or g % T or steps <= skip or skip < 0 or args.reps < 1:
            ap.error(f"{model}: need --threads >= 2 dividing the global batch {g}, STEPS > SKIP >= 0, --reps >= 1")
    mpirun_args = shlex.split(args.mpirun_args)
    started = time.monotonic()
    work = args.keep or tempfile.mkdtemp(prefix="bench_hybrid.")
    os.makedirs(work, exist_ok=True)
    results = []
    try:
        corpus, corpus_bytes = make_corpus(work)
        try:
            bench = json.loads(sh([GPT, "bench", "--model", "tiny", "--batch", 1, "--steps", 1, "--threads", T,
                                   "--json"])[0].strip().splitlines()[-1])
        except (RuntimeError, ValueError):
            bench = {}
        for model, g, steps, skip in cases:
            layouts = {"pure": (T, 1, g // T), "hybrid": (1, T, g)}
            runs = {name: [] for name in layouts}
            for rep in range(args.reps):
                order = list(layouts) if rep % 2 == 0 else list(layouts)[::-1]
                for name in order:
                    ranks, threads, batch = layouts[name]
                    try:
                        runs[name].append(train(work, corpus, model, ranks, threads, batch, steps, skip, mpirun_args))
                    except RuntimeError as e:
                        print(e, file=sys.stderr)
                    print(f"  done: {model} {name} rep {rep + 1}", file=sys.stderr)
            best = {}
            for name, rs in runs.items():
                if rs:
                    best[name] = dict(max(rs, key=lambda r: r["tokens_per_s"]))
                    best[name]["rss"] = [max(r["rss"][i] for r in rs) for i in range(len(rs[0]["rss"]))]
                    best[name]["other"] = max(r["other"] for r in rs)
            results.append((model, g, steps, skip, layouts, best))
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", work])

    first = next((r for *_, best in results for r in best.values()), {})
    core = first.get("core", bench.get("openblas_core", "?"))
    kernels = first.get("kernels") or bench.get("kernels") or "?"
    print(f"gpt train, hybrid (1 rank x {T} threads) against pure MPI ({T} ranks x 1 thread) at the same global "
          f"batch; OpenBLAS {core}, kernels {kernels}; corpus {corpus_bytes / 1e6:.1f} MB of Python sources; "
          f"best of {args.reps}")
    print(f"{'model':<6}{'params':>8}{'G':>3}{'steps':>7}  {'layout':<20}{'tokens/s':>9}{'spread':>7}{'step s':>8}"
          f"{'comm':>6}{'ratio':>7}  {'peak RSS MB per rank':<22}{'sum MB':>7}{'other load':>11}{'sgemm GF/s':>11}")
    checks = []
    for model, g, steps, skip, layouts, best in results:
        pure, hyb = best.get("pure"), best.get("hybrid")
        n = (pure or hyb or {}).get("params")
        for name in ("pure", "hybrid"):
            ranks, threads, batch = layouts[name]
            label = f"{ranks} x {threads} thr, B={batch}"
            r = best.get(name)
            if not r:
                print(f"{model:<6}{'':>8}{g:>3}{'':>7}  {label:<20}{'FAILED':>9}")
                continue
            ratio = f"{hyb['tokens_per_s'] / pure['tokens_per_s']:>7.1%}" if name == "hybrid" and pure else f"{'':>7}"
            print(f"{model:<6}{n / 1e6:>7.1f}M{g:>3}{f'{skip + 1}-{steps}':>7}  {label:<20}{r['tokens_per_s']:>9.1f}"
                  f"{r['spread']:>7.1%}{r['step_s']:>8.3f}{r['comm']:>6.1%}{ratio}  "
                  f"{' + '.join(f'{x:.0f}' for x in r['rss']):<22}{sum(r['rss']):>7.0f}{r['other']:>11.2f}{r['probe']:>11.1f}")
        if pure and hyb:
            state = 16 * n / 2**20 * (T - 1)
            limit = sum(pure["rss"]) - state
            checks.append(f"{model}: tokens/s hybrid / pure {hyb['tokens_per_s'] / pure['tokens_per_s']:.1%} "
                          f"(target >= 95%); peak RSS hybrid {sum(hyb['rss']):.0f} MB <= pure sum "
                          f"{sum(pure['rss']):.0f} - {T - 1} x 16 B x {n / 1e6:.2f} M parameters "
                          f"({state:.0f} MB) = {limit:.0f} MB: {'yes' if sum(hyb['rss']) <= limit else 'NO'} "
                          f"(margin {limit - sum(hyb['rss']):+.0f} MB)")
    print("\n".join(checks))
    print("tokens/s: median of the timed steps' global tokens_per_s; spread: (max - min) / median of those steps; "
          "comm: time waiting for the gradient allreduce after the backward pass, share of the step time; "
          "MB are MiB; sgemm GF/s: one thread's cblas_sgemm (gpt bench's probe) just before the run, "
          "this machine's speed of the moment")
    print(f"the whole script took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
