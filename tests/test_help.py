"""Every command's --help against what its parser accepts, from the outside: each option
--help lists is accepted, and no option of any command's --help is accepted by a command
whose --help does not list it. Also the wording of the command line's messages. Fast: no
command gets far enough to do any work (each stops at a missing required option or a bad
value, or fails to open a file that is not there)."""
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import mpi_environ

OPTION = re.compile(r"^  (?:-\w, )?--([a-z][a-z0-9-]*)( \S+)?", re.M)


def gpt(gpt_bin, *args):
    # MPI commands spend their time in MPI_Init, not on the CPU: run many at once
    return subprocess.run([gpt_bin, *map(str, args)], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env=mpi_environ())


@pytest.fixture(scope="module")
def commands(gpt_bin):
    """{command words: {option: takes a value}} from `gpt --help` and each command's --help."""
    usage = gpt(gpt_bin, "--help")
    assert usage.returncode == 0
    names = re.findall(r"^  (\S+) ", usage.stdout.split("commands:")[1], re.M)
    assert len(names) >= 19, usage.stdout
    found = {}
    for name in names:
        proc = gpt(gpt_bin, name, "--help")
        assert proc.returncode == 0 and proc.stderr == "", f"gpt {name} --help:\n{proc.stderr}"
        subs = sorted(set(re.findall(rf"gpt {name} ([a-z]+) ", proc.stdout)))
        for words in [(name, s) for s in subs] or [(name,)]:
            text = proc.stdout if len(words) == 1 else gpt(gpt_bin, *words, "--help").stdout
            assert text.startswith("usage: ") and f"gpt {' '.join(words)}" in text.splitlines()[0], text
            found[words] = {o: bool(v) for o, v in OPTION.findall(text.split("\noptions:\n", 1)[1])}
            assert "help" in found[words], text
    return found


def probe(gpt_bin, words, option, takes_value):
    args = [f"--{option}"] + (["/nonexistent/1"] if takes_value else [])
    return gpt(gpt_bin, *words, *args)


def test_every_listed_option_is_accepted(gpt_bin, commands):
    jobs = [(w, o, v) for w, opts in commands.items() for o, v in opts.items() if o != "help"]
    with ThreadPoolExecutor(16) as pool:
        procs = list(pool.map(lambda j: probe(gpt_bin, *j), jobs))
    bad = [f"gpt {' '.join(w)} --{o}: {p.stderr.strip()}" for (w, o, _), p in zip(jobs, procs)
           if "unknown option" in p.stderr or "needs a value" in p.stderr]
    assert not bad, "\n".join(bad)


def test_every_accepted_option_is_listed(gpt_bin, commands):
    """Every option any command lists, tried on every command that does not list it."""
    every = {}
    for opts in commands.values():
        every.update(opts)
    jobs = [(w, o, v) for w, opts in commands.items() for o, v in every.items() if o not in opts]
    with ThreadPoolExecutor(16) as pool:
        procs = list(pool.map(lambda j: probe(gpt_bin, *j), jobs))
    bad = [f"gpt {' '.join(w)} --{o}: {p.stderr.strip()}" for (w, o, _), p in zip(jobs, procs)
           if p.returncode != 2 or p.stderr.strip().splitlines() != [f"gpt {' '.join(w)}: unknown option '--{o}' "
                                                                     f"(see gpt {' '.join(w)} --help)"]]
    assert not bad, "accepted without being listed, or not refused in one line:\n" + "\n".join(bad)


@pytest.mark.parametrize("words", [("train",), ("prepare-task",), ("tokenizer", "import"), ("generate",)])
def test_an_unknown_option_is_one_line_naming_it(gpt_bin, words):
    for arg in ("--no-such-option", "--no-such-option=3", "-Z"):
        proc = gpt(gpt_bin, *words, arg)
        shown = arg.split("=")[0]
        assert proc.returncode == 2
        assert proc.stderr.splitlines() == [f"gpt {' '.join(words)}: unknown option '{shown}' "
                                            f"(see gpt {' '.join(words)} --help)"], proc.stderr


def test_an_abbreviation_is_not_an_option(gpt_bin):
    proc = gpt(gpt_bin, "init", "--init", "0.1")  # not --init-std
    assert proc.returncode == 2 and "unknown option '--init'" in proc.stderr


def test_a_missing_value_is_one_line_naming_the_option(gpt_bin):
    proc = gpt(gpt_bin, "score", "--model")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["gpt score: option '--model' needs a value (see gpt score --help)"]


@pytest.mark.parametrize("words", [("train",), ("prepare-task",), ("generate",), ("eval-choice",), ("init",)])
def test_range_errors_have_one_wording(gpt_bin, words):
    proc = gpt(gpt_bin, *words, "--seed", -5)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"gpt {words[0]}: --seed: expected an integer >= 0, got '-5' "
                                        f"(see gpt {words[0]} --help)"], proc.stderr


def test_detokenize_takes_allow_special(gpt_bin):
    proc = gpt(gpt_bin, "detokenize", "--allow-special", "--tokenizer", "/nonexistent/tok.h5")
    assert proc.returncode == 1 and "unknown option" not in proc.stderr and "/nonexistent/tok.h5" in proc.stderr


def test_help_shows_the_defaults_of_the_table(gpt_bin, commands):
    text = gpt(gpt_bin, "train", "--lr", 1, "--help").stdout  # the defaults, not what came before
    assert re.search(r"^  --lr X +.*\(default 0\.00025\)$", text, re.M), text
    assert re.search(r"^  --collective-timeout S +.*\(default 600\)$", text, re.M), text
    # the row RunOptions shares with gpt prepare: the same help and default there
    row = re.search(r"^  --collective-timeout S .*$", text, re.M).group(0)
    assert row in gpt(gpt_bin, "prepare", "--help").stdout.splitlines()
    assert "\nrun options:\n" in text and "\nmodel options" in text
    assert commands[("finetune",)]["corpus"] and "data" in commands[("finetune",)]
