"""Fine-tuning against the PyTorch reference and the CLI's contracts.

    make && /usr/bin/python3 -m pytest -q tests/test_finetune.py

(a) `oracle task` (tests/oracle.c: finetune_loss_grad on the first <= 8 training examples)
against a float64 PyTorch reference built on tools/torch_gpt.py, for every task type and
label kind: L3 = L2 + lambda L1 and the gradients of the head and of some model tensors;
(b) the same with LoRA adapters whose B is not zero; (c) LoRA at the CLI: the base is never
written, the run's model holds only adapters and head, merge-lora computes the same, a
fresh adapter equals the unchanged model; (d) ranks and resume; (e) bad input."""

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import torch_gpt  # noqa: E402
from conftest import sh  # noqa: E402

torch.set_num_threads(1)

LOSS_RTOL = 1e-4
GRAD_TOL = 1e-3    # per tensor: max |diff| <= GRAD_TOL * max |reference| (+ a floor)

WORDS = ("the whale ship sea captain ahab white boat harpoon crew deck storm wind "
         "moby dick ishmael queequeg starbuck pequod ocean wave oil").split()


# --------------------------------------------------------------------------- helpers

def sentence(rng, lo=2, hi=6):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def records(task, n, seed, real=False):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if task == "classify":
            out.append({"text": sentence(rng), "label": rng.randrange(3)})
        elif task == "entail":
            out.append({"premise": sentence(rng), "hypothesis": sentence(rng), "label": rng.randrange(2)})
        elif task == "similar":
            label = round(rng.uniform(0, 5), 3) if real else rng.randrange(2)
            out.append({"text_a": sentence(rng), "text_b": sentence(rng), "label": label})
        else:
            out.append({"context": sentence(rng), "choices": [sentence(rng, 1, 3) for _ in range(3)],
                        "label": rng.randrange(3)})
    return out


def write_jsonl(path, recs):
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def perturb(path, seed):
    """Larger weights and non-trivial LayerNorm parameters, so every tensor matters."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "r+") as f:
        g = f["model"]
        for name in sorted(g):
            a = g[name][()]
            if a.ndim == 2:
                a = a * 5.0
            elif name.endswith(".bias"):
                a = rng.normal(0.0, 0.1, a.shape)
            else:
                a = 1.0 + rng.normal(0.0, 0.2, a.shape)
            g[name][...] = a.astype(np.float32)


def read_metrics(run_dir):
    return [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if l.strip()]


def eval_task(gpt, model, data, base=None, check=True):
    args = [gpt, "eval-task", "--model", model, "--data", data]
    if base:
        args += ["--base", base]
    proc = sh(args, check=check)
    if not check:
        return proc
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def env(gpt_bin, tmp_path_factory):
    """tok.h5, base.h5 (post-LN) and pre.h5 (pre-LN), perturbed; task files of every kind."""
    d = tmp_path_factory.mktemp("ft")
    rng = random.Random(5)
    text = d / "text.txt"
    text.write_text("\n".join(sentence(rng, 5, 15) + "." for _ in range(300)))
    tok = d / "tok.h5"
    sh([gpt_bin, "tokenizer", "train", "--merges", 60, "--out", tok, text])
    with h5py.File(tok, "r") as f:
        vocab = None
        for k in ("vocab_size",):
            if k in f.attrs:
                vocab = int(f.attrs[k])
        if vocab is None:
            vocab = int(f["tokenizer"].attrs["vocab_size"])
    models = {}
    for name, ln, seed in (("base", "post", 1), ("pre", "pre", 2), ("other", "post", 9)):
        p = d / f"{name}.h5"
        sh([gpt_bin, "init", "--model", "tiny", "--vocab", vocab, "--n-ctx", 64, "--n-layer", 2,
            "--n-head", 2, "--n-embd", 32, "--ln", ln, "--dropout", 0, "--seed", seed, "--out", p])
        if name != "other":
            perturb(p, 100 + seed)
        models[name] = p
    tasks = {}
    specs = {"classify": ("classify", [], False), "entail": ("entail", [], False),
             "similar_real": ("similar", [], True), "similar_cls": ("similar", ["--num-classes", 2], False),
             "choice": ("choice", [], False)}
    for key, (task, extra, real) in specs.items():
        src = write_jsonl(d / f"{key}.jsonl", records(task, 12, hash(key) % 1000, real))
        out = d / f"{key}.h5"
        sh([gpt_bin, "prepare-task", "--tokenizer", tok, "--task", task, "--out", out, "--n-ctx", 64,
            "--val-fraction", 0.25, *extra, src])
        tasks[key] = out
    return {"dir": d, "tok": tok, "vocab": vocab, "tasks": tasks, **models}


# --------------------------------------------------------------------------- reference

def hidden_states(model, idx):
    """Final hidden states [1, T, C] of one sequence (LongTensor [1, T])."""
    T = idx.shape[1]
    x = F.embedding(idx, model.wte) + model.wpe[:T]
    for block in model.h:
        x = block(x)
    if model.cfg["ln"] == "pre":
        x = model.ln_f(x)
    return x


def train_examples(path, n_max=8):
    """[(list of sequences (lists of ids), label)] of the first <= n_max /train examples."""
    with h5py.File(path, "r") as f:
        g = f["train"]
        toks, so, eo, lab = g["tokens"][()], g["seq_offsets"][()], g["example_offsets"][()], g["labels"][()]
    out = []
    for e in range(min(n_max, len(eo) - 1)):
        seqs = [toks[so[s]:so[s + 1]].astype(np.int64).tolist() for s in range(eo[e], eo[e + 1])]
        out.append((seqs, float(lab[e])))
    return out


def reference_loss(model, examples, kind, W, b, lam):
    """L3 = L2 + lam L1 (lam 0: no L1) with W, b the head; returns (L3, L2, L1)."""
    l2, nll, ntok = 0.0, 0.0, 0
    for seqs, label in examples:
        feats = []
        for s in seqs:
            idx = torch.tensor([s])
            h = hidden_states(model, idx)[0]
            feats.append(h[-1])
            logits = h[:-1] @ model.wte.t()
            nll = nll + F.cross_entropy(logits, idx[0, 1:], reduction="sum")
            ntok += len(s) - 1
        if kind == "choice":
            scores = torch.stack([(W @ f + b)[0] for f in feats])
            l2 = l2 + F.cross_entropy(scores[None], torch.tensor([int(label)]))
        else:
            f = feats[0] if len(feats) == 1 else feats[0] + feats[1]
            out = W @ f + b
            if kind == "real":
                l2 = l2 + (out[0] - label) ** 2
            else:
                l2 = l2 + F.cross_entropy(out[None], torch.tensor([int(label)]))
    l2 = l2 / len(examples)
    l1 = nll / ntok
    return (l2 + lam * l1 if lam > 0 else l2), l2, l1


def add_lora(model, adapters, alpha, rank):
    """Wraps each adapted nn.Linear: y = x W^T + b + (alpha/r) (x A^T) B^T. adapters: name
    (h.i.attn.c_attn) -> (A, B) leaf tensors."""
    s = alpha / rank
    for name, (A, B) in adapters.items():
        lin = model.get_submodule(name)
        lin.forward = (lambda x, lin=lin, A=A, B=B: F.linear(x, lin.weight, lin.bias) + s * ((x @ A.t()) @ B.t()))


def run_oracle(oracle_bin, model, task, lam, out, lora=None):
    args = [oracle_bin, "task", model, task, lam, out]
    if lora:
        args += list(lora)
    sh(args)
    with h5py.File(out, "r") as f:
        res = {k: float(f.attrs[k]) for k in ("loss", "l2", "l1")}
        res["head_weight"], res["head_bias"] = f["head_weight"][()], f["head_bias"][()]
        res["head_grad_weight"], res["head_grad_bias"] = f["head_grad_weight"][()], f["head_grad_bias"][()]
        for grp in ("grad", "lora", "lora_grad"):
            if grp in f:
                res[grp] = {k: f[grp][k][()] for k in f[grp]}
    return res


def close(name, got, ref, floor=1e-7):
    ref = ref.detach().numpy() if torch.is_tensor(ref) else np.asarray(ref)
    got = np.asarray(got, dtype=np.float64).reshape(ref.shape)
    err = np.abs(got - ref).max()
    scale = np.abs(ref).max()
    assert err <= GRAD_TOL * scale + floor, f"{name}: max |diff| {err:.3g}, max |ref| {scale:.3g}"


KINDS = {"classify": "class", "entail": "class", "similar_real": "real", "similar_cls": "class", "choice": "choice"}


# --------------------------------------------------------------------------- (a) reference

@pytest.mark.parametrize("key,lam,model_name", [
    ("classify", 0.5, "base"), ("entail", 0.5, "pre"), ("similar_real", 0.5, "base"),
    ("similar_cls", 0.5, "pre"), ("choice", 0.5, "base"), ("classify", 0.0, "pre"), ("choice", 0.0, "pre")])
def test_loss_and_gradients_match_pytorch(env, oracle_bin, key, lam, model_name):
    out = env["dir"] / f"oracle_{key}_{lam}_{model_name}.h5"
    res = run_oracle(oracle_bin, env[model_name], env["tasks"][key], lam, out)
    model = torch_gpt.GPT.from_file(str(env[model_name]), torch.float64).eval()
    W = torch.tensor(res["head_weight"], dtype=torch.float64, requires_grad=True)
    b = torch.tensor(res["head_bias"], dtype=torch.float64, requires_grad=True)
    ex = train_examples(env["tasks"][key])
    loss, l2, l1 = reference_loss(model, ex, KINDS[key], W, b, lam)
    loss.backward()
    assert res["l2"] == pytest.approx(l2.item(), rel=LOSS_RTOL)
    if lam > 0:
        assert res["l1"] == pytest.approx(l1.item(), rel=LOSS_RTOL)
    assert res["loss"] == pytest.approx(loss.item(), rel=LOSS_RTOL)
    close("head weight grad", res["head_grad_weight"], W.grad)
    close("head bias grad", res["head_grad_bias"], b.grad)
    params = dict(model.named_parameters())
    L = model.cfg["n_layer"]
    names = ["wte", "h.0.attn.c_attn.weight", "h.0.mlp.c_proj.weight", f"h.{L - 1}.ln_2.weight"]
    assert sorted(res["grad"]) == sorted(names)
    for n in names:
        close(n, res["grad"][n], params[n].grad)


# --------------------------------------------------------------------------- (b) LoRA reference

SITE_MODULES = {"attn.c_attn": "attn", "attn.c_proj": "attn", "mlp.c_fc": "mlp", "mlp.c_proj": "mlp"}


@pytest.mark.parametrize("key,targets,model_name", [
    ("classify", "attn", "base"), ("choice", "attn,mlp", "pre"), ("similar_real", "mlp", "base")])
def test_lora_loss_and_gradients_match_pytorch(env, oracle_bin, key, targets, model_name):
    rank, alpha, lam = 4, 8.0, 0.5
    out = env["dir"] / f"oracle_lora_{key}_{model_name}.h5"
    res = run_oracle(oracle_bin, env[model_name], env["tasks"][key], lam, out, (rank, alpha, targets))
    model = torch_gpt.GPT.from_file(str(env[model_name]), torch.float64).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    want = {t for t in targets.split(",")}
    expect = set()
    for i in range(model.cfg["n_layer"]):
        for site, group in SITE_MODULES.items():
            if group in want:
                expect |= {f"h.{i}.{site}.lora_A", f"h.{i}.{site}.lora_B"}
    assert set(res["lora"]) == expect
    adapters = {}
    for name in sorted(expect):
        if name.endswith("lora_A"):
            mod = name[: -len(".lora_A")]
            A = torch.tensor(res["lora"][name], dtype=torch.float64, requires_grad=True)
            B = torch.tensor(res["lora"][mod + ".lora_B"], dtype=torch.float64, requires_grad=True)
            assert np.abs(res["lora"][mod + ".lora_B"]).max() > 0
            lin = model.get_submodule(mod)
            assert A.shape == (rank, lin.in_features) and B.shape == (lin.out_features, rank)
            adapters[mod] = (A, B)
    add_lora(model, adapters, alpha, rank)
    W = torch.tensor(res["head_weight"], dtype=torch.float64, requires_grad=True)
    b = torch.tensor(res["head_bias"], dtype=torch.float64, requires_grad=True)
    loss, l2, l1 = reference_loss(model, train_examples(env["tasks"][key]), KINDS[key], W, b, lam)
    loss.backward()
    assert res["loss"] == pytest.approx(loss.item(), rel=LOSS_RTOL)
    assert res["l1"] == pytest.approx(l1.item(), rel=LOSS_RTOL)
    close("head weight grad", res["head_grad_weight"], W.grad)
    close("head bias grad", res["head_grad_bias"], b.grad)
    for mod, (A, B) in adapters.items():
        close(mod + ".lora_A grad", res["lora_grad"][mod + ".lora_A"], A.grad)
        close(mod + ".lora_B grad", res["lora_grad"][mod + ".lora_B"], B.grad)


# --------------------------------------------------------------------------- (c) LoRA at the CLI

def finetune(gpt, init, data, out, extra=(), ranks=None, check=True, env=None, flag="--data"):
    """flag: --data for a task file, --corpus for continued pre-training."""
    return sh([gpt, "finetune", "--init", init, flag, data, "--out", out, "--batch", 4,
               "--seed", 3, "--log-every", 1, *extra], ranks=ranks, check=check, env=env)


def test_lora_run_keeps_the_base_and_merges_to_the_same_model(env, gpt_bin):
    d, base, data = env["dir"], env["base"], env["tasks"]["classify"]
    before = sha(base)
    run = d / "lora_run"
    finetune(gpt_bin, base, data, run, ["--epochs", 1, "--lora-rank", 4, "--lr", "1e-2"])
    assert sha(base) == before, "finetune --lora-rank wrote to the base model"
    with h5py.File(run / "model.h5", "r") as f:
        assert "lora" in f and len(f["lora"]) > 0
        assert "head" in f and {"weight", "bias"} <= set(f["head"])
        tensors = [k for k in f["model"] if isinstance(f["model"][k], h5py.Dataset)] if "model" in f else []
        assert tensors == [], f"a LoRA run's model.h5 holds model tensors: {tensors}"
        assert any(np.abs(f["lora"][k][()]).max() > 0 for k in f["lora"] if k.endswith("lora_B"))
    merged = d / "lora_merged.h5"
    sh([gpt_bin, "merge-lora", "--model", run / "model.h5", "--out", merged])
    assert sha(base) == before
    a = eval_task(gpt_bin, run / "model.h5", data)
    b = eval_task(gpt_bin, merged, data)
    assert a["examples"] == b["examples"] > 0
    assert a["accuracy"] == b["accuracy"]
    assert abs(a["loss"] - b["loss"]) <= 1e-5


def test_fresh_lora_equals_the_unchanged_model(env, gpt_bin):
    """--lr 1e-30 (0 is refused): the adapters keep B ~ 0, the model and both heads their
    init (rng_key(seed, 1) in both modes), up to updates far below float32's resolution."""
    d, base, data = env["dir"], env["base"], env["tasks"]["entail"]
    lora, full = d / "lr0_lora", d / "lr0_full"
    finetune(gpt_bin, base, data, lora, ["--epochs", 0.5, "--lr", "1e-30", "--lora-rank", 4])
    finetune(gpt_bin, base, data, full, ["--epochs", 0.5, "--lr", "1e-30"])
    with h5py.File(lora / "model.h5", "r") as fl, h5py.File(full / "model.h5", "r") as ff:
        np.testing.assert_array_equal(fl["head"]["weight"][()], ff["head"]["weight"][()])
        assert np.abs(fl["head"]["bias"][()]).max() < 1e-25 and np.abs(ff["head"]["bias"][()]).max() < 1e-25
        assert all(np.abs(fl["lora"][k][()]).max() < 1e-25 for k in fl["lora"] if k.endswith("lora_B"))
        with h5py.File(base, "r") as fb:
            for k in fb["model"]:
                np.testing.assert_array_equal(ff["model"][k][()], fb["model"][k][()])
    a, b = eval_task(gpt_bin, lora / "model.h5", data), eval_task(gpt_bin, full / "model.h5", data)
    assert a == b


# --------------------------------------------------------------------------- (d) ranks, resume

@pytest.mark.parametrize("ranks,batch", [(2, 4), (3, 2)], ids=["2-ranks", "3-ranks-batch-2"])
def test_more_ranks_give_the_losses_of_one(env, gpt_bin, ranks, batch):
    """With batch 2 on 3 ranks one rank has no example a step: it still takes part in the
    overlapped gradient allreduce (with zeros)."""
    d, data = env["dir"], env["tasks"]["choice"]
    one, many = d / f"ranks1-{batch}", d / f"ranks{ranks}-{batch}"
    extra = ["--epochs", 2, "--micro-batch", 3, "--lr", "1e-3", "--batch", batch]
    finetune(gpt_bin, env["pre"], data, one, extra)
    finetune(gpt_bin, env["pre"], data, many, extra, ranks=ranks)
    m1, m2 = read_metrics(one), read_metrics(many)
    assert [m["step"] for m in m1] == [m["step"] for m in m2] and len(m1) >= 4
    for a, b in zip(m1, m2):
        for k in ("loss", "task_loss", "lm_loss", "grad_norm"):
            assert b[k] == pytest.approx(a[k], rel=1e-5), (a["step"], k)


def test_resume_after_a_crash_reaches_the_same_model(env, gpt_bin):
    d, data = env["dir"], env["tasks"]["similar_real"]
    full, crashed = d / "uninterrupted", d / "crashed"
    extra = ["--epochs", 2, "--lr", "1e-3", "--ckpt-every", 2]
    finetune(gpt_bin, env["base"], data, full, extra)
    proc = finetune(gpt_bin, env["base"], data, crashed, extra, check=False, env={"GPT_FAULT": "step:3"})
    assert proc.returncode != 0, "GPT_FAULT=step:3 did not stop the run"
    assert not (crashed / "model.h5").exists()
    finetune(gpt_bin, env["base"], data, crashed, [*extra, "--resume", "auto"])
    with h5py.File(full / "model.h5", "r") as a, h5py.File(crashed / "model.h5", "r") as b:
        for k in ("weight", "bias"):
            np.testing.assert_array_equal(a["head"][k][()], b["head"][k][()])
        for k in a["model"]:
            np.testing.assert_array_equal(a["model"][k][()], b["model"][k][()])
    assert [m["loss"] for m in read_metrics(full)][-1] == [m["loss"] for m in read_metrics(crashed)][-1]


# --------------------------------------------------------------------------- (e) bad input

def failed(proc, *needles):
    assert proc.returncode != 0, f"expected failure, got exit 0\n{proc.stdout[-2000:]}"
    for n in needles:
        assert str(n) in proc.stderr, f"expected {n!r} in stderr:\n{proc.stderr}"


def test_finetune_on_a_model_file_or_a_missing_file(env, gpt_bin):
    """(A corpus is --corpus: continued pre-training.)"""
    d = env["dir"]
    not_data = env["other"]
    failed(finetune(gpt_bin, env["base"], not_data, d / "bad1", ["--epochs", 1], check=False), not_data)
    missing = d / "no_such_task.h5"
    failed(finetune(gpt_bin, env["base"], missing, d / "bad2", ["--epochs", 1], check=False), missing)


def test_task_longer_than_the_model(env, gpt_bin):
    d = env["dir"]
    long_task = d / "long.h5"
    sh([gpt_bin, "prepare-task", "--tokenizer", env["tok"], "--task", "classify", "--out", long_task,
        "--n-ctx", 128, d / "classify.jsonl"])
    failed(finetune(gpt_bin, env["base"], long_task, d / "bad3", ["--epochs", 1], check=False), long_task)


def test_lora_on_another_base(env, gpt_bin):
    d = env["dir"]
    run = d / "lora_base"
    finetune(gpt_bin, env["base"], env["tasks"]["classify"], run, ["--epochs", 0.5, "--lora-rank", 2])
    proc = eval_task(gpt_bin, run / "model.h5", env["tasks"]["classify"], base=env["other"], check=False)
    failed(proc, "base")
    assert str(env["other"]) in proc.stderr or str(run / "model.h5") in proc.stderr, proc.stderr


def test_predict_record_missing_its_field(env, gpt_bin):
    d = env["dir"]
    run = d / "lora_base"
    if not (run / "model.h5").exists():
        finetune(gpt_bin, env["base"], env["tasks"]["classify"], run, ["--epochs", 0.5, "--lora-rank", 2])
    bad = write_jsonl(d / "bad.jsonl", [{"text": "the whale"}, {"txt": "the sea"}, {"text": "a boat"}])
    proc = sh([gpt_bin, "predict", "--model", run / "model.h5", "--data", bad], check=False)
    failed(proc, f"{bad}:2", "text")


def test_unknown_lora_targets(env, gpt_bin):
    proc = finetune(gpt_bin, env["base"], env["tasks"]["classify"], env["dir"] / "bad4",
                    ["--epochs", 1, "--lora-rank", 2, "--lora-targets", "attn,ffn"], check=False)
    failed(proc, "ffn")


# --------------------------------------------------------------------------- more contracts

PRUNABLE = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def test_fine_tuning_a_pruned_model_keeps_its_zeros(env, gpt_bin):
    pruned = env["dir"] / "pruned.h5"
    sh([gpt_bin, "prune", "--model", env["base"], "--sparsity", 0.5, "--out", pruned])
    out = env["dir"] / "ft_pruned"
    proc = finetune(gpt_bin, pruned, env["tasks"]["classify"], out, ["--epochs", 2, "--lr", 1e-2])
    assert "keeping the pruned weights zero" in proc.stdout
    with h5py.File(pruned, "r") as a, h5py.File(out / "model.h5", "r") as b:
        for layer in range(2):
            for name in PRUNABLE:
                before, after = a["model"][f"h.{layer}.{name}"][()], b["model"][f"h.{layer}.{name}"][()]
                zero = before == 0
                assert zero.mean() > 0.2, name
                assert (after[zero] == 0).all(), f"h.{layer}.{name}: a pruned weight came back"
                assert not np.array_equal(after[~zero], before[~zero]), f"h.{layer}.{name} did not train"


def test_continued_pretraining_with_lora_merges_to_what_it_evaluated(env, gpt_bin):
    rng = random.Random(8)
    text = env["dir"] / "paragraphs.txt"
    text.write_text("\n\n".join(" ".join(sentence(rng, 5, 15) + "." for _ in range(8)) for _ in range(40)))
    corpus = env["dir"] / "corpus.h5"
    sh([gpt_bin, "prepare", "--tokenizer", env["tok"], "--out", corpus, "--val-fraction", 0.2,
        "--split-on-blank-lines", text])
    base_hash = sha(env["base"])
    out = env["dir"] / "lm_lora"
    proc = finetune(gpt_bin, env["base"], corpus, out, ["--lora-rank", 4, "--lora-targets", "attn,mlp", "--lr", 1e-2,
                                                         "--batch", 4, "--epochs", 1, "--eval-every", 1000], ranks=2,
                    flag="--corpus")
    assert "language modelling" in proc.stdout and "(LoRA adapters)" in proc.stdout
    assert sha(env["base"]) == base_hash
    val_loss = read_metrics(out)[-1]["val_loss"]
    with h5py.File(out / "model.h5", "r") as f:
        assert "lora" in f and "head" not in f and len(f["model"]) == 0
    merged = env["dir"] / "lm_merged.h5"
    sh([gpt_bin, "merge-lora", "--model", out / "model.h5", "--out", merged])
    with h5py.File(merged, "r") as f:
        assert f.attrs["format"] == "gpt-model"
    ev = json.loads(sh([gpt_bin, "eval", "--model", merged, "--data", corpus, "--windows", 100, "--json"]).stdout)
    base = json.loads(sh([gpt_bin, "eval", "--model", env["base"], "--data", corpus, "--windows", 100, "--json"]).stdout)
    assert ev["loss"] == pytest.approx(val_loss, rel=1e-5)
    assert ev["loss"] < base["loss"], "continued pre-training did not lower the loss"


def test_time_limit_stops_with_a_checkpoint_and_resume_finishes_the_same(env, gpt_bin):
    task, args = env["tasks"]["entail"], ["--epochs", 3, "--batch", 3, "--lr", 1e-3, "--ckpt-every", 100]
    whole = env["dir"] / "tl_whole"
    finetune(gpt_bin, env["base"], task, whole, args)
    cut = env["dir"] / "tl_cut"
    proc = finetune(gpt_bin, env["base"], task, cut, [*args, "--time-limit", "0:01"], check=False)
    assert proc.returncode == 75, proc.stderr
    assert "before the time limit" in proc.stdout and (cut / "ckpt_1.h5").exists()
    finetune(gpt_bin, env["base"], task, cut, [*args, "--resume", "auto"])
    with h5py.File(whole / "model.h5", "r") as a, h5py.File(cut / "model.h5", "r") as b:
        for name in ("head/weight", "head/bias", "model/wte", "model/h.1.mlp.c_fc.weight"):
            assert np.array_equal(a[name][()], b[name][()]), name


def test_predict_prints_class_names_and_eval_task_counts_them(env, gpt_bin):
    rng = random.Random(3)
    recs = [{"text": sentence(rng), "label": rng.choice(["neg", "pos"])} for _ in range(16)]
    src = write_jsonl(env["dir"] / "named.jsonl", recs)
    task = env["dir"] / "named.h5"
    sh([gpt_bin, "prepare-task", "--tokenizer", env["tok"], "--task", "classify", "--labels", "neg,pos",
        "--n-ctx", 64, "--out", task, src])
    out = env["dir"] / "named_run"
    finetune(gpt_bin, env["base"], task, out, ["--epochs", 2, "--lr", 1e-3])
    unlabelled = write_jsonl(env["dir"] / "unlabelled.jsonl", [{"text": r["text"]} for r in recs])
    pred = sh([gpt_bin, "predict", "--model", out / "model.h5", "--data", unlabelled]).stdout.split()
    assert len(pred) == len(recs) and set(pred) <= {"neg", "pos"}
    metrics = eval_task(gpt_bin, out / "model.h5", src)
    assert metrics["examples"] == len(recs)
    assert metrics["accuracy"] == pytest.approx(np.mean([p == r["label"] for p, r in zip(pred, recs)]))


def test_inspect_describes_fine_tuned_models_and_lora_checkpoints(env, gpt_bin):
    out = env["dir"] / "inspect_lora"
    finetune(gpt_bin, env["base"], env["tasks"]["choice"], out, ["--lora-rank", 2, "--epochs", 1, "--ckpt-every", 1])
    text = sh([gpt_bin, "inspect", out / "model.h5"]).stdout
    assert "fine-tuned model, task choice" in text and "LoRA adapters: rank 2" in text
    assert str(Path(env["base"]).resolve()) in text
    ckpt = sorted(out.glob("ckpt_*.h5"))[-1]
    text = sh([gpt_bin, "inspect", ckpt]).stdout
    assert "/lora: " in text and "/optimizer/v/head: 2 tensors" in text and "checksums verified" in text
    with h5py.File(ckpt, "r+") as f:  # a non-finite adapter value is reported
        a = f["lora/h.0.attn.c_attn.lora_A"]
        a[0, 0] = np.nan
    proc = sh([gpt_bin, "inspect", ckpt], check=False)
    assert proc.returncode != 0 and "non-finite" in proc.stderr


def test_task_tokenized_with_another_tokenizer_than_the_model(env, gpt_bin):
    """Same vocabulary size, other tokens: refused, not trained on silently."""
    d = env["dir"]
    text = d / "other_text.txt"
    rng = random.Random(99)
    text.write_text("\n".join(" ".join(rng.choice(WORDS)[::-1] for _ in range(9)) + "." for _ in range(300)))
    tok2 = d / "tok2.h5"
    sh([gpt_bin, "tokenizer", "train", "--merges", 60, "--out", tok2, text])
    with h5py.File(tok2, "r") as a, h5py.File(env["tok"], "r") as b:
        assert a["tokenizer"].attrs["vocab_size"] == b["tokenizer"].attrs["vocab_size"]
    src = write_jsonl(d / "tok2.jsonl", records("classify", 8, 4))
    task = d / "tok2_task.h5"
    sh([gpt_bin, "prepare-task", "--tokenizer", tok2, "--task", "classify", "--n-ctx", 64, "--out", task, src])
    model = d / "base_with_tokenizer.h5"
    model.write_bytes(Path(env["base"]).read_bytes())
    with h5py.File(model, "a") as f, h5py.File(env["tok"], "r") as t:
        t.copy(t["tokenizer"], f, "tokenizer")
    proc = finetune(gpt_bin, model, task, d / "tok2_run", check=False)
    assert proc.returncode != 0 and "another tokenizer" in proc.stderr and str(task) in proc.stderr
    assert not (d / "tok2_run" / "model.h5").exists()


# --------------------------------------------------------------------------- (f) the run lifecycle

def test_model_file_unwritable_fails_on_every_rank_without_a_hang(env, gpt_bin):
    """Rank 0 alone writes model.h5; before the one run loop, its failure skipped the
    agreement the other ranks waited in, and 2 ranks hung forever."""
    out = env["dir"] / "unwritable"
    (out / "model.h5").mkdir(parents=True)
    (out / "model.h5" / "keep").write_text("")
    proc = sh([gpt_bin, "finetune", "--init", env["base"], "--data", env["tasks"]["classify"], "--out", out,
               "--batch", 4, "--epochs", 0.5, "--resume", "auto"], ranks=2, check=False, timeout=120)
    failed(proc, "model.h5", "gpt finetune:")
    assert proc.stderr.count("gpt finetune:") == 1, proc.stderr


def test_lora_resume_on_another_base_is_refused(env, gpt_bin):
    """Adapters only fit the base they were trained on: a checkpoint's base fingerprint is
    checked on resume, as loading a LoRA model checks it."""
    out, task = env["dir"] / "lora_resume_base", env["tasks"]["classify"]
    args = ["--epochs", 2, "--lora-rank", 2, "--ckpt-every", 1]
    proc = finetune(gpt_bin, env["base"], task, out, args, check=False, env={"GPT_FAULT": "step:2"})
    assert proc.returncode != 0 and (out / "ckpt_1.h5").exists()
    proc = finetune(gpt_bin, env["other"], task, out, [*args, "--resume", "auto"], check=False)
    failed(proc, "another base model", str(env["other"]))
    assert not (out / "model.h5").exists()
    finetune(gpt_bin, env["base"], task, out, [*args, "--resume", "auto"])  # its own base resumes
    assert (out / "model.h5").exists()


def test_continued_pretraining_from_a_non_finite_model_is_refused(env, gpt_bin):
    """Shorter than --max-bad-steps, such a run used to write a NaN model.h5 and exit 0."""
    rng = random.Random(4)
    text = env["dir"] / "nan_paragraphs.txt"
    text.write_text("\n\n".join(" ".join(sentence(rng, 5, 15) + "." for _ in range(8)) for _ in range(20)))
    corpus = env["dir"] / "nan_corpus.h5"
    sh([gpt_bin, "prepare", "--tokenizer", env["tok"], "--out", corpus, "--split-on-blank-lines", text])
    bad = env["dir"] / "nan_base.h5"
    shutil.copy(env["base"], bad)
    with h5py.File(bad, "r+") as f:
        w = f["model/h.0.mlp.c_fc.weight"]
        a = w[()]
        a[0, 0] = np.nan
        w[...] = a
    out = env["dir"] / "nan_run"
    proc = finetune(gpt_bin, bad, corpus, out, ["--epochs", 1, "--max-bad-steps", 100, "--eval-every", 0],
                    check=False, flag="--corpus")
    failed(proc, "h.0.mlp.c_fc.weight")
    assert not (out / "model.h5").exists()
