"""What users pass to ``fit``, made into a :class:`~daskgd.data.Dataset`: :func:`as_dataset`.

numpy and dask arrays, pandas and dask DataFrames (and Series for ``y``) become dask
arrays with common row-chunks, after the structural checks.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Literal

import dask.array as da
import numpy as np

from daskgd.data.checks import (
    Task,
    block_stats,
    check_dense,
    check_dtype_1d,
    check_dtype_X,
    check_offset_values,
    check_shapes,
    classes_in_memory,
    report_bad,
    validate_local,
)
from daskgd.data.csr import (
    canonical_block,
    canonical_csr,
    csr_meta,
    is_scipy_sparse,
    is_sparse_array,
    sparse_to_dask,
)
from daskgd.data.dataset import Dataset
from daskgd.data.opening import open_zarr
from daskgd.data.sparse_store import auto_csr_chunk_rows
from daskgd.data.store import auto_chunk_rows
from daskgd.errors import DataValidationError

__all__ = [
    "arrays_to_dask",
    "as_dataset",
    "attach_offset",
    "csr_input",
    "frames_to_arrays",
    "offset_to_dask",
    "offset_values",
]


def _frame_kind(a: Any) -> str | None:
    """ "pandas" or "dask" for a DataFrame or Series of that library, else None.

    Neither library is imported here: a frame's library is already imported.
    """
    if "pandas" in sys.modules:
        pd = sys.modules["pandas"]
        if isinstance(a, pd.DataFrame | pd.Series):
            return "pandas"
    if "dask.dataframe" in sys.modules:
        dd = sys.modules["dask.dataframe"]
        if isinstance(a, dd.DataFrame | dd.Series):
            return "dask"
    return None


def _frame_features(X: Any, kind: str) -> tuple[Any, list[str] | None]:
    """A DataFrame ``X`` as a float array (numpy or dask) and its column names."""
    bad = [str(c) for c, dt in X.dtypes.items() if getattr(dt, "kind", "O") not in "biuf"]
    if bad:
        raise DataValidationError(
            f"X has non-numeric column(s) {bad} (dtypes "
            f"{[str(X.dtypes[c]) for c in X.columns if str(c) in bad]}); daskgd needs numeric "
            "features: encode them as numbers (e.g. pandas.get_dummies) or drop them"
        )
    if len(X.columns) and all(getattr(dt, "kind", "") == "f" and dt.itemsize == 4
                              for dt in X.dtypes):  # fmt: skip
        dtype: Any = np.float32
    else:
        dtype = np.float64
    # like scikit-learn: names only when every column name is a string
    names = [c for c in X.columns] if all(isinstance(c, str) for c in X.columns) else None
    if kind == "pandas":
        # nullable columns: a missing value becomes NaN, which validation refuses
        return X.to_numpy(dtype=dtype, na_value=np.nan), names
    # lengths=True computes the partitions' sizes when they are unknown (one pass)
    return X.to_dask_array(lengths=True).astype(dtype), names


def _frame_column(a: Any, name: str, kind: str) -> Any:
    """A Series (``y``, ``sample_weight``) as a numpy or dask array of its values."""
    if a.ndim != 1:
        raise DataValidationError(
            f"{name} must be 1-D (a Series), got a DataFrame with {len(a.columns)} column(s); "
            f"pass a single column, e.g. df['{name}']"
        )
    dt = a.dtype
    if kind == "pandas":
        if getattr(dt, "kind", "O") in "biuf" and not isinstance(dt, np.dtype):
            # a nullable extension dtype: floats, with NaN for a missing value
            return a.to_numpy(dtype=np.float64, na_value=np.nan)
        return a.to_numpy()
    return a.to_dask_array(lengths=True)


def frames_to_arrays(
    X: Any, y: Any, sample_weight: Any = None
) -> tuple[Any, Any, Any, list[str] | None]:
    """pandas or dask DataFrames/Series made arrays; other inputs returned as they are.

    Parameters
    ----------
    X : array-like or DataFrame
        A DataFrame's columns must be numeric (integers, floats, booleans): they become
        float64 features (float32 when every column is float32).
    y, sample_weight : array-like or Series
        Their values, as numpy (pandas) or dask (dask) arrays.

    Returns
    -------
    X, y, sample_weight
        numpy or dask arrays (dask DataFrames: with their partitions' sizes computed).
    feature_names : list of str or None
        The column names of a DataFrame ``X`` when they are all strings, else None.

    Raises
    ------
    DataValidationError
        Naming non-numeric columns of ``X``, or a DataFrame given for ``y``.
    """
    names = None
    kind = _frame_kind(X)
    if kind is not None:
        if X.ndim != 2:
            raise DataValidationError(
                "X is a Series; pass a DataFrame (X.to_frame() for a single feature)"
            )
        X, names = _frame_features(X, kind)
    out = [X]
    for name, a in (("y", y), ("sample_weight", sample_weight)):
        kind = None if a is None else _frame_kind(a)
        out.append(a if kind is None else _frame_column(a, name, kind))
    return out[0], out[1], out[2], names


def _to_dask(a: Any, name: str, rows: int | tuple[int, ...]) -> da.Array:
    if isinstance(a, da.Array):
        return a
    arr = np.asarray(a)
    if arr.ndim == 0:
        raise DataValidationError(f"{name} must be an array, got a scalar")
    chunks = (rows, *tuple(arr.shape[1:]))
    return da.from_array(arr, chunks=chunks)


def csr_input(X: Any, chunk_rows: int | None) -> tuple[Any, int]:
    """A scipy.sparse ``X`` in memory as a checked, canonical ``csr_matrix``
    (:func:`~daskgd.data.csr.canonical_csr`), and its rows per row-chunk: ``chunk_rows``, or
    about 64 MiB of values and indices. Errors name the row-chunk and the row."""
    n, d = X.shape
    if chunk_rows is None:
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64  # as stored
        rows = auto_csr_chunk_rows(n, X.nnz, dtype, d)
    elif int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    else:
        rows = int(chunk_rows)
    return canonical_csr(X, chunk_rows=rows), rows


def _sparse_to_dask(X: Any, chunk_rows: int | None) -> da.Array:
    """A scipy.sparse matrix or a dask array of scipy.sparse blocks as a dask array of
    canonical ``csr_matrix`` blocks (dask's row chunks kept unless ``chunk_rows``)."""
    d = X.shape[1]
    if not isinstance(X, da.Array):
        X, rows = csr_input(X, chunk_rows)
        return sparse_to_dask(X, rows)
    if any(np.isnan(c) for c in X.chunks[0]):
        raise DataValidationError(
            "X has unknown chunk sizes (a dask array from a DataFrame?); call "
            "X.compute_chunk_sizes() first"
        )
    if len(X.chunks[1]) != 1:
        X = X.rechunk({1: -1})
    dtype = np.dtype(X.dtype) if np.dtype(X.dtype).kind == "f" else np.dtype(np.float64)
    if dtype not in (np.float32, np.float64):
        dtype = np.dtype(np.float64)  # float16: promoted, as canonical_csr does
    # each block made canonical CSR where it is computed (checked, sorted, summed)
    Xd = X.map_blocks(canonical_block, dtype=dtype, meta=csr_meta(d, dtype))
    return Xd if chunk_rows is None else Xd.rechunk({0: int(chunk_rows)})


def arrays_to_dask(
    X: Any, y: Any, sample_weight: Any, chunk_rows: int | None
) -> tuple[da.Array, da.Array, da.Array | None]:
    """Numpy or dask arrays -> dask arrays with common row chunks, after structural checks.

    A sparse ``X`` (a scipy.sparse CSR matrix: :func:`csr_input`, or a dask array of
    scipy.sparse blocks) becomes a dask array of canonical ``csr_matrix`` blocks; in
    memory, cut into row-chunks of about 64 MiB of its values and indices unless
    ``chunk_rows``.
    """
    check_dense(X, y, sample_weight)
    sparse = is_sparse_array(X)
    x_shape = tuple(X.shape) if sparse else np.shape(X)
    shapes = [x_shape, np.shape(y), None if sample_weight is None else np.shape(sample_weight)]
    check_shapes(*shapes)
    Xdt = np.dtype(X.dtype) if hasattr(X, "dtype") else np.asarray(X).dtype
    if sparse and Xdt.kind in "biuf":
        pass  # promoted to float where made canonical (canonical_csr, canonical_block)
    elif Xdt.kind in "biu":
        X = X.astype(np.float64)  # integer features: promote, a lossless and common case
    else:
        check_dtype_X(Xdt)
    check_dtype_1d("y", np.dtype(y.dtype) if hasattr(y, "dtype") else np.asarray(y).dtype)
    if sample_weight is not None:
        wdt = getattr(sample_weight, "dtype", None) or np.asarray(sample_weight).dtype
        check_dtype_1d("sample_weight", np.dtype(wdt))
    n, d = shapes[0]
    if chunk_rows is not None and int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if sparse:
        Xd = _sparse_to_dask(X, None if chunk_rows is None else int(chunk_rows))
        rows: int | tuple[int, ...] = Xd.chunks[0]
    elif chunk_rows is not None:
        rows = int(chunk_rows)
    elif isinstance(X, da.Array):
        rows = X.chunks[0]
    else:
        rows = auto_chunk_rows(n, d, np.dtype(getattr(X, "dtype", np.float64)).itemsize)
    if not sparse:
        Xd = _to_dask(X, "X", rows).rechunk({0: rows, 1: -1})
    yd = _to_dask(y, "y", rows).rechunk({0: Xd.chunks[0]})
    wd = None
    if sample_weight is not None:
        wd = _to_dask(sample_weight, "sample_weight", rows).rechunk({0: Xd.chunks[0]})
    return Xd, yd, wd


def offset_values(offset: Any) -> Any:
    """A Series of offsets as a numpy or dask array of its values; anything else as is."""
    kind = _frame_kind(offset)
    return offset if kind is None else _frame_column(offset, "offset", kind)


def offset_to_dask(offset: Any, chunks: tuple[int, ...]) -> da.Array:
    """Offsets (numpy, dask, a pandas or dask Series) as a float64 dask array cut into the
    row-chunks ``chunks`` of ``X``.

    Raises
    ------
    DataValidationError
        Not 1-D, not one value per row, not numeric, sparse, or a dask array whose chunk
        sizes are unknown.
    """
    offset = offset_values(offset)
    check_dense(None, None, None, offset)
    if not isinstance(offset, da.Array):
        offset = np.asarray(offset)
    n = int(sum(chunks))
    shape = tuple(offset.shape)
    if len(shape) != 1 or shape[0] != n:
        raise DataValidationError(
            f"offset must be 1-D with one value per row of X ({n},), got shape {shape}"
        )
    check_dtype_1d("offset", np.dtype(offset.dtype))
    if isinstance(offset, da.Array):
        if any(np.isnan(c) for c in offset.chunks[0]):
            raise DataValidationError(
                "offset has unknown chunk sizes; call offset.compute_chunk_sizes() first"
            )
        return offset.astype(np.float64).rechunk({0: chunks})
    return da.from_array(np.asarray(offset, dtype=np.float64), chunks=(chunks,))


def attach_offset(
    ds: Dataset, offset: Any, *, validate: bool | Literal["full"], client: Any = None
) -> Dataset:
    """``ds`` with ``offset`` as its offsets (see :meth:`Dataset.with_offset`), checked
    finite when ``validate`` (in this process for numpy offsets, else on ``client``)."""
    offset = offset_values(offset)
    o = offset_to_dask(offset, ds.X.chunks[0])
    if validate:
        if isinstance(offset, da.Array):
            check_offset_values(o, client)
        else:
            a = np.asarray(offset, dtype=np.float64)
            bounds = np.cumsum((0, *ds.chunks))
            stats = [block_stats(a[bounds[i] : bounds[i + 1]], "value")
                     for i in range(ds.n_chunks)]  # fmt: skip
            report_bad("offset", stats, ds.chunks)
    return ds.with_offset(o)


def as_dataset(
    data: Any,
    *,
    offset: Any = None,
    validate: bool | Literal["full"] = True,
    task: Task | None = None,
    chunk_rows: int | None = None,
    storage_options: dict[str, Any] | None = None,
    client: Any = None,
) -> Dataset:
    """Turn what a user passes to ``fit`` into a :class:`Dataset`.

    Parameters
    ----------
    data : Dataset, str, os.PathLike or tuple
        A Dataset (returned as is, checked when ``validate`` unless it was checked
        already), a Zarr path/URL (:func:`~daskgd.data.open_zarr`), or ``(X, y)`` /
        ``(X, y, sample_weight)`` of numpy or dask arrays, pandas or dask DataFrames for
        ``X`` and Series for ``y``, the weights and the offsets. Numpy and pandas input is cut into
        row-chunks of ``chunk_rows`` rows (default: about 64 MiB of ``X``); dask input
        keeps its row chunks (a dask DataFrame's partitions, their sizes computed when
        unknown), ``y`` and weights are rechunked to match ``X``. Integer ``X`` is
        promoted to float64, and so are a DataFrame's numeric columns (float32 when all
        are float32); the column names become :attr:`Dataset.feature_names`.
        ``X`` may be sparse: a scipy.sparse matrix or array (CSR; other formats are
        converted with ``.tocsr()``), or a dask array of scipy.sparse blocks; the Dataset
        is then sparse (:attr:`Dataset.is_sparse`), its ``X`` a dask array of canonical
        ``csr_matrix`` blocks: indices sorted per row, duplicate indices summed
        (:mod:`~daskgd.data.csr`).
    offset : array-like, dask array or Series, optional
        ``(n_samples,)`` finite offsets added to each row's margin (``log(exposure)`` for
        the log-link families), cut into the row-chunks of ``X``; they replace the offsets
        a Dataset or Zarr group holds (the data is then read through dask, not straight
        from the store).
    validate : bool or "full", default True
        Scan for NaN/inf and bad weights (one task per chunk); a Dataset or Zarr group
        whose values were checked already is not scanned again, unless ``"full"``.
    task : {"regression", "classification"}, optional
        Also check that ``y`` fits this task (the class labels of dask ``y`` are found
        in the validation pass when "classification"; never for "regression").
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
    if validate not in (True, False, "full"):
        raise ValueError(f"validate must be True, False or 'full', got {validate!r}")
    if offset is not None and isinstance(data, Dataset | str | os.PathLike):
        ds = as_dataset(data, validate=validate, task=task, storage_options=storage_options,
                        client=client)  # fmt: skip
        return attach_offset(ds, offset, validate=validate, client=client)
    if isinstance(data, Dataset):
        if validate == "full" or (validate and not data.values_checked):
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
    X, y, w, names = frames_to_arrays(*(*data, None)[:3])
    if is_scipy_sparse(X):
        X, chunk_rows = csr_input(X, chunk_rows)  # once: the validation reads the same matrix
    Xd, yd, wd = arrays_to_dask(X, y, w, chunk_rows)
    offset = None if offset is None else offset_values(offset)
    od = None if offset is None else offset_to_dask(offset, Xd.chunks[0])
    extra: dict[str, Any] = {}
    if not isinstance(y, da.Array):  # in memory: cheap, found here unless not needed
        extra["classes"] = None if task == "regression" else classes_in_memory(y)
    elif task == "regression":
        extra["classes"] = None  # a regression target: never scanned for labels
    if is_scipy_sparse(X):
        extra["nnz"] = int(X.nnz)
    ds = Dataset(Xd, yd, wd, offset=od, feature_names=names, client=client, **extra)
    if validate:
        if isinstance(offset, da.Array) or isinstance(X, da.Array) or isinstance(y, da.Array):
            ds.validate(client, find_labels=task == "classification" and not ds.classes_known)
        else:  # data already in this process: check it here, do not ship it to workers
            validate_local(
                X if is_scipy_sparse(X) else np.asarray(X), np.asarray(y),
                None if w is None else np.asarray(w), ds.chunks,
                None if offset is None else np.asarray(offset, dtype=np.float64),
            )  # fmt: skip
            ds.values_checked = True
    if task is not None:
        ds.check_task(task)
    return ds
