"""Hashed sparse datasets from DataFrames: :func:`hash_features`, and :func:`hash_frame` to
hash new rows the same way for ``predict`` (the hashing: :mod:`~daskgd.data.feature_hashing`,
as scikit-learn's ``FeatureHasher``).

**Where it runs.** A dask DataFrame is hashed on the workers, one task per partition, and the
hashed blocks are held there (persisted): the frame is read and hashed once, then the blocks
are counted (the partitions' unknown sizes), checked, and written (each row-chunk by the
worker that holds it) or trained on in place. Empty partitions are left out. A pandas frame
is hashed in this process. The target and weight columns are never features.

**The record.** The settings go to the attribute ``feature_hashing``
(:meth:`~daskgd.data.feature_hashing.FeatureHashing.to_attrs`), which :func:`hash_frame` reads.
A written group gets it once complete (:func:`~daskgd.data.write_zarr` records only its own
attributes): the record of the value check does not cover it, and stays valid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np

from daskgd.data.checks import Task
from daskgd.data.convert import as_dataset
from daskgd.data.csr import csr_meta
from daskgd.data.dataset import Dataset
from daskgd.data.feature_hashing import HASHING_ATTR, FeatureHashing, frame_kind
from daskgd.data.opening import open_zarr
from daskgd.data.store import (
    cluster_client,
    compute_on_cluster,
    open_group,
    store_exists,
    store_path,
)
from daskgd.data.write import write_zarr
from daskgd.errors import DataValidationError

__all__ = ["HASHING_ATTR", "FeatureHashing", "hash_features", "hash_frame"]


def _column(s: Any) -> np.ndarray:
    """A Series' values as numpy: nullable numbers as float64 with NaN for a missing one."""
    if getattr(s.dtype, "kind", "O") in "biuf" and not isinstance(s.dtype, np.dtype):
        return np.asarray(s.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.asarray(s.to_numpy())


def _hash_partition(part: Any, spec: FeatureHashing, i: int) -> tuple[Any, Any, Any]:
    """Partition ``i`` hashed: its CSR block, its labels and weights (or None)."""
    X = spec.transform(part, partition=i)
    w = None if spec.sample_weight is None else _column(part[spec.sample_weight])
    return X, _column(part[spec.target]), None if w is None else w.astype(np.float64)


def _block_size(block: tuple[Any, Any, Any]) -> tuple[int, int]:
    return int(block[0].shape[0]), int(block[0].nnz)


def _dask_arrays(
    frame: Any, spec: FeatureHashing, y_dtype: np.dtype[Any], client: Any
) -> tuple[da.Array, da.Array, da.Array | None, int]:
    """Hash ``frame`` on the cluster, the blocks held there: X, y, the weights, the nnz."""
    spec_d = dask.delayed(spec, traverse=False)  # once in the graph
    task = dask.delayed(_hash_partition)
    tasks = [task(p, spec_d, i) for i, p in enumerate(frame.to_delayed())]
    held = client.persist(tasks) if client is not None else list(dask.persist(*tasks))
    size = dask.delayed(_block_size, pure=True)
    sizes = compute_on_cluster([size(t) for t in held], client)  # raises a partition's error
    keep = [i for i, (n, _) in enumerate(sizes) if n]
    if not keep:
        raise DataValidationError("the frame has no rows: nothing to hash")

    def stack(item: int, shape: tuple[int, ...], dtype: Any, meta: Any) -> da.Array:
        return da.concatenate([da.from_delayed(held[i][item], shape=(sizes[i][0], *shape),
                                               dtype=dtype, meta=meta) for i in keep])  # fmt: skip

    d = spec.n_features
    X = stack(0, (d,), spec.dtype, csr_meta(d, spec.dtype))
    y = stack(1, (), y_dtype, np.empty(0, y_dtype))
    w = None
    if spec.sample_weight is not None:
        w = stack(2, (), np.float64, np.empty(0, np.float64))
    return X, y, w, sum(nnz for _, nnz in sizes)


def hash_features(
    frame: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    target: str,
    sample_weight: str | None = None,
    n_features: int = 2**20,
    categorical: Sequence[str] | None = None,
    numeric: Sequence[str] | None = None,
    alternate_sign: bool = True,
    dtype: Any = "float32",
    chunk_rows: int | None = None,
    task: Task | None = None,
    client: Any = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> Dataset:
    """Hash a DataFrame of categorical and numeric columns into a sparse daskgd dataset, as
    scikit-learn's ``FeatureHasher`` would on the whole frame (a row's features and the
    columns' roles: :mod:`~daskgd.data.feature_hashing`; where the work runs:
    :mod:`~daskgd.data.hashing`).

    Parameters
    ----------
    frame : pandas.DataFrame or dask.dataframe.DataFrame
        Feature columns, the target, the weights if any. A dask frame is hashed on the
        workers, partition by partition (their sizes need not be known).
    path : str or os.PathLike, optional
        Write the dataset there (:func:`~daskgd.data.write_zarr`) and return it opened;
        default: return it in memory (held by the workers for a dask frame).
    target : str
        The column of labels or targets (numbers or booleans).
    sample_weight : str, optional
        A column of non-negative row weights.
    n_features : int, default 2**20
        Columns of the hashed matrix, in ``[1, 2**31 - 1]``.
    categorical, numeric : list of str, optional
        Columns given these roles instead of the default by dtype.
    alternate_sign : bool, default True
        Sign each value by its feature's hash, so that collisions cancel in expectation.
    dtype : {"float32", "float64"}, default "float32"
    chunk_rows : int, optional
        Rows per row-chunk; default: a dask frame's non-empty partitions, else as
        :func:`~daskgd.data.write_zarr` and :func:`~daskgd.data.as_dataset` choose.
    task : {"regression", "classification"}, optional
        Stored and checked against the target, as by :func:`~daskgd.data.write_zarr`.
    client : distributed.Client, optional
        Where the work runs; default: dask's current scheduler.
    overwrite : bool, default False
        Replace a dataset at ``path`` (checked before anything is hashed).
    storage_options : dict, optional
        fsspec options for a URL ``path``.

    Returns
    -------
    Dataset
        Sparse, its values checked, its hashing in ``ds.attrs["feature_hashing"]``.

    Raises
    ------
    DataValidationError
        A missing target, weight or listed column, a non-string column name, a column of
        neither role, no rows, no feature column, a non-numeric target, a NaN or infinite
        numeric value (naming the column and the row), bad targets or weights.
    InvalidSettingError
        ``n_features`` out of range, a column in both lists, the target in one, a bad dtype.
    FileExistsError
        ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"city": ["Oslo", "Rome", None], "age": [30, 41, 25], "y": [1, 0, 1]})
    >>> ds = hash_features(df, target="y", n_features=2**10)
    >>> ds.is_sparse, ds.n_features, ds.nnz
    (True, 1024, 5)
    """
    kind = frame_kind(frame)
    spec = FeatureHashing.from_frame(
        frame, target=target, sample_weight=sample_weight, categorical=categorical,
        numeric=numeric, n_features=n_features, alternate_sign=alternate_sign, dtype=dtype,
    )  # fmt: skip
    meta = frame.iloc[:0] if kind == "pandas" else frame._meta
    y_dtype = _column(meta[target]).dtype
    if y_dtype.kind not in "biuf":
        raise DataValidationError(
            f"the target column {target!r} has dtype {meta[target].dtype}; daskgd needs numbers "
            f"or booleans: encode the labels, e.g. frame[{target!r}] = frame[{target!r}]"
            ".astype('category').cat.codes"
        )
    if chunk_rows is not None and int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    p = None if path is None else store_path(path)
    if p is not None and not overwrite and store_exists(p, storage_options):
        raise FileExistsError(f"{p!r} already exists; pass overwrite=True to replace it")
    X: Any
    y: Any
    w: Any
    if kind == "pandas":
        if len(frame) == 0:
            raise DataValidationError("the frame has no rows: nothing to hash")
        X, y = spec.transform(frame), _column(frame[target])
        w = None if sample_weight is None else _column(frame[sample_weight])
        nnz = int(X.nnz)
    else:
        client = cluster_client(client)
        X, y, w, nnz = _dask_arrays(frame, spec, y_dtype, client)
    if p is not None:
        write_zarr(p, X, y, w, chunk_rows=chunk_rows, task=task, client=client,
                   overwrite=overwrite, storage_options=storage_options)  # fmt: skip
        open_group(p, "r+", storage_options).attrs[HASHING_ATTR] = spec.to_attrs()
        return open_zarr(p, storage_options=storage_options, client=client)  # the record holds
    attrs = {HASHING_ATTR: spec.to_attrs()}
    if kind == "pandas":
        ds = as_dataset((X, y, w), task=task, chunk_rows=chunk_rows, client=client)
        ds.attrs.update(attrs)
        return ds
    if chunk_rows is not None:
        X, y = X.rechunk({0: int(chunk_rows)}), y.rechunk({0: int(chunk_rows)})
        w = None if w is None else w.rechunk({0: int(chunk_rows)})
    ds = Dataset(X, y, w, attrs=attrs, client=client, nnz=nnz)
    return as_dataset(ds, task=task, client=client)  # checks y and the weights (held)


def hash_frame(frame: Any, hashing: Any, *, client: Any = None) -> Any:
    """Hash new rows, for ``predict``, as :func:`hash_features` hashed a dataset.

    Parameters
    ----------
    frame : pandas.DataFrame or dask.dataframe.DataFrame
        Rows with the feature columns (in any order; other columns are ignored).
    hashing : Dataset, str, os.PathLike, mapping or FeatureHashing
        The dataset or its Zarr path, its attributes or their ``feature_hashing`` entry, or
        the hashing itself.
    client : distributed.Client, optional
        Where a dask frame's partition sizes are counted.

    Returns
    -------
    scipy.sparse.csr_matrix or dask.array.Array
        As :meth:`FeatureHashing.transform`.

    Raises
    ------
    DataValidationError
        No hashing recorded, a feature column missing, a bad numeric value.
    """
    if isinstance(hashing, str | os.PathLike):
        hashing = open_zarr(hashing, validate=False).attrs
    if isinstance(hashing, Dataset):
        hashing = hashing.attrs
    if isinstance(hashing, Mapping):
        hashing = FeatureHashing.from_attrs(hashing)
    if not isinstance(hashing, FeatureHashing):
        raise TypeError("hashing must be a Dataset, a Zarr path, attributes or a "
                        f"FeatureHashing, got {type(hashing).__name__}")  # fmt: skip
    return hashing.transform(frame, client=client)
