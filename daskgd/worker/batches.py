"""A training task's rows: loading them, cutting mini-batches, measuring their curvature.

:class:`InMemoryBatches` loads a rank's row-chunks once and cuts each epoch's batches from
a permutation of them; :class:`StreamingBatches` (out of core) reads the chunks from Zarr
as the batches need them, one at a time. Both give a batch as a list of pieces
``(X, y, sample_weight, offset)`` (``sample_weight`` and ``offset`` None when the data has
none) and the curvature figures of ``learning_rate="auto"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from daskgd.data.csr import is_scipy_sparse as is_sparse

__all__ = [
    "GRAM_MAX",
    "GRAM_SEND_MAX",
    "MEASURE_ROWS",
    "Gram",
    "InMemoryBatches",
    "Piece",
    "StreamingBatches",
    "as_csr",
    "check_offset",
    "column_squares",
    "contiguous_block",
    "head",
    "load_rows",
    "power_top",
    "rows_curvature",
]


def as_csr(X: Any) -> Any:
    """A scipy.sparse block as a canonical ``csr_matrix`` (sorted indices, no duplicates);
    the data arrays are shared when it is one already."""
    import scipy.sparse as sp

    X = sp.csr_matrix(X)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    return X


def contiguous_block(
    X: np.ndarray, y: np.ndarray, w: np.ndarray | None, offset: np.ndarray | None = None
):
    """One row-chunk as C-contiguous arrays, or a CSR matrix for sparse rows (runs on the
    worker that will train on it): ``(X, y, sample_weight, offset)``."""
    return (
        as_csr(X) if is_sparse(X) else np.ascontiguousarray(X),
        np.ascontiguousarray(y),
        None if w is None else np.ascontiguousarray(w),
        None if offset is None else np.ascontiguousarray(offset, dtype=np.float64),
    )


def check_offset(offset: np.ndarray | None, where: str) -> None:
    """Refuse non-finite offsets as they are read (a ``DataValidationError``, which the
    driver raises as it is)."""
    if offset is None or np.isfinite(offset).all():
        return
    from daskgd.data.checks import OFFSET_HINT
    from daskgd.errors import DataValidationError

    first = int(np.flatnonzero(~np.isfinite(offset))[0])
    raise DataValidationError(
        f"offset ({where}) holds {offset[first]!r} at row {first} of these rows; offsets must "
        f"be finite. {OFFSET_HINT}"
    )


def load_rows(
    source: tuple,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Concatenate the rank's chunks: ``("zarr", path, chunks, options, sizes)`` or
    ``("blocks", blocks)``; ``(X, y, sample_weight, offset)``."""
    if source[0] == "zarr":
        from daskgd.data.chunkio import read_row_arrays

        _, path, chunks, options, _ = source
        out = read_row_arrays(path, chunks, storage_options=options)
        return out["X"], out["y"], out.get("sample_weight"), out.get("offset")
    elif source[0] == "blocks":
        blocks = source[1]
    else:
        raise ValueError(f"unknown data source kind {source[0]!r}")
    if len(blocks) == 1:
        return blocks[0]
    if is_sparse(blocks[0][0]):
        import scipy.sparse as sp

        X = sp.vstack([b[0] for b in blocks], format="csr")
    else:
        X = np.concatenate([b[0] for b in blocks])
    y = np.concatenate([b[1] for b in blocks])
    w = None if blocks[0][2] is None else np.concatenate([b[2] for b in blocks])
    o = None if blocks[0][3] is None else np.concatenate([b[3] for b in blocks])
    return X, y, w, o


Piece = tuple[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None"]

#: Rows of its first batch on which a rank measures the loss before any step (an estimate
#: of the whole batch's for larger batches; sync full-batch fits take the exact value from
#: their first round).
MEASURE_ROWS = 8192


def head(pieces, rows: int) -> list[Piece]:
    """The first ``rows`` rows of a batch's pieces."""
    out: list[Piece] = []
    for X, y, sw, o in pieces:
        if rows <= 0:
            break
        out.append((X[:rows], y[:rows], None if sw is None else sw[:rows],
                    None if o is None else o[:rows]))  # fmt: skip
        rows -= len(y)
    return out


#: Up to this many parameters (features plus the intercept) the curvature of a rank's rows
#: is the largest eigenvalue of their Gram matrix, computed exactly; above, it is estimated
#: by power iteration.
GRAM_MAX = 1024
#: Up to this many parameters a rank sends its Gram matrix itself, so that the parameter
#: server takes the exact top eigenvalue of the whole data's (at most 512 KiB a rank).
GRAM_SEND_MAX = 256
_POWER_ITERATIONS = 40
_POWER_MARGIN = 1.5
_BLOCK_ROWS = 8192


class Gram:
    """``A^T W A`` of the rows fed to it, ``A`` the rows with a column of ones for the
    intercept, and the weighted sum of their squared norms."""

    def __init__(self, d: int, intercept: bool) -> None:
        self.intercept = intercept
        self.G = np.zeros((d + intercept, d + intercept)) if d + intercept <= GRAM_MAX else None
        self.sq = 0.0
        self.weight = 0.0

    def add(self, X: Any, sw: np.ndarray | None) -> None:
        if is_sparse(X):
            self._add_sparse(X, sw)
            return
        for lo in range(0, X.shape[0], _BLOCK_ROWS):
            Xb = np.asarray(X[lo : lo + _BLOCK_ROWS], dtype=np.float64)
            w = None if sw is None else np.asarray(sw[lo : lo + _BLOCK_ROWS], dtype=np.float64)
            WX = Xb if w is None else Xb * w[:, None]
            wsum = float(Xb.shape[0]) if w is None else float(w.sum())
            self.weight += wsum
            self.sq += float(np.einsum("ij,ij->", WX, Xb)) + (wsum if self.intercept else 0.0)
            if self.G is None:
                continue
            d = Xb.shape[1]
            self.G[:d, :d] += WX.T @ Xb
            if self.intercept:
                col = WX.sum(axis=0)
                self.G[:d, d] += col
                self.G[d, :d] += col
                self.G[d, d] += wsum

    def _add_sparse(self, X: Any, sw: np.ndarray | None) -> None:
        # CSR rows: the products stay sparse, and the Gram matrix is formed only when small
        w = np.ones(X.shape[0]) if sw is None else np.asarray(sw, dtype=np.float64)
        wsum = float(w.sum())
        self.weight += wsum
        # squares summed in float64, as the dense rows' are (float32 values widened)
        squares = X.data.astype(np.float64) ** 2
        sq_rows = np.bincount(np.repeat(np.arange(X.shape[0]), np.diff(X.indptr)),
                              weights=squares, minlength=X.shape[0])  # fmt: skip
        self.sq += float(w @ sq_rows) + (wsum if self.intercept else 0.0)
        if self.G is None:
            return
        d = X.shape[1]
        WX = X.astype(np.float64)  # a copy, scaled by its rows' weights
        WX.data *= np.repeat(w, np.diff(X.indptr))
        self.G[:d, :d] += (WX.T @ X).toarray()
        if self.intercept:
            col = np.asarray(WX.sum(axis=0), dtype=np.float64).ravel()
            self.G[:d, d] += col
            self.G[d, :d] += col
            self.G[d, d] += wsum

    def sendable(self) -> np.ndarray | None:
        """The Gram matrix when it is small enough to send (see :data:`GRAM_SEND_MAX`)."""
        if self.G is None or self.G.shape[0] > GRAM_SEND_MAX:
            return None
        return self.G

    def top(self) -> float | None:
        """The largest eigenvalue of the Gram matrix (None when it was too large to form)."""
        if self.G is None:
            return None
        return float(np.linalg.eigvalsh(self.G)[-1]) if self.G.size else 0.0


def column_squares(pieces, n_features: int) -> np.ndarray:
    """``sum_i w_i a_ij^2`` for each column of the rows ``A = [X, 1]`` in ``pieces`` (the
    last entry, the column of ones, is the weight), in float64: the diagonal of
    ``A^T W A``, which full-batch L-BFGS scales its steps by (its ``precondition``)."""
    out = np.zeros(n_features + 1)
    for X, _, sw, _ in pieces:
        n = X.shape[0]
        w = np.ones(n) if sw is None else np.asarray(sw, dtype=np.float64)
        out[-1] += n if sw is None else w.sum()
        if is_sparse(X):
            from daskgd.kernels.builds import KERNELS

            X = as_csr(X)
            # one pass of the compiled kernel over the stored entries, no temporaries
            # (scipy's w @ (X o X) needs a float64 copy of the values: 160 MB for
            # 20,000,000 entries, which cost more than the product)
            KERNELS.column_squares_csr(X.data, X.indices, X.indptr,
                                       None if sw is None else w, out[:-1])  # fmt: skip
            continue
        rows = max(1, 2**22 // max(X.shape[1], 1))  # float64 blocks of 32 MB at most
        for lo in range(0, n, rows):
            B = np.asarray(X[lo : lo + rows], dtype=np.float64)
            out[:-1] += np.einsum("i,ij,ij->j", w[lo : lo + rows], B, B)
    return out


def power_top(parts: list[tuple[Any, np.ndarray | None]], intercept: bool, seed: int) -> float:
    """An estimate of the largest eigenvalue of ``A^T W A`` by power iteration, ``A`` the
    rows of ``parts`` (``(X, sample_weight)`` pairs) with a column of ones for the intercept.

    The Rayleigh quotient approaches the top eigenvalue from below; the caller scales it
    by a margin, so that a step ``1 / L`` stays below the ``2 / lambda_max`` where full-batch
    descent on a quadratic would diverge even when the estimate is off by a third.
    """
    d = parts[0][0].shape[1]
    v = np.random.default_rng([seed, 7]).standard_normal(d + intercept)
    v /= np.linalg.norm(v)
    theta = 0.0
    for _ in range(_POWER_ITERATIONS):
        z = np.zeros_like(v)
        for X, sw in parts:
            u = X @ v[:d].astype(X.dtype) + (v[d] if intercept else 0.0)
            wu = u if sw is None else u * sw
            z[:d] += np.asarray(X.T @ wu.astype(X.dtype)).ravel()
            if intercept:
                z[d] += float(wu.sum())
        theta = float(v @ z)
        nz = float(np.linalg.norm(z))
        if nz == 0.0:
            break
        v = z / nz
    return theta


def rows_curvature(parts: list[tuple[Any, np.ndarray | None]], intercept: bool, seed: int):
    """:meth:`InMemoryBatches.curvature` of the rows of ``parts`` (``(X, sample_weight)``
    pairs, dense or CSR): exact up to :data:`GRAM_MAX` parameters, by power iteration
    above."""
    g = Gram(parts[0][0].shape[1], intercept)
    for X, sw in parts:
        g.add(X, sw)
    top = g.top()
    if top is None:
        top = min(g.sq, _POWER_MARGIN * power_top(parts, intercept, seed))
    return top, g.sq, g.weight, g.sendable()


class InMemoryBatches:
    """The rank's rows, loaded once; batches cut from a per-epoch permutation of them."""

    def __init__(
        self, source: tuple, nb: int, seed: int, rank: int, check, rows: Piece | None = None
    ) -> None:
        # ``rows``: the rank's rows already read and checked (a latency placement's move)
        if rows is None:
            self.X, self.y, self.sw, self.off = load_rows(source)
            self.y = check(self.y, self.sw, "")
        else:
            self.X, self.y, self.sw, self.off = rows
        check_offset(self.off, f"rank {rank}")
        self.n, self.nb, self.key = self.X.shape[0], nb, (seed, rank)
        self.bounds = np.linspace(0, self.n, nb + 1).round().astype(np.intp)
        self.sparse = is_sparse(self.X)
        if nb > 1 and self.sparse:  # CSR rows: each epoch's permutation is a new matrix
            self.Xb, self.yb, self.swb, self.offb = self.X, self.y, self.sw, self.off
        elif nb > 1:  # buffers the per-epoch permutation is written into
            self.Xb, self.yb = np.empty_like(self.X), np.empty_like(self.y)
            self.swb = None if self.sw is None else np.empty_like(self.sw)
            self.offb = None if self.off is None else np.empty_like(self.off)
        else:
            self.Xb, self.yb, self.swb, self.offb = self.X, self.y, self.sw, self.off
        self.epoch = -1

    def curvature(self, intercept: bool, seed: int):
        """(top eigenvalue of ``A^T W A``, weighted sum of squared row norms, weight, and
        ``A^T W A`` itself when small enough to send, else None)."""
        return rows_curvature([(self.X, self.sw)], intercept, seed)

    def pieces(self, epoch: int, b: int) -> list[Piece]:
        if self.nb > 1 and epoch != self.epoch:
            perm = np.random.default_rng([*self.key, epoch]).permutation(self.n)
            if self.sparse:
                # let the last epoch's permuted copy go first: two copies at most, as dense
                self.Xb = self.yb = self.swb = self.offb = None  # type: ignore[assignment]
                self.Xb, self.yb = self.X[perm], self.y[perm]
                self.swb = None if self.sw is None else self.sw[perm]
                self.offb = None if self.off is None else self.off[perm]
            else:
                np.take(self.X, perm, axis=0, out=self.Xb)
                np.take(self.y, perm, out=self.yb)
                if self.sw is not None:
                    np.take(self.sw, perm, out=self.swb)
                if self.off is not None:
                    np.take(self.off, perm, out=self.offb)
            self.epoch = epoch
        lo, hi = int(self.bounds[b]), int(self.bounds[b + 1])
        sw, off = self.swb, self.offb
        if lo == 0 and hi == self.n:  # every row: a slice of CSR rows would be a copy
            return [(self.Xb, self.yb, sw, off)]
        return [(self.Xb[lo:hi], self.yb[lo:hi], None if sw is None else sw[lo:hi],
                 None if off is None else off[lo:hi])]  # fmt: skip


class StreamingBatches:
    """The rank's row-chunks read from Zarr as batches need them, one at a time."""

    def __init__(self, source: tuple, nb: int, seed: int, rank: int, check) -> None:
        _, self.path, self.chunks, self.options, self.sizes = source
        self.n, self.nb, self.key, self.check = int(sum(self.sizes)), nb, (seed, rank), check
        self.bounds = np.linspace(0, self.n, nb + 1).round().astype(np.intp)
        self.held: tuple[Any, Piece | None] = (None, None)  # ((epoch, chunk), arrays)
        self.layout: tuple[int, list[tuple[int, int, int]]] = (-1, [])

    def _order(self, epoch: int) -> list[tuple[int, int, int]]:
        """(chunk, first row in the epoch's order, rows) for each chunk, in order."""
        if self.layout[0] != epoch:
            idx = list(range(len(self.chunks)))
            if self.nb > 1:
                idx = list(np.random.default_rng([*self.key, epoch]).permutation(idx))
            starts = np.concatenate([[0], np.cumsum([self.sizes[i] for i in idx])])
            order = [(self.chunks[i], int(starts[k]), self.sizes[i]) for k, i in enumerate(idx)]
            self.layout = (epoch, order)
        return self.layout[1]

    def _chunk(self, epoch: int, chunk: int) -> Piece:
        key, arrays = self.held
        if key == (epoch, chunk) and arrays is not None:
            return arrays
        from daskgd.data.chunkio import read_row_arrays

        self.held = (None, None)  # let the previous chunk go before reading the next
        got = read_row_arrays(self.path, [chunk], storage_options=self.options)
        X, y, sw, off = got["X"], got["y"], got.get("sample_weight"), got.get("offset")
        y = self.check(y, sw, f", chunk {chunk}")
        check_offset(off, f"rank {self.key[1]}, chunk {chunk}")
        if self.nb > 1:
            perm = np.random.default_rng([*self.key, epoch, chunk + 1]).permutation(len(y))
            X, y = X[perm], y[perm]
            sw = None if sw is None else sw[perm]
            off = None if off is None else off[perm]
        self.held = ((epoch, chunk), (X, y, sw, off))
        return X, y, sw, off

    def curvature(self, intercept: bool, seed: int):
        """As :meth:`InMemoryBatches.curvature`, in one pass over the chunks; above
        :data:`GRAM_MAX` parameters the bound is the trace (the weighted sum of squared
        row norms), which needs no second pass."""
        from daskgd.data import load_chunk

        g: Gram | None = None
        for chunk in self.chunks:
            X, _, sw = load_chunk(self.path, chunk, storage_options=self.options)
            g = g or Gram(X.shape[1], intercept)
            g.add(X, sw)
        assert g is not None  # a rank has at least one chunk
        top = g.top()
        return (g.sq if top is None else top), g.sq, g.weight, g.sendable()

    def pieces(self, epoch: int, b: int):
        lo, hi = int(self.bounds[b]), int(self.bounds[b + 1])
        for chunk, start, rows in self._order(epoch):
            if start + rows <= lo or start >= hi:
                continue
            X, y, sw, off = self._chunk(epoch, chunk)
            a, z = max(lo, start) - start, min(hi, start + rows) - start
            yield X[a:z], y[a:z], None if sw is None else sw[a:z], None if off is None else off[a:z]
