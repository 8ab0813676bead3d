"""A full-batch rank's rows as one piece per row-chunk, and which holder a task's rows get.

A full-batch task passes over all of its rows every round, so it need not hold them as
one array: the kernels sum over pieces. :class:`ChunkBatches` keeps one piece per
row-chunk: the chunk files mapped where the dataset is uncompressed on a local disk
(:mod:`daskgd.data.mapped`: no copy into new memory), else the chunks as read, or the
blocks the cluster computed for in-memory input, as they are. Mini-batch ranks permute
their rows every epoch into one array (:class:`~daskgd.worker.batches.InMemoryBatches`),
and out-of-core ranks read as they go (:class:`~daskgd.worker.batches.StreamingBatches`).
"""

from __future__ import annotations

from typing import Any

from daskgd.data.csr import is_scipy_sparse as is_sparse
from daskgd.worker.batches import (
    InMemoryBatches,
    Piece,
    StreamingBatches,
    check_offset,
    rows_curvature,
)

__all__ = ["ChunkBatches", "open_batches"]


class ChunkBatches:
    """A full-batch rank's rows, one piece ``(X, y, sample_weight, offset)`` per row-chunk.

    ``mapped``: the :class:`~daskgd.data.mapped.MappedRows` whose files the pieces map (or
    some of them, after a latency move), checked again by :meth:`verify`; None if none.
    """

    def __init__(self, parts: list[Piece], key: tuple[int, int], mapped: Any = None) -> None:
        self.parts = parts
        self.n = sum(len(p[1]) for p in parts)
        self.nb, self.key = 1, key
        self.mapped = mapped

    def pieces(self, epoch: int, b: int) -> list[Piece]:
        return self.parts

    def curvature(self, intercept: bool, seed: int):
        """As :meth:`~daskgd.worker.batches.InMemoryBatches.curvature`, over the pieces."""
        return rows_curvature([(p[0], p[2]) for p in self.parts], intercept, seed)

    def verify(self) -> None:
        """Raise if a mapped chunk's file changed since it was mapped (see
        :meth:`daskgd.data.mapped.MappedRows.verify`)."""
        if self.mapped is not None:
            self.mapped.verify()


def open_batches(source: tuple, nb: int, seed: int, rank: int, check, *, out_of_core: bool):
    """The holder of a rank's rows: ``source`` is ``("zarr", path, chunks, options,
    sizes)`` or ``("blocks", blocks)``, ``nb`` the batches per epoch, ``check(y,
    sample_weight, where)`` the targets' check (returning them encoded)."""
    if out_of_core:
        return StreamingBatches(source, nb, seed, rank, check)
    if nb > 1:
        return InMemoryBatches(source, nb, seed, rank, check)
    mapped = None
    if source[0] == "zarr":
        from daskgd.data.mapped import map_row_chunks

        _, path, chunks, options, _ = source
        mapped = map_row_chunks(path, chunks, storage_options=options)
        if mapped is None:  # compressed, remote or sparse: read into one array
            return InMemoryBatches(source, nb, seed, rank, check)
        pieces, where = mapped.pieces, [f", chunk {c}" for c in chunks]
    elif source[0] == "blocks":
        if any(is_sparse(b[0]) for b in source[1]):  # CSR rows: one matrix, as before
            return InMemoryBatches(source, nb, seed, rank, check)
        pieces, where = source[1], [f", block {k}" for k in range(len(source[1]))]
    else:
        raise ValueError(f"unknown data source kind {source[0]!r}")
    parts: list[Piece] = []
    for (X, y, sw, off), at in zip(pieces, where, strict=True):
        check_offset(off, f"rank {rank}{at}")
        parts.append((X, check(y, sw, at), sw, off))
    return ChunkBatches(parts, (seed, rank), mapped)
