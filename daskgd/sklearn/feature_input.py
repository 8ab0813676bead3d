"""Feature-partitioned data (:func:`daskgd.concat_features`) as the estimators' ``X``.

A :class:`~daskgd.data.FeatureBlocks` is several groups holding the same rows and different
columns. ``fit`` hands it to the engine as it is (``partition="features"``: one column block
per group, the targets, weights and classes those of the first group); ``predict``,
``decision_function``, ``predict_proba`` and ``score`` split ``coef_`` by the groups' column
ranges and sum the groups' margins, lazily, so that no task ever holds a whole row.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from functools import partial
from typing import Any

import dask.array as da
import numpy as np

from daskgd.data import Dataset, FeatureBlocks
from daskgd.errors import DataValidationError, InvalidSettingError
from daskgd.sklearn.inputs import compute, dask_map, frames_to_arrays, is_dask_frame, lazy_inputs

__all__ = [
    "block_margins",
    "block_targets",
    "check_block_fit",
    "check_block_targets",
    "score_inputs",
    "with_targets",
]


def check_block_fit(est: Any) -> None:
    """Refuse a fit of concat_features() data that the estimator's settings cannot run,
    before any cluster is reached: a row partition (the groups keep their columns apart).

    Parameters
    ----------
    est : estimator
        The estimator about to fit (its ``partition`` parameter is read).

    Raises
    ------
    InvalidSettingError
        ``partition="rows"``, or an estimator without a ``partition`` parameter.
    """
    name = type(est).__name__
    params = est.get_params(deep=False)
    if "partition" not in params:
        raise InvalidSettingError(
            f"{name} trains partitioned by rows only and does not take concat_features() data; "
            "fit it with daskgd.fit(data, partition='features', ...), or pass the columns as "
            "one dataset"
        )
    if params["partition"] == "rows":
        raise InvalidSettingError(
            f"{name}(partition='rows') needs every column of a row in one place, but "
            "concat_features() data keeps its groups' columns apart: pass "
            f"{name}(partition='features', ...) (one column block per group)"
        )


def check_block_targets(
    fb: FeatureBlocks, y: Any, sample_weight: Any, est: str, client: Any
) -> None:
    """Accept ``y`` and ``sample_weight`` passed with ``fb`` only when they are the first
    group's, which the engine trains on (one pass over them on ``client``).

    Parameters
    ----------
    fb : FeatureBlocks
        The data.
    y, sample_weight : array-like, dask array, Series, number (weights) or None
        As passed to ``fit`` (None: not passed, nothing to check).
    est : str
        The estimator's name, for the message.
    client : distributed.Client
        Where the comparison runs.

    Raises
    ------
    DataValidationError
        A length other than ``fb``'s rows, labels of another kind, weights where the first
        group holds none, or a value that differs (the message names the first such row).
    """
    t = fb.targets
    where = f"the first group of the concat_features() data ({t.path or 'in memory'})"
    fix = (f"{est} trains on the targets and weights stored there: omit y and sample_weight, "
           "or write the ones you mean into that group")  # fmt: skip
    y, sample_weight = frames_to_arrays(None, y, sample_weight, client)[1:]
    checks: list[tuple[str, da.Array]] = []
    for name, given, stored in (("y", y, t.y), ("sample_weight", sample_weight, t.sample_weight)):
        if given is None:
            continue
        if stored is None:
            raise DataValidationError(f"{name} was passed but {where} holds none: {fix}")
        if isinstance(given, numbers.Number):
            given = da.full(fb.n_samples, given, chunks=stored.chunks)
        given = given if isinstance(given, da.Array) else da.asarray(np.asarray(given))
        if given.ndim != 1 or given.shape[0] != fb.n_samples:
            raise DataValidationError(
                f"{name} has shape {given.shape}, but the concat_features() data has "
                f"{fb.n_samples} rows: one value per row. {fix}"
            )
        if np.dtype(given.dtype).kind not in "biuf" or np.dtype(stored.dtype).kind not in "biuf":
            if np.dtype(given.dtype) != np.dtype(stored.dtype):
                raise DataValidationError(
                    f"{name} holds {given.dtype} values but {where} stores {stored.dtype} "
                    f"ones: {fix}"
                )
        # compared in the stored dtype: the same values, rounded as the store holds them
        given = given.rechunk(stored.chunks)
        cast = given.astype(stored.dtype)
        differs = cast != stored
        if np.dtype(stored.dtype).kind in "biu":  # 1.5 is not the label 1
            differs |= cast.astype(given.dtype) != given
        checks.append((name, differs))
    if not checks:
        return
    found = compute([a for _, d in checks for a in (d.any(), da.argmax(d))], client)
    for k, (name, _) in enumerate(checks):
        if bool(found[2 * k]):
            raise DataValidationError(
                f"{name} differs from the {name} stored in {where}, first at row "
                f"{int(found[2 * k + 1])}: {fix}"
            )


def with_targets(fb: FeatureBlocks, targets: Dataset) -> FeatureBlocks:
    """``fb`` with another first part.

    Parameters
    ----------
    fb : FeatureBlocks
    targets : Dataset
        The first group's columns with other targets, weights or classes.

    Returns
    -------
    FeatureBlocks
        ``fb`` itself when ``targets`` is its first part, else a new one (its parts as
        they are: checked when ``fb`` was made).
    """
    if targets is fb.targets:
        return fb
    return FeatureBlocks([targets, *fb.parts[1:]], fb.feature_names)


def _partial_margins(W: np.ndarray, blk: np.ndarray) -> np.ndarray:
    return blk @ W.astype(blk.dtype)


def block_margins(fb: FeatureBlocks, W: np.ndarray, b: Any) -> da.Array:
    """``X @ W + b`` of the groups side by side, lazily: each group's columns times its
    rows of ``W``, summed row-chunk by row-chunk.

    Parameters
    ----------
    fb : FeatureBlocks
    W : numpy.ndarray of shape (n_features,) or (n_features, k)
        The coefficients, in the groups' column order.
    b : float or numpy.ndarray of shape (k,)
        The intercept(s).

    Returns
    -------
    dask.array.Array of shape (n_samples,) or (n_samples, k)
        In the groups' dtype.
    """
    k = None if W.ndim == 1 else int(W.shape[1])
    total: da.Array | None = None
    for part, (c0, c1) in zip(fb.parts, fb.bounds, strict=True):
        X = part.X if len(part.X.chunks[1]) == 1 else part.X.rechunk({1: -1})
        m = dask_map(X, partial(_partial_margins, np.ascontiguousarray(W[c0:c1])), k, X.dtype)
        # groups chunked by other row counts: dask aligns the chunks of the sum
        total = m if total is None else total + m
    assert total is not None  # a FeatureBlocks has at least one part
    return total + np.asarray(b).astype(fb.dtype)


def block_targets(fb: FeatureBlocks, y: Any, sample_weight: Any) -> tuple[Any, Any]:
    """``y`` and ``sample_weight`` to score ``fb`` against: those given (as a Dataset's
    score takes them), else the first group's.

    Parameters
    ----------
    fb : FeatureBlocks
    y, sample_weight : array-like, dask array, number (weights) or None
        As passed to ``score``.

    Returns
    -------
    tuple of (dask.array.Array or None, dask.array.Array or None)
        Chunked as the first group's ``y``; the weights None when neither has any.

    Raises
    ------
    DataValidationError
        A length other than ``fb``'s rows.
    """
    t = fb.targets
    out = []
    for name, given, stored in (("y", y, t.y), ("sample_weight", sample_weight, t.sample_weight)):
        if given is None:
            out.append(stored)
            continue
        if isinstance(given, numbers.Number):
            out.append(da.full(fb.n_samples, given, chunks=t.y.chunks, dtype=np.float64))
            continue
        if is_dask_frame(given):
            given = given.to_dask_array(lengths=True)
        a = given if isinstance(given, da.Array) else da.asarray(np.asarray(given))
        if a.ndim != 1 or a.shape[0] != fb.n_samples:
            raise DataValidationError(
                f"{name} has shape {a.shape}, but the concat_features() data has "
                f"{fb.n_samples} rows: one value per row"
            )
        out.append(a.rechunk(t.y.chunks))
    return out[0], out[1]


def score_inputs(
    est: Any,
    X: Any,
    y: Any,
    sample_weight: Any,
    margins: Callable[[FeatureBlocks], Any],
    lazy_margins: Callable[[da.Array], Any],
) -> tuple[Any, Any, Any]:
    """What a fitted estimator's ``score`` compares for lazy ``X`` (a FeatureBlocks, a
    dask array or DataFrame, a Dataset or a path): the margins, ``y`` and the weights.

    Parameters
    ----------
    est : estimator
        The fitted estimator (the feature names of a dask ``X`` are checked against it).
    X, y, sample_weight
        As passed to ``score``.
    margins : callable
        The estimator's margins of a FeatureBlocks.
    lazy_margins : callable
        The estimator's margins of the dask features of any other lazy ``X``.

    Returns
    -------
    tuple of (dask.array.Array, dask.array.Array, dask.array.Array or None)
        The margins, ``y`` (given, else the data's) and the weights (None: none).

    Raises
    ------
    ValueError
        No ``y`` given and the data has no targets.
    """
    if isinstance(X, FeatureBlocks):
        m = margins(X)
        yd, sw = block_targets(X, y, sample_weight)
    else:
        est._check_frame_names(X, reset=False)
        Xd, yd, sw, _ = lazy_inputs(X, y, sample_weight)
        m = lazy_margins(Xd)
    if yd is None:
        raise ValueError("score needs y (the dataset has no targets)")
    return m, yd, sw
