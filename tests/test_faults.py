"""A worker killed mid-fit (nanny restart and kill -9) in sync, async and ssp mode; every
worker gone.

The fit must finish, reach its tolerance on the whole data set, and never hang. The kills
land at seeded random points: while the training tasks load their rows (right after they
are submitted), or a random delay into training, which falls mid-round (a member waiting
in the sync barrier or the ssp bound) or mid-push. When every worker is gone for good the
fit raises :class:`NoWorkersError` after ``worker_timeout``. The session cluster's nannies
bring killed workers back; the all-gone tests use clusters of their own.
"""

import os
import random
import signal
import threading
import time

import numpy as np
import pytest
from distributed import Client, LocalCluster

from daskgd.data import write_zarr
from daskgd.errors import NoWorkersError
from daskgd.train import fit

KIND = {"nanny": "nanny restart", "kill9": "kill -9"}


def _problem(n=2000, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.5 + 0.3 * rng.standard_normal(n)
    A = np.column_stack([X, np.ones(n)])
    return X, y, np.linalg.lstsq(A, y, rcond=None)[0]


def _kill(client, how, victim=None):
    victim = victim or sorted(client.scheduler_info()["workers"])[-1]
    if how == "nanny":
        # distributed's wait for the restarted worker can miss it when it comes back at
        # once (a known race there): do not fail on that wait, the tests wait for 2 workers
        client.restart_workers([victim], timeout=30, raise_for_error=False)
    else:
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
    return victim


@pytest.mark.parametrize(
    ("mode", "how", "source"),
    [
        ("sync", "nanny", "numpy"),
        ("sync", "kill9", "zarr"),
        ("async", "nanny", "zarr"),
        ("async", "kill9", "numpy"),
    ],
)
def test_worker_killed_mid_fit(client, tmp_path, reliability, mode, how, source):
    X, y, sol = _problem()
    data = (X, y)
    if source == "zarr":
        data = str(tmp_path / "d.zarr")
        write_zarr(data, X, y, chunk_rows=250)
    client.wait_for_workers(2, timeout=60)
    started = threading.Event()
    out = {}

    def run():
        try:
            # async stops on the loss (its fixed point depends on push rates, see below)
            stop = {"gtol": 1e-8} if mode == "sync" else {"tol": 1e-9, "n_iter_no_change": 20}
            out["res"] = fit(
                data,
                client=client,
                mode=mode,
                learning_rate=0.02,
                max_epochs=20000,
                max_time=120,
                **{"tol": None, **stop},
                callback=lambda row: started.set() if row["epoch"] >= 20 else None,
            )
        except BaseException as exc:  # surfaced below
            out["exc"] = exc

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(60)
    _kill(client, how)
    reliability.add(f"worker kills ({KIND[how]}), {mode}", 1)
    t.join(180)
    assert not t.is_alive(), "fit hung after a worker died"
    assert "exc" not in out, out.get("exc")
    res = out["res"]
    assert res.converged_, res.reason
    A = np.column_stack([X, np.ones(len(X))])
    f = 0.5 * np.mean((A @ np.append(res.coef_, res.intercept_) - y) ** 2)
    fstar = 0.5 * np.mean((A @ sol - y) ** 2)
    assert (f - fstar) / fstar <= (1e-8 if mode == "sync" else 1e-4)
    if mode == "sync":  # every round uses every live partition: the exact optimum
        np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=1e-6)
    # async weights each partition by how often it pushes; while a rerun task shares a
    # worker with another member its partition pushes less often, which biases the fixed
    # point slightly (asynchronous SGD's known behaviour with unequal worker speeds)
    reliability.add("fits completed after a worker kill", 1)
    client.wait_for_workers(2, timeout=60)


def _train_tasks_submitted(dask_scheduler) -> bool:
    return any(str(k).startswith("daskgd-train-") for k in dask_scheduler.tasks)


def _fit_under_a_kill(client, tmp_path, reliability, mode, how, seed, when=None, restore=True):
    """One fit with one worker killed at a seeded random point; checks it and returns it.

    ``restore``: wait, afterwards, for the nanny to bring the killed worker back (the
    session cluster is shared with the tests that follow).
    """
    rng = random.Random(seed)
    when = when or rng.choice(["load", "train"])
    X, y, sol = _problem(seed=seed)
    data = (X, y)
    if rng.random() < 0.5:
        data = str(tmp_path / "d.zarr")
        write_zarr(data, X, y, chunk_rows=250)
    client.wait_for_workers(2, timeout=60)
    victim = rng.choice(sorted(client.scheduler_info()["workers"]))
    started = threading.Event()
    out = {}
    # async and ssp stop on the loss (their fixed point depends on push rates)
    stop = {"gtol": 1e-8} if mode == "sync" else {"tol": 1e-9, "n_iter_no_change": 20}
    extra = {"max_staleness": 2} if mode == "ssp" else {}

    def run():
        try:
            out["res"] = fit(
                data,
                client=client,
                mode=mode,
                learning_rate=0.02,
                max_epochs=20000,
                max_time=120,
                random_state=seed,
                **{"tol": None, **stop, **extra},
                callback=lambda row: started.set(),
            )
        except BaseException as exc:  # surfaced below
            out["exc"] = exc

    t = threading.Thread(target=run)
    t.start()
    if when == "load":  # the tasks were just submitted: they are reading their rows
        deadline = time.monotonic() + 60
        while not client.run_on_scheduler(_train_tasks_submitted):
            assert time.monotonic() < deadline and t.is_alive(), out
            time.sleep(0.005)
    else:
        assert started.wait(60), out
        time.sleep(rng.uniform(0.0, 0.5))
    if t.is_alive():
        _kill(client, how, victim)
        reliability.add(f"worker kills ({KIND[how]}), {mode}", 1)
    t.join(180)
    assert not t.is_alive(), f"fit hung after a worker died ({mode}, {how}, {when}, {seed})"
    assert "exc" not in out, out.get("exc")
    res = out["res"]
    assert res.converged_, res.reason
    A = np.column_stack([X, np.ones(len(X))])
    f = 0.5 * np.mean((A @ np.append(res.coef_, res.intercept_) - y) ** 2)
    fstar = 0.5 * np.mean((A @ sol - y) ** 2)
    assert (f - fstar) / fstar <= (1e-8 if mode == "sync" else 1e-4), (mode, how, when, seed)
    reliability.add("fits completed after a worker kill", 1)
    if restore:
        client.wait_for_workers(2, timeout=60)
    return res


@pytest.mark.parametrize(
    ("mode", "how", "when", "seed"),
    [
        ("ssp", "nanny", "train", 0),
        ("ssp", "kill9", "load", 1),
        ("sync", "kill9", "load", 2),
        ("async", "nanny", "load", 3),
    ],
)
def test_worker_killed_at_a_random_point(client, tmp_path, reliability, mode, how, when, seed):
    _fit_under_a_kill(client, tmp_path, reliability, mode, how, seed, when)


@pytest.mark.stress
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("how", ["nanny", "kill9"])
@pytest.mark.parametrize("mode", ["sync", "async", "ssp"])
def test_worker_killed_at_a_random_point_stress(tmp_path, reliability, mode, how, seed):
    # a fresh cluster per soak case: after many kills in a row, a nanny of a shared cluster
    # sometimes never brought its restarted worker back (its worker did not register, 1 to
    # 2 cases in 30), which failed the wait *after* a fit that had succeeded
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        _fit_under_a_kill(c, tmp_path, reliability, mode, how, 100 + seed, restore=False)


@pytest.fixture
def lone_cluster():
    """A cluster of one worker process of its own: the tests below take it away for good."""
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        yield cluster, c


@pytest.mark.parametrize("mode", ["sync", "ssp"])
def test_every_worker_gone_fails_clearly(lone_cluster, tmp_path, reliability, mode):
    cluster, c = lone_cluster
    X, y, _ = _problem(n=400)
    path = str(tmp_path / "d.zarr")
    write_zarr(path, X, y, chunk_rows=100)
    started = threading.Event()
    out = {}

    def run():
        try:
            out["res"] = fit(
                path,
                client=c,
                mode=mode,
                **({"max_staleness": 1} if mode == "ssp" else {}),
                max_epochs=100_000,
                tol=None,
                max_time=120,
                worker_timeout=1.0,
                _delay={0: 0.01},
                callback=lambda row: started.set(),
            )
        except BaseException as exc:  # surfaced below
            out["exc"] = exc

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(60), out
    cluster.scale(0)  # the worker and its nanny close: nothing comes back
    reliability.add(f"every worker gone, {mode}", 1)
    t.join(60)
    assert not t.is_alive(), "fit hung with every worker gone"
    exc = out.get("exc")
    assert isinstance(exc, NoWorkersError), out
    msg = str(exc)
    assert "every worker of this fit was lost" in msg and "worker_timeout=1 s" in msg
    assert "has had no worker for" in msg and "larger worker_timeout" in msg
    assert c.run_on_scheduler(lambda dask_scheduler: list(_jobs(dask_scheduler))) == []
    # and a fit on the empty cluster waits worker_timeout for a first worker, then fails
    with pytest.raises(NoWorkersError, match=r"none joined in worker_timeout=0.5 s"):
        fit(path, client=c, validate=False, worker_timeout=0.5, max_epochs=2)
    reliability.add("fits refused on a cluster without workers", 1)


def _jobs(dask_scheduler):
    from daskgd.aggregator import PLUGIN_NAME

    return dask_scheduler.plugins[PLUGIN_NAME].jobs
