"""Model files: save a fitted daskgd estimator, load it back without a cluster.

A model file is JSON (``.json``) or a Zarr v3 group (``.zarr``). Both hold the estimator's
class, its settings (the parameters whose values are plain JSON values: strings, numbers,
booleans, None), ``coef_``, ``intercept_``, ``classes_``, ``n_features_in_``,
``feature_names_in_`` when there are names, the iteration counts and the training history.
In a Zarr group the coefficients are arrays and everything else is in the group's
attributes. ``daskgd fit --output`` writes these files and ``daskgd predict`` reads them::

    reg = daskgd.SGDRegressor().fit("train.zarr")
    daskgd.save_model(reg, "model.json")
    daskgd.load_model("model.json").predict(X)   # no cluster needed
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import numpy as np

from daskgd.errors import ModelFileError
from daskgd.history import to_jsonable

__all__ = ["MODEL_FORMAT", "MODEL_FORMAT_VERSION", "load_model", "save_model"]

#: The ``format`` entry of every model file.
MODEL_FORMAT = "daskgd-model"
#: The version this daskgd writes; it reads this one and earlier ones.
MODEL_FORMAT_VERSION = 1
# Parameters never written: a client is a live connection, not a setting.
_NOT_SAVED = ("client",)


def _plain(value: Any) -> bool:
    """True when ``value`` comes back from JSON as the same value of the same type."""
    if value is None or isinstance(value, bool | str):
        return True
    if isinstance(value, int | float) and type(value) in (int, float):
        return bool(np.isfinite(value))
    return False


def _saved_params(est: Any) -> dict[str, Any]:
    return {
        k: v for k, v in est.get_params(deep=False).items() if k not in _NOT_SAVED and _plain(v)
    }


def save_model(est: Any, path: str | os.PathLike[str]) -> None:
    """Write a fitted daskgd estimator to a model file.

    Parameters
    ----------
    est : SGDRegressor, SGDClassifier, LinearRegression or LogisticRegression
        A fitted daskgd estimator.
    path : str or os.PathLike
        ``*.json`` for a JSON file, ``*.zarr`` for a Zarr group (replaced if it exists).

    Raises
    ------
    ValueError
        If ``path`` ends in neither ``.json`` nor ``.zarr``.
    sklearn.exceptions.NotFittedError
        If ``est`` has not been fitted.

    See Also
    --------
    load_model : read the file back.
    """
    from sklearn.utils.validation import check_is_fitted

    path = str(path)
    if not path.endswith((".json", ".zarr")):
        raise ValueError(f"a model file must end in .json or .zarr, got {path!r}")
    check_is_fitted(est, "coef_")
    meta: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "estimator": type(est).__name__,
        "params": _saved_params(est),
        "n_features_in": int(est.n_features_in_),
        "n_iter": int(est.n_iter_),
        "history": to_jsonable(getattr(est, "history_", {})),
    }
    for name in ("n_updates", "converged"):
        if hasattr(est, f"{name}_"):
            meta[name] = to_jsonable(getattr(est, f"{name}_"))
    for name in ("classes", "feature_names_in"):
        value = getattr(est, f"{name}_", None)
        if value is not None:
            meta[name] = to_jsonable(np.asarray(value).tolist())
    coef = np.asarray(est.coef_, dtype=np.float64)
    intercept = np.asarray(est.intercept_, dtype=np.float64)
    if path.endswith(".zarr"):
        import zarr

        g = zarr.open_group(path, mode="w")
        g.create_array("coef", data=coef)
        g.create_array("intercept", data=intercept)
        g.attrs.update(meta)
        return
    meta["coef"] = coef.tolist()
    meta["intercept"] = intercept.tolist()
    Path(path).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def _not_a_model(path: str, why: str) -> ModelFileError:
    return ModelFileError(
        f"{path} is not a daskgd model file ({why}); pass the file 'daskgd fit --output' "
        "or daskgd.save_model wrote (model.json or model.zarr)"
    )


def _read(path: str) -> tuple[dict[str, Any], Any, Any]:
    """The metadata, coefficients and intercept of the model file at ``path``."""
    if path.endswith(".zarr") or os.path.isdir(path):
        import zarr

        try:
            g = zarr.open_group(path, mode="r")
        except (FileNotFoundError, ValueError) as exc:  # zarr: not a group
            raise _not_a_model(path, f"not a Zarr group: {exc}") from exc
        meta: dict[str, Any] = dict(g.attrs)
        # checked before the arrays are read: a dataset has none of them
        if meta.get("format") != MODEL_FORMAT:
            found = "a daskgd dataset" if meta.get("format") == "daskgd" else "a Zarr group"
            raise _not_a_model(path, f"it is {found}, with no format={MODEL_FORMAT!r}")
        missing = sorted({"coef", "intercept"} - set(g.array_keys()))
        if missing:
            raise _not_a_model(path, f"no array {missing[0]!r}")
        # save_model writes both as arrays; a Group indexes by name only.
        coef = np.asarray(cast("zarr.Array", g["coef"])[...])
        intercept = np.asarray(cast("zarr.Array", g["intercept"])[...])
        return meta, coef, intercept
    try:
        meta = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _not_a_model(path, f"not JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise _not_a_model(path, f"JSON {type(meta).__name__}, not an object")
    if meta.get("format") != MODEL_FORMAT:
        raise _not_a_model(path, f"no format={MODEL_FORMAT!r}")
    if "coef" not in meta or "intercept" not in meta:
        raise _not_a_model(path, "no 'coef' or no 'intercept'")
    return meta, meta["coef"], meta["intercept"]


def load_model(path: str | os.PathLike[str]) -> Any:
    """Read a model file written by :func:`save_model`: a fitted estimator, no cluster needed.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.json`` file or a ``.zarr`` group.

    Returns
    -------
    SGDRegressor, SGDClassifier, LinearRegression or LogisticRegression
        Fitted: ``predict``, ``score`` (and ``predict_proba`` where the loss has one) work
        at once. Parameters that were not plain values when saved (e.g. ``client``, a
        ``class_weight`` dict, a random generator) have their default values.

    Raises
    ------
    daskgd.errors.ModelFileError
        If the file is not a daskgd model file (a dataset, other JSON, a newer format) or
        names an estimator this daskgd does not have. A ``ValueError``.
    FileNotFoundError
        If there is no file at ``path``.

    See Also
    --------
    save_model
    """
    # The estimators import scikit-learn (about a second): loaded when a model is, not
    # with daskgd (workers and the scheduler import daskgd and never load models).
    import daskgd.sklearn as estimators

    path = str(path)
    meta, coef, intercept = _read(path)
    missing = [k for k in ("estimator", "n_features_in", "n_iter") if k not in meta]
    if missing:
        raise _not_a_model(path, f"no {missing[0]!r}")
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
        raise ModelFileError(
            f"{path} is a model file of format version {version!r}; this daskgd reads "
            f"versions up to {MODEL_FORMAT_VERSION}: upgrade daskgd"
        )
    name = meta.get("estimator")
    if name not in estimators.__all__:
        raise ModelFileError(
            f"{path}: unknown estimator {name!r}; this daskgd has {', '.join(estimators.__all__)}"
        )
    cls = getattr(estimators, name)
    known = cls().get_params(deep=False)
    est = cls(**{k: v for k, v in dict(meta.get("params", {})).items() if k in known})
    est.coef_ = np.asarray(coef, dtype=np.float64)
    est.intercept_ = np.atleast_1d(np.asarray(intercept, dtype=np.float64))
    est.n_features_in_ = int(meta["n_features_in"])
    est.n_iter_ = int(meta["n_iter"])
    est.history_ = meta.get("history", {})
    if "n_updates" in meta:
        est.n_updates_ = int(meta["n_updates"])
    if "converged" in meta:
        est.converged_ = bool(meta["converged"])
    if "classes" in meta:
        est.classes_ = np.asarray(meta["classes"])
    if "feature_names_in" in meta:
        est.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
    return est
