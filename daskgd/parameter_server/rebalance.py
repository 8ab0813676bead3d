"""Latency placement: row-chunks moved between the training tasks at epoch boundaries, so
that the synchronous rounds of workers of unequal speed finish together.

A sync round waits for its slowest member. With equal rows per worker, a worker half as
fast as the others sets the pace of every round and the others wait half of it. So
``placement="latency"`` measures, each epoch, every rank's rows per second of kernel time
(the training tasks send the kernel seconds of each batch with its push), and at the
epoch's end moves row-chunks from the rank that took longest to the one that would take
least with them, one chunk at a time while a move shortens the epoch's slowest rank:

- a move must cut the predicted epoch time (the slowest rank's kernel seconds) by at least
  :data:`MIN_GAIN` of it: timings are noisy, and a move that gains less could be undone
  by the next epoch's measurement;
- its gain over the epochs to come must exceed its cost: the receiving task reads the
  chunk from the store, at the seconds per row its own reads took so far. How many epochs
  are to come is not known (a tolerance may stop the fit): the gain is counted over as
  many epochs as have run, at least :data:`HORIZON` and at most what ``max_epochs``
  leaves, so that a long fit moves rows that a short one would not repay;
- a rank keeps at least one chunk and at least ``batches_per_epoch`` rows;
- the epoch after a move decides nothing: the ranks that moved rows spent part of it on
  one-off work (reading the new chunks, faulting in fresh memory), which would make them
  look slower than they are and send chunks back.

Moves happen only where an epoch ends (all ranks between two rounds, each with its whole
partition's batches done), so every epoch still passes over every row exactly once, in
mini-batch mode too. The new assignment travels with every reply (``assign``: its version
and each rank's chunks), and a task whose chunks changed reads the new ones before its
next batch; a rerun task (its worker died) loads the rank's current chunks. Every move is
recorded on the history row of the epoch that decided it.

This module is plain Python: it runs in the scheduler.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["HORIZON", "MIN_GAIN", "Rebalancer", "check_rebalance"]

#: A move must shorten the epoch's predicted time by at least this share of it.
MIN_GAIN = 0.05
#: The fewest epochs over which a move's gain is counted against its cost.
HORIZON = 5


def check_rebalance(spec: Any, n_ranks: int | None = None) -> str | None:
    """What is wrong with a job's ``rebalance`` setting (``{"assignment": [[chunk, ...],
    ...], "chunk_rows": [rows, ...]}``), or None."""
    if not isinstance(spec, dict) or set(spec) != {"assignment", "chunk_rows"}:
        return "rebalance must be a dict with keys 'assignment' and 'chunk_rows'"
    rows, assignment = spec["chunk_rows"], spec["assignment"]
    # lists arrive as tuples through the scheduler's messages
    if not (isinstance(rows, list | tuple) and rows and all(_count(r) and r > 0 for r in rows)):
        return "rebalance['chunk_rows'] must be a non-empty list of positive integers"
    if not (
        isinstance(assignment, list | tuple)
        and all(isinstance(a, list | tuple) and all(_count(c) for c in a) for a in assignment)
    ):
        return "rebalance['assignment'] must be a list (one per rank) of lists of chunks"
    flat = [c for a in assignment for c in a]
    if sorted(flat) != list(range(len(rows))) or any(not a for a in assignment):
        return "rebalance['assignment'] must give every chunk to one rank, and each rank some"
    if n_ranks is not None and len(assignment) != n_ranks:
        return f"rebalance['assignment'] has {len(assignment)} ranks, the job {n_ranks}"
    return None


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Rebalancer:
    """Each rank's row-chunks, the timings measured this epoch, and the moves decided.

    Parameters
    ----------
    assignment : list of list of int
        Each rank's chunks at the start.
    chunk_rows : list of int
        Rows of each chunk.
    batches_per_epoch : int
        Batches each rank cuts its rows into (a rank keeps at least that many rows).
    """

    def __init__(
        self, assignment: list[list[int]], chunk_rows: list[int], batches_per_epoch: int
    ) -> None:
        self.assignment = [list(a) for a in assignment]
        self.chunk_rows = list(chunk_rows)
        self.nb = int(batches_per_epoch)
        self.version = 0
        n = len(self.assignment)
        self.kernel = [0.0] * n  # kernel seconds this epoch
        self.done = [0] * n  # rows computed this epoch
        self.read = [0.0] * n  # seconds spent reading rows, since the start
        self.read_rows = [0] * n
        self.moves: list[dict[str, Any]] = []
        self.settling = False  # the epoch after a move: measured, not decided on

    def message(self) -> list[Any]:
        """What every reply carries: ``[version, assignment]``."""
        return [self.version, [list(a) for a in self.assignment]]  # replies never change

    def rows(self, rank: int) -> int:
        return sum(self.chunk_rows[c] for c in self.assignment[rank])

    def observe(self, rank: int, rows: int, timing: Any) -> None:
        """A push's timing: ``[kernel seconds, seconds reading rows since the last push,
        rows read]`` (non-negative finite numbers; anything else is ignored)."""
        if not (isinstance(timing, list | tuple) and len(timing) == 3):
            return
        try:
            kernel, read, read_rows = (float(v) for v in timing)
        except (TypeError, ValueError):
            return
        if not all(math.isfinite(v) and v >= 0 for v in (kernel, read, read_rows)):
            return
        self.kernel[rank] += kernel
        self.done[rank] += int(rows)
        self.read[rank] += read
        self.read_rows[rank] += int(read_rows)

    def end_epoch(self, epochs_done: int, epochs_left: int) -> list[dict[str, Any]]:
        """Decide this epoch's moves (see the module notes), apply them and start the next
        epoch's measurement; returns the moves."""
        n = len(self.assignment)
        measured = all(self.kernel[r] > 0 and self.done[r] > 0 for r in range(n))
        moves: list[dict[str, Any]] = []
        if measured and n > 1 and epochs_left > 0 and not self.settling:
            speed = [self.done[r] / self.kernel[r] for r in range(n)]
            t = [self.rows(r) / speed[r] for r in range(n)]  # the next epoch, as things are
            known = [self.read[r] / self.read_rows[r] for r in range(n) if self.read_rows[r]]
            typical = sorted(known)[len(known) // 2] if known else 0.0
            per_row = [self.read[r] / self.read_rows[r] if self.read_rows[r] else typical
                       for r in range(n)]  # fmt: skip
            horizon = min(max(HORIZON, epochs_done), epochs_left)
            for _ in range(len(self.chunk_rows)):
                move = self._best_move(t, speed, per_row, horizon)
                if move is None:
                    break
                moves.append(move)
        self.kernel = [0.0] * n
        self.done = [0] * n
        self.settling = bool(moves)
        if moves:
            self.version += 1
            self.moves += moves
        return moves

    def _best_move(
        self, t: list[float], speed: list[float], per_row: list[float], horizon: int
    ) -> dict[str, Any] | None:
        """The one move off the slowest rank that shortens the epoch most, applied to
        ``t`` and the assignment; None when no move pays."""
        src = max(range(len(t)), key=lambda r: t[r])
        if len(self.assignment[src]) < 2:
            return None
        now = max(t)
        best: tuple[float, int, int, list[float], float] | None = None
        by_size: dict[int, int] = {}
        for c in reversed(self.assignment[src]):  # one chunk of each size is enough
            by_size.setdefault(self.chunk_rows[c], c)
        for rows, c in sorted(by_size.items()):
            if self.rows(src) - rows < self.nb:
                continue
            for dst in range(len(t)):
                if dst == src:
                    continue
                after = list(t)
                after[src] -= rows / speed[src]
                after[dst] += rows / speed[dst]
                gain = now - max(after)
                cost = rows * per_row[dst]
                if gain < MIN_GAIN * now or gain * horizon <= cost:
                    continue
                if best is None or gain > best[0]:
                    best = (gain, c, dst, after, cost)
        if best is None:
            return None
        gain, c, dst, after, cost = best
        self.assignment[src].remove(c)
        self.assignment[dst].append(c)
        t[:] = after
        return {"chunk": c, "rows": self.chunk_rows[c], "from": src, "to": dst,
                "gain_s": gain, "cost_s": cost}  # fmt: skip
