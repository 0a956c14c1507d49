"""The tool on a cluster of 2 hosts: network namespaces with TCP between them
(tools/netns_cluster.py), 1 rank a host unless a test says otherwise.

    make && /usr/bin/python3 -m pytest -q tests/cluster     # as root (make test-cluster)

  * gpt prepare on 2 hosts writes the corpus 1 host writes;
  * gpt train on 2 hosts has the losses of 2 ranks on 1 host (1e-6 relative), and its
    checkpoint resumes on 1 host (1 rank) and on 2 hosts x 2 ranks, as any-P resume
    promises; gpt finetune on 2 hosts equals 1 host;
  * the same with --shard-optimizer --async-ckpt: the losses of the unsharded run on 1
    host, checkpoints holding the unsharded run's tensors, resuming unsharded on 1 host;
  * the watchdog (--collective-timeout): a rank stopped with SIGSTOP, and a host whose
    link goes down, end the job within the timeout + 30 s with exit code 69 and a
    message naming the step, the operation and the rank and host that did not answer;
    SIGKILL of every rank of a host ends it within 60 s; after each, --resume auto on
    the remaining host goes on from the newest checkpoint with exactly the losses of an
    uninterrupted run; a rank of gpt prepare that stops ends that job alike, leaving no
    corpus and no .tmp;
  * jobs/pretrain.sbatch with --nodes=2 on a Slurm of 2 nodes, one a host (slurmctld and
    a slurmd in each namespace: tests/slurm/slurm_cluster.sh with SLURM_NODES), srun
    --mpi=pmix starting a rank on each: the losses of 2 ranks on 1 host, exactly;
  * everything the cluster made is gone after the module (namespaces, their processes).

About 3 minutes on 2 cores. Run by `make test-cluster`; `make test` leaves it out."""

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import ROOT, TINY_ARGS, checkpoint_tensors, read_metrics, sh
from netns_cluster import Cluster, namespaces

REL = 1e-6       # 2 hosts against 2 ranks on 1 host (a sum of 2 is exact: in practice equal)
ANY_P_REL = 1e-5  # another number of ranks: float sums in another order
TIMEOUT = 5      # --collective-timeout of the watchdog tests
WATCH_STEPS, WATCH_CKPT, WATCH_BATCH = 600, 50, 4

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(2)
    with c:
        yield c
    left = [n for n in namespaces() if n.startswith(c.name)]
    assert not left, f"namespaces left behind: {left}"


def run_on(cluster, args, per_host=1, hosts=None, timeout=300, check=True):
    rc, out, err, secs = cluster.run(args, per_host=per_host, hosts=hosts, timeout=timeout)
    if rc is None:
        pytest.fail(f"hung: no exit after {timeout} s: {' '.join(map(str, args))}\n{err[-3000:]}", pytrace=False)
    if check and rc != 0:
        pytest.fail(f"exit {rc}: {' '.join(map(str, args))}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}",
                    pytrace=False)
    return rc, out, err, secs


def assert_losses(got_dir, ref_dir, rel, what, exact_keys=("loss", "val_loss")):
    ref, got = read_metrics(ref_dir), read_metrics(got_dir)
    assert [m["step"] for m in got] == [m["step"] for m in ref], f"{what}: steps differ"
    for a, b in zip(ref, got):
        for k in exact_keys:
            assert (k in a) == (k in b), f"{what}: step {a['step']} {k} in one run only"
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=rel), f"{what}: step {a['step']} {k} {b[k]} vs {a[k]}"
        assert b["tokens"] == a["tokens"]


def train_args(corpus, out, steps=40, batch=4, extra=()):
    return ["train", "--data", corpus, "--model", "tiny", "--out", out, "--steps", steps, "--batch", batch,
            "--ckpt-every", 20, *TINY_ARGS, *extra]


# --------------------------------------------------------------------------- same results

def test_prepare_on_two_hosts(gpt_bin, cluster, tiny_corpus, workdir):
    src, tok = tiny_corpus["dir"] / "moby_slice.txt", tiny_corpus["tokenizer"]
    args = ["prepare", "--tokenizer", tok, "--split-on-blank-lines", "--val-fraction", "0.15"]
    run_on(cluster, [gpt_bin, *args, "--out", workdir / "two.h5", src])
    sh([gpt_bin, *args, "--out", workdir / "one.h5", src])
    with h5py.File(workdir / "one.h5") as a, h5py.File(workdir / "two.h5") as b:
        names = []
        a.visit(names.append)
        for n in names:
            if isinstance(a[n], h5py.Dataset):
                assert np.array_equal(a[n][()], b[n][()]), f"{n} differs between 1 and 2 hosts"
        for k, v in a.attrs.items():
            if k not in ("ranks", "seconds", "created"):
                assert np.array_equal(b.attrs[k], v), f"attribute {k}: {b.attrs[k]} on 2 hosts, {v} on 1"


@pytest.fixture(scope="module")
def two_host_run(gpt_bin, cluster, tiny_corpus, tmp_path_factory):
    """gpt train on 2 hosts and the same on 2 ranks of 1 host: their run directories."""
    d = tmp_path_factory.mktemp("two_host_run")
    _, out, _, _ = run_on(cluster, [gpt_bin, *train_args(tiny_corpus["corpus"], d / "hosts")])
    sh([gpt_bin, *train_args(tiny_corpus["corpus"], d / "local")], ranks=2)
    return {"hosts": d / "hosts", "local": d / "local", "stdout": out}


def test_train_on_two_hosts_equals_one(two_host_run):
    assert "2 rank(s)" in two_host_run["stdout"]
    assert_losses(two_host_run["hosts"], two_host_run["local"], REL, "2 hosts vs 2 ranks on 1 host")
    for step in (20, 40):
        with h5py.File(two_host_run["hosts"] / f"ckpt_{step}.h5") as f:
            assert int(f.attrs["ranks"]) == 2 and int(f.attrs["step"]) == step


@pytest.mark.parametrize("where", ["1 host x 1 rank", "2 hosts x 2 ranks"])
def test_two_host_checkpoint_resumes_anywhere(gpt_bin, cluster, tiny_corpus, two_host_run, workdir, where):
    out = workdir / "run"
    shutil.copytree(two_host_run["hosts"], out)
    resume = ["--resume", out / "ckpt_20.h5"]
    if where == "1 host x 1 rank":
        sh([gpt_bin, *train_args(tiny_corpus["corpus"], out, batch=8, extra=resume)])
        ranks = 1
    else:
        run_on(cluster, [gpt_bin, *train_args(tiny_corpus["corpus"], out, batch=2, extra=resume)], per_host=2)
        ranks = 4
    assert_losses(out, two_host_run["local"], ANY_P_REL, f"resumed on {where}")
    with h5py.File(out / "ckpt_40.h5") as f:
        assert int(f.attrs["ranks"]) == ranks


def test_finetune_on_two_hosts_equals_one(gpt_bin, cluster, tiny_corpus, two_host_run, workdir):
    args = ["finetune", "--init", two_host_run["local"] / "model.h5", "--corpus", tiny_corpus["corpus"],
            "--epochs", 0.5, "--batch", 8, "--eval-every", 5, "--log-every", 5]
    run_on(cluster, [gpt_bin, *args, "--out", workdir / "hosts"])
    sh([gpt_bin, *args, "--out", workdir / "local"], ranks=2)
    assert len(read_metrics(workdir / "local")) >= 5
    assert_losses(workdir / "hosts", workdir / "local", REL, "finetune: 2 hosts vs 1")


def test_sharded_background_checkpoints_on_two_hosts(gpt_bin, cluster, tiny_corpus, two_host_run, workdir):
    out = workdir / "hosts"
    run_on(cluster, [gpt_bin, *train_args(tiny_corpus["corpus"], out, extra=["--shard-optimizer", "--async-ckpt"])])
    assert_losses(out, two_host_run["local"], REL, "sharded, background checkpoints, 2 hosts vs 1 host unsharded")
    got, want = checkpoint_tensors(out / "ckpt_20.h5"), checkpoint_tensors(two_host_run["local"] / "ckpt_20.h5")
    assert any(n.startswith("optimizer/v/") for n in want)
    # written by both hosts' writer threads, each its shard. Sharded, the gradient norm is
    # the sum of the shards' squares, grouped otherwise than the whole buffer's (2e-10
    # apart), so the clipping factor may differ by an ulp; that flips AdamW's normalised
    # updates of near-zero gradients (the query biases'): 7e-7 after 20 steps here
    for n, x in want.items():
        np.testing.assert_allclose(got[n], x, rtol=1e-4, atol=1e-4 * float(np.abs(x).max()), err_msg=n)
    assert all("ckpt_write_s" in m for m in read_metrics(out) if m["step"] % 20 == 0)
    resumed = workdir / "resumed"
    shutil.copytree(out, resumed)
    sh([gpt_bin, *train_args(tiny_corpus["corpus"], resumed, batch=8, extra=["--resume", resumed / "ckpt_20.h5"])])
    assert_losses(resumed, two_host_run["local"], ANY_P_REL, "resumed unsharded on 1 host x 1 rank")


# --------------------------------------------------------------------------- the watchdog

@pytest.fixture(scope="module")
def uninterrupted(gpt_bin, tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    sh([gpt_bin, *watch_args(tiny_corpus["corpus"], out)], ranks=2)
    return out


def watch_args(corpus, out, extra=()):
    return ["train", "--data", corpus, "--model", "tiny", "--out", out, "--steps", WATCH_STEPS, "--batch",
            WATCH_BATCH, "--ckpt-every", WATCH_CKPT, "--seed", 7, "--eval-every", 0, "--log-every", 100,
            "--collective-timeout", TIMEOUT, *extra]


def gpt_ranks(cluster, host, command=b"train"):
    """The pids of gpt's ranks of command on host (not mpirun, orted or the shells between)."""
    pids = []
    for pid in cluster.pids(host):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd[0].endswith(b"/gpt") and command in cmd:
            pids.append(pid)
    return pids


def start_and_wait(cluster, gpt_bin, corpus, out, log, steps_before=150):
    """Starts the watched 2-host run, its stderr into the file log (a cut-off host's
    daemon keeps pipes open); returns its Popen once steps_before steps are done."""
    proc = cluster.popen([gpt_bin, *watch_args(corpus, out)], stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        m = out / "metrics.jsonl"
        if m.is_file() and len(m.read_text().splitlines()) >= steps_before:
            return proc
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    pytest.fail(f"the run did not reach step {steps_before}:\n{log.read_text()[-3000:]}", pytrace=False)


def ended(proc, within, log):
    """mpirun's exit code and seconds to it, and the job's stderr; past `within` s the
    job is killed and the test fails."""
    t0 = time.monotonic()
    try:
        proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"the job did not end within {within} s:\n{log.read_text()[-3000:]}", pytrace=False)
    return proc.returncode, log.read_text(), time.monotonic() - t0


def resume_on_host_1(cluster, gpt_bin, corpus, out, uninterrupted):
    """--resume auto with 2 ranks on host 1: the same losses as the uninterrupted run."""
    newest = max(int(p.stem.split("_")[1]) for p in out.glob("ckpt_*.h5"))
    _, stdout, _, _ = run_on(cluster, [gpt_bin, *watch_args(corpus, out, ["--resume", "auto"])], per_host=2,
                             hosts=[1])
    assert f"resuming from {out}/ckpt_{newest}.h5" in stdout
    ref, got = read_metrics(uninterrupted), read_metrics(out)
    assert [m["step"] for m in got] == list(range(1, WATCH_STEPS + 1))
    for a, b in zip(ref, got):
        assert b["loss"] == a["loss"], f"step {a['step']}: loss {b['loss']} after the resume, {a['loss']} uninterrupted"


def cleanup_host(cluster, host):
    for pid in cluster.pids(host):
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


STALLED = re.compile(r"gpt train: step (\d+): (.+?) has not completed in (\d+) s \(--collective-timeout 5\) on "
                     r"rank 0 \(host (\S+)\); ranks that did not answer: 1 \(host (\S+)\)\. Ending the job with exit "
                     r"code 69")


@pytest.mark.parametrize("how", ["SIGSTOP", "link down"])
def test_stalled_rank_ends_the_job(gpt_bin, cluster, tiny_corpus, uninterrupted, workdir, how):
    out, log = workdir / "run", workdir / "stderr"
    proc = start_and_wait(cluster, gpt_bin, tiny_corpus["corpus"], out, log)
    victim = gpt_ranks(cluster, 2)
    assert len(victim) == 1, f"ranks on host 2: {victim}"
    if how == "SIGSTOP":
        os.kill(victim[0], signal.SIGSTOP)
    else:
        cluster.link(2, up=False)
    try:
        rc, err, secs = ended(proc, TIMEOUT + 30, log)
    finally:
        if how != "SIGSTOP":
            cluster.link(2, up=True)
        cleanup_host(cluster, 2)
    assert rc == 69, f"exit {rc}, expected 69:\n{err[-3000:]}"
    m = STALLED.search(err)
    assert m, f"no watchdog message naming rank 1 on host 2:\n{err[-3000:]}"
    assert m.group(4) == cluster.ns(1) and m.group(5) == cluster.ns(2)
    assert int(m.group(1)) >= 150
    assert secs <= TIMEOUT + 30
    # the checkpoints on disk are whole: the newest loads and the run goes on exactly
    resume_on_host_1(cluster, gpt_bin, tiny_corpus["corpus"], out, uninterrupted)


def test_stalled_prepare_rank_ends_the_job(gpt_bin, cluster, tiny_corpus, moby, workdir):
    """Rank 1 of gpt prepare (host 2) stops itself at round 1 (GPT_FAULT .../STOP): exit 69
    within the timeout + 30 s of the stop, the message naming the round, the phase and
    rank 1 on host 2, and no corpus and no .tmp (MPI_Abort would leave the .tmp)."""
    out, log = workdir / "c.h5", workdir / "stderr"
    proc = cluster.popen([gpt_bin, "prepare", "--tokenizer", tiny_corpus["tokenizer"], "--out", out, "--max-memory",
                          1, "--split-on-blank-lines", "--collective-timeout", TIMEOUT, moby],
                         env={"GPT_FAULT": "prepare-round:1@1/STOP"}, stdout=subprocess.DEVNULL, stderr=log.open("w"))

    def stopped():
        for pid in gpt_ranks(cluster, 2, b"prepare"):
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
                    return True
            except OSError:
                pass
        return False
    try:
        deadline = time.monotonic() + 120
        while not stopped():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "hung: rank 1 did not stop at round 1"
            time.sleep(0.05)
        rc, err, secs = ended(proc, TIMEOUT + 30, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        cleanup_host(cluster, 2)
    assert rc == 69, f"exit {rc}, expected 69:\n{err[-3000:]}"
    m = re.search(rf"gpt prepare: round 2: the agreement on the round's tokenizing has not completed in \d+ s "
                  rf"\(--collective-timeout {TIMEOUT}\) on rank 0 \(host (\S+)\); ranks that did not answer: 1 "
                  rf"\(host (\S+)\)\. Ending the job with exit code 69: .* is removed", err)
    assert m, f"no watchdog message naming rank 1 on host 2:\n{err[-3000:]}"
    assert m.group(1) == cluster.ns(1) and m.group(2) == cluster.ns(2)
    assert secs <= TIMEOUT + 30
    assert not out.exists() and not (workdir / "c.h5.tmp").exists()


def test_killed_host_ends_the_job(gpt_bin, cluster, tiny_corpus, uninterrupted, workdir):
    out, log = workdir / "run", workdir / "stderr"
    proc = start_and_wait(cluster, gpt_bin, tiny_corpus["corpus"], out, log)
    victims = gpt_ranks(cluster, 2)
    assert victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    try:
        rc, err, _ = ended(proc, 60, log)
    finally:
        cleanup_host(cluster, 2)
    assert rc != 0, err[-3000:]
    resume_on_host_1(cluster, gpt_bin, tiny_corpus["corpus"], out, uninterrupted)


# --------------------------------------------------------------------------- Slurm, 2 nodes

SLURM_SH = ROOT / "tests/slurm/slurm_cluster.sh"
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "OUT_OF_MEMORY"}


@pytest.fixture(scope="module")
def slurm(cluster, tmp_path_factory):
    """A Slurm of 2 nodes, node1 and node2, on the cluster's hosts: `ctl(args)` runs a
    client where slurmctld listens (host 1)."""
    missing = [c for c in ("munged", "slurmctld", "slurmd", "sbatch", "srun") if shutil.which(c) is None]
    if missing:
        pytest.fail(f"not found: {' '.join(missing)} (make test-cluster installs slurm-wlm and munge)",
                    pytrace=False)
    d = tmp_path_factory.mktemp("slurm2")
    nodes = " ".join(f"node{i}={cluster.addr(i)}@{cluster.ns(i)}" for i in (1, 2))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_"))}
    try:
        sh(["bash", SLURM_SH, "up", d], timeout=120, base_env={**env, "SLURM_NODES": nodes})
        conf = {**env, "SLURM_CONF": str(d / "slurm.conf")}
        yield lambda args, **kw: sh(["nsenter", f"--net=/run/netns/{cluster.ns(1)}", *args], base_env=conf, **kw)
    finally:
        sh(["bash", SLURM_SH, "down", d], timeout=180, check=False, base_env=env)


def test_pretrain_sbatch_on_two_nodes(gpt_bin, slurm, tiny_corpus, workdir):
    out, log = workdir / "run", workdir / "job.out"
    args = ["--eval-every", 0, "--log-every", 100]
    env = {"GPT": gpt_bin, "DATA": tiny_corpus["corpus"], "OUT": out, "MODEL": "tiny", "STEPS": 300, "BATCH": 4,
           "CKPT_EVERY": 100, "SEED": 7, "LAUNCHER": "srun",
           # the cluster's network: TCP between the nodes on its subnet
           "OMPI_MCA_btl": "tcp,vader,self", "OMPI_MCA_btl_tcp_if_include": "10.77.0.0/24"}
    job = slurm(["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1", "--time=10", f"--output={log}",
                 f"--chdir={workdir}", ROOT / "jobs/pretrain.sbatch", *args], env=env).stdout.strip()
    assert job.isdigit(), job
    info = {}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        info = dict(re.findall(r"(\w+)=(\S*)", slurm(["scontrol", "show", "job", "-o", job], check=False).stdout))
        if info.get("JobState") in ENDED:
            break
        time.sleep(0.5)
    text = log.read_text(errors="replace") if log.exists() else "(no output)"
    assert info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0", f"{info}\n{text[-3000:]}"
    assert info.get("NodeList") == "node[1-2]", info
    assert "layout: 2 node(s), 1 rank(s) per node (2 in all)" in text, text[-3000:]
    ref = workdir / "reference"
    sh([gpt_bin, "train", "--data", tiny_corpus["corpus"], "--model", "tiny", "--out", ref, "--steps", 300,
        "--batch", 4, "--seed", 7, *args], ranks=2)
    got, want = read_metrics(out), read_metrics(ref)
    assert [m["step"] for m in got] == list(range(1, 301))
    for a, b in zip(want, got):
        for k in ("loss", "lr", "grad_norm", "tokens"):
            assert b[k] == a[k], f"step {a['step']} {k}: {b[k]} on 2 Slurm nodes, {a[k]} on 1 host"
