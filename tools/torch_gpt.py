"""torch_gpt: the independent PyTorch reference for the C GPT engine.

This module re-implements the model, its model file format and its training step
from the written specification only (no code shared with the C sources), so that
tests/test_oracle.py can compare the engine's losses, logits, gradients and AdamW
trajectory against it, typically in float64.

Model (GPT-1 "post" or GPT-2 "pre" LayerNorm placement):
    h0 = dropout(wte[tok] + wpe[pos])
    post: x = LN1(x + drop(attn(x)));      x = LN2(x + drop(mlp(x)))      (no ln_f)
    pre:  x = x + drop(attn(LN1(x)));      x = x + drop(mlp(LN2(x)))      then ln_f
    logits = h @ wte^T (tied, no bias); loss = mean cross-entropy over B*T positions.

Model file: HDF5 group /model, one float32 dataset per tensor named like a PyTorch
state dict (nn.Linear weights are [out, in]), config fields as attributes of /model.
"""

import math

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

INT_FIELDS = ("n_layer", "n_head", "n_embd", "n_ctx", "vocab_size", "n_ffn")
FLOAT_FIELDS = ("dropout_embd", "dropout_resid", "dropout_attn", "ln_eps")


# --------------------------------------------------------------------------- file I/O

def load_config(path):
    """Config dict from the attributes of /model (plain Python ints/floats/str)."""
    with h5py.File(path, "r") as f:
        attrs = f["model"].attrs
        cfg = {k: int(attrs[k]) for k in INT_FIELDS}
        cfg.update({k: float(attrs[k]) for k in FLOAT_FIELDS})
        ln = attrs["ln"]
        if isinstance(ln, np.ndarray):  # a 1-element array of strings
            ln = ln.reshape(-1)[0]
        cfg["ln"] = ln.decode() if isinstance(ln, (bytes, np.bytes_)) else str(ln)
    if cfg["ln"] not in ("post", "pre"):
        raise ValueError(f"{path}: unknown ln {cfg['ln']!r}")
    return cfg


def load_state(path):
    """Dict tensor name -> numpy array of every dataset in /model."""
    with h5py.File(path, "r") as f:
        return {name: ds[()] for name, ds in f["model"].items()}


def save_model(path, cfg, state):
    """Writes a model file in the documented layout (used by tests and sanity checks)."""
    with h5py.File(path, "w") as f:
        g = f.create_group("model")
        for name, arr in state.items():
            g.create_dataset(name, data=np.asarray(arr, dtype=np.float32))
        for k in INT_FIELDS:
            g.attrs[k] = np.int32(cfg[k])
        for k in FLOAT_FIELDS:
            g.attrs[k] = np.float32(cfg[k])
        g.attrs["ln"] = cfg["ln"]


# --------------------------------------------------------------------------- model

class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention written with plain matmuls (torch 1.13 has no
    scaled_dot_product_attention), as nanoGPT's slow path."""

    def __init__(self, cfg):
        super().__init__()
        C, H = cfg["n_embd"], cfg["n_head"]
        assert C % H == 0
        self.n_head = H
        self.c_attn = nn.Linear(C, 3 * C)   # weight [3C, C]: rows q, then k, then v
        self.c_proj = nn.Linear(C, C)
        self.attn_drop = nn.Dropout(cfg["dropout_attn"])
        n = cfg["n_ctx"]
        # Lower-triangular mask; not part of the state dict.
        self.register_buffer("mask", torch.tril(torch.ones(n, n, dtype=torch.bool)),
                             persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        H = self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        # Head j takes columns j*C/H .. (j+1)*C/H of each of q, k, v.
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))  # B,H,T,hs
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))
        att = att.masked_fill(~self.mask[:T, :T], float("-inf"))
        att = self.attn_drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)  # heads side by side
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg["n_embd"], cfg["n_ffn"])
        self.c_proj = nn.Linear(cfg["n_ffn"], cfg["n_embd"])

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, eps = cfg["n_embd"], cfg["ln_eps"]
        self.pre = cfg["ln"] == "pre"
        self.ln_1 = nn.LayerNorm(C, eps=eps)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(C, eps=eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg["dropout_resid"])  # on each sublayer's output

    def forward(self, x):
        if self.pre:
            x = x + self.drop(self.attn(self.ln_1(x)))
            x = x + self.drop(self.mlp(self.ln_2(x)))
        else:
            x = self.ln_1(x + self.drop(self.attn(x)))
            x = self.ln_2(x + self.drop(self.mlp(x)))
        return x


class GPT(nn.Module):
    """Parameter names equal the model file's dataset names: wte, wpe, h.{i}.*, ln_f.*"""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = dict(cfg)
        V, C, n = cfg["vocab_size"], cfg["n_embd"], cfg["n_ctx"]
        # Plain Parameters (not nn.Embedding) so the names are exactly "wte" / "wpe".
        self.wte = nn.Parameter(torch.zeros(V, C))
        self.wpe = nn.Parameter(torch.zeros(n, C))
        self.drop = nn.Dropout(cfg["dropout_embd"])
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg["n_layer"]))
        if cfg["ln"] == "pre":
            self.ln_f = nn.LayerNorm(C, eps=cfg["ln_eps"])

    def init_weights(self, seed=0, std=0.02):
        """GPT-1 style: matrices and embeddings N(0, std), LN gains 1, biases 0."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=g) * std)
                elif name.endswith(".weight"):  # LayerNorm gain
                    p.fill_(1.0)
                else:
                    p.zero_()
        return self

    @classmethod
    def from_file(cls, path, dtype=torch.float64):
        model = cls(load_config(path))
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in load_state(path).items()}
        model.load_state_dict(state, strict=True)  # names and shapes must match exactly
        return model.to(dtype)

    def forward(self, idx):
        """idx: LongTensor [B, T], T <= n_ctx -> logits [B, T, V]."""
        T = idx.shape[1]
        assert T <= self.cfg["n_ctx"], f"T={T} exceeds n_ctx={self.cfg['n_ctx']}"
        x = self.drop(F.embedding(idx, self.wte) + self.wpe[:T])
        for block in self.h:
            x = block(x)
        if self.cfg["ln"] == "pre":
            x = self.ln_f(x)
        return x @ self.wte.t()

    def loss(self, idx, targets):
        return lm_loss(self(idx), targets)


def lm_loss(logits, targets):
    """Mean cross-entropy over all B*T positions."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# --------------------------------------------------------------------------- training

def adamw_groups(model, weight_decay):
    """Two AdamW parameter groups: decay for 2-D tensors (Linear weights, wte, wpe),
    none for biases and LayerNorm parameters."""
    params = list(model.parameters())
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def lr_at(step, lr, min_lr, warmup, total_steps):
    """Learning rate of 0-based `step`: linear warm-up, then cosine decay to min_lr."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    progress = min(max(progress, 0.0), 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def reference_train(model, tokens, steps, lr, min_lr, warmup, total_steps,
                    beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, clip=0.0):
    """Runs `steps` AdamW steps, step s on batch tokens[s % S] (tokens: [S, B, T+1]).
    Dropout follows model.training. Returns dict of lists losses, lr, grad_norm
    (loss before the update, lr used, global gradient norm before clipping)."""
    params = list(model.parameters())
    opt = torch.optim.AdamW(adamw_groups(model, weight_decay), lr=lr,
                            betas=(beta1, beta2), eps=eps)
    tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    out = {"losses": [], "lr": [], "grad_norm": []}
    for s in range(steps):
        lr_s = lr_at(s, lr, min_lr, warmup, total_steps)
        for group in opt.param_groups:
            group["lr"] = lr_s
        batch = tokens[s % tokens.shape[0]]
        opt.zero_grad(set_to_none=True)
        loss = model.loss(batch[:, :-1], batch[:, 1:])
        loss.backward()
        if clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            norm = torch.norm(torch.stack([p.grad.norm(2) for p in params]), 2)
        opt.step()
        out["losses"].append(loss.item())
        out["lr"].append(lr_s)
        out["grad_norm"].append(float(norm))
    return out
