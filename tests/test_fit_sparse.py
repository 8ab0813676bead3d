"""Training on sparse (CSR) data: the functional API and the estimators, on real workers.

A sparse fit must equal the dense fit of the same rows (the kernels are exact, the
batches and the steps the same), from scipy input, from a dask array of CSR blocks and from
a CSR Zarr group, in memory and streamed; and it must never densify ``X``.
"""

from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp

import daskgd
from daskgd.driver import fit
from daskgd.errors import DataValidationError, InvalidSettingError


def _problem(n: int = 600, d: int = 40, density: float = 0.1, classes: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    Xs = sp.random(n, d, density=density, format="csr", random_state=seed, dtype=np.float64)
    Xs.data = rng.standard_normal(Xs.nnz)
    w = rng.standard_normal((d, classes if classes > 2 else 1))
    margins = Xs @ w + 0.3 * rng.standard_normal((n, w.shape[1]))
    if classes > 2:
        return Xs, np.argmax(margins, axis=1).astype(np.float64)
    return Xs, np.where(margins[:, 0] > 0, 1.0, -1.0)


FULL_BATCH = [
    dict(loss="log_loss", optimizer="lbfgs", alpha=1e-2),
    dict(loss="squared_error", optimizer="sgd", alpha=1e-3, learning_rate=0.1),
    dict(loss="log_loss", optimizer="lbfgs", alpha=1e-2, n_classes=3),
    dict(loss="huber", optimizer="lbfgs", alpha=1e-2),
]


@pytest.mark.parametrize("settings", FULL_BATCH, ids=lambda s: f"{s['loss']}-{s['optimizer']}")
def test_full_batch_sparse_fit_equals_dense(client, settings):
    Xs, y = _problem(classes=settings.get("n_classes") or 2)
    if settings["loss"] != "log_loss":
        y = Xs @ np.linspace(-1.0, 1.0, Xs.shape[1]) + 0.5
    kw = dict(client=client, max_epochs=30, tol=None, random_state=0, **settings)
    sparse, dense = fit((Xs, y), **kw), fit((Xs.toarray(), y), **kw)
    assert sparse.n_iter_ == dense.n_iter_
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sparse.intercept_, dense.intercept_, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_mini_batch_sparse_fit_equals_dense(client, mode):
    Xs, y = _problem()
    kw = dict(client=client, loss="log_loss", optimizer="adagrad", learning_rate=0.5,
              batch_size=50, max_epochs=4, tol=None, random_state=3, mode=mode,
              n_workers=1 if mode == "async" else None)  # fmt: skip
    sparse, dense = fit((Xs, y), **kw), fit((Xs.toarray(), y), **kw)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-10, atol=1e-12)
    assert [r["loss"] for r in sparse.history] == pytest.approx(
        [r["loss"] for r in dense.history], rel=1e-10
    )


def test_sparse_zarr_dask_and_streamed_fits_agree(client, tmp_path):
    Xs, y = _problem(n=900)
    path = tmp_path / "sparse.zarr"
    daskgd.write_zarr(path, Xs, y, chunk_rows=200, task="classification")
    ds = daskgd.open_zarr(path)
    assert ds.is_sparse and ds.nnz == Xs.nnz
    kw = dict(client=client, loss="log_loss", optimizer="lbfgs", alpha=1e-2, max_epochs=25,
              tol=None)  # fmt: skip
    ref = fit((Xs, y), **kw)
    Xd = da.from_array(Xs, chunks=(300, Xs.shape[1]), asarray=False)
    for data, extra in (
        (str(path), {}),
        (str(path), {"out_of_core": True}),
        ((Xd, da.from_array(y, chunks=300)), {}),
    ):
        got = fit(data, **kw, **extra)
        np.testing.assert_allclose(got.coef_, ref.coef_, rtol=1e-9, atol=1e-11)


def test_auto_learning_rate_on_sparse_rows(client):
    # the step 1/L from the sparse rows' curvature: the same as from the dense rows
    Xs, y = _problem()
    kw = dict(client=client, loss="log_loss", optimizer="sgd", max_epochs=5, tol=None,
              learning_rate="auto")  # fmt: skip
    sparse, dense = fit((Xs, y), **kw), fit((Xs.toarray(), y), **kw)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-9, atol=1e-12)


def test_wide_sparse_data_trains_without_densifying(client, tmp_path):
    # 20,000 x 2**20: its dense form (84 GB in float32) would not fit in this machine's memory
    path = tmp_path / "wide.zarr"
    ds = daskgd.make_sparse_classification(
        path,
        20_000,
        n_features=2**20,
        nnz_per_row=20,
        chunk_rows=5_000,
        random_state=0,
        client=client,
    )
    assert ds.is_sparse and ds.n_features == 2**20 and ds.nnz == 20_000 * 20
    got = fit(str(path), client=client, loss="log_loss", optimizer="lbfgs", alpha=1e-4,
              max_epochs=8, tol=None)  # fmt: skip
    losses = [r["loss"] for r in got.history]
    assert got.coef_.shape == (2**20,) and np.all(np.isfinite(got.coef_))
    # each point it accepts is lower (a trial point it backtracks from may not be)
    best = list(itertools.accumulate(losses, min))
    assert best[-1] < 0.85 * losses[0] and got.n_iter_ == len(losses)


def test_estimators_on_scipy_sparse_input(client):
    Xs, y = _problem()
    X = Xs.toarray()
    for make, rtol in (
        # LogisticRegression: L-BFGS on sparse X, Newton on dense, each to its tolerance
        (lambda: daskgd.LogisticRegression(client=client, C=10.0), 1e-6),
        (lambda: daskgd.SGDClassifier(client=client, loss="log_loss", max_iter=5,
                                      random_state=0, tol=None), 1e-8),
    ):  # fmt: skip
        a, b = make().fit(Xs, y), make().fit(X, y)
        np.testing.assert_allclose(a.coef_, b.coef_, rtol=rtol, atol=rtol * 1e-2)
        for method in ("decision_function", "predict", "predict_proba"):
            np.testing.assert_allclose(getattr(a, method)(Xs), getattr(b, method)(X),
                                       rtol=1e-6, atol=1e-7)  # fmt: skip
        lazy = a.decision_function(da.from_array(Xs, chunks=(200, X.shape[1]), asarray=False))
        np.testing.assert_allclose(lazy.compute(), a.decision_function(Xs), rtol=1e-12)
    yr = Xs @ np.linspace(0.0, 1.0, X.shape[1])
    for make in (
        lambda: daskgd.LinearRegression(client=client, tol=1e-10),
        lambda: daskgd.PoissonRegressor(client=client, alpha=1e-2, tol=1e-10),
    ):
        target = np.exp(yr / 4) if "Poisson" in repr(make()) else yr
        a, b = make().fit(Xs, target), make().fit(X, target)
        np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(a.predict(Xs), b.predict(X), rtol=1e-6, atol=1e-8)


def test_sparse_refusals(client, tmp_path):
    Xs, y = _problem()
    with pytest.raises(InvalidSettingError, match="optimizer='newton' needs dense data"):
        fit((Xs, y), client=client, loss="log_loss", optimizer="newton", max_epochs=2)
    # optimizer="auto" on sparse data is never Newton
    auto = fit((Xs, y), client=client, loss="log_loss", optimizer="auto", max_epochs=3, tol=None)
    assert np.all(np.isfinite(auto.coef_))
    with pytest.raises(DataValidationError, match="y is a sparse"):
        fit((Xs, sp.csr_matrix(y[:, None])), client=client, max_epochs=1)
    # other scipy formats are converted to CSR where the data is taken in (never densified)
    kw = dict(client=client, loss="log_loss", optimizer="lbfgs", max_epochs=5, tol=None)
    np.testing.assert_array_equal(fit((Xs.tocsc(), y), **kw).coef_, fit((Xs, y), **kw).coef_)


def test_a_partition_too_large_for_its_worker_is_refused_before_training(client, tmp_path):
    # 4 GB of (virtual, never computed) rows per worker against 2 GiB memory limits
    X = da.zeros((10_000_000, 100), chunks=(2_500_000, 100))
    y = da.ones(10_000_000, chunks=2_500_000)
    with pytest.raises(DataValidationError, match=r"cannot hold its partition \(row-chunks 0\.\.1"):
        fit((X, y), client=client, validate=False, max_epochs=1)


def test_the_memory_estimate_of_sparse_partitions(tmp_path):
    from daskgd.driver.placement import check_memory, partition_bytes

    Xs, y = _problem(n=1000, d=50)
    daskgd.write_zarr(tmp_path / "s.zarr", Xs, y, chunk_rows=250, task="classification")
    ds = daskgd.open_zarr(tmp_path / "s.zarr")
    # values and 32-bit indices of the partition's share of the non-zeros, its index pointer
    # and y
    assert partition_bytes(ds, 500, 1) == pytest.approx(ds.nnz / 2 * 12 + 8 * 501 + 8 * 500)
    plan = {"w1": [0, 1], "w2": [2, 3]}
    need = partition_bytes(ds, 500, 2)
    check_memory(ds, plan, {"w1": need / 0.6 + 1, "w2": 0}, streamed=False, mini_batch=True)
    with pytest.raises(DataValidationError, match=r"worker w1 .* out_of_core=True"):
        check_memory(ds, plan, {"w1": need / 0.6 - 1}, streamed=False, mini_batch=True)
    # streamed: one row-chunk at a time
    check_memory(ds, plan, {"w1": need / 0.6 - 1}, streamed=True, mini_batch=True)


def test_float32_sparse_curvature_equals_dense():
    from daskgd.worker.batches import Gram

    Xs, _ = _problem(n=3000, d=30, density=0.3)
    Xs = Xs.astype(np.float32)
    sw = np.random.default_rng(1).uniform(0.5, 2.0, Xs.shape[0])
    for intercept in (True, False):
        sparse, dense = Gram(30, intercept), Gram(30, intercept)
        sparse.add(Xs, sw)
        dense.add(Xs.toarray(), sw)
        assert sparse.sq == pytest.approx(dense.sq, rel=1e-13)
        np.testing.assert_allclose(sparse.G, dense.G, rtol=1e-12, atol=1e-9)


def test_a_matrix_edited_after_scipy_marked_it_canonical_is_written_sorted(tmp_path):
    # scipy caches has_canonical_format: indices edited in place afterwards are still sorted
    # (and the stored dataset readable), not trusted to the stale flag
    Y = sp.csr_matrix((np.r_[1.0, 2, 3, 4], np.r_[0, 2, 1, 3], np.r_[0, 2, 4]), shape=(2, 4))
    assert Y.has_canonical_format
    Y.indices[:2] = [2, 0]
    daskgd.write_zarr(tmp_path / "y.zarr", Y, np.zeros(2))
    back = daskgd.open_zarr(tmp_path / "y.zarr").X.compute()
    np.testing.assert_array_equal(back.toarray(), Y.toarray())
