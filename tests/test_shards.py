"""Sharded parameter servers (``n_servers=K``): the model's rows in shards on the workers,
the scheduler coordinating. Real worker processes (the session's LocalCluster), real pushes.

The oracle is the whole-model server (``n_servers=0``): a sync fit with a fixed seed and
worker count is bitwise the same with any number of shards (each shard sums the ranks'
slices in rank order and steps its rows with the same float64 arithmetic).
"""

import asyncio
import shutil
import threading
import time

import numpy as np
import pytest
from _kills import exit_after_next_push, first_worker, fit_and_kill
from distributed import Client, LocalCluster

from daskgd.checkpoint import load_checkpoint
from daskgd.driver import fit, fit_with_settings, servers
from daskgd.driver.servers import resolve_servers
from daskgd.driver.settings import FitSettings
from daskgd.errors import DivergenceError, InvalidSettingError, TrainingError
from daskgd.parameter_server.sharding import split_rows


def _problem(n=1200, d=9, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.5 + 0.3 * rng.standard_normal(n)
    return X, y


def _params(res):
    return np.concatenate([np.ravel(res.coef_), np.ravel(res.intercept_)])


def test_split_rows_cuts_contiguous_near_equal_ranges():
    assert split_rows(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert split_rows(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert split_rows(5, 1) == [(0, 5)]
    with pytest.raises(ValueError, match="cannot cut 3 parameter rows into 4"):
        split_rows(3, 4)


@pytest.mark.parametrize(
    "optimizer, extra",
    [
        ("sgd", {"alpha": 0.01, "l1_ratio": 0.5}),
        ("momentum", {"alpha": 0.01}),
        ("nesterov", {"alpha": 0.02, "l1_ratio": 1.0}),
        ("adagrad", {"learning_rate": 0.1}),
        ("adam", {"learning_rate": 0.01, "alpha": 0.001, "l1_ratio": 0.3}),
        # full batch, no L2: each epoch is one round, whose mean the shards make once
        ("momentum", {"batch_size": None, "alpha": 0.01, "l1_ratio": 1.0}),
        ("adagrad", {"batch_size": None, "learning_rate": 0.1, "fit_intercept": False}),
    ],
)
def test_sync_fits_are_bitwise_those_of_the_whole_model_server(client, optimizer, extra):
    X, y = _problem()
    # a given learning rate: learning_rate="auto" takes the top eigenvalue of the ranks'
    # Gram matrices (LAPACK on the scheduler), which can differ by an ulp between two fits
    # as the matrices land at other memory alignments; the comparison is of the servers
    kw = {"optimizer": optimizer, "max_epochs": 6, "batch_size": 200, "random_state": 3,
          "tol": None, "placement": "balanced", "learning_rate": 0.05, **extra}  # fmt: skip
    ref = fit((X, y), client=client, n_servers=0, **kw)
    for k in (1, 2):
        res = fit((X, y), client=client, n_servers=k, **kw)
        np.testing.assert_array_equal(_params(res), _params(ref))
        assert res.n_iter_ == ref.n_iter_
        # the epoch's penalty and gradient norm are summed over the shards: the same to
        # rounding, not bitwise (a different summation order)
        np.testing.assert_allclose([h["loss"] for h in res.history],
                                   [h["loss"] for h in ref.history], rtol=1e-12)  # fmt: skip
        np.testing.assert_allclose([h["grad_norm"] for h in res.history],
                                   [h["grad_norm"] for h in ref.history], rtol=1e-10)  # fmt: skip


def test_float32_data_pushes_float32_gradients_to_either_server(client):
    """Gradients travel in the data's precision: half the bytes of a float64 push; both
    servers sum them in float64, in rank order, so the fits stay bitwise equal."""
    X, y = _problem()
    kw = {"optimizer": "adam", "learning_rate": 0.05, "batch_size": 300, "max_epochs": 4,
          "random_state": 0, "tol": None}  # fmt: skip
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    ref = fit((X32, y32), client=client, n_servers=0, **kw)
    res = fit((X32, y32), client=client, n_servers=2, **kw)
    np.testing.assert_array_equal(_params(res), _params(ref))
    pushes = 4 * 2  # 4 epochs of 2 batches a rank (1,200 rows, 2 ranks, 300 a batch)
    assert res.timings_["push_bytes"] == [pushes * (X.shape[1] + 1) * 4] * 2
    wide = fit((X, y), client=client, n_servers=2, **kw)
    assert wide.timings_["push_bytes"] == [pushes * (X.shape[1] + 1) * 8] * 2


def test_sharded_full_batch_fit_reaches_the_least_squares_optimum(client):
    X, y = _problem()
    A = np.column_stack([X, np.ones(len(y))])
    sol = np.linalg.lstsq(A, y, rcond=None)[0]
    res = fit((X, y), client=client, n_servers=2, max_epochs=500, gtol=1e-8, tol=None)
    assert res.converged_
    np.testing.assert_allclose(_params(res), sol, atol=1e-7)


def test_multinomial_and_no_intercept_shard_like_the_whole_model(client):
    X, _ = _problem(d=6)
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1], [-0.5, 0.5]).astype(float)
    kw = {"loss": "log_loss", "n_classes": 3, "max_epochs": 5, "random_state": 0,
          "alpha": 0.01, "l1_ratio": 0.2, "tol": None, "placement": "balanced",
          "learning_rate": 0.5}  # fmt: skip
    ref = fit((X, y), client=client, n_servers=0, **kw)
    res = fit((X, y), client=client, n_servers=2, **kw)
    np.testing.assert_array_equal(res.coef_, ref.coef_)
    np.testing.assert_array_equal(res.intercept_, ref.intercept_)
    kw = {"fit_intercept": False, "max_epochs": 5, "batch_size": 300, "random_state": 1,
          "placement": "balanced", "learning_rate": 0.05}  # fmt: skip
    ref = fit((X, X[:, 0]), client=client, n_servers=0, **kw)
    res = fit((X, X[:, 0]), client=client, n_servers=2, **kw)
    np.testing.assert_array_equal(_params(res), _params(ref))


@pytest.mark.parametrize("mode", ["async", "ssp"])
def test_async_and_ssp_shards_apply_each_push_on_arrival_and_converge(client, mode):
    """Each push is admitted by the coordinator (staleness, clocks, epochs, stop rules) and
    applied by every shard at once; the fit reaches the optimum as the whole-model one."""
    X, y = _problem()
    A = np.column_stack([X, np.ones(len(y))])
    sol = np.linalg.lstsq(A, y, rcond=None)[0]
    kw = {"mode": mode, "max_staleness": 1 if mode == "ssp" else None, "optimizer": "adam",
          "learning_rate": 0.02, "batch_size": 100, "max_epochs": 60, "tol": None,
          "random_state": 0}  # fmt: skip
    ref = fit((X, y), client=client, n_servers=0, **kw)
    res = fit((X, y), client=client, n_servers=2, **kw)
    for r in (ref, res):  # async Adam at a constant step wanders about the optimum: by
        # up to ~0.02 on an idle machine, a little more when a loaded one reorders the pushes
        np.testing.assert_allclose(_params(r), sol, atol=0.04)
    assert res.n_iter_ == 60 and len(res.history) == 60
    assert sum(h["updates"] for h in res.history) == sum(h["updates"] for h in ref.history)
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]
    assert all(h["dropped_gradients"] == 0 for h in res.history)


def test_a_sharded_async_fit_stops_on_its_stop_rules(client):
    X, y = _problem()
    res = fit((X, y), client=client, n_servers=2, mode="async", optimizer="sgd",
              learning_rate=0.01, batch_size=200, max_epochs=1000, tol=1e-3,
              n_iter_no_change=2, random_state=0)  # fmt: skip
    assert res.n_iter_ < 1000 and "tol" in res.reason, res.reason


def test_a_checkpoint_of_two_shards_resumes_with_one_or_none(client, tmp_path):
    X, y = _problem()
    kw = {"optimizer": "adam", "learning_rate": 0.05, "batch_size": 300, "random_state": 2,
          "tol": None}  # fmt: skip
    path = str(tmp_path / "ck.zarr")
    fit((X, y), client=client, n_servers=2, max_epochs=4, checkpoint=path, checkpoint_every=2,
        **kw)  # fmt: skip
    ck = load_checkpoint(path)
    assert ck.epoch == 4 and set(ck.state) == {"m", "v"}
    assert ck.params.shape == (X.shape[1] + 1,)
    ends = []
    for k in (1, 0):
        again = str(tmp_path / f"ck{k}.zarr")
        shutil.copytree(path, again)
        res = fit((X, y), client=client, n_servers=k, max_epochs=8, checkpoint=again,
                  resume=True, **kw)  # fmt: skip
        assert res.history[-1]["epoch"] == 8
        ends.append(_params(res))
    np.testing.assert_array_equal(ends[0], ends[1])
    ref = fit((X, y), client=client, n_servers=0, max_epochs=8, **kw)
    np.testing.assert_array_equal(ends[0], _params(ref))


@pytest.mark.parametrize(
    "value, match",
    [
        (-1, "n_servers"),
        (1.5, "n_servers"),
        ("two", "n_servers"),
        (True, "n_servers"),
    ],
)
def test_bad_n_servers_values_are_refused(value, match):
    with pytest.raises(InvalidSettingError, match=match):
        FitSettings(n_servers=value)


def test_settings_the_shards_cannot_run_are_refused_before_anything_starts():
    with pytest.raises(InvalidSettingError, match="Hessian needs the whole model"):
        FitSettings(n_servers=1, optimizer="newton")
    with pytest.raises(InvalidSettingError, match="callback_params"):
        FitSettings(n_servers=1, callback_params=True)


def test_more_servers_than_workers_is_refused_with_the_fix(client):
    X, y = _problem()
    with pytest.raises(InvalidSettingError, match=r"n_servers=3 needs 3 workers.*has 2"):
        fit((X, y), client=client, n_servers=3, max_epochs=1)


def test_auto_shards_a_large_first_order_model_from_the_measured_crossover(monkeypatch):
    s = FitSettings(optimizer="sgd")
    assert servers.AUTO_SHARD_PARAMS == 1_000_000  # bench/results/servers.md
    assert resolve_servers(s, 999_999, 4) == 0
    assert resolve_servers(s, 1_000_000, 4) == 2
    assert resolve_servers(s, 1_000_000, 2) == 2
    # one worker: nobody to keep a shard's backup
    assert resolve_servers(s, 10**7, 1) == 0
    # key-hashed shards keep no replicas; L-BFGS and Newton are paced by the data
    assert resolve_servers(s, 10**7, 4, keyed=True) == 0
    for rule in ("lbfgs", "newton"):
        assert resolve_servers(FitSettings(optimizer=rule), 10**7, 4) == 0
    for rule in ("momentum", "nesterov", "adagrad", "adam"):
        assert resolve_servers(FitSettings(optimizer=rule), 10**7, 4) == 2
    assert resolve_servers(FitSettings(optimizer="sgd", callback_params=True), 10**7, 4) == 0
    monkeypatch.setattr(servers, "AUTO_SHARD_PARAMS", None)
    assert resolve_servers(s, 10**8, 4) == 0


def test_auto_shards_a_fit_from_the_crossover_and_says_where(client, monkeypatch):
    X, y = _problem()
    kw = dict(client=client, optimizer="sgd", learning_rate=0.05, max_epochs=3, tol=None)
    assert fit((X, y), **kw).servers_ == []  # 10 parameters: on the scheduler
    monkeypatch.setattr(servers, "AUTO_SHARD_PARAMS", 10)  # the driver resolves "auto"
    auto = fit((X, y), **kw)
    workers = sorted(client.scheduler_info()["workers"])
    assert sorted(auto.servers_) == workers  # 2 shards, one on each worker
    assert np.array_equal(_params(auto), _params(fit((X, y), n_servers=0, **kw)))


def test_a_sync_fit_rebuilds_the_shard_of_a_killed_worker_and_completes(reliability):
    """kill -9 of a shard's worker mid-fit: its shard is rebuilt from the backup on the
    neighbouring worker, the others roll back to theirs, the steps since are counted and
    redone, and the fit reaches the least-squares optimum."""
    X, y = _problem(n=2000)
    A = np.column_stack([X, np.ones(len(y))])
    sol = np.linalg.lstsq(A, y, rcond=None)[0]
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        # killed from epoch 20 on (the backups: at the start, then every 5 epochs and 1 s)
        outcome = fit_and_kill(c, (X, y), dict(n_servers=2, max_epochs=100_000, tol=None,
                               gtol=1e-8, max_time=150, learning_rate=0.05,
                               delay={0: 0.005, 1: 0.005}), 20, first_worker)  # fmt: skip
        holder = outcome["killed"]
    assert "error" not in outcome, outcome.get("error")
    res = outcome["res"]
    reliability.add("shard holders killed (sharded sync fit rebuilt)")
    assert [r["shard"] for r in res.recoveries_] == [0]
    r = res.recoveries_[0]
    assert r["from"] == holder and r["to"] != holder
    assert 0 <= r["steps_lost"] <= r["version"]
    assert res.converged_ and res.n_iter_ > 20
    np.testing.assert_allclose(_params(res), sol, atol=1e-6)


@pytest.mark.parametrize("mode", ["async", "ssp"])
def test_an_async_fit_rebuilds_the_shard_of_a_killed_worker_and_completes(mode, reliability):
    """kill -9 of a shard's worker in async/ssp mode: the shards roll back to the backup
    taken at an epoch's close (every 5 epochs and at least 1 s apart, while no push is
    admitted, so every shard has applied the same pushes); pushes admitted before the
    rebuild are refused by the rebuilt shards and counted in ``steps_lost``; the fit
    completes at the optimum."""
    X, y = _problem(n=2000)
    A = np.column_stack([X, np.ones(len(y))])
    sol = np.linalg.lstsq(A, y, rcond=None)[0]
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        outcome = fit_and_kill(c, (X, y), dict(n_servers=2, mode=mode, optimizer="adam",
                               max_staleness=2 if mode == "ssp" else None,
                               learning_rate=0.02, batch_size=100, max_epochs=60, tol=None,
                               max_time=150, random_state=0, delay={0: 0.003, 1: 0.003}),
                               8, first_worker)  # fmt: skip
        holder = outcome["killed"]
    assert "error" not in outcome, outcome.get("error")
    res = outcome["res"]
    reliability.add(f"shard holders killed (sharded {mode} fit rebuilt)")
    assert [r["shard"] for r in res.recoveries_] == [0]
    r = res.recoveries_[0]
    assert r["from"] == holder and r["to"] != holder
    assert 0 <= r["steps_lost"] <= r["version"]
    assert res.history[-1]["epoch"] == 60
    # async Adam at a constant step wanders about the optimum by ~0.02 (as without a kill,
    # see test_async_and_ssp_shards_apply_each_push_on_arrival_and_converge); the rebuild
    # undid the epochs since its last backup (at the start, then every 5 epochs and 1 s)
    np.testing.assert_allclose(_params(res), sol, atol=0.04)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_losing_a_worker_that_holds_no_shard_costs_its_pushes_only(mode, reliability):
    """3 workers, 2 shards: the worker without a shard dies. Its task is rerun elsewhere;
    in async mode a push it had admitted never reaches the shards and is counted in
    ``dropped_gradients`` (the epoch's close is told not to wait for it); nothing is
    rebuilt and the fit completes."""
    X, y = _problem(n=3000)
    A = np.column_stack([X, np.ones(len(y))])
    sol = np.linalg.lstsq(A, y, rcond=None)[0]
    with (
        LocalCluster(n_workers=3, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        outcome = fit_and_kill(c, (X, y), dict(n_servers=2, mode=mode, optimizer="adam",
                               learning_rate=0.02 if mode == "sync" else 0.005,
                               batch_size=100, max_epochs=60, tol=None, max_time=150,
                               random_state=0, delay=dict.fromkeys(range(3), 0.003)),
                               8, _without_shard)  # fmt: skip
    assert "error" not in outcome, outcome.get("error")
    res = outcome["res"]
    reliability.add(f"workers without a shard killed (sharded {mode} fit)")
    assert res.recoveries_ == [] and res.history[-1]["epoch"] == 60
    np.testing.assert_allclose(_params(res), sol, atol=0.03)  # async noise at this step


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_a_worker_dying_between_its_scalars_and_its_slices_costs_that_push(optimizer, reliability):
    """Sync, 3 workers, 2 shards: the worker without a shard sends a push's scalars to the
    coordinator, none of its slices, and dies. The round must not wait for those slices
    (it holds the job, and the driver's status calls, while it waits): told the run died,
    the shards close it without them; the push is counted in ``dropped_gradients_``, that
    epoch's figures are partial (no stop rule reads them; L-BFGS evaluates the point
    again), and the fit completes at the optimum."""
    X, y = _problem(n=3000)
    A = np.column_stack([X, np.ones(len(y))])
    sol = np.linalg.lstsq(A, y, rcond=None)[0]
    if optimizer == "lbfgs":
        kw = dict(optimizer="lbfgs", max_epochs=300, gtol=1e-9, tol=None)
        after = 3
    else:
        kw = dict(optimizer="adam", learning_rate=0.02, batch_size=100, max_epochs=40,
                  tol=None)  # fmt: skip
        after = 5
    with (
        LocalCluster(n_workers=3, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        outcome = fit_and_kill(c, (X, y), dict(n_servers=2, mode="sync", max_time=150,
                               random_state=0, delay=dict.fromkeys(range(3), 0.02), **kw),
                               after, _without_shard, exit_after_next_push)  # fmt: skip
    assert "error" not in outcome, outcome.get("error")
    res = outcome["res"]
    reliability.add(f"workers dying mid-push (sharded sync {optimizer} fit)")
    assert res.recoveries_ == []
    assert res.dropped_gradients_ >= 1
    assert not all(h["complete"] for h in res.history)
    if optimizer == "lbfgs":
        assert res.converged_
        np.testing.assert_allclose(_params(res), sol, atol=1e-6)
    else:
        assert res.history[-1]["epoch"] == 40
        np.testing.assert_allclose(_params(res), sol, atol=0.03)


def test_losing_the_only_worker_that_holds_a_shard_stops_the_fit_with_what_to_do():
    """One worker: no neighbour keeps a backup. Its death takes the shard's rows: the fit
    fails loudly (no hang, no silently wrong model) and says how to go on."""
    X, y = _problem(n=2000)
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        holder = next(iter(c.scheduler_info()["workers"]))
        outcome: dict = {}

        def run():
            try:
                settings = FitSettings(n_servers=1, mode="async", max_epochs=10**6, tol=None,
                                       max_time=120, batch_size=100,
                                       delay={0: 0.01})  # fmt: skip
                fit_with_settings((X, y), settings, client=c)
            except Exception as exc:
                outcome["error"] = exc

        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _has_job(c):
            time.sleep(0.1)
        time.sleep(0.5)
        c.run(lambda: __import__("os")._exit(1), workers=[holder], nanny=False,
              on_error="ignore")  # fmt: skip
        t.join(120)
        assert not t.is_alive()
    err = outcome.get("error")
    assert isinstance(err, TrainingError), err
    assert "shard" in str(err) and "resume" in str(err)


def _holders(dask_scheduler) -> list[str]:
    plugin = dask_scheduler.plugins["daskgd-parameter-server"]
    return [a for j in plugin.jobs.values() for a in j.shards.addresses]


def _without_shard(c: Client) -> str:
    """A worker that holds no shard of the fit in progress."""
    held = c.run_on_scheduler(_holders)
    return next(w for w in c.scheduler_info()["workers"] if w not in held)


def _has_job(c: Client) -> bool:
    async def jobs(dask_scheduler):
        plugin = dask_scheduler.plugins.get("daskgd-parameter-server")
        return bool(plugin and plugin.jobs)

    return bool(c.run_on_scheduler(jobs))


def test_estimators_take_n_servers(client):
    from daskgd.sklearn import SGDClassifier, SGDRegressor

    # the fits above are compared bitwise; here one coefficient was once seen one unit in
    # the last place apart over ~10 runs of this test after other tests (cause not found),
    # so the estimators are compared to that
    X, y = _problem()
    kw = {"max_iter": 4, "tol": None, "random_state": 0, "client": client}
    ref = SGDRegressor(n_servers=0, **kw).fit(X, y)
    got = SGDRegressor(n_servers=2, **kw).fit(X, y)
    np.testing.assert_allclose(got.coef_, ref.coef_, rtol=1e-15, atol=0)
    labels = (y > np.median(y)).astype(int)
    ref = SGDClassifier(loss="log_loss", n_servers=0, **kw).fit(X, labels)
    got = SGDClassifier(loss="log_loss", n_servers=2, **kw).fit(X, labels)
    np.testing.assert_allclose(got.coef_, ref.coef_, rtol=1e-15, atol=0)
    assert got.get_params()["n_servers"] == 2
    with pytest.raises(InvalidSettingError, match="n_servers=2 shards the model"):
        SGDRegressor(n_servers=2, optimizer="newton", batch_size=None, **kw).fit(X, y)


def test_a_fit_leaves_no_shard_or_backup_on_the_workers(client):
    X, y = _problem()
    fit((X, y), client=client, n_servers=2, max_epochs=12, batch_size=300, random_state=0)
    with pytest.raises(DivergenceError):  # and a failed fit neither
        fit((X, y), client=client, n_servers=2, max_epochs=50, learning_rate=1e3, tol=None)

    def held(dask_worker):
        plugin = dask_worker.plugins.get("daskgd-shards")
        return (len(plugin.jobs), len(plugin.replicas)) if plugin is not None else (0, 0)

    deadline = time.monotonic() + 30  # a failed fit frees its shards as it closes
    while time.monotonic() < deadline:
        if set(client.run(held).values()) == {(0, 0)}:
            break
        time.sleep(0.2)
    assert set(client.run(held).values()) == {(0, 0)}


def test_a_backup_is_filed_under_the_coordinators_version():
    """Async/ssp: a shard's own count of applied pushes falls behind the coordinator's
    when an admitted push never arrived; its backups are filed under the coordinator's
    count, which is what a rebuild asks for. A push of an epoch the shard has closed is
    applied but not added to a closed epoch's figures."""
    from daskgd.objective import make_optimizer
    from daskgd.parameter_server.shard_state import ShardState

    opt = make_optimizer("sgd", learning_rate=0.1)
    s = ShardState(np.zeros((3,)), opt, padded=False, version=10, state=None)
    assert s.apply_push(np.ones(3), 0.1, 10, 1.0, epoch=0, generation=0)
    assert s.published[0] == 11
    s.keep_backup(version=12)  # the coordinator admitted 12 pushes, one never arrived
    s.epoch_pieces(0, 1.0)
    assert s.apply_push(np.ones(3), 0.1, 11, 1.0, epoch=0, generation=0)  # late: epoch 0 closed
    assert 0 not in s.epoch_sums and 0 not in s.epoch_counts
    s.restore_backup(13, 12, generation=1)
    assert s.published[0] == 13
    np.testing.assert_allclose(s.rows, -0.1 * np.ones(3))
    assert s.apply_push(np.ones(3), 0.1, 13, 1.0, epoch=1, generation=0) is None  # stale


def test_a_round_waits_briefly_for_the_slices_of_a_run_that_died(monkeypatch):
    """A round waits for a live run's late slice; once the coordinator says the run died
    (``forget``), only ``HURRY_WAIT`` more, then reports it missing and dead: the handler
    steps without it, with the present ranks' mean (none present: the rows stay). A run
    still alive is reported missing, not dead."""
    from daskgd.objective import make_optimizer
    from daskgd.parameter_server import shard_state
    from daskgd.parameter_server.shard_state import ShardState, present_weight

    monkeypatch.setattr(shard_state, "HURRY_WAIT", 0.2)

    async def main():
        opt = make_optimizer("sgd", learning_rate=0.1)
        s = ShardState(np.zeros((3,)), opt, padded=False, version=4, state=None)
        s.store(4, 0, "a", np.ones(3))
        ranks = [(0, "a"), (1, "b")]
        assert await s.wait_for_slices(4, ranks, 0.1) == ([1], False)
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, s.forget, [(1, "b")])
        start = loop.time()
        assert await s.wait_for_slices(4, ranks, 30.0) == ([1], True)
        assert loop.time() - start < 5
        # the step is the present ranks' mean: rank 0's weight (1 of the round's 2)
        weight = present_weight(ranks, [1.0, 1.0], [1], 2.0)
        assert weight == 1.0 and present_weight(ranks, [1.0, 1.0], [], 2.0) == 2.0
        out = s.round(4, [(0, "a")], s.take_round(4), False, 2.0, 0.1, 4, weight)
        assert out["finite"] and s.published[0] == 5
        np.testing.assert_allclose(s.rows, -0.1 * np.ones(3))
        s.forget([(2, "c")])  # every slice lost: no weight left, the rows stay
        assert (await s.wait_for_slices(5, [(2, "c")], 30.0)) == ([2], True)
        weight = present_weight([(2, "c")], [1.0], [2], 1.0)
        assert s.round(5, [], s.take_round(5), False, 1.0, 0.1, 5, weight)["finite"]
        np.testing.assert_allclose(s.rows, -0.1 * np.ones(3))
        # a run without an incarnation is never marked dead; a slice that comes clears it
        s.forget([(3, None), (4, "d")])
        assert (3, None) not in s.gone and (4, "d") in s.gone
        s.store(6, 4, "d", np.ones(3))
        assert (4, "d") not in s.gone

    asyncio.run(main())


def test_a_sync_quorum_steps_the_shards_without_the_straggler(client):
    """``sync_quorum=1`` of 2 with rank 1 slowed down: each round closes on the first
    rank's slices (the shards sum only the ranks the coordinator names); the straggler's
    late slices are ignored by the shards and its push is counted as dropped; the fit still
    reaches the least-squares optimum (rank 1's rows get in when it is first)."""
    X, y = _problem()
    A = np.column_stack([X, np.ones(len(y))])
    sol = np.linalg.lstsq(A, y, rcond=None)[0]
    settings = FitSettings(n_servers=2, sync_quorum=1, delay={1: 0.02}, max_epochs=400,
                           learning_rate=0.1, gtol=None, tol=None)  # fmt: skip
    res = fit_with_settings((X, y), settings, client=client)
    assert res.dropped_gradients_ > 0
    assert res.history[-1]["epoch"] == 400
    np.testing.assert_allclose(_params(res), sol, atol=0.05)
