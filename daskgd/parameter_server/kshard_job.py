"""A key-value job whose model lives in key-hashed shards on workers: the coordinator's
half (:class:`ShardedKeyedJob`).

The job keeps what a :class:`~daskgd.parameter_server.keyed_job.KeyedJob` keeps (members,
rounds, epochs, stop rules, history) and none of the model: its pushes bring scalars only
(rows, weight, loss), the gradients' slices go from the training tasks to the shards
(:mod:`daskgd.parameter_server.kshard`), and the job tells the shards, with scalars, when a
sync round closes (:meth:`ShardedKeyedJob.finish_round`) or, async, gives each push its
step number, epoch and learning-rate factor (:meth:`ShardedKeyedJob.kadmit_async`), which
the task sends to the shards with its slices. The epoch's penalty comes from the shards as
two sums (:meth:`ShardedKeyedJob.penalty`), and the final model is gathered by the plugin
once, at the end.

Sync mode is the same fit as the whole model on the scheduler: every shard sums a round's
slices by key in rank order and steps with the same ``t``, epoch and weight
(:mod:`daskgd.parameter_server.kshard_state`), so the coefficients are bitwise those of
``n_servers=0``; the history's loss differs from it in the last bits at most, as the
penalty's sums add the shards' parts in another order.
"""

from __future__ import annotations

import math
from collections.abc import Container
from typing import Any

import numpy as np

from daskgd.objective.keyed import KeyedOptimizer
from daskgd.parameter_server.config import JobConfig
from daskgd.parameter_server.keyed_job import KeyedJob, RuleFacts
from daskgd.parameter_server.kshard_set import KeyedShardSet
from daskgd.parameter_server.sharding import ShardError

__all__ = ["ShardedKeyedJob"]


class ShardedKeyedJob(KeyedJob):
    """A key-value job whose model is in key-hashed shards (see the module docstring).

    Parameters
    ----------
    job_id, shape, config, rule, facts, ranks, client, initial_penalty
        As for :class:`~daskgd.parameter_server.keyed_job.KeyedJob` (``rule`` is the
        coordinator's copy, for its schedule; it holds no state).
    kshards : KeyedShardSet
        The shards, created already.
    """

    def __init__(
        self, job_id: str, shape: tuple[int, ...], config: JobConfig, rule: KeyedOptimizer,
        facts: RuleFacts, ranks: list[str], client: str | None, kshards: KeyedShardSet,
        initial_penalty: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__(job_id, shape, {}, config, rule, facts, ranks, client, initial_penalty)
        self.kshards = kshards
        #: its steps call the shards and wait: in the plugin's threads, never on the loop
        self.inline = False

    # -- reads: the model is in the shards (the plugin gathers it) ------------------------
    def dense(self) -> np.ndarray:
        raise RuntimeError("a sharded key-value job's model is gathered from its shards")

    def summary(self, since: int = 0, params: bool = False, live=()) -> dict[str, Any]:
        """As :meth:`KeyedJob.summary`, without the parameters (gathered by the plugin)."""
        return super().summary(since, False, live)

    def penalty(self) -> float:
        """The penalty of the current weights, from the shards' sums (scalars)."""
        reg = self.optimizer.regularizer
        if not reg.alpha:
            return 0.0
        l1, l2 = self.kshards.penalty_sums()
        return reg.alpha * (reg.l1_ratio * l1 + (1.0 - reg.l1_ratio) / 2.0 * l2)

    def _lost(self, exc: ShardError) -> None:
        self.stop("a parameter shard was lost", error=str(exc), kind="training")

    # -- steps ----------------------------------------------------------------------------
    def karrive_scalars(
        self, rank: int, version: int, n: int, weight: float, loss: float,
        workers: Container[str],
    ) -> str:  # fmt: skip
        """Sync mode: take a rank's scalars for the open round (its slices went to the
        shards) and close the round when it is complete."""
        if self.stopped:
            return "stopped"
        if not math.isfinite(loss):
            self._reject(rank, version)
            return "stopped"
        if version < self.version:
            self.dropped += 1
            return "stale"
        if rank in self.pending:
            return "twice"
        self.pending[rank] = (None, n, weight, loss)
        self.try_close_round(workers)
        return "OK"

    def finish_round(self, pending: dict[int, tuple]) -> None:
        """Sync mode: the round's figures, then one call to every shard, which sums the
        round's slices by key in rank order and steps."""
        order = sorted(pending)
        rows = [pending[r][1] for r in order]
        weight = math.fsum(pending[r][2] for r in order)
        loss_sum = math.fsum(pending[r][3] for r in order)
        for r in order:
            self.ranks[r].updates += 1
        v = self.version
        try:
            self.account((order, rows), loss_sum, weight, np.zeros(0), [0] * len(order))
            if self.error is not None:
                return
            ranks = [(r, self.ranks[r].incarnation) for r in order]
            finite, lost = self.kshards.round(v, ranks, max(weight, 0.0), v, self.epochs,
                                              self.eta, [pending[r][2] for r in order])  # fmt: skip
        except ShardError as exc:
            self._lost(exc)
            return
        self.dropped += len(lost)  # a dead rank's slice that missed a shard
        if not finite:
            self.diverged(f"the parameters became non-finite at update {v + 1}")
            return
        self.published = (v + 1, None)

    def kadmit_async(
        self, rank: int, version: int, n: int, weight: float, loss: float
    ) -> dict[str, Any] | None:
        """Async mode: count one push (staleness, clock, epoch) and give its step the
        numbers every shard applies it with; None: not admitted (the job stopped)."""
        if self.stopped:
            return None
        if not math.isfinite(loss):
            self._reject(rank, version)
            return None
        staleness = max(0, self.version - version)
        r = self.ranks[rank]
        r.clock += 1
        r.updates += 1
        try:
            self.account(([rank], [n]), loss, weight, np.zeros(0), [staleness])
        except ShardError as exc:
            self._lost(exc)
        if self.error is not None:
            return None
        v = self.version
        self.published = (v + 1, None)
        scale = 1.0 / max(1, staleness) if self.config.staleness_lr else 1.0
        return {"t": v, "epoch": self.epochs, "lr_scale": scale, "weight": max(weight, 0.0),
                "eta": self.eta, "staleness": staleness}  # fmt: skip
