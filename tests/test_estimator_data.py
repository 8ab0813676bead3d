"""The estimators' data path on a real LocalCluster: a Zarr path reaches the engine as the
opened Dataset (path and classes kept), every pass an estimator makes runs on its own
cluster (never on dask's default scheduler), one-vs-rest starts one cluster, and data frames
(pandas and dask) keep their feature names. No default client is set in this module."""

from __future__ import annotations

import dataclasses

import dask
import dask.array as da
import distributed
import numpy as np
import pandas as pd
import pytest
from distributed import Client

import daskgd
from daskgd import (
    Dataset,
    LinearRegression,
    LogisticRegression,
    SGDClassifier,
    SGDRegressor,
    write_zarr,
)


def _no_default_scheduler(*args, **kwargs):
    raise AssertionError("a computation ran on dask's default scheduler")


@pytest.fixture
def own_client(cluster):
    """A client of the session cluster that is NOT dask's default; the default scheduler
    raises when used, and no default client exists."""
    with pytest.raises(ValueError):
        distributed.default_client()
    with (
        Client(cluster, set_as_default=False) as c,
        dask.config.set(scheduler=_no_default_scheduler),
    ):
        yield c


@pytest.fixture
def engine_calls(monkeypatch):
    """What the estimators hand the engine: a spy around daskgd.driver.fit_with_settings
    (it still runs); each call is recorded as ``(data, settings and keywords as one dict)``."""
    calls = []
    real = daskgd.driver.fit_with_settings

    def spy(data, settings, **kwargs):
        fields = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
        calls.append((data, {**fields, **kwargs}))
        return real(data, settings, **kwargs)

    monkeypatch.setattr(daskgd.driver, "fit_with_settings", spy)
    return calls


def _xy(n=400, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, X @ np.arange(1.0, d + 1) + 0.5


def test_a_path_reaches_the_engine_as_its_dataset(tmp_path, own_client, engine_calls):
    X, y = _xy()
    path = str(tmp_path / "r.zarr")
    write_zarr(path, X, y, chunk_rows=100)
    reg = LinearRegression(verbose=0, client=own_client).fit(path)
    (data, kwargs), *_ = engine_calls
    assert isinstance(data, Dataset) and data.path == path and kwargs["client"] is own_client
    assert kwargs["validate"] is True  # the engine's one scan of the values
    np.testing.assert_allclose(reg.coef_, [1.0, 2.0, 3.0], atol=1e-6)

    labels = np.where(X[:, 0] + X[:, 1] > 0, 3, 7).astype(np.int64)  # not -1/+1: encoded there
    cpath = str(tmp_path / "c.zarr")
    write_zarr(cpath, X, labels, chunk_rows=100)
    clf = LogisticRegression(verbose=0, client=own_client).fit(cpath)
    data, _ = engine_calls[-1]
    assert data.path == cpath and data.classes_.tolist() == [3, 7]
    assert clf.classes_.tolist() == [3, 7] and clf.score(X, labels) > 0.95
    # multiclass, one-vs-rest: the path too, with the recorded classes
    three = np.digitize(X[:, 0], [-0.5, 0.5]).astype(np.int64)
    mpath = str(tmp_path / "m.zarr")
    write_zarr(mpath, X, three, chunk_rows=100)
    ovr = SGDClassifier(verbose=0, max_iter=20, random_state=0, client=own_client).fit(mpath)
    data, kwargs = engine_calls[-1]
    assert data.path == mpath and kwargs["n_classes"] == 3 and kwargs["one_vs_rest"]
    assert ovr.coef_.shape == (3, 3)


def test_changed_targets_or_weights_do_not_read_the_store(tmp_path, own_client, engine_calls):
    """y, weights or class weights given with a path are used, not the stored ones."""
    X, y = _xy()
    path = str(tmp_path / "r.zarr")
    write_zarr(path, X, y, chunk_rows=100)
    reg = LinearRegression(verbose=0, client=own_client).fit(path, 2 * y)
    data, _ = engine_calls[-1]
    assert data.path is None
    np.testing.assert_allclose(reg.coef_, [2.0, 4.0, 6.0], atol=1e-6)
    labels = (X[:, 0] > 0).astype(np.int64)
    cpath = str(tmp_path / "c.zarr")
    write_zarr(cpath, X, labels, chunk_rows=100)
    weighted = LogisticRegression(verbose=0, class_weight={1: 5.0}, client=own_client)
    weighted.fit(cpath)
    assert engine_calls[-1][0].path is None
    by_hand = LogisticRegression(verbose=0, client=own_client)
    by_hand.fit(X, labels, sample_weight=np.where(labels == 1, 5.0, 1.0))
    np.testing.assert_allclose(weighted.coef_, by_hand.coef_, rtol=1e-5)


def test_every_pass_runs_on_the_estimators_client(tmp_path, own_client):
    """Class discovery, balanced class weights, the weight sum and frame lengths: all on
    ``client``; the default scheduler (which raises here) is never used."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 3))
    y = np.array(["a", "b", "c"])[np.argmax(X @ rng.normal(size=(3, 3)), axis=1)]
    Xd, yd = da.from_array(X, chunks=150), da.from_array(y, chunks=150)
    w = da.from_array(rng.uniform(0.5, 2.0, size=600), chunks=150)
    clf = LogisticRegression(verbose=0, class_weight="balanced", client=own_client)
    clf.fit(Xd, yd, sample_weight=w)
    assert clf.classes_.tolist() == ["a", "b", "c"]
    ovr = SGDClassifier(verbose=0, max_iter=5, random_state=0, client=own_client).fit(Xd, yd)
    assert ovr.coef_.shape == (3, 3)
    path = str(tmp_path / "c.zarr")
    write_zarr(path, X, (X[:, 0] > 0).astype(np.float64), chunk_rows=150)
    SGDClassifier(verbose=0, max_iter=3, client=own_client).fit(path)
    import dask.dataframe as dd

    frame = dd.from_pandas(pd.DataFrame(X, columns=["p", "q", "r"]), npartitions=3)
    SGDRegressor(verbose=0, max_iter=3, client=own_client).fit(frame, frame["p"] * 2.0)


def test_one_vs_rest_without_a_default_client_starts_one_cluster(monkeypatch):
    with pytest.raises(ValueError):
        distributed.default_client()
    started = []
    real_init = distributed.LocalCluster.__init__

    def counting_init(self, *args, **kwargs):
        started.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(distributed.LocalCluster, "__init__", counting_init)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 2)) + np.repeat([[0, 0], [4, 0], [0, 4]], 100, axis=0)
    y = np.repeat(["x", "y", "z"], 100)
    Xd, yd = da.from_array(X, chunks=100), da.from_array(y, chunks=100)
    with dask.config.set(scheduler=_no_default_scheduler):
        clf = SGDClassifier(verbose=0, max_iter=30, random_state=0).fit(Xd, yd)
    assert len(started) == 1  # one cluster for the classes' pass and the k binary problems
    assert all(c.status.name == "closed" for c in started)
    assert clf.coef_.shape == (3, 2) and (clf.predict(X) == y).mean() > 0.85


# -- data frames -------------------------------------------------------------------------------


def test_frames_keep_feature_names(own_client):
    import dask.dataframe as dd

    X, y = _xy(300, 3)
    columns = ["age", "height", "weight"]
    pdf = pd.DataFrame(X, columns=columns)
    ddf = dd.from_pandas(pdf, npartitions=3)
    common = {"verbose": 0, "client": own_client}
    for frame in (pdf, ddf):
        reg = LinearRegression(**common).fit(frame, y)
        assert reg.feature_names_in_.tolist() == columns and reg.n_features_in_ == 3
        np.testing.assert_allclose(reg.coef_, [1.0, 2.0, 3.0], atol=1e-6)
        other = pd.DataFrame(X, columns=["a", "b", "c"])
        for bad in (other, dd.from_pandas(other, npartitions=3)):
            with pytest.raises(ValueError, match="feature names should match"):
                reg.predict(bad)
        with pytest.warns(UserWarning, match="does not have valid feature names"):
            reg.predict(da.from_array(X, chunks=100))
        pred = reg.predict(ddf)
        assert isinstance(pred, da.Array)
        np.testing.assert_allclose(pred.compute(scheduler=own_client), reg.predict(pdf))
    # a classifier from a dask frame with a string label column
    labels = np.where(X[:, 0] > 0, "up", "down")
    cdf = dd.from_pandas(pdf.assign(label=labels), npartitions=3)
    clf = LogisticRegression(**common).fit(cdf[columns], cdf["label"])
    assert clf.feature_names_in_.tolist() == columns
    assert clf.classes_.tolist() == ["down", "up"]
    assert (clf.predict(pdf) == labels).mean() > 0.95
    # an array fit has no names: a refit on one forgets them
    reg.fit(X, y)
    assert not hasattr(reg, "feature_names_in_")


# -- declared parameter constraints ------------------------------------------------------------


@pytest.mark.parametrize(
    ("est", "message"),
    [
        (SGDRegressor(max_iter=0), "max_iter must be a positive integer, got 0"),
        (SGDRegressor(tol=-1.0), "tol must be None or a number >= 0"),
        (SGDRegressor(batch_size=0), "batch_size must be None"),
        (SGDRegressor(eta0=-0.1), "eta0 must be 'auto' or a positive number"),
        (SGDRegressor(penalty="l3"), "penalty must be one of"),
        (SGDRegressor(alpha=-1), "alpha must be a number >= 0"),
        (SGDRegressor(l1_ratio=1.5), r"l1_ratio must be a number in \[0, 1\]"),
        (SGDRegressor(n_iter_no_change=0), "n_iter_no_change must be a positive integer"),
        (SGDRegressor(verbose="loud"), "verbose must be"),
        (SGDRegressor(random_state="x"), "random_state must be"),
        (LinearRegression(learning_rate=0), "learning_rate must be 'auto' or a positive"),
        (SGDClassifier(loss="squared_error"), "loss must be one of"),
        (SGDClassifier(class_weight="even"), "class_weight must be None, 'balanced' or a dict"),
        (LogisticRegression(C=-1.0), "C must be a positive number"),
        (LogisticRegression(l1_ratio=2.0), r"l1_ratio must be None or a number in \[0, 1\]"),
        (LogisticRegression(checkpoint_every=0), "checkpoint_every must be a positive"),
    ],
)
def test_parameters_are_checked_once_at_fit_before_any_cluster(est, message, monkeypatch):
    """Bad settings fail at fit, naming the parameter, before a cluster is started or
    reached (none is: LocalCluster would raise)."""

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started for a fit with bad settings")

    monkeypatch.setattr(distributed.LocalCluster, "__init__", no_cluster)
    X, y = _xy(20, 2)
    target = y if "Regress" in type(est).__name__ else y > y.mean()
    with pytest.raises(ValueError, match=message):
        est.fit(X, target)


def test_partial_fit_batches_may_miss_classes(own_client):
    """A batch of a multiclass partial_fit need not hold every class: the engine is told
    the classes of the whole problem, not those of the batch."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 2)) + np.repeat([[0, 0], [4, 0], [0, 4]], 100, axis=0)
    y = np.repeat(["x", "y", "z"], 100)
    for loss in ("hinge", "log_loss"):  # one-vs-rest, multinomial
        clf = SGDClassifier(loss=loss, verbose=0, random_state=0, client=own_client)
        clf.partial_fit(X[:200], y[:200], classes=["x", "y", "z"])  # no "z" rows
        clf.partial_fit(X[100:], y[100:])  # no "x" rows
        for _ in range(10):
            clf.partial_fit(X, y)
        assert clf.coef_.shape == (3, 2) and (clf.predict(X) == y).mean() > 0.8
