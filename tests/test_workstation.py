"""jobs/workstation.sh's layout: NP ranks x THREADS threads, each rank bound to THREADS
cores of its own, its threads told so (OMP_NUM_THREADS, OMP_PROC_BIND=close,
OMP_PLACES=cores) and gpt told with --threads (config.json's run.threads); NP x THREADS
over the machine's cores is a clear error unless MPIRUN_ARGS has --oversubscribe.

GPT is a wrapper (conftest's probe_gpt) that records what each rank got from mpirun.
Needs 2 cores or more (the layouts tried use 2)."""

import json

import pytest

from conftest import physical_cores, probe_gpt, read_probes, sh

WORKSTATION = "jobs/workstation.sh"
STEPS = 6


@pytest.fixture(scope="module")
def cores():
    n = len(physical_cores())
    if n < 2:
        pytest.skip(f"needs 2 cores, this machine has {n}")
    return n


def workstation(repo_root, gpt_bin, corpus, tmp_path, check=True, **env):
    """Runs workstation.sh train on the tiny model with GPT a probe; (proc, run dir, probes dir)."""
    probes, out = tmp_path / "probes", tmp_path / "run"
    gpt = probe_gpt(gpt_bin, probes)
    proc = sh(["bash", repo_root / WORKSTATION, "--data", corpus, "--model", "tiny", "--steps", STEPS,
               "--batch", 2, "--out", out, "--log-every", 2, "--eval-every", 0],
              env={"GPT": gpt, "MPIRUN_ARGS": "", **env}, timeout=120, check=check)
    return proc, out, probes


@pytest.mark.parametrize("np_, threads", [(1, 2), (2, 1)], ids=["NP=1-THREADS=2", "NP=2-THREADS=1"])
def test_ranks_get_their_threads_and_cores(repo_root, gpt_bin, tiny_corpus, tmp_path, cores, np_, threads):
    proc, out, probes = workstation(repo_root, gpt_bin, tiny_corpus["corpus"], tmp_path,
                                    NP=np_, THREADS=threads)
    context = f"\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}"
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["threads"] == threads, context
    assert config["ranks"] == np_, context
    # the script passes --threads, which outranks the OMP_NUM_THREADS it also sets
    assert f"{threads} thread{'s' if threads > 1 else ''}: --threads {threads};" in proc.stdout, context
    assert (out / "model.h5").is_file(), context

    ranks = read_probes(probes)
    assert sorted(ranks) == list(range(np_)), f"probes of ranks {sorted(ranks)}" + context
    for rank, got in ranks.items():
        assert got["OMP_NUM_THREADS"] == str(threads), (rank, got)
        assert got["OPENBLAS_NUM_THREADS"] == str(threads), (rank, got)
        assert got["OMP_PROC_BIND"] == "close" and got["OMP_PLACES"] == "cores", (rank, got)
        # bound to `threads` CPUs (this machine's cores have one hardware thread each, or
        # --bind-to core gives a rank every hardware thread of its cores)
        assert len(got["cpus"]) >= threads and len(got["cpus"]) % threads == 0, (rank, got)
    if np_ > 1:
        masks = [got["cpus"] for got in ranks.values()]
        assert all(not (a & b) for i, a in enumerate(masks) for b in masks[i + 1:]), \
            f"ranks share CPUs: {masks}"
    assert f"layout: {np_} rank(s) x {threads} thread(s) on {cores} core(s)" in proc.stderr, context


def test_more_threads_than_cores_is_a_clear_error(repo_root, gpt_bin, tiny_corpus, tmp_path, cores):
    proc, out, probes = workstation(repo_root, gpt_bin, tiny_corpus["corpus"], tmp_path, check=False,
                                    NP=cores, THREADS=2)
    assert proc.returncode == 2, proc.stderr
    assert (f"NP={cores} ranks x THREADS=2 threads = {2 * cores} cores, but this machine has {cores}"
            in proc.stderr), proc.stderr
    assert "MPIRUN_ARGS=--oversubscribe" in proc.stderr, proc.stderr
    assert not read_probes(probes) and not out.exists(), "gpt was started anyway"

    # THREADS alone over the cores: NP's default would be 0
    proc, out, probes = workstation(repo_root, gpt_bin, tiny_corpus["corpus"], tmp_path, check=False,
                                    THREADS=cores + 1)
    assert proc.returncode == 2 and "not even one rank fits" in proc.stderr, proc.stderr
    assert not read_probes(probes)


def test_oversubscribed_ranks_run_unbound(repo_root, gpt_bin, tiny_corpus, tmp_path, cores):
    """--oversubscribe in MPIRUN_ARGS: the run goes on, ranks and threads unbound (Open MPI
    refuses to bind more ranks than cores; close binding would stack the ranks' threads)."""
    proc, out, probes = workstation(repo_root, gpt_bin, tiny_corpus["corpus"], tmp_path,
                                    NP=cores, THREADS=2, MPIRUN_ARGS="--oversubscribe")
    assert json.loads((out / "config.json").read_text())["run"]["threads"] == 2
    ranks = read_probes(probes)
    assert sorted(ranks) == list(range(cores)), proc.stderr
    for got in ranks.values():
        assert got["OMP_NUM_THREADS"] == "2" and got["OMP_PROC_BIND"] == "false", got
    assert len({frozenset(got["cpus"]) for got in ranks.values()}) == 1, "ranks bound to different CPUs"
