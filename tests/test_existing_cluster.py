"""Fit against an existing cluster: real ``dask scheduler`` / ``dask worker`` processes."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _subprocess import scheduler_address, scheduler_command, subprocess_env, worker_command

from daskgd.driver import fit
from daskgd.errors import SchedulerSetupError


def _env(tmp_path: Path, with_daskgd: bool) -> dict:
    return subprocess_env(without_daskgd=None if with_daskgd else tmp_path / "no-daskgd")


def _scheduler(tmp_path, processes, with_daskgd):
    sf = tmp_path / "scheduler.json"
    cmd = scheduler_command(sf)
    p = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=_env(tmp_path, with_daskgd),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes.append(p)
    return sf, scheduler_address(sf, p)


def test_fit_by_address(tmp_path, processes):
    sf, address = _scheduler(tmp_path, processes, with_daskgd=True)
    for _ in range(2):
        processes.append(
            subprocess.Popen(
                worker_command(sf),
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


def test_every_entry_point_refuses_a_scheduler_without_daskgd(tmp_path, processes):
    """Zarr paths, dask arrays, the generators, the estimators and the command all get the
    clear SchedulerSetupError first, never distributed's "Error during deserialization of
    the task graph", and nothing on disk is removed."""
    import dask.array as da
    from distributed import Client

    import daskgd

    _, address = _scheduler(tmp_path, processes, with_daskgd=False)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    y = X @ np.array([1.0, -1.0, 2.0])
    path = str(tmp_path / "d.zarr")
    daskgd.write_zarr(path, X, y, chunk_rows=50)  # in memory: no cluster involved
    labels = str(tmp_path / "c.zarr")
    daskgd.write_zarr(labels, X, (y > 0).astype(np.int64), chunk_rows=50)
    before = sorted(p.name for p in Path(path).rglob("*"))
    Xd, yd = da.from_array(X, chunks=50), da.from_array(y, chunks=50)
    with Client(address, set_as_default=False) as c:
        calls = {
            "fit(path)": lambda: fit(path, client=c, max_epochs=2),
            "fit(path, client=address)": lambda: fit(path, client=address, max_epochs=2),
            "fit(dask)": lambda: fit((Xd, yd), client=c, max_epochs=2),
            "open_zarr": lambda: daskgd.open_zarr(path, client=c),
            "as_dataset(dask)": lambda: daskgd.as_dataset((Xd, yd), client=c),
            "write_zarr(dask)": lambda: daskgd.write_zarr(path, Xd, yd, overwrite=True, client=c),
            "make_regression": lambda: daskgd.make_regression(
                path, 100, 3, overwrite=True, client=c
            ),
            "make_classification": lambda: daskgd.make_classification(
                str(tmp_path / "m.zarr"), 100, 3, client=c
            ),
            "SGDRegressor(path)": lambda: daskgd.SGDRegressor(client=c, max_iter=2).fit(path),
            "SGDRegressor(address)": lambda: daskgd.SGDRegressor(client=address).fit(path),
            "LinearRegression(numpy)": lambda: daskgd.LinearRegression(client=c).fit(X, y),
            "SGDClassifier(path)": lambda: daskgd.SGDClassifier(client=c).fit(labels),
            "LogisticRegression(dask)": lambda: daskgd.LogisticRegression(client=c).fit(
                Xd, (yd > 0).astype(np.int64)
            ),
        }
        for name, call in calls.items():
            with pytest.raises(SchedulerSetupError, match="Install daskgd") as info:
                call()
            assert "deserialization" not in str(info.value), name
        # the estimators' own passes run on the default client: checked too
        with Client(address, set_as_default=True):
            with pytest.raises(SchedulerSetupError, match="Install daskgd"):
                daskgd.SGDClassifier(client=None, max_iter=2).fit(labels)
    assert sorted(p.name for p in Path(path).rglob("*")) == before  # overwrite removed nothing
    assert not (tmp_path / "m.zarr").exists()
    for argv in (
        ["make-data", str(tmp_path / "n.zarr"), "--n-samples", "10", "--n-features", "2"],
        ["fit", path],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "daskgd.cli", *argv, "--scheduler", address],
            cwd=tmp_path, env=_env(tmp_path, True), capture_output=True, text=True,
            timeout=240,
        )  # fmt: skip
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith("daskgd: error: SchedulerSetupError: "), r.stderr
        assert r.stderr.count("\n") == 1 and "Install daskgd" in r.stderr
