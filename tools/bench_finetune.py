#!/usr/bin/python3
"""Fine-tuning cost of `gpt finetune`: full fine-tuning beside LoRA (rank 8 on attn, and on
attn,mlp), and beside PyTorch doing the same full fine-tuning step. Prints one table.
Measurements, not tests.

    /usr/bin/python3 tools/bench_finetune.py [--steps 6] [--seq-len 128] [--quick]

The model is a freshly initialised GPT-1 shape (`gpt init --model gpt1`: 12 layers, width
768, vocabulary 40478) with its context cut to --seq-len (128 by default, to keep a step
short); --quick uses the `small` preset instead. The task is a synthetic `classify` one:
sentences drawn from a small word list (label: more "good" than "bad" words), with a
small BPE tokenizer learnt from them (`gpt tokenizer train`); every example is
truncated to exactly --seq-len tokens. One rank, one BLAS thread, batch 8, --steps
steps (one epoch of 8 x --steps examples), lambda 0.5, no evaluation, a checkpoint
after the last step. Each gpt run is timed under /usr/bin/time (peak RSS).

step s is the best (smallest) step_s of metrics.jsonl, first step included: this machine
is shared and a step can lose a third of its speed to other work. The PyTorch reference
(tools/torch_gpt.py, float32, dropout 0.1 as in the model file, OpenBLAS given the
kernels gpt reported) runs the same step: forward, a linear head on the last token's
final state, L2 (cross-entropy) + 0.5 L1 (next-token NLL over the other positions),
backward, gradient clipping at 1, AdamW with weight decay 0.01 on matrices; its step
time is the best of --steps steps after one warm-up step, its peak RSS from getrusage."""

import argparse
import glob
import json
import math
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT = os.path.join(ROOT, "bin", "gpt")
BASE_ENV = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
ENV = {**BASE_ENV, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
BATCH = 8
LAMBDA = 0.5
MERGES = 300  # the word list allows about 250: every word one token

GOOD = "good great fine lovely superb brilliant pleasant wonderful charming excellent".split()
BAD = "bad poor awful dull terrible boring weak clumsy tedious dreadful".split()
NEUTRAL = ("the a film story actor scene plot music camera director script cast ending "
           "moment character dialogue picture screen audience minute hour and but with of "
           "in on was is seems felt looked quite very rather somewhat really").split()

CASES = [("full fine-tuning", []),
         ("LoRA r=8 attn", ["--lora-rank", "8", "--lora-targets", "attn"]),
         ("LoRA r=8 attn,mlp", ["--lora-rank", "8", "--lora-targets", "attn,mlp"])]


def sh(cmd, env=ENV):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def sentences(n, words, rng):
    """n labelled records of `words` words each (long enough to be truncated)."""
    out = []
    for _ in range(n):
        ws = [rng.choice(GOOD if r < 0.1 else BAD if r < 0.2 else NEUTRAL)
              for r in (rng.random() for _ in range(words))]
        label = "pos" if sum(w in GOOD for w in ws) > sum(w in BAD for w in ws) else "neg"
        out.append({"text": " ".join(ws), "label": label})
    return out


def finetune(work, name, extra, args):
    out = os.path.join(work, name.replace(" ", "_").replace(",", "_").replace("=", ""))
    rss = out + ".rss"
    cmd = ["/usr/bin/time", "-f", "%M", "-o", rss, GPT, "finetune", "--init", os.path.join(work, "init.h5"),
           "--data", os.path.join(work, "task.h5"), "--out", out, "--overwrite", "--batch", BATCH,
           "--epochs", 1, "--lambda", LAMBDA, "--eval-every", 0, "--log-every", 1, "--threads", 1,
           "--ckpt-every", args.steps, *extra]
    t0 = time.perf_counter()
    stdout = sh(cmd)
    wall = time.perf_counter() - t0
    m = re.search(r"training (\d+) parameters", stdout)
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    steps = [r["step_s"] for r in rows if "step_s" in r]
    ckpts = sorted(glob.glob(os.path.join(out, "ckpt_*.h5")))
    config = json.load(open(os.path.join(out, "config.json")))
    return {"trained": int(m.group(1)) if m else None, "step_s": min(steps), "steps": len(steps),
            "rss_mb": int(open(rss).read().split()[-1]) / 1024, "wall_s": wall,
            "ckpt_mb": os.path.getsize(ckpts[-1]) / 1e6 if ckpts else None,
            "model_mb": os.path.getsize(os.path.join(out, "model.h5")) / 1e6,
            "core": config.get("versions", {}).get("openblas_core", "?")}


def torch_worker(args):
    """--torch-worker: the PyTorch full fine-tuning step, in its own process (own RSS)."""
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch_gpt
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = json.loads(args.torch_worker)
    model = torch_gpt.GPT(cfg).init_weights(seed=0).train()
    head = torch.nn.Linear(cfg["n_embd"], 2)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.02)
        head.bias.zero_()
    params = list(model.parameters()) + list(head.parameters())
    groups = torch_gpt.adamw_groups(model, 0.01)
    groups[0]["params"].append(head.weight)
    groups[1]["params"].append(head.bias)
    opt = torch.optim.AdamW(groups, lr=6.25e-5, betas=(0.9, 0.999), eps=1e-8)
    B, T = BATCH, cfg["seq_len"]
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg["tok_vocab"], (B, T), generator=gen)
    labels = torch.randint(0, 2, (B,), generator=gen)

    def step():
        opt.zero_grad(set_to_none=True)
        x = model.drop(F.embedding(tokens, model.wte) + model.wpe[:T])
        for block in model.h:
            x = block(x)
        l2 = F.cross_entropy(head(x[:, -1]), labels)
        logits = x[:, :-1] @ model.wte.t()  # every position but the extract token
        l1 = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        loss = l2 + LAMBDA * l1
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    step()  # warm-up
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"trained": sum(p.numel() for p in params), "step_s": min(times), "steps": len(times),
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "torch": torch.__version__}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="fine-tuning steps of batch 8 (timed: the best)")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens an example, and the model's n_ctx")
    ap.add_argument("--quick", action="store_true", help="the small preset instead of gpt1")
    ap.add_argument("--torch-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps < 1 or args.seq_len < 8:
        ap.error("--steps must be at least 1, --seq-len at least 8")
    if args.torch_worker:
        return torch_worker(args)
    preset = "small" if args.quick else "gpt1"
    rng = random.Random(1)
    results, errors = {}, []
    with tempfile.TemporaryDirectory(prefix="bench_finetune.") as work:
        data = os.path.join(work, "task.jsonl")
        with open(data, "w") as f:
            for rec in sentences(BATCH * args.steps, args.seq_len, rng):
                f.write(json.dumps(rec) + "\n")
        text = os.path.join(work, "text.txt")
        with open(text, "w") as f:
            for rec in sentences(2000, 20, rng):
                f.write(rec["text"] + "\n\n")
        tok = os.path.join(work, "tok.h5")
        m = re.search(r"vocabulary (\d+)", sh([GPT, "tokenizer", "train", "--merges", MERGES, "--out", tok, text]))
        tok_vocab = int(m.group(1)) - 4 if m else 256  # ordinary tokens (the 4 special ones last)
        sh([GPT, "prepare-task", "--tokenizer", tok, "--task", "classify", "--labels", "neg,pos",
            "--n-ctx", args.seq_len, "--truncate", "--out", os.path.join(work, "task.h5"), data])
        sh([GPT, "init", "--model", preset, "--n-ctx", args.seq_len, "--seed", 1,
            "--out", os.path.join(work, "init.h5")])
        for name, extra in CASES:
            try:
                results[name] = finetune(work, name, extra, args)
            except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
                errors.append(f"{name}: {e}")
            print(f"  done: {name}", file=sys.stderr)
    core = next((r["core"] for r in results.values()), "?")
    # the reference's token ids are random ordinary tokens of the tokenizer
    cfg = dict({"gpt1": dict(n_layer=12, n_embd=768, n_head=12, n_ffn=3072, vocab_size=40478),
                "small": dict(n_layer=4, n_embd=256, n_head=4, n_ffn=1024, vocab_size=8192)}[preset],
               n_ctx=args.seq_len, seq_len=args.seq_len, ln="post", ln_eps=1e-5, dropout_embd=0.1,
               dropout_resid=0.1, dropout_attn=0.1, tok_vocab=tok_vocab)
    env = {**ENV, "OPENBLAS_CORETYPE": core} if core != "?" else ENV
    try:
        out = sh([sys.executable, os.path.abspath(__file__), "--steps", args.steps, "--seq-len", args.seq_len,
                  "--torch-worker", json.dumps(cfg)], env)
        results["PyTorch full fine-tuning"] = json.loads(out.strip().splitlines()[-1])
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
        errors.append(f"PyTorch: {e}")
    for e in errors:
        print(e, file=sys.stderr)

    tokens = BATCH * args.seq_len
    full = results.get(CASES[0][0], {}).get("step_s")
    print(f"fine-tuning {preset} (n_ctx {args.seq_len}), classify, batch {BATCH} x {args.seq_len} tokens, "
          f"lambda {LAMBDA}, 1 rank x 1 thread, best step of {args.steps}, OpenBLAS {core} "
          f"(OPENBLAS_CORETYPE unset)")
    print(f"{'case':<26}{'trained params':>15}{'step s':>8}{'tokens/s':>10}{'vs full':>9}"
          f"{'peak RSS MB':>13}{'ckpt MB':>9}{'model.h5 MB':>13}")
    for name in [c[0] for c in CASES] + ["PyTorch full fine-tuning"]:
        r = results.get(name)
        if not r:
            print(f"{name:<26}{'FAILED':>15}")
            continue
        fmt = lambda v: f"{v:.1f}" if v is not None else "-"
        print(f"{name:<26}{r['trained'] or 0:>15,}{r['step_s']:>8.2f}{tokens / r['step_s']:>10.1f}"
              f"{full / r['step_s'] if full else math.nan:>8.2f}x{r['rss_mb']:>13.0f}"
              f"{fmt(r.get('ckpt_mb')):>9}{fmt(r.get('model_mb')):>13}")
    print("vs full: speed relative to gpt's full fine-tuning (higher is faster); ckpt: the checkpoint "
          "after the last step")


if __name__ == "__main__":
    main()
