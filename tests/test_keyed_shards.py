"""Key-hashed shards of key-value fits (``n_servers=K`` with sparse mini-batches): the keyed
optimizer state split by a hash of the column over K workers, the scheduler coordinating
with scalars. Real worker processes (the session's LocalCluster of 2), real pushes.

The oracles: the whole keyed model on the scheduler (``n_servers=0``), which a sync fit
with a fixed seed and worker count equals bitwise, and scikit-learn's
``LogisticRegression`` for the optimum an async fit approaches.
"""

from __future__ import annotations

import pickle
import threading
import time
from dataclasses import replace

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from distributed import Client, LocalCluster
from sklearn.linear_model import LogisticRegression

from daskgd.data.csr import sparse_to_dask
from daskgd.driver import fit, fit_with_settings
from daskgd.driver.settings import FitSettings
from daskgd.errors import DivergenceError, InvalidSettingError, TrainingError
from daskgd.parameter_server import ParameterServer
from daskgd.parameter_server.kshard_state import key_shards, owned_keys

CHUNK = 500


def _power_law(n=2000, d=5000, nnz=12, k=None, seed=0):
    """``n`` rows of ``nnz`` columns drawn with probability ~ 1 / (j + 1) (a few columns,
    the low ones, in most rows), normal values; labels from a logistic (binary, -1/+1) or
    softmax (``k`` classes) model."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, d + 1)
    p /= p.sum()
    cols = np.stack([np.sort(rng.choice(d, nnz, replace=False, p=p)) for _ in range(n)])
    X = sp.csr_matrix((rng.standard_normal(n * nnz), cols.ravel(),
                       np.arange(0, n * nnz + 1, nnz)), shape=(n, d))  # fmt: skip
    if k is None:
        w = rng.standard_normal(d)
        y = np.where(rng.random(n) < 1 / (1 + np.exp(-(X @ w))), 1.0, -1.0)
    else:
        Z = X @ rng.standard_normal((d, k))
        P = np.exp(Z - Z.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        y = np.array([rng.choice(k, p=q) for q in P], dtype=np.float64)
    return X, y


def _dask(X, y):
    return sparse_to_dask(X, CHUNK), da.from_array(y, chunks=CHUNK)


def _objective(X, y, coef, intercept, alpha):
    Z = X @ coef + intercept
    return float(np.mean(np.logaddexp(0.0, -y * Z)) + alpha / 2 * np.sum(coef * coef))


def test_the_hash_spreads_popular_columns_and_every_key_has_one_shard():
    d, K = 10_000, 3
    owned = [owned_keys(d, k, K) for k in range(K)]
    np.testing.assert_array_equal(np.sort(np.concatenate(owned)), np.arange(d))
    assert all(abs(o.size - d / K) < 0.05 * d / K for o in owned)
    # the 30 most popular columns of power-law data (the low indices) land on every shard
    assert np.bincount(key_shards(np.arange(30), K), minlength=K).min() >= 5
    for k, o in enumerate(owned):
        assert set(key_shards(o, K).tolist()) == {k}


@pytest.mark.parametrize(
    ("optimizer", "extra", "data"),
    [
        ("sgd", {"learning_rate": 0.2, "alpha": 0.01, "l1_ratio": 0.5}, {}),
        ("ftrl", {"learning_rate": 1.0, "alpha": 1e-3}, {}),
        ("adagrad", {"learning_rate": 0.1}, {}),
        # 300 columns: a batch touches more than half, the replies are whole models
        ("sgd", {"learning_rate": 0.2, "alpha": 0.01}, {"d": 300}),
        ("adagrad", {"learning_rate": 0.1, "n_classes": 3}, {"k": 3}),
        # learning_rate="auto": the step the coordinator measures reaches every shard
        ("sgd", {"alpha": 1e-3}, {}),
        ("ftrl", {"learning_rate": 1.0, "fit_intercept": False}, {}),
    ],
)
def test_sync_sharded_fits_are_bitwise_those_of_the_whole_model(client, optimizer, extra, data):
    X, y = _power_law(**data)
    kw = dict(client=client, loss="log_loss", mode="sync", optimizer=optimizer,
              batch_size=100, max_epochs=3, tol=None, random_state=3, **extra)  # fmt: skip
    ref = fit(_dask(X, y), n_servers=0, **kw)
    assert "pull_bytes" in ref.timings_  # keyed, not dense pushes
    for k in (1, 2):
        res = fit(_dask(X, y), n_servers=k, **kw)
        assert "pull_bytes" in res.timings_ and res.n_updates_ == ref.n_updates_
        np.testing.assert_array_equal(res.coef_, ref.coef_)
        np.testing.assert_array_equal(res.intercept_, ref.intercept_)
        # the epoch's penalty is summed over the shards: the same to rounding
        np.testing.assert_allclose([h["loss"] for h in res.history],
                                   [h["loss"] for h in ref.history], rtol=1e-12)  # fmt: skip
        # the weights each task received: the same keys, cut by shard
        assert res.timings_["pull_bytes"] == ref.timings_["pull_bytes"]


def test_an_async_sharded_fit_reaches_the_logistic_optimum(client):
    alpha = 1e-3
    X, y = _power_law(n=3000, d=2000, seed=1)
    ref = LogisticRegression(C=1 / (alpha * len(y)), tol=1e-10, max_iter=10_000).fit(X, y)
    fstar = _objective(X, y, ref.coef_.ravel(), ref.intercept_[0], alpha)
    res = fit(_dask(X, y), client=client, loss="log_loss", mode="async", optimizer="ftrl",
              learning_rate=2.0, batch_size=150, alpha=alpha, max_epochs=30, tol=None,
              n_servers=2, random_state=0)  # fmt: skip
    f = _objective(X, y, res.coef_, res.intercept_, alpha)
    assert (f - fstar) / fstar < 2e-2, (f, fstar)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert abs(res.history[-1]["loss"] - f) < 0.05 * f


def _size(d):
    """The pickled bytes of a message or reply (its arrays unwrapped)."""
    return len(pickle.dumps({k: getattr(v, "data", v) for k, v in d.items()}))


def _push_sizes(dask_scheduler, msg, reply):
    """A ``daskgd_kpush``'s bytes each way, and whether its job then holds no part of the
    model."""
    j = dask_scheduler.plugins["daskgd-parameter-server"].jobs.get(msg["job"])
    empty = j is None or (type(j).__name__ == "ShardedKeyedJob" and j.state == {})
    return _size(msg), _size(reply), empty


def _reply_size(dask_scheduler, msg, reply):
    return _size(reply)


def _spy(handler, measure, dask_scheduler):
    """Record ``measure(dask_scheduler, msg, reply)`` of every call of the scheduler's
    ``handler`` until :func:`_unspy`."""
    inner = dask_scheduler.handlers[handler]
    records = []

    async def spied(**msg):
        reply = await inner(**msg)
        records.append(measure(dask_scheduler, msg, reply))
        return reply

    spied.inner, spied.records = inner, records  # type: ignore[attr-defined]
    dask_scheduler.handlers[handler] = spied


def _unspy(handler, dask_scheduler):
    """Put ``handler`` back; what :func:`_spy` recorded."""
    spied = dask_scheduler.handlers[handler]
    dask_scheduler.handlers[handler] = spied.inner
    return spied.records


def test_the_scheduler_gets_scalars_only_whatever_d(client):
    """The same rows with their columns spread over 50 times as many features: the
    coordinator's bytes per push (message and reply) stay the same and small, while the
    shards and the tasks exchange the keys."""
    X, y = _power_law(n=1000, d=2000, seed=2)
    wide = sp.csr_matrix((X.data, X.indices * 50 + 7, X.indptr), shape=(X.shape[0], 50 * 2000))
    kw = dict(client=client, loss="log_loss", mode="sync", optimizer="adagrad",
              learning_rate=0.1, batch_size=100, max_epochs=2, tol=None, n_servers=2,
              random_state=0)  # fmt: skip
    client.register_plugin(ParameterServer())  # idempotent: the fits find it installed
    per_d = {}
    for data in (X, wide):
        client.run_on_scheduler(_spy, "daskgd_kpush", _push_sizes)
        try:
            res = fit(_dask(data, y), **kw)
        finally:
            sizes = client.run_on_scheduler(_unspy, "daskgd_kpush")
        assert len(sizes) == res.n_updates_ * 2  # one message a rank a round
        per_d[data.shape[1]] = max(m for m, _, _ in sizes), max(r for _, r, _ in sizes)
        assert all(empty for _, _, empty in sizes)  # no keyed state on the scheduler
    assert per_d[2000][0] < 400 and per_d[2000][1] < 200, per_d
    assert per_d[2000] == per_d[100_000]


def test_the_final_model_is_read_from_the_shards_not_through_the_scheduler(client):
    """The close reply stays small however wide the model: the driver reads the shards
    from their workers, and the model is the one the whole-model server trains."""
    X, y = _power_law(n=1000, d=2000, seed=3)
    wide = sp.csr_matrix((X.data, X.indices * 50 + 7, X.indptr), shape=(X.shape[0], 50 * 2000))
    kw = dict(client=client, loss="log_loss", mode="sync", optimizer="ftrl", batch_size=100,
              max_epochs=2, tol=None, random_state=0)  # fmt: skip
    client.register_plugin(ParameterServer())
    sizes = {}
    for data in (X, wide):
        ref = fit(_dask(data, y), n_servers=0, **kw)
        client.run_on_scheduler(_spy, "daskgd_close", _reply_size)
        try:
            res = fit(_dask(data, y), n_servers=2, **kw)
        finally:
            sizes[data.shape[1]] = client.run_on_scheduler(_unspy, "daskgd_close")
        np.testing.assert_array_equal(res.coef_, ref.coef_)
        assert res.intercept_ == ref.intercept_
    assert max(sizes[100_000]) < 2 * max(sizes[2000]) < 20_000, sizes  # not 8 d bytes


def test_more_servers_than_workers_are_refused_with_the_fix(client):
    X, y = _power_law(n=500)
    with pytest.raises(InvalidSettingError, match="n_servers=3 needs 3 workers"):
        fit(_dask(X, y), client=client, loss="log_loss", optimizer="ftrl", batch_size=100,
            n_servers=3)  # fmt: skip


def test_warm_start_and_no_shard_left_behind(client):
    X, y = _power_law(n=1000, d=3000, seed=4)
    w0 = np.random.default_rng(0).standard_normal(3000) * (np.arange(3000) % 5 == 0)
    for optimizer in ("sgd", "ftrl"):
        res = fit(_dask(X, y), client=client, loss="log_loss", optimizer=optimizer,
                  learning_rate=1e-12, batch_size=100, max_epochs=1, tol=None, n_servers=2,
                  coef_init=w0, intercept_init=0.25, random_state=0)  # fmt: skip
        np.testing.assert_allclose(res.coef_, w0, rtol=0, atol=1e-9)
        assert res.intercept_ == pytest.approx(0.25, abs=1e-9)

    def held(dask_worker):
        plugin = dask_worker.plugins.get("daskgd-kshards")
        return 0 if plugin is None else len(plugin.jobs)

    deadline = time.monotonic() + 30  # the shards are freed as the job closes
    while time.monotonic() < deadline and set(client.run(held).values()) != {0}:
        time.sleep(0.2)
    assert set(client.run(held).values()) == {0}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_losing_a_worker_that_holds_a_key_shard_stops_the_fit_with_what_to_do(mode):
    """Key-hashed shards keep no replicas: the death of a holder stops the fit loudly (no
    hang, no silently wrong model), naming the worker and the fix."""
    X, y = _power_law(n=2000, d=3000, seed=5)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        victim = sorted(c.scheduler_info()["workers"])[-1]
        outcome: dict = {}
        going = threading.Event()

        def run():
            try:
                settings = FitSettings(loss="log_loss", optimizer="ftrl", mode=mode,
                                       batch_size=100, n_servers=2, max_epochs=10**6,
                                       tol=None, max_time=120, delay={0: 0.005, 1: 0.005},
                                       callback=lambda row: going.set())  # fmt: skip
                fit_with_settings(_dask(X, y), settings, client=c)
            except Exception as exc:
                outcome["error"] = exc

        t = threading.Thread(target=run)
        t.start()
        assert going.wait(60), "the fit did not close an epoch"
        c.run(lambda: __import__("os")._exit(1), workers=[victim], nanny=False,
              on_error="ignore")  # fmt: skip
        t.join(120)
        assert not t.is_alive()
    err = outcome.get("error")
    assert isinstance(err, TrainingError), err
    assert victim in str(err) and "key-hashed shard" in str(err) and "n_servers=0" in str(err)


def test_a_sync_quorum_steps_the_shards_without_the_straggler(client):
    """``sync_quorum=1`` of 2 with rank 1 slowed down: each round closes on the ranks the
    coordinator names (the shards sum only theirs); the straggler's late push is stale,
    counted as dropped, and it reads the weights of the round that closed without it. The
    oracle: the same fit with the model on the scheduler."""
    alpha = 1e-3
    X, y = _power_law(n=2000, d=1000, seed=6)
    ref = LogisticRegression(C=1 / (alpha * len(y)), tol=1e-10, max_iter=10_000).fit(X, y)
    fstar = _objective(X, y, ref.coef_.ravel(), ref.intercept_[0], alpha)
    settings = FitSettings(loss="log_loss", optimizer="ftrl", learning_rate=2.0, alpha=alpha,
                           batch_size=100, n_servers=2, sync_quorum=1, delay={1: 0.01},
                           max_epochs=40, tol=None, random_state=0)  # fmt: skip
    res = fit_with_settings(_dask(X, y), settings, client=client)
    assert "pull_bytes" in res.timings_ and res.dropped_gradients_ > 0
    f = _objective(X, y, res.coef_, res.intercept_, alpha)
    whole = fit_with_settings(_dask(X, y), replace(settings, n_servers=0), client=client)
    f0 = _objective(X, y, whole.coef_, whole.intercept_, alpha)
    # the straggler's rows get in only when it is first: both stop short of the optimum
    # alike (timing decides which pushes are dropped, so not bitwise)
    assert abs(f - f0) < 0.05 * f0 and fstar < f < 0.7 * np.log(2), (f, f0, fstar)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_non_finite_gradient_stops_a_sharded_fit_as_the_whole_model(client, mode):
    X, y = _power_law(n=1000, d=2000, seed=7)
    X = X.copy()
    X.data[1234] = np.nan  # row 102: its loss and gradient are not finite
    with pytest.raises(DivergenceError, match="non-finite loss or gradient") as whole:
        fit(_dask(X, y), client=client, loss="log_loss", mode=mode, optimizer="adagrad",
            batch_size=100, max_epochs=3, n_servers=0, validate=False,
            random_state=0)  # fmt: skip
    at = str(whole.value).split(" at version")[1].split(".")[0]  # the same push, sync
    with pytest.raises(DivergenceError, match="non-finite loss or gradient") as sharded:
        fit(_dask(X, y), client=client, loss="log_loss", mode=mode, optimizer="adagrad",
            batch_size=100, max_epochs=3, n_servers=2, validate=False,
            random_state=0)  # fmt: skip
    if mode == "sync":
        assert f" at version{at}." in str(sharded.value)
