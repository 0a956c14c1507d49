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

import contextlib
import math

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

INT_FIELDS = ("n_layer", "n_head", "n_embd", "n_ctx", "vocab_size", "n_ffn")


# --------------------------------------------------------------------------- bf16 products
# docs/precision.md: with --precision bf16 every matrix product takes its operands rounded
# to bf16 (nearest, ties to even; denormals to zero, NaN kept) and sums in fp32. The
# reference computes the same products on rounded operands, in its own dtype, forward and
# backward, within `with bf16_products():`.

_BF16 = False


@contextlib.contextmanager
def bf16_products(on=True):
    """Within it, every matrix product of the model below rounds its operands to bf16."""
    global _BF16
    saved, _BF16 = _BF16, bool(on)
    try:
        yield
    finally:
        _BF16 = saved


def bf16_round(x):
    """x rounded to bf16 as the engine rounds a float32 (x is first made float32)."""
    u = x.to(torch.float32).view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    exp = u & 0x7F800000
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    r = torch.where((exp == 0x7F800000) & ((u & 0x7FFFFF) != 0), (u >> 16) | 0x40, r)
    r = torch.where(exp == 0, (u >> 16) & 0x8000, r)
    bits = r << 16
    bits = torch.where(bits >= 2**31, bits - 2**32, bits)
    return bits.to(torch.int32).view(torch.float32).to(x.dtype)


class _Bf16Matmul(torch.autograd.Function):
    """a @ b on bf16-rounded operands; the backward products round theirs too."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return bf16_round(a) @ bf16_round(b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        ar, br, gr = bf16_round(a), bf16_round(b), bf16_round(g)
        da = gr @ br.transpose(-2, -1)
        if b.dim() == 2 and a.dim() > 2:  # a batch of rows times one matrix: sum over the batch
            db = ar.reshape(-1, a.shape[-1]).t() @ gr.reshape(-1, g.shape[-1])
        else:
            db = ar.transpose(-2, -1) @ gr
        return da, db


def mm(a, b):
    return _Bf16Matmul.apply(a, b) if _BF16 else a @ b


class Linear(nn.Linear):
    """nn.Linear whose product is mm's."""

    def forward(self, x):
        return mm(x, self.weight.t()) + self.bias if _BF16 else super().forward(x)

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
        self.c_attn = Linear(C, 3 * C)   # weight [3C, C]: rows q, then k, then v
        self.c_proj = Linear(C, C)
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
        att = mm(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))
        att = att.masked_fill(~self.mask[:T, :T], float("-inf"))
        att = self.attn_drop(F.softmax(att, dim=-1))
        y = mm(att, v).transpose(1, 2).contiguous().view(B, T, C)  # heads side by side
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = Linear(cfg["n_embd"], cfg["n_ffn"])
        self.c_proj = Linear(cfg["n_ffn"], cfg["n_embd"])

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
        return mm(x, self.wte.t())

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


# --------------------------------------------------------------------------- inference
# Added for `gpt generate` / `gpt score` (tests/test_generate.py, tools/bench_generate.py).
# A KV cache: past is None or a list with one (k, v) pair per block, each [B, H, Tp, hs].

def attn_forward_cached(attn, x, past_kv=None):
    """CausalSelfAttention over the new tokens x [B, T, C] at positions Tp .. Tp+T-1,
    attending to the cached keys/values of positions 0 .. Tp-1 and causally to each
    other. Returns (y [B, T, C], (k, v) of all Tp + T positions)."""
    B, T, C = x.shape
    H = attn.n_head
    q, k, v = attn.c_attn(x).split(C, dim=2)
    q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
    if past_kv is not None:
        k = torch.cat([past_kv[0], k], dim=2)
        v = torch.cat([past_kv[1], v], dim=2)
    Tp = k.shape[2] - T
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))  # B, H, T, Tp+T
    # new token i (absolute position Tp+i) sees keys 0 .. Tp+i
    allowed = torch.ones(T, Tp + T, dtype=torch.bool, device=x.device).tril(diagonal=Tp)
    att = att.masked_fill(~allowed, float("-inf"))
    att = attn.attn_drop(F.softmax(att, dim=-1))
    y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
    return attn.c_proj(y), (k, v)


def block_forward_cached(block, x, past_kv=None):
    if block.pre:
        a, kv = attn_forward_cached(block.attn, block.ln_1(x), past_kv)
        x = x + block.drop(a)
        x = x + block.drop(block.mlp(block.ln_2(x)))
    else:
        a, kv = attn_forward_cached(block.attn, x, past_kv)
        x = block.ln_1(x + block.drop(a))
        x = block.ln_2(x + block.drop(block.mlp(x)))
    return x, kv


def forward_cached(model, idx, past=None):
    """idx: LongTensor [B, T] of new tokens at positions Tp .. Tp+T-1 (Tp = cached
    length, Tp + T <= n_ctx) -> (logits [B, T, V], new past). past=None starts empty.
    Equals model(full sequence)[:, Tp:] up to rounding."""
    T = idx.shape[1]
    Tp = 0 if past is None else past[0][0].shape[2]
    assert Tp + T <= model.cfg["n_ctx"], f"Tp+T={Tp + T} exceeds n_ctx={model.cfg['n_ctx']}"
    x = model.drop(F.embedding(idx, model.wte) + model.wpe[Tp:Tp + T])
    new_past = []
    for i, block in enumerate(model.h):
        x, kv = block_forward_cached(block, x, None if past is None else past[i])
        new_past.append(kv)
    if model.cfg["ln"] == "pre":
        x = model.ln_f(x)
    return x @ model.wte.t(), new_past


GPT.forward_cached = forward_cached  # model.forward_cached(idx, past)


def decode(model, prompt_ids, n, eot, choose):
    """The decoding loop of `gpt generate`, with the KV cache: an empty prompt starts from
    [eot]; a prompt longer than n_ctx keeps its last n_ctx tokens; choose(logits_row, i)
    gives generated token i; generation stops at eot (not returned) or after n tokens.
    When the cache is full (n_ctx tokens) and another token must be fed, the context
    slides: the last n_ctx // 2 tokens of the sequence (the token to feed included) are
    re-encoded from position 0. Returns (ids, the logits rows they were chosen from)."""
    model.eval()
    n_ctx = model.cfg["n_ctx"]
    ctx = list(prompt_ids) if len(prompt_ids) else [eot]
    ctx = ctx[-n_ctx:]
    out, rows = [], []
    with torch.no_grad():
        logits, past = forward_cached(model, torch.tensor([ctx]))
        cached = len(ctx)
        row = logits[0, -1]
        while len(out) < n:
            tok = int(choose(row, len(out)))
            if tok == eot:
                break
            out.append(tok)
            rows.append(row)
            ctx.append(tok)
            if len(out) == n:
                break
            if cached == n_ctx:  # full: slide
                ctx = ctx[-(n_ctx // 2):]
                logits, past = forward_cached(model, torch.tensor([ctx]))
                cached = len(ctx)
            else:
                logits, past = forward_cached(model, torch.tensor([[tok]]), past)
                cached += 1
            row = logits[0, -1]
    return out, rows


def generate_greedy(model, prompt_ids, n, eot):
    """Greedy decoding (`gpt generate --temperature 0`): the argmax at every step, ties to
    the lowest id (torch.argmax returns the first maximum). Returns the generated ids."""
    return decode(model, prompt_ids, n, eot, lambda row, i: torch.argmax(row))[0]


def logits_along(model, prompt_ids, ids, eot):
    """The logits rows from which the generated `ids` were drawn: decode() forced along
    ids (teacher forcing with the same cache and sliding rule). [len(ids), V] tensor."""
    ids = list(ids)
    out, rows = decode(model, prompt_ids, len(ids), eot, lambda row, i: ids[i])
    assert out == ids, "ids contain eot before their end"
    return torch.stack(rows) if rows else torch.zeros(0, model.cfg["vocab_size"])


def score(model, ids, n_ctx=None, stride=None):
    """Log-likelihood by the window rule of `gpt score`. ids = [eot] + encode(text) =
    x_0 .. x_n. For begin = 0, S, 2S, ...: end = min(begin + n_ctx, n); inputs x[begin:end],
    targets x[begin+1:end+1]; the targets with index > prev_end are scored (prev_end
    starts at 0, then becomes end); stop after the window with end == n.
    Default stride S = n_ctx // 2 (at least 1). Returns dict log_likelihood (float, natural
    log), tokens (n), windows, stride."""
    model.eval()
    n_ctx = n_ctx or model.cfg["n_ctx"]
    S = stride or max(1, n_ctx // 2)
    x = torch.as_tensor(list(ids), dtype=torch.long)
    n = len(x) - 1
    assert n >= 1, "nothing to score"
    total, windows, prev_end, begin = 0.0, 0, 0, 0
    with torch.no_grad():
        while True:
            end = min(begin + n_ctx, n)
            logits = model(x[begin:end].unsqueeze(0))[0]
            logp = F.log_softmax(logits.double(), dim=-1)
            tgt = x[begin + 1:end + 1]
            lp = logp.gather(1, tgt.unsqueeze(1)).squeeze(1)  # lp[j] is target index begin+1+j
            first = max(prev_end + 1, begin + 1) - (begin + 1)
            total += float(lp[first:].sum())
            windows += 1
            prev_end = end
            if end == n:
                break
            begin += S
    return {"log_likelihood": total, "tokens": n, "windows": windows, "stride": S}
