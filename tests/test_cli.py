"""bin/gpt as a user meets it: the model file that `gpt init` writes (read with h5py,
the layout of docs/formats.md) and clear errors for every kind of bad input."""

import h5py
import numpy as np
import pytest


def state_dict_names(n_layer, ln):
    names = ["wte", "wpe"]
    for i in range(n_layer):
        names += [f"h.{i}.{n}" for n in (
            "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
            "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
            "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")]
    if ln == "pre":
        names += ["ln_f.weight", "ln_f.bias"]
    return names


def expected_shape(name, V, C, F, n_ctx):
    table = {"wte": (V, C), "wpe": (n_ctx, C), "attn.c_attn.weight": (3 * C, C),
             "attn.c_attn.bias": (3 * C,), "attn.c_proj.weight": (C, C),
             "mlp.c_fc.weight": (F, C), "mlp.c_fc.bias": (F,), "mlp.c_proj.weight": (C, F)}
    for suffix, shape in table.items():
        if name == suffix or name.endswith("." + suffix):
            return shape
    return (C,)  # LayerNorm gains and biases, c_proj biases


@pytest.mark.parametrize("ln", ["post", "pre"])
def test_init_writes_state_dict_layout(gpt_bin, run, workdir, ln):
    path = workdir / "m.h5"
    run([gpt_bin, "init", "--model", "tiny", "--n-layer", 3, "--n-ffn", 100, "--ln", ln,
         "--seed", 4, "--out", path], check=True)
    assert not (workdir / "m.h5.tmp").exists()
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "gpt-model"
        g = f["model"]
        a = dict(g.attrs)
        assert (a["n_layer"], a["n_head"], a["n_embd"], a["n_ctx"], a["vocab_size"], a["n_ffn"]) == (3, 4, 64, 64, 512, 100)
        assert a["ln"] in (ln, ln.encode())
        assert a["ln_eps"] == np.float32(1e-5)
        assert a["dropout_embd"] == a["dropout_resid"] == a["dropout_attn"] == np.float32(0.1)
        names = state_dict_names(3, ln)
        assert sorted(g.keys()) == sorted(names)
        for name in names:
            d = g[name]
            assert d.dtype == np.float32, name
            assert d.shape == expected_shape(name, 512, 64, 100, 64), name
            x = d[()]
            if name.endswith("bias"):
                assert np.all(x == 0), name
            elif d.ndim == 1:
                assert np.all(x == 1), name
            else:
                assert abs(x.std() - 0.02) < 0.002 and abs(x.mean()) < 0.002, name


def test_init_is_deterministic_in_seed(gpt_bin, run, workdir):
    paths = [workdir / f"{i}.h5" for i in range(3)]
    for p, seed in zip(paths, (7, 7, 8)):
        run([gpt_bin, "init", "--model", "tiny", "--seed", seed, "--out", p], check=True)
    with h5py.File(paths[0]) as a, h5py.File(paths[1]) as b, h5py.File(paths[2]) as c:
        assert np.array_equal(a["model/wte"][()], b["model/wte"][()])
        assert not np.array_equal(a["model/wte"][()], c["model/wte"][()])


def test_scale_residual_init(gpt_bin, run, workdir):
    path = workdir / "m.h5"
    run([gpt_bin, "init", "--model", "tiny", "--n-layer", 8, "--scale-residual", "--out", path], check=True)
    with h5py.File(path) as f:
        assert abs(f["model/h.0.mlp.c_proj.weight"][()].std() - 0.02 / 4) < 0.0005
        assert abs(f["model/h.0.mlp.c_fc.weight"][()].std() - 0.02) < 0.002


@pytest.mark.parametrize("args,message", [
    (["--n-head", "5"], "n_embd (64) must be divisible by n_head (5)"),
    (["--n-layer", "0"], "--n-layer: expected an integer in [1, 16777216], got '0'"),
    (["--n-embd", "-8"], "--n-embd: expected an integer in [1, 16777216], got '-8'"),
    (["--vocab", "abc"], "--vocab: expected an integer in [1, 16777216], got 'abc'"),
    (["--ln", "middle"], "--ln: expected post or pre, got 'middle'"),
    (["--dropout", "1.5"], "--dropout: expected a number in [0, 1), got '1.5'"),
])
def test_bad_config_is_a_clear_error(gpt_bin, run, workdir, args, message):
    proc = run([gpt_bin, "init", "--model", "tiny", *args, "--out", workdir / "m.h5"])
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (workdir / "m.h5").exists()


def test_unknown_preset_and_missing_out(gpt_bin, run, workdir):
    proc = run([gpt_bin, "init", "--model", "gpt5", "--out", workdir / "m.h5"])
    assert proc.returncode != 0 and "unknown model preset 'gpt5'" in proc.stderr
    # one list of the presets, in the message and in --help
    every = "gpt1, small, tiny, gpt2, gpt2-medium, gpt2-large or gpt2-xl"
    assert f"(expected {every})" in proc.stderr
    assert f"--model PRESET              the preset the options below change: {every}" in \
        run([gpt_bin, "init", "--help"]).stdout
    proc = run([gpt_bin, "init", "--model", "tiny"])
    assert proc.returncode != 0 and "--out" in proc.stderr
    proc = run([gpt_bin, "frobnicate"])
    assert proc.returncode != 0 and "unknown command 'frobnicate'" in proc.stderr


@pytest.fixture
def model_file(gpt_bin, run, workdir):
    path = workdir / "m.h5"
    run([gpt_bin, "init", "--model", "tiny", "--out", path], check=True)
    return path


def test_inspect_accepts_good_file(gpt_bin, run, model_file):
    proc = run([gpt_bin, "inspect", model_file], check=True)
    assert "h.1.mlp.c_proj.weight" in proc.stdout and "[64, 256]" in proc.stdout


def test_missing_tensor_is_named(gpt_bin, run, model_file):
    with h5py.File(model_file, "r+") as f:
        del f["model/h.1.mlp.c_fc.weight"]
    proc = run([gpt_bin, "inspect", model_file])
    assert proc.returncode != 0
    assert f"{model_file}: tensor /model/h.1.mlp.c_fc.weight is missing" in proc.stderr


def test_wrong_shape_is_named(gpt_bin, run, model_file):
    with h5py.File(model_file, "r+") as f:
        w = f["model/h.0.attn.c_attn.weight"][()]
        del f["model/h.0.attn.c_attn.weight"]
        f["model/h.0.attn.c_attn.weight"] = w.T.copy()
    proc = run([gpt_bin, "inspect", model_file])
    assert proc.returncode != 0
    assert "tensor /model/h.0.attn.c_attn.weight has shape [64, 192], expected [192, 64]" in proc.stderr


def test_missing_or_bad_attribute_is_named(gpt_bin, run, model_file):
    with h5py.File(model_file, "r+") as f:
        del f["model"].attrs["n_head"]
    proc = run([gpt_bin, "inspect", model_file])
    assert proc.returncode != 0 and "attribute /model/n_head is missing" in proc.stderr
    with h5py.File(model_file, "r+") as f:
        f["model"].attrs["n_head"] = np.int32(5)
    proc = run([gpt_bin, "inspect", model_file])
    assert proc.returncode != 0 and "must be divisible by n_head (5)" in proc.stderr


def test_not_a_model_file(gpt_bin, run, workdir):
    junk = workdir / "junk.h5"
    junk.write_bytes(b"this is not HDF5\n" * 10)
    proc = run([gpt_bin, "inspect", junk])
    assert proc.returncode != 0 and f"{junk}: cannot open" in proc.stderr
    proc = run([gpt_bin, "inspect", workdir / "absent.h5"])
    assert proc.returncode != 0 and "absent.h5: cannot open" in proc.stderr
    other = workdir / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    proc = run([gpt_bin, "inspect", other])
    assert proc.returncode != 0 and "no /model group" in proc.stderr


def test_non_finite_weights_are_reported(gpt_bin, run, model_file):
    with h5py.File(model_file, "r+") as f:
        f["model/wpe"][0, 0] = np.nan
    proc = run([gpt_bin, "inspect", model_file])
    assert proc.returncode != 0 and "non-finite" in proc.stderr


def test_bench_json(gpt_bin, run):
    import json
    proc = run([gpt_bin, "bench", "--model", "tiny", "--steps", 2, "--json"], check=True)
    d = json.loads(proc.stdout)
    for key in ("tokens_per_s", "model_gflops", "sgemm_peak_gflops", "mfu", "peak_rss_mb", "openblas_core"):
        assert key in d, key
    assert d["tokens_per_s"] > 0 and 0 < d["mfu"] and d["sgemm_peak_gflops"] > 0
    assert np.isfinite(d["loss"])
