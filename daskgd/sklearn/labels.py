"""The classifiers' labels: finding the classes, encoding them for the engine, class weights
and the one-vs-rest history. Every pass over a dask ``y`` runs on the fit's client."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from daskgd.errors import DataValidationError
from daskgd.history import history_to_dict
from daskgd.sklearn.inputs import compute

__all__ = [
    "apply_class_weight",
    "binary_targets",
    "encode",
    "find_classes",
    "one_vs_rest_history",
    "weight_sum",
]


def find_classes(
    name: str, y: Any, classes: Any, partial: bool, recorded: Any, client: Any
) -> np.ndarray:
    """The sorted class labels: ``classes`` as given, else those the dataset ``recorded``
    (no pass over the data), else found in ``y`` (a dask ``y``: on ``client``)."""
    if classes is not None:
        found = np.unique(np.asarray(classes))
    elif partial:
        raise ValueError("classes must be passed on the first call to partial_fit")
    elif recorded is not None:
        found = np.asarray(recorded)
    elif isinstance(y, da.Array):
        if y.dtype.kind == "f":
            (integral,) = compute([da.all(y == da.round(y))], client)
            if not bool(integral):
                # scikit-learn refuses continuous targets for numpy input; so do we for dask
                raise DataValidationError(
                    f"{name} needs class labels, but y holds continuous (non-integer) "
                    "values, a regression target; use SGDRegressor or LinearRegression, or "
                    "integer class labels"
                )
        (found,) = compute([y if y.size < 1 else da.unique(y)], client)
        found = np.unique(found)
    else:
        found = np.unique(y)
    if len(found) < 2:
        raise ValueError(
            f"{name} needs samples of at least 2 classes in the data, but the data contains "
            f"only one class: {found[0] if len(found) else None!r}"
        )
    return found


def encode(y: Any, classes: np.ndarray) -> Any:
    """Class indices 0..k-1 of ``y`` (numpy, or lazy for dask); unknown labels are an error."""

    def codes(block: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(classes, block)
        idx = np.clip(idx, 0, len(classes) - 1)
        bad = classes[idx] != block
        if np.any(bad):
            raise ValueError(
                f"y contains labels not in classes_ {classes!r}: {np.unique(block[bad])!r}"
            )
        return idx.astype(np.int64)

    if isinstance(y, da.Array):
        return da.map_blocks(codes, y, dtype=np.int64, meta=np.empty((0,), dtype=np.int64))
    return codes(np.asarray(y))


def binary_targets(codes: Any, dtype: Any) -> Any:
    """+1 for class 1, -1 for class 0 (the binary losses' convention)."""
    if isinstance(codes, da.Array):
        return da.where(codes == 1, 1.0, -1.0).astype(dtype)
    return np.where(codes == 1, 1.0, -1.0).astype(dtype)


def apply_class_weight(
    class_weight: Any, classes: np.ndarray, codes: Any, sw: Any, dtype: Any, client: Any
) -> Any:
    """Sample weights times their class's weight (``"balanced"`` counts the classes of a
    dask ``y`` on ``client``); ``sw`` unchanged without class weights."""
    if class_weight is None:
        return sw
    k = len(classes)
    lazy = isinstance(codes, da.Array)
    if isinstance(class_weight, str):  # "balanced" (the parameter's constraint)
        if lazy:
            (counts,) = compute([da.bincount(codes, minlength=k)], client)
            counts = np.asarray(counts, dtype=np.float64)
            per_class = counts.sum() / (k * np.maximum(counts, 1))
        else:
            per_class = compute_class_weight("balanced", classes=np.arange(k), y=codes)
    else:
        unknown = set(class_weight) - set(classes.tolist())
        if unknown:
            raise ValueError(f"class_weight has labels not in the data: {sorted(unknown)!r}")
        per_class = np.array([float(class_weight.get(c, 1.0)) for c in classes.tolist()])
    per_class = per_class.astype(dtype)
    w = codes.map_blocks(lambda c: per_class[c], dtype=dtype) if lazy else per_class[codes]
    return w if sw is None else w * sw


def weight_sum(sw: Any, n: int, client: Any) -> float:
    """The total sample weight (``n`` without weights; a dask sum on ``client``)."""
    if sw is None:
        return float(n)
    if isinstance(sw, da.Array):
        (total,) = compute([sw.sum()], client)
        return float(total)
    return float(np.sum(sw))


def one_vs_rest_history(rows: list[dict[str, Any]], classes: np.ndarray) -> dict[str, list[Any]]:
    """The joint one-vs-rest job's history, one row per class and epoch, with a ``run``
    column (``"class <label>"``) and that class's objective as ``loss``.

    The other columns (time, updates, grad_norm, ...) are the joint job's, shared by the
    classes' rows of an epoch; ``total_loss`` is the sum of the classes' objectives.
    """
    entries = []
    for j, label in enumerate(classes.tolist()):
        for row in rows:
            entry = {key: value for key, value in row.items() if key != "class_loss"}
            entry["total_loss"] = row["loss"]
            entry["loss"] = float(row["class_loss"][j])
            entry["run"] = f"class {label}"
            entries.append(entry)
    return history_to_dict(entries)
