#!/usr/bin/python3
"""make bench: the C engine beside PyTorch on the same models, batches and threads.

Runs build/tools/kernel_bench (each fused kernel beside its plain version), then
`gpt bench --json` and tools/bench_torch.py --json for each case, on two kernel sets:
- native: gpt picks its kernel set and OpenBLAS core itself; the reference is given
  the same OpenBLAS core so the comparison stays fair;
- avx2: what an AVX2-only node (EPYC Zen 2/3, older Xeons) runs, forced on any CPU:
  GPT_KERNELS=avx2 and OPENBLAS_CORETYPE=Haswell for gpt, and for PyTorch the same
  OpenBLAS core and ATEN_CPU_CAPABILITY=avx2;
and, natively, in bf16: `gpt bench --precision bf16` beside PyTorch's
torch.autocast("cpu", dtype=torch.bfloat16) (docs/precision.md).
Prints one table with the ratio. Nothing here is a pass/fail test.

    /usr/bin/python3 tools/bench.py [--quick] [--skip-kernels]"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT = os.path.join(ROOT, "bin", "gpt")
TORCH = [sys.executable, os.path.join(ROOT, "tools", "bench_torch.py")]

# (preset, batch, threads, timed steps)
CASES = [("small", 8, 1, 5), ("small", 8, 2, 5), ("gpt1", 4, 1, 2)]
QUICK = [("small", 8, 1, 3)]


def run_json(cmd, env):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one small case only")
    ap.add_argument("--skip-kernels", action="store_true")
    args = ap.parse_args()

    clean = {k: v for k, v in os.environ.items()
             if k not in ("OPENBLAS_CORETYPE", "GPT_KERNELS", "ATEN_CPU_CAPABILITY")}
    settings = {"native": ({}, {}),
                "avx2": ({"GPT_KERNELS": "avx2", "OPENBLAS_CORETYPE": "Haswell"},
                         {"ATEN_CPU_CAPABILITY": "avx2"})}
    if not args.skip_kernels:
        for setting, (ours_env, _) in settings.items():
            print(f"[{setting}]", flush=True)
            subprocess.run([os.path.join(ROOT, "build", "tools", "kernel_bench")], check=True,
                           env={**clean, **ours_env})
            print()

    rows = []
    runs = [(s, p) for s in settings for p in (["fp32", "bf16"] if s == "native" else ["fp32"])]
    for setting, precision in runs:
        ours_env, ref_env = settings[setting]
        for model, batch, threads, steps in QUICK if args.quick else CASES:
            common = ["--model", model, "--batch", str(batch), "--threads", str(threads),
                      "--steps", str(steps), "--warmup-steps", "1", "--precision", precision, "--json"]
            ours = run_json([GPT, "bench", *common], {**clean, **ours_env})
            # the reference gets the OpenBLAS core gpt ended up with, whatever picked it
            ref = run_json(TORCH + common, {**clean, **ref_env,
                                            "OPENBLAS_CORETYPE": ours["openblas_core"]})
            rows.append((setting, model, batch, threads, ours, ref))
            print(f"  done: {setting} {precision} {model} B={batch} threads={threads}", file=sys.stderr)

    print("training step, same model, batch and threads; PyTorch", rows[0][5].get("torch", "?"))
    print(f"{'set':<8}{'kernels':<8}{'prec':<5}{'model':<7}{'B':>3}{'thr':>4}  {'core':<9}"
          f"{'gpt tok/s':>10}{'torch tok/s':>12}{'ratio':>7}{'MFU':>7}{'peak GF/s':>10}"
          f"{'gpt MB':>8}{'torch MB':>9}")
    for setting, model, batch, threads, o, r in rows:
        peak = o.get("bf16_peak_gflops", o["sgemm_peak_gflops"])
        print(f"{setting:<8}{o.get('kernels', '?'):<8}{o['precision']:<5}{model:<7}{batch:>3}{threads:>4}  "
              f"{o['openblas_core']:<9}{o['tokens_per_s']:>10.1f}{r['tokens_per_s']:>12.1f}"
              f"{o['tokens_per_s'] / r['tokens_per_s']:>6.2f}x{100 * o['mfu']:>6.1f}%"
              f"{peak:>10.1f}{o['peak_rss_mb']:>8.0f}{r['peak_rss_mb']:>9.0f}")
    print("MFU: model FLOPs (6N + 12 L C n_ctx per token) / the product peak measured in the same gpt "
          "run with the same threads (fp32: cblas_sgemm; bf16: a 2048^3 product on its path).")
    bf16 = [o.get("bf16_path") for *_, o, _ in rows if o.get("bf16_path")]
    if bf16:
        print(f"bf16 path: {bf16[0]}; torch bf16: torch.autocast(\"cpu\", dtype=torch.bfloat16)")


if __name__ == "__main__":
    main()
