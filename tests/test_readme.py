"""The README's examples run as written: each ```python block as a file, each ``daskgd``
command of the ```bash blocks as a command, twice in a row in a fresh folder.

A block that needs what a test cannot have (your cluster's address, an s3 bucket,
certificate files) starts with a ``# not run: <why>`` line; every other block runs. The
count of runnable blocks is checked so that examples do not silently drop out of the test.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from _subprocess import subprocess_env

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN = "# not run:"
#: Runnable ```python blocks today: the quick start, the TLS example, the kernel, sparse
#: data and feature hashing.
MIN_PYTHON_BLOCKS = 5
#: ```bash blocks with daskgd commands today: "Set up" and "The daskgd command".
MIN_BASH_BLOCKS = 2


def _blocks(lang: str) -> list[tuple[int, str]]:
    """(line number, text) of every fenced block of ``lang`` in the README."""
    text = README.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(rf"^```{lang}\n(.*?)^```\s*$", text, flags=re.S | re.M):
        out.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return out


def _runnable_python() -> list[tuple[int, str]]:
    return [(n, b) for n, b in _blocks("python") if not b.startswith(NOT_RUN)]


def _daskgd_commands(block: str) -> list[list[str]]:
    """The ``daskgd ...`` lines of a bash block, without their trailing comments."""
    commands = []
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        if argv and argv[0] == "daskgd":
            commands.append(argv[1:])
    return commands


def _bash_blocks() -> list[tuple[int, list[list[str]]]]:
    return [(n, cmds) for n, b in _blocks("bash") if (cmds := _daskgd_commands(b))]


def test_the_readme_keeps_its_examples():
    assert len(_runnable_python()) >= MIN_PYTHON_BLOCKS
    assert len(_bash_blocks()) >= MIN_BASH_BLOCKS
    # every block left out says why
    for _n, block in _blocks("python"):
        if block.startswith(NOT_RUN):
            assert len(block.splitlines()[0]) > len(NOT_RUN) + 5


def test_install_gives_what_the_first_command_needs():
    """``pip install .`` then ``daskgd demo``: the demo's plot needs matplotlib, so it is a
    dependency, not an extra."""
    required = [
        r
        for r in importlib.metadata.requires("daskgd") or []
        if re.match(r"matplotlib\b", r) and "extra ==" not in r
    ]
    assert required, importlib.metadata.requires("daskgd")


@pytest.mark.parametrize(("line", "code"), _runnable_python(), ids=lambda v: str(v)[:12])
def test_python_block_runs_as_a_file_twice(tmp_path, line, code):
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    for run in (1, 2):  # the second run meets the files of the first
        r = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=dict(subprocess_env(), MPLBACKEND="Agg"),
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert r.returncode == 0, f"README line {line}, run {run}:\n{r.stderr[-3000:]}"


@pytest.mark.parametrize(("line", "commands"), _bash_blocks(), ids=lambda v: str(v)[:12])
def test_bash_block_daskgd_commands_run_twice(tmp_path, line, commands):
    script = Path(sys.executable).with_name("daskgd")
    run = [str(script)] if script.exists() else [sys.executable, "-m", "daskgd.cli"]
    for attempt in (1, 2):
        for argv in commands:
            r = subprocess.run(
                [*run, *argv],
                cwd=tmp_path,
                env=dict(subprocess_env(), MPLBACKEND="Agg"),
                capture_output=True,
                text=True,
                timeout=400,
            )
            assert r.returncode == 0, (
                f"README line {line}, run {attempt}: daskgd {' '.join(argv)}\n{r.stderr[-3000:]}"
            )
