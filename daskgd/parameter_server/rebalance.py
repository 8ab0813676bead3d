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

**Async and ssp modes.** There no round waits, but each push steps with its batch's mean
gradient, so a rank that pushes twice as often weighs its rows twice as much: the fixed
point favours the fast workers' rows. Evening that out takes two things:

- the same moves, decided where the server's (row-counted) epoch closes: they make every
  rank's pass over its rows take the same time, so every row is visited equally often and
  every rank pushes equally often (an ssp bound then rarely holds anyone back);
- each push's step weighted by its rows (:meth:`Rebalancer.step_scale`): a rank with more
  rows has larger batches, whose mean gradient stands for more rows. The largest batch
  steps as it always did and smaller ones take a proportionally smaller step, so no step
  grows beyond the configured learning rate.

What differs from sync mode:

- a rank's epoch is its kernel seconds plus a fixed cost per push (the gaps between its
  pushes arriving here, less its kernel and reading time and any time the ssp bound held
  it here), which no move changes: where those costs dominate, moves gain little and are
  not made;
- the figures add up over the server's epochs until every rank has passed over all its
  rows :data:`PASSES` times under the current assignment (and the first such window, which
  holds the tasks' start, decides nothing), and go on adding up while it stands (their noise
  shrinks as they do); a move starts them afresh, after a settling window as in sync mode;
- the moves even the ranks' epochs out (from the longest to the shortest), not only
  shorten the longest: the rank with the shortest epoch pushes most often. A decision's
  moves are judged together: made if together they narrow the spread by
  :data:`ASYNC_MIN_GAIN` of the longest epoch and repay their reads (one chunk at a time
  is often too small a step to pass a threshold set above the noise);
- each task takes a new assignment where its own epoch ends (its position a multiple of
  the batches per epoch), so each of its epochs passes over its rows exactly once. Until
  it does, it computes on its former rows and its timings are not counted (they carry the
  assignment version they were measured under). A chunk may meanwhile be trained by both
  ranks, or by neither, for part of an epoch: async epochs are each rank's own anyway.

This module is plain Python: it runs in the scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = [
    "ASYNC_MIN_GAIN",
    "HORIZON",
    "MIN_GAIN",
    "PASSES",
    "STEP_GAIN",
    "Rebalancer",
    "check_rebalance",
]

#: A move must shorten the epoch's predicted time by at least this share of it.
MIN_GAIN = 0.05
#: Async/ssp: the passes over its rows every rank makes before a decision.
PASSES = 2
#: Async/ssp: the least share of the epoch one of several moves must gain.
STEP_GAIN = 0.01
#: Async/ssp: the share of the epoch a decision's moves must gain together (their timings
#: are noisier: a window holds few of a slow rank's pushes, and a rank's gaps between
#: pushes include the server's replies to the others).
ASYNC_MIN_GAIN = 0.15
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
    patient : bool
        Async/ssp: the measurement goes on over the server's epochs until every rank has
        passed over all its rows under the current assignment (a slow rank may push only
        a few times in one server epoch, or still compute on its former rows); only then
        are moves decided. Sync: every epoch is measured on its own.
    """

    def __init__(
        self, assignment: list[list[int]], chunk_rows: list[int], batches_per_epoch: int,
        patient: bool = False,
    ) -> None:  # fmt: skip
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
        # the epoch after a move: measured, not decided on (async/ssp: the first too, whose
        # timings hold the tasks' start: loading, warming up)
        self.settling = patient
        self.patient = patient
        # async/ssp: each push's fixed cost (its round trip and the task's own work beside
        # the kernel), from the gaps between a rank's pushes arriving here
        self.overhead = [0.0] * n
        self.gaps = [0] * n
        self.last: list[tuple[float, float] | None] = [None] * n  # (arrival, seconds held)

    def message(self) -> list[Any]:
        """What every reply carries: ``[version, assignment]``."""
        return [self.version, [list(a) for a in self.assignment]]  # replies never change

    def rows(self, rank: int) -> int:
        return sum(self.chunk_rows[c] for c in self.assignment[rank])

    def step_scale(self, rows: int) -> float:
        """Async/ssp: the factor of a push's step (its batch's mean gradient) that weighs
        its ``rows`` as many as they are: the push's rows over the largest rank's batch
        (see the module notes), at most 1."""
        largest = max(self.rows(r) for r in range(len(self.assignment))) / self.nb
        return min(1.0, rows / largest) if largest > 0 else 1.0

    def held(self, rank: int, seconds: float) -> None:
        """Async/ssp: ``rank``'s last push was held here ``seconds`` (the ssp bound), time
        that is not the rank's own."""
        last = self.last[rank]
        if last is not None:
            self.last[rank] = (last[0], last[1] + seconds)

    def observe(self, rank: int, rows: int, timing: Any, now: float | None = None) -> None:
        """A push's timing: ``[kernel seconds, seconds reading rows since the last push,
        rows read]`` (non-negative finite numbers; anything else is ignored), optionally
        followed by the assignment version the rank computed under (a timing measured on
        an earlier assignment's rows is not counted). ``now``: the push's arrival (async/ssp),
        whose gap from the rank's previous push, less that push's hold, kernel and reading
        time, is the rank's fixed cost per push."""
        if not (isinstance(timing, list | tuple) and len(timing) in (3, 4)):
            return
        if len(timing) == 4:
            try:  # the push's client sends the timing as floats
                if float(timing[3]) != self.version:
                    return
            except (TypeError, ValueError):
                return
            timing = timing[:3]
        try:
            kernel, read, read_rows = (float(v) for v in timing)
        except (TypeError, ValueError):
            return
        if not all(math.isfinite(v) and v >= 0 for v in (kernel, read, read_rows)):
            return
        if now is not None:
            last, self.last[rank] = self.last[rank], (now, 0.0)
            if last is not None:
                self.overhead[rank] += max(0.0, now - last[0] - last[1] - kernel - read)
                self.gaps[rank] += 1
        self.kernel[rank] += kernel
        self.done[rank] += int(rows)
        self.read[rank] += read
        self.read_rows[rank] += int(read_rows)

    def end_epoch(self, epochs_done: int, epochs_left: int) -> list[dict[str, Any]]:
        """Decide this epoch's moves (see the module notes), apply them and start the next
        epoch's measurement; returns the moves."""
        n = len(self.assignment)
        measured = all(self.kernel[r] > 0 and self.done[r] > 0 for r in range(n))
        if self.patient:
            # PASSES whole passes of every rank over its rows: a slow rank's few pushes in
            # one short server epoch would be too noisy a measure
            passes = PASSES
            if not all(self.kernel[r] > 0 and self.done[r] >= passes * self.rows(r)
                       for r in range(n)):  # fmt: skip
                return []
        moves: list[dict[str, Any]] = []
        if measured and n > 1 and epochs_left > 0 and not self.settling:
            speed, fixed = self._speeds()
            # the next epoch, as things are (async/ssp: with each push's fixed cost, which
            # no move changes)
            t = [self.rows(r) / speed[r] + fixed[r] for r in range(n)]
            known = [self.read[r] / self.read_rows[r] for r in range(n) if self.read_rows[r]]
            typical = sorted(known)[len(known) // 2] if known else 0.0
            per_row = [self.read[r] / self.read_rows[r] if self.read_rows[r] else typical
                       for r in range(n)]  # fmt: skip
            horizon = min(max(HORIZON, epochs_done), epochs_left)
            if self.patient:
                moves = self._plan(t, speed, per_row, horizon)
            else:
                for _ in range(len(self.chunk_rows)):
                    move = self._best_move(t, speed, per_row, horizon, MIN_GAIN)
                    if move is None:
                        break
                    moves.append(move)
        if moves or self.settling or not self.patient:
            # async/ssp: the figures add up while the assignment stands (its noise shrinks
            # as they do); a move, and the one-off work after it, starts them afresh
            self.kernel = [0.0] * n
            self.done = [0] * n
            self.overhead, self.gaps = [0.0] * n, [0] * n
        self.settling = bool(moves)
        if moves:
            self.version += 1
            self.moves += moves
        return moves

    def _speeds(self) -> tuple[list[float], list[float]]:
        """Each rank's rows per kernel second and fixed seconds per epoch (its pushes' mean
        fixed cost, ``nb`` times; sync: none), as measured."""
        n = len(self.assignment)
        speed = [self.done[r] / self.kernel[r] for r in range(n)]
        fixed = [self.nb * self.overhead[r] / self.gaps[r] if self.gaps[r] else 0.0
                 for r in range(n)]  # fmt: skip
        return speed, fixed

    def _plan(
        self, t: list[float], speed: list[float], per_row: list[float], horizon: int
    ) -> list[dict[str, Any]]:
        """Async/ssp: the moves that even the ranks' epochs out, one chunk at a time from
        the rank that takes longest to the one that takes least, while each narrows the
        spread between them (by :data:`STEP_GAIN` of the longest epoch at least); made
        only if together they narrow it by :data:`ASYNC_MIN_GAIN` of the longest epoch
        and repay their reads (one chunk is often too small a step to pass the threshold
        on its own, the several a slow rank should give away are not). Evening out, not
        only shortening the longest (sync's aim): a rank whose epoch is shortest pushes
        most often, and its rows would weigh most."""
        now, before = max(t), [list(a) for a in self.assignment]
        spread0 = max(t) - min(t)
        moves: list[dict[str, Any]] = []
        for _ in range(len(self.chunk_rows)):
            move = self._even_move(t, speed, per_row)
            if move is None:
                break
            moves.append(move)
        gain, cost = spread0 - (max(t) - min(t)), sum(m["cost_s"] for m in moves)
        if moves and (gain < ASYNC_MIN_GAIN * now or gain * horizon <= cost):
            self.assignment = before
            return []
        return moves

    def _even_move(
        self, t: list[float], speed: list[float], per_row: list[float]
    ) -> dict[str, Any] | None:
        """The chunk off the longest rank onto the shortest that narrows the spread of
        ``t`` most, applied to ``t`` and the assignment; None when none narrows it by
        :data:`STEP_GAIN` of the longest epoch."""
        src = max(range(len(t)), key=lambda r: t[r])
        dst = min(range(len(t)), key=lambda r: t[r])
        if src == dst:
            return None
        spread, least = max(t) - min(t), STEP_GAIN * max(t)

        def narrower(after: list[float], cost: float) -> float | None:
            value = spread - (max(after) - min(after))
            return value if value > least else None

        return self._move_one(t, speed, per_row, src, [dst], narrower, smallest_first=False)

    def _best_move(
        self, t: list[float], speed: list[float], per_row: list[float], horizon: int,
        least: float,
    ) -> dict[str, Any] | None:  # fmt: skip
        """The one move off the slowest rank that shortens the epoch most (by at least
        ``least`` of it), applied to ``t`` and the assignment; None when no move pays."""
        src = max(range(len(t)), key=lambda r: t[r])
        now = max(t)

        def gain(after: list[float], cost: float) -> float | None:
            value = now - max(after)
            return None if value <= least * now or value * horizon <= cost else value

        dsts = [dst for dst in range(len(t)) if dst != src]
        return self._move_one(t, speed, per_row, src, dsts, gain, smallest_first=True)

    def _move_one(
        self, t: list[float], speed: list[float], per_row: list[float], src: int,
        dsts: list[int], objective: Callable[[list[float], float], float | None],
        smallest_first: bool,
    ) -> dict[str, Any] | None:  # fmt: skip
        """The move of one chunk off ``src`` onto one of ``dsts`` with the largest
        ``objective(after, cost)`` (``after``: ``t`` with the move made; ``cost``: the
        receiving rank's seconds to read the chunk; None: the move does not qualify),
        applied to ``t`` and the assignment; None when no move qualifies. One chunk of
        each size is tried (the last of that size), the sizes in the order they first
        appear in ``src``'s chunks or, ``smallest_first``, from the smallest (the first
        of equal values wins), and ``src`` keeps at least one chunk and ``nb`` rows."""
        if len(self.assignment[src]) < 2:
            return None
        by_size = {self.chunk_rows[c]: c for c in self.assignment[src]}
        best: tuple[float, int, int, list[float], float] | None = None
        for rows in sorted(by_size) if smallest_first else list(by_size):
            c = by_size[rows]
            if self.rows(src) - rows < self.nb:
                continue
            for dst in dsts:
                after = list(t)
                after[src] -= rows / speed[src]
                after[dst] += rows / speed[dst]
                cost = rows * per_row[dst]
                value = objective(after, cost)
                if value is not None and (best is None or value > best[0]):
                    best = (value, c, dst, after, cost)
        if best is None:
            return None
        value, c, dst, after, cost = best
        self.assignment[src].remove(c)
        self.assignment[dst].append(c)
        t[:] = after
        return {"chunk": c, "rows": self.chunk_rows[c], "from": src, "to": dst,
                "gain_s": value, "cost_s": cost}  # fmt: skip
