"""Environments for the tests' subprocesses (``daskgd`` commands, ``dask scheduler``/``worker``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import daskgd

#: The folder daskgd was imported from: site-packages when installed (as under tox), the
#: checkout when built in place. Subprocesses get it first on their path, so they run the
#: daskgd under test and never an unbuilt source tree.
DASKGD_PARENT = str(Path(daskgd.__file__).resolve().parents[1])


def subprocess_env(*, without_daskgd: Path | None = None) -> dict[str, str]:
    """``os.environ`` with daskgd importable, or, given a folder, made unimportable.

    To stand for a machine where daskgd is not installed even though this environment
    has it, ``without_daskgd`` receives a ``daskgd`` package that fails to import
    exactly as a missing one does, and goes first on the path.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if without_daskgd is None:
        env["PYTHONPATH"] = DASKGD_PARENT
        return env
    shadow = without_daskgd / "daskgd"
    shadow.mkdir(parents=True, exist_ok=True)
    (shadow / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'daskgd\'", name="daskgd")\n'
    )
    env["PYTHONPATH"] = str(without_daskgd)
    return env


#: The ``dask`` command of this environment (``dask scheduler``, ``dask worker``).
DASK = str(Path(sys.executable).with_name("dask"))


def scheduler_command(scheduler_file: Path) -> list[str]:
    """``dask scheduler`` on a free loopback port, writing its address to ``scheduler_file``."""
    return [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0",
            "--dashboard-address", ":0", "--scheduler-file", str(scheduler_file)]  # fmt: skip


def worker_command(scheduler_file: Path, *extra: str) -> list[str]:
    """``dask worker`` (one thread, 1 GiB) for the scheduler of ``scheduler_file``."""
    return [DASK, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
            "--host", "127.0.0.1", "--dashboard-address", ":0", "--memory-limit", "1GiB",
            *extra]  # fmt: skip


def scheduler_address(scheduler_file: Path, proc: subprocess.Popen, tries: int = 600) -> str:
    """Wait (``tries`` x 0.1 s) for a started scheduler to write its address; return it."""
    for _ in range(tries):
        if scheduler_file.exists():
            try:
                return json.loads(scheduler_file.read_text())["address"]
            except (ValueError, KeyError):
                pass  # being written
        assert proc.poll() is None, "dask scheduler exited"
        time.sleep(0.1)
    raise AssertionError("dask scheduler did not start")


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """Terminate the processes, newest first, then kill what has not exited."""
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
