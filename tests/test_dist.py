"""The distributed machinery on one host: the collective watchdog and the gradient sync.

  * --collective-timeout: a rank that stops (GPT_FAULT=step:S@R/STOP, SIGSTOP to
    itself) makes the others end the job within the timeout + 30 s with exit code 69
    and one message naming the step, the operation and the rank and host that did not
    answer; --resume auto then continues from the newest checkpoint with exactly the
    losses of an uninterrupted run; a rank that answers from outside the phase ends it
    too, named with where it is; a checkpoint write slower than the timeout that every
    rank waits on (GPT_FAULT=ckpt-write:S@R/SLEEP=SECONDS) is waited for with a warning;
    bad values are usage errors;
  * --bucket-mb 0 (one blocking allreduce after the backward pass) and buckets of other
    sizes train exactly as the default buckets do;
  * the token embedding's rows of wte's gradient, reduced sparsely (dist/rowsum.h), are
    the dense reduction in rank order bit for bit on 2 and 3 ranks
    (tests/unit/test_rowsum.c, on 1 rank in make test-unit);
  * --grad-reduce bf16 (on 1 and 3 ranks, and sharded on 2) trains as fp32 does to a stated
    tolerance, yet not bit for bit, and config.json and a resume that changes it say so.

tests/cluster runs the watchdog across hosts (SIGSTOP, a link down, a host killed)."""

import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import TINY_ARGS, kill_group, mpi_environ, read_metrics, sh

STEPS, CKPT, BATCH, TIMEOUT = 60, 10, 4, 5
USAGE = 2


def args(corpus, out, extra=()):
    return ["train", "--data", corpus, "--model", "tiny", "--out", out, "--steps", STEPS, "--batch", BATCH,
            "--ckpt-every", CKPT, *TINY_ARGS, *extra]


@pytest.fixture(scope="module")
def reference(gpt_bin, tiny_corpus, tmp_path_factory):
    """The uninterrupted runs on 2 and 3 ranks: {P: run directory}."""
    d = tmp_path_factory.mktemp("dist_reference")
    for P in (2, 3):
        sh([gpt_bin, *args(tiny_corpus["corpus"], d / f"p{P}")], ranks=P)
    return {P: d / f"p{P}" for P in (2, 3)}


def losses(run_dir):
    return [(m["step"], m["loss"], m.get("val_loss")) for m in read_metrics(run_dir)]


@pytest.mark.parametrize("P,stopped", [(2, 1), (3, 2)])
def test_stopped_rank_ends_the_job_and_the_run_resumes(gpt_bin, tiny_corpus, reference, workdir, P, stopped):
    out = workdir / "run"
    cmd = ["mpirun", "-np", str(P), str(gpt_bin),
           *map(str, args(tiny_corpus["corpus"], out, ["--collective-timeout", TIMEOUT]))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=mpi_environ({"GPT_FAULT": f"step:35@{stopped}/STOP"}))
    try:
        out_s, err = proc.communicate(timeout=300)
    except BaseException:
        kill_group(proc)
        proc.wait()
        raise
    assert proc.returncode == 69, f"exit {proc.returncode}, expected 69\n{out_s[-2000:]}\n{err[-3000:]}"
    m = re.search(rf"gpt train: step 36: the agreement on the step's samples has not completed in (\d+) s \(--collective-timeout "
                  rf"{TIMEOUT}\) on rank 0 \(host (\S+)\); ranks that did not answer: (.+?)\. Ending the job with exit "
                  rf"code 69: the checkpoints on disk are as they were", err)
    assert m, f"no watchdog message:\n{err[-3000:]}"
    assert m.group(2) == socket.gethostname()
    assert m.group(3) == f"{stopped} (host {socket.gethostname()})", "only the stopped rank is named"
    assert TIMEOUT <= int(m.group(1)) <= TIMEOUT + 2
    assert err.count("has not completed") == 1, "one message, from the lowest rank alive"
    # nothing half-written became a checkpoint; the newest is step 30 and it resumes exactly
    assert (out / "latest").read_text().strip() == "ckpt_30.h5"
    proc = sh([gpt_bin, *args(tiny_corpus["corpus"], out, ["--resume", "auto"])], ranks=P)
    assert f"resuming from {out}/ckpt_30.h5" in proc.stdout
    assert losses(out) == losses(reference[P])


def test_stopped_rank_is_found_within_the_timeout(gpt_bin, tiny_corpus, workdir):
    """The job ends within the timeout + 30 s of the rank's stop: the step of the stop is
    awaited in metrics.jsonl (rank 0 writes it), then the clock runs."""
    out = workdir / "run"
    cmd = ["mpirun", "-np", "2", str(gpt_bin),
           *map(str, args(tiny_corpus["corpus"], out, ["--collective-timeout", TIMEOUT, "--steps", 100000]))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=mpi_environ({"GPT_FAULT": "step:40@1/STOP"}))
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "metrics.jsonl").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= 40:
                break
            time.sleep(0.05)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=TIMEOUT + 30)
        secs = time.monotonic() - t0
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.communicate()
        pytest.fail(f"no exit within {TIMEOUT + 30} s of the stopped rank", pytrace=False)
    except BaseException:
        kill_group(proc)
        proc.wait()
        raise
    assert proc.returncode == 69, err[-3000:]
    assert secs <= TIMEOUT + 30


def test_slow_checkpoint_every_rank_waits_on_is_waited_for(gpt_bin, tiny_corpus, workdir):
    """Both ranks wait on the background checkpoint that rank 0's writer takes 3 s over
    (GPT_FAULT=.../SLEEP): past --collective-timeout 1 every rank answers from the same
    step and phase, so rank 0 warns and the job finishes."""
    out = workdir / "run"
    proc = sh([gpt_bin, "train", "--data", tiny_corpus["corpus"], "--model", "tiny", "--out", out, "--steps", 2,
               "--batch", BATCH, "--ckpt-every", 2, "--async-ckpt", "--collective-timeout", 1, *TINY_ARGS],
              ranks=2, env={"GPT_FAULT": "ckpt-write:2@0/SLEEP=3"})
    assert re.search(r"gpt train: warning: step 2: the background checkpoint has not completed in \d+ s "
                     r"\(--collective-timeout 1\), but every rank answered from this step and phase: still waiting",
                     proc.stderr), proc.stderr[-3000:]
    assert "Ending the job" not in proc.stderr
    assert (out / "latest").read_text().strip() == "ckpt_2.h5" and (out / "model.h5").is_file()


def test_rank_in_another_phase_ends_the_job(gpt_bin, tiny_corpus, workdir):
    """Rank 1 sleeping outside any collective (GPT_FAULT=step:1@1/SLEEP) while rank 0 waits
    for it: exit 69, naming rank 1 and where it is. (Rank 0's phase is step 2's agreement
    on the samples, unless a loaded machine holds rank 1 in step 1's compute past the 1 s
    earlier, which ends the job alike.)"""
    proc = sh([gpt_bin, *args(tiny_corpus["corpus"], workdir / "run", ["--collective-timeout", 1])], ranks=2,
              check=False, env={"GPT_FAULT": "step:1@1/SLEEP=60"})
    assert proc.returncode == 69, proc.stderr[-3000:]
    assert re.search(r"gpt train: step \d+: .+ has not completed in \d+ s "
                     r"\(--collective-timeout 1\) on rank 0 \(host \S+\); every rank answered, not all from this "
                     r"step and phase: rank 1 \(host \S+\) from step 1, outside any collective\. Ending the job",
                     proc.stderr), proc.stderr[-3000:]


@pytest.mark.parametrize("value", ["-1", "abc", "", "nan"])
def test_collective_timeout_bad_values(gpt_bin, tiny_corpus, workdir, value):
    proc = sh([gpt_bin, *args(tiny_corpus["corpus"], workdir / "run", ["--collective-timeout", value])],
              check=False)
    assert proc.returncode == USAGE
    assert "--collective-timeout: expected a number >= 0" in proc.stderr


@pytest.mark.parametrize("bucket_mb", ["0", "0.25", "1000"])
def test_bucket_sizes_train_alike(gpt_bin, tiny_corpus, reference, workdir, bucket_mb):
    """A sum of 2 is the same in any order, so every bucket layout (and the blocking
    allreduce) gives the default's losses exactly on 2 ranks."""
    out = workdir / "run"
    sh([gpt_bin, *args(tiny_corpus["corpus"], out, ["--bucket-mb", bucket_mb])], ranks=2)
    assert losses(out) == losses(reference[2])


@pytest.mark.parametrize("P", [2, 3])
def test_sparse_embedding_rows_sum_as_the_dense_reduction(oracle_bin, P):
    """Every rank checks and all agree before asserting, so every rank passes or fails
    (fp32 gathered and kept by owners, --grad-reduce bf16's rows, and the rows fetched
    from their owners for a sharded optimizer's lookup)."""
    proc = sh([Path(oracle_bin).parent / "test_rowsum"], ranks=P)
    assert (proc.stdout + proc.stderr).count("[  PASSED  ] 4 test(s).") == P


GRAD_STEPS = 8


@pytest.mark.parametrize("P,sharded", [(1, False), (2, True), (3, False)])  # 2 unsharded: 3's code path
def test_grad_reduce_bf16_trains_as_fp32_within_its_tolerance(gpt_bin, tiny_corpus, workdir, P, sharded):
    """The same 12 windows a step on P ranks, reduced in fp32 and in bf16 (on one rank,
    bf16 resumes fp32's run at step 4: the resume says what changed). Measured over these
    8 steps, bf16's losses differ from fp32's by 3e-7 (relative) on 1 rank (one
    rounding), 3e-6 on 2 and 2e-5 on 3 (a rounding a hop, of larger partial sums); the
    test allows 1e-4. They must differ somewhere: the option is not ignored."""
    base = ["train", "--data", tiny_corpus["corpus"], "--model", "tiny", "--steps", GRAD_STEPS, "--batch", 12 // P,
            "--seed", 7, "--lr", "1e-3", "--warmup", 2, "--eval-every", 0, "--log-every", 1,
            "--bucket-mb", "0.1", *(["--shard-optimizer"] if sharded else [])]
    got = {}
    for wire in ("fp32", "bf16"):
        out = workdir / wire
        resume = ["--resume", workdir / "fp32" / "ckpt_4.h5"] if P == 1 and wire == "bf16" else ["--ckpt-every", 4]
        proc = sh([gpt_bin, *base, "--out", out, "--grad-reduce", wire, *resume], ranks=P)
        assert (", reduced in bf16;" in proc.stdout) == (wire == "bf16")
        assert ('run.grad_reduce: "fp32" -> "bf16"' in proc.stdout) == (P == 1 and wire == "bf16")
        assert json.loads((out / "config.json").read_text())["run"]["grad_reduce"] == wire
        got[wire] = {m["step"]: m["loss"] for m in read_metrics(out)}
    assert sorted(got["bf16"]) == list(range(5 if P == 1 else 1, GRAD_STEPS + 1))
    fp32 = [got["fp32"][s] for s in got["bf16"]]
    assert list(got["bf16"].values()) == pytest.approx(fp32, rel=1e-4)
    assert list(got["bf16"].values()) != fp32
