"""The default binary runs on a CPU without AVX-512 (issue 13), shown under emulation.

    make deps && make && /usr/bin/python3 -m pytest -q tests/test_portable.py

`qemu-x86_64 -cpu Haswell` (Debian's qemu-user, QEMU 7.2) runs the binary on an emulated
Haswell: AVX2 and FMA, no AVX-512 (QEMU 7.2's TCG has no AVX-512 at all). The CPU the
binary sees says so through cpuid, so its start-up dispatch and OpenBLAS's own
detection take the AVX2 paths, and an AVX-512 instruction anywhere on the path run is
SIGILL instead of a silent success.

  * the route is meaningful: a program with an AVX-512 instruction (compiled here) gets
    SIGILL under -cpu Haswell; one with AVX2 and FMA runs and computes the right number;
    there __builtin_cpu_supports says avx2 and fma but no avx512f; and qemu's syscall
    log records an execve (a process that re-executes itself leaves the emulator and
    runs natively: see the last check below);
  * $GPT_BIN under the emulated Haswell: `gpt init` of the tiny model, two steps of
    continued pre-training (`gpt finetune` on a corpus: forward, backward with dropout,
    gradient averaging over 2 ranks, AdamW), `gpt eval` of one window (an MPI singleton)
    and a few tokens of `gpt generate` (the KV-cache path); the parameters, losses and
    gradient norms equal a native run of the same commands with the AVX2 kernels forced
    (GPT_KERNELS=avx2, OpenBLAS's Haswell core) to 1e-5 relative;
  * no emulated process re-executes the binary under test (blas_select_core's re-exec
    of /proc/self/exe would run natively, AVX-512 and all, and pass for the wrong reason).

`gpt train` and `gpt bench` are not run under qemu: both first time a 2048^3 sgemm five
times (the MFU's denominator), about 86 GFLOP, and the emulator's FMA runs at some
5-10 MFLOP/s. `gpt finetune` on a corpus is the same model, loss and optimizer code
without that measurement.

A missing qemu-x86_64 fails the tests (`make deps` installs qemu-user); it is no skip."""

import json
import os
import re
import shutil
import signal
import subprocess

import h5py
import numpy as np
import pytest

from conftest import TAIL, read_metrics, sh

QEMU = "qemu-x86_64"
CPU = "Haswell"     # AVX2 + FMA (x86-64-v3), no AVX-512
RTOL = 1e-5         # emulated against native: the same kernels, so in practice identical
FT_STEPS, FT_BATCH, FT_RANKS = 2, 2, 2
SEED = 3

# The emulated runs: the CPU decides, so nothing that forces a choice comes from the
# caller's environment. Open MPI's shared-memory transport would use process_vm_readv
# for large messages, which qemu-user does not implement (ENOSYS: "Read -1, expected
# 399872, errno = 38" from every rank): copy through the shared segment instead.
FORCING = ("GPT_KERNELS", "OPENBLAS_CORETYPE", "GPT_OPENBLAS_CORE_AUTO")
QEMU_ENV = {"OMPI_MCA_btl_vader_single_copy_mechanism": "none"}
# The native runs: the AVX2 kernels and OpenBLAS's Haswell core on whatever host this is.
NATIVE_ENV = {"GPT_KERNELS": "avx2", "OPENBLAS_CORETYPE": "Haswell"}

AVX512_PROBE = r"""
#include <immintrin.h>
#include <stdio.h>
int main(int argc, char **argv) {
    (void)argv;
    __m512 a = _mm512_set1_ps((float)argc);             /* vbroadcastss to a zmm register */
    printf("%g\n", (double)_mm512_reduce_add_ps(_mm512_add_ps(a, a)));
    return 0;
}
"""
AVX2_PROBE = r"""
#include <immintrin.h>
#include <stdio.h>
int main(int argc, char **argv) {
    (void)argv;
    __m256 a = _mm256_set1_ps((float)argc + 1.0f);      /* 2 */
    float out[8];
    _mm256_storeu_ps(out, _mm256_fmadd_ps(a, a, a));    /* 2 * 2 + 2 */
    printf("%g\n", (double)out[7]);
    return 0;
}
"""
CPU_PROBE = r"""
#include <stdio.h>
int main(void) {
    __builtin_cpu_init();
    printf("avx512f=%d avx2=%d fma=%d\n", !!__builtin_cpu_supports("avx512f"),
           !!__builtin_cpu_supports("avx2"), !!__builtin_cpu_supports("fma"));
    return 0;
}
"""
EXEC_PROBE = r"""
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    (void)argc;
    if (getenv("PROBE_AGAIN")) return 0;
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = '\0';
    setenv("PROBE_AGAIN", "1", 1);
    execv(self, argv);
    return 1;
}
"""


# --------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def qemu():
    path = shutil.which(QEMU)
    if path is None:
        pytest.fail(f"{QEMU} not found: `make deps` installs qemu-user (Debian), which "
                    f"these tests need to run the binary on a CPU without AVX-512", pytrace=False)
    return path


def emulated(args, log_dir=None):
    """args under `qemu-x86_64 -cpu Haswell`, without core dumps. log_dir: qemu logs
    the guest's system calls of every process to log_dir/strace.<pid>."""
    prefix = ["prlimit", "--core=0", QEMU, "-cpu", CPU]
    if log_dir is not None:
        prefix += ["-d", "strace", "-D", str(log_dir / "strace.%d")]
    return prefix + [str(a) for a in args]


def emulated_env():
    return {k: v for k, v in os.environ.items() if k not in FORCING}


def compile_probe(tmp_path, name, source, *flags):
    src, exe = tmp_path / f"{name}.c", tmp_path / name
    src.write_text(source)
    proc = subprocess.run(["gcc", "-O2", *flags, str(src), "-o", str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, f"gcc {' '.join(flags)} {src}:\n{proc.stderr}"
    return exe


def run_probe(args):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)


def host_has_avx512f():
    with open("/proc/cpuinfo") as f:
        return any(line.startswith("flags") and " avx512f" in line for line in f)


def sh_emulated(what, args, log_dir, ranks=None, timeout=240):
    """sh() of args under qemu -cpu Haswell (ranks > 1: mpirun starts one qemu a rank);
    fails the test with the reason when the run does not exit 0."""
    proc = sh(emulated(args, log_dir), ranks=ranks, timeout=timeout, check=False,
              env=QEMU_ENV, base_env=emulated_env())
    if proc.returncode in (-signal.SIGILL, 128 + signal.SIGILL) or "signal 4 (Illegal instruction)" in proc.stderr:
        pytest.fail(f"{what}: SIGILL under {QEMU} -cpu {CPU}: the binary executes an instruction "
                    f"that a CPU with AVX2 and FMA but no AVX-512 lacks (built with -march=native? "
                    f"AVX-512 code reached without the CPU check?)\n{' '.join(proc.args)}\n"
                    f"stderr:\n{proc.stderr[-TAIL:]}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"{what} under {QEMU} -cpu {CPU}: exit {proc.returncode}\n{' '.join(proc.args)}\n"
                    f"stdout:\n{proc.stdout[-TAIL:]}\nstderr:\n{proc.stderr[-TAIL:]}", pytrace=False)
    return proc


def sh_native(args, ranks=None, timeout=120):
    return sh(args, ranks=ranks, timeout=timeout, env=NATIVE_ENV)


EXECVE = re.compile(r'(\d+) execve\("([^"]*)"')


def execs(log_dir):
    """The programs the emulated processes passed to execve: [(pid, path)]."""
    # searched anywhere, not at line starts: the entry of a call that another thread's
    # execve cut short has no newline ('... sched_yield(...)4242 execve("/path",...')
    found = []
    for log in sorted(log_dir.glob("strace.*")):
        found += EXECVE.findall(log.read_bytes().decode(errors="replace"))
    return found


def parameters(path):
    """The float datasets of a model file: {name: array}."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" else None)
    return out


def assert_same_parameters(emu, native, what):
    a, b = parameters(emu), parameters(native)
    assert sorted(a) == sorted(b), f"{what}: datasets {sorted(a)} vs {sorted(b)}"
    assert a, f"{what}: no parameters in {emu}"
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=RTOL, atol=1e-7,
                                   err_msg=f"{what}: {name} emulated vs native")


# --------------------------------------------------------------------------- the emulator

def test_qemu_haswell_has_avx2_and_refuses_avx512(qemu, tmp_path):
    avx512 = compile_probe(tmp_path, "avx512", AVX512_PROBE, "-mavx512f")
    avx2 = compile_probe(tmp_path, "avx2", AVX2_PROBE, "-mavx2", "-mfma")
    cpu = compile_probe(tmp_path, "cpu", CPU_PROBE)

    if host_has_avx512f():  # the probe itself is sound: it runs where AVX-512 exists
        native = run_probe([avx512])
        assert native.returncode == 0 and native.stdout.split() == ["32"], \
            f"the AVX-512 probe natively: exit {native.returncode}\n{native.stdout}{native.stderr}"
    proc = run_probe(emulated([avx512]))
    assert proc.returncode == -signal.SIGILL, \
        (f"{QEMU} -cpu {CPU} ran an AVX-512 instruction (exit {proc.returncode}, expected SIGILL): "
         f"it would not catch AVX-512 code in the binary\n{proc.stdout}{proc.stderr[-TAIL:]}")

    proc = run_probe(emulated([avx2]))
    assert proc.returncode == 0 and proc.stdout.split() == ["6"], \
        f"AVX2+FMA under {QEMU} -cpu {CPU}: exit {proc.returncode}\n{proc.stdout}{proc.stderr[-TAIL:]}"

    proc = run_probe(emulated([cpu]))
    assert proc.returncode == 0 and proc.stdout.split() == ["avx512f=0", "avx2=1", "fma=1"], \
        f"the CPU that {QEMU} -cpu {CPU} shows a program:\n{proc.stdout}{proc.stderr[-TAIL:]}"


def test_qemu_syscall_log_records_a_self_exec(qemu, tmp_path):
    """qemu-user runs an execve'd program natively (no binfmt_misc for the host's own
    architecture), so a self-exec escapes the emulated CPU; the log that the gpt test
    reads to rule that out does record one."""
    probe = compile_probe(tmp_path, "reexec", EXEC_PROBE)
    logs = tmp_path / "logs"
    logs.mkdir()
    proc = run_probe(emulated([probe], logs))
    assert proc.returncode == 0, f"the self-exec probe: exit {proc.returncode}\n{proc.stderr[-TAIL:]}"
    assert [path for _, path in execs(logs)] == [str(probe)], \
        f"qemu's syscall log in {logs} should record the probe's one execve of itself: {execs(logs)}"


# --------------------------------------------------------------------------- the binary

def test_default_binary_runs_without_avx512(gpt_bin, qemu, tiny_corpus, tmp_path):
    corpus, vocab = tiny_corpus["corpus"], tiny_corpus["vocab_size"]
    logs = tmp_path / "logs"
    logs.mkdir()
    emu, nat = tmp_path / "emulated", tmp_path / "native"
    emu.mkdir()
    nat.mkdir()

    sh_emulated("gpt --version", [gpt_bin, "--version"], logs)

    # gpt init of the tiny model
    init = ["init", "--model", "tiny", "--vocab", vocab, "--seed", SEED]
    sh_emulated("gpt init", [gpt_bin, *init, "--out", emu / "init.h5"], logs)
    sh_native([gpt_bin, *init, "--out", nat / "init.h5"])
    assert_same_parameters(emu / "init.h5", nat / "init.h5", "gpt init")

    # two steps of continued pre-training on 2 ranks, from the same initial model:
    # steps = ceil(epochs * windows / batch)
    windows = (tiny_corpus["train_tokens"] - 1) // 64
    epochs = f"{(FT_STEPS - 0.5) * FT_BATCH / windows:.6g}"

    def finetune(out):
        return [gpt_bin, "finetune", "--init", nat / "init.h5", "--corpus", corpus, "--out", out,
                "--batch", FT_BATCH, "--micro-batch", 1, "--epochs", epochs, "--seed", 7,
                "--eval-every", 0, "--log-every", 1]

    sh_emulated("gpt finetune (2 steps, 2 ranks)", finetune(emu / "ft"), logs, ranks=FT_RANKS)
    sh_native(finetune(nat / "ft"), ranks=FT_RANKS)
    e, n = read_metrics(emu / "ft"), read_metrics(nat / "ft")
    assert [m["step"] for m in n] == list(range(1, FT_STEPS + 1)), f"native metrics: {n}"
    assert [m["step"] for m in e] == [m["step"] for m in n], f"emulated metrics: {e}"
    for a, b in zip(e, n):
        for key in ("loss", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=RTOL), \
                f"step {a['step']} {key}: emulated {a[key]!r} vs native {b[key]!r}"
        assert a["tokens"] == b["tokens"] and a["skipped"] is False, (a, b)
    assert_same_parameters(emu / "ft/model.h5", nat / "ft/model.h5", "gpt finetune's model.h5")
    core = json.loads((emu / "ft/config.json").read_text())["versions"]["openblas_core"]
    assert core == "Haswell", f"OpenBLAS under {QEMU} -cpu {CPU} chose the {core} core"

    # gpt eval of one window (one process: an MPI singleton under qemu)
    ev = ["eval", "--model", nat / "ft/model.h5", "--data", corpus, "--windows", 1, "--json"]
    a = json.loads(sh_emulated("gpt eval", [gpt_bin, *ev], logs).stdout.strip().splitlines()[-1])
    b = json.loads(sh_native([gpt_bin, *ev]).stdout.strip().splitlines()[-1])
    assert a["loss"] == pytest.approx(b["loss"], rel=RTOL), f"gpt eval: emulated {a} vs native {b}"

    # a few tokens of gpt generate (the KV-cache forward)
    gen = ["generate", "--model", nat / "ft/model.h5", "--tokenizer", tiny_corpus["tokenizer"],
           "--prompt", "Call me Ishmael.", "--max-new-tokens", 4, "--seed", 1, "--ids"]
    ids = sh_emulated("gpt generate", [gpt_bin, *gen], logs).stdout.split()
    assert len(ids) == 4 and all(0 <= int(t) < vocab for t in ids), f"gpt generate --ids: {ids}"

    # every command above ran on the emulated CPU to the end: none re-executed the binary
    # (which would have run natively from there on)
    self_path = os.path.realpath(gpt_bin)
    again = [(pid, path) for pid, path in execs(logs) if os.path.realpath(path) == self_path]
    assert not again, (f"{gpt_bin} re-executed itself under {QEMU} ({again}): the new image ran "
                       f"natively, so these runs do not show that it runs without AVX-512")
    assert len(list(logs.glob("strace.*"))) >= 4 + FT_RANKS, f"qemu's logs in {logs}: too few"


def test_avx512_kernels_refused_on_a_cpu_without_them(gpt_bin, qemu, tmp_path):
    """GPT_KERNELS=avx512 on the emulated Haswell: a clear error, not SIGILL."""
    proc = sh(emulated([gpt_bin, "init", "--model", "tiny", "--out", tmp_path / "m.h5"]), check=False,
              env={**QEMU_ENV, "GPT_KERNELS": "avx512"}, base_env=emulated_env())
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-TAIL:]}"
    assert "GPT_KERNELS=avx512: this CPU cannot run the avx512 kernels" in proc.stderr
    assert not (tmp_path / "m.h5").exists()
