"""Full-batch L-BFGS scaled by the data's column squares (``optimizer_options``'s
``precondition``): the same optimum as scipy's, in far fewer passes on columns of very
different scales, dense or sparse, from memory or streamed from Zarr."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize
from scipy.special import log_expit

import daskgd
from daskgd.driver import fit
from daskgd.worker.batches import column_squares


def _optimum(A, y, alpha, sw=None):
    """scipy's optimum of daskgd's weighted mean log loss + alpha/2 ||w||^2, intercept last."""
    A1 = sp.hstack([sp.csr_array(A), np.ones((A.shape[0], 1))]).tocsr()
    s, w = 2 * y - 1, np.ones(len(y)) if sw is None else sw

    def f(p):
        z = s * (A1 @ p)
        g = A1.T @ (-s * w * np.exp(log_expit(-z))) / w.sum()
        g[:-1] += alpha * p[:-1]
        return -(w * log_expit(z)).sum() / w.sum() + 0.5 * alpha * p[:-1] @ p[:-1], g

    return minimize(f, np.zeros(A1.shape[1]), jac=True, method="L-BFGS-B",
                    options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 100_000}).x  # fmt: skip


def _params(res):
    return np.concatenate([np.ravel(res.coef_), np.ravel(res.intercept_)])


def test_column_squares_are_the_diagonal_of_the_weighted_gram_matrix():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(9000, 5)).astype(np.float32)  # more rows than one block
    sw = rng.uniform(0.5, 2.0, size=9000)
    A = np.column_stack([X.astype(np.float64), np.ones(9000)])
    want = np.einsum("ij,ij,i->j", A, A, sw)
    pieces = [(X[:4000], None, sw[:4000], None), (X[4000:], None, sw[4000:], None)]
    np.testing.assert_allclose(column_squares(pieces, 5), want, rtol=1e-12)
    csr = sp.csr_array(np.where(rng.random((300, 7)) < 0.2, rng.normal(size=(300, 7)), 0.0))
    D = csr.toarray()
    np.testing.assert_allclose(column_squares([(csr, None, None, None)], 7),
                               [*np.sum(D * D, axis=0), 300.0], rtol=1e-12)  # fmt: skip


def test_badly_scaled_columns_reach_the_optimum_in_few_passes(client):
    rng = np.random.default_rng(1)
    n, d, alpha = 4000, 12, 1e-4
    scale = np.logspace(-2, 2, d)
    X = rng.normal(size=(n, d)) * scale
    y = (X @ (rng.normal(size=d) / scale) + rng.normal(size=n) > 0).astype(float)
    sw = rng.uniform(0.5, 2.0, size=n)
    kw = {"optimizer": "lbfgs", "loss": "log_loss", "alpha": alpha, "tol": None,
          "gtol": 1e-9, "max_epochs": 400}  # fmt: skip
    sol = _optimum(X, y, alpha, sw)
    pre = fit((X, y, sw), client=client, **kw)
    assert pre.converged_ and pre.n_iter_ < 60
    np.testing.assert_allclose(_params(pre), sol, rtol=1e-5, atol=1e-7)
    plain = fit((X, y, sw), client=client, optimizer_options={"precondition": False}, **kw)
    assert plain.n_iter_ > 3 * pre.n_iter_  # what the preconditioner saves


def test_power_law_sparse_columns_from_zarr(client, tmp_path):
    path = str(tmp_path / "s.zarr")
    daskgd.make_sparse_classification(path, n_samples=3000, n_features=2**12, nnz_per_row=15,
                                      chunk_rows=1000, random_state=0)  # fmt: skip
    ds = daskgd.open_zarr(path)
    X = sp.vstack([daskgd.load_chunk(path, i)[0] for i in range(len(ds.chunks))]).tocsr()
    y = np.asarray(ds.y, dtype=np.float64)
    alpha = 1e-3
    sol = _optimum(X, y, alpha)
    for out_of_core in (False, True):
        # float32 values: the gradients' float32 sums end near 1e-6
        res = fit(path, client=client, optimizer="lbfgs", loss="log_loss", alpha=alpha,
                  tol=None, gtol=1e-5, max_epochs=300, out_of_core=out_of_core)  # fmt: skip
        assert res.converged_ and res.n_iter_ < 60
        np.testing.assert_allclose(_params(res), sol, atol=1e-3)
