"""Key-value fits of sparse data on a real LocalCluster (2 worker processes x 1 thread).

Sparse X (dask arrays of scipy CSR blocks) with ``batch_size`` and a per-coordinate rule
(sgd, adagrad, adam, ftrl) trains key-value: a push carries the gradient at the columns
its batch touched, a reply the weights at the next batch's columns. The oracles are
scikit-learn's ``LogisticRegression`` on the same data (the same objective:
``mean log loss + alpha / 2 ||w||^2`` with ``C = 1 / (alpha n)``) and the dense-push fit
of the same data for the exact lazy SGD.
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from daskgd.data.csr import sparse_to_dask
from daskgd.driver import fit
from daskgd.errors import DivergenceError, InvalidSettingError

D = 2**16
CHUNK = 1000


def _sparse_logistic(n=4000, d=D, nnz=20, pool=500, k=None, seed=0):
    """``n`` rows of ``nnz`` values each, their columns drawn from ``pool`` columns spread
    over ``[0, d)`` (hashed features: few columns in use, each in many rows); labels
    drawn from a logistic (binary, -1/+1) or softmax (``k`` classes) model of them."""
    rng = np.random.default_rng(seed)
    used = rng.choice(d, pool, replace=False)
    cols = np.sort(np.stack([rng.choice(used, nnz, replace=False) for _ in range(n)]), axis=1)
    data = rng.standard_normal((n, nnz))
    X = sp.csr_matrix((data.ravel(), cols.ravel(), np.arange(0, n * nnz + 1, nnz)), shape=(n, d))
    if k is None:
        w = np.zeros(d)
        w[used] = rng.standard_normal(pool)
        y = np.where(rng.random(n) < 1 / (1 + np.exp(-(X @ w))), 1.0, -1.0)
    else:
        W = np.zeros((d, k))
        W[used] = rng.standard_normal((pool, k))
        Z = X @ W
        P = np.exp(Z - Z.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        y = np.array([rng.choice(k, p=p) for p in P], dtype=np.float64)
    return X, y


def _dask(X, y):
    return sparse_to_dask(X, CHUNK), da.from_array(y, chunks=CHUNK)


def _objective(X, y, coef, intercept, alpha):
    """daskgd's objective of the log loss: binary (-1/+1) or multinomial (class indices)."""
    Z = X @ coef + intercept
    if Z.ndim == 1:
        data = np.mean(np.logaddexp(0.0, -y * Z))
    else:
        top = Z.max(axis=1)
        lse = top + np.log(np.exp(Z - top[:, None]).sum(axis=1))
        data = np.mean(lse - Z[np.arange(len(y)), y.astype(int)])
    return data + alpha / 2 * float(np.sum(coef * coef))


def _optimum(X, y, alpha):
    ref = LogisticRegression(C=1 / (alpha * len(y)), tol=1e-10, max_iter=10_000).fit(X, y)
    coef = ref.coef_.T if ref.coef_.shape[0] > 1 else ref.coef_.ravel()
    b = ref.intercept_ if ref.coef_.shape[0] > 1 else ref.intercept_[0]
    return _objective(X, y, coef, b, alpha)


ALPHA = 1e-3


@pytest.fixture(scope="module")
def logistic():
    X, y = _sparse_logistic()
    return X, y, _optimum(X, y, ALPHA)


@pytest.mark.parametrize("mode", ["async", "sync"])
@pytest.mark.parametrize(("optimizer", "lr"), [("ftrl", 5.0)])
def test_keyed_fit_reaches_logistic_optimum(client, logistic, mode, optimizer, lr):
    X, y, fstar = logistic
    res = fit(_dask(X, y), client=client, loss="log_loss", mode=mode, optimizer=optimizer,
              learning_rate=lr, batch_size=200, alpha=ALPHA, max_epochs=60, tol=None,
              random_state=0)  # fmt: skip
    f = _objective(X, y, res.coef_, res.intercept_, ALPHA)
    assert (f - fstar) / fstar < 1e-2, [h["worker_updates"] for h in res.history]
    assert res.coef_.shape == (D,) and res.n_iter_ == 60 and "max_epochs" in res.reason
    rows = res.history
    assert [h["epoch"] for h in rows] == list(range(1, 61))
    assert all(math.isnan(h["grad_norm"]) for h in rows)
    # the epoch's loss: the mean of the pushed losses plus the penalty, near the objective
    assert abs(rows[-1]["loss"] - f) < 0.05 * f
    assert rows[-1]["loss"] < rows[0]["loss"]
    if mode == "sync":  # (async: a slow start may leave a rank out of an epoch)
        assert all(h["staleness_max"] == 0 and h["complete"] for h in rows)


@pytest.mark.parametrize(("d", "pool"), [(1500, 300), (400, 400)])
def test_keyed_sgd_equals_dense_push_sgd(client, d, pool):
    """Lazy L2 (a weight scale) is the dense step exactly: the same batches and steps
    give the same iterates, sparse keys pushed or dense gradients. With 400 columns a
    batch touches more than half of them: the replies are the whole model."""
    X, y = _sparse_logistic(n=2000, d=d, pool=pool, seed=1)
    kw = dict(client=client, loss="log_loss", mode="sync", optimizer="sgd", learning_rate=0.2,
              batch_size=100, alpha=0.01, max_epochs=4, tol=None, random_state=3)  # fmt: skip
    keyed = fit(_dask(X, y), **kw)
    dense = fit((da.from_array(X.toarray(), chunks=(CHUNK, -1)), _dask(X, y)[1]), **kw)
    assert keyed.plan_ == dense.plan_ and keyed.n_updates_ == dense.n_updates_ == 40
    np.testing.assert_allclose(keyed.coef_, dense.coef_, rtol=0, atol=1e-10)
    assert abs(keyed.intercept_ - dense.intercept_) < 1e-10
    for a, b in zip(keyed.history, dense.history, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-9
    # a pull, then a reply to each push but the last (stopped): each with the next keys'
    # weights, or the whole model (d float64)
    per_reply = [p / keyed.n_updates_ for p in keyed.timings_["pull_bytes"]]
    if pool == d:
        assert per_reply == [8 * d] * 2
    else:
        assert all(r < 8 * pool for r in per_reply)


def test_push_and_reply_bytes_follow_the_keys_not_d(client):
    """The same rows with their columns spread over 16 times as many features: the bytes
    each task sends and receives do not change, and stay far below one dense vector."""
    X, y = _sparse_logistic(n=2000, pool=400, seed=2)
    wide = sp.csr_matrix((X.data, X.indices * 16 + 5, X.indptr), shape=(X.shape[0], 16 * D))
    kw = dict(client=client, loss="log_loss", mode="sync", optimizer="adagrad",
              learning_rate=0.1, batch_size=100, max_epochs=2, tol=None,
              random_state=0)  # fmt: skip
    small, large = fit(_dask(X, y), **kw), fit(_dask(wide, y), **kw)
    single = fit(_dask(X.astype(np.float32), y), **kw)  # float32 gradients: 4 bytes a key less
    for s64, s32 in zip(small.timings_["push_bytes"], single.timings_["push_bytes"], strict=True):
        assert s32 < s64 and s64 - s32 >= 4 * 100 * small.n_updates_
    np.testing.assert_allclose(single.coef_, small.coef_, rtol=0, atol=1e-4)
    assert large.coef_.shape == (16 * D,)
    np.testing.assert_array_equal(large.coef_[5::16], small.coef_)
    assert small.timings_["push_bytes"] == large.timings_["push_bytes"]
    assert small.timings_["pull_bytes"] == large.timings_["pull_bytes"]
    pushes = small.n_updates_  # sync with two ranks: one push a rank a round
    for sent, got in zip(small.timings_["push_bytes"], small.timings_["pull_bytes"], strict=True):
        # a batch of 100 rows touches at most 400 columns: keys, values, next keys
        assert sent / pushes <= 400 * (8 + 8 + 8) + 8
        assert got / pushes <= 400 * 8
        assert sent / pushes < 8 * D / 20


def test_multinomial_keyed_fit(client):
    """Softmax over 3 classes, keys pushed with one row of k values each. Lazy AdaGrad
    penalises a coefficient at the steps that touch it only, so it stops short of the
    exact optimum by about 1% here: the tolerance is looser than the binary test's."""
    alpha = 1e-2
    X, y = _sparse_logistic(n=3000, k=3, seed=4)
    fstar = _optimum(X, y, alpha)
    res = fit(_dask(X, y), client=client, loss="log_loss", n_classes=3, mode="sync",
              optimizer="adagrad", learning_rate=0.1, batch_size=200, alpha=alpha,
              max_epochs=30, tol=None, random_state=0)  # fmt: skip
    assert res.coef_.shape == (D, 3) and res.intercept_.shape == (3,)
    f = _objective(X, y, res.coef_, res.intercept_, alpha)
    assert (f - fstar) / fstar < 2e-2
    assert res.history[-1]["loss"] < res.history[0]["loss"] < math.log(3)


@pytest.mark.parametrize(("optimizer", "lr"), [("adam", 0.01), ("sgd", None)])
def test_adam_and_sgd_with_auto_learning_rate(client, logistic, optimizer, lr):
    """``learning_rate="auto"``: adam's constant default; sgd's ``1 / L`` measured on the
    sparse rows before the first step, as for dense data (the same value)."""
    X, y, fstar = logistic
    # adam without a penalty: key by key (its lazy form is the same objective)
    kw = dict(client=client, loss="log_loss", mode="async", optimizer=optimizer,
              batch_size=200, alpha=ALPHA if optimizer == "sgd" else 0.0, max_epochs=10,
              tol=None, random_state=0)  # fmt: skip
    res = fit(_dask(X, y), **kw)
    assert "pull_bytes" in res.timings_
    f = _objective(X, y, res.coef_, res.intercept_, ALPHA)
    assert f < 0.5 * math.log(2) + fstar / 2  # well below the zero model's log(2)
    if lr is not None:
        assert res.learning_rate_ == lr
    else:
        # the same step the dense path measures on the same rows (a small dense copy)
        Xs, ys = _sparse_logistic(n=1000, d=300, pool=300, seed=9)
        kw.update(max_epochs=1)
        sparse_lr = fit(_dask(Xs, ys), **kw).learning_rate_
        dense_lr = fit((da.from_array(Xs.toarray(), chunks=(CHUNK, -1)), _dask(Xs, ys)[1]),
                       **kw).learning_rate_  # fmt: skip
        assert sparse_lr == pytest.approx(dense_lr, rel=1e-9) and sparse_lr > 0


def test_non_finite_gradient_stops_with_a_clear_error(client):
    X, y = _sparse_logistic(n=2000, seed=5)
    X = X.copy()
    X.data[1234] = np.inf  # row 61: its gradient is not finite
    with pytest.raises(DivergenceError, match="non-finite loss or gradient"):
        fit(_dask(X, y), client=client, loss="log_loss", mode="async", optimizer="adagrad",
            batch_size=100, max_epochs=3, validate=False, random_state=0)  # fmt: skip


def test_exploding_sgd_stops_as_divergence(client):
    X, y = _sparse_logistic(n=2000, seed=6)
    with pytest.raises(DivergenceError, match="before the first step"):
        fit(_dask(X, y * 50.0), client=client, loss="squared_error", mode="sync",
            optimizer="sgd", learning_rate=10.0, batch_size=100, max_epochs=50, tol=None,
            random_state=0)  # fmt: skip


def test_tol_time_budget_and_callback_stop(client, logistic):
    X, y, _ = logistic
    kw = dict(client=client, loss="log_loss", mode="async", optimizer="adagrad",
              learning_rate=0.1, batch_size=200, alpha=ALPHA, random_state=0)  # fmt: skip
    res = fit(_dask(X, y), max_epochs=500, tol=1e-2, n_iter_no_change=2, **kw)
    assert res.converged_ and "tol" in res.reason and res.n_iter_ < 500
    res = fit(_dask(X, y), max_epochs=10**6, tol=None, max_time=1.5, **kw)
    assert not res.converged_ and "max_time" in res.reason
    seen = []
    res = fit(_dask(X, y), max_epochs=100, tol=None, callback_params=True,
              callback=lambda row: seen.append(row) or row["epoch"] < 2, **kw)  # fmt: skip
    assert "callback" in res.reason and res.n_iter_ >= 2
    # callback_params: each row has the whole model as the epoch closed
    assert seen[0]["coef"].shape == (D,) and np.isfinite(seen[0]["intercept"])
    assert not np.array_equal(seen[0]["coef"], seen[1]["coef"])


def test_warm_start_from_coef_init(client):
    X, y = _sparse_logistic(n=1000, seed=11)
    w0 = np.random.default_rng(0).standard_normal(D) * (np.arange(D) % 7 == 0)
    for optimizer in ("sgd", "adagrad", "ftrl"):
        res = fit(_dask(X, y), client=client, loss="log_loss", optimizer=optimizer,
                  learning_rate=1e-12, batch_size=100, max_epochs=1, tol=None,
                  coef_init=w0, intercept_init=0.25, random_state=0)  # fmt: skip
        np.testing.assert_allclose(res.coef_, w0, rtol=0, atol=1e-9)
        assert res.intercept_ == pytest.approx(0.25, abs=1e-9)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"mode": "ssp", "max_staleness": 2}, "mode='ssp'"),
        ({"gtol": 1e-3}, "gtol"),
    ],
)
def test_unsupported_keyed_settings_are_refused(client, settings, match):
    # ftrl runs only key by key: what the keyed slice lacks is refused; sgd falls back to
    # dense pushes (the same fit)
    X, y = _sparse_logistic(n=1000, seed=7)
    kw = dict(loss="log_loss", mode="async", optimizer="ftrl", batch_size=100, max_epochs=2)
    with pytest.raises(InvalidSettingError, match=match):
        fit(_dask(X, y), client=client, **{**kw, **settings})
    kw.update(optimizer="sgd", learning_rate=0.1, tol=None)
    res = fit(_dask(X, y), client=client, **{**kw, **settings})
    assert "pull_bytes" not in res.timings_ and res.n_iter_ == 2


def test_keyed_checkpoint_refused(client, tmp_path):
    X, y = _sparse_logistic(n=1000, seed=7)
    with pytest.raises(InvalidSettingError, match="checkpoint"):
        fit(_dask(X, y), client=client, loss="log_loss", optimizer="ftrl", batch_size=100,
            checkpoint=tmp_path / "ck")  # fmt: skip


@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
def test_penalised_adagrad_and_adam_push_dense_gradients(client, logistic, optimizer):
    """Lazy AdaGrad/Adam would penalise a coefficient only on the steps that touch it (another
    objective): with alpha > 0 they push dense gradients and reach the penalised optimum."""
    X, y, fstar = logistic
    res = fit(_dask(X, y), client=client, loss="log_loss", mode="sync", optimizer=optimizer,
              learning_rate=0.1 if optimizer == "adagrad" else 0.01, batch_size=200,
              alpha=ALPHA, max_epochs=60, tol=None, random_state=0)  # fmt: skip
    assert "pull_bytes" not in res.timings_  # dense pushes: no key-value pulls
    assert min(res.timings_["push_bytes"]) >= res.n_updates_ / 2 * D * 4
    f = _objective(X, y, res.coef_, res.intercept_, ALPHA)
    assert (f - fstar) / fstar < 1e-2


def test_ftrl_needs_sparse_mini_batches(client):
    X, y = _sparse_logistic(n=1000, d=200, pool=100, seed=8)
    with pytest.raises(InvalidSettingError, match="batch_size"):
        fit(_dask(X, y), client=client, loss="log_loss", optimizer="ftrl")
    with pytest.raises(InvalidSettingError, match="sparse"):
        fit((X.toarray(), y), client=client, loss="log_loss", optimizer="ftrl", batch_size=100)


@pytest.mark.parametrize("out_of_core", [False, True])
def test_keyed_fit_from_sparse_zarr(client, tmp_path, out_of_core):
    """From a sparse Zarr store, rows in memory or streamed chunk by chunk (a batch may
    then span two chunks): the same optimum."""
    from daskgd.data import write_zarr

    X, y = _sparse_logistic(n=3000, seed=10)
    path = tmp_path / "s.zarr"
    write_zarr(path, X, y, chunk_rows=500, task="classification")
    res = fit(str(path), client=client, loss="log_loss", mode="sync", optimizer="adagrad",
              learning_rate=0.1, batch_size=200, alpha=ALPHA, max_epochs=30, tol=None,
              random_state=0, out_of_core=out_of_core)  # fmt: skip
    f = _objective(X, y, res.coef_, res.intercept_, ALPHA)
    assert (f - _optimum(X, y, ALPHA)) / f < 1e-2


def test_estimators_on_sparse_mini_batches(client):
    """SGDClassifier's defaults (sgd, batch_size=256, eta0="auto") train key-value on
    sparse X, early stopping included (it reads each epoch's whole model); one-vs-rest
    (multi-class hinge) pushes dense gradients."""
    from daskgd import SGDClassifier

    X, y = _sparse_logistic(n=2000, seed=12)
    clf = SGDClassifier(client=client, max_iter=5, tol=None, random_state=0).fit(X, y)
    assert clf.coef_.shape == (1, D) and clf.score(X, y) > 0.6
    early = SGDClassifier(client=client, max_iter=20, early_stopping=True,
                          n_iter_no_change=2, random_state=0).fit(X, y)  # fmt: skip
    assert early.coef_.shape == (1, D) and early.n_iter_ <= 20
    X3, y3 = _sparse_logistic(n=1500, d=4096, k=3, seed=13)
    ovr = SGDClassifier(client=client, max_iter=3, tol=None, random_state=0).fit(X3, y3)
    assert ovr.coef_.shape == (3, 4096)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_worker_killed_mid_keyed_fit(tmp_path, mode):
    """A worker killed (kill -9) mid-fit: its training task reruns on the other worker,
    rejoins at the current version and pulls its keys; the fit ends at the optimum."""
    import os
    import signal
    import threading

    from distributed import Client, LocalCluster

    from daskgd.data import write_zarr

    X, y = _sparse_logistic(n=3000, seed=14)
    path = str(tmp_path / "s.zarr")
    write_zarr(path, X, y, chunk_rows=500, task="classification")
    fstar = _optimum(X, y, ALPHA)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        client.wait_for_workers(2, timeout=60)
        started, out = threading.Event(), {}

        def run():
            try:
                out["res"] = fit(path, client=client, loss="log_loss", mode=mode,
                                 optimizer="adagrad", learning_rate=0.1, batch_size=200,
                                 alpha=ALPHA, max_epochs=150, tol=None, max_time=120,
                                 callback=lambda row: started.set() if row["epoch"] >= 10 else None,
                                 random_state=0)  # fmt: skip
            except BaseException as exc:  # surfaced below
                out["exc"] = exc

        t = threading.Thread(target=run)
        t.start()
        assert started.wait(60)
        victim = sorted(client.scheduler_info()["workers"])[-1]
        assert t.is_alive()  # the kill falls mid-fit
        os.kill(client.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)
        t.join(180)
        assert not t.is_alive(), "the fit hung after a worker died"
    assert "exc" not in out, out.get("exc")
    res = out["res"]
    assert res.n_iter_ == 150 and "max_epochs" in res.reason
    # the last epochs: both ranks' pushes, from the surviving worker
    assert list(res.history[-1]["worker_updates"]) != [victim] and res.history[-1]["complete"]
    assert victim not in res.history[-1]["worker_updates"]
    assert (_objective(X, y, res.coef_, res.intercept_, ALPHA) - fstar) / fstar < 1e-2
