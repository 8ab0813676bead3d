"""A worker killed mid-fit (nanny restart and kill -9) in sync, async and ssp mode; every
worker gone.

The fit must finish, reach its tolerance on the whole data set, and never hang. The kills
land at seeded random points: while the training tasks load their rows (right after they
are submitted), or a random delay into training, which falls mid-round (a member waiting
in the sync barrier or the ssp bound) or mid-push. When every worker is gone for good the
fit raises :class:`NoWorkersError` after ``worker_timeout``.

Every test that kills a worker has a fresh cluster of its own and waits only for the
events it checks (the fit's end), never for the nanny to bring the killed worker back:
how fast a restarted worker registers again depends on the machine's load (on a busy
machine a nanny sometimes never brought it back in 60 s), and nothing here depends on it.
A fit does not need it either: the killed worker's task reruns on a surviving worker.
Each test asserts that its kill happened (the scheduler removed the worker and its process
is gone) before it judges the fit.
"""

import os
import random
import signal
import threading
import time

import numpy as np
import psutil
import pytest
from distributed import Client, LocalCluster

from daskgd.data import write_zarr
from daskgd.driver import FitSettings, fit, fit_with_settings
from daskgd.errors import NoWorkersError

KIND = {"nanny": "nanny restart", "kill9": "kill -9"}


def _problem(n=2000, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.5 + 0.3 * rng.standard_normal(n)
    A = np.column_stack([X, np.ones(n)])
    return X, y, np.linalg.lstsq(A, y, rcond=None)[0]


@pytest.fixture
def pair():
    """A fresh cluster of 2 worker processes (with nannies) and its client, for one test.

    A test that kills a worker leaves its cluster with fewer workers, or with a nanny
    still restarting one: no other test shares it.
    """
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        yield c


async def _nanny_kill(victim, dask_scheduler=None):
    # the nanny stops its worker process (gracefully, then SIGKILL) and answers once the
    # process is joined; it then starts a new one, which nothing here waits for
    return await dask_scheduler.restart_workers(
        [victim], timeout=120, wait_for_workers=False, on_error="return",
        stimulus_id="test-faults-nanny-kill",
    )  # fmt: skip


def _kill(client, how, victim=None):
    """Kill ``victim``'s worker process; return its address and the process id it had."""
    victim = victim or sorted(client.scheduler_info()["workers"])[-1]
    pid = client.run(os.getpid, workers=[victim])[victim]
    if how == "nanny":
        status = client.run_on_scheduler(_nanny_kill, victim)
        assert status == {victim: "OK"}, status  # the nanny confirms the process is down
    else:
        os.kill(pid, signal.SIGKILL)
    return victim, pid


def _assert_killed(client, victim, pid):
    """The kill happened: the worker's process is gone and the scheduler removed the worker.

    The process is checked first (a kill -9 is delivered at once, a nanny answers once its
    process is joined); then the test waits on the scheduler's own record of the removal,
    with no deadline of its own (the test's timeout guards against a hang): how soon it
    comes depends on the machine's load.
    """
    try:
        gone = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # killed, not yet reaped
    except psutil.NoSuchProcess:
        gone = True
    assert gone, f"worker {victim} (pid {pid}) is still running after its kill"
    while not any(e.get("action") == "remove-worker" for _, e in client.get_events(victim)):
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("mode", "how", "source"),
    [
        ("sync", "nanny", "numpy"),
        ("sync", "kill9", "zarr"),
        ("async", "nanny", "zarr"),
        ("async", "kill9", "numpy"),
    ],
)
def test_worker_killed_mid_fit(pair, tmp_path, reliability, mode, how, source):
    client = pair
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
    victim, pid = _kill(client, how)
    reliability.add(f"worker kills ({KIND[how]}), {mode}", 1)
    t.join(180)
    assert not t.is_alive(), "fit hung after a worker died"
    _assert_killed(client, victim, pid)
    assert "exc" not in out, out.get("exc")
    res = out["res"]
    _stopped_on_its_rule(res, mode)
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


def _train_tasks_submitted(dask_scheduler) -> bool:
    return any(str(k).startswith("daskgd-train-") for k in dask_scheduler.tasks)


def _stopped_on_its_rule(res, mode: str) -> None:
    """Sync full batch stops converged on gtol. Async and ssp stop on the stalled loss,
    converged only where their check at one point found the gradient small: with a
    constant step their iterates circle the optimum (daskgd.parameter_server.confirm), and
    the suboptimality the caller checks is the test of the result."""
    if mode == "sync":
        assert res.converged_, res.reason
    else:
        assert res.reason.startswith("loss improved by less than tol"), res.reason


def _fit_under_a_kill(client, tmp_path, reliability, mode, how, seed, when=None):
    """One fit with one worker killed at a seeded random point; checks it and returns it.

    ``client``'s cluster is the test's own: the killed worker is not waited for.
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
    # a fit takes hundreds of rounds (learning_rate=0.02 to gtol=1e-8): it is still
    # running here, and a test whose kill fell after the fit would have tested nothing
    assert t.is_alive(), f"the fit ended before the kill ({mode}, {how}, {when}, {seed}): {out}"
    _, pid = _kill(client, how, victim)
    reliability.add(f"worker kills ({KIND[how]}), {mode}", 1)
    t.join(180)
    assert not t.is_alive(), f"fit hung after a worker died ({mode}, {how}, {when}, {seed})"
    _assert_killed(client, victim, pid)
    assert "exc" not in out, out.get("exc")
    res = out["res"]
    _stopped_on_its_rule(res, mode)
    A = np.column_stack([X, np.ones(len(X))])
    f = 0.5 * np.mean((A @ np.append(res.coef_, res.intercept_) - y) ** 2)
    fstar = 0.5 * np.mean((A @ sol - y) ** 2)
    assert (f - fstar) / fstar <= (1e-8 if mode == "sync" else 1e-4), (mode, how, when, seed)
    reliability.add("fits completed after a worker kill", 1)
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
def test_worker_killed_at_a_random_point(pair, tmp_path, reliability, mode, how, when, seed):
    _fit_under_a_kill(pair, tmp_path, reliability, mode, how, seed, when)


@pytest.mark.stress
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("how", ["nanny", "kill9"])
@pytest.mark.parametrize("mode", ["sync", "async", "ssp"])
def test_worker_killed_at_a_random_point_stress(pair, tmp_path, reliability, mode, how, seed):
    _fit_under_a_kill(pair, tmp_path, reliability, mode, how, 100 + seed)


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
            settings = FitSettings(
                mode=mode,
                **({"max_staleness": 1} if mode == "ssp" else {}),
                max_epochs=100_000,
                tol=None,
                max_time=120,
                worker_timeout=1.0,
                delay={0: 0.01},
                callback=lambda row: started.set(),
            )
            out["res"] = fit_with_settings(path, settings, client=c)
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
    from daskgd.parameter_server import PLUGIN_NAME

    return dask_scheduler.plugins[PLUGIN_NAME].jobs


def test_worker_joining_mid_fit_gets_no_work_until_a_resume(tmp_path, reliability):
    """A worker that joins mid-fit gets no partition: the fit ends on the workers it started
    with, at the exact optimum; resuming from the fit's checkpoint on the grown cluster
    spreads the partitions over every worker (the remedy the README gives)."""
    X, y, sol = _problem(n=1200)
    path = str(tmp_path / "d.zarr")
    write_zarr(path, X, y, chunk_rows=100)
    ck = str(tmp_path / "fit.zarr")
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        first_worker = set(c.scheduler_info()["workers"])
        started, joined = threading.Event(), threading.Event()
        out = {}

        def keep_going(row):
            # the fit runs until the new worker has joined *and* the optimum is reached,
            # whatever the machine's speed (no stop rule of its own, see below)
            started.set()
            return not (joined.is_set() and row["grad_norm"] <= 1e-8)

        def run():
            try:
                out["res"] = fit(
                    path,
                    client=c,
                    learning_rate=0.5,
                    max_epochs=100_000,
                    max_time=120,
                    tol=None,
                    callback=keep_going,
                    checkpoint=ck,
                    checkpoint_every=1000,
                )
            except BaseException as exc:  # surfaced below
                out["exc"] = exc

        t = threading.Thread(target=run)
        t.start()
        assert started.wait(60), out
        cluster.scale(2)
        c.wait_for_workers(2, timeout=120)
        new_worker = set(c.scheduler_info()["workers"]) - first_worker
        joined.set()
        t.join(180)
        assert not t.is_alive(), "fit hung after a worker joined"
        assert "exc" not in out, out.get("exc")
        res = out["res"]
        np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=1e-6)
        # every round, before and after the join, came from the fit's first worker only
        assert all(set(h["worker_updates"]) == first_worker for h in res.history)
        assert len(new_worker) == 1
        reliability.add("fits completed while a worker joined", 1)
        # the remedy: resume from the checkpoint; the resumed fit plans over both workers
        again = fit(path, client=c, learning_rate=0.5, max_epochs=res.n_iter_ + 50, tol=None,
                    gtol=1e-8, checkpoint=ck, resume=True)  # fmt: skip
        assert again.n_iter_ > res.n_iter_
        assert set(again.history[-1]["worker_updates"]) == first_worker | new_worker
        np.testing.assert_allclose(np.append(again.coef_, again.intercept_), sol, atol=1e-6)


def _cv_chunk(i):
    rng = np.random.default_rng(i)
    X = rng.standard_normal((300, 4))
    return X, np.where(X @ [1.0, -2.0, 0.5, 0.0] + rng.logistic(size=300) > 0, 1.0, -1.0), None


@pytest.mark.parametrize("how", ["nanny", "kill9"])
def test_cv_chunk_evaluators_survive_a_killed_worker(pair, reliability, how):
    """A cross-validated path's per-worker evaluators (Dask actors on the chunks in memory):
    when a worker holding one dies, the next round's call waits for Dask to recompute its
    chunks on the worker left, builds new evaluators and returns the same numbers."""
    from daskgd.sklearn.cv_chunks import EvaluatorPool

    client = pair
    client.wait_for_workers(2, timeout=60)
    workers = sorted(client.scheduler_info()["workers"])
    chunks = [
        client.submit(_cv_chunk, i, workers=[workers[i % 2]], allow_other_workers=True, pure=False)
        for i in range(4)
    ]
    thetas = {0: np.array([0.1, -0.2, 0.3, 0.0, 0.5]), 1: np.zeros(5)}

    def round_(pool):
        out = {}
        for idx, per_chunk in pool.call_all(lambda a, idx: a.stats(True, [thetas] * len(idx))):
            for c, (per_model, _) in zip(idx, per_chunk, strict=True):
                out[c] = per_model
        return out

    with EvaluatorPool(client, chunks) as pool:
        assert len(pool.groups) == 2  # one evaluator on each worker
        before = round_(pool)
        victim, pid = _kill(client, how, workers[0])
        try:  # a kill -9 is delivered asynchronously: wait for the process to end
            psutil.Process(pid).wait(timeout=60)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired):
            pass  # gone already, or _assert_killed reports it
        _assert_killed(client, victim, pid)
        after = round_(pool)
        assert victim not in pool._workers
    reliability.add(f"worker kills ({KIND[how]}), cv path round", 1)
    assert sorted(after) == [0, 1, 2, 3]
    for c in range(4):
        for k in thetas:
            np.testing.assert_allclose(after[c][k][0], before[c][k][0], rtol=1e-12)
            np.testing.assert_allclose(after[c][k][1], before[c][k][1], rtol=1e-12)


@pytest.mark.parametrize("optimizer", ["lbfgs", "newton"])
def test_line_search_optimizer_survives_a_killed_worker(pair, reliability, optimizer):
    """Full-batch L-BFGS and Newton on the scheduler-hosted server: a round never closes
    without a dead member's rows (the rerun task pushes at the same version), so the line
    search only ever sees the whole data's loss and the fit reaches the exact optimum.

    Closing it with the live members only fed the line search a subset's loss. Here rank
    1's rows are the noisy ones, so rank 0's mean loss lies far below the whole data's
    optimum: once accepted, no later step could beat it, and the fit stalled until
    ``max_epochs`` (found with the preconditioned L-BFGS). Rank 1 pushes 0.3 s after rank
    0 in each round, so the kill finds rank 0's push waiting in the round."""
    from _kills import fit_and_kill, runs_rank

    rng = np.random.default_rng(3)
    n, d = 4000, 6
    X = rng.standard_normal((n, d)) * np.logspace(-1, 2, d)  # scales 0.1 .. 100
    noise = np.where(np.arange(n) < n // 2, 0.1, 3.0)  # rank 1 (the second half): noisy
    w = rng.standard_normal(d) / np.logspace(-1, 2, d)
    if optimizer == "newton":  # Newton solves least squares in one step: a logistic fit
        y = (X @ w + noise * rng.standard_normal(n) > 0).astype(float)
        loss, alpha = "log_loss", 1e-3
    else:
        y = X @ w + 0.5 + noise * rng.standard_normal(n)
        loss, alpha = "squared_error", 0.0
    settings = {"optimizer": optimizer, "loss": loss, "alpha": alpha, "tol": None,
                "gtol": 1e-10, "max_epochs": 150, "delay": {1: 0.3}}  # fmt: skip
    out = fit_and_kill(pair, (X, y), settings, after_epoch=3, victim=lambda c: runs_rank(c, 1))
    reliability.add(f"worker kills (kill -9), {optimizer} on the scheduler", 1)
    assert "error" not in out, out.get("error")
    res = out["res"]
    assert res.converged_, (res.reason, res.n_iter_)
    assert res.n_iter_ < 60, res.n_iter_  # no stall after the kill
    ref = fit((X, y), client=pair, **{k: v for k, v in settings.items() if k != "delay"})
    got, want = np.append(res.coef_, res.intercept_), np.append(ref.coef_, ref.intercept_)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


def test_line_search_round_stops_clearly_when_a_member_goes_silent(pair):
    """A full-batch L-BFGS round waits for every member; one silent for member_timeout
    (a task hung on a live worker) stops the fit with an error naming its rank, instead of
    the others' calls timing out without saying why."""
    X, y, _ = _problem()
    started = time.monotonic()
    with pytest.raises(Exception, match=r"rank 1 .*has not pushed.*member_timeout") as err:
        settings = FitSettings(optimizer="lbfgs", member_timeout=2.0, max_epochs=50,
                               delay={1: 12.0})  # fmt: skip
        fit_with_settings((X, y), settings, client=pair)
    # the job stops after ~member_timeout; the fit then lets its tasks end (the silent one
    # sleeps 12 s here), at most 30 s
    assert time.monotonic() - started < 40, "the silent member was not noticed"
    assert "lbfgs" in str(err.value)
