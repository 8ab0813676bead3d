"""Writing a sparse ``X`` as CSR: :func:`~daskgd.data.write_zarr`'s part for scipy.sparse input.

The layout (:mod:`~daskgd.data.sparse_store`) gives each row-chunk a segment of the
non-zero arrays that starts at a multiple of their Zarr chunk, so the segments' places
must be known before anything is written. A dask ``X`` is therefore read twice, one task
per row-chunk each time: the first pass counts each row-chunk's non-zeros in canonical form
(and checks its values), the second writes each row-chunk at its place, on the worker that
computed it. ``X``'s graph is computed twice: persist an expensive one first. An ``X`` in
memory is counted from its ``indptr`` and written from this process.
"""

from __future__ import annotations

import itertools
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr

from daskgd.data.csr import block_rows, canonical_csr, csr_block_stats
from daskgd.data.sparse_store import CSRLayout, csr_targets, write_csr_chunk
from daskgd.data.store import compute_on_cluster
from daskgd.errors import DataValidationError

__all__ = ["csr_write_tasks", "plan_csr", "write_csr_local"]


def _checked(block: Any, i: int, row0: int, validate: bool) -> Any:
    """Row-chunk ``i`` in canonical form, its values checked when asked."""
    m = canonical_csr(block, chunk=i, row0=row0)
    if validate:
        n_bad, first, _ = csr_block_stats(m)
        if n_bad:
            raise DataValidationError(
                f"X contains NaN or inf values in chunk {i} (first bad row {row0 + first}; "
                f"{n_bad} bad row(s) in the chunk); clean the data, or pass validate=False to "
                "skip this check"
            )
    return m


def _count_block(block: Any, i: int, row0: int, validate: bool) -> int:
    """The non-zeros of row-chunk ``i`` in canonical form (the first pass)."""
    return int(_checked(block, i, row0, validate).nnz)


def plan_csr(
    X: Any, Xd: da.Array, chunk_rows: int, *, validate: bool, client: Any = None
) -> CSRLayout:
    """The layout of ``X`` in row-chunks of ``chunk_rows`` rows (``Xd``'s row chunks).

    Parameters
    ----------
    X : scipy.sparse.csr_matrix or dask.array.Array
        A canonical matrix in memory (counted here; its values are checked by the caller),
        or the dask array ``Xd`` itself (counted and checked on the cluster, one task per
        row-chunk).
    Xd : dask.array.Array
        ``X`` as a dask array of CSR blocks of ``chunk_rows`` rows.
    chunk_rows : int
        Rows per row-chunk.
    validate : bool
        Refuse NaN/inf values (dask input; in-memory input is checked by the caller).
    client : distributed.Client, optional
        Where the count runs.

    Raises
    ------
    DataValidationError
        A bad structure or value, naming the chunk and the row.
    """
    n, d = (int(s) for s in Xd.shape)
    if isinstance(X, da.Array):
        count = dask.delayed(_count_block, pure=True)
        starts = np.cumsum((0, *Xd.chunks[0][:-1]))
        tasks = [count(b, i, int(starts[i]), validate)
                 for i, b in enumerate(Xd.to_delayed().ravel())]  # fmt: skip
        nnz = compute_on_cluster(tasks, client)
    else:
        bounds = [*range(0, n, chunk_rows), n]
        nnz = [int(X.indptr[hi] - X.indptr[lo]) for lo, hi in itertools.pairwise(bounds)]
    return CSRLayout.plan(n, d, chunk_rows, nnz, Xd.dtype)


def _write_csr_block(
    targets: tuple[zarr.Array, ...], layout: CSRLayout, i: int, block: Any, validate: bool
) -> tuple[Exception | None, dict[str, int] | None, float]:
    """Write row-chunk ``i`` (on a worker): ``(failure, digests, 0.0)``, as the writes of
    dense chunks report (failures returned, not raised, so that every sibling task ends
    before a half-written group is removed). The values are checked again: a graph that
    is not deterministic gives other values than the first pass checked."""
    try:
        m = _checked(block, i, i * layout.chunk_rows, validate)
        return None, write_csr_chunk(targets, layout, i, m), 0.0
    except Exception as exc:
        return exc, None, 0.0


def csr_write_tasks(g: zarr.Group, layout: CSRLayout, Xd: da.Array, *, validate: bool) -> list[Any]:
    """One delayed write per row-chunk of ``Xd`` (the second pass), for
    :func:`~daskgd.data.store.compute_on_cluster`; values checked when ``validate``."""
    targets = dask.delayed(csr_targets(g), traverse=False)
    layout_d = dask.delayed(layout, traverse=False)  # one copy in the graph
    write = dask.delayed(_write_csr_block, pure=True)
    blocks = Xd.to_delayed().ravel()
    return [write(targets, layout_d, i, b, validate) for i, b in enumerate(blocks)]


def write_csr_local(g: zarr.Group, layout: CSRLayout, X: Any) -> dict[str, list[int]]:
    """Write a canonical ``csr_matrix`` in memory, row-chunk by row-chunk; its digests."""
    targets = csr_targets(g)
    digests: dict[str, list[int]] = {}
    for i in range(len(layout.nnz)):
        lo = i * layout.chunk_rows
        found = write_csr_chunk(targets, layout, i, block_rows(X, lo, lo + layout.rows(i)))
        for name, value in found.items():
            digests.setdefault(name, []).append(value)
    return digests
