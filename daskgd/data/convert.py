"""What users pass to ``fit``, made into a :class:`~daskgd.data.Dataset`: :func:`as_dataset`.

numpy and dask arrays, pandas and dask DataFrames (and Series for ``y``) become dask
arrays with common row-chunks, after the structural checks.
"""

from __future__ import annotations

import os
from typing import Any

import dask.array as da
import numpy as np

from daskgd.data.checks import (
    Task,
    check_dense,
    check_dtype_1d,
    check_dtype_X,
    check_shapes,
    classes_in_memory,
    find_classes,
    validate_local,
)
from daskgd.data.dataset import Dataset
from daskgd.data.opening import open_zarr
from daskgd.data.store import auto_chunk_rows
from daskgd.errors import DataValidationError

__all__ = ["arrays_to_dask", "as_dataset"]


def _to_dask(a: Any, name: str, rows: int | tuple[int, ...]) -> da.Array:
    if isinstance(a, da.Array):
        return a
    arr = np.asarray(a)
    if arr.ndim == 0:
        raise DataValidationError(f"{name} must be an array, got a scalar")
    chunks = (rows, *tuple(arr.shape[1:]))
    return da.from_array(arr, chunks=chunks)


def arrays_to_dask(
    X: Any, y: Any, sample_weight: Any, chunk_rows: int | None
) -> tuple[da.Array, da.Array, da.Array | None]:
    """Numpy or dask arrays -> dask arrays with common row chunks, after structural checks."""
    check_dense(X, y, sample_weight)
    shapes = [np.shape(X), np.shape(y), None if sample_weight is None else np.shape(sample_weight)]
    check_shapes(*shapes)
    Xdt = np.dtype(X.dtype) if hasattr(X, "dtype") else np.asarray(X).dtype
    if Xdt.kind in "biu":
        X = X.astype(np.float64)  # integer features: promote, a lossless and common case
    else:
        check_dtype_X(Xdt)
    check_dtype_1d("y", np.dtype(y.dtype) if hasattr(y, "dtype") else np.asarray(y).dtype)
    if sample_weight is not None:
        wdt = getattr(sample_weight, "dtype", None) or np.asarray(sample_weight).dtype
        check_dtype_1d("sample_weight", np.dtype(wdt))
    n, d = shapes[0]
    if chunk_rows is not None:
        if int(chunk_rows) < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        rows: int | tuple[int, ...] = int(chunk_rows)
    elif isinstance(X, da.Array):
        rows = X.chunks[0]
    else:
        rows = auto_chunk_rows(n, d, np.dtype(getattr(X, "dtype", np.float64)).itemsize)
    Xd = _to_dask(X, "X", rows).rechunk({0: rows, 1: -1})
    yd = _to_dask(y, "y", rows).rechunk({0: Xd.chunks[0]})
    wd = None
    if sample_weight is not None:
        wd = _to_dask(sample_weight, "sample_weight", rows).rechunk({0: Xd.chunks[0]})
    return Xd, yd, wd


def as_dataset(
    data: Any,
    *,
    validate: bool = True,
    task: Task | None = None,
    chunk_rows: int | None = None,
    storage_options: dict[str, Any] | None = None,
    client: Any = None,
) -> Dataset:
    """Turn what a user passes to ``fit`` into a :class:`Dataset`.

    Parameters
    ----------
    data : Dataset, str, os.PathLike or tuple
        A Dataset (returned as is, or checked when ``validate``), a Zarr path/URL, or
        ``(X, y)`` / ``(X, y, sample_weight)`` of numpy or dask arrays. Numpy input is
        cut into row-chunks of ``chunk_rows`` rows (default: about 64 MiB of ``X``);
        dask input keeps its row chunks, ``y`` and weights are rechunked to match ``X``.
        Integer ``X`` is promoted to float64.
    validate : bool, default True
        Scan for NaN/inf and bad weights (one task per chunk).
    task : {"regression", "classification"}, optional
        Also check that ``y`` fits this task.
    chunk_rows : int, optional
        Rows per chunk for in-memory input.
    storage_options : dict, optional
        fsspec options when ``data`` is a URL.
    client : distributed.Client, optional
        Where the scan runs; default: dask's current scheduler.

    Returns
    -------
    Dataset
    """
    if isinstance(data, Dataset):
        if validate:
            data.validate(client)
        if task is not None:
            data.check_task(task)
        return data
    if isinstance(data, str | os.PathLike):
        return open_zarr(
            data, storage_options=storage_options, validate=validate, task=task, client=client
        )
    if not isinstance(data, tuple | list) or len(data) not in (2, 3):
        raise TypeError(
            "data must be a Dataset, a Zarr path or URL, or a tuple (X, y) or "
            f"(X, y, sample_weight); got {type(data).__name__}"
        )
    X, y, w = (*data, None)[:3]
    Xd, yd, wd = arrays_to_dask(X, y, w, chunk_rows)
    classes = classes_in_memory(y) if not isinstance(y, da.Array) else find_classes(yd, client)
    ds = Dataset(Xd, yd, wd, classes=classes)
    if validate:
        if isinstance(X, da.Array) or isinstance(y, da.Array):
            ds.validate(client)
        else:  # data already in this process: check it here, do not ship it to workers
            validate_local(
                np.asarray(X), np.asarray(y), None if w is None else np.asarray(w), ds.chunks
            )
    if task is not None:
        ds.check_task(task)
    return ds
