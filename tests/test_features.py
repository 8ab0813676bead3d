"""Feature partitioning (``partition="features"``): each training task holds every row of
one column block and owns that block of the parameters.

Real worker processes, real Zarr stores (column-chunked, or several groups joined with
``concat_features``), the closed-form ridge solution and scipy's L-BFGS as oracles; the
row-partitioned fit's iterates for gradient descent, and a numpy mini-batch SGD that draws
the same batches for mini-batches; a worker killed mid-fit in every mode.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _kills import fit_and_kill, runs_rank
from distributed import Client, LocalCluster
from scipy.optimize import minimize

from daskgd import LinearRegression, LogisticRegression, concat_features
from daskgd.data import write_zarr
from daskgd.driver import fit
from daskgd.errors import DataValidationError, DivergenceError, InvalidSettingError


def _problem(n=1500, d=24, seed=0, scales=True):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if scales:  # columns on scales from 0.1 to 10: the preconditioner's case
        X *= rng.uniform(0.1, 10.0, size=d)
    w = rng.standard_normal(d)
    y = X @ w + 0.5 + 0.1 * rng.standard_normal(n)
    return X, y


def _ridge(X, y, alpha, sw=None):
    n, d = X.shape
    sw = np.ones(n) if sw is None else sw
    A = np.column_stack([X, np.ones(n)])
    H = (A * sw[:, None]).T @ A / sw.sum()
    H[:d, :d] += alpha * np.eye(d)
    return np.linalg.solve(H, (A * sw[:, None]).T @ y / sw.sum())


def _logistic(X, y, alpha, offset=None):
    n, d = X.shape
    A = np.column_stack([X, np.ones(n)])
    o = np.zeros(n) if offset is None else offset

    def f(p):
        m = A @ p + o
        return np.mean(np.logaddexp(0, -y * m)) + alpha / 2 * p[:d] @ p[:d]

    def g(p):
        m = A @ p + o
        r = -y / (1 + np.exp(y * m)) / n
        out = A.T @ r
        out[:d] += alpha * p[:d]
        return out

    opts = {"gtol": 1e-13, "ftol": 1e-16, "maxiter": 20000}
    return minimize(f, np.zeros(d + 1), jac=g, method="L-BFGS-B", options=opts).x


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lbfgs_reaches_the_ridge_optimum_from_a_column_chunked_store(trio, tmp_path, dtype):
    X, y = _problem()
    sw = np.random.default_rng(1).uniform(0.5, 2.0, len(y))
    path = str(tmp_path / "grid.zarr")
    write_zarr(path, X.astype(dtype), y, sw, chunk_rows=500, chunk_cols=8)
    Xs = X.astype(dtype).astype(np.float64)
    ref = _ridge(Xs, y, 0.1, sw)
    # float32 data: the values are float32, their sums float64 (as in the row kernels)
    stop = {"gtol": 1e-9} if dtype == np.float64 else {"gtol_rel": 1e-5}
    res = fit(path, partition="features", optimizer="lbfgs", alpha=0.1, tol=None,
              max_epochs=300, client=trio, **stop)  # fmt: skip
    assert res.converged_, res.reason
    tol = 1e-8 if dtype == np.float64 else 1e-3
    np.testing.assert_allclose(res.coef_, ref[:-1], atol=tol * np.abs(ref).max())
    assert res.intercept_ == pytest.approx(ref[-1], abs=tol * 10)
    # the reported objective is that of the returned coefficients (float64 sums)
    r = Xs @ res.coef_ + res.intercept_ - y
    f = 0.5 * (sw @ (r * r)) / sw.sum() + 0.05 * res.coef_ @ res.coef_
    assert res.history[-1]["loss"] == pytest.approx(f, rel=1e-12 if dtype == np.float64 else 1e-9)
    # one block per worker, on the store's column chunks, covering every column once
    assert [b["columns"] for b in res.blocks_] == [(0, 8), (8, 16), (16, 24)]
    assert len({b["worker"] for b in res.blocks_}) == 3
    assert res.history[-1]["loss"] <= res.history[0]["loss"]


def test_logistic_lbfgs_on_in_memory_input_with_offsets_matches_scipy(trio):
    X, y = _problem(n=1200, d=10, scales=False)
    labels = np.where(y > np.median(y), 1.0, -1.0)
    offset = np.random.default_rng(2).normal(0, 0.3, len(y))
    ref = _logistic(X, labels, 0.05, offset)
    res = fit((X, labels), loss="log_loss", partition="features", optimizer="lbfgs",
              alpha=0.05, gtol=1e-10, tol=None, max_epochs=300, offset=offset,
              client=trio)  # fmt: skip
    assert res.converged_, res.reason
    np.testing.assert_allclose(res.coef_, ref[:-1], atol=1e-6)
    assert res.intercept_ == pytest.approx(ref[-1], abs=1e-6)


@pytest.mark.parametrize(("alpha", "l1_ratio"), [(0.1, 0.0), (0.5, 0.9)])
def test_gradient_descent_follows_the_row_partitioned_iterates(trio, tmp_path, alpha, l1_ratio):
    """Full batch: the same iterates as partition='rows' to 1e-10 (L1 by proximal steps).
    Both take max_epochs steps; the feature-partitioned history also reports the objective
    of the iterate it returns (its first row is the start)."""
    X, y = _problem(d=12, scales=False)
    path = str(tmp_path / "gd.zarr")
    write_zarr(path, X, y, chunk_rows=500, chunk_cols=4)
    common = dict(optimizer="sgd", learning_rate=0.05, alpha=alpha, l1_ratio=l1_ratio, tol=None,
                  client=trio)  # fmt: skip
    rows = fit(path, partition="rows", max_epochs=25, **common)
    cols = fit(path, partition="features", max_epochs=25, **common)
    np.testing.assert_allclose(cols.coef_, rows.coef_, rtol=0, atol=1e-10)
    assert cols.intercept_ == pytest.approx(rows.intercept_, abs=1e-10)
    losses = [h["loss"] for h in cols.history[:25]]
    np.testing.assert_allclose(losses, [h["loss"] for h in rows.history], rtol=1e-12)
    if l1_ratio:
        assert np.any(cols.coef_ == 0.0)  # proximal steps give exact zeros


def test_minibatch_sgd_draws_the_same_batches_on_every_block(trio, tmp_path):
    """Mini-batches: every block steps on the same seeded rows; a numpy SGD that draws the
    batches the same way (a permutation of all rows per epoch) is the oracle."""
    X, y = _problem(n=900, d=9, scales=False)
    path = str(tmp_path / "mb.zarr")
    write_zarr(path, X, y, chunk_rows=300, chunk_cols=3)
    res = fit(path, partition="features", optimizer="sgd", batch_size=64, learning_rate=0.02,
              alpha=0.01, max_epochs=4, tol=None, random_state=7, client=trio)  # fmt: skip
    v = np.zeros(10)
    n = len(y)
    for epoch in range(4):
        order = np.random.default_rng([7, epoch]).permutation(n)
        for lo in range(0, n, 64):
            rows = np.sort(order[lo : lo + 64])
            A = np.column_stack([X[rows], np.ones(len(rows))])
            g = A.T @ (A @ v - y[rows]) / len(rows)
            g[:-1] += 0.01 * v[:-1]
            v = v - 0.02 * g
    np.testing.assert_allclose(res.coef_, v[:-1], atol=1e-10)
    assert res.intercept_ == pytest.approx(v[-1], abs=1e-10)
    assert len(res.history) == 4


def test_concat_features_trains_groups_holding_the_same_rows(trio, tmp_path):
    """Columns from separate stores (the targets in the first), one block per group."""
    X, y = _problem(n=1000, d=15)
    paths = []
    for k, (c0, c1) in enumerate([(0, 5), (5, 9), (9, 15)]):
        paths.append(str(tmp_path / f"part{k}.zarr"))
        write_zarr(paths[-1], X[:, c0:c1], y, chunk_rows=400)
    data = concat_features(paths)
    ref = _ridge(X, y, 0.01)
    res = fit(data, partition="features", optimizer="lbfgs", alpha=0.01, gtol=1e-9, tol=None,
              max_epochs=300, client=trio)  # fmt: skip
    assert res.converged_
    np.testing.assert_allclose(res.coef_, ref[:-1], atol=1e-7 * np.abs(ref).max())
    assert [b["columns"] for b in res.blocks_] == [(0, 5), (5, 9), (9, 15)]
    with pytest.raises(InvalidSettingError, match="partition='features'"):
        fit(data, client=trio)


def test_estimators_take_partition(trio, tmp_path):
    X, y = _problem(n=800, d=9)
    ref = _ridge(X, y, 0.0)
    est = LinearRegression(partition="features", client=trio).fit(X, y)
    np.testing.assert_allclose(est.coef_, ref[:-1], atol=1e-6 * np.abs(ref).max())
    labels = np.where(y > np.median(y), 1, 0)
    clf = LogisticRegression(C=1.0, partition="features", client=trio).fit(X, labels)
    rows = LogisticRegression(C=1.0, client=trio).fit(X, labels)
    np.testing.assert_allclose(clf.coef_, rows.coef_, atol=1e-4 * np.abs(rows.coef_).max())
    assert (clf.predict(X) == rows.predict(X)).mean() > 0.99


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"optimizer": "newton"}, "optimizer='newton'"),
        ({"mode": "async"}, "mode='async'"),
        ({"optimizer": "lbfgs", "batch_size": 10}, "batch_size"),
        ({"optimizer": "lbfgs", "alpha": 0.1, "l1_ratio": 0.5}, "smooth objective"),
        ({"checkpoint": "x.ckpt"}, "checkpoints"),
        ({"placement": "latency"}, "placement='latency'"),
        ({"partition": "grid", "batch_size": 10}, "partition=.grid."),
        ({"optimizer": "cocoa", "loss": "poisson"}, "curvature"),
        ({"optimizer": "cocoa", "loss": "hinge"}, "curvature"),
    ],
)
def test_what_feature_partitioning_does_not_run_is_refused(trio, settings, match):
    X, y = _problem(n=100, d=4)
    with pytest.raises(InvalidSettingError, match=match):
        fit((X, y), **{"partition": "features", **settings}, client=trio)


def test_a_diverging_learning_rate_is_an_error(trio):
    X, y = _problem(n=300, d=6)
    with pytest.raises(DivergenceError, match="learning_rate"):
        fit((X, y), partition="features", optimizer="sgd", learning_rate=10.0, max_epochs=50,
            client=trio)  # fmt: skip


def test_a_callback_stops_every_block_at_the_same_iterate(trio):
    X, y = _problem(n=300, d=6)
    res = fit((X, y), partition="features", optimizer="sgd", learning_rate=0.001, max_epochs=50,
              tol=None, callback=lambda row: row["epoch"] < 3, client=trio)  # fmt: skip
    assert "callback" in res.reason
    assert 3 <= res.n_iter_ <= 5


@pytest.mark.parametrize("source", ["zarr", "memory", "minibatch"])
def test_worker_killed_mid_fit_restarts_every_block(tmp_path, source, reliability):
    """kill -9 the worker of block 1: its task reruns elsewhere, every block restarts from
    the last iterate they all backed up, and the fit reaches the optimum."""
    X, y = _problem(n=1200, d=12, scales=False)
    ref = _ridge(X, y, 0.1)
    path = str(tmp_path / "kill.zarr")
    write_zarr(path, X, y, chunk_rows=400, chunk_cols=4)
    data = path if source != "memory" else (X, y)
    # block 1 reports late: the fit is still running when the kill lands, mid-iterate
    settings = dict(partition="features", alpha=0.1, tol=None, max_epochs=400,
                    delay={1: 0.05})  # fmt: skip
    if source == "minibatch":
        settings.update(optimizer="sgd", batch_size=100, learning_rate=0.01, max_epochs=40,
                        tol=1e-6, random_state=0)  # fmt: skip
    else:
        settings.update(optimizer="sgd", learning_rate=0.5, gtol=1e-8)
    with (
        LocalCluster(n_workers=3, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        out = fit_and_kill(c, data, settings, after_epoch=3,
                           victim=lambda c: runs_rank(c, 1, kind="block"))  # fmt: skip
        reliability.add("worker kills (kill -9), feature partitioning")
    assert "error" not in out, out.get("error")
    res = out["res"]
    assert res.recoveries_ and res.recoveries_[0]["rank"] == 1
    epochs = [h["epoch"] for h in res.history]  # a restart's replayed iterate is not repeated
    assert epochs == sorted(set(epochs))
    if source == "minibatch":
        assert res.history[-1]["loss"] < res.history[0]["loss"]
        np.testing.assert_allclose(res.coef_, ref[:-1], atol=0.05 * np.abs(ref).max())
    else:
        assert res.converged_, res.reason
        np.testing.assert_allclose(res.coef_, ref[:-1], atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize(("loss", "alpha", "l1_ratio"), [("squared_error", 0.1, 0.0),
                                                         ("log_loss", 0.01, 0.0),
                                                         ("squared_error", 0.2, 0.5)])  # fmt: skip
def test_block_method_converges_to_the_exact_optimum(trio, tmp_path, loss, alpha, l1_ratio):
    """optimizer='cocoa': local proximal steps between reductions; the objective decreases
    every round and the fit reaches the optimum (closed form, scipy, or gradient descent
    run to convergence for the elastic net)."""
    X, y = _problem(n=900, d=12, scales=False)
    if loss == "log_loss":
        y = np.where(y > np.median(y), 1.0, -1.0)
        ref = _logistic(X, y, alpha)
    elif l1_ratio:
        ref = fit((X, y), optimizer="sgd", learning_rate=0.3, alpha=alpha, l1_ratio=l1_ratio,
                  max_epochs=5000, tol=None, gtol=1e-12, client=trio)  # fmt: skip
        ref = np.append(ref.coef_, ref.intercept_)
    else:
        ref = _ridge(X, y, alpha)
    res = fit((X, y), loss=loss, partition="features", optimizer="cocoa", alpha=alpha,
              l1_ratio=l1_ratio, optimizer_options={"local_steps": 5}, gtol=1e-9, tol=None,
              max_epochs=3000, client=trio)  # fmt: skip
    assert res.converged_, res.reason
    losses = [h["loss"] for h in res.history]
    assert all(b <= a + 1e-12 * abs(a) for a, b in itertools.pairwise(losses))
    np.testing.assert_allclose(res.coef_, ref[:-1], atol=1e-6)
    assert res.intercept_ == pytest.approx(ref[-1], abs=1e-6)
    # one reduction of the margins per round (and one of its scalars)
    assert res.timings_["reductions"][0] <= 3 + 2 * res.n_iter_
    with pytest.raises(InvalidSettingError, match="partition='features'"):
        fit((X, y), optimizer="cocoa", client=trio)


def test_grid_gradient_descent_follows_the_row_partitioned_iterates(quad, tmp_path):
    """partition='grid': 2 row blocks x 2 column blocks; the same iterates as rows."""
    X, y = _problem(n=1200, d=10, scales=False)
    sw = np.random.default_rng(3).uniform(0.5, 2.0, len(y))
    path = str(tmp_path / "grid.zarr")
    write_zarr(path, X, y, sw, chunk_rows=300, chunk_cols=5)
    common = dict(optimizer="sgd", learning_rate=0.05, alpha=0.1, tol=None, client=quad)
    rows = fit(path, partition="rows", max_epochs=20, **common)
    grid = fit(path, partition="grid", max_epochs=20, **common)
    np.testing.assert_allclose(grid.coef_, rows.coef_, rtol=0, atol=1e-10)
    assert grid.intercept_ == pytest.approx(rows.intercept_, abs=1e-10)
    assert [(b["columns"], b["row_chunks"]) for b in grid.blocks_] == [
        ((0, 5), [0, 1]), ((5, 10), [0, 1]), ((0, 5), [2, 3]), ((5, 10), [2, 3])
    ]  # fmt: skip


def test_grid_of_concat_features_groups(quad, tmp_path):
    """A grid of groups from separate stores: the groups are its column blocks, runs of
    their (shared) row-chunks its row blocks; the same iterates as rows. Groups whose
    row-chunks differ are refused for a grid."""
    X, y = _problem(n=1200, d=10, scales=False)
    paths = []
    for k, (c0, c1) in enumerate([(0, 4), (4, 10)]):
        paths.append(str(tmp_path / f"part{k}.zarr"))
        write_zarr(paths[-1], X[:, c0:c1], y, chunk_rows=300)
    common = dict(optimizer="sgd", learning_rate=0.05, alpha=0.1, tol=None, client=quad)
    rows = fit((X, y), partition="rows", max_epochs=20, **common)
    grid = fit(concat_features(paths), partition="grid", max_epochs=20, **common)
    np.testing.assert_allclose(grid.coef_, rows.coef_, rtol=0, atol=1e-10)
    assert grid.intercept_ == pytest.approx(rows.intercept_, abs=1e-10)
    assert [(b["columns"], b["row_chunks"]) for b in grid.blocks_] == [
        ((0, 4), [0, 1]), ((4, 10), [0, 1]), ((0, 4), [2, 3]), ((4, 10), [2, 3])
    ]  # fmt: skip
    write_zarr(paths[1], X[:, 4:], y, chunk_rows=400, overwrite=True)
    with pytest.raises(InvalidSettingError, match="different row-chunks"):
        fit(concat_features(paths), partition="grid", client=quad)


@pytest.mark.parametrize("source", ["zarr", "memory"])
def test_grid_lbfgs_reaches_the_optimum(quad, tmp_path, source):
    X, y = _problem(n=1200, d=10)
    noise = np.random.default_rng(4).normal(0.0, 3.0 * y.std(), len(y))  # not separable
    labels = np.where(y + noise > np.median(y), 1.0, -1.0)
    path = str(tmp_path / "grid.zarr")
    write_zarr(path, X, labels, chunk_rows=300, chunk_cols=5, task="classification")
    ref = _logistic(X, labels, 0.01)
    res = fit(path if source == "zarr" else (X, labels), loss="log_loss", partition="grid",
              optimizer="lbfgs",
              alpha=0.01, gtol=1e-9, tol=None, max_epochs=500, client=quad)  # fmt: skip
    assert res.converged_, res.reason
    np.testing.assert_allclose(res.coef_, ref[:-1], atol=1e-5)
    assert res.intercept_ == pytest.approx(ref[-1], abs=1e-5)
    assert len({b["worker"] for b in res.blocks_}) == 4


def test_worker_killed_mid_fit_in_a_grid(tmp_path, reliability):
    X, y = _problem(n=1200, d=10, scales=False)
    ref = _ridge(X, y, 0.1)
    path = str(tmp_path / "kill.zarr")
    write_zarr(path, X, y, chunk_rows=300, chunk_cols=5)
    settings = dict(partition="grid", alpha=0.1, tol=None, max_epochs=400, optimizer="sgd",
                    learning_rate=0.5, gtol=1e-8, delay={3: 0.05})  # fmt: skip
    with (
        LocalCluster(n_workers=4, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        out = fit_and_kill(c, path, settings, after_epoch=3,
                           victim=lambda c: runs_rank(c, 3, kind="block"))  # fmt: skip
        reliability.add("worker kills (kill -9), feature partitioning")
    assert "error" not in out, out.get("error")
    res = out["res"]
    assert res.recoveries_ and res.recoveries_[0]["rank"] == 3
    assert res.converged_, res.reason
    np.testing.assert_allclose(res.coef_, ref[:-1], atol=1e-5 * np.abs(ref).max())


def test_bad_data_is_refused_before_training(trio, tmp_path):
    """Bad input for a feature-partitioned fit: a clear error, nothing trained."""
    X, y = _problem(n=300, d=6)
    three = np.arange(300) % 3
    with pytest.raises(DataValidationError, match="3 classes"):
        fit((X, three), loss="log_loss", partition="features", client=trio)
    bad = X.copy()
    bad[7, 2] = np.nan
    with pytest.raises(DataValidationError, match=r"NaN|non-finite|inf"):
        fit((bad, y), partition="features", client=trio)
    path = str(tmp_path / "gone.zarr")
    write_zarr(path, X, y, chunk_rows=100, chunk_cols=3)
    import shutil

    shutil.rmtree(f"{path}/X/c/1")  # a row of blocks deleted after the write
    with pytest.raises(DataValidationError, match="no chunk 1"):
        fit(path, partition="features", optimizer="lbfgs", client=trio)
