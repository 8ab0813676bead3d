"""Cross-validated paths (RidgeCV, ElasticNetCV, LogisticRegressionCV) against scikit-learn.

Real worker processes (the session LocalCluster), real Zarr stores on disk, the kernels.
scikit-learn's estimators are the oracle, given the same folds: whole row-chunks of the
dataset (``chunk_folds``), or scikit-learn's ``KFold(cv)`` blocks for numpy input.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import sklearn.linear_model as sk
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold

import daskgd
from daskgd.errors import DataValidationError
from daskgd.sklearn import ElasticNetCV, LogisticRegressionCV, RidgeCV
from daskgd.sklearn.cv_folds import chunk_folds


def _regression(n=400, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) + 1.0
    y = X @ rng.normal(size=d) + 0.8 * rng.normal(size=n) + 2.0
    return X, y


def _binary(n=400, d=5, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X @ rng.normal(size=d) + rng.logistic(size=n) > 0.3).astype(np.int64)
    return X, y


def _chunk_splits(n, rows, cv, **kw):
    """scikit-learn (train, test) index pairs for folds of whole row-chunks of ``rows``."""
    starts = np.arange(0, n, rows)
    fold_of = chunk_folds(len(starts), cv, **kw)
    chunk = np.minimum(np.arange(n) // rows, len(starts) - 1)
    return [
        (np.flatnonzero(fold_of[chunk] != k), np.flatnonzero(fold_of[chunk] == k))
        for k in range(cv)
    ]


def _sk_logistic_cv(X, y, splits, Cs, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's deprecations of 1.8+
        return sk.LogisticRegressionCV(
            Cs=Cs, cv=splits, solver="newton-cholesky", tol=1e-12, max_iter=200, **kw
        ).fit(X, y)


# -- RidgeCV ------------------------------------------------------------------------------


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("scoring", [None, "neg_mean_squared_error"])
def test_ridgecv_numpy_matches_sklearn(client, fit_intercept, scoring):
    X, y = _regression()
    alphas = np.logspace(-3, 3, 13)
    ours = RidgeCV(alphas=alphas, fit_intercept=fit_intercept, scoring=scoring).fit(X, y)
    theirs = sk.RidgeCV(
        alphas=alphas, fit_intercept=fit_intercept, scoring=scoring, cv=KFold(5)
    ).fit(X, y)
    assert ours.alpha_ == theirs.alpha_
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.intercept_[0], theirs.intercept_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.best_score_, theirs.best_score_, rtol=1e-8)
    assert ours.scores_.shape == (5, 13) and ours.mse_path_.shape == (13, 5)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), atol=1e-8)


def test_ridgecv_zarr_path_folds_of_chunks(client, tmp_path):
    X, y = _regression(n=430)
    path = str(tmp_path / "reg.zarr")
    daskgd.write_zarr(path, X, y, chunk_rows=40)  # 11 chunks
    alphas = [0.01, 0.3, 3.0, 30.0, 300.0]
    ours = RidgeCV(alphas=alphas, cv=4).fit(path)
    splits = _chunk_splits(len(y), 40, 4)
    theirs = sk.RidgeCV(alphas=alphas, cv=splits).fit(X, y)
    assert ours.alpha_ == theirs.alpha_
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.intercept_[0], theirs.intercept_, rtol=0, atol=1e-8)
    # a lazy prediction for lazy input
    assert isinstance(ours.predict(path), da.Array)


def test_ridgecv_sample_weight_is_weighted_ridge(client):
    X, y = _regression(n=300)
    sw = np.random.default_rng(3).uniform(0.1, 2.0, size=300)
    Xd, yd, wd = (da.from_array(a, chunks=50) for a in (X, y, sw))
    ours = RidgeCV(alphas=[2.5], cv=3).fit(Xd, yd, sample_weight=wd)
    theirs = sk.Ridge(alpha=2.5).fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.intercept_[0], theirs.intercept_, rtol=0, atol=1e-8)


# -- ElasticNetCV -------------------------------------------------------------------------


def test_elasticnetcv_numpy_matches_sklearn(client):
    X, y = _regression(d=8)
    kw = {"l1_ratio": [0.2, 0.7, 1.0], "alphas": 30, "tol": 1e-12, "max_iter": 100_000}
    ours = ElasticNetCV(**kw).fit(X, y)
    theirs = sk.ElasticNetCV(cv=KFold(5), **kw).fit(X, y)
    assert ours.l1_ratio_ == theirs.l1_ratio_
    np.testing.assert_allclose(ours.alpha_, theirs.alpha_, rtol=1e-12)
    np.testing.assert_allclose(ours.alphas_, theirs.alphas_, rtol=1e-12)
    np.testing.assert_allclose(ours.mse_path_, theirs.mse_path_, rtol=1e-6)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.intercept_[0], theirs.intercept_, rtol=0, atol=1e-6)
    assert ours.converged_


def test_elasticnetcv_zarr_and_given_alphas(client, tmp_path):
    X, y = _regression(n=360, d=7, seed=5)
    path = str(tmp_path / "enet.zarr")
    daskgd.write_zarr(path, X, y, chunk_rows=30)  # 12 chunks
    alphas = [0.001, 0.01, 0.1, 1.0]  # sorted largest first, as scikit-learn
    ours = ElasticNetCV(
        alphas=alphas, l1_ratio=0.5, tol=1e-12, max_iter=100_000, cv=3, shuffle=True, random_state=0
    ).fit(path)
    splits = _chunk_splits(len(y), 30, 3, shuffle=True, random_state=0)
    theirs = sk.ElasticNetCV(
        alphas=alphas, l1_ratio=0.5, tol=1e-12, max_iter=100_000, cv=splits
    ).fit(X, y)
    assert ours.alpha_ == theirs.alpha_
    np.testing.assert_allclose(ours.alphas_, theirs.alphas_)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.intercept_[0], theirs.intercept_, rtol=0, atol=1e-6)


def test_elasticnetcv_lasso_gives_exact_zeros(client):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 10))
    y = X[:, 0] * 3 - X[:, 1] * 2 + 0.1 * rng.normal(size=300)
    est = ElasticNetCV(l1_ratio=1.0, alphas=[0.5], cv=3).fit(X, y)
    theirs = sk.Lasso(alpha=0.5, tol=1e-4).fit(X, y)
    assert np.count_nonzero(est.coef_) == np.count_nonzero(theirs.coef_) == 2
    np.testing.assert_allclose(est.coef_, theirs.coef_, atol=1e-4)


# -- LogisticRegressionCV -----------------------------------------------------------------


def test_logisticregressioncv_numpy_matches_sklearn(client):
    X, y = _binary()
    ours = LogisticRegressionCV(Cs=8, tol=1e-10).fit(X, y)
    theirs = _sk_logistic_cv(X, y, list(KFold(5).split(X)), 8)
    np.testing.assert_allclose(ours.C_, theirs.C_, rtol=1e-12)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.scores_[1], theirs.scores_[1].reshape(5, 8))
    np.testing.assert_allclose(
        ours.coefs_paths_[1], theirs.coefs_paths_[1].reshape(5, 8, -1), atol=1e-5
    )
    assert ours.converged_ and ours.n_iter_.shape == (1, 5, 8)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_logisticregressioncv_zarr_labels_scoring_and_no_refit(client, tmp_path):
    X, y = _binary(n=420, d=4, seed=7)
    labels = np.where(y == 1, 7, 3)
    path = str(tmp_path / "clf.zarr")
    daskgd.write_zarr(path, X, labels, chunk_rows=35)  # 12 chunks
    Cs = [0.01, 0.1, 1.0, 10.0]
    splits = _chunk_splits(len(y), 35, 4)
    for refit in (True, False):
        ours = LogisticRegressionCV(
            Cs=Cs, cv=4, scoring="neg_log_loss", tol=1e-10, refit=refit
        ).fit(path)
        theirs = _sk_logistic_cv(X, labels, splits, Cs, scoring="neg_log_loss", refit=refit)
        np.testing.assert_array_equal(ours.classes_, [3, 7])
        np.testing.assert_allclose(ours.C_, theirs.C_, rtol=1e-12)
        np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=0, atol=1e-5)
        np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=0, atol=1e-5)
        np.testing.assert_allclose(ours.scores_[7], theirs.scores_[7].reshape(4, 4), rtol=1e-6)


def _enet_logistic_optimum(X, t, C, r):
    """scipy's L-BFGS-B on scikit-learn's elastic-net objective, w split as u - v (u, v >= 0):
    the oracle (saga, scikit-learn's solver for it, stops 1e-2 short on the intercept of a
    model the L1 part zeroes)."""
    from scipy.optimize import minimize

    d = X.shape[1]

    def f(z):
        w, b = z[:d] - z[d : 2 * d], z[-1]
        m = t * (X @ w + b)
        s = -t * 0.5 * (1.0 - np.tanh(0.5 * m))  # derivative of log(1 + exp(-m))
        F = C * np.logaddexp(0.0, -m).sum() + r * z[: 2 * d].sum() + 0.5 * (1 - r) * w @ w
        gw = C * (X.T @ s) + (1 - r) * w
        return F, np.concatenate([gw + r, -gw + r, [C * s.sum()]])

    bounds = [(0, None)] * (2 * d) + [(None, None)]
    z = minimize(f, np.zeros(2 * d + 1), jac=True, method="L-BFGS-B", bounds=bounds,
                 options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000}).x  # fmt: skip
    return np.append(z[:d] - z[d : 2 * d], z[-1])


def test_logisticregressioncv_elastic_net_matches_the_optimum(client):
    """l1_ratios: every fold x C x l1_ratio at the elastic-net optimum (scipy's oracle, same
    folds, scikit-learn's objective), in scikit-learn's layouts (its saga fit's shapes);
    exact zeros where the L1 part holds a weight at zero."""
    X, y = _binary(n=400, d=6, seed=4)
    X[:, 5] = 0.01 * X[:, 5]  # a weak feature that the L1 part zeroes
    Cs, ratios = [0.01, 0.1, 1.0], [0.0, 0.5, 1.0]
    splits = list(KFold(3).split(X))
    ours = LogisticRegressionCV(Cs=Cs, l1_ratios=ratios, cv=3, tol=1e-10).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sk.LogisticRegressionCV(
            Cs=Cs, l1_ratios=ratios, cv=splits, solver="saga", tol=1e-6, max_iter=10_000
        ).fit(X, y)
    got = ours.coefs_paths_[1]
    assert got.shape == theirs.coefs_paths_[1].shape == (3, 3, 3, 7)
    assert ours.scores_[1].shape == theirs.scores_[1].shape == (3, 3, 3)
    assert ours.n_iter_.shape == (1, 3, 3, 3)
    t = np.where(y == 1, 1.0, -1.0)
    for k, (train, _) in enumerate(splits):
        for i, C in enumerate(Cs):
            for j, r in enumerate(ratios):
                want = _enet_logistic_optimum(X[train], t[train], C, r)
                np.testing.assert_allclose(got[k, i, j], want, atol=1e-6)
    mean = ours.scores_[1].mean(axis=0)  # (n_cs, n_l1): the first best, C major
    i, j = np.unravel_index(np.argmax(mean), mean.shape)
    assert ours.C_[0] == Cs[i] and ours.l1_ratio_[0] == ratios[j]
    want = _enet_logistic_optimum(X, t, Cs[i], ratios[j])
    np.testing.assert_allclose(ours.coef_[0], want[:6], atol=1e-6)
    assert np.all(got[:, 0, 2, :6] == 0.0)  # C = 0.01, pure L1: every weight exactly 0
    assert ours.converged_
    # penalty="l1" alone is l1_ratios=[1.0], in the layouts without l1_ratios
    lasso = LogisticRegressionCV(Cs=Cs, penalty="l1", cv=3, tol=1e-10).fit(X, y)
    np.testing.assert_allclose(lasso.coefs_paths_[1], got[:, :, 2], atol=1e-8)
    assert lasso.scores_[1].shape == (3, 3) and lasso.l1_ratio_[0] is None


def test_logisticregressioncv_hessian_from_a_sample_of_rows(client):
    # chunks of 9,000 rows: the shared Hessian comes from every 8th row; the gradient and
    # the stopping rule stay exact, so the optimum does too
    X, y = _binary(n=27_000, d=3, seed=11)
    ours = LogisticRegressionCV(Cs=[0.001, 0.1, 10.0], cv=3, tol=1e-10).fit(X, y)
    theirs = _sk_logistic_cv(X, y, list(KFold(3).split(X)), [0.001, 0.1, 10.0])
    np.testing.assert_allclose(
        ours.coefs_paths_[1], theirs.coefs_paths_[1].reshape(3, 3, -1), atol=1e-6
    )
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=0, atol=1e-6)
    assert ours.converged_


def test_logisticregressioncv_any_scorer_on_the_workers(client):
    X, y = _binary(n=300, seed=9)
    ours = LogisticRegressionCV(Cs=5, cv=3, scoring="roc_auc", tol=1e-10).fit(X, y)
    theirs = _sk_logistic_cv(X, y, list(KFold(3).split(X)), 5, scoring="roc_auc")
    np.testing.assert_allclose(ours.scores_[1], theirs.scores_[1].reshape(3, 5), rtol=1e-10)
    np.testing.assert_allclose(ours.C_, theirs.C_)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=0, atol=1e-5)


def test_logisticregressioncv_weights_match_weighted_fit(client):
    X, y = _binary(n=300, seed=4)
    sw = np.random.default_rng(4).uniform(0.2, 3.0, size=300)
    ours = LogisticRegressionCV(Cs=[0.7], cv=3, tol=1e-10, fit_intercept=False).fit(
        da.from_array(X, chunks=60), da.from_array(y, chunks=60), sample_weight=sw
    )
    theirs = sk.LogisticRegression(
        C=0.7, solver="newton-cholesky", tol=1e-12, fit_intercept=False
    ).fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=0, atol=1e-6)
    assert ours.intercept_[0] == 0.0


def test_float32_clone_and_pickle(client):
    import pickle

    from sklearn.base import clone

    X, y = _binary(n=400, d=4, seed=12)
    Xd = da.from_array(X.astype(np.float32), chunks=50)
    est = LogisticRegressionCV(Cs=[0.1, 1.0], cv=4, tol=1e-8, client=client)
    with warnings.catch_warnings():
        # tol=1e-8 may be below what float32 sums resolve: a C stops at that floor, warned
        warnings.simplefilter("ignore", ConvergenceWarning)
        f32 = clone(est).fit(Xd, da.from_array(y, chunks=50))
    assert f32.n_passes_ < 100  # the rounding floor ends a C; no endless line searches
    f64 = clone(est).fit(X, y)
    np.testing.assert_allclose(f32.coef_, f64.coef_, rtol=1e-4, atol=1e-5)
    back = pickle.loads(pickle.dumps(f32))
    assert back.client is None
    np.testing.assert_array_equal(back.predict(X), f32.predict(X))
    Xr, yr = _regression(n=400, d=4)
    r32 = RidgeCV(alphas=[1.0], cv=4).fit(
        da.from_array(Xr.astype(np.float32), chunks=50),
        da.from_array(yr.astype(np.float32), chunks=50),
    )
    r64 = RidgeCV(alphas=[1.0], cv=4).fit(Xr, yr)
    np.testing.assert_allclose(r32.coef_, r64.coef_, rtol=1e-4, atol=1e-5)


def test_elasticnetcv_warns_when_unconverged(client):
    X, y = _regression(n=200, d=8)
    with pytest.warns(ConvergenceWarning, match="did not"):
        est = ElasticNetCV(alphas=[1e-4], l1_ratio=0.5, max_iter=1, tol=1e-14, cv=2).fit(X, y)
    assert not est.converged_


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("est", "match"),
    [
        (RidgeCV(alphas=[]), "alphas must be a non-empty"),
        (RidgeCV(alphas=[1.0, -0.5]), r"alphas\[1\] is -0.5"),
        (RidgeCV(alphas=[0.0]), "finite and > 0"),
        (ElasticNetCV(alphas=[]), "alphas must be a non-empty"),
        (ElasticNetCV(alphas=[0.1, -1.0]), "finite and >= 0"),
        (ElasticNetCV(alphas=0), "positive number of alphas"),
        (ElasticNetCV(l1_ratio=[]), "l1_ratio must be"),
        (LogisticRegressionCV(Cs=[]), "Cs must be a non-empty"),
        (LogisticRegressionCV(Cs=[1.0, -1.0]), r"Cs\[1\] is -1.0"),
        (LogisticRegressionCV(Cs=0), "positive number of Cs"),
        (RidgeCV(cv=1), "cv must be an integer >= 2"),
        (LogisticRegressionCV(penalty="none"), "penalty must be one of"),
        (LogisticRegressionCV(penalty="elasticnet"), "needs l1_ratios"),
        (LogisticRegressionCV(l1_ratios=[]), "l1_ratios must be a non-empty"),
        (LogisticRegressionCV(l1_ratios=[0.5, 1.5]), "l1_ratios must be a non-empty"),
    ],
)
def test_bad_grids_and_settings(client, est, match):
    X, y = _binary(n=60)
    with pytest.raises(ValueError, match=match):
        est.fit(X, y)


def test_more_folds_than_chunks_says_how_to_rechunk(client, tmp_path):
    X, y = _regression(n=90)
    path = str(tmp_path / "few.zarr")
    daskgd.write_zarr(path, X, y, chunk_rows=30)  # 3 chunks
    with pytest.raises(
        ValueError,
        match=r"cv=5 folds need at least 5 row-chunks.*3.*"
        r"write_zarr\(\.\.\., chunk_rows=18\)",
    ):
        RidgeCV().fit(path)
    with pytest.raises(ValueError, match=r"X\.rechunk\(\{0: 18\}\)"):
        ElasticNetCV().fit(da.from_array(X, chunks=45), da.from_array(y, chunks=45))


def test_bad_labels_and_values(client):
    X, y = _binary(n=100)
    with pytest.raises(ValueError, match="binary problems only"):
        LogisticRegressionCV(Cs=2).fit(X, np.arange(100) % 3)
    with pytest.raises(ValueError, match=r"Unknown label type|continuous"):
        LogisticRegressionCV(Cs=2).fit(X, X[:, 0])
    with pytest.raises(DataValidationError, match="continuous"):
        LogisticRegressionCV(Cs=2).fit(
            da.from_array(X, chunks=20), da.from_array(X[:, 0], chunks=20)
        )
    with pytest.raises(ValueError, match="at least 2 classes"):
        LogisticRegressionCV(Cs=2).fit(X, np.zeros(100))
    bad = X.copy()
    bad[57, 1] = np.nan
    with pytest.raises(DataValidationError, match="NaN or infinite values in row-chunk 2"):
        RidgeCV().fit(da.from_array(bad, chunks=20), da.from_array(y * 1.0, chunks=20))


def test_workers_of_a_cross_validation_do_not_import_scikit_learn():
    """What the workers unpickle (chunk reading, Gram statistics, the path's evaluators)
    imports numpy and the kernels only: scikit-learn costs a fresh worker ~1.5 s."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import daskgd.sklearn.cv_chunks, daskgd.sklearn.cv_gram, daskgd.sklearn.cv_tasks\n"
        "import daskgd.sklearn.glm_start\n"
        "assert 'sklearn' not in sys.modules, 'scikit-learn imported'\n"
        "from daskgd.sklearn import LogisticRegressionCV\n"
        "assert 'sklearn' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
