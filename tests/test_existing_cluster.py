"""Fit against an existing cluster: real ``dask scheduler`` / ``dask worker`` processes."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _subprocess import subprocess_env

from daskgd.errors import SchedulerSetupError
from daskgd.train import fit

DASK = str(Path(sys.executable).with_name("dask"))


def _env(tmp_path: Path, with_daskgd: bool) -> dict:
    return subprocess_env(without_daskgd=None if with_daskgd else tmp_path / "no-daskgd")


def _address(scheduler_file: Path, proc: subprocess.Popen) -> str:
    for _ in range(600):
        if scheduler_file.exists():
            try:
                return json.loads(scheduler_file.read_text())["address"]
            except (ValueError, KeyError):
                pass
        assert proc.poll() is None, "dask scheduler exited"
        time.sleep(0.1)
    raise AssertionError("dask scheduler did not start")


def _scheduler(tmp_path, processes, with_daskgd):
    sf = tmp_path / "scheduler.json"
    cmd = [
        DASK,
        "scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--dashboard-address",
        ":0",
        "--scheduler-file",
        str(sf),
    ]
    p = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=_env(tmp_path, with_daskgd),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes.append(p)
    return sf, _address(sf, p)


def test_fit_by_address(tmp_path, processes):
    sf, address = _scheduler(tmp_path, processes, with_daskgd=True)
    for _ in range(2):
        processes.append(
            subprocess.Popen(
                [
                    DASK,
                    "worker",
                    "--scheduler-file",
                    str(sf),
                    "--nthreads",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--dashboard-address",
                    ":0",
                    "--memory-limit",
                    "1GiB",
                ],
                cwd=tmp_path,
                env=_env(tmp_path, True),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    from distributed import Client

    with Client(address) as c:
        c.wait_for_workers(2, timeout=120)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 1.0 + 0.1 * rng.standard_normal(300)
    res = fit((X, y), client=address, learning_rate=0.5, max_epochs=400, tol=None, gtol=1e-11)
    sol = np.linalg.lstsq(np.column_stack([X, np.ones(300)]), y, rcond=None)[0]
    np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=1e-8)
    assert len(res.history[0]["worker_updates"]) == 2


def test_scheduler_without_daskgd_fails_clearly(tmp_path, processes):
    _, address = _scheduler(tmp_path, processes, with_daskgd=False)
    X = np.random.default_rng(0).standard_normal((20, 2))
    with pytest.raises(SchedulerSetupError, match="Install daskgd"):
        fit((X, X[:, 0]), client=address)
