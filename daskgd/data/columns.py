"""Feature (vertical) partitioning: column blocks of a dataset, and datasets side by side.

A dense ``X`` written with ``chunk_cols`` (:func:`~daskgd.data.write_zarr`, the synthetic
generators) is stored in blocks of ``(chunk_rows, chunk_cols)``, each with its digest
(``digests["X_blocks"]``), so that a worker can read a range of columns of every row
without the rest: :func:`column_blocks` cuts the features on those chunk boundaries and
:func:`read_columns` reads one range, checked as the row reads are
(:mod:`~daskgd.data.chunkio`). :func:`concat_features` puts several groups that hold the
same rows (a table's columns kept in separate stores) side by side as one
:class:`FeatureBlocks`, after checking that they agree on the rows.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

from daskgd.data.chunkfiles import (
    check_digest,
    direct_reader,
    key_exists,
    location,
    missing_chunk_error,
    read_chunk,
    recorded_block_digests,
    recorded_digests,
    undecodable,
)
from daskgd.data.column_parts import check_parts, joined_feature_names, part_bounds, part_name
from daskgd.data.dataset import Dataset
from daskgd.data.opening import open_zarr
from daskgd.data.store import (
    group_arrays,
    is_csr_group,
    open_for_reading,
    store_path,
    worker_suffix,
)
from daskgd.errors import DataValidationError

__all__ = ["FeatureBlocks", "column_blocks", "concat_features", "read_columns"]


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def column_blocks(
    n_features: int, n_blocks: int, column_chunks: Sequence[int] | None = None
) -> list[tuple[int, int]]:
    """Cut the columns ``0 .. n_features`` into ``n_blocks`` contiguous ranges.

    Parameters
    ----------
    n_features : int
        Number of columns.
    n_blocks : int
        Number of ranges wanted (>= 1); fewer are made when there are fewer columns, or
        fewer ``column_chunks``.
    column_chunks : sequence of int, optional
        The widths of the stored column chunks (:attr:`Dataset.column_chunks`), summing to
        ``n_features``: every boundary then falls on a chunk boundary, the one nearest to
        the even split's, so that chunks of one width are dealt out ``floor`` or ``ceil`` of
        ``len(column_chunks) / n_blocks`` to a range. Default: an even split of the columns
        (as ``numpy.array_split``: the first ``n_features % n_blocks`` ranges one wider).

    Returns
    -------
    list of (int, int)
        ``[c0, c1)`` ranges, in order, none empty, covering every column once.

    Raises
    ------
    ValueError
        ``n_blocks`` or ``n_features`` below 1, or ``column_chunks`` that are not positive
        widths summing to ``n_features``.

    Examples
    --------
    >>> column_blocks(10, 3)
    [(0, 4), (4, 7), (7, 10)]
    >>> column_blocks(20, 3, column_chunks=(5, 5, 5, 5))
    [(0, 5), (5, 15), (15, 20)]
    """
    n_blocks = _positive_int("n_blocks", n_blocks)
    n = _positive_int("n_features", n_features)
    if column_chunks is None:
        k = min(n_blocks, n)
        q, r = divmod(n, k)
        edges = [0]
        for b in range(k):
            edges.append(edges[-1] + q + (b < r))
        return list(itertools.pairwise(edges))
    widths = [int(w) for w in column_chunks]
    if not widths or min(widths) < 1 or sum(widths) != n:
        raise ValueError(
            f"column_chunks must be positive widths summing to n_features ({n}), got "
            f"{tuple(widths)}"
        )
    ends = [0, *np.cumsum(widths).tolist()]
    m = len(widths)
    k = min(n_blocks, m)
    picked = [0]
    for b in range(1, k):
        # the chunk boundary nearest to b/k of the columns (ties: the later one), leaving
        # at least one chunk to each range before and after it; compared times k, exactly
        lo, hi = picked[-1] + 1, m - (k - b)
        at = int(np.searchsorted(ends, b * n / k))
        near = {min(max(c, lo), hi) for c in (at - 1, at)}
        picked.append(min(near, key=lambda c: (abs(ends[c] * k - b * n), -c)))
    picked.append(m)
    return [(int(ends[a]), int(ends[z])) for a, z in itertools.pairwise(picked)]


def _open_dense_X(
    p: str, storage_options: dict[str, Any] | None
) -> tuple[zarr.Array, dict[str, Any]]:
    """The group's ``X`` (dense) and its attributes, as a read of column ranges needs them."""
    g = open_for_reading(p, storage_options)
    attrs = dict(g.attrs)
    if is_csr_group(attrs):
        raise ValueError(
            f"{p} holds a sparse (CSR) X, stored by rows only: feature partitioning needs dense "
            "X. Train it partitioned by rows, or write a dense copy with chunk_cols"
        )
    return group_arrays(g, p)["X"], attrs


def read_columns(
    path: str | os.PathLike[str],
    c0: int,
    c1: int,
    *,
    storage_options: dict[str, Any] | None = None,
    row_chunks: Sequence[int] | None = None,
) -> np.ndarray:
    """Read the columns ``[c0, c1)`` of every row (or of some row-chunks) of a dense
    dataset's ``X``.

    Read chunk by chunk (one row-chunk's blocks at a time) into the returned array, never
    the whole ``X``; every chunk the range touches is checked as
    :func:`~daskgd.data.chunkio.read_row_chunks` checks its row-chunks: it must be in the
    store, decode, and match its recorded digest.
    A block of a column-chunked ``X`` (``chunk_cols``) is read whole, so it is checked
    against its digest (``digests["X_blocks"]``) whether or not the range is aligned with
    the chunks; ``X`` in one chunk along the columns is read a row-chunk at a time, checked
    against the row-chunk digests, and the asked-for columns kept.

    Parameters
    ----------
    path : str or os.PathLike
        The dataset, as for :func:`daskgd.open_zarr`.
    c0, c1 : int
        The column range, ``0 <= c0 < c1 <= n_features``.
    storage_options : dict, optional
        fsspec options for a URL.
    row_chunks : sequence of int, optional
        Only these row-chunks (whole shards when sharded), in this order (the row blocks
        of a grid partition); default every row.

    Returns
    -------
    numpy.ndarray
        ``X[:, c0:c1]`` (of those rows), a new C-contiguous array of the dataset's dtype.

    Raises
    ------
    ValueError
        A sparse (CSR) dataset, or a range outside ``0 .. n_features``.
    DataValidationError
        A chunk is missing, cannot be decoded or does not match its digest (naming the
        array, the chunk and its file).
    DataNotFoundError
        The dataset or ``X`` is not at ``path`` in this process (on a worker: the message
        names it).
    """
    p = store_path(path)
    z, attrs = _open_dense_X(p, storage_options)
    n, d = (int(s) for s in z.shape)
    if not all(isinstance(c, int | np.integer) for c in (c0, c1)) or not 0 <= c0 < c1 <= d:
        raise ValueError(f"column range [{c0}, {c1}) is not within the {d} columns of {p}")
    c0, c1 = int(c0), int(c1)
    outer = z.shards or z.chunks
    rows, width = int(outer[0]), int(outer[1])
    n_chunks = -(-n // rows)
    chunks = list(range(n_chunks)) if row_chunks is None else [int(i) for i in row_chunks]
    if any(not 0 <= i < n_chunks for i in chunks):
        raise IndexError(f"row-chunks {chunks} out of range: {p} has {n_chunks} row-chunks")
    sizes = [min(rows, n - i * rows) for i in chunks]
    out = np.empty((sum(sizes), c1 - c0), dtype=z.dtype)
    if width >= d:
        _read_row_chunks(z, p, attrs, rows, n_chunks, c0, c1, out, chunks)
        return out
    blocks = recorded_block_digests(attrs, n_chunks, -(-d // width))
    at = 0
    for i, size in zip(chunks, sizes, strict=True):
        r0, r1 = i * rows, i * rows + size
        for j in range(c0 // width, (c1 - 1) // width + 1):
            b0, b1 = j * width, min(d, j * width + width)
            block = _read_block(z, p, i, j, rows, (r0, r1), (b0, b1),
                                None if blocks is None else blocks[i][j])  # fmt: skip
            lo, hi = max(c0, b0), min(c1, b1)
            out[at : at + size, lo - c0 : hi - c0] = block[:, lo - b0 : hi - b0]
        at += size
    return out


def _read_row_chunks(
    z: zarr.Array, p: str, attrs: dict[str, Any], rows: int, n_chunks: int, c0: int, c1: int,
    out: np.ndarray, chunks: Sequence[int],
) -> None:  # fmt: skip
    """Fill ``out`` with ``z[:, c0:c1]`` of the row-chunks ``chunks`` of an ``X`` in one
    chunk along the columns."""
    n, d = int(z.shape[0]), int(z.shape[1])
    folder, decoder = direct_reader(z, rows)
    digests = recorded_digests(attrs, "X", n_chunks)
    whole = (c0, c1) == (0, d)  # then each chunk is read straight into its rows
    buf = None if whole else np.empty((min(rows, n), d), dtype=z.dtype)
    at = 0
    for i in chunks:
        size = min(rows, n - i * rows)
        target = out[at : at + size] if buf is None else buf[:size]
        read_chunk(z, "X", p, i, rows, target, folder=folder, decoder=decoder,
                   digest=None if digests is None else digests[i])  # fmt: skip
        if buf is not None:
            out[at : at + size] = target[:, c0:c1]
        at += size


def _read_block(
    z: zarr.Array, p: str, i: int, j: int, rows: int, row_range: tuple[int, int],
    col_range: tuple[int, int], digest: int | None,
) -> np.ndarray:  # fmt: skip
    """Block ``(i, j)`` of ``X`` (a whole chunk, or shard), read through zarr and checked."""
    key = z.metadata.encode_chunk_key((i, j))
    if not key_exists(z, key):
        raise missing_chunk_error(z, "X", p, i, rows, key)
    (r0, r1), (b0, b1) = row_range, col_range
    what = (f"chunk ({i}, {j}) of array 'X' (rows {r0}-{r1 - 1}, columns {b0}-{b1 - 1}) of "
            f"the dataset {p}{worker_suffix()}")  # fmt: skip
    try:
        block = np.asarray(z[r0:r1, b0:b1])
    except OSError:
        raise  # the store itself failed (permissions, network): its own message says so
    except Exception as exc:
        raise undecodable(what, location(z, key), exc) from exc
    check_digest(block, digest, what, location(z, key))
    return block


class FeatureBlocks:
    """Several Zarr groups (or in-memory Datasets) holding the same rows, their columns side
    by side: one dataset of ``sum(part.n_features)`` columns, stored in parts.

    Made by :func:`concat_features`, which checks that the parts agree (same rows, same
    ``y``, same dtype, weights and offsets only where the first part's agree); the
    constructor takes the parts as they are.

    Parameters
    ----------
    parts : sequence of Dataset
        The parts, in column order.
    feature_names : sequence of str, optional
        The names of all the columns.

    Attributes
    ----------
    parts : tuple of Dataset
        As given.
    bounds : tuple of (int, int)
        Each part's columns ``[c0, c1)`` in the whole.
    n_samples, n_features : int
        Rows (every part's) and columns (all parts').
    dtype : numpy.dtype
        The parts' dtype of ``X``.
    feature_names : list of str or None
        The parts' names, concatenated; a part without names contributes ``"x{j}"``, ``j``
        its columns' indices in the whole. None when no part has names.
    targets : Dataset
        The part whose ``y``, ``sample_weight`` and ``offset`` are trained on: ``parts[0]``.
    classes_ : numpy.ndarray or None
        The class labels of :attr:`targets`.
    is_sparse : bool
        False: feature partitioning needs dense ``X``.
    """

    is_sparse = False

    def __init__(
        self, parts: Sequence[Dataset], feature_names: Sequence[str] | None = None
    ) -> None:
        self.parts: tuple[Dataset, ...] = tuple(parts)
        self.bounds: tuple[tuple[int, int], ...] = part_bounds(self.parts)
        self.feature_names = None if feature_names is None else [str(f) for f in feature_names]
        if self.feature_names is not None and len(self.feature_names) != self.n_features:
            raise DataValidationError(
                f"feature_names has {len(self.feature_names)} names but the parts have "
                f"{self.n_features} features"
            )

    @property
    def targets(self) -> Dataset:
        """The part that holds the ``y``, weights and offsets trained on (the first)."""
        return self.parts[0]

    @property
    def n_samples(self) -> int:
        """Number of rows."""
        return self.parts[0].n_samples

    @property
    def n_features(self) -> int:
        """Number of columns of all parts together."""
        return self.bounds[-1][1]

    @property
    def dtype(self) -> np.dtype[Any]:
        """The dtype of every part's ``X``."""
        return self.parts[0].dtype

    @property
    def classes_(self) -> np.ndarray | None:
        """Sorted class labels of :attr:`targets`, None for regression data."""
        return self.targets.classes_

    def __repr__(self) -> str:
        where = ", ".join(part_name(ds, k) for k, ds in enumerate(self.parts))
        return (
            f"<daskgd.FeatureBlocks n_samples={self.n_samples} n_features={self.n_features} "
            f"dtype={self.dtype} parts={len(self.parts)} bounds={list(self.bounds)} [{where}]>"
        )


def concat_features(
    datasets: Sequence[str | os.PathLike[str] | Dataset],
    *,
    storage_options: dict[str, Any] | None = None,
    validate: bool = True,
    client: Any = None,
) -> FeatureBlocks:
    """Put datasets that hold the same rows side by side: their columns, concatenated.

    Parameters
    ----------
    datasets : sequence of str, os.PathLike or Dataset
        The parts, in column order: Zarr groups (opened with :func:`~daskgd.data.open_zarr`)
        or Datasets (checked when ``validate`` unless checked already, as
        :func:`~daskgd.data.as_dataset` does). All dense, of one dtype, with the same rows in
        the same order and the same ``y``. The first part's ``sample_weight`` and
        ``offset`` are trained on; a later part may hold them only if they are the same.
    storage_options : dict, optional
        fsspec options for URLs.
    validate : bool, default True
        Check the values (see :func:`~daskgd.data.open_zarr`).
    client : distributed.Client, optional
        Where scans run; default: dask's current scheduler.

    Returns
    -------
    FeatureBlocks

    Raises
    ------
    DataValidationError
        No part; a sparse part; parts of other dtypes, other numbers of rows, another ``y``;
        weights or offsets that differ from the first part's, or that the first part lacks.
        The message names the part and says how to fix it.
    """
    if isinstance(datasets, str | os.PathLike | Dataset):
        datasets = [datasets]
    if not datasets:
        raise DataValidationError(
            "concat_features needs at least one dataset: pass the Zarr groups (or Datasets) "
            "whose columns go side by side"
        )
    parts: list[Dataset] = []
    for k, item in enumerate(datasets):
        if isinstance(item, Dataset):
            if validate and not item.values_checked:
                item.validate(client)
            parts.append(item)
        elif isinstance(item, str | os.PathLike):
            parts.append(open_zarr(item, storage_options=storage_options, validate=validate,
                                   client=client))  # fmt: skip
        else:
            raise TypeError(f"part {k} is a {type(item).__name__}: pass a path or a Dataset")
    check_parts(parts, client)
    return FeatureBlocks(parts, joined_feature_names(parts, part_bounds(parts)))
