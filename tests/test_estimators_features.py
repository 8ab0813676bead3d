"""The estimators on feature-partitioned data: ``est.fit(concat_features([a, b]))``.

Two Zarr groups holding the same rows (row-chunked differently) and different columns, on
the session's LocalCluster of 2 worker processes (one column block each). The oracle is the
same estimator fitted on the groups' columns side by side (``numpy.hstack``), partitioned by
rows; predictions are compared with those on the hstacked numpy X.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from daskgd import (
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
    SGDClassifier,
    SGDRegressor,
    concat_features,
    open_zarr,
)
from daskgd.data import write_zarr
from daskgd.errors import DataValidationError, InvalidSettingError

#: the two groups' columns, and their row-chunks (different: predictions align them)
SPLIT = ((0, 4, 200), (4, 9, 250))


def _problem(n=600, d=9, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, size=d)
    y = X @ rng.standard_normal(d) + 0.5 + 0.1 * rng.standard_normal(n)
    sw = rng.uniform(0.5, 2.0, n)
    return X, y, sw


def _groups(tmp_path, X, y, sw=None):
    """The columns of X in two groups (the weights, when any, in the first), joined; and
    the groups' X side by side as read back, the oracle's input."""
    paths = []
    for k, (c0, c1, rows) in enumerate(SPLIT):
        paths.append(str(tmp_path / f"part{k}.zarr"))
        write_zarr(paths[-1], X[:, c0:c1], y, sw if k == 0 else None, chunk_rows=rows)
    Xh = np.hstack([open_zarr(p).X.compute() for p in paths])
    return concat_features(paths), Xh


def test_linear_regression_on_two_groups(client, tmp_path):
    X, y, sw = _problem()
    fb, Xh = _groups(tmp_path, X, y, sw)
    # y and weights given too: accepted, as they are the first group's
    est = LinearRegression(partition="features", client=client, verbose=0).fit(fb, y, sw)
    rows = LinearRegression(client=client, verbose=0).fit(Xh, y, sample_weight=sw)
    scale = np.abs(rows.coef_).max()
    np.testing.assert_allclose(est.coef_, rows.coef_, atol=1e-6 * scale)
    assert est.intercept_[0] == pytest.approx(rows.intercept_[0], abs=1e-6 * scale)
    assert est.n_features_in_ == 9 and not hasattr(est, "feature_names_in_")
    pred = est.predict(fb)
    assert isinstance(pred, da.Array) and pred.shape == (600,)
    np.testing.assert_allclose(pred.compute(), est.predict(Xh), rtol=1e-12, atol=1e-12)
    # the score weighs the rows by the first group's weights, as the fit did
    score = est.score(fb)
    assert isinstance(score, da.Array)
    assert float(score.compute()) == pytest.approx(est.score(Xh, y, sw), rel=1e-12)
    given = est.score(fb, y, np.ones(600)).compute()
    assert float(given) == pytest.approx(est.score(Xh, y), rel=1e-12)


def test_sgd_regressor_follows_the_row_partitioned_iterates(client, tmp_path):
    """Full-batch gradient descent: the same iterates as the hstacked numpy fit."""
    X, y, _ = _problem(seed=1)
    fb, Xh = _groups(tmp_path, X, y)
    common = dict(batch_size=None, learning_rate="constant", eta0=0.02, alpha=0.01,
                  max_iter=20, tol=None, client=client, verbose=0)  # fmt: skip
    est = SGDRegressor(partition="features", **common).fit(fb)
    rows = SGDRegressor(**common).fit(Xh, y)
    np.testing.assert_allclose(est.coef_, rows.coef_, rtol=0, atol=1e-9)
    assert est.intercept_[0] == pytest.approx(rows.intercept_[0], abs=1e-9)
    assert est.n_iter_ == rows.n_iter_ == 20
    np.testing.assert_allclose(est.predict(fb).compute(), est.predict(Xh), rtol=1e-12)


def _labels(y):
    return np.where(y > np.quantile(y, 0.4), 1, 0)


def test_logistic_regression_on_two_groups(client, tmp_path):
    X, y, _ = _problem(seed=2)
    labels = _labels(y)
    fb, Xh = _groups(tmp_path, X, labels)
    clf = LogisticRegression(C=1.0, partition="features", client=client, verbose=0).fit(fb)
    rows = LogisticRegression(C=1.0, client=client, verbose=0).fit(Xh, labels)
    assert clf.classes_.tolist() == [0, 1]
    np.testing.assert_allclose(clf.coef_, rows.coef_, atol=1e-4 * np.abs(rows.coef_).max())
    assert clf.n_features_in_ == 9
    # predictions on the groups are those of the same model on the hstacked X
    margins = clf.decision_function(fb)
    assert isinstance(margins, da.Array) and margins.shape == (600,)
    np.testing.assert_allclose(margins.compute(), clf.decision_function(Xh), rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(fb).compute(), clf.predict(Xh))
    np.testing.assert_allclose(clf.predict_proba(fb).compute(), clf.predict_proba(Xh),
                               rtol=1e-12)  # fmt: skip
    assert float(clf.score(fb).compute()) == pytest.approx(clf.score(Xh, labels), rel=1e-12)


def test_sgd_classifier_with_class_weights_follows_the_row_partitioned_iterates(client, tmp_path):
    """Class weights: the labels are encoded and weighted on the cluster, then trained on as
    the numpy fit is, step for step."""
    X, y, _ = _problem(seed=3)
    labels = _labels(y)
    fb, Xh = _groups(tmp_path, X, labels)
    common = dict(loss="log_loss", batch_size=None, learning_rate="constant", eta0=0.05,
                  alpha=0.01, max_iter=15, tol=None, class_weight="balanced", client=client,
                  verbose=0)  # fmt: skip
    clf = SGDClassifier(partition="features", **common).fit(fb)
    rows = SGDClassifier(**common).fit(Xh, labels)
    np.testing.assert_allclose(clf.coef_, rows.coef_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(clf.intercept_, rows.intercept_, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(clf.predict(fb).compute(), clf.predict(Xh))


def test_what_is_refused(client, tmp_path):
    X, y, _ = _problem(n=300, seed=4)
    fb, Xh = _groups(tmp_path, X, y)
    # rows: before the cluster is reached (no client needed)
    with pytest.raises(InvalidSettingError, match=r"partition='features'"):
        SGDRegressor(verbose=0).fit(fb)
    with pytest.raises(InvalidSettingError, match=r"partition='features'"):
        LogisticRegression(verbose=0).fit(fb)
    with pytest.raises(InvalidSettingError, match="does not take concat_features"):
        PoissonRegressor(verbose=0).fit(fb)
    est = LinearRegression(partition="features", client=client, verbose=0)
    with pytest.raises(InvalidSettingError, match="partition='grid'"):
        est.set_params(partition="grid").fit(fb)
    est.set_params(partition="features")
    other = y.copy()
    other[7] += 1.0
    with pytest.raises(DataValidationError, match=r"y differs .* first at row 7"):
        est.fit(fb, other)
    with pytest.raises(DataValidationError, match="one value per row"):
        est.fit(fb, y[:-1])
    with pytest.raises(DataValidationError, match="sample_weight was passed but"):
        est.fit(fb, sample_weight=np.ones(300))
    assert not hasattr(est, "coef_")
    # a model fitted on other columns: the width is checked
    narrow = LinearRegression(client=client, verbose=0).fit(Xh[:, :5], y)
    with pytest.raises(ValueError, match="X has 9 features"):
        narrow.predict(fb)
    # where concat_features() data is not taken, it says so
    with pytest.raises(TypeError, match="partition='features'"):
        PoissonRegressor(verbose=0).fit(np.abs(Xh), np.abs(y)).predict(fb)
