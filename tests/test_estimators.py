"""The scikit-learn estimators on a real LocalCluster: scikit-learn's checks, parity with
scikit-learn's own estimators, dask/Zarr input, pickling, partial_fit and warm starts."""

from __future__ import annotations

import pickle

import dask.array as da
import numpy as np
import pytest
from distributed import Client
from sklearn import linear_model as sk
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from daskgd import (
    LinearRegression,
    LogisticRegression,
    SGDClassifier,
    SGDRegressor,
    history_to_json,
    write_zarr,
)


@pytest.fixture(scope="module", autouse=True)
def default_client(cluster):
    """Every estimator in this module fits on the session cluster (client=None)."""
    with Client(cluster, set_as_default=True) as c:
        yield c


# -- scikit-learn's estimator checks -----------------------------------------------------------

# Checks that cannot pass, with the reason (the estimators are otherwise checked in full).
_XFAIL = {
    # Class weights {0: 1000, others: 1e-4} with the hinge loss, one-vs-rest. daskgd minimises
    # the weight-normalised objective (scikit-learn SGD's), where rows of weight 1e-4 count
    # for less than the L2 penalty: the binary "class 1 vs rest" model only has to push the
    # class-0 rows below -1 and leaves the other margins free, so the argmax over the
    # one-vs-rest margins does not favour class 0 as the check demands (> 87 %). scikit-learn
    # passes through its per-sample step sizes that scale with the weight, not the optimum.
    ("SGDClassifier", "check_class_weight_classifiers"): "OvR margins under extreme weights",
}


def _expected_failed_checks(est):
    name = type(est).__name__
    return {check: why for (n, check), why in _XFAIL.items() if n == name}


@parametrize_with_checks(
    [
        SGDRegressor(verbose=0, max_iter=100, random_state=0),
        LinearRegression(verbose=0, max_iter=500),
        SGDClassifier(verbose=0, max_iter=100, random_state=0),
        LogisticRegression(verbose=0, max_iter=300),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# -- the same optimum as scikit-learn ------------------------------------------------------------


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


def test_linear_regression_matches_sklearn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    y = X @ rng.normal(size=5) + 0.3 + 0.1 * rng.normal(size=400)
    ours = LinearRegression(verbose=0, tol=None, max_iter=400).fit(X, y)
    ref = sk.LinearRegression().fit(X, y)
    assert _rel(ours.coef_, ref.coef_) < 1e-6
    assert abs(ours.intercept_[0] - ref.intercept_) < 1e-6
    assert ours.score(X, y) == pytest.approx(ref.score(X, y), rel=1e-9)


def test_logistic_regression_l2_matches_sklearn_lbfgs():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4))
    y = (X @ [1.0, -2.0, 0.5, 0.0] + 0.5 * rng.normal(size=300) > 0).astype(int)
    ours = LogisticRegression(C=0.5, verbose=0, tol=None, max_iter=800).fit(X, y)
    ref = sk.LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit(X, y)
    coef = np.r_[ours.coef_.ravel(), ours.intercept_]
    coef_ref = np.r_[ref.coef_.ravel(), ref.intercept_]
    assert _rel(coef, coef_ref) < 1e-6
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)


def test_multinomial_logistic_regression_with_string_labels():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 3))
    y = np.array(["ant", "bee", "cat"])[np.argmax(X @ rng.normal(size=(3, 3)), axis=1)]
    ours = LogisticRegression(verbose=0, tol=None, max_iter=1000).fit(X, y)
    ref = sk.LogisticRegression(tol=1e-12, max_iter=10_000).fit(X, y)
    assert ours.coef_.shape == (3, 3) and list(ours.classes_) == ["ant", "bee", "cat"]
    # softmax coefficients are identified up to a common shift: compare probabilities
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-4)
    assert (ours.predict(X) == ref.predict(X)).mean() > 0.99


# -- dask and Zarr input, pickling, partial_fit, the client -----------------------------------


def test_dask_and_zarr_input_give_lazy_results(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 3))
    y = np.where(X @ [1.0, 1.0, -1.0] > 0, "yes", "no")
    Xd, yd = da.from_array(X, chunks=150), da.from_array(y, chunks=150)
    clf = SGDClassifier(loss="log_loss", verbose=0, max_iter=30, random_state=0).fit(Xd, yd)
    pred = clf.predict(Xd)
    assert isinstance(pred, da.Array) and isinstance(clf.predict_proba(Xd), da.Array)
    np.testing.assert_array_equal(pred.compute(), clf.predict(X))
    assert isinstance(clf.score(Xd, yd), da.Array) and clf.score(Xd, yd).compute() > 0.9

    yr = X @ [1.0, 2.0, 3.0]
    path = tmp_path / "r.zarr"
    write_zarr(path, X, yr, chunk_rows=150)
    reg = LinearRegression(verbose=0, max_iter=300).fit(str(path))  # y from the store
    assert reg.n_features_in_ == 3 and _rel(reg.coef_, [1.0, 2.0, 3.0]) < 1e-4
    assert reg.score(str(path)).compute() > 0.999


def test_pickle_without_cluster_and_explicit_client(default_client):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 2))
    y = X @ [2.0, -1.0]
    reg = SGDRegressor(client=default_client, verbose=0, max_iter=20, random_state=0).fit(X, y)
    assert reg.client is default_client  # a parameter: kept as given ...
    blob = pickle.dumps(reg)  # ... but a live client does not travel
    restored = pickle.loads(blob)
    assert restored.client is None
    np.testing.assert_array_equal(restored.predict(X), reg.predict(X))
    assert clone(reg).client is default_client
    assert not any(isinstance(v, Client) for v in vars(reg).values() if v is not reg.client)


def test_partial_fit_and_warm_start_continue():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 3))
    y = X @ [1.0, -1.0, 0.5]
    reg = SGDRegressor(verbose=0, learning_rate="constant", penalty=None, random_state=0)
    losses = []
    for _ in range(5):
        reg.partial_fit(X, y)
        losses.append(reg.history_["loss"][-1])
    assert losses == sorted(losses, reverse=True) and reg.n_iter_ == 1
    clf = SGDClassifier(verbose=0, random_state=0)
    clf.partial_fit(X, X[:, 0] > 0, classes=[False, True])
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(X[:, :2], X[:, 0] > 0)
    # L-BFGS: five rounds stop short of the optimum (Newton, "auto" here, is exact in one)
    warm = LinearRegression(verbose=0, max_iter=5, tol=None, warm_start=True,
                            optimizer="lbfgs").fit(X, y)  # fmt: skip
    first = warm.history_["loss"][-1]
    warm.fit(X, y)
    assert warm.history_["loss"][0] < first  # started where the first fit ended


def test_ovr_hinge_history_and_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from daskgd import plot_history

    rng = np.random.default_rng(6)
    X = rng.normal(size=(300, 2)) + np.repeat([[0, 0], [4, 0], [0, 4]], 100, axis=0)
    y = np.repeat([0, 1, 2], 100)
    clf = SGDClassifier(verbose=0, max_iter=200, random_state=0).fit(X, y)
    assert clf.coef_.shape == (3, 2) and clf.score(X, y) > 0.85
    assert set(clf.history_["run"]) == {"class 0", "class 1", "class 2"}
    assert history_to_json(clf).startswith("{")
    axes = plot_history({"ovr": clf, "lr": LogisticRegression(verbose=0).fit(X, y)})
    assert len(axes[0].get_lines()) == 4  # three one-vs-rest fits and one multinomial
    axes[0].figure.savefig(tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_ovr_is_one_job_equal_to_one_binary_fit_per_class():
    """One-vs-rest trains the k binary problems as one job (one column per class): each
    column, and each class's loss in the history, equals the binary fit of that class
    against the rest with the same settings (the problems are separable)."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(600, 4)) + np.repeat([[0, 0, 0, 0], [3, 0, 0, 0], [0, 3, 0, 0]], 200, 0)
    y = np.repeat(["a", "b", "c"], 200)
    common = {"batch_size": 64, "max_iter": 6, "tol": None, "random_state": 0, "verbose": 0,
              "learning_rate": "constant", "eta0": 0.05}  # fmt: skip
    for loss in ("hinge", "squared_hinge"):
        ovr = SGDClassifier(loss=loss, **common).fit(X, y)
        assert ovr.n_iter_ == 6 and ovr.coef_.shape == (3, 4)
        h = ovr.history_
        assert h["run"] == [f"class {c}" for c in "abc" for _ in range(6)]
        for j, label in enumerate("abc"):
            one = SGDClassifier(loss=loss, **common).fit(X, y == label)
            np.testing.assert_allclose(ovr.coef_[j], one.coef_[0], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(ovr.intercept_[j], one.intercept_[0], rtol=1e-9,
                                       atol=1e-12)  # fmt: skip
            np.testing.assert_allclose(h["loss"][6 * j : 6 * j + 6], one.history_["loss"],
                                       rtol=1e-9)  # fmt: skip
        # one job: every class's rows share the job's updates, and the total is their sum
        assert ovr.n_updates_ == one.n_updates_
        per_epoch = np.reshape(h["loss"], (3, 6)).sum(axis=0)
        np.testing.assert_allclose(h["total_loss"][:6], per_epoch, rtol=1e-12)


def test_ovr_on_digits_is_as_accurate_as_scikit_learn():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    ours = SGDClassifier(loss="hinge", random_state=0, verbose=0).fit(X, y)
    theirs = sk.SGDClassifier(loss="hinge", random_state=0).fit(X, y)
    assert ours.score(X, y) > 0.9 and ours.score(X, y) >= theirs.score(X, y) - 0.05
    assert set(ours.history_["run"]) == {f"class {c}" for c in range(10)}
    early = SGDClassifier(loss="hinge", random_state=0, verbose=0, early_stopping=True,
                          n_iter_no_change=3).fit(X, y)  # fmt: skip
    assert early.score(X, y) > 0.9 and early.n_iter_ < ours.n_iter_


def test_bad_settings_name_the_parameter():
    X, y = np.ones((10, 2)), np.arange(10.0)
    with pytest.raises(ValueError, match="loss must be one of"):
        SGDRegressor(loss="hinge", verbose=0).fit(X, y)
    with pytest.raises(ValueError, match="learning_rate"):
        SGDRegressor(learning_rate="optimal", verbose=0).fit(X, y)
    with pytest.raises(ValueError, match="early_stopping=True holds out a share of in-memory"):
        SGDRegressor(early_stopping=True, verbose=0).fit(da.from_array(X), da.from_array(y))
    with pytest.raises(ValueError, match="validation_fraction"):
        SGDRegressor(validation_fraction=1.5, verbose=0).fit(X, y)
    with pytest.raises(ValueError, match="C must be"):
        LogisticRegression(C=0, verbose=0).fit(X, y > 4)


def test_early_stopping_stops_on_the_held_out_loss():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, 10))
    y = X @ rng.normal(size=10) + 0.5 * rng.normal(size=2000)
    common = {"batch_size": 64, "max_iter": 300, "tol": 1e-3, "random_state": 0, "verbose": 0}
    stopped = SGDRegressor(early_stopping=True, n_iter_no_change=3, **common).fit(X, y)
    assert stopped.n_iter_ < 300  # the held-out loss stopped improving by 1e-3
    assert stopped.score(X, y) > 0.95
    # the same fit without early stopping and without tol runs every epoch
    full = SGDRegressor(early_stopping=False, **{**common, "tol": None, "max_iter": 40}).fit(X, y)
    assert full.n_iter_ == 40


def test_early_stopping_classifier():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(1500, 6))
    y = np.where(X @ rng.normal(size=6) > 0, "yes", "no")
    clf = SGDClassifier(loss="log_loss", early_stopping=True, validation_fraction=0.2,
                        n_iter_no_change=3, tol=1e-3, max_iter=500, batch_size=64,
                        random_state=0, verbose=0).fit(X, y)  # fmt: skip
    assert clf.n_iter_ < 500 and clf.score(X, y) > 0.95
