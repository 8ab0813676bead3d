"""Writing datasets: :func:`write_zarr` and :class:`DatasetWrite`, the atomic write of a group.

A write builds the group beside its path, records every chunk's digest and the result of
its value checks (:mod:`daskgd.data.trust`), marks it complete last and renames it into
place, so a write that fails or dies never looks like a dataset.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from daskgd.data.checks import (
    MAX_CLASSES,
    Task,
    block_stats,
    check_labels,
    classes_in_memory,
    find_classes,
    validate_local,
)
from daskgd.data.chunkio import DIGEST_ALGORITHM, chunk_digest
from daskgd.data.convert import arrays_to_dask, frames_to_arrays
from daskgd.data.dataset import Dataset
from daskgd.data.opening import open_zarr
from daskgd.data.store import (
    ARRAY_NAMES,
    FORMAT_VERSION,
    array_member,
    auto_chunk_rows,
    check_storage_options,
    cluster_client,
    compute_on_cluster,
    local_dir,
    open_group,
    remove_store,
    sibling_path,
    store_exists,
    store_path,
    writable_array,
)
from daskgd.data.trust import RECORD_ATTR, make_record
from daskgd.errors import DataValidationError

__all__ = ["DEFAULT_COMPRESSOR", "DatasetWrite", "write_zarr"]


class _Default:
    """Sentinel type for "use daskgd's default compressor"."""

    def __repr__(self) -> str:
        return "DEFAULT"


#: The default value of ``compressor=``: Zstandard at level 1 (fast, and the Zarr v3 standard).
DEFAULT_COMPRESSOR: Any = _Default()


def _compressors(compressor: Any) -> Any:
    if compressor is DEFAULT_COMPRESSOR:
        return (ZstdCodec(level=1),)
    if compressor is None:
        return None
    if isinstance(compressor, list | tuple):
        return tuple(compressor)
    return (compressor,)


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
    target: Any, block: np.ndarray, name: str, kind: str | None, i: int, start: int
) -> tuple[Exception | None, int | None, float]:
    """Write one row-chunk to Zarr (checked first when ``kind`` is given).

    Returns ``(failure, digest, weight sum)``: the failure instead of raising it, so that the caller
    can wait for every chunk task to end before it removes a half-written group (a raised
    failure would end the computation while sibling chunks may still be writing), and the
    chunk's :func:`~daskgd.data.chunkio.chunk_digest` as stored, and the sum of a checked
    block of weights (0 otherwise).
    """
    total = 0.0
    try:
        if kind is not None:
            total = _check_block(block, name, kind, i, start)
        values = np.ascontiguousarray(block, dtype=target.dtype)
        target[start : start + values.shape[0]] = values
    except Exception as exc:
        return exc, None, 0.0
    return None, chunk_digest(values), total


class DatasetWrite:
    """A dataset being written: beside its path, then moved into place when complete.

    The group is built in a hidden sibling (``.NAME.HEX.tmp``), marked ``complete`` last,
    and renamed into place (as checkpoints are), so a failed write (bad values, a dead
    worker) removes only the sibling and whatever was at the path, such as the dataset
    that ``overwrite=True`` replaces, stays as it was. On an object store a fresh dataset
    is written in place (a move there is a copy of every chunk); one that replaces an old
    one is written beside it, and the old one is deleted only after the new one is complete.

    Attributes
    ----------
    final : str
        The dataset's path.
    path : str
        Where it is being written (``final`` or the sibling).
    group : zarr.Group
        The group at ``path``, marked ``complete = False``.
    """

    def __init__(
        self,
        final: str,
        *,
        n_samples: int,
        n_features: int,
        dtype: Any,
        y_dtype: Any,
        weighted: bool,
        chunk_rows: int,
        inner_chunk_rows: int | None,
        compressor: Any,
        overwrite: bool,
        storage_options: dict[str, Any] | None,
        attrs: dict[str, Any],
    ) -> None:
        check_storage_options(final, storage_options)  # before anything is written
        self.final, self.options = final, storage_options
        self.existed = store_exists(final, storage_options)
        if self.existed and not overwrite:
            raise FileExistsError(f"{final!r} already exists; pass overwrite=True to replace it")
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        if inner_chunk_rows is not None and (inner_chunk_rows < 1 or chunk_rows % inner_chunk_rows):
            raise ValueError(
                f"inner_chunk_rows ({inner_chunk_rows}) must divide chunk_rows ({chunk_rows}): "
                "a row-chunk is stored as one shard made of whole inner chunks"
            )
        beside = (
            sibling_path(final, "tmp") if local_dir(final) is not None or self.existed else None
        )
        if beside is None and self.existed:
            self.existed = False
            remove_store(final, storage_options)  # the root of a bucket: nowhere beside it
        self.path = beside or final
        try:
            self.group = self._create(
                n_samples, n_features, dtype, y_dtype, weighted, chunk_rows, inner_chunk_rows,
                compressor, attrs,
            )  # fmt: skip
        except BaseException:
            self.abort()
            raise

    def _create(
        self,
        n_samples: int,
        n_features: int,
        dtype: Any,
        y_dtype: Any,
        weighted: bool,
        chunk_rows: int,
        inner_chunk_rows: int | None,
        compressor: Any,
        attrs: dict[str, Any],
    ) -> zarr.Group:
        g = open_group(self.path, "w", self.options)
        g.attrs.update(
            {
                "format": "daskgd",
                "format_version": FORMAT_VERSION,
                "complete": False,
                "n_samples": int(n_samples),
                "n_features": int(n_features),
                "dtype": np.dtype(dtype).name,
                # Unique per write: names the dask arrays, so a rewrite at the same path never
                # reuses chunks of the old data still held in a cluster's memory.
                "write_id": uuid.uuid4().hex,
                **attrs,
            }
        )
        codecs = _compressors(compressor)
        specs = [("X", (n_samples, n_features), dtype), ("y", (n_samples,), y_dtype)]
        if weighted:
            specs.append(("sample_weight", (n_samples,), np.float64))
        for name, shape, dt in specs:
            outer = (chunk_rows, *shape[1:])
            if inner_chunk_rows is None:
                chunks, shards = outer, None
            else:
                chunks, shards = (inner_chunk_rows, *shape[1:]), outer
            g.create_array(
                name,
                shape=shape,
                dtype=dt,
                chunks=chunks,
                shards=shards,
                compressors=codecs,
                fill_value=0,
            )
        return g

    def finish(
        self,
        digests: Mapping[str, Sequence[int]],
        attrs: dict[str, Any] | None = None,
        *,
        checked: bool = False,
        weight_sum: float | None = None,
    ) -> None:
        """Record the chunks' digests and final attributes, mark complete, move into place.

        Parameters
        ----------
        digests : mapping of str to sequence of int
            Each array's row-chunk digests, in order.
        attrs : dict, optional
            More group attributes.
        checked : bool, default False
            Every value was checked as it was written and found good: record that check
            (:mod:`daskgd.data.trust`), so that opening the dataset does not scan it again.
        weight_sum : float, optional
            The sum of the weights, with ``checked`` and a ``sample_weight`` array.
        """
        recorded: dict[str, Any] = {"algorithm": DIGEST_ALGORITHM}
        recorded.update({name: [int(v) for v in d] for name, d in digests.items()})
        final = {**(attrs or {}), "digests": recorded, "complete": True}
        if checked:
            arrays = {n: array_member(self.group, n) for n in ARRAY_NAMES if n in digests}
            record = make_record(arrays, {**self.group.attrs, **final}, weight_sum)
            if record is not None:
                final[RECORD_ATTR] = record
        self.group.attrs.update(final)
        if self.path == self.final:
            return
        local = local_dir(self.final)
        if local is None:
            import fsspec

            fs, root = fsspec.core.url_to_fs(self.final, **(self.options or {}))
            _, staged = fsspec.core.url_to_fs(self.path, **(self.options or {}))
            if fs.exists(root):
                fs.rm(root, recursive=True)
            fs.mv(staged, root, recursive=True)
            return
        staged = local_dir(self.path)
        assert staged is not None
        old = None
        if os.path.lexists(local):
            old = local_dir(sibling_path(self.final, "old") or "")
            os.rename(local, old)  # type: ignore[arg-type]
        try:
            os.rename(staged, local)
        except BaseException:
            if old is not None:
                os.rename(old, local)
            raise
        if old is not None:
            remove_store(old, None)

    def abort(self) -> None:
        """Remove what this write left (never what was at the path before it)."""
        remove_store(self.path, self.options)


def write_zarr(
    path: str | os.PathLike[str],
    X: Any,
    y: Any,
    sample_weight: Any = None,
    *,
    chunk_rows: int | None = None,
    compressor: Any = DEFAULT_COMPRESSOR,
    overwrite: bool = False,
    client: Any = None,
    inner_chunk_rows: int | None = None,
    feature_names: Sequence[str] | None = None,
    task: Task | None = None,
    validate: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> Dataset:
    """Write ``X``, ``y`` (and ``sample_weight``) as a daskgd Zarr dataset.

    Dask input is written in parallel by the workers (each writes its own row-chunks;
    nothing is gathered on the client). Numpy input is written from this process.

    Parameters
    ----------
    path : str or os.PathLike
        Local path or fsspec URL of the new group.
    X : array-like or dask.array.Array
        ``(n_samples, n_features)`` float32/float64 (integers are promoted to float64).
    y : array-like or dask.array.Array
        ``(n_samples,)`` targets or class labels.
    sample_weight : array-like or dask.array.Array, optional
        ``(n_samples,)`` non-negative weights, stored as float64.
    chunk_rows : int, optional
        Rows per row-chunk; default: the row chunks of dask ``X`` when regular, else about
        64 MiB of ``X`` per chunk.
    compressor : zarr codec, list of codecs, or None
        Default Zstandard level 1; None stores uncompressed.
    overwrite : bool, default False
        Replace whatever is at ``path``; otherwise a :class:`FileExistsError`.
    client : distributed.Client, optional
        Runs the write; default: dask's current scheduler.
    inner_chunk_rows : int, optional
        Shard the arrays: each row-chunk becomes one shard of inner chunks of this many
        rows (must divide ``chunk_rows``).
    feature_names : sequence of str, optional
        Stored in the attributes; length ``n_features``. Default: the column names of a
        DataFrame ``X`` (pandas and dask DataFrames are taken as by
        :func:`~daskgd.data.as_dataset`).
    task : {"regression", "classification"}, optional
        Stored in the attributes and checked against ``y``; default: classification
        when ``y`` has an integer dtype, else regression.
    validate : bool, default True
        Refuse NaN/inf in X or y and negative/non-finite weights (checked per chunk as it
        is written; the partial group is removed).
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
    """
    p = store_path(path)
    X, y, sample_weight, names = frames_to_arrays(X, y, sample_weight)
    if feature_names is None:
        feature_names = names  # a DataFrame's column names
    Xd, yd, wd = arrays_to_dask(X, y, sample_weight, None)
    n, d = Xd.shape
    if chunk_rows is None:
        c = Xd.chunks[0]
        regular = all(s == c[0] for s in c[:-1]) and c[-1] <= c[0]
        chunk_rows = c[0] if regular else auto_chunk_rows(n, d, Xd.dtype.itemsize)
    chunk_rows = min(int(chunk_rows), n)
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
    in_memory = not any(isinstance(a, da.Array) for a in (X, y, sample_weight))
    if not in_memory:
        client = cluster_client(client)  # checked before anything is removed or written
    if in_memory:
        classes = classes_in_memory(y)
        if validate:
            validate_local(
                np.asarray(X),
                np.asarray(y),
                None if sample_weight is None else np.asarray(sample_weight),
                Xd.chunks[0],
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
    writer = DatasetWrite(
        p,
        n_samples=n,
        n_features=d,
        dtype=Xd.dtype,
        y_dtype=yd.dtype,
        weighted=wd is not None,
        chunk_rows=chunk_rows,
        inner_chunk_rows=inner_chunk_rows,
        compressor=compressor,
        overwrite=overwrite,
        storage_options=storage_options,
        attrs=attrs,
    )
    g = writer.group
    digests: dict[str, list[int]] = {}
    weight_sum = 0.0
    try:
        if in_memory:
            offsets = np.cumsum((0, *Xd.chunks[0]))
            for name, a, dt in (("X", X, Xd.dtype), ("y", y, yd.dtype),
                                ("sample_weight", sample_weight, np.float64)):  # fmt: skip
                if a is None:
                    continue
                values = np.ascontiguousarray(a, dtype=dt)
                if name == "sample_weight":
                    weight_sum = float(values.sum())
                writable_array(g, name)[:] = values
                digests[name] = [
                    chunk_digest(values[offsets[i] : offsets[i + 1]])
                    for i in range(len(offsets) - 1)
                ]
        else:
            # one task per row-chunk, all awaited before a failure is raised (see _write_block)
            write = dask.delayed(_write_block, pure=True)
            tasks, names = [], []
            for name, a in (("X", Xd), ("y", yd), ("sample_weight", wd)):
                if a is None:
                    continue
                check = validate and a.dtype.kind == "f"
                kind = ("weight" if name == "sample_weight" else "value") if check else None
                target = dask.delayed(writable_array(g, name), traverse=False)
                starts = np.cumsum((0, *a.chunks[0][:-1]))
                for i, block in enumerate(a.to_delayed().ravel()):
                    tasks.append(write(target, block, name, kind, i, int(starts[i])))
                    names.append(name)
            results = compute_on_cluster(tasks, client)
            failures = [f for f, _, _ in results if f is not None]
            if failures:
                raise failures[0]
            for name, (_, digest, total) in zip(names, results, strict=True):
                digests.setdefault(name, []).append(digest)
                if name == "sample_weight":
                    weight_sum += total
        writer.finish(digests, checked=validate, weight_sum=weight_sum)
    except BaseException:
        writer.abort()
        raise
    ds = open_zarr(p, storage_options=storage_options, validate=False, client=client)
    ds.values_checked = validate
    return ds
