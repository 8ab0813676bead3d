"""Model files: every estimator kind saved and loaded back through the public daskgd.io."""

from __future__ import annotations

import json

import numpy as np
import pytest

import daskgd
from daskgd.errors import ModelFileError
from daskgd.history import to_jsonable
from daskgd.io import load_model, save_model

# the fits are short on purpose: the files, not the optimum, are under test
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _data(n_classes: int | None, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(240, 4))
    if n_classes is None:
        return X, X @ [1.0, -2.0, 0.5, 3.0] + 0.25
    centers = rng.normal(scale=3.0, size=(n_classes, 4))
    labels = np.arange(240) % n_classes
    X += centers[labels]
    names = np.array(["ant", "bee", "cat", "dog"])[:n_classes]  # string labels round-trip too
    return X, names[labels]


# every estimator kind, and each of the classifiers' three shapes (binary, one-vs-rest,
# multinomial); settings away from the defaults so that a dropped setting shows
KINDS = {
    "SGDRegressor": (lambda c: daskgd.SGDRegressor(loss="huber", epsilon=0.5, alpha=1e-3,
                                                   batch_size=None, learning_rate="constant",
                                                   max_iter=20, client=c, verbose=0), None),
    "LinearRegression": (lambda c: daskgd.LinearRegression(max_iter=50, tol=1e-6, client=c,
                                                           verbose=0), None),
    "SGDClassifier-binary": (lambda c: daskgd.SGDClassifier(loss="log_loss", alpha=1e-3,
                                                            batch_size=None, max_iter=20,
                                                            client=c, verbose=0), 2),
    "SGDClassifier-ovr": (lambda c: daskgd.SGDClassifier(loss="squared_hinge", max_iter=10,
                                                         batch_size=None, client=c,
                                                         verbose=0), 3),
    "LogisticRegression-multinomial": (lambda c: daskgd.LogisticRegression(C=0.5, max_iter=30,
                                                                           client=c,
                                                                           verbose=0), 3),
}  # fmt: skip


@pytest.mark.parametrize("suffix", [".json", ".zarr"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_estimator_round_trips(client, tmp_path, kind, suffix):
    make, n_classes = KINDS[kind]
    X, y = _data(n_classes)
    est = make(client).fit(X, y)
    path = tmp_path / f"model{suffix}"
    daskgd.save_model(est, path)  # the names exported at the top level are daskgd.io's
    assert daskgd.load_model is load_model and daskgd.save_model is save_model
    back = load_model(path)
    assert type(back) is type(est)
    params = {k: v for k, v in est.get_params().items() if k != "client"}
    assert back.get_params() == {**params, "client": None}
    for name in ("coef_", "intercept_", "n_features_in_", "n_iter_", "n_updates_", "converged_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(est, name), err_msg=name)
    assert back.history_ == to_jsonable(est.history_)  # JSON's: NaN as None
    assert len(back.history_["loss"]) == len(est.history_["loss"]) > 0
    # the loaded model predicts exactly as the fitted one, with no cluster
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    assert back.score(X, y) == est.score(X, y)
    if n_classes is not None:
        np.testing.assert_array_equal(back.classes_, est.classes_)
        np.testing.assert_array_equal(back.decision_function(X), est.decision_function(X))
        if hasattr(est, "predict_proba"):
            np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))


def test_feature_names_round_trip(client, tmp_path):
    pd = pytest.importorskip("pandas")
    X, y = _data(None)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    est = daskgd.LinearRegression(max_iter=20, client=client, verbose=0).fit(frame, y)
    save_model(est, tmp_path / "m.json")
    back = load_model(tmp_path / "m.json")
    assert back.feature_names_in_.tolist() == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(back.predict(frame), est.predict(frame))


def test_bad_model_files_say_what_they_are(client, tmp_path):
    X, y = _data(None)
    est = daskgd.LinearRegression(max_iter=5, client=client, verbose=0).fit(X, y)
    with pytest.raises(ValueError, match=r"must end in \.json or \.zarr"):
        save_model(est, tmp_path / "m.txt")
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        save_model(daskgd.SGDRegressor(), tmp_path / "m.json")
    save_model(est, tmp_path / "m.json")
    meta = json.loads((tmp_path / "m.json").read_text())
    cases = {
        "list.json": ([1, 2], "not an object"),
        "other.json": ({"coef": [1.0]}, "no format='daskgd-model'"),
        "ridge.json": ({**meta, "estimator": "Ridge"}, "unknown estimator 'Ridge'"),
        "short.json": ({k: v for k, v in meta.items() if k != "n_iter"}, "no 'n_iter'"),
        "newer.json": ({**meta, "format_version": 99}, "format version 99.*upgrade daskgd"),
        "nocoef.json": ({k: v for k, v in meta.items() if k != "coef"}, "no 'coef'"),
    }  # fmt: skip
    for name, (content, match) in cases.items():
        (tmp_path / name).write_text(json.dumps(content))
        with pytest.raises(ModelFileError, match=match):
            load_model(tmp_path / name)
    daskgd.write_zarr(str(tmp_path / "d.zarr"), X, y)
    with pytest.raises(ModelFileError, match="it is a daskgd dataset"):
        load_model(tmp_path / "d.zarr")
    assert issubclass(ModelFileError, ValueError)  # `except ValueError` keeps working
