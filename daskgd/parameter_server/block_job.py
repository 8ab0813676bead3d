"""One feature-partitioned job on the coordinator: its all-reduces, backups and stop rules.

In a feature-partitioned fit (``partition="features"``) rank ``k`` holds every row of its
column block ``X_k`` and owns that block of the parameters, ``w_k``: no process computes
with the whole model. The ranks run the same deterministic algorithm in lockstep
(:mod:`daskgd.worker.block_task`); what they must share goes through :meth:`BlockJob.add`,
an all-reduce: every rank sends its part (the partial margins ``X_k w_k``, or a few
dot products of its block's vectors), and every rank gets the same sum, added in rank order,
so that every rank takes the same decisions. The coordinator adds nothing of its own but
the stop: a ``"stats"`` reduction carries the objective and the gradient norm of an
iterate, and the coordinator applies the stop rules to them (:class:`BlockRules`) and
sends the same decision to every rank with the sum.

A rank's task that is rerun (its worker died) joins again: the job starts a new
*generation*, from the last iterate whose blocks it has from every rank (each rank sends its
block with each ``"stats"`` reduction, the job keeps the last two per rank), and every
rank restarts from its block of that iterate (an L-BFGS restart: its memory is not kept).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TREE_QUIET", "BlockJob", "BlockRules", "group_members"]

#: Entries at the start of a ``"stats"`` reduction: the data loss, the squared norm of the
#: (proximal) gradient and the penalty.
STATS = 3

#: Seconds without a call from a rank after which a tree reduction's wait counts it silent
#: (a rank waiting on its own child asks every few seconds, so it is not the one to name).
TREE_QUIET = 10.0


def group_members(group: str, n_ranks: int, grid: tuple[int, int] | None) -> list[int]:
    """The ranks of ``group`` in rank order: ``"all"`` (every rank), or in a ``grid`` of
    (row blocks, column blocks) the row ``"r<i>"`` or the column ``"c<j>"`` of blocks
    (rank ``i * C + j`` holds block ``(i, j)``)."""
    if grid is None or group == "all":
        return list(range(n_ranks))
    R, C = grid
    k = int(group[1:])
    return [k * C + j for j in range(C)] if group[0] == "r" else [i * C + k for i in range(R)]


@dataclass
class BlockRules:
    """The stop rules of a full-batch fit, applied to each iterate's objective and gradient.

    The same rules as a row-partitioned full-batch fit's (``gtol``, ``gtol_rel``, ``tol``
    over ``n_iter_no_change`` iterations with the gradient below ``sqrt(tol)`` times its
    norm at the start, ``max_epochs``, ``max_time``, divergence).
    """

    max_epochs: int
    tol: float | None = None
    n_iter_no_change: int = 5
    gtol: float | None = None
    gtol_rel: float | None = None
    max_time: float | None = None
    smooth: bool = True
    stochastic: bool = False
    divergence_factor: float = 1e4
    line_search: bool = False
    g0: float | None = None
    first_loss: float | None = None
    best_loss: float = math.inf
    no_improve: int = 0

    def check(self, epoch: int, loss: float, gnorm: float, elapsed: float) -> tuple[str, bool]:
        """``(reason, converged)`` after iterate ``epoch``: reason '' to go on.

        Raises
        ------
        FloatingPointError
            The objective is not finite, or grew ``divergence_factor`` times (the message
            says what to do).
        """
        if not (math.isfinite(loss) and math.isfinite(gnorm)):
            raise FloatingPointError(f"the loss became {loss} at epoch {epoch}")
        if self.first_loss is None:
            self.first_loss, self.g0 = loss, gnorm
        elif not self.line_search and loss > self.divergence_factor * max(self.first_loss, 0.0):
            raise FloatingPointError(
                f"the loss grew to {loss:.3g} by epoch {epoch}, more than "
                f"{self.divergence_factor:g} times its value at the start ({self.first_loss:.3g})"
            )
        if self.gtol is not None and gnorm <= self.gtol:
            return f"gradient norm {gnorm:.3g} <= gtol", True
        if self.gtol_rel is not None and self.g0 and gnorm <= self.gtol_rel * self.g0:
            return (
                f"gradient norm {gnorm:.3g} <= gtol_rel * {self.g0:.3g} (its norm at the start)",
                True,
            )
        if self.tol is not None:
            if loss >= self.best_loss - self.tol * abs(self.best_loss):
                self.no_improve += 1
            else:
                self.no_improve = 0
            self.best_loss = min(self.best_loss, loss)
            if self.no_improve >= self.n_iter_no_change:
                what = (
                    f"loss improved by less than tol={self.tol} for {self.n_iter_no_change} epochs"
                )
                if self.stochastic or not self.smooth:
                    return what, True
                bound = math.sqrt(self.tol) * (self.g0 or 0.0)
                if self.gtol is None and self.gtol_rel is None and gnorm <= bound:
                    return f"{what}; gradient norm {gnorm:.3g} <= sqrt(tol) * {self.g0:.3g}", True
                return (
                    f"{what}, but the gradient norm is still {gnorm:.3g}: not converged (an "
                    "ill-conditioned problem: scale the features, or use optimizer='lbfgs')",
                    False,
                )
        if epoch >= self.max_epochs:
            return f"reached max_epochs={self.max_epochs}", False
        if self.max_time is not None and elapsed >= self.max_time:
            return f"reached max_time={self.max_time:g} s", False
        return "", False


@dataclass
class _Reduction:
    """One all-reduce in flight: the parts received, then the sum and the decision."""

    parts: dict[int, np.ndarray] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    total: np.ndarray | None = None
    stop: dict[str, Any] | None = None
    readers: set[int] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class BlockJob:
    """The coordinator's state of one feature-partitioned job (see the module docstring).

    Parameters
    ----------
    job_id : str
    n_ranks : int
        The column blocks, one training task each.
    rules : BlockRules
    member_timeout : float
        Seconds a reduction waits for a rank that sent nothing before the job stops, naming it.
    client : str, optional
        The driver's client id (the job is freed when it disconnects).
    grid : (int, int), optional
        A grid partition's row blocks and column blocks (``partition="grid"``).
    """

    def __init__(
        self,
        job_id: str,
        n_ranks: int,
        rules: BlockRules,
        member_timeout: float = 600.0,
        client: str | None = None,
        grid: tuple[int, int] | None = None,
    ) -> None:
        self.id, self.n_ranks, self.rules = job_id, n_ranks, rules
        self.grid = grid  # (row blocks, column blocks): rank i * C + j holds block (i, j)
        self.member_timeout, self.client = member_timeout, client
        self.generation = 0
        self.incarnations: list[str | None] = [None] * n_ranks
        self.workers: list[str | None] = [None] * n_ranks
        self.seen: list[float] = [time.monotonic()] * n_ranks  # each rank's last call
        self.reductions: dict[tuple[int, int, str], _Reduction] = {}
        self.backups: list[dict[int, np.ndarray]] = [{} for _ in range(n_ranks)]
        self.restore_epoch: int | None = None  # the iterate the current generation started at
        self.history: list[dict[str, Any]] = []
        self.restarts: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.stopped = False
        self.reason = ""
        self.converged = False
        self.error: str | None = None
        self.error_kind: str | None = None
        self.user_stop: str | None = None
        self.final_epoch: int | None = None  # the iterate the fit stopped at
        self.checked = -1  # the last iterate the stop rules judged
        self.progress = asyncio.Event()

    # -- membership ---------------------------------------------------------------------
    def join(self, rank: int, worker: str) -> dict[str, Any]:
        """A rank's task starts (again): a new incarnation; a rerun starts a new generation."""
        rerun = self.incarnations[rank] is not None
        self.incarnations[rank] = uuid.uuid4().hex
        self.workers[rank] = worker
        self.seen[rank] = time.monotonic()
        if rerun and self.final_epoch is not None:
            # the fit ended without this rank's result (its worker died after the stop):
            # its block where the fit stopped is the backup sent with the last iterate
            return {"status": "ok", "incarnation": self.incarnations[rank], "final": True,
                    "generation": self.generation, "epoch": self.final_epoch,
                    "block": self.backups[rank][self.final_epoch]}  # fmt: skip
        if rerun and not self.stopped:
            self.restart(rank, worker)
        return {"status": "ok", "incarnation": self.incarnations[rank], **self.position(rank)}

    def restart(self, rank: int, worker: str) -> None:
        """Start a new generation from the last iterate every rank backed up."""
        common = set.intersection(*(set(b) for b in self.backups)) if self.backups else set()
        self.restore_epoch = max(common) if common else None
        for kept in self.backups:  # iterates past it are redone, perhaps differently
            for e in [e for e in kept if self.restore_epoch is None or e > self.restore_epoch]:
                del kept[e]
        self.generation += 1
        self.restarts.append(
            {"rank": rank, "worker": worker, "generation": self.generation,
             "epoch": self.restore_epoch, "time": time.monotonic() - self.started}
        )  # fmt: skip
        for r in self.reductions.values():  # waiting ranks hear of the restart
            r.done.set()
        self.reductions.clear()

    def position(self, rank: int) -> dict[str, Any]:
        """Where ``rank`` (re)starts: the generation, and its block of the restore iterate."""
        e = self.restore_epoch
        block = None if e is None else self.backups[rank][e]
        return {"generation": self.generation, "epoch": e, "block": block}

    def check_member(self, rank: Any, incarnation: Any) -> str | None:
        """Why a call from ``rank`` with ``incarnation`` is refused, or None."""
        if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < self.n_ranks:
            return f"rank must be an integer in [0, {self.n_ranks}), got {rank!r}"
        if incarnation != self.incarnations[rank]:
            return "superseded"
        return None

    # -- the all-reduce ---------------------------------------------------------------------
    async def add(
        self,
        rank: int,
        generation: int,
        seq: int,
        value: np.ndarray | None,
        kind: str,
        epoch: int | None,
        backup: np.ndarray | None,
        wait: float,
        group: str = "all",
        size: int | None = None,
    ) -> dict[str, Any]:
        """Add ``rank``'s part to reduction ``seq`` of ``generation`` among the ``size``
        ranks of ``group`` (default: every rank; a grid's row or column of blocks), and wait
        up to ``wait`` seconds for the sum (``value`` None: the part was sent already)."""
        key = (generation, seq, group)
        size = self.n_ranks if size is None else size
        self.seen[rank] = time.monotonic()
        if self.stopped and generation == self.generation and key not in self.reductions:
            return self.stopped_reply()
        if generation != self.generation:
            return {"status": "restart", **self.position(rank)}
        r = self.reductions.setdefault(key, _Reduction())
        if value is not None and r.total is None:
            r.parts[rank] = value
            if backup is not None and epoch is not None:
                kept = self.backups[rank]
                kept[epoch] = backup
                for old in sorted(kept)[:-2]:
                    del kept[old]
            if len(r.parts) == size:
                self.close(r, kind, epoch)
        if r.total is None:
            try:
                await asyncio.wait_for(r.done.wait(), wait)
            except TimeoutError:
                pass
            if generation != self.generation:
                return {"status": "restart", **self.position(rank)}
            if r.total is None:
                silent = time.monotonic() - r.started
                if silent > self.member_timeout and not self.stopped:
                    missing = sorted(set(self.members(group)) - set(r.parts))
                    self.fail(
                        f"rank(s) {missing} (column blocks on "
                        f"{[self.workers[m] for m in missing]}) sent nothing for {silent:.0f} s "
                        f"(member_timeout={self.member_timeout:g}): their tasks hang or their "
                        "workers are overloaded. Rerun the fit, or raise member_timeout",
                        "member_timeout",
                    )
                return self.stopped_reply() if self.stopped else {"status": "wait"}
        r.readers.add(rank)
        out = {"status": "ok", "value": r.total, "stop": r.stop}
        if len(r.readers) == size:
            del self.reductions[key]
        return out

    def members(self, group: str) -> list[int]:
        """The ranks of ``group``: every rank, or (``grid`` set) a row or column of blocks."""
        return group_members(group, self.n_ranks, self.grid)

    # -- the tree's questions -----------------------------------------------------------
    def tree_check(
        self, rank: int, generation: int, silent: list[int], waited: float, unreachable: bool
    ) -> dict[str, Any]:
        """A rank of a tree reduction (:mod:`daskgd.parameter_server.block_tree`) has
        waited ``waited`` seconds for ``silent`` (its children's parts, or its parent's
        total; ``unreachable``: sends to them failed): whether to go on (the ranks'
        ``workers``), restart (a new generation) or stop. Past ``member_timeout`` the job
        fails naming the silent ranks: those that called nothing for :data:`TREE_QUIET`
        seconds (a rank waiting on its own child still calls), or the unreachable ones."""
        now = time.monotonic()
        self.seen[rank] = now
        if generation != self.generation:
            return {"status": "restart", **self.position(rank)}
        if self.stopped:
            return self.stopped_reply()
        named = silent if unreachable else [r for r in silent if now - self.seen[r] > TREE_QUIET]
        if named and waited > self.member_timeout:
            how = "could not be reached from" if unreachable else "sent nothing to"
            self.fail(
                f"rank(s) {named} (column blocks on {[self.workers[m] for m in named]}) {how} "
                f"rank {rank} (on {self.workers[rank]}) through the reduction tree for "
                f"{waited:.0f} s (member_timeout={self.member_timeout:g}): their tasks hang, "
                "their workers are overloaded, or the workers cannot connect to each other. "
                "Rerun the fit, raise member_timeout, or use reduction='coordinator'",
                "member_timeout",
            )
            return self.stopped_reply()
        return {"status": "ok", "workers": list(self.workers)}

    def close(self, r: _Reduction, kind: str, epoch: int | None) -> None:
        """Every part is in: sum them in rank order, and decide the stop on a stats sum."""
        ranks = sorted(r.parts)
        total = np.array(r.parts[ranks[0]], dtype=np.float64)
        for k in ranks[1:]:
            total += r.parts[k]
        r.total, r.parts = total, {}
        if kind == "stats" and epoch is not None:
            r.stop = self.account(epoch, total)
        r.done.set()

    def account(self, epoch: int, total: np.ndarray) -> dict[str, Any] | None:
        """Record iterate ``epoch``'s objective and apply the stop rules: the decision every
        rank gets (None: go on)."""
        if epoch <= self.checked:
            # a restart's replay of an iterate recorded and judged already: the same
            # numbers, and they did not stop the fit
            return None
        self.checked = epoch
        loss = float(total[0] + total[2])
        gnorm = math.sqrt(max(float(total[1]), 0.0))
        elapsed = time.monotonic() - self.started
        self.history.append({"epoch": epoch, "loss": loss, "grad_norm": gnorm,
                             "time": elapsed, "generation": self.generation})  # fmt: skip
        self.progress.set()
        self.progress = asyncio.Event()
        try:
            reason, converged = self.rules.check(epoch, loss, gnorm, elapsed)
        except FloatingPointError as exc:
            self.fail(
                f"training diverged: {exc}. Use a smaller learning_rate, or "
                "optimizer='lbfgs' (its line search cannot diverge)",
                "divergence",
            )
            return {"reason": self.reason, "converged": False}
        if not reason and self.user_stop:
            reason = self.user_stop
        if reason:
            self.stopped, self.reason, self.converged = True, reason, converged
            self.final_epoch = epoch
            return {"reason": reason, "converged": converged}
        return None

    # -- the end ----------------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        """The user's stop: taken at the next iterate, so that every rank stops at the same one."""
        self.user_stop = self.user_stop or reason

    def fail(self, message: str, kind: str) -> None:
        """Stop with an error; ranks waiting in a reduction are told at once."""
        if not self.stopped:
            self.stopped, self.reason = True, kind
        self.error, self.error_kind = self.error or message, self.error_kind or kind
        for r in self.reductions.values():
            r.done.set()
        self.progress.set()

    def stopped_reply(self) -> dict[str, Any]:
        return {"status": "stopped", "reason": self.reason, "error": self.error}

    def summary(self, since: int) -> dict[str, Any]:
        """The status a driver polls: stop state and history rows from ``since``."""
        return {
            "status": "ok",
            "stopped": self.stopped,
            "reason": self.reason,
            "converged": self.converged,
            "error": self.error,
            "error_kind": self.error_kind,
            "history": [dict(h) for h in self.history[since:]],
            "restarts": [dict(r) for r in self.restarts],
            "epochs": self.history[-1]["epoch"] if self.history else 0,
            "blocks": self.final_blocks(),
        }

    def final_blocks(self) -> list[np.ndarray] | None:
        """Every rank's block where the fit stopped (sent with that iterate's report), so
        that the result never depends on which tasks lived to return theirs; None
        before the stop or after an error."""
        e = self.final_epoch
        if e is None or self.error is not None or any(e not in b for b in self.backups):
            return None
        return [b[e] for b in self.backups]
