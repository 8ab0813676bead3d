"""A training task's side of ``placement="latency"``: taking the row-chunks the parameter
server assigns to its rank (see :mod:`daskgd.parameter_server.rebalance`).

Every reply of a latency job carries ``assign``: ``[version, each rank's chunks]``. When
this rank's chunks changed, the task keeps the rows of the chunks it still owns, reads the
new ones from the Zarr store and lets the others go, before its next batch (the server moves
chunks only between epochs). A full-batch rank then holds its rows as one piece per chunk
(:class:`~daskgd.worker.chunk_batches.ChunkBatches`; the kernels sum over pieces): no copy
of the rows it kept, which on a machine where fresh memory is slow to fault in costs more
than the read. A mini-batch rank concatenates them (each epoch permutes a copy of them
anyway). Out of core nothing is held: the new chunk list is all.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np

from daskgd.worker.batches import InMemoryBatches, Piece, StreamingBatches, load_rows
from daskgd.worker.chunk_batches import ChunkBatches

__all__ = ["assigned_chunks", "take_chunks"]


def assigned_chunks(reply: dict[str, Any], rank: int) -> tuple[int, list[int]] | None:
    """``(version, this rank's chunks)`` of a reply's assignment, or None (no ``assign``)."""
    assign = reply.get("assign")
    if assign is None:
        return None
    version, ranks = assign
    return int(version), [int(c) for c in ranks[rank]]


def take_chunks(
    batches: Any, source: tuple, chunks: list[int], chunk_rows: list[int], rank: int, check
) -> tuple[Any, tuple, float, int]:
    """The rank's batches and source over ``chunks`` (from Zarr), with the seconds and rows
    it read to get there."""
    kind, path, held, options, _ = source
    if kind != "zarr":
        raise ValueError("placement='latency' moves row-chunks of a Zarr dataset only")
    kept = [c for c in held if c in chunks]
    new = [c for c in chunks if c not in held]
    order = kept + new
    moved = (kind, path, order, options, [chunk_rows[c] for c in order])
    started = time.perf_counter()
    if isinstance(batches, StreamingBatches):
        return StreamingBatches(moved, batches.nb, *batches.key, check), moved, 0.0, 0
    parts = dict(zip(held, _per_chunk(batches, [chunk_rows[c] for c in held]), strict=True))
    if new:
        X, y, sw, off = load_rows((kind, path, new, options, [chunk_rows[c] for c in new]))
        loaded = (X, check(y, sw, ""), sw, off)
        parts.update(zip(new, _split(loaded, [chunk_rows[c] for c in new]), strict=True))
    pieces = [parts[c] for c in order]
    if batches.nb == 1:
        out: Any = ChunkBatches(pieces, batches.key, getattr(batches, "mapped", None))
    else:
        rows = load_rows(("blocks", pieces)) if len(pieces) > 1 else pieces[0]
        out = InMemoryBatches(moved, batches.nb, batches.key[0], rank, check, rows=rows)
    read = sum(chunk_rows[c] for c in new)
    return out, moved, time.perf_counter() - started, read


def _per_chunk(batches: Any, sizes: list[int]) -> list[Piece]:
    """The rows of each held chunk (views), in the order they are held."""
    if isinstance(batches, ChunkBatches):
        return list(batches.parts)
    return _split((batches.X, batches.y, batches.sw, batches.off), sizes)


def _split(rows: Piece, sizes: list[int]) -> list[Piece]:
    bounds = np.cumsum([0, *sizes]).tolist()
    return [
        tuple(None if a is None else a[lo:hi] for a in rows)  # type: ignore[misc]
        for lo, hi in itertools.pairwise(bounds)
    ]
