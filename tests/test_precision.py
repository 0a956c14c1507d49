"""--precision bf16 (docs/precision.md): the engine's bf16 products against a float64
reference whose every product takes bf16-rounded operands (tools/torch_gpt.py's
bf16_products), forward and backward; the commands that take --precision; training
with it on 1 and 2 ranks; and the path choice (GPT_MATMUL).

Every test runs the path this CPU chooses (oneDNN on AMX, else the emulation) and, where
oneDNN has an AMX product, the emulation as well, so both paths pass the same tests."""

import json

import h5py
import numpy as np
import pytest
import torch

import torch_gpt
from conftest import MPI_ENV, compute_env, run_cmd
from test_oracle import B, V, make_model, rel, write_grads_batch, write_train_batch, TRAIN_HP


def _onednn_runs():
    with open("/proc/cpuinfo") as f:
        return "amx_bf16" in f.read()


# The paths this machine can run; onednn only where the CPU has AMX (its own tests say
# so when they cannot run: test_path_choice checks the refusal).
PATHS = ["emulate"] + (["onednn"] if _onednn_runs() else [])

# Tolerances, float32 engine vs float64 reference on the same bf16-rounded operands.
# A float32 activation within float32 noise of a bf16 rounding boundary may round to the
# other neighbour than the float64 one does. That is rare, but each such element moves
# its products by a bf16 step (2^-8 relative), so the largest elementwise differences are
# of that order while means stay far smaller, and which elements flip depends on how the
# compiler arranged the float32 arithmetic. Measured on these small, deliberately
# ill-conditioned models (weights x10; post T17, pre T17, post T150): the loss within
# 3e-10 to 1.2e-6 relative with -O3 and up to 1.4e-5 in the -O1 sanitizer build, where
# the fp32 reference is 1.2e-5 to 2e-4 away; the logits' mean difference 1e-8 to 6e-5 of
# their range (fp32: 1.3e-3); gradients' 2e-5 to 6e-4 of each tensor's largest (fp32:
# 5e-4 to 6e-3).
LOSS_RTOL = 2e-5
LOGITS_MEAN_TOL, LOGITS_MAX_TOL = 2e-4, 1e-2   # relative to max |ref logits|
GRAD_MEAN_TOL, GRAD_MAX_TOL = 1e-3, 1e-2       # per tensor, relative to max |ref grad|
CLOSER = 5  # logits and gradients this many times closer to the bf16 reference than to fp32's


def reference(model_path, tokens, bf16):
    with torch_gpt.bf16_products(bf16):
        model = torch_gpt.GPT.from_file(model_path, torch.float64).eval()
        tok = torch.as_tensor(tokens, dtype=torch.long)
        logits = model(tok[:, :-1])
        loss = torch_gpt.lm_loss(logits, tok[:, 1:])
        loss.backward()
        return loss.item(), logits.detach().numpy(), {n: p.grad.numpy() for n, p in model.named_parameters()}


def test_reference_rounding():
    """The reference's rounding is the definition's: ties to even, denormals to zero, NaN kept."""
    x = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 1e-40, -1e-40, float("inf"), 3.4028235e38],
                     dtype=torch.float64)
    got = torch_gpt.bf16_round(x).tolist()
    assert got[:3] == [1.0, 1 + 2**-6, -1.0]
    assert got[3] == 0.0 and str(got[4]) == "-0.0"
    assert got[5] == got[6] == float("inf")
    assert torch.isnan(torch_gpt.bf16_round(torch.tensor([float("nan")]))).all()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("threads", [1, 2], ids=["1thread", "2threads"])
@pytest.mark.parametrize("ln,T", [("post", 17), ("pre", 17), ("post", 150)], ids=["post-T17", "pre-T17", "post-T150"])
def test_grads_bf16(ln, T, threads, path, run, gpt_bin, oracle_bin, workdir):
    model_path, batch_path, out_path = workdir / "m.h5", workdir / "b.h5", workdir / "o.h5"
    make_model(run, gpt_bin, model_path, ln, seed=11, n_ctx=max(17, T))
    tokens = np.random.default_rng(12).integers(0, V, (B, T + 1), dtype=np.int32)
    write_grads_batch(batch_path, tokens)
    env = compute_env(threads, "auto")
    env["GPT_MATMUL"] = path
    run([oracle_bin, "grads", model_path, batch_path, out_path, "bf16"], check=True, env=env)
    with h5py.File(out_path, "r") as f:
        loss = float(np.asarray(f["loss"][()]).reshape(-1)[0])
        logits = f["logits"][()]
        got = {n: f["grad"][n][()] for n in f["grad"]}
    ref_loss, ref_logits, ref_grads = reference(model_path, tokens, True)
    fp_loss, fp_logits, fp_grads = reference(model_path, tokens, False)

    assert rel(loss, ref_loss) < LOSS_RTOL, (loss, ref_loss)
    # The products really are bf16: the logits and gradients, many numbers each, are much
    # closer to the bf16 reference than to fp32's (the loss alone is one number, which a
    # few flipped roundings can move as far as the difference between the references).
    scale = np.abs(ref_logits).max()
    err, err_fp32 = np.abs(logits - ref_logits) / scale, np.abs(logits - fp_logits) / scale
    assert err.mean() < LOGITS_MEAN_TOL and err.max() < LOGITS_MAX_TOL, (err.mean(), err.max())
    assert err_fp32.mean() > CLOSER * err.mean()
    for name, g in ref_grads.items():
        e = np.abs(got[name] - g) / max(np.abs(g).max(), 1e-30)
        assert e.mean() < GRAD_MEAN_TOL and e.max() < GRAD_MAX_TOL, f"{name}: mean {e.mean():.2e}, max {e.max():.2e}"
    # gradients as a whole: closer to the bf16 reference's than to fp32's
    e_bf16 = sum(np.abs(got[n] - g).sum() for n, g in ref_grads.items())
    e_fp32 = sum(np.abs(got[n] - g).sum() for n, g in fp_grads.items())
    assert e_fp32 > CLOSER * e_bf16, (e_bf16, e_fp32)


@pytest.mark.parametrize("path", PATHS)
def test_train_steps_bf16(path, run, gpt_bin, oracle_bin, workdir):
    """AdamW steps: the weights change every step, so the bf16 copy must follow them."""
    model_path, batch_path, out_path = workdir / "m.h5", workdir / "b.h5", workdir / "o.h5"
    make_model(run, gpt_bin, model_path, "pre", seed=3)
    tokens = np.random.default_rng(4).integers(0, V, (2, B, 18), dtype=np.int32)
    write_train_batch(batch_path, tokens, TRAIN_HP)
    env = compute_env(1, "auto")
    env["GPT_MATMUL"] = path
    run([oracle_bin, "train", model_path, batch_path, out_path, "bf16"], check=True, env=env)
    with h5py.File(out_path, "r") as f:
        losses = f["losses"][()]
    hp = {k: TRAIN_HP[k] for k in ("lr", "min_lr", "warmup", "total_steps", "beta1", "beta2", "eps", "weight_decay",
                                    "clip")}
    ref = {}
    for bf16 in (True, False):
        with torch_gpt.bf16_products(bf16):
            model = torch_gpt.GPT.from_file(model_path, torch.float64).eval()
            ref[bf16] = np.array(torch_gpt.reference_train(model, tokens, TRAIN_HP["steps"], **hp)["losses"])
    err, err_fp32 = np.abs(losses - ref[True]) / ref[True], np.abs(losses - ref[False]) / ref[False]
    print("relative loss errors against the bf16 reference", err, "and the fp32 one", err_fp32)
    # Step 0 is the oracle's case (test_grads_bf16 checks its closeness). From step 1 on, the float32 and float64 updates leave a
    # few weights on the other side of a bf16 rounding boundary (2^-8 each): measured up to
    # 3e-4, as far as fp32's. A copy of the weights that did not follow the updates would
    # be off by the loss's change a step, 1% to 5% here.
    assert err[0] < LOSS_RTOL, (err, err_fp32)
    assert err.max() < 1e-3, err
    assert np.abs(np.diff(ref[True])).min() / ref[True][0] > 5e-3
    assert losses[-1] < losses[0] - 0.1  # it learns


# --------------------------------------------------------------------------- commands

@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory, gpt_bin):
    d = tmp_path_factory.mktemp("precision")
    text = d / "t.txt"
    rng = np.random.default_rng(1)
    words = ["the", "whale", "sea", "ship", "captain", "white", "boat", "line", "harpoon", "deep"]
    text.write_text("\n\n".join(" ".join(rng.choice(words, 40)) + "." for _ in range(300)))
    run_cmd([gpt_bin, "tokenizer", "train", "--merges", "60", "--out", d / "tok.h5", text], check=True, env=MPI_ENV)
    run_cmd([gpt_bin, "prepare", "--tokenizer", d / "tok.h5", "--out", d / "c.h5", "--val-fraction", "0.1",
             "--split-on-blank-lines", text], check=True, env=MPI_ENV)
    return d


def train(run, gpt_bin, d, out, *extra, np_=1, check=True):
    args = [gpt_bin, "train", "--data", d / "c.h5", "--model", "tiny", "--out", out, "--steps", 6, "--batch", 2,
            "--eval-every", 3, "--eval-windows", 4, "--threads", 1, *extra]
    if np_ > 1:
        args = ["mpirun", "-np", np_] + args
    return run(args, check=check, env=MPI_ENV)


def test_train_records_precision_and_resumes_in_the_other(run, gpt_bin, small_corpus, workdir):
    out = workdir / "run"
    p = train(run, gpt_bin, small_corpus, out, "--precision", "bf16", "--ckpt-every", 3)
    assert "bf16: emulated" in p.stdout or "bf16: oneDNN" in p.stdout, p.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["run"]["precision"] == "bf16"
    # the checkpoint holds fp32 masters: resuming in fp32 works and reports the change
    with h5py.File(out / "ckpt_6.h5", "r") as f:
        assert f["model"]["wte"].dtype == np.float32
    p = train(run, gpt_bin, small_corpus, out, "--steps", 9, "--resume", "auto", "--ckpt-every", 3)
    assert 'run.precision: "bf16" -> "fp32"' in p.stdout, p.stdout
    assert json.loads((out / "config.json").read_text())["run"]["precision"] == "fp32"


def test_bf16_differs_from_fp32_and_learns(run, gpt_bin, small_corpus, workdir):
    losses = {}
    for prec in ("fp32", "bf16"):
        train(run, gpt_bin, small_corpus, workdir / prec, "--precision", prec)
        lines = [json.loads(x) for x in (workdir / prec / "metrics.jsonl").read_text().splitlines()]
        losses[prec] = [x["loss"] for x in lines]
        assert len(lines) == 6
    assert losses["fp32"] != losses["bf16"]  # the products really change
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)
    assert losses["bf16"][-1] < losses["bf16"][0]


def test_bf16_one_and_two_ranks_agree(run, gpt_bin, small_corpus, workdir):
    """The same global batch on 1 and 2 ranks: gradients are summed in fp32 as always."""
    val = {}
    for np_ in (1, 2):
        out = workdir / f"r{np_}"
        train(run, gpt_bin, small_corpus, out, "--precision", "bf16", "--batch", 4 // np_, np_=np_)
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        val[np_] = [x["loss"] for x in lines]
    for a, b in zip(val[1], val[2]):
        assert a == pytest.approx(b, rel=1e-5)


def test_inference_commands_take_precision(run, gpt_bin, small_corpus, workdir):
    out = workdir / "run"
    train(run, gpt_bin, small_corpus, out)
    model = out / "model.h5"
    ev = {}
    for prec in ("fp32", "bf16"):
        p = run([gpt_bin, "eval", "--model", model, "--data", small_corpus / "c.h5", "--json", "--precision", prec],
                check=True, env=MPI_ENV)
        ev[prec] = json.loads(p.stdout)["loss"]
    assert ev["fp32"] != ev["bf16"] and ev["bf16"] == pytest.approx(ev["fp32"], rel=1e-2)
    sc = {}
    for prec in ("fp32", "bf16"):
        p = run([gpt_bin, "score", "--model", model, "--text", "the whale and the sea.", "--json",
                 "--precision", prec], check=True)
        sc[prec] = json.loads(p.stdout)["log_likelihood"]
    assert sc["fp32"] != sc["bf16"] and sc["bf16"] == pytest.approx(sc["fp32"], rel=2e-2)
    # generation with the cache equals generation without it, in bf16 too
    gen = [run([gpt_bin, "generate", "--model", model, "--prompt", "the", "--temperature", "0",
                "--max-new-tokens", 12, "--ids", "--precision", "bf16", *flag], check=True).stdout
           for flag in ([], ["--no-cache"])]
    assert gen[0] == gen[1] and gen[0].strip()
    p = run([gpt_bin, "generate", "--model", model, "--prompt", "the", "--max-new-tokens", 2, "--precision", "bf16"],
            check=True)
    assert "bf16: " in p.stderr
    recs = workdir / "q.jsonl"
    recs.write_text("\n".join(json.dumps({"context": "the whale", "endings": [" sea", " boat"], "label": i % 2})
                              for i in range(6)) + "\n")
    p = run([gpt_bin, "eval-choice", "--model", model, "--data", recs, "--json", "--precision", "bf16"], check=True,
            env=MPI_ENV)
    assert json.loads(p.stdout)["records"] == 6
    p = run([gpt_bin, "bench", "--model", "tiny", "--steps", 1, "--precision", "bf16", "--json"], check=True)
    b = json.loads(p.stdout)
    assert b["precision"] == "bf16" and b["bf16_peak_gflops"] > 0 and b["mfu"] > 0


@pytest.mark.parametrize("cmd", ["train", "finetune", "bench", "eval", "generate", "score", "eval-choice"])
def test_precision_option_everywhere(cmd, run, gpt_bin):
    assert "--precision" in run([gpt_bin, cmd, "--help"], check=True, env=MPI_ENV).stdout
    p = run([gpt_bin, cmd, "--precision", "fp16"], check=False, env=MPI_ENV)
    assert p.returncode == 2 and "--precision" in p.stderr and "fp16" in p.stderr, p.stderr


def test_path_choice(run, gpt_bin, small_corpus, workdir):
    base = [gpt_bin, "bench", "--model", "tiny", "--steps", 1, "--precision", "bf16"]
    p = run(base, check=False, env={"GPT_MATMUL": "bogus"})
    assert p.returncode == 2 and "GPT_MATMUL=bogus" in p.stderr
    p = run(base, check=False, env={"GPT_MATMUL": "onednn"})
    if _onednn_runs():
        assert p.returncode == 0 and "oneDNN" in p.stdout
    else:
        assert p.returncode == 2 and "GPT_MATMUL=onednn" in p.stderr and "AMX" in p.stderr, p.stderr
    p = run(base, check=True, env={"GPT_MATMUL": "emulate"})
    assert "bf16: emulated, GPT_MATMUL=emulate" in p.stdout
