"""What the estimators take as data, turned into what the engine takes: a :class:`Dataset`.

``fit`` takes numpy arrays and pandas DataFrames (validated here, as scikit-learn does),
dask arrays and dask DataFrames, a :class:`daskgd.Dataset` or a Zarr path/URL. A Zarr path
or Dataset whose own targets and weights are used reaches the engine as that Dataset, so
the workers read their chunks straight from the store and the recorded classes are kept;
anything else becomes a Dataset of dask arrays. Every pass over the data made here runs on
the client given (the fit's cluster).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import dask
import dask.array as da
import numpy as np

from daskgd.data import Dataset, FeatureBlocks, as_dataset, check_dense
from daskgd.data.checks import OFFSET_HINT
from daskgd.data.convert import attach_offset, offset_to_dask
from daskgd.data.csr import is_scipy_sparse, sparse_to_dask

# The one private import of this package: the sparse-input check the engine makes too,
# private to daskgd.data until it is made public there.
from daskgd.errors import DataValidationError

__all__ = [
    "LazyData",
    "compute",
    "dask_map",
    "frames_to_arrays",
    "in_memory_dataset",
    "is_dask_frame",
    "is_lazy",
    "lazy_features",
    "lazy_inputs",
    "lazy_offset_inputs",
    "offset_array",
    "sample_weight_array",
]


def is_dask_frame(a: Any) -> bool:
    """A dask DataFrame or Series (checked by module: no import of dask.dataframe here)."""
    return (type(a).__module__ or "").startswith("dask") and hasattr(a, "to_dask_array")


def is_lazy(X: Any) -> bool:
    """Dask collections, Datasets, FeatureBlocks and Zarr paths stay on the cluster; anything
    else is numpy."""
    return isinstance(X, da.Array | Dataset | FeatureBlocks | str | os.PathLike) or is_dask_frame(X)


def compute(collections: Sequence[Any], client: Any) -> list[Any]:
    """Compute dask collections on ``client`` (never on another scheduler); None: dask's
    current scheduler (prediction-time helpers, where no cluster was chosen)."""
    if client is None:
        return list(dask.compute(*collections))
    return list(dask.compute(*collections, scheduler=client))


def frames_to_arrays(X: Any, y: Any, sample_weight: Any, client: Any) -> tuple[Any, Any, Any]:
    """Dask DataFrames/Series as dask arrays with known chunk sizes (one pass, on ``client``,
    to count each partition's rows); other inputs unchanged."""
    items = [X, y, sample_weight]
    frames = [i for i, a in enumerate(items) if is_dask_frame(a)]
    if not frames:
        return X, y, sample_weight
    counts = compute([items[i].map_partitions(len) for i in frames], client)
    for i, lengths in zip(frames, counts, strict=True):
        items[i] = items[i].to_dask_array(lengths=tuple(int(n) for n in np.asarray(lengths)))
    return items[0], items[1], items[2]


def sample_weight_array(sample_weight: Any, n: int, dtype: Any) -> np.ndarray | None:
    """In-memory weights checked as scikit-learn does: one finite weight >= 0 per row."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        sw = np.full(n, sample_weight, dtype=dtype)
    else:
        sw = np.asarray(sample_weight, dtype=dtype)
    if sw.ndim != 1 or sw.shape[0] != n:
        raise ValueError(
            f"sample_weight.shape == {sw.shape}, expected ({n},): one weight per row of X"
        )
    if not np.all(np.isfinite(sw)) or np.any(sw < 0):
        raise ValueError("sample_weight must hold finite, non-negative values")
    if not sw.sum() > 0:
        raise ValueError("sample_weight sums to zero: at least one row needs a positive weight")
    return sw


def offset_array(offset: Any, n: int) -> np.ndarray | None:
    """In-memory offsets checked: one finite float per row (None stays None)."""
    if offset is None:
        return None
    off = np.asarray(offset, dtype=np.float64)
    if off.ndim != 1 or off.shape[0] != n:
        raise ValueError(f"offset.shape == {off.shape}, expected ({n},): one offset per row of X")
    if not np.all(np.isfinite(off)):
        first = int(np.flatnonzero(~np.isfinite(off))[0])
        raise ValueError(
            f"offset must hold finite values; row {first} holds {off[first]!r}. {OFFSET_HINT}"
        )
    return np.ascontiguousarray(off)


def _as_dask_1d(a: Any, chunks: tuple[int, ...], name: str) -> da.Array:
    if isinstance(a, da.Array):
        if a.ndim != 1:
            raise DataValidationError(f"{name} must be 1-D, got shape {a.shape}")
        return a.rechunk({0: chunks})
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise DataValidationError(f"{name} must be 1-D, got shape {arr.shape}")
    return da.from_array(arr, chunks=(chunks,))


class LazyData(NamedTuple):
    """Lazy input: X (dask, float, one column chunk), y and weights (dask or None), and
    ``dataset``: the Dataset opened from a path, or passed, when X, y and the weights are
    its own arrays unchanged (hand it to the engine as it is: path and classes kept)."""

    X: da.Array
    y: da.Array | None
    sample_weight: da.Array | None
    dataset: Dataset | None


def lazy_inputs(X: Any, y: Any, sample_weight: Any, client: Any = None) -> LazyData:
    """X, y and weights from dask arrays or frames, a Dataset or a Zarr path.

    A path is opened once (its classes, when the store does not record them, are found on
    ``client``); y and weights default to the dataset's. Frames' row counts are found on
    ``client``: training needs known chunk sizes.
    """
    return _lazy(X, y, sample_weight, client, known_rows=True)[0]


def lazy_offset_inputs(
    X: Any, y: Any, sample_weight: Any, offset: Any, client: Any = None
) -> tuple[LazyData, da.Array | None]:
    """:func:`lazy_inputs` and the offsets: ``offset`` (numpy, dask or a Series, cut into
    the row-chunks of X) when given, else those of a Dataset or Zarr group ``X`` (None
    without). Given offsets replace the dataset's: it then reaches the engine with them
    (read through dask); only they are checked (on ``client``), the rest as before.
    """
    data, source = _lazy(X, y, sample_weight, client, known_rows=True)
    if offset is None:
        return data, None if source is None else source.offset
    if data.dataset is not None:
        ds = attach_offset(data.dataset, offset, validate=True, client=client)
        return data._replace(dataset=ds), ds.offset
    return data, offset_to_dask(offset, data.X.chunks[0])


def lazy_features(X: Any) -> da.Array:
    """The features of lazy input for prediction: no pass over the data (a frame's row
    chunks may stay unknown; the prediction is lazy anyway)."""
    return _lazy(X, None, None, None, known_rows=False)[0].X


def _lazy(
    X: Any, y: Any, sample_weight: Any, client: Any, *, known_rows: bool
) -> tuple[LazyData, Dataset | None]:
    """The lazy input, and the Dataset it came from (passed, or opened from a path)."""
    ds = source = None
    if isinstance(X, FeatureBlocks):
        # only the estimators that partition by features take it (their own route)
        raise TypeError(
            "concat_features() data is taken by SGDRegressor, SGDClassifier, LinearRegression "
            "and LogisticRegression with partition='features' (and by daskgd.fit): pass the "
            "columns as one dataset here"
        )
    if isinstance(X, str | os.PathLike):
        # for training, checked now: a group daskgd wrote is trusted by its record (no
        # pass), and the engine does not scan a Dataset checked already
        X = as_dataset(X, validate=known_rows, client=client)
    if isinstance(X, Dataset):
        source = X
        ds = X if y is None and sample_weight is None else None
        y = X.y if y is None else y
        sample_weight = X.sample_weight if sample_weight is None else sample_weight
        X = X.X
    if known_rows:
        X, y, sample_weight = frames_to_arrays(X, y, sample_weight, client)
    elif is_dask_frame(X):
        X = X.to_dask_array()
    check_dense(X, y, sample_weight)  # a dask array of sparse blocks
    if X.ndim != 2:
        raise DataValidationError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if np.dtype(X.dtype).kind in "biu":
        X, ds = X.astype(np.float64), None
    elif np.dtype(X.dtype) not in (np.float32, np.float64):
        raise DataValidationError(f"X must be float32 or float64, got {X.dtype}")
    if known_rows and any(math.isnan(c) for c in X.chunks[0]):
        raise DataValidationError("X has unknown chunk sizes; call X.compute_chunk_sizes() first")
    if len(X.chunks[1]) != 1:
        X, ds = X.rechunk({1: -1}), None
    if y is not None:
        y = _as_dask_1d(y, X.chunks[0], "y")
        if y.shape[0] != X.shape[0]:
            raise DataValidationError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
    if isinstance(sample_weight, numbers.Number):
        sample_weight = da.full(X.shape[0], sample_weight, chunks=X.chunks[0], dtype=X.dtype)
    elif sample_weight is not None:
        sample_weight = _as_dask_1d(sample_weight, X.chunks[0], "sample_weight")
        if sample_weight.shape[0] != X.shape[0]:
            raise DataValidationError(
                f"X has {X.shape[0]} rows but sample_weight has {sample_weight.shape[0]}"
            )
    return LazyData(X, y, sample_weight, ds), source


def in_memory_dataset(
    arrays: tuple[np.ndarray | None, ...], n_workers: int, classes: np.ndarray | None,
    per_worker: int = 1,
) -> Dataset:  # fmt: skip
    """A Dataset over validated numpy ``(X, y[, sample_weight[, offset]])`` (the weights may
    be None when offsets follow), ``per_worker`` row-chunks per worker (so every worker gets
    rows), with the targets' ``classes`` in the engine's encoding."""
    X, y = arrays[0], arrays[1]
    assert X is not None and y is not None
    rows = max(1, -(-X.shape[0] // max(1, n_workers * per_worker)))
    Xd = (
        sparse_to_dask(X, rows)
        if is_scipy_sparse(X)
        else da.from_array(X, chunks=(rows, X.shape[1]))
    )
    more = [None if a is None else da.from_array(a, chunks=(Xd.chunks[0],)) for a in arrays[2:4]]
    wd, od = (*more, None, None)[:2]
    yd = da.from_array(y, chunks=(Xd.chunks[0],))
    nnz = int(getattr(X, "nnz", 0)) if is_scipy_sparse(X) else None
    return Dataset(Xd, yd, wd, offset=od, classes=classes, nnz=nnz)


def dask_map(X: da.Array, fn: Callable[[np.ndarray], np.ndarray], k: int | None, dtype: Any):
    """Row-wise ``fn`` over the blocks of ``X``: an (n,) or (n, k) lazy result."""
    if k is None:
        return da.map_blocks(fn, X, drop_axis=1, dtype=dtype, meta=np.empty((0,), dtype=dtype))
    return da.map_blocks(fn, X, chunks=(X.chunks[0], (k,)), dtype=dtype,
                         meta=np.empty((0, 0), dtype=dtype))  # fmt: skip
