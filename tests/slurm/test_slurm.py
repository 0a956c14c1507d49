"""jobs/pretrain.sbatch on a real single-node Slurm cluster: a preempted job is requeued,
resumes from its checkpoint and ends with exactly the losses of an uninterrupted run, for
`gpt train` and (COMMAND=finetune) `gpt finetune`.

    make && /usr/bin/python3 -m pytest -q tests/slurm     # as root; slurm-wlm and munge

  * the cluster (munged, slurmctld, slurmd) lives in a temporary directory, brought up by
    tests/slurm/slurm_cluster.sh for the module and always taken down after it;
  * srun launcher (`srun --mpi=pmix`), preempted with `scancel --batch --signal=USR1`:
    the script forwards USR1 to srun, the ranks checkpoint and exit 75, the script runs
    `scontrol requeue`, the job starts again and resumes from that checkpoint;
  * mpirun launcher, `scontrol requeue JOBID` from outside: Slurm ends the job with
    SIGTERM (mpirun kills the ranks) and requeues it; it resumes from the newest
    checkpoint on disk;
  * both: the job ends COMPLETED with exit code 0:0 after a restart, its output shows
    `resuming from`, and metrics.jsonl has one line per step whose loss, validation
    loss, learning rate, gradient norm and token count are those of the reference run
    (plain `mpirun -np 2`, same arguments, no checkpoints), exactly;
  * the ranks x threads layout: jobs submitted with --ntasks x --cpus-per-task (1 x 2 and
    2 x 1, srun and mpirun) run `gpt train --threads <cpus per task>` (config.json's
    run.threads), every rank bound to CPUs of its own with OMP_NUM_THREADS,
    OMP_PROC_BIND=close and OMP_PLACES=cores (a probe wrapper as GPT records what each
    rank got); THREADS above --cpus-per-task fails the job with a message saying so.
    The cluster's TaskPlugin is task/affinity, so srun's --cpu-bind takes effect.

About a minute on 2 cores; a requeued job waits cred_expire + 1 = 11 s before it may
start again. Run by `make test-slurm`; `make test` leaves tests/slurm out."""

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

# tests/conftest.py (pytest loads it for tests/slurm too, as the module `conftest`)
from conftest import ROOT, probe_gpt, read_metrics, read_probes, sh

CLUSTER_SH = ROOT / "tests/slurm/slurm_cluster.sh"
PRETRAIN = ROOT / "jobs/pretrain.sbatch"

# 2 ranks x batch 4 of the tiny model: a few ms a step here, so 1000 steps take ~5 s
RANKS, STEPS, BATCH, SEED = 2, 1000, 4, 7
CKPT_EVERY, KEEP = 150, 2
PREEMPT_AFTER = 200    # steps in metrics.jsonl before the job is preempted
TRAIN_ARGS = ["--lr", "1e-3", "--min-lr", "1e-4", "--warmup", "20",
              "--eval-every", "250", "--eval-windows", "15", "--log-every", "250"]
# finetune: continued pre-training of a tiny model on the same corpus, ~1000 steps too
EPOCHS, FT_BATCH = 50, 8
FINETUNE_ARGS = ["--lr", "1e-3", "--eval-every", "250", "--log-every", "250"]
# metrics that must be equal to the reference's (those a command writes); the others are timings
EXACT_KEYS = ("step", "loss", "val_loss", "lr", "grad_norm", "tokens", "skipped")

ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
         "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"}


# --------------------------------------------------------------------------- helpers

def tail(path, lines=30):
    path = Path(path)
    if not path.is_file():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def metrics_so_far(run_dir):
    """conftest's read_metrics; [] while the run has not written metrics.jsonl yet."""
    return read_metrics(run_dir) if (Path(run_dir) / "metrics.jsonl").is_file() else []


class Cluster:
    """The test cluster in `dir`: `env` is the base environment (sh adds MPI_ENV) for
    Slurm's commands."""

    def __init__(self, d):
        self.dir = Path(d)
        # nothing of an enclosing Slurm job (a CI runner inside one) may leak into sbatch
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_"))}
        self.env = {**base, "SLURM_CONF": str(self.dir / "slurm.conf")}

    def run(self, args, check=True, timeout=60):
        return sh(args, base_env=self.env, timeout=timeout, check=check)

    def job(self, job_id):
        """`scontrol show job` as a dict ({} once the job is gone)."""
        proc = self.run(["scontrol", "show", "job", "-o", job_id], check=False)
        if proc.returncode != 0:
            return {}
        return dict(re.findall(r"(\w+)=(\S*)", proc.stdout))

    def report(self, job_id=None, output=None):
        """What to read when a job does not do what it should."""
        parts = []
        if job_id is not None:
            parts.append(f"scontrol show job {job_id}:\n"
                         f"{self.run(['scontrol', 'show', 'job', job_id], check=False).stdout}")
        if output is not None:
            parts.append(f"job output {output}:\n{tail(output, 60)}")
        for name in ("slurmctld.log", "slurmd.log"):
            parts.append(f"tail of {self.dir / 'log' / name}:\n{tail(self.dir / 'log' / name, 25)}")
        return "\n\n".join(parts)

    def wait(self, what, predicate, timeout, job_id=None, output=None, interval=0.2):
        """Polls predicate() until it returns something true (returned); fails the test
        after `timeout` seconds with the job's state, output and the daemons' logs."""
        t0 = time.monotonic()
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() - t0 > timeout:
                pytest.fail(f"timed out after {timeout} s waiting for {what}\n\n"
                            f"{self.report(job_id, output)}", pytrace=False)
            time.sleep(interval)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the Slurm tests run as root (SlurmUser=root, slurmd)", pytrace=False)
    missing = [c for c in ("munged", "slurmctld", "slurmd", "sbatch", "srun", "mpirun")
               if shutil.which(c) is None]
    if missing:
        pytest.fail(f"not found: {' '.join(missing)} (apt-get install slurm-wlm munge)",
                    pytrace=False)
    d = tmp_path_factory.mktemp("slurm")
    try:
        sh(["bash", CLUSTER_SH, "up", d], timeout=120)
        yield Cluster(d)
    finally:
        # cancels any job left, stops the daemons by their pid files
        sh(["bash", CLUSTER_SH, "down", d], timeout=180, check=False)


@pytest.fixture(scope="module")
def corpus(tiny_corpus):
    """conftest's tiny corpus (a ~25 KB Moby Dick slice, vocabulary 460 < tiny's 512)."""
    return tiny_corpus["corpus"]


@pytest.fixture(scope="module")
def init_model(gpt_bin, corpus, tmp_path_factory):
    """A tiny model to fine-tune, with the corpus's vocabulary."""
    path = tmp_path_factory.mktemp("init") / "init.h5"
    sh([gpt_bin, "init", "--model", "tiny", "--seed", SEED, "--out", path], timeout=120)
    return path


def job_settings(command, init_model):
    """The job's environment and extra arguments, and its steps, for a command."""
    if command == "train":
        return {"MODEL": "tiny", "STEPS": str(STEPS), "BATCH": str(BATCH)}, TRAIN_ARGS
    return {"COMMAND": "finetune", "INIT": str(init_model), "EPOCHS": str(EPOCHS),
            "BATCH": str(FT_BATCH)}, FINETUNE_ARGS


@pytest.fixture(scope="module")
def references(gpt_bin, corpus, init_model, tmp_path_factory):
    """The uninterrupted runs (plain mpirun, the job's arguments, no checkpoints) by
    command, made when first asked for."""
    runs = {}

    def get(command):
        if command not in runs:
            out = tmp_path_factory.mktemp("reference") / command
            settings, extra = job_settings(command, init_model)
            if command == "train":
                args = ["train", "--data", corpus, "--model", "tiny", "--steps", STEPS, "--batch", BATCH]
            else:
                args = ["finetune", "--init", init_model, "--corpus", corpus, "--epochs", EPOCHS, "--batch", FT_BATCH]
            sh([gpt_bin, *args, "--out", out, "--seed", SEED, *extra], ranks=RANKS, timeout=300)
            metrics = metrics_so_far(out)
            assert [m["step"] for m in metrics] == list(range(1, len(metrics) + 1)) and len(metrics) > 500
            runs[command] = metrics
        return runs[command]
    return get


# --------------------------------------------------------------------------- the test

@pytest.mark.parametrize("command, launcher, preempt",
                         [("train", "srun", "usr1"), ("train", "mpirun", "requeue"),
                          ("finetune", "srun", "usr1")],
                         ids=["srun-scancel-usr1", "mpirun-scontrol-requeue", "finetune-srun-scancel-usr1"])
def test_preempted_job_resumes_with_the_same_losses(cluster, gpt_bin, corpus, init_model, references,
                                                    tmp_path, command, launcher, preempt):
    reference = references(command)
    steps = len(reference)
    out_dir = tmp_path / "run"
    output = tmp_path / "job.out"
    settings, extra = job_settings(command, init_model)
    # finetune continues pre-training on the corpus
    env = {"GPT": gpt_bin, "DATA" if command == "train" else "CORPUS": corpus, "OUT": out_dir, "SEED": SEED, "CKPT_EVERY": CKPT_EVERY,
           "KEEP": KEEP, "LAUNCHER": launcher, **settings}
    # a time limit, so that the script's --time-limit is exercised (10 min: never reached)
    proc = sh(["sbatch", "--parsable", f"--ntasks={RANKS}", "--time=10",
               f"--job-name=gpt-{command}-{launcher}-{preempt}", f"--output={output}",
               f"--chdir={tmp_path}", PRETRAIN, *extra], base_env=cluster.env, env=env, timeout=120)
    job_id = proc.stdout.strip().split(";")[0]
    assert job_id.isdigit(), proc.stdout

    def state():
        return cluster.job(job_id).get("JobState", "")

    # preempt it while it runs, some way into the run
    def far_enough():
        if state() in ENDED:
            pytest.fail(f"job {job_id} ended ({state()}) before it was preempted: too few "
                        f"STEPS for this machine?\n\n{cluster.report(job_id, output)}",
                        pytrace=False)
        return len(metrics_so_far(out_dir)) >= PREEMPT_AFTER
    cluster.wait(f"job {job_id} to pass step {PREEMPT_AFTER}", far_enough, 90, job_id, output,
                 interval=0.05)
    steps_before = len(metrics_so_far(out_dir))
    if preempt == "usr1":
        cluster.run(["scancel", "--batch", "--signal=USR1", job_id])
    else:
        cluster.run(["scontrol", "requeue", job_id])
    t_preempt = time.monotonic()

    # it is requeued, starts again, and finishes
    cluster.wait(f"job {job_id} to be requeued (Restarts > 0)",
                 lambda: int(cluster.job(job_id).get("Restarts", "0") or 0) > 0, 60, job_id, output)
    cluster.wait(f"job {job_id} to start again", lambda: "start number 2" in
                 (output.read_text(errors="replace") if output.exists() else ""), 60, job_id, output)
    t_restart = time.monotonic()
    final = cluster.wait(f"job {job_id} to end", lambda: state() in ENDED and state(), 180,
                         job_id, output, interval=0.5)
    info = cluster.job(job_id)
    log = output.read_text(errors="replace")
    print(f"job {job_id}: preempted after {steps_before} steps, started again "
          f"{t_restart - t_preempt:.1f} s later; {final}")

    context = f"\n\n{cluster.report(job_id, output)}"
    assert final == "COMPLETED", f"job {job_id} ended {final}" + context
    assert info.get("ExitCode") == "0:0", f"exit code {info.get('ExitCode')}" + context
    assert int(info["Restarts"]) >= 1, context
    assert "SLURM_RESTART_COUNT=1" in log, context
    assert f"gpt {command} finished" in log, context
    resumed = re.findall(r"^resuming from (\S+?ckpt_(\d+)\.h5)", log, re.M)
    assert resumed, "no `resuming from` in the job's output" + context
    ckpt_step = int(resumed[-1][1])
    assert 0 < ckpt_step < steps, context
    if preempt == "usr1":
        # the ranks stopped on the forwarded USR1 and wrote a checkpoint where they stopped
        assert "exit 75" in log and "requeueing job" in log, context
        assert ckpt_step >= steps_before, context
    assert "--time-limit" in log, "the script passed no --time-limit" + context

    metrics = metrics_so_far(out_dir)
    assert [m["step"] for m in metrics] == list(range(1, steps + 1)), \
        "metrics.jsonl: not one line per step" + context
    for ref, got in zip(reference, metrics):
        for key in EXACT_KEYS:
            assert got.get(key) == ref.get(key), \
                (f"step {ref['step']} {key}: {got.get(key)!r} after the resume from step "
                 f"{ckpt_step}, {ref.get(key)!r} uninterrupted")
    assert (out_dir / "model.h5").is_file()


# --------------------------------------------------------------------------- ranks x threads

LAYOUT_STEPS = 20


def node_cpus(cluster):
    info = dict(re.findall(r"(\w+)=(\S*)", cluster.run(["scontrol", "show", "node", "-o"]).stdout))
    return int(info["CPUTot"])


def run_job(cluster, tmp_path, sbatch_args, env, extra=(), timeout=120):
    """Submits pretrain.sbatch, waits for it to end; (final state, scontrol's job, output text)."""
    output = tmp_path / "job.out"
    proc = sh(["sbatch", "--parsable", *sbatch_args, f"--output={output}", f"--chdir={tmp_path}",
               PRETRAIN, *extra], base_env=cluster.env, env=env, timeout=60)
    job_id = proc.stdout.strip().split(";")[0]
    assert job_id.isdigit(), proc.stdout

    def ended():
        state = cluster.job(job_id).get("JobState", "")
        return state in ENDED and state
    final = cluster.wait(f"job {job_id} to end", ended, timeout, job_id, output, interval=0.3)
    info = cluster.job(job_id)
    log = output.read_text(errors="replace") if output.exists() else ""
    return final, info, log, f"\n\n{cluster.report(job_id, output)}"


@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
@pytest.mark.parametrize("ntasks, cpus", [(1, 2), (2, 1)], ids=["1rank-x-2cpus", "2ranks-x-1cpu"])
def test_ranks_x_threads_layout(cluster, gpt_bin, corpus, tmp_path, launcher, ntasks, cpus):
    if node_cpus(cluster) < ntasks * cpus:
        pytest.skip(f"the test node has fewer than {ntasks * cpus} CPUs")
    out_dir, probes = tmp_path / "run", tmp_path / "probes"
    env = {"GPT": probe_gpt(gpt_bin, probes), "DATA": corpus, "OUT": out_dir, "MODEL": "tiny",
           "STEPS": str(LAYOUT_STEPS), "BATCH": "2", "LAUNCHER": launcher}
    # no THREADS: the threads per rank come from --cpus-per-task alone
    final, info, log, context = run_job(cluster, tmp_path, [f"--ntasks={ntasks}", f"--cpus-per-task={cpus}",
                                                            f"--job-name=layout-{launcher}"], env,
                                        ["--eval-every", "0", "--log-every", "5"])
    assert final == "COMPLETED" and info.get("ExitCode") == "0:0", f"job ended {final}" + context
    assert "gpt train finished" in log, context

    config = json.loads((out_dir / "config.json").read_text())
    assert config["run"]["threads"] == cpus, context
    assert config["ranks"] == ntasks, context
    assert "OpenBLAS" in log and f"{cpus} thread{'s' if cpus > 1 else ''}: --threads {cpus};" in log, context
    assert len(read_metrics(out_dir)) == LAYOUT_STEPS and (out_dir / "model.h5").is_file(), context

    ranks = read_probes(probes)
    assert sorted(ranks) == list(range(ntasks)), f"probes of ranks {sorted(ranks)}" + context
    for rank, got in ranks.items():
        assert got["OMP_NUM_THREADS"] == str(cpus) and got["OPENBLAS_NUM_THREADS"] == str(cpus), (rank, got)
        assert got["OMP_PROC_BIND"] == "close" and got["OMP_PLACES"] == "cores", (rank, got)
        # the test node has one hardware thread a core (slurmd -C): a rank's CPUs are its cores
        assert len(got["cpus"]) == cpus, (rank, got, context)
    masks = [got["cpus"] for got in ranks.values()]
    assert all(not (a & b) for i, a in enumerate(masks) for b in masks[i + 1:]), \
        f"ranks share CPUs: {masks}" + context
    assert (f"layout: 1 node(s), {ntasks} rank(s) per node ({ntasks} in all), {cpus} thread(s) per rank "
            f"on {cpus} CPU(s) each") in log, context
    if launcher == "srun":
        # Slurm 22.05's srun does not read SLURM_CPUS_PER_TASK: the script passes it
        assert f"srun --mpi=pmix --ntasks={ntasks} --cpus-per-task={cpus} --cpu-bind=cores" in log, context
    else:
        assert f"mpirun -np {ntasks} --map-by slot:PE={cpus} --bind-to core" in log, context


def test_more_threads_than_cpus_per_task_fails_the_job(cluster, gpt_bin, corpus, tmp_path):
    probes = tmp_path / "probes"
    env = {"GPT": probe_gpt(gpt_bin, probes), "DATA": corpus, "OUT": tmp_path / "run", "MODEL": "tiny",
           "STEPS": "5", "THREADS": "2"}
    final, info, log, context = run_job(cluster, tmp_path, ["--ntasks=1", "--cpus-per-task=1",
                                                            "--job-name=layout-too-many-threads"], env)
    assert final == "FAILED" and info.get("ExitCode") == "2:0", f"job ended {final}" + context
    assert ("THREADS=2 threads per rank, but Slurm gave each rank 1 CPU(s): submit with "
            "sbatch --cpus-per-task=2") in log, context
    assert not read_probes(probes), "gpt was started anyway" + context
