"""CSR (compressed sparse row) blocks for the kernels: :class:`CSRBlock`, :func:`check_csr`
and :func:`compact_columns`.

:func:`~daskgd.kernels.grad_loss` takes a ``scipy.sparse`` CSR matrix or array (or a
:class:`CSRBlock` of the three arrays, as a Zarr CSR group stores them) and reads only its
stored entries; :func:`check_csr` is the check it makes. :func:`compact_columns` renumbers
a batch's columns to the ones it touches, so that a key-value parameter server sends only
those weights (:func:`~daskgd.kernels.grad_loss_keys`).

Conversions
-----------
``data`` and ``indices`` are never copied (they are as large as the block): ``data`` must
be float32 or float64 and ``indices`` int32 or int64, each contiguous. ``indptr`` (one
entry per row) is converted to int64 when it is another integer type or not contiguous.
scipy is imported only by callers that pass scipy objects.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["CSRBlock", "check_csr", "compact_columns", "is_sparse", "row_of_entry"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_INDICES = (np.dtype(np.int32), np.dtype(np.int64))


class CSRBlock(NamedTuple):
    """The three arrays of a CSR block and its shape, as the compiled kernels read them.

    Row ``i`` holds ``data[indptr[i]:indptr[i + 1]]`` at the columns
    ``indices[indptr[i]:indptr[i + 1]]`` (any order; a repeated column adds).
    """

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    @property
    def dtype(self) -> np.dtype:
        """The values' dtype."""
        return self.data.dtype

    @property
    def nnz(self) -> int:
        """The number of stored entries (``indptr[-1]``)."""
        return int(self.indptr[-1])


def is_sparse(X: Any) -> bool:
    """Whether ``X`` is a ``scipy.sparse`` matrix or array (any format); scipy is not imported."""
    return (type(X).__module__ or "").startswith("scipy.sparse")


def row_of_entry(indptr: np.ndarray, entry: int) -> int:
    """The row that holds stored entry ``entry`` (an index into ``data``/``indices``)."""
    return int(np.searchsorted(indptr, entry, side="right")) - 1


def check_csr(X: Any, check_input: bool = True) -> CSRBlock:
    """Check a CSR block's structure; return its arrays as the kernels take them.

    Parameters
    ----------
    X : scipy.sparse CSR matrix or array, or CSRBlock
        The block. Its ``data`` and ``indices`` are never copied.
    check_input : bool, default=True
        Also check that ``indptr`` never decreases and that every column index lies in
        ``[0, d)``, naming the first bad row (O(n + nnz)). With False the structure is
        trusted (a block read from a dataset that was validated once): out-of-range
        indices then read and write outside the weights and the gradient.

    Returns
    -------
    CSRBlock
        ``data`` and ``indices`` as given, ``indptr`` int32 or int64, the shape ``(n, d)``.

    Raises
    ------
    TypeError
        If ``X`` is sparse in another format than CSR (convert it with ``X.tocsr()``), not
        sparse at all, or holds values that are not float32/float64 or indices that are not
        int32/int64.
    ValueError
        If the arrays do not form a CSR block of ``X``'s shape, or (``check_input``) an
        index lies outside ``[0, d)``.

    Examples
    --------
    >>> import numpy as np
    >>> block = check_csr(CSRBlock(np.ones(2), np.array([3, 0]), np.array([0, 0, 2]), (2, 4)))
    >>> block.nnz, block.indptr.tolist()
    (2, [0, 0, 2])
    """
    if isinstance(X, CSRBlock):
        data, indices, indptr, shape = X
    elif is_sparse(X):
        fmt = getattr(X, "format", "?")
        if fmt != "csr":
            raise TypeError(
                f"X is a sparse {type(X).__name__} in {fmt!r} format; the kernels read rows "
                "of a CSR block: convert it once with X.tocsr()"
            )
        data, indices, indptr, shape = X.data, X.indices, X.indptr, X.shape
    else:
        raise TypeError(
            "X must be a scipy.sparse CSR matrix/array or a CSRBlock, got " + type(X).__name__
        )
    if len(shape) != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {tuple(shape)}")
    n, d = (int(s) for s in shape)
    data, indices, indptr = np.asarray(data), np.asarray(indices), np.asarray(indptr)
    if data.dtype not in _FLOATS:
        raise TypeError(
            f"X's values (X.data) are {data.dtype}, not float32 or float64; convert them "
            "once with X.astype(numpy.float64)"
        )
    if indices.dtype not in _INDICES:
        raise TypeError(
            f"X's column indices (X.indices) are {indices.dtype}, not int32 or int64; convert "
            "them once with X.indices = X.indices.astype(numpy.int64)"
        )
    for name, a in (("data", data), ("indices", indices)):
        if a.ndim != 1 or not a.flags.c_contiguous:
            raise ValueError(
                f"X.{name} must be a contiguous 1-D array; make it one with "
                f"X.{name} = numpy.ascontiguousarray(X.{name})"
            )
    if indptr.ndim != 1 or not np.issubdtype(indptr.dtype, np.integer):
        raise TypeError(f"X.indptr must be a 1-D integer array, got {indptr.dtype} {indptr.shape}")
    if indptr.dtype not in _INDICES or not indptr.flags.c_contiguous:
        indptr = np.ascontiguousarray(indptr, dtype=np.int64)  # one entry per row: cheap
    if indptr.shape[0] != n + 1:
        raise ValueError(f"X.indptr has {indptr.shape[0]} entries; X's {n} rows need {n + 1}")
    room = min(data.shape[0], indices.shape[0])
    if indptr[0] != 0 or indptr[-1] > room:
        raise ValueError(
            f"X.indptr must run from 0 to at most {room} (the stored entries), got "
            f"{int(indptr[0])} .. {int(indptr[-1])}"
        )
    if check_input:
        _check_structure(indices, indptr, d)
    return CSRBlock(data, indices, indptr, (n, d))


def _check_structure(indices: np.ndarray, indptr: np.ndarray, d: int) -> None:
    drops = np.flatnonzero(indptr[1:] < indptr[:-1])
    if drops.size:
        raise ValueError(
            f"X.indptr decreases at row {int(drops[0])}; it must be non-decreasing (rebuild "
            "X with scipy.sparse.csr_array((data, indices, indptr), shape=...) to check it)"
        )
    cols = indices[: int(indptr[-1])]
    if cols.size and (cols.min() < 0 or cols.max() >= d):
        entry = int(np.flatnonzero((cols < 0) | (cols >= d))[0])
        raise ValueError(
            f"X has column index {int(cols[entry])} in row {row_of_entry(indptr, entry)}, "
            f"outside [0, {d}) for its {d} columns; fix the block's indices or its shape"
        )


def compact_columns(X: Any) -> tuple[np.ndarray, Any]:
    """The columns a CSR batch touches, and the batch renumbered to them.

    A key-value parameter server pulls the weights at ``keys`` only; the renumbered batch
    ``X_local`` then goes to :func:`~daskgd.kernels.grad_loss` with those weights, and its
    gradient is the gradient at ``keys``.

    Parameters
    ----------
    X : scipy.sparse CSR matrix or array, or CSRBlock, of shape (n, d)
        The batch.

    Returns
    -------
    keys : ndarray of shape (K,), int64
        The sorted unique column indices of ``X``'s stored entries (an explicit zero
        counts: the structure decides, not the value).
    X_local : same type as ``X``, of shape (n, K)
        ``X`` with column ``keys[j]`` renumbered ``j``. It shares ``X.data``; its indices are
        new (``X``'s index dtype), in ``X``'s order within each row.

    Raises
    ------
    TypeError, ValueError
        As :func:`check_csr`; a column index outside ``[0, d)`` always raises (checking it
        costs nothing here).

    Examples
    --------
    >>> import numpy as np
    >>> X = CSRBlock(np.array([1.0, 2.0, 3.0]), np.array([7, 2, 7]), np.array([0, 2, 3]), (2, 9))
    >>> keys, X_local = compact_columns(X)
    >>> keys.tolist(), X_local.indices.tolist(), X_local.shape
    ([2, 7], [1, 0, 1], (2, 2))
    """
    block = check_csr(X, check_input=False)
    n, d = block.shape
    nnz = block.nnz
    keys, local = np.unique(block.indices[:nnz], return_inverse=True)
    keys = keys.astype(np.int64, copy=False)
    if keys.size and (keys[0] < 0 or keys[-1] >= d):
        _check_structure(block.indices, block.indptr, d)  # names the row
    local = local.reshape(-1).astype(block.indices.dtype, copy=False)  # K <= d: it fits
    parts = (block.data[:nnz], local, block.indptr)
    if isinstance(X, CSRBlock):
        return keys, CSRBlock(*parts, shape=(n, keys.size))
    # copy=False: X_local's values are X's (scipy may still narrow or widen the new indices)
    return keys, type(X)(parts, shape=(n, keys.size), copy=False)
