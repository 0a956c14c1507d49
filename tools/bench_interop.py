#!/usr/bin/python3
"""Export and import of GPT-2 small (the gpt2 preset, 124 M parameters, with GPT-2's
50257-token vocabulary from the pinned r50k_base.tiktoken):
gpt export --format hf, --format gguf (f32 and f16) and gpt import, each beside the
least a conversion must do: a plain read of its input file and a plain write of the
bytes it writes, to the same directory in the same run. Wall time (best of --reps), MB/s
of the bytes written, and the peak resident memory of the process against the model's
float32 bytes. Measurements, not
tests; nothing here fsyncs, as the exports do not.

    make bench-interop     # or: /usr/bin/python3 tools/bench_interop.py [--reps 3] [--dir DIR]"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT = os.path.join(ROOT, "bin", "gpt")
RANKS = os.path.join(ROOT, "tests", "js", "node_modules", "gpt-tokenizer", "data", "r50k_base.tiktoken")

# Runs a command and prints its wall seconds and the peak RSS (KiB) of its process.
MEASURE = ("import resource, subprocess, sys, time\n"
           "t = time.perf_counter(); rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
           "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)\n")

# The input file read and the same bytes written plainly, in 16 MiB reads and writes.
PLAIN = ("import sys\n"
         "src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
         "buf = bytearray(16 << 20)\n"
         "with open(src, 'rb', buffering=0) as f:\n"
         "    while f.readinto(buf): pass\n"
         "with open(dst, 'wb', buffering=0) as f:\n"
         "    left = n\n"
         "    while left > 0:\n"
         "        k = min(left, len(buf)); f.write(memoryview(buf)[:k]); left -= k\n")


def measure(cmd):
    out = subprocess.run([sys.executable, "-c", MEASURE, *map(str, cmd)], capture_output=True, text=True, check=True)
    wall, rss, rc = out.stdout.split()
    if rc != "0":
        sys.exit(f"{' '.join(map(str, cmd))} failed (exit {rc})")
    return float(wall), int(rss) / 1024


def size_of(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    return os.path.getsize(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default=os.path.join(ROOT, "build"), help="where to write (default: build/)")
    args = ap.parse_args()
    if not os.access(GPT, os.X_OK):
        sys.exit(f"{GPT} is missing: run `make`")
    if not os.path.isfile(RANKS):
        sys.exit(f"{RANKS} is missing: run `make deps`")
    os.makedirs(args.dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        tok, model = os.path.join(work, "gpt2.h5"), os.path.join(work, "gpt2_124m.h5")
        subprocess.run([GPT, "tokenizer", "import", "--out", tok, "--tiktoken", RANKS], check=True, capture_output=True)
        init = subprocess.run([GPT, "init", "--model", "gpt2", "--out", model], check=True, capture_output=True,
                              text=True)
        params = 4 * int(init.stdout.split(": ")[1].split()[0])  # "wrote PATH: N parameters; ..."
        hf, g32, g16, back = (os.path.join(work, n) for n in ("hf", "m32.gguf", "m16.gguf", "back.h5"))
        cases = [
            ("export hf", [GPT, "export", "--model", model, "--tokenizer", tok, "--format", "hf", "--out", hf], hf, model),
            ("export gguf f32", [GPT, "export", "--model", model, "--tokenizer", tok, "--format", "gguf", "--out", g32],
             g32, model),
            ("export gguf f16", [GPT, "export", "--model", model, "--tokenizer", tok, "--format", "gguf", "--dtype",
                                 "f16", "--out", g16], g16, model),
            ("import hf", [GPT, "import", "--hf", hf, "--out", back], back, os.path.join(hf, "model.safetensors")),
        ]
        rows = []
        for name, cmd, out, read in cases:
            best = best_rss = None
            for _ in range(args.reps):
                wall, rss = measure(cmd)
                best = wall if best is None else min(best, wall)
                best_rss = rss if best_rss is None else min(best_rss, rss)
            n = size_of(out)
            plain = min(measure([sys.executable, "-c", PLAIN, read, os.path.join(work, "plain.bin"), n])[0]
                        for _ in range(args.reps))
            os.remove(os.path.join(work, "plain.bin"))
            rows.append((name, n, best, plain, best_rss))
    print(f"GPT-2 small ({params // 4:,} parameters, {params / 1e6:.0f} MB of float32), best of {args.reps}, "
          f"directory {args.dir}")
    print(f"{'':16} | {'bytes out':>9} | {'time':>7} | {'MB/s':>6} | {'plain':>7} | {'vs plain':>8} | "
          f"{'peak RSS':>8} | {'RSS/model':>9}")
    for name, n, wall, plain, rss in rows:
        print(f"{name:16} | {n / 1e6:7.0f}MB | {wall:6.2f}s | {n / 1e6 / wall:6.0f} | {plain:6.2f}s | "
              f"{wall / plain:7.2f}x | {rss:6.0f}MB | {rss * 1048576 / params:8.2f}x")
    print("plain: the input file read (the model file; for import model.safetensors), then as many bytes as the "
          "command wrote written, with read() and write()")


if __name__ == "__main__":
    main()
