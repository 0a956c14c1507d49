"""Correctness oracle: the C engine (via build/tests/oracle) against the PyTorch
reference in tools/torch_gpt.py, computed in float64.

    make && /usr/bin/python3 -m pytest -q tests/test_oracle.py      (-s prints the errors)

The models come from `bin/gpt init` and are then perturbed in place (larger weights,
non-trivial LayerNorm gains and biases) so that attention is far from uniform and
every parameter matters to the loss."""

import math

import h5py
import numpy as np
import pytest
import torch

import torch_gpt
from conftest import KERNEL_SETS, compute_env

# An odd-shaped model: nothing is a power of two, n_ctx is not a multiple of anything.
V, C, H, N_CTX, L, F_ODD = 101, 48, 3, 17, 2, 80
B = 3

# Tolerances (float32 engine vs float64 reference).
LOSS_RTOL = 1e-5
LOGITS_TOL = 1e-4     # max abs diff relative to max |ref logits|
GRAD_TOL = 1e-4       # per tensor: max abs diff relative to max |ref grad| of that tensor
TRAIN_LOSS_RTOL = 1e-5
TRAIN_LR_RTOL = 3e-7   # the engine keeps lr in float32 (rounding 6e-8)
TRAIN_NORM_RTOL = 1e-4


# --------------------------------------------------------------------------- helpers

def make_model(run, gpt_bin, path, ln, n_ffn=F_ODD, seed=1, perturb=True, n_ctx=N_CTX):
    """`gpt init` a model of the odd shape (n_ffn=None: the default 4C), then perturb."""
    args = [gpt_bin, "init", "--model", "tiny", "--seed", seed, "--out", path,
            "--n-layer", L, "--n-head", H, "--n-embd", C, "--n-ctx", n_ctx,
            "--vocab", V, "--ln", ln, "--dropout", 0]
    if n_ffn is not None:
        args += ["--n-ffn", n_ffn]
    run(args, check=True)
    cfg = torch_gpt.load_config(path)
    expect = dict(n_layer=L, n_head=H, n_embd=C, n_ctx=n_ctx, vocab_size=V,
                  n_ffn=4 * C if n_ffn is None else n_ffn, ln=ln,
                  dropout_embd=0.0, dropout_resid=0.0, dropout_attn=0.0)
    assert {k: cfg[k] for k in expect} == expect
    assert cfg["ln_eps"] == pytest.approx(1e-5, rel=1e-6)
    if perturb:
        perturb_model(path, seed=1000 + seed)
    return cfg


def perturb_model(path, seed):
    """In place: matrices (and wte, wpe) x10 (std ~0.2), LayerNorm gains 1+N(0,0.2),
    biases N(0,0.1)."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "r+") as f:
        g = f["model"]
        for name in sorted(g):
            ds = g[name]
            a = ds[()]
            if a.ndim == 2:
                a = a * 10.0
            elif name.endswith(".bias"):
                a = rng.normal(0.0, 0.1, a.shape)
            else:  # LayerNorm gain
                a = 1.0 + rng.normal(0.0, 0.2, a.shape)
            ds[...] = a.astype(np.float32)


def expected_names(cfg):
    """Every tensor name of the model file, from the specification."""
    names = ["wte", "wpe"]
    for i in range(cfg["n_layer"]):
        for sub in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            names += [f"h.{i}.{sub}.weight", f"h.{i}.{sub}.bias"]
    if cfg["ln"] == "pre":
        names += ["ln_f.weight", "ln_f.bias"]
    return names


def reference_grads(model_path, tokens):
    """float64 reference: loss, logits [B,T,V], {name: grad}."""
    model = torch_gpt.GPT.from_file(model_path, torch.float64).eval()
    tok = torch.as_tensor(tokens, dtype=torch.long)
    logits = model(tok[:, :-1])
    loss = torch_gpt.lm_loss(logits, tok[:, 1:])
    loss.backward()
    grads = {n: p.grad.numpy() for n, p in model.named_parameters()}
    return loss.item(), logits.detach().numpy(), grads


def write_grads_batch(path, tokens):
    with h5py.File(path, "w") as f:
        f.create_dataset("tokens", data=np.asarray(tokens, dtype=np.int32))


TRAIN_HP = dict(lr=1e-3, min_lr=1e-4, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.1, clip=3.0, warmup=3, total_steps=10, steps=10)


def write_train_batch(path, tokens, hp):
    with h5py.File(path, "w") as f:
        f.create_dataset("tokens", data=np.asarray(tokens, dtype=np.int32))
        for k in ("lr", "min_lr", "beta1", "beta2", "eps", "weight_decay", "clip"):
            f.attrs[k] = np.float64(hp[k])
        for k in ("warmup", "total_steps", "steps"):
            f.attrs[k] = np.int64(hp[k])


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


# --------------------------------------------------------------------------- the reference itself

def naive_forward(cfg, st, tok):
    """The specification transcribed into numpy float64 with an explicit loop over heads:
    returns (logits, mean NLL) for tok [B, T+1]."""
    Cn, Hn, eps = cfg["n_embd"], cfg["n_head"], cfg["ln_eps"]
    hs = Cn // Hn
    st = {k: v.astype(np.float64) for k, v in st.items()}
    inp, tgt = tok[:, :-1], tok[:, 1:]
    T = inp.shape[1]

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * st[p + ".weight"] + st[p + ".bias"]

    def lin(x, p):
        return x @ st[p + ".weight"].T + st[p + ".bias"]

    def attn(x, p):
        qkv = lin(x, p + ".c_attn")
        q, k, v = qkv[..., :Cn], qkv[..., Cn:2 * Cn], qkv[..., 2 * Cn:]
        y = np.zeros_like(q)
        future = np.triu(np.ones((T, T), dtype=bool), 1)
        for j in range(Hn):
            cols = slice(j * hs, (j + 1) * hs)
            s = q[..., cols] @ k[..., cols].transpose(0, 2, 1) / math.sqrt(hs)
            s[:, future] = -np.inf
            pr = np.exp(s - s.max(-1, keepdims=True))
            pr /= pr.sum(-1, keepdims=True)
            y[..., cols] = pr @ v[..., cols]
        return lin(y, p + ".c_proj")

    def mlp(x, p):
        a = lin(x, p + ".c_fc")
        a = 0.5 * a * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * a ** 3)))
        return lin(a, p + ".c_proj")

    x = st["wte"][inp] + st["wpe"][:T]
    for i in range(cfg["n_layer"]):
        p = f"h.{i}"
        if cfg["ln"] == "pre":
            x = x + attn(ln(x, p + ".ln_1"), p + ".attn")
            x = x + mlp(ln(x, p + ".ln_2"), p + ".mlp")
        else:
            x = ln(x + attn(x, p + ".attn"), p + ".ln_1")
            x = ln(x + mlp(x, p + ".mlp"), p + ".ln_2")
    if cfg["ln"] == "pre":
        x = ln(x, "ln_f")
    logits = x @ st["wte"].T
    m = logits.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
    nll = lse - np.take_along_axis(logits, tgt[..., None], -1)[..., 0]
    return logits, nll.mean()


@pytest.mark.parametrize("ln", ["post", "pre"])
def test_reference_matches_spec(ln, workdir):
    """torch_gpt (file round trip, names, forward, loss) against the numpy transcription
    of the specification. Needs no C binary."""
    cfg = dict(n_layer=2, n_head=3, n_embd=12, n_ctx=9, vocab_size=23, n_ffn=20,
               dropout_embd=0.0, dropout_resid=0.0, dropout_attn=0.0, ln=ln, ln_eps=1e-5)
    model = torch_gpt.GPT(cfg).init_weights(seed=3, std=0.02)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    assert list(state) == expected_names(cfg)
    path = workdir / "m.h5"
    torch_gpt.save_model(path, cfg, state)
    perturb_model(path, seed=7)
    assert torch_gpt.load_config(path)["ln"] == ln
    tok = np.random.default_rng(5).integers(0, 23, (2, 8))
    ref = torch_gpt.GPT.from_file(path, torch.float64).eval()
    t = torch.as_tensor(tok)
    logits = ref(t[:, :-1]).detach().numpy()
    loss = ref.loss(t[:, :-1], t[:, 1:]).item()
    want_logits, want_loss = naive_forward(torch_gpt.load_config(path),
                                           torch_gpt.load_state(path), tok)
    assert np.abs(logits - want_logits).max() < 1e-10
    assert abs(loss - want_loss) < 1e-10
    # Sanity: the perturbation makes attention rows far from uniform.
    assert np.std(logits) > 0.5


def test_lr_schedule():
    hp = dict(lr=1e-3, min_lr=1e-4, warmup=3, total_steps=10)
    got = [torch_gpt.lr_at(s, **hp) for s in range(12)]
    assert got[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3], rel=1e-15)
    assert got[3] == pytest.approx(1e-3, rel=1e-15)             # cosine starts at lr
    assert got[10] == got[11] == pytest.approx(1e-4, rel=1e-15)  # clamped at min_lr


# --------------------------------------------------------------------------- oracle grads

GRAD_CASES = [
    pytest.param("post", F_ODD, N_CTX, id="post-F80-T17"),
    pytest.param("pre", F_ODD, N_CTX, id="pre-F80-T17"),
    pytest.param("post", None, 11, id="post-F4C-T11"),
    pytest.param("pre", None, 11, id="pre-F4C-T11"),
    # longer than the engine's attention row block (64): three blocks, the last partial
    pytest.param("post", F_ODD, 150, id="post-F80-T150"),
]


# Every case on one thread and two (OpenMP kernels and OpenBLAS), on each kernel set.
@pytest.mark.parametrize("kernels", KERNEL_SETS)
@pytest.mark.parametrize("threads", [1, 2], ids=["1thread", "2threads"])
@pytest.mark.parametrize("ln,n_ffn,T", GRAD_CASES)
def test_grads(ln, n_ffn, T, threads, kernels, run, gpt_bin, oracle_bin, workdir):
    model_path, batch_path, out_path = workdir / "m.h5", workdir / "b.h5", workdir / "o.h5"
    cfg = make_model(run, gpt_bin, model_path, ln, n_ffn=n_ffn, seed=11, n_ctx=max(N_CTX, T))
    tokens = np.random.default_rng(12).integers(0, V, (B, T + 1), dtype=np.int32)
    write_grads_batch(batch_path, tokens)
    run([oracle_bin, "grads", model_path, batch_path, out_path], check=True,
        env=compute_env(threads, kernels))

    ref_loss, ref_logits, ref_grads = reference_grads(model_path, tokens)
    with h5py.File(out_path, "r") as f:
        loss = float(np.asarray(f["loss"][()]).reshape(-1)[0])
        logits = f["logits"][()]
        got = {n: f["grad"][n][()] for n in f["grad"]}

    names = expected_names(cfg)
    assert sorted(ref_grads) == sorted(names)
    missing = [n for n in names if n not in got]
    extra = [n for n in got if n not in names]
    assert not missing and not extra, f"missing grads {missing}, unexpected {extra}"

    loss_err = rel(loss, ref_loss)
    assert logits.shape == ref_logits.shape == (B, T, V)
    logits_err = np.abs(logits - ref_logits).max() / np.abs(ref_logits).max()
    errs = {}
    for n in names:
        assert got[n].shape == ref_grads[n].shape, f"{n}: shape {got[n].shape}"
        scale = np.abs(ref_grads[n]).max()
        assert scale > 0, f"{n}: reference gradient is all zero (test not meaningful)"
        errs[n] = np.abs(got[n] - ref_grads[n]).max() / scale
    worst = sorted(errs.items(), key=lambda kv: -kv[1])
    print(f"\n[{ln} F={cfg['n_ffn']} T={T}] loss {loss:.9g} ref {ref_loss:.9g} rel {loss_err:.2e};"
          f" logits rel-to-max {logits_err:.2e}; worst grads: "
          + ", ".join(f"{n} {e:.2e}" for n, e in worst[:4]))

    assert loss_err <= LOSS_RTOL, f"loss {loss} vs ref {ref_loss}: rel {loss_err:.3e}"
    assert logits_err <= LOGITS_TOL, f"logits max abs diff / max|ref| = {logits_err:.3e}"
    bad = [(n, e) for n, e in worst if e > GRAD_TOL]
    assert not bad, ("gradients off (max abs diff / max|ref grad|): "
                     + ", ".join(f"{n} {e:.3e}" for n, e in bad[:8]))


# --------------------------------------------------------------------------- oracle train

TRAIN_CASES = [
    pytest.param("post", N_CTX, id="post-T17"),
    pytest.param("pre", 13, id="pre-T13"),  # T < n_ctx: wpe rows >= T only decay
]


@pytest.mark.parametrize("kernels", KERNEL_SETS)
@pytest.mark.parametrize("threads", [1, 2], ids=["1thread", "2threads"])
@pytest.mark.parametrize("ln,T", TRAIN_CASES)
def test_train(ln, T, threads, kernels, run, gpt_bin, oracle_bin, workdir):
    model_path, batch_path, out_path = workdir / "m.h5", workdir / "b.h5", workdir / "o.h5"
    hp = TRAIN_HP
    make_model(run, gpt_bin, model_path, ln, seed=21)
    tokens = np.random.default_rng(22).integers(0, V, (2, B, T + 1), dtype=np.int32)
    write_train_batch(batch_path, tokens, hp)
    run([oracle_bin, "train", model_path, batch_path, out_path], check=True,
        env=compute_env(threads, kernels))

    model = torch_gpt.GPT.from_file(model_path, torch.float64).eval()  # dropout off
    ref = torch_gpt.reference_train(
        model, tokens, hp["steps"], hp["lr"], hp["min_lr"], hp["warmup"], hp["total_steps"],
        beta1=hp["beta1"], beta2=hp["beta2"], eps=hp["eps"],
        weight_decay=hp["weight_decay"], clip=hp["clip"])
    ref = {k: np.array(v) for k, v in ref.items()}
    clipped = ref["grad_norm"] > hp["clip"]
    # The clip is chosen so that both branches run: some steps clipped, some not.
    assert clipped.any() and not clipped.all(), f"clip {hp['clip']}, norms {ref['grad_norm']}"

    with h5py.File(out_path, "r") as f:
        got = {k: f[k][()].astype(np.float64) for k in ("losses", "lr", "grad_norm")}
    for k in got:
        assert got[k].shape == (hp["steps"],), f"{k}: shape {got[k].shape}"

    errs = {k: np.abs(got[k] - ref[k]) / np.abs(ref[k]) for k in got}
    print(f"\n[{ln} T={T}] clipped at steps {np.flatnonzero(clipped).tolist()}; max rel err:"
          + "".join(f" {k} {e.max():.2e} (step {e.argmax()})" for k, e in errs.items())
          + "\n  loss rel err per step: " + " ".join(f"{e:.1e}" for e in errs["losses"]))

    assert errs["lr"].max() <= TRAIN_LR_RTOL, f"lr {got['lr']} vs {ref['lr']}"
    assert errs["grad_norm"].max() <= TRAIN_NORM_RTOL, \
        f"grad_norm {got['grad_norm']} vs {ref['grad_norm']}"
    assert errs["losses"].max() <= TRAIN_LOSS_RTOL, f"losses {got['losses']} vs {ref['losses']}"


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("mode", ["grads", "train"])
@pytest.mark.parametrize("bad", [V, V + 1000, -1], ids=["V", "V+1000", "neg"])
def test_bad_token_rejected(mode, bad, run, gpt_bin, oracle_bin, workdir):
    model_path, batch_path, out_path = workdir / "m.h5", workdir / "b.h5", workdir / "o.h5"
    make_model(run, gpt_bin, model_path, "post", seed=31, perturb=False)
    rng = np.random.default_rng(32)
    if mode == "grads":
        tokens = rng.integers(0, V, (B, 9), dtype=np.int32)
        tokens[1, 4] = bad
        write_grads_batch(batch_path, tokens)
    else:
        tokens = rng.integers(0, V, (2, B, 9), dtype=np.int32)
        tokens[1, 2, 8] = bad  # in the second batch, as a target only
        write_train_batch(batch_path, tokens, dict(TRAIN_HP, steps=2))
    proc = run([oracle_bin, mode, model_path, batch_path, out_path])
    assert proc.returncode != 0, f"oracle {mode} accepted token {bad} (V={V})"
    msg = proc.stderr.lower()
    assert "token" in msg or "vocab" in msg, f"unhelpful message: {proc.stderr!r}"
