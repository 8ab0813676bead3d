"""CSR blocks in memory: daskgd's canonical form, their checks, and dask arrays of them.

A sparse ``X`` is held as ``scipy.sparse.csr_matrix`` blocks of rows in **canonical form**:
the column indices of each row sorted, with no duplicates. Input in other forms is made
canonical once, where it enters daskgd (:func:`canonical_csr`): CSC, COO and the other
scipy formats are converted with ``.tocsr()``, ``csr_array`` becomes ``csr_matrix`` (sharing
its arrays), unsorted indices are sorted and duplicate indices in a row are **summed**
(scipy's ``sum_duplicates``; explicit zeros are kept). Integer values are promoted to
float64, as for dense ``X``.

Before that, the structure is checked (:func:`check_csr`), because scipy does not check the
indices of a matrix built from raw arrays, and a kernel reading an index beyond the model
would read memory that is not the model's: ``indptr`` must start at its block's first
position, never decrease and end at the length of ``indices``; every index must lie in
``[0, n_features)``. Errors name the array, the row-chunk and the row.

numpy, scipy and dask only: the Zarr layout is :mod:`~daskgd.data.sparse_store`'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph

from daskgd.errors import DataValidationError

__all__ = [
    "block_rows",
    "canonical_block",
    "canonical_csr",
    "check_csr",
    "check_sorted",
    "csr_block_stats",
    "csr_dask_array",
    "csr_meta",
    "index_dtype",
    "is_scipy_sparse",
    "is_sparse_array",
    "make_csr",
    "sparse_to_dask",
]


def is_scipy_sparse(a: Any) -> bool:
    """Whether ``a`` is a scipy.sparse matrix or array (any format)."""
    return (type(a).__module__ or "").startswith("scipy.sparse")


def is_sparse_array(a: Any) -> bool:
    """Whether ``a`` is a scipy.sparse matrix/array or a dask array of scipy.sparse blocks."""
    if isinstance(a, da.Array):
        return is_scipy_sparse(getattr(a, "_meta", None))
    return is_scipy_sparse(a)


def index_dtype(n_features: int) -> np.dtype[Any]:
    """The dtype of the stored column indices: int32 when ``n_features < 2**31``, else int64."""
    return np.dtype(np.int32 if int(n_features) < 2**31 else np.int64)


def csr_meta(n_features: int, dtype: Any) -> Any:
    """An empty ``csr_matrix`` of ``n_features`` columns: the ``meta`` of a dask array of CSR."""
    import scipy.sparse as sp

    return sp.csr_matrix((0, int(n_features)), dtype=np.dtype(dtype))


def make_csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n_cols: int) -> Any:
    """A ``csr_matrix`` over these arrays (not copied when their index dtypes agree), flagged
    canonical: the caller has checked that the indices are sorted and distinct in each row."""
    import scipy.sparse as sp

    m = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, int(n_cols)), copy=False)
    m.has_canonical_format = True  # sorted and distinct, checked: scipy need not look again
    return m


def _at(r: int, row0: int, chunk: int | None, chunk_rows: int | None) -> str:
    """``chunk C, row R`` for row ``r`` of a block whose first row is ``row0``."""
    row = row0 + int(r)
    if chunk is None and chunk_rows:
        chunk = row // chunk_rows
    return f"row {row}" if chunk is None else f"chunk {chunk}, row {row}"


def _label(part: str, dataset: str | None) -> str:
    return f"array 'X/{part}' of the dataset {dataset}" if dataset else f"X.{part}"


def check_csr(
    indptr: np.ndarray,
    indices: np.ndarray,
    n_cols: int,
    *,
    dataset: str | None = None,
    chunk: int | None = None,
    chunk_rows: int | None = None,
    row0: int = 0,
) -> None:
    """Check the structure of a block of CSR rows.

    Parameters
    ----------
    indptr : numpy.ndarray
        ``rows + 1`` positions into ``indices``; ``indptr[0]`` is the block's first
        position (0 for a matrix of its own, the segment's start for a stored row-chunk).
    indices : numpy.ndarray
        The block's column indices, ``indptr[-1] - indptr[0]`` of them.
    n_cols : int
        The number of columns: every index must lie in ``[0, n_cols)``.
    dataset : str, optional
        The dataset the block was read from (the message then names its stored arrays).
    chunk, chunk_rows, row0 : int, optional
        The block's row-chunk, or the rows per row-chunk from which to find it, and its
        first row in the dataset: the message names the chunk and the row.

    Raises
    ------
    DataValidationError
        ``indptr`` is not 1-D, decreases, or does not end at the length of ``indices``; an
        index is negative or ``>= n_cols``.
    """
    indptr = np.asarray(indptr)
    if indptr.ndim != 1 or indptr.size < 1:
        raise DataValidationError(
            f"{_label('indptr', dataset)} must be 1-D with one entry per row plus one, got "
            f"shape {indptr.shape}"
        )
    steps = np.diff(indptr)
    if steps.size and steps.min() < 0:
        r = int(np.argmax(steps < 0))
        raise DataValidationError(
            f"{_label('indptr', dataset)} is not monotone at {_at(r, row0, chunk, chunk_rows)}:"
            f" the row starts at {int(indptr[r])} and ends at {int(indptr[r + 1])}. A CSR "
            "indptr never decreases; rebuild the matrix (scipy.sparse.csr_matrix((data, "
            "indices, indptr)) with a valid indptr)"
        )
    length = int(indptr[-1]) - int(indptr[0])
    if length != len(indices):
        raise DataValidationError(
            f"{_label('indptr', dataset)} does not match {_label('indices', dataset)} at "
            f"{_at(len(indptr) - 2, row0, chunk, chunk_rows)} (the last row): indptr spans "
            f"{length} entries but indices has {len(indices)}. Rebuild the matrix with "
            "indptr[-1] == len(indices)"
        )
    if not len(indices):
        return
    lo, hi = int(indices.min()), int(indices.max())
    if lo >= 0 and hi < n_cols:
        return
    pos = int(np.argmax(indices < 0)) if lo < 0 else int(np.argmax(indices >= n_cols))
    r = int(np.searchsorted(indptr, int(indptr[0]) + pos, side="right")) - 1
    what = "negative" if lo < 0 else f">= the number of columns, {n_cols}"
    raise DataValidationError(
        f"{_label('indices', dataset)} has a column index {int(indices[pos])} that is {what}, at "
        f"{_at(r, row0, chunk, chunk_rows)}. Column indices must lie in [0, {n_cols}): fix them, "
        "or give the matrix its true shape (shape=(n_samples, n_features))"
    )


def check_sorted(
    indptr: np.ndarray, indices: np.ndarray, *, dataset: str, chunk: int, row0: int
) -> None:
    """Refuse a stored block whose indices are not sorted and distinct within each row.

    daskgd writes them so; a block that is not was written by another tool or altered.
    """
    if _sorted_distinct(indptr, indices):
        return
    bad = np.diff(indices) <= 0
    starts = np.asarray(indptr[1:-1]) - int(indptr[0])
    bad[starts[(starts > 0) & (starts < len(indices))] - 1] = False
    if bad.any():
        pos = int(np.argmax(bad)) + 1
        r = int(np.searchsorted(indptr, int(indptr[0]) + pos, side="right")) - 1
        raise DataValidationError(
            f"{_label('indices', dataset)} is not sorted (or has a duplicate) within "
            f"{_at(r, row0, chunk, None)}: daskgd stores each row's column indices sorted and "
            "distinct. The chunk was written by another tool or altered: write the dataset "
            "again with daskgd.write_zarr"
        )


def canonical_csr(
    X: Any, *, chunk: int | None = None, chunk_rows: int | None = None, row0: int = 0
) -> Any:
    """``X`` (any scipy.sparse form) as a checked, canonical ``csr_matrix`` of float values.

    The arrays are shared with ``X`` when it is a canonical CSR matrix of floats already;
    otherwise converted (``.tocsr()``), sorted and summed (a copy). ``chunk``,
    ``chunk_rows`` and ``row0`` locate ``X`` for the messages, as for :func:`check_csr`.

    Raises
    ------
    DataValidationError
        As :func:`check_csr`; a dtype other than bool, integer or float.
    """
    import scipy.sparse as sp

    m = X if X.format == "csr" else X.tocsr()
    if not isinstance(m, sp.csr_matrix):
        m = sp.csr_matrix(m)  # a csr_array: same arrays, the matrix interface
    kind = m.dtype.kind
    if kind not in "biuf":
        raise DataValidationError(
            f"X has dtype {m.dtype}; daskgd needs float32 or float64 features "
            "(convert with X.astype('float64'))"
        )
    check_csr(m.indptr, m.indices, m.shape[1], chunk=chunk, chunk_rows=chunk_rows, row0=row0)
    if kind != "f" or m.dtype not in (np.float32, np.float64):
        m = m.astype(np.float64)  # integers (and float16): promoted, as for dense X
    if not _sorted_distinct(m.indptr, m.indices):
        # scipy's has_canonical_format is a cached flag, stale once the arrays are edited
        # in place: the indices themselves are checked (one vectorised pass)
        m = m.copy()
        m.has_canonical_format = False
        m.sum_duplicates()  # sorts each row's indices and sums repeated ones
    return m


def _sorted_distinct(indptr: np.ndarray, indices: np.ndarray) -> bool:
    """Whether each row's column indices are strictly increasing."""
    if len(indices) < 2:
        return True
    bad = np.diff(indices) <= 0
    starts = np.asarray(indptr[1:-1]) - int(indptr[0])
    starts = starts[(starts > 0) & (starts < len(indices))]
    bad[starts - 1] = False  # a row's first index may be below the previous row's last
    return not bool(bad.any())


def canonical_block(block: Any, block_info: Any = None) -> Any:
    """One dask block of scipy.sparse rows made canonical (:func:`canonical_csr`); dask's
    ``block_info`` locates it for the messages."""
    chunk, row0 = None, 0
    if block_info and 0 in block_info:
        chunk = int(block_info[0]["chunk-location"][0])
        row0 = int(block_info[0]["array-location"][0][0])
    if not is_scipy_sparse(block):
        raise DataValidationError(
            f"X's row-chunk {chunk} is a {type(block).__name__}, not a scipy.sparse matrix: "
            "the blocks of a sparse dask array must all be scipy.sparse"
        )
    return canonical_csr(block, chunk=chunk, row0=row0)


def block_rows(X: Any, lo: int, hi: int) -> Any:
    """Rows ``[lo, hi)`` of a canonical ``csr_matrix`` as a new canonical one (a copy)."""
    a, b = int(X.indptr[lo]), int(X.indptr[hi])
    indptr = np.asarray(X.indptr[lo : hi + 1]) - a
    return make_csr(X.data[a:b].copy(), X.indices[a:b].copy(), indptr, X.shape[1])


def csr_block_stats(block: Any) -> tuple[int, int, float]:
    """NaN/inf in a CSR block's values: (rows with one, the first such row, 0.0), as
    :func:`~daskgd.data.checks.block_stats` reports a dense block."""
    data = np.asarray(block.data)
    bad = ~np.isfinite(data)
    if not bad.any():
        return 0, -1, 0.0
    rows = np.searchsorted(block.indptr, np.flatnonzero(bad) + block.indptr[0], side="right") - 1
    rows = np.unique(rows)
    return len(rows), int(rows[0]), 0.0


def sparse_to_dask(X: Any, rows: int) -> da.Array:
    """A canonical ``csr_matrix`` in memory as a dask array of ``csr_matrix`` blocks of
    ``rows`` rows (sliced when computed; the matrix is not copied or hashed here)."""
    d = X.shape[1]
    return da.from_array(
        X,
        chunks=(int(rows), d),
        asarray=False,
        name=f"daskgd-csr-{uuid.uuid4().hex}",  # hashing every value would cost a pass
        meta=csr_meta(d, X.dtype),
    )


def csr_dask_array(
    read: Callable[[Any, int], Any],
    source: Any,
    name: str,
    row_chunks: tuple[int, ...],
    n_cols: int,
    dtype: Any,
) -> da.Array:
    """A dask array whose block ``i`` is ``read(source, i)``, a ``csr_matrix`` of
    ``row_chunks[i]`` rows: one task per row-chunk, ``source`` once in the graph."""
    src = f"{name}-source"
    layer: dict[Any, Any] = {src: source}
    for i in range(len(row_chunks)):
        layer[(name, i, 0)] = (read, src, i)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    return da.Array(graph, name, chunks=(tuple(row_chunks), (int(n_cols),)),
                    meta=csr_meta(n_cols, dtype))  # fmt: skip
