#!/usr/bin/python3
"""PyTorch training-step benchmark of the reference model (tools/torch_gpt.py), for
comparison with the C engine's `gpt bench`.

    /usr/bin/python3 tools/bench_torch.py --model small --batch 8 --steps 10 --threads 4 --json

Each step: zero_grad, forward, loss, backward, clip_grad_norm_(1.0), AdamW step, in
float32 with dropout active (model.train()) on random tokens of the full n_ctx window.
tokens/s = B * n_ctx * steps / (time of the timed steps)."""

import argparse
import ctypes
import json
import os
import resource
import sys
import time

PRESETS = {
    "gpt1": dict(n_layer=12, n_embd=768, n_head=12, n_ffn=3072, n_ctx=512, vocab_size=40478),
    "small": dict(n_layer=4, n_embd=256, n_head=4, n_ffn=1024, n_ctx=256, vocab_size=8192),
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, n_ffn=256, n_ctx=64, vocab_size=512),
}


def openblas_core():
    """The kernel set of the OpenBLAS that torch loaded (the same library object)."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(PRESETS), default="tiny")
    # Defaults as `gpt bench`: --batch 4 --steps 5 --warmup-steps 1 --threads 1.
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup-steps", type=int, default=1, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    ap.add_argument("--dropout", type=float, default=0.1, help="all three dropouts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help='bf16: the forward pass under torch.autocast("cpu", dtype=torch.bfloat16)')
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.batch < 1 or args.steps < 1 or args.warmup_steps < 0:
        ap.error("--batch and --steps must be >= 1, --warmup-steps >= 0")

    if args.threads > 0:
        # torch.set_num_threads() does not reach the OpenBLAS that Debian's torch calls
        # for its matmuls; OpenBLAS reads its thread count once, when it loads.
        os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch_gpt
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = dict(PRESETS[args.model], ln="post", ln_eps=1e-5, dropout_embd=args.dropout,
               dropout_resid=args.dropout, dropout_attn=args.dropout)
    model = torch_gpt.GPT(cfg).init_weights(seed=args.seed).train()
    opt = torch.optim.AdamW(torch_gpt.adamw_groups(model, 0.01), lr=2.5e-4,
                            betas=(0.9, 0.999), eps=1e-8)
    B, T, V = args.batch, cfg["n_ctx"], cfg["vocab_size"]
    tokens = torch.randint(0, V, (B, T + 1))

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = model.loss(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    for _ in range(args.warmup_steps):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    elapsed = time.perf_counter() - t0

    result = {
        "model": args.model,
        "batch": B,
        "n_ctx": T,
        "steps": args.steps,
        "tokens_per_s": B * T * args.steps / elapsed,
        "step_s": elapsed / args.steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB
        "threads": torch.get_num_threads(),
        "loss": loss,
        "torch": torch.__version__,
        "openblas_core": openblas_core(),
        "precision": args.precision,
    }
    if args.json:
        print(json.dumps(result))
    else:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"torch {torch.__version__} model {args.model} ({n_params / 1e6:.2f}M params) "
              f"B={B} T={T} threads={result['threads']} dropout={args.dropout}")
        print(f"{result['tokens_per_s']:.1f} tokens/s, {result['step_s'] * 1e3:.1f} ms/step, "
              f"peak RSS {result['peak_rss_mb']:.1f} MB, last loss {loss:.4f}")


if __name__ == "__main__":
    main()
