"""Writing datasets: :func:`write_zarr`, from numpy (in this process) or dask (on the workers).

Every value is checked as it is written, every chunk's digest recorded, and the group
built and moved into place by :class:`~daskgd.data.staging.DatasetWrite`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np

from daskgd.data.checks import (
    MAX_CLASSES,
    Task,
    block_stats,
    check_labels,
    classes_in_memory,
    find_classes,
    validate_local,
)
from daskgd.data.chunkfiles import block_digests, chunk_digest
from daskgd.data.convert import (
    arrays_to_dask,
    csr_input,
    frames_to_arrays,
    offset_to_dask,
    offset_values,
)
from daskgd.data.csr import is_scipy_sparse, is_sparse_array
from daskgd.data.dataset import Dataset
from daskgd.data.opening import open_zarr
from daskgd.data.sparse_write import csr_write_tasks, plan_csr, write_csr_local
from daskgd.data.staging import DEFAULT_COMPRESSOR, DatasetWrite, check_chunk_cols
from daskgd.data.store import (
    auto_chunk_rows,
    cluster_client,
    compute_on_cluster,
    store_path,
    writable_array,
)
from daskgd.errors import DataValidationError

__all__ = ["write_zarr"]


def _check_block(block: np.ndarray, name: str, kind: str, i: int, start: int) -> float:
    """Refuse NaN/inf (and negative weights) in chunk ``i`` of ``name``, rows from ``start``.

    Returns the block's sum when it holds weights (for the record of the check).
    """
    n_bad, first, total = block_stats(block, kind)
    if n_bad:
        what = "negative, NaN or inf" if kind == "weight" else "NaN or inf"
        raise DataValidationError(
            f"{name} contains {what} values in chunk {i} (first bad row {start + first}); "
            "clean the data, or pass validate=False to skip this check"
        )
    return total


def _write_block(
    target: Any,
    block: np.ndarray,
    name: str,
    kind: str | None,
    i: int,
    start: int,
    chunk_cols: int | None = None,
) -> tuple[Exception | None, int | tuple[int, list[int]] | None, float]:
    """Write one row-chunk to Zarr (checked first when ``kind`` is given).

    Returns ``(failure, digest, weight sum)``: the failure instead of raising it, so that the caller
    can wait for every chunk task to end before it removes a half-written group (a raised
    failure would end the computation while sibling chunks may still be writing), and the
    chunk's :func:`~daskgd.data.chunkio.chunk_digest` as stored (with ``chunk_cols``: that and
    the digest of each of its blocks), and the sum of a checked block of weights (0 otherwise).
    """
    total = 0.0
    try:
        if is_scipy_sparse(block):
            # dask keeps no meta for some formats (COO): the array looked dense
            raise DataValidationError(
                f"{name}'s chunk {i} is a scipy.sparse {type(block).__name__}, but the dask "
                "array's meta says numpy blocks (dask keeps none for COO blocks). Make the "
                "blocks CSR and say so: X.map_blocks(lambda b: b.tocsr(), "
                "meta=scipy.sparse.csr_matrix((0, n_features), dtype=X.dtype))"
            )
        if kind is not None:
            total = _check_block(block, name, kind, i, start)
        values = np.ascontiguousarray(block, dtype=target.dtype)
        target[start : start + values.shape[0]] = values
    except Exception as exc:
        return exc, None, 0.0
    if chunk_cols is not None:
        return None, (chunk_digest(values), block_digests(values, chunk_cols)), total
    return None, chunk_digest(values), total


def write_zarr(
    path: str | os.PathLike[str],
    X: Any,
    y: Any,
    sample_weight: Any = None,
    *,
    offset: Any = None,
    chunk_rows: int | None = None,
    chunk_cols: int | None = None,
    compressor: Any = DEFAULT_COMPRESSOR,
    overwrite: bool = False,
    client: Any = None,
    inner_chunk_rows: int | None = None,
    feature_names: Sequence[str] | None = None,
    task: Task | None = None,
    validate: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> Dataset:
    """Write ``X``, ``y`` (and ``sample_weight``, ``offset``) as a daskgd Zarr dataset.

    Dask input is written in parallel by the workers (each writes its own row-chunks;
    nothing is gathered on the client). Numpy input is written from this process.

    Parameters
    ----------
    path : str or os.PathLike
        Local path or fsspec URL of the new group.
    X : array-like, scipy.sparse matrix or dask.array.Array
        ``(n_samples, n_features)`` float32/float64 (integers are promoted to float64).
        Sparse ``X`` (a scipy.sparse matrix or array, or a dask array of scipy.sparse
        blocks) is stored as CSR (:mod:`~daskgd.data.sparse_store`, format version 2):
        other formats are converted with ``.tocsr()``, each row's indices are sorted and
        duplicate indices in a row summed (explicit zeros are kept). A dask ``X`` is read
        twice, both times on the workers: once to count each row-chunk's non-zeros, once
        to write them where the count placed them (persist an expensive graph first).
    y : array-like or dask.array.Array
        ``(n_samples,)`` targets or class labels.
    sample_weight : array-like or dask.array.Array, optional
        ``(n_samples,)`` non-negative weights, stored as float64.
    offset : array-like, dask array or Series, optional
        ``(n_samples,)`` finite offsets added to each row's margin (``log(exposure)`` for
        the log-link families), stored as float64 in the same row-chunks.
    chunk_rows : int, optional
        Rows per row-chunk; default: the row chunks of dask ``X`` when regular, else about
        64 MiB of ``X`` per chunk (sparse ``X``: of its values and indices; for a sparse
        dask ``X`` with irregular chunks, its largest chunk).
    chunk_cols : int, optional
        Dense ``X`` only: also cut its columns into chunks of this many (the last one
        narrower), so that a column range can be read without the rest
        (:func:`~daskgd.data.columns.read_columns`, for feature partitioning). ``X`` is
        stored in blocks of ``(chunk_rows, chunk_cols)`` (with ``inner_chunk_rows``: shards
        of that shape, of inner chunks of ``(inner_chunk_rows, chunk_cols)``). The attribute
        ``chunk_cols`` records it, and ``digests["X_blocks"][i][j]`` the digest of block
        ``(i, j)`` besides each row-chunk's digest. Default: one chunk along the columns.
    compressor : zarr codec, list of codecs, or None
        Default Zstandard level 1; None stores uncompressed.
    overwrite : bool, default False
        Replace whatever is at ``path``; otherwise a :class:`FileExistsError`.
    client : distributed.Client, optional
        Runs the write; default: dask's current scheduler.
    inner_chunk_rows : int, optional
        Shard the arrays: each row-chunk (each block with ``chunk_cols``) becomes one shard
        of inner chunks of this many rows (must divide ``chunk_rows``). Not offered for
        sparse ``X``.
    feature_names : sequence of str, optional
        Stored in the attributes; length ``n_features``. Default: the column names of a
        DataFrame ``X`` (pandas and dask DataFrames are taken as by
        :func:`~daskgd.data.as_dataset`).
    task : {"regression", "classification"}, optional
        Stored in the attributes and checked against ``y``; default: classification
        when ``y`` has an integer dtype, else regression.
    validate : bool, default True
        Refuse NaN/inf in X, y or the offsets and negative/non-finite weights (checked per
        chunk as it is written; the partial group is removed).
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    Dataset
        The written dataset, opened with :func:`open_zarr` (``validate=False``).

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    DataValidationError
        Bad shapes, dtypes or values; nothing that looks complete is left behind.
    ValueError
        ``chunk_cols`` with a sparse ``X``, or not a positive int.
    """
    p = store_path(path)
    X, y, sample_weight, names = frames_to_arrays(X, y, sample_weight)
    sparse = is_sparse_array(X)
    if chunk_cols is not None:
        if sparse:
            raise ValueError(
                "chunk_cols is not offered for sparse X: feature partitioning needs dense X, "
                "and a CSR X is stored by rows only. Leave chunk_cols out, or write a dense X"
            )
        check_chunk_cols(chunk_cols, 1)  # before anything is read or written
    if is_scipy_sparse(X):
        # once: checked, counted and written from the same matrix
        X, chunk_rows = csr_input(X, chunk_rows)
    if feature_names is None:
        feature_names = names  # a DataFrame's column names
    Xd, yd, wd = arrays_to_dask(X, y, sample_weight, chunk_rows if sparse else None)
    offset = None if offset is None else offset_values(offset)  # a Series' values
    od = None if offset is None else offset_to_dask(offset, Xd.chunks[0])
    if od is not None and not isinstance(offset, da.Array):
        offset = np.asarray(offset, dtype=np.float64)
    n, d = Xd.shape
    if chunk_rows is None:
        c = Xd.chunks[0]
        regular = all(s == c[0] for s in c[:-1]) and c[-1] <= c[0]
        if regular:
            chunk_rows = c[0]
        else:
            chunk_rows = max(c) if sparse else auto_chunk_rows(n, d, Xd.dtype.itemsize)
    chunk_rows = min(int(chunk_rows), n)
    cols = check_chunk_cols(chunk_cols, d)
    if feature_names is not None:
        feature_names = [str(f) for f in feature_names]
        if len(feature_names) != d:
            raise DataValidationError(
                f"feature_names has {len(feature_names)} names but X has {d} features"
            )
    # Zarr writes must be aligned to whole (outer) chunks: rechunk the sources to match.
    Xd = Xd.rechunk({0: chunk_rows, 1: -1})
    yd = yd.rechunk({0: chunk_rows})
    if wd is not None:
        wd = wd.rechunk({0: chunk_rows}).astype(np.float64)
    if od is not None:
        od = od.rechunk({0: chunk_rows})
    in_memory = not any(isinstance(a, da.Array) for a in (X, y, sample_weight, offset))
    if not in_memory:
        client = cluster_client(client)  # checked before anything is removed or written
    if in_memory:
        classes = classes_in_memory(y)
        if validate:
            validate_local(
                X if sparse else np.asarray(X),
                np.asarray(y),
                None if sample_weight is None else np.asarray(sample_weight),
                Xd.chunks[0],
                offset,
            )
    elif task == "regression" and yd.dtype.kind != "b":
        classes = None  # no pass over y needed
    else:
        classes = find_classes(yd, client)
    if task is None:
        # Integer y means class labels, unless there are too many to be classes.
        is_labels = yd.dtype.kind in "biu" and classes is not None and len(classes) <= MAX_CLASSES
        task = "classification" if is_labels else "regression"
    if task == "regression" and yd.dtype.kind not in "b":
        classes = None  # integer-valued floats are still regression targets unless asked
    check_labels(task, np.dtype(yd.dtype), classes, {}, y if in_memory else yd, client)
    attrs: dict[str, Any] = {
        "task": task,
        "feature_names": feature_names,
        "classes": None if classes is None else classes.tolist(),
    }
    # a CSR X's segments are placed before anything is written (a pass over a dask X)
    csr = plan_csr(X, Xd, chunk_rows, validate=validate, client=client) if sparse else None
    writer = DatasetWrite(
        p,
        n_samples=n,
        n_features=d,
        dtype=Xd.dtype,
        y_dtype=yd.dtype,
        weighted=wd is not None,
        with_offset=od is not None,
        chunk_rows=chunk_rows,
        inner_chunk_rows=inner_chunk_rows,
        compressor=compressor,
        overwrite=overwrite,
        storage_options=storage_options,
        attrs=attrs,
        csr=csr,
        chunk_cols=cols,
    )
    g = writer.group
    digests: dict[str, list[int]] = {}
    blocks: list[list[int]] | None = None if cols is None else []
    weight_sum = 0.0
    try:
        if in_memory:
            offsets = np.cumsum((0, *Xd.chunks[0]))
            for name, a, dt in (("X", X, Xd.dtype), ("y", y, yd.dtype),
                                ("sample_weight", sample_weight, np.float64),
                                ("offset", offset, np.float64)):  # fmt: skip
                if a is None:
                    continue
                if name == "X" and csr is not None:
                    digests.update(write_csr_local(g, csr, X))
                    continue
                values = np.ascontiguousarray(a, dtype=dt)
                if name == "sample_weight":
                    weight_sum = float(values.sum())
                writable_array(g, name)[:] = values
                digests[name] = [
                    chunk_digest(values[offsets[i] : offsets[i + 1]])
                    for i in range(len(offsets) - 1)
                ]
                if name == "X" and cols is not None:
                    blocks = [block_digests(values[offsets[i] : offsets[i + 1]], cols)
                              for i in range(len(offsets) - 1)]  # fmt: skip
        else:
            # one task per row-chunk, all awaited before a failure is raised (see _write_block)
            write = dask.delayed(_write_block, pure=True)
            tasks, names = [], []
            for name, a in (("X", Xd), ("y", yd), ("sample_weight", wd), ("offset", od)):
                if a is None:
                    continue
                if name == "X" and csr is not None:
                    tasks += csr_write_tasks(g, csr, a, validate=validate)
                    names += [name] * a.numblocks[0]
                    continue
                check = validate and a.dtype.kind == "f"
                kind = ("weight" if name == "sample_weight" else "value") if check else None
                target = dask.delayed(writable_array(g, name), traverse=False)
                starts = np.cumsum((0, *a.chunks[0][:-1]))
                by = cols if name == "X" else None
                for i, block in enumerate(a.to_delayed().ravel()):
                    tasks.append(write(target, block, name, kind, i, int(starts[i]), by))
                    names.append(name)
            results = compute_on_cluster(tasks, client)
            failures = [f for f, _, _ in results if f is not None]
            if failures:
                raise failures[0]
            for name, (_, digest, total) in zip(names, results, strict=True):
                if isinstance(digest, dict):  # a CSR row-chunk: one digest per part
                    for part, value in digest.items():
                        digests.setdefault(part, []).append(value)
                    continue
                if isinstance(digest, tuple):  # X with chunk_cols: its blocks' digests too
                    digest, row_blocks = digest
                    assert blocks is not None
                    blocks.append(row_blocks)
                digests.setdefault(name, []).append(digest)
                if name == "sample_weight":
                    weight_sum += total
        writer.finish(digests, checked=validate, weight_sum=weight_sum, blocks=blocks)
    except BaseException:
        writer.abort()
        raise
    ds = open_zarr(p, storage_options=storage_options, validate=False, client=client)
    ds.values_checked = validate
    return ds
