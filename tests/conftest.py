"""Shared pytest fixtures for the oracle tests (run with /usr/bin/python3 -m pytest).

The C binaries are found through GPT_BIN / ORACLE_BIN or at their default build
locations; a missing binary is a test failure (run `make`), not a skip."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))  # so tests can `import torch_gpt`


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
