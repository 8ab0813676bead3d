"""A dataset being written: :class:`DatasetWrite`, the atomic write of a Zarr group.

The group is built beside its path, marked ``complete`` last (with the chunk digests and
the record of the value check, :mod:`daskgd.data.trust`) and renamed into place, so a
write that fails or dies never looks like a dataset. Also the default compressor.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from daskgd.data.chunkfiles import BLOCK_DIGESTS, DIGEST_ALGORITHM
from daskgd.data.sparse_store import CSRLayout, create_csr
from daskgd.data.store import (
    DENSE_FORMAT_VERSION,
    FORMAT_VERSION,
    X_FORMAT_ATTR,
    array_member,
    check_storage_options,
    local_dir,
    open_group,
    remove_store,
    sibling_path,
    store_exists,
)
from daskgd.data.trust import RECORD_ATTR, make_record

__all__ = ["DEFAULT_COMPRESSOR", "DatasetWrite", "check_chunk_cols"]


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


def check_chunk_cols(chunk_cols: Any, n_features: int) -> int | None:
    """``chunk_cols`` (None, or a positive int) checked, at most ``n_features``."""
    if chunk_cols is None:
        return None
    if not isinstance(chunk_cols, int | np.integer) or isinstance(chunk_cols, bool):
        raise ValueError(f"chunk_cols must be a positive int or None, got {chunk_cols!r}")
    if chunk_cols < 1:
        raise ValueError(f"chunk_cols must be a positive int or None, got {chunk_cols!r}")
    return min(int(chunk_cols), int(n_features))


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

    With ``csr`` (a :class:`~daskgd.data.sparse_store.CSRLayout`), ``X`` is created as a
    CSR subgroup for that layout and the group gets format version 2
    (:data:`~daskgd.data.store.FORMAT_VERSION`); dense groups keep version 1
    (:data:`~daskgd.data.store.DENSE_FORMAT_VERSION`), whose layout did not change.
    With ``chunk_cols``, a dense ``X``'s columns are cut into chunks of that many too (a
    shard of ``(chunk_rows, chunk_cols)`` of inner ``(inner_chunk_rows, chunk_cols)`` chunks
    when sharded), recorded in the attribute ``chunk_cols``; the other arrays are unchanged.
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
        with_offset: bool = False,
        storage_options: dict[str, Any] | None,
        attrs: dict[str, Any],
        csr: CSRLayout | None = None,
        chunk_cols: int | None = None,
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
        if inner_chunk_rows is not None and csr is not None:
            raise ValueError(
                "inner_chunk_rows (sharding) is not offered for sparse X: each row-chunk of a "
                "CSR X is read on its own already (its index pointer and its segment of the "
                "non-zeros); leave inner_chunk_rows out"
            )
        if chunk_cols is not None and csr is not None:
            raise ValueError(
                "chunk_cols is not offered for sparse X: a CSR X is cut by rows only (feature "
                "partitioning needs dense X); leave chunk_cols out"
            )
        self.chunk_cols = check_chunk_cols(chunk_cols, n_features)
        beside = (
            sibling_path(final, "tmp") if local_dir(final) is not None or self.existed else None
        )
        if beside is None and self.existed:
            self.existed = False
            remove_store(final, storage_options)  # the root of a bucket: nowhere beside it
        self.path = beside or final
        self.with_offset = with_offset
        self.csr = csr
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
                "format_version": DENSE_FORMAT_VERSION if self.csr is None else FORMAT_VERSION,
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
        if self.chunk_cols is not None:
            g.attrs["chunk_cols"] = self.chunk_cols
        codecs = _compressors(compressor)
        specs = [("X", (n_samples, n_features), dtype), ("y", (n_samples,), y_dtype)]
        if self.csr is not None:
            g.attrs[X_FORMAT_ATTR] = "csr"
            create_csr(g, self.csr, codecs)
            specs = specs[1:]
        if weighted:
            specs.append(("sample_weight", (n_samples,), np.float64))
        if self.with_offset:
            specs.append(("offset", (n_samples,), np.float64))
        for name, shape, dt in specs:
            # X's columns cut into chunks of chunk_cols (a shard of inner row-chunks each)
            cols = shape[1:] if name != "X" or self.chunk_cols is None else (self.chunk_cols,)
            outer = (chunk_rows, *cols)
            if inner_chunk_rows is None:
                chunks, shards = outer, None
            else:
                chunks, shards = (inner_chunk_rows, *cols), outer
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
        blocks: Sequence[Sequence[int]] | None = None,
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
        blocks : sequence of sequence of int, optional
            With ``chunk_cols``: the digest of each block of ``X`` (per row-chunk, per column
            chunk), recorded as ``digests["X_blocks"]``.
        """
        recorded: dict[str, Any] = {"algorithm": DIGEST_ALGORITHM}
        recorded.update({name: [int(v) for v in d] for name, d in digests.items()})
        if blocks is not None:
            recorded[BLOCK_DIGESTS] = [[int(v) for v in row] for row in blocks]
        final = {**(attrs or {}), "digests": recorded, "complete": True}
        if checked:
            arrays = {n: array_member(self.group, n) for n in digests}
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
