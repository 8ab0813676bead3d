"""How a job applies gradients: sync rounds, async and ssp pushes.

:class:`Steps` is the part of :class:`daskgd.parameter_server.job.Job` that takes a
gradient and steps. Its methods are the job's mutations: the plugin runs them one at a
time per job (on the event loop for small models, in a worker thread under the job's lock
for large ones, see :attr:`JobConfig.inline_max_params`), and each checks first that the
job has not stopped, so no step is ever applied after the stop, however the calls were
queued. A step publishes ``(version, params)`` as one new pair; a published array is never
mutated. The O(d) checks of a gradient's values happen here too, off the event loop for
large models.
"""

from __future__ import annotations

import math
import time
from collections.abc import Container
from typing import Any

import numpy as np

from daskgd.objective.curvature import loss_resolution
from daskgd.objective.finite import all_finite, norm
from daskgd.objective.lbfgs_sharded import LBFGSCoordinator, whole_state
from daskgd.parameter_server.config import WHOLE_DATA_OPTIMIZERS
from daskgd.parameter_server.sharding import ShardError, ShardSet
from daskgd.parameter_server.stats import EpochRules

__all__ = ["RECOVERY_EVERY", "Steps"]

#: With shards: epochs between two backups of every shard on a neighbouring
#: worker (the point a lost shard is rebuilt from; the steps since are redone), and at
#: least :data:`~daskgd.parameter_server.sharding.BACKUP_SPACING` seconds.
RECOVERY_EVERY = 5


def _finite(grad: np.ndarray | None, loss: float, class_loss: np.ndarray | None) -> bool:
    if not math.isfinite(loss) or (grad is not None and not all_finite(grad)):
        return False
    return class_loss is None or bool(np.all(np.isfinite(class_loss)))


class Steps(EpochRules):
    """Gradient steps of a job (a base of ``Job``)."""

    pending: dict[int, tuple]
    opt_state: Any
    wants_hessian: bool
    shards: ShardSet | None
    shape: tuple[int, ...]
    recovering: bool
    #: shard rebuilds so far: a push admitted before the last one is refused by the shards
    generation: int = 0
    #: when, and why, a shard call of a sync round failed (a lost worker, until it leaves)
    shard_failure: tuple[float, str] | None = None

    def live(self, workers: Container[str]) -> list[int]:
        """Ranks that are active, on a worker the scheduler knows, and not silent.

        A rank is silent when it has not called for ``member_timeout`` seconds (its
        lease ran out) and is not waiting in the open sync round.
        """
        limit = self.config.member_timeout
        now = time.monotonic()
        return [
            i
            for i, r in enumerate(self.ranks)
            if r.active
            and r.address in workers
            and (i in self.pending or now - r.last_seen <= limit)
        ]

    def _step(
        self, mean_grad: np.ndarray, lr_scale: float = 1.0, loss: float | None = None
    ) -> None:
        P, v = self.params, self.version
        lbfgs = self.opt_state.get("lbfgs") if isinstance(self.opt_state, dict) else None
        wanted = getattr(self.optimizer, "precondition", False)
        if lbfgs is not None and lbfgs.h0 is None and wanted:  # before its first direction
            lbfgs.h0 = self.lbfgs_diagonal()
            self.reports = {r: (*v[:6], None) for r, v in self.reports.items()}  # (d + 1) each
        new = self.optimizer.step(P, mean_grad, self.opt_state, v, self.epochs, lr_scale, loss)
        if not all_finite(new):
            self.diverged(f"the parameters became non-finite at update {v + 1}")
            return
        self.published = (v + 1, new)  # readers keep the old pair, which is never mutated

    def _reject(self, rank: int, version: int) -> None:
        self.diverged(
            f"worker {self.ranks[rank].address} (rank {rank}) computed a non-finite loss or "
            f"gradient at version {version}"
        )

    def arrive_sync(
        self, rank: int, version: int, grad: np.ndarray, n: int, weight: float, loss: float,
        class_loss: np.ndarray | None, workers: Container[str], hess: np.ndarray | None = None,
    ) -> str:  # fmt: skip
        """Sync mode: take a rank's gradient (and Hessian, for Newton) for the open round,
        and close the round when it is complete. Returns ``"stopped"``, ``"stale"`` (its
        round closed without it: dropped and counted), ``"twice"`` or ``"OK"`` (the caller
        waits for the round)."""
        if self.stopped:
            return "stopped"
        # Newton's line search backs off from a trial point whose loss overflowed (see
        # finish_round); every other rule stops on a non-finite value
        if not self.optimizer.needs_hessian and not _finite(grad, loss, class_loss):
            self._reject(rank, version)
            return "stopped"
        if version < self.version:
            self.dropped += 1  # its round closed without it (a quorum, or it was thought dead)
            return "stale"
        if rank in self.pending:
            return "twice"
        # a copy: an in-process sender may reuse its buffer once it has our reply (in the
        # push's precision: summed in float64 when the round closes)
        h = None if hess is None else np.array(hess, dtype=np.float64)
        g = None if grad is None else np.array(grad, copy=True)  # None: in the shards
        self.pending[rank] = (g, n, weight, loss, class_loss, h)
        self.try_close_round(workers)
        return "OK"

    def missing_member(self) -> int | None:
        """A full-batch L-BFGS or Newton job's rank that the open round still waits for
        and that has been silent for ``member_timeout`` (its round cannot close without
        it: see :meth:`try_close_round`); None when there is none."""
        if self.config.mode != "sync" or self.optimizer.name not in WHOLE_DATA_OPTIMIZERS:
            return None
        if not self.pending or self.stopped:
            return None
        now = time.monotonic()
        for i, r in enumerate(self.ranks):
            if i not in self.pending and now - r.last_seen > self.config.member_timeout:
                return i
        return None

    def try_close_round(self, workers: Container[str]) -> bool:
        """Sync mode: close the open round if every live member (or the quorum) pushed; a
        full-batch L-BFGS or Newton round waits for every member, live or not (a dead
        member's rerun task pushes at the same version)."""
        if self.config.mode != "sync" or not self.pending or self.stopped or self.recovering:
            return False
        live = set(self.live(workers))
        if self.optimizer.name in WHOLE_DATA_OPTIMIZERS:
            # a round without a dead member's rows would feed the line search the loss of
            # another objective (lower than the optimum, it would never be beaten again):
            # the round waits for the rerun task, which pushes at the same version
            live = set(range(len(self.ranks)))
        quorum = self.config.sync_quorum
        if not (live <= set(self.pending) or (quorum is not None and len(self.pending) >= quorum)):
            return False
        pending, self.pending = self.pending, {}
        self.finish_round(pending)
        # moves only where the tasks start an epoch (their position is the version): the
        # server's row-counted epochs drift from it when a round closes without a rank
        boundary = self.version % self.config.batches_per_epoch == 0
        if self.rebalancer is not None and boundary and not self.stopped:
            moves = self.rebalancer.end_epoch(self.epochs, self.config.max_epochs - self.epochs)
            if moves and self.history:
                self.history[-1]["moves"] = moves
        return True

    def finish_round(self, pending: dict[int, tuple]) -> None:
        """Sync mode: one step with the row-weighted mean of the round's gradients."""
        order = sorted(pending)  # rank order: the sum is bitwise reproducible
        rows = [pending[r][1] for r in order]
        weight = math.fsum(pending[r][2] for r in order)
        loss_sum = math.fsum(pending[r][3] for r in order)
        class_loss = None
        if all(pending[r][4] is not None for r in order):
            class_loss = np.sum([pending[r][4] for r in order], axis=0)
        for r in order:
            self.ranks[r].updates += 1
        if self.shards is not None:
            self._sharded_round(order, rows, weight, loss_sum, class_loss,
                                [pending[r][2] for r in order])  # fmt: skip
            return
        grad_sum = pending[order[0]][0].astype(np.float64, copy=True)
        for r in order[1:]:
            grad_sum += pending[r][0]
        if self.optimizer.needs_hessian:
            self._newton_round(pending, order, rows, weight, loss_sum, grad_sum)
            return
        self.account((order, rows), loss_sum, weight, grad_sum, [0] * len(order), class_loss,
                     owned=True)  # fmt: skip
        if self.error is None and weight > 0:
            # the open epoch's sum is left as it is; once the epoch closed with it, it is
            # divided in place (no new array of d numbers)
            kept = self.stats.grad_sum is grad_sum
            mean = grad_sum / weight if kept else np.divide(grad_sum, weight, out=grad_sum)
            self._step(mean, loss=loss_sum / weight)
        elif self.error is None:
            self.published = (self.version + 1, self.params)
        self.maybe_snapshot()

    #: a sharded job's pieces of the closing epoch (penalty, gradient norm), from its shards
    shard_stats: dict[str, Any] | None = None

    def _sharded_round(
        self, order: list[int], rows: list[int], weight: float, loss_sum: float,
        class_loss: np.ndarray | None, weights: list[float],
    ) -> None:  # fmt: skip
        """Sync mode, sharded: one call to every shard sums the round's slices in rank
        order, gives its pieces of the epoch's figures when the epoch closes (taken before
        the step), and steps; then the stop rules. When they find an error (divergence) the
        step is undone, so that, as with the whole model here, no step follows an error.
        One call to each shard a round, carrying scalars only."""
        assert self.shards is not None
        s, v = self.stats, self.version
        closing = s.rows + sum(rows) >= self.config.n_samples
        total_w = s.weight + weight
        ranks = [(r, self.ranks[r].incarnation) for r in order]
        # the step's learning rate at the epoch count the round leaves (account closes it)
        lr = self.optimizer.schedule(v, self.epochs + (1 if closing else 0))
        mean_w = total_w if total_w > 0 else 1.0
        try:
            if self.lbfgs is not None:
                stats, dots, lost = self.shards.evaluate(v, ranks, mean_w, max(weight, 0.0),
                                                         weights)  # fmt: skip
                finite = True
            else:
                stats, finite, lost = self.shards.round(v, ranks, closing, mean_w, lr, v,
                                                        max(weight, 0.0), weights)  # fmt: skip
        except ShardError as exc:
            if self.recovering or self.shards.backup_version is not None:
                # a shard's worker is lost (the scheduler may notice it only after this
                # call did): the recovery redoes this round; if the worker does not leave
                # within SHARD_LOSS_WAIT the job fails (JobRunner.maybe_finish)
                self.recovering = True
                self.shard_failure = (time.monotonic(), str(exc))
                return
            raise
        self.shard_stats = stats if closing else None
        if lost:  # a dead rank's slice missed a shard: its push is lost (shard.round)
            self.dropped += len(lost)
            self.stats.partial = True
        grad_sum = np.zeros(0)  # the gradient is in the shards (see account)
        self.account((order, rows), loss_sum, weight, grad_sum, [0] * len(order), class_loss)
        if self.lbfgs is not None and self.error is None:
            try:
                finite = self._lbfgs_direction(v, weight, loss_sum, stats, dots, bool(lost))
            except ShardError as exc:
                if not (self.recovering or self.shards.backup_version is not None):
                    raise
                # as above: the rebuild rolls every shard and the coordinator's numbers
                # back to the backup, undoing a direction some shards took
                self.recovering = True
                self.shard_failure = (time.monotonic(), str(exc))
                return
        if self.error is not None:
            if finite and self.lbfgs is None:
                self.shards.rollback(v + 1)
        elif not finite:
            self.diverged(f"the parameters became non-finite at update {v + 1}")
        else:
            self.published = (v + 1, None)
            due = not self.shards.no_replica and (
                self.shards.backup_version is None
                or (closing and self.epochs % RECOVERY_EVERY == 0 and self.shards.spaced())
            )
            if due and not self.stopped:
                try:
                    self.shards.backup(v + 1)
                    self.keep_lbfgs(v + 1)
                except ShardError:  # a worker left meanwhile: no recovery point until the next
                    self.shards.backup_version = None
        self.maybe_snapshot()

    lbfgs: LBFGSCoordinator | None
    lbfgs_backups: dict[int, LBFGSCoordinator]

    def _lbfgs_direction(
        self, v: int, weight: float, loss_sum: float, stats: dict[str, Any], dots: dict,
        lost: bool = False,
    ) -> bool:  # fmt: skip
        """Sharded L-BFGS: decide on the point round ``v`` evaluated, from the objective
        (the round's loss and the shards' penalty) and the summed dot products; the shards
        step to the next point. Whether it is finite. A round that ``lost`` a rank's
        slice has a partial gradient: the shards stay, to evaluate the point again."""
        assert self.lbfgs is not None and self.shards is not None
        decision: dict[str, Any] = {"action": "stay"}
        if weight > 0 and not lost:
            decision = self.lbfgs.tell(loss_sum / weight + stats["penalty"], dots)
        return self.shards.direction(v, decision)

    def keep_lbfgs(self, version: int) -> None:
        """Sharded L-BFGS: keep its numbers as at ``version``, where the shards' backups
        are (the last two, as the shards keep theirs)."""
        if self.lbfgs is not None:
            self.lbfgs_backups[version] = self.lbfgs.copy()
            for old in sorted(self.lbfgs_backups)[:-2]:
                del self.lbfgs_backups[old]

    #: Newton: the decrease its quadratic model predicts from the point the round evaluated,
    #: when that point was accepted (read by the stop rules), else None
    model_decrement: float | None = None
    #: Newton: the loss's relative resolution when the decrement can be trusted, else None
    model_resolution: float | None = None

    def _newton_round(
        self, pending: dict[int, tuple], order: list[int], rows: list[int], weight: float,
        loss_sum: float, grad_sum: np.ndarray,
    ) -> None:  # fmt: skip
        """Sync mode with Newton: sum the Hessians (rank order), let the optimizer propose
        the next point (its decrement feeds the stop rules), then close the epoch.

        The Hessian is summed and solved here, where the parameters live. A round with a
        non-finite value at a trial point is a step the line search backs off from; at a
        point the search cannot back off from (the first), it is divergence.
        """
        missing = [r for r in order if pending[r][5] is None]
        if missing and self.wants_hessian:
            self.stop("failed", error=f"rank(s) {missing} pushed no Hessian for optimizer "
                      "'newton'", kind="internal")  # fmt: skip
            return
        hess_sum = None
        if not missing:  # every rank's Hessian (asked for, or sent anyway): a fresh one
            hess_sum = pending[order[0]][5]
            for r in order[1:]:
                hess_sum += pending[r][5]
        finite = _finite(grad_sum, loss_sum, None)
        finite = finite and (hess_sum is None or bool(np.all(np.isfinite(hess_sum))))
        self.model_decrement = self.model_resolution = None
        proposal = None
        if weight > 0:
            newton = self.opt_state["newton"]
            newton.resolution = loss_resolution(sum(rows))
            newton.rows = max(rows)
            if not finite and newton.best() is None:
                self._reject(order[0], self.version)
                return
            P, v = self.params, self.version
            proposal = self.optimizer.step(
                P,
                grad_sum / weight,
                self.opt_state,
                v,
                self.epochs,
                loss=loss_sum / weight,
                hess=None if hess_sum is None else hess_sum / weight,
            )
            self.model_decrement = newton.decrement
            self.wants_hessian = newton.want_hessian
            # a decrement from a matrix the last step did not vouch for is not a stop test
            self.model_resolution = None if newton.want_hessian else newton.resolution
        epochs = self.epochs
        self.account((order, rows), loss_sum, weight, grad_sum, [0] * len(order), None)
        if self.epochs > epochs and self.history:  # this round's row: a pass with a Hessian?
            self.history[-1]["hessian"] = hess_sum is not None
        if proposal is not None and self.config.quadratic and not self.stopped:
            self._exact_step(newton.model_gradient, proposal)
        if self.error is None and not self.stopped:
            if proposal is None:  # weightless data: nothing to step on
                self.published = (self.version + 1, self.params)
            elif not np.all(np.isfinite(proposal)):
                self.diverged(f"the parameters became non-finite at update {self.version + 1}")
            else:
                self.published = (self.version + 1, proposal)
        self.maybe_snapshot()

    def _exact_step(self, gm: np.ndarray | None, proposal: np.ndarray) -> None:
        """Quadratic objective (squared error, no L1): a plain Newton step lands on the
        optimum, and the model's gradient there, ``g + H p``, is the objective's own (to
        rounding, as a pass would measure it). When it passes ``gtol``/``gtol_rel`` the fit
        stops, converged, at the new point, one pass in all (the last history row is the
        pass at the point before, as after any step)."""
        if gm is None or not (self.history and self.history[-1]["complete"]):
            return  # damped, singular or fallback: the next round evaluates the point
        test = self._gradient_test(norm(gm))
        if test:
            self.stop(f"{test}: the Newton step solves the least-squares problem (the exact "
                      "quadratic model's gradient at the new point)", converged=True)  # fmt: skip
            self.published = (self.version + 1, proposal)

    def apply_async(
        self, rank: int, version: int, grad: np.ndarray, n: int, weight: float, loss: float,
        class_loss: np.ndarray | None = None,
    ) -> int | None:  # fmt: skip
        """Async/ssp mode: apply one push now; returns its staleness (None: not applied,
        the job stopped)."""
        if self.stopped:
            return None
        if not _finite(grad, loss, class_loss):
            self._reject(rank, version)
            return None
        staleness = self.version - version
        r = self.ranks[rank]
        r.clock += 1
        r.updates += 1
        g = grad.astype(np.float64, copy=False)
        self.account(([rank], [n]), loss, weight, g, [staleness], class_loss)
        if self.error is None:
            scale = 1.0 / max(1, staleness) if self.config.staleness_lr else 1.0
            if self.rebalancer is not None:  # placement="latency": weighed by its rows
                scale *= self.rebalancer.step_scale(n)
            if weight > 0:
                self._step(g / weight, scale)
            else:
                self.published = (self.version + 1, self.params)
        self.maybe_snapshot()
        return staleness

    def admit_async(
        self, rank: int, version: int, n: int, weight: float, loss: float,
        class_loss: np.ndarray | None = None,
    ) -> dict[str, Any] | None:  # fmt: skip
        """Async/ssp with shards: count one push as :meth:`apply_async` does (staleness,
        clock, epoch statistics) and give the step its number ``t``, learning rate and
        epoch; the task then sends its slices to the shards, which apply them at once.
        None: not admitted (the job stopped)."""
        if self.stopped:
            return None
        if self.epoch_due or self.recovering:  # queued behind an epoch's close or a rebuild
            return {"wait": True}
        if not _finite(None, loss, class_loss):
            self._reject(rank, version)
            return None
        v = self.version
        staleness = max(0, v - version)
        r = self.ranks[rank]
        r.clock += 1
        r.updates += 1
        epoch = self.epochs
        self.account(([rank], [n]), loss, weight, np.zeros(0), [staleness], class_loss)
        if self.error is not None:
            return None
        scale = 1.0 / max(1, staleness) if self.config.staleness_lr else 1.0
        if self.rebalancer is not None:
            scale *= self.rebalancer.step_scale(n)
        lr = self.optimizer.schedule(v, self.epochs + (1 if self.epoch_due else 0)) * scale
        self.published = (v + 1, None)
        return {"t": v, "lr": lr, "epoch": epoch, "weight": max(weight, 0.0),
                "gen": self.generation,
                "due": self.epoch_due, "count": self.stats.updates,
                "mean_w": self.stats.weight if self.stats.weight > 0 else 1.0}  # fmt: skip

    def close_due_epoch(self, stats: dict[str, Any], lost: int) -> None:
        """Async/ssp with shards: close the epoch whose pushes were all admitted, with the
        shards' pieces of its figures; ``lost`` pushes never reached a shard (their task
        died between the coordinator and the shards): counted as dropped."""
        self.epoch_due = False
        if self.stopped:
            return
        self.dropped += lost
        if lost:  # its figures miss those pushes on some shards: no stop rule reads them
            self.stats.partial = True
        self.shard_stats = stats
        self.close_epoch()
        self.shard_stats = None
        self.maybe_snapshot()

    # -- checkpoints -------------------------------------------------------------------
    snapshot: dict[str, Any] | None
    snapshot_seq: int

    def take_snapshot(self) -> dict[str, Any]:
        """This job's state for a checkpoint, copied (run where steps run: consistent); a
        sharded job's parameters and state are gathered from its shards, whole, so that
        the checkpoint resumes with any number of shards."""
        version, params = self.published
        if self.shards is not None:
            params, state, _ = self.shards.gather()
            params = params.reshape(self.shape)
            if self.lbfgs is not None:
                state = whole_state(state, self.shape, self.lbfgs)
        else:
            state = self.optimizer.export_state(self.opt_state)
        return {
            "params": params,  # published: never mutated
            "state": state,
            "version": version,
            "epochs": self.epochs,
            "history_len": len(self.history),  # rows are sent by ``snapshot``, O(new rows)
            "progress": {
                "best_loss": self.best_loss,
                "no_improve": self.no_improve,
                "first_loss": self.first_loss,
                "ref_loss": self.ref_loss,
                "g0": self.g0,
                "eta": self.eta,
                "clocks": [r.clock for r in self.ranks],
                "elapsed": time.time() - self.start + self.time_offset,
            },
        }

    def maybe_snapshot(self) -> None:
        """After a step: keep a snapshot if an epoch due for a checkpoint just closed."""
        if self._snapshot_due and self.error is None:
            self.snapshot = self.take_snapshot()
            self.snapshot_seq += 1
        self._snapshot_due = False

    def fresh_snapshot(self) -> None:
        """Take a snapshot now (the driver's last checkpoint): the snapshot and its
        sequence number change together, so a newer snapshot is never overwritten by an
        older one under a higher number."""
        if self.error is None:
            self.snapshot = self.take_snapshot()
            self.snapshot_seq += 1
