#!/usr/bin/python3
"""Tokenizer throughput: encoding, BPE training and `gpt prepare`, printed as one table.

  (a) encoding on one core with GPT-2's vocabulary: `gpt tokenize` on Moby Dick
      repeated 10 times (~12 MB; wall time of the whole process, best of --reps) beside
      js-tiktoken encoding the same text in-process (tests/js/encode.mjs --bench);
  (b) BPE training: `gpt tokenizer train --merges 2000` on the same ~12 MB
      (and --merges 40000 with --full); MB/s = input bytes / wall time;
  (c) `gpt prepare` on a >= 20 MB corpus (Moby Dick and Python's standard library
      sources, a document a file) with 1 rank and with 2 ranks under mpirun, best of
      --reps each, and the speedup; MB/s from prepare's own time (after MPI start-up).

Needs bin/gpt (`make`) and the npm packages in tests/js (`make deps`). A failing
command is reported in the table and the other measurements go on. Nothing here is a
pass/fail test.

    /usr/bin/python3 tools/bench_tokenizer.py [--full] [--reps N] [--keep DIR]"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT = os.environ.get("GPT_BIN") or os.path.join(ROOT, "bin", "gpt")
JS_DIR = os.path.join(ROOT, "tests", "js")
NM = os.path.join(JS_DIR, "node_modules")
TIKTOKEN = os.path.join(NM, "gpt-tokenizer", "data", "r50k_base.tiktoken")
MOBY_DIR = os.path.join(NM, "@stdlib", "datasets-moby-dick", "data")
MOBY = os.path.join(MOBY_DIR, "data.txt")

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


class Failed(Exception):
    pass


def run(cmd, timeout, stdout=subprocess.DEVNULL, one_core=False):
    """Runs cmd; returns its wall time in seconds, or raises Failed with its stderr."""
    cmd = [str(c) for c in cmd]
    if one_core and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(min(os.sched_getaffinity(0)))] + cmd
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, env=ENV, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failed(f"timed out after {timeout} s: {' '.join(cmd)}")
    except OSError as e:
        raise Failed(f"{' '.join(cmd)}: {e}")
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise Failed(f"exit {proc.returncode}: {' '.join(cmd)}\n{err[-2000:]}")
    return dt


def mb(nbytes):
    return nbytes / 1e6


class Table:
    def __init__(self):
        self.rows = []

    def add(self, what, nbytes=None, seconds=None, note=""):
        self.rows.append((what, nbytes, seconds, note))
        rate = f"{mb(nbytes) / seconds:.2f} MB/s" if nbytes and seconds else "-"
        print(f"  {what}: {rate} {note}", file=sys.stderr, flush=True)

    def fail(self, what, err):
        print(f"  {what} FAILED: {err}", file=sys.stderr, flush=True)
        self.rows.append((what, None, None, "FAILED: " + str(err).splitlines()[0][:70]))

    def print(self):
        print(f"\n{'measurement':<46}{'input MB':>9}{'seconds':>9}{'MB/s':>9}  note")
        print("-" * 100)
        for what, nbytes, seconds, note in self.rows:
            size = f"{mb(nbytes):9.2f}" if nbytes else f"{'':>9}"
            secs = f"{seconds:9.2f}" if seconds else f"{'':>9}"
            rate = f"{mb(nbytes) / seconds:9.2f}" if nbytes and seconds else f"{'-':>9}"
            print(f"{what:<46}{size}{secs}{rate}  {note}")


def best_of(reps, fn):
    return min(fn() for _ in range(reps))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="also train 40,000 merges")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per encoding measurement")
    ap.add_argument("--copies", type=int, default=10, help="copies of Moby Dick for (a) and (b)")
    ap.add_argument("--prepare-mb", type=float, default=20.0, help="corpus size for (c)")
    ap.add_argument("--keep", help="work in this directory and keep it (default: a temp dir)")
    args = ap.parse_args()

    for path, hint in ((GPT, "run `make`"), (MOBY, "run `make deps`"), (TIKTOKEN, "run `make deps`")):
        if not os.path.exists(path):
            sys.exit(f"bench_tokenizer: {path} not found: {hint}")
    work = args.keep or tempfile.mkdtemp(prefix="bench_tokenizer.")
    os.makedirs(work, exist_ok=True)
    table = Table()
    try:
        bench(args, work, table)
    finally:
        table.print()
        print(f"\nOPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1; encoding pinned to one core with taskset; "
              f"CPU: {cpu_name()}; {os.cpu_count()} CPUs")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def bench(args, work, table):
    moby = open(MOBY, "rb").read()
    text = os.path.join(work, f"moby_x{args.copies}.txt")
    with open(text, "wb") as f:
        for _ in range(args.copies):
            f.write(moby)
    nbytes = len(moby) * args.copies
    print(f"bench_tokenizer: work dir {work}, text {mb(nbytes):.2f} MB", file=sys.stderr)

    tok = os.path.join(work, "gpt2.h5")
    try:
        dt = run([GPT, "tokenizer", "import", "--out", tok, "--tiktoken", TIKTOKEN], timeout=300)
        table.add("import GPT-2 vocabulary (r50k_base.tiktoken)", None, dt)
    except Failed as e:
        table.fail("import GPT-2 vocabulary", e)
        tok = None

    # (a) encoding, one core
    if tok:
        ids_path = os.path.join(work, "ids.txt")

        def once():
            with open(ids_path, "wb") as out:
                return run([GPT, "tokenize", "--tokenizer", tok, text], timeout=600, stdout=out, one_core=True)
        try:
            dt = best_of(args.reps, once)
            with open(ids_path, "rb") as f:
                n_tok = len(f.read().split())
            table.add("encode: gpt tokenize (GPT-2, 1 core, process)", nbytes, dt,
                      f"{n_tok:,} tokens, best of {args.reps}, incl. load + output")
        except Failed as e:
            table.fail("encode: gpt tokenize", e)
    else:
        table.fail("encode: gpt tokenize", "no tokenizer (import failed)")
    node = shutil.which("node") or "/usr/bin/node"
    try:
        cmd = [node, os.path.join(JS_DIR, "encode.mjs"), "--bench", text, str(args.reps)]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", str(min(os.sched_getaffinity(0)))] + cmd
        proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=JS_DIR, timeout=1800)
        if proc.returncode != 0:
            raise Failed(f"exit {proc.returncode}: {' '.join(cmd)}\n{proc.stderr.strip()[-2000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        table.add("encode: js-tiktoken 1.0.21 (1 core, in-process)", r["bytes"], r["seconds"],
                  f"{r['tokens']:,} tokens, best of {args.reps} after a warm-up")
    except (Failed, OSError, ValueError, subprocess.TimeoutExpired) as e:
        table.fail("encode: js-tiktoken", e)

    # (b) training
    for merges in (2000, 40000) if args.full else (2000,):
        out = os.path.join(work, f"train_{merges}.h5")
        try:
            dt = run([GPT, "tokenizer", "train", "--merges", merges, "--out", out, text],
                     timeout=3600 if merges > 2000 else 1200)
            table.add(f"train: gpt tokenizer train --merges {merges}", nbytes, dt, trained_note(out))
        except Failed as e:
            table.fail(f"train --merges {merges}", e)

    # (c) prepare, 1 and 2 ranks
    if not tok:
        table.fail("prepare", "no tokenizer (import failed)")
        return
    corpus = make_corpus(args.prepare_mb)
    cbytes = sum(os.path.getsize(p) for p in corpus)
    # Both under mpirun, so that start-up is alike; the rate is prepare's own time (it
    # prints it: from after MPI start-up to the renamed file), wall time beside it.
    mpirun = shutil.which("mpirun")
    if not mpirun:
        table.fail("prepare", "mpirun not found")
        return
    listing = os.path.join(work, "inputs.txt")
    with open(listing, "w") as f:
        f.write("\n".join(corpus) + "\n")
    inner = {}
    for ranks in (1, 2):
        out = os.path.join(work, f"corpus_{ranks}.h5")
        log = os.path.join(work, f"prepare_{ranks}.log")
        cmd = [mpirun, "--allow-run-as-root", "--oversubscribe", "-np", str(ranks), GPT, "prepare",
               "--tokenizer", tok, "--out", out, "--val-fraction", "0.01", "--input-list", listing]
        try:
            best = None
            for _ in range(args.reps):  # this machine's timings vary by a third between runs
                with open(log, "wb") as f:
                    wall = run(cmd, timeout=1800, stdout=f)
                m = re.search(r" in ([0-9.]+) s \(", open(log).read())
                t = float(m.group(1)) if m else wall
                if best is None or t < best[0]:
                    best = (t, wall)
            inner[ranks] = best[0]
            note = f"{len(corpus)} files, best of {args.reps}; wall {best[1]:.2f} s with mpirun start-up"
            if ranks > 1 and 1 in inner:
                note += f"; speedup {inner[1] / inner[ranks]:.2f}x over 1 rank"
            table.add(f"prepare: {ranks} rank{'s' if ranks > 1 else ''}", cbytes, inner[ranks], note)
        except Failed as e:
            table.fail(f"prepare: {ranks} ranks", e)


def trained_note(path):
    """How many merges training learnt (it stops early when no pair occurs twice)."""
    try:
        import h5py
        with h5py.File(path, "r") as f:
            g = f["tokenizer"]
            return f"learnt {int(g.attrs['n_merges']):,} merges, vocab {int(g.attrs['vocab_size']):,}"
    except Exception as e:  # the table still gets the timing
        return f"(cannot read {os.path.basename(path)}: {e})"


def make_corpus(target_mb):
    """Moby Dick once, then the Python sources Debian installs (the standard library,
    then dist-packages: numpy, torch), in sorted order, until >= target_mb: varied text,
    so that no rank gets an easier share from repetition. Returns the input paths."""
    paths = [os.path.join(MOBY_DIR, "data.txt")]
    total = os.path.getsize(paths[0])
    stdlib = os.path.dirname(os.__file__)
    walks = [os.walk(stdlib), os.walk(os.path.join(os.path.dirname(stdlib), "python3", "dist-packages"))]
    for root, _, files in (entry for walk in walks for entry in sorted(walk)):
        for f in sorted(files):
            if total >= target_mb * 1e6:
                return paths
            p = os.path.join(root, f)
            if f.endswith(".py") and os.path.getsize(p) > 0:
                paths.append(p)
                total += os.path.getsize(p)
    return paths


if __name__ == "__main__":
    main()
