"""Epoch statistics and the stop rules of a job, and the references they compare with.

:class:`EpochRules` is the part of :class:`daskgd.parameter_server.job.Job` that counts
pushes into epochs, writes a history row when an epoch closes and decides whether the
job stops there (max epochs, tolerances, divergence); it also keeps what the ranks
measured before their first step (``ready``) and chooses the ``auto_lr`` step. Like every
change of a job, its methods run where the job's steps run, one at a time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from distributed.protocol import ToPickle

from daskgd.objective import Optimizer
from daskgd.objective.finite import norm
from daskgd.parameter_server.config import JobConfig
from daskgd.parameter_server.confirm import Confirmation, needs_check
from daskgd.parameter_server.rebalance import Rebalancer

__all__ = ["EpochRules", "EpochStats", "Rank"]


@dataclass
class Rank:
    """One member of a job (a training task's partition) as the server sees it."""

    address: str
    active: bool = True
    joined: bool = False
    clock: int = 0
    updates: int = 0
    incarnation: str | None = None  # the run of the training task that joined last
    last_seen: float = field(default_factory=time.monotonic)  # its lease (member_timeout)


@dataclass
class EpochStats:
    """What the pushes of the current epoch added up to."""

    rows: int = 0
    weight: float = 0.0
    loss_sum: float = 0.0
    class_loss_sum: np.ndarray | None = None  # one-vs-rest: the k summed losses
    grad_sum: np.ndarray | None = None
    updates: int = 0
    st_min: int | None = None
    st_max: int = 0
    st_sum: int = 0
    per_worker: dict[str, int] = field(default_factory=dict)
    ranks: set[int] = field(default_factory=set)
    #: sharded: some push's slice never reached a shard (its worker died): the figures
    #: are partial, like an epoch a partition missed
    partial: bool = False


class EpochRules(Confirmation):
    """Epochs, stop rules and references of a job (a base of ``Job``)."""

    id: str
    config: JobConfig
    optimizer: Optimizer
    ranks: list[Rank]
    # (version, params): replaced, never mutated; params None when shards hold them
    published: tuple[int, Any]
    shards: Any  # the job's ShardSet, or None
    rebalancer: Rebalancer | None  # placement="latency": the job's, else None
    #: async/ssp with shards: the epoch's pushes are all in, its close waits for the shards
    epoch_due: bool = False
    #: the closing epoch's mean gradient, in memory reused from epoch to epoch (a new array
    #: of millions of parameters costs its page faults, every epoch of a full-batch fit)
    _mean_grad: np.ndarray | None = None
    opt_state: Any
    model_decrement: float | None  # Newton: the model's decrease from the evaluated point
    initial: np.ndarray
    start: float
    time_offset: float
    epochs: int
    history: list[dict[str, Any]]
    stats: EpochStats
    best_loss: float
    first_loss: float | None
    no_improve: int
    reports: dict[int, tuple]
    ref_loss: float | None
    g0: float | None
    eta: float | None
    _refs_from_checkpoint: bool
    dropped: int
    _dropped_before: int
    _snapshot_due: bool
    stopped: bool
    reason: str
    converged: bool
    error: str | None
    error_kind: str | None

    @property
    def params(self) -> np.ndarray:
        """The published parameters (never mutated: a step publishes a new array)."""
        return self.published[1]

    @property
    def version(self) -> int:
        """The number of steps taken (with the parameters, one immutable pair)."""
        return self.published[0]

    def stop(
        self,
        reason: str,
        *,
        converged: bool = False,
        error: str | None = None,
        kind: str | None = None,
    ) -> None:
        """Mark the job stopped (the first reason wins); no step is applied after it."""
        if self.stopped:
            return
        self.stopped, self.reason, self.converged = True, reason, converged
        self.error, self.error_kind = error, kind
        if not converged and error is None:
            # a line search's trial point may be worse than the last accepted one: a fit
            # stopped short of convergence during a backtrack returns that point
            best = self.optimizer.best_params(self.opt_state)
            if best is not None and not np.array_equal(best, self.params.ravel()):
                self.published = (self.version + 1, best.reshape(self.params.shape))

    # -- what the ranks measured before their first step ------------------------
    def report(self, rank: int, loss0: float, loss_zero: float, grad0: np.ndarray,
               weight: float, curvature: tuple[float, float, float] | None,
               gram: np.ndarray | None = None,
               colsq: np.ndarray | None = None) -> None:  # fmt: skip
        """Keep a rank's ``ready`` report (its first one) and update the references."""
        if rank in self.reports:
            return  # a rerun task: the first report stands
        self.reports[rank] = (loss0, loss_zero, grad0, weight, curvature, gram, colsq)
        W = math.fsum(r[3] for r in self.reports.values())
        if W <= 0:
            return
        reg = self.optimizer.regularizer
        # a resumed job keeps the references of the fit it continues
        if not self._restored_refs():
            at_start = math.fsum(r[0] for r in self.reports.values()) / W
            at_start += reg.penalty(self.initial)
            at_zero = math.fsum(r[1] for r in self.reports.values()) / W
            self.ref_loss = max(at_start, at_zero)
            g = sum(r[2] for r in self.reports.values()) / W
            self.g0 = self.grad_norm(self.initial, g)

    def lbfgs_diagonal(self) -> np.ndarray | None:
        """The preconditioner of a full-batch L-BFGS job (``LBFGS.h0``): a bound on the
        Hessian's diagonal at the start, ``c * sum_i w_i x_ij^2 / sum_i w_i + l2`` (``c``
        the loss's curvature bound; the intercept's: ``c``), from the column squares the
        ranks reported (rows with the intercept's column of ones last, whose sum is the
        weight); None when none did. Any positive diagonal is a valid preconditioner, so
        one computed before every rank reported only costs speed."""
        sums = [r[6] for _, r in sorted(self.reports.items()) if len(r) > 6 and r[6] is not None]
        if not sums:
            return None
        # in one array, summed in rank order: at millions of parameters each temporary
        # costs its page faults, and this runs while every worker waits
        h = np.array(sums[0], dtype=np.float64)
        for more in sums[1:]:
            h += more
        weight = float(h[-1])
        if not weight > 0:
            return None
        c = self.config.loss_curvature
        c = c if math.isfinite(c) and c > 0 else 1.0
        h *= c
        h /= weight
        h[:-1] += self.optimizer.regularizer.l2
        # a column without values (and no ridge) has no curvature: keep h positive
        np.maximum(h, 1e-12 * c, out=h)
        k = self.params.size // h.size
        return np.repeat(h, k) if k > 1 else h

    def _restored_refs(self) -> bool:
        return self._refs_from_checkpoint

    def auto_step(self, live: list[int]) -> float | None:
        """``auto_lr``: once every live rank reported, set the step ``1 / L`` and return it.

        ``L = c * (lam + m / B) + l2``: ``c`` the loss's curvature bound, ``lam`` the
        largest eigenvalue of the whole data's ``A^T W A / sum(w)`` (``A`` the rows, with
        a column of ones for the intercept): exact when every rank sent its Gram matrix
        (small models), else the sum of the ranks' largest eigenvalues over the total
        weight, a bound (the top eigenvalue of a sum is at most the sum of the top
        eigenvalues) that is tight when the partitions look alike; ``m / B``
        the weighted mean squared row norm over the rows behind one step, the extra
        curvature a mini-batch can show (Gower et al., "SGD: general analysis and
        improved rates", 2019: expected smoothness); ``l2`` the ridge part of the penalty.
        Async and ssp multiply ``L`` by the number of members, the delay of a gradient.
        """
        if self.eta is not None or not self.config.auto_lr:
            return self.eta
        if not live:
            live = list(self.reports)  # no worker left to wait for: use what came in
        if not live or not set(live) <= set(self.reports):
            return None
        curv = [r[4] for r in self.reports.values() if r[4] is not None]
        grams = [r[5] for r in self.reports.values()]
        W = math.fsum(c[2] for c in curv)
        if W <= 0:
            lam = msq = 1.0  # weightless data: any step will do
        else:
            if grams and all(g is not None for g in grams):
                # the same step however the rows are split between the workers
                lam = float(np.linalg.eigvalsh(sum(grams))[-1]) / W
            else:
                lam = math.fsum(c[0] for c in curv) / W
            msq = math.fsum(c[1] for c in curv) / W
        cfg = self.config
        members = len(self.ranks)
        if cfg.mode == "sync":
            per_round = cfg.sync_quorum or members
            exact = cfg.batches_per_epoch == 1 and per_round == members
            rows = cfg.n_samples * per_round / (members * cfg.batches_per_epoch)
        else:
            exact = False
            rows = cfg.n_samples / (members * cfg.batches_per_epoch)
        extra = 0.0 if exact else msq / max(rows, 1.0)
        L = cfg.loss_curvature * (lam + extra) + self.optimizer.regularizer.l2
        if cfg.mode != "sync":
            # async/ssp: a gradient lands up to about one push per other member late, and a
            # stale step is stable when the step times the delay stays below 1 / L
            L *= members
        self.set_eta(1.0 / max(L, 1e-300))
        return self.eta

    def set_eta(self, eta: float) -> None:
        self.eta = float(eta)
        self.optimizer.schedule = replace(self.optimizer.schedule, eta0=self.eta)

    def grad_norm(self, P: np.ndarray, g: np.ndarray) -> float:
        """Norm of the (proximal) gradient of the objective from the mean data gradient ``g``
        (a fresh array; changed in place)."""
        opt = self.optimizer
        return norm(opt.regularizer.proximal_gradient(P, g, opt.fit_intercept))

    def stochastic(self) -> bool:
        """Whether the epochs' gradients are not the exact gradient at one point."""
        cfg = self.config
        full_rounds = cfg.sync_quorum is None or cfg.sync_quorum == len(self.ranks)
        return not (cfg.mode == "sync" and cfg.batches_per_epoch == 1 and full_rounds)

    def account(
        self, rank_rows, loss_sum, weight, grad_sum, staleness, class_loss=None, owned=False
    ) -> None:
        """Add pushes to the epoch; close epochs and check the stop rules. ``owned``: the
        caller never changes ``grad_sum`` (kept without a copy)."""
        s = self.stats
        if class_loss is not None:
            s.class_loss_sum = (
                class_loss if s.class_loss_sum is None else s.class_loss_sum + class_loss
            )
        for rank, rows, st in zip(rank_rows[0], rank_rows[1], staleness, strict=True):
            s.rows += rows
            s.updates += 1
            s.st_min = st if s.st_min is None else min(s.st_min, st)
            s.st_max = max(s.st_max, st)
            s.st_sum += st
            addr = self.ranks[rank].address
            s.per_worker[addr] = s.per_worker.get(addr, 0) + 1
            s.ranks.add(rank)
        s.weight += weight
        s.loss_sum += loss_sum
        if grad_sum.size:  # empty: a sharded job, whose shards sum the epoch's gradient
            first = grad_sum if owned else grad_sum.copy()
            s.grad_sum = first if s.grad_sum is None else s.grad_sum + grad_sum
        else:
            s.grad_sum = grad_sum
        if s.rows >= self.config.n_samples:
            if self.shards is not None and self.config.mode != "sync":
                # async/ssp with shards: closed once the shards' pieces of it came
                # (ShardedAsync.close_due_epoch); admissions wait until then
                self.epoch_due = True
            else:
                self.close_epoch()

    def close_epoch(self) -> None:
        s, cfg, opt = self.stats, self.config, self.optimizer
        self.stats = EpochStats()
        self.epochs += 1
        if cfg.checkpoint_every is not None and self.epochs % cfg.checkpoint_every == 0:
            self._snapshot_due = True
        P = self.params
        mean_w = s.weight if s.weight > 0 else 1.0
        reg = opt.regularizer
        assert s.grad_sum is not None  # an epoch closes only after a push
        shard_stats = getattr(self, "shard_stats", None)
        if shard_stats is not None:  # the shards' pieces (rounds.Steps._sharded_round)
            penalty, gnorm = shard_stats["penalty"], shard_stats["grad_norm"]
            class_pen = shard_stats.get("class_penalty")
        else:
            g, want = self._mean_grad, s.grad_sum
            if g is None or g.shape != want.shape or g.dtype != want.dtype:
                g = self._mean_grad = np.empty_like(want)
            np.divide(s.grad_sum, mean_w, out=g)
            penalty, gnorm = reg.penalty(P), self.grad_norm(P, g)
            class_pen = None
            if s.class_loss_sum is not None:
                class_pen = reg.column_penalty(P)
        loss = s.loss_sum / mean_w + penalty
        per_class = {}
        if s.class_loss_sum is not None:  # each column's objective: its loss and its penalty
            per_class["class_loss"] = (s.class_loss_sum / mean_w + class_pen).tolist()
        complete = len(s.ranks) == len(self.ranks) and not s.partial
        dropped, self._dropped_before = self.dropped - self._dropped_before, self.dropped
        self.history.append(
            {
                "epoch": self.epochs,
                "loss": float(loss),
                "grad_norm": gnorm,
                "time": time.time() - self.start + self.time_offset,
                "updates": s.updates,
                "version": self.version,
                "staleness_min": int(s.st_min or 0),
                "staleness_mean": s.st_sum / max(s.updates, 1),
                "staleness_max": int(s.st_max),
                "worker_updates": dict(s.per_worker),
                "complete": complete,
                "dropped_gradients": dropped,
                **per_class,
                # the published array is never mutated, so it needs no copy
                **({"params": ToPickle(P)} if cfg.record_params else {}),
            }
        )
        if self.rebalancer is not None and cfg.mode != "sync":
            # async/ssp, placement="latency": moves where the server's epoch closes (sync
            # moves where the tasks' epochs end: Steps.try_close_round)
            moves = self.rebalancer.end_epoch(self.epochs, cfg.max_epochs - self.epochs)
            if moves:
                self.history[-1]["moves"] = moves
        if not (math.isfinite(loss) and math.isfinite(gnorm)) and not opt.needs_hessian:
            self.diverged(f"the loss became {loss} at epoch {self.epochs}")
            return
        if opt.needs_hessian and not (math.isfinite(loss) and math.isfinite(gnorm)):
            # a trial point of Newton's line search overflowed: it backs off from it
            if self.epochs >= cfg.max_epochs:
                self.stop(f"reached max_epochs={cfg.max_epochs}")
            return
        if self.first_loss is None:
            self.first_loss = loss
        # the reference is the loss before any step (at the starting parameters, or at zero
        # when that is larger), never an epoch that may have diverged already; a job whose
        # ranks did not report one compares with its first epoch
        ref = self.ref_loss if self.ref_loss is not None and self.ref_loss > 0 else None
        if ref is None and self.epochs > 1 and self.first_loss > 0:
            ref = self.first_loss
        if opt.name in ("lbfgs", "newton"):
            ref = None  # their line search tries points far out and backs off by itself
        if ref is not None and loss > cfg.divergence_factor * ref:
            self.diverged(
                f"the loss grew to {loss:.3g} by epoch {self.epochs}, more than "
                f"{cfg.divergence_factor:g} times its value before the first step ({ref:.3g})"
            )
            return
        if complete and (self.g0 is None or (self.version == 0 and not self.stochastic())):
            # no report, or a sync full-batch fit's first round (at the starting parameters,
            # exact, where the report measured at most a few thousand rows a rank)
            if not self._restored_refs():
                self.g0 = gnorm
        # the stop rules only look at epochs where every partition contributed, so a
        # worker's absence (a restart) cannot make a partial objective look converged
        if complete:
            gtest = self._gradient_test(gnorm) or self._newton_test(loss, gnorm)
            if gtest and self.checkable and needs_check(cfg):  # async/ssp: see confirm.py
                self.open_check(gtest, self._gradient_bound())
            elif gtest:
                self.stop(gtest, converged=True)
                return
            if cfg.tol is not None:
                if loss >= self.best_loss - cfg.tol * abs(self.best_loss):
                    self.no_improve += 1
                else:
                    self.no_improve = 0
                self.best_loss = min(self.best_loss, loss)
                if self.no_improve >= cfg.n_iter_no_change:
                    self._stalled(gnorm)
                    return
        if self.epochs >= cfg.max_epochs:
            self.stop(f"reached max_epochs={cfg.max_epochs}{self.check_note()}")

    def _gradient_bound(self) -> float:
        """The gradient norm the gradient tolerances ask for (the smaller of them)."""
        cfg, bounds = self.config, []
        if cfg.gtol is not None:
            bounds.append(cfg.gtol)
        if cfg.gtol_rel is not None and self.g0 is not None:
            bounds.append(cfg.gtol_rel * self.g0)
        return min(bounds) if bounds else 0.0

    def _gradient_test(self, gnorm: float) -> str:
        """The reason to stop when a gradient tolerance holds, else an empty string."""
        cfg = self.config
        if cfg.gtol is not None and gnorm <= cfg.gtol:
            return f"gradient norm {gnorm:.3g} <= gtol"
        if cfg.gtol_rel is not None and self.g0 is not None and gnorm <= cfg.gtol_rel * self.g0:
            return f"gradient norm {gnorm:.3g} <= gtol_rel * {self.g0:.3g} (its norm at the start)"
        return ""

    def _newton_test(self, loss: float, gnorm: float) -> str:
        """Newton, with ``tol`` and no gradient tolerance: the reason to stop when the loss
        cannot improve by more than ``tol`` relative (the Newton decrement, the decrease
        its quadratic model predicts, at most ``tol * |loss|``) and the gradient is below
        ``sqrt(tol)`` times its norm at the start (the test of a stalled loss), else ''.
        One round decides, where the loss rule would wait ``n_iter_no_change`` epochs.

        With a loss tolerance (``tol`` not None, 0 included), whatever the gradient
        tolerances, Newton also stops when the decrease its model predicts, with a Hessian
        it trusts (fresh, or carried forward through steps that made the expected
        progress), is below the resolution of the summed loss
        (:func:`daskgd.objective.curvature.loss_resolution`): the loss cannot improve
        measurably, which is what the loss rule waits ``n_iter_no_change`` epochs to see;
        the fit returns the step proposed from there. ``tol=None`` leaves the gradient
        tolerances alone to decide."""
        cfg, dec = self.config, getattr(self, "model_decrement", None)
        floor = getattr(self, "model_resolution", None)
        if dec is not None and floor is not None and cfg.tol is not None:
            if dec <= floor * abs(loss):
                return (
                    f"Newton decrement {dec:.3g} is below the summed loss's resolution "
                    f"({floor:.1e} relative): no further decrease is measurable"
                )
        if dec is None or cfg.tol is None or cfg.gtol is not None or cfg.gtol_rel is not None:
            return ""
        # a loss that reaches zero (an exact fit) is judged at the rounding level of the
        # loss at the start
        level = 16 * np.finfo(np.float64).eps * abs(self.first_loss or 0.0)
        if self.g0 is None or dec > max(cfg.tol * abs(loss), level):
            return ""
        if gnorm > math.sqrt(cfg.tol) * self.g0:
            return ""
        return (
            f"Newton decrement {dec:.3g} <= tol * |loss| and gradient norm {gnorm:.3g} <= "
            f"sqrt(tol) * {self.g0:.3g}"
        )

    def _stalled(self, gnorm: float) -> None:
        """The ``tol`` rule fired: stop, converged or not.

        With exact gradients (sync full batch) a stalled loss is convergence only when the
        gradient is small too: below ``gtol``/``gtol_rel`` when given (which did not hold,
        or that rule would have stopped the fit), else below ``sqrt(tol)`` times its norm
        at the start (near an optimum the loss gap shrinks with the gradient's square).
        Stochastic fits, and non-smooth losses (whose gradient need not vanish at the
        optimum), follow scikit-learn's SGD: the stalled loss is the test.
        """
        cfg = self.config
        what = f"loss improved by less than tol={cfg.tol} for {cfg.n_iter_no_change} epochs"
        assert cfg.tol is not None
        if self.checkable and needs_check(cfg) and cfg.smooth and self.g0 is not None:
            # async/ssp full batch: the stalled loss may be a cycle's (see confirm.py)
            gtols = cfg.gtol is not None or cfg.gtol_rel is not None
            bound = self._gradient_bound() if gtols else math.sqrt(cfg.tol) * self.g0
            self.open_check(what, bound, final=True)
            return
        if self.stochastic() or not cfg.smooth:
            self.stop(what, converged=True)
            return
        if cfg.gtol is None and cfg.gtol_rel is None and self.g0 is not None:
            bound = math.sqrt(cfg.tol) * self.g0
            if gnorm <= bound:
                self.stop(f"{what}; gradient norm {gnorm:.3g} <= sqrt(tol) * {self.g0:.3g}",
                          converged=True)  # fmt: skip
                return
        self.stop(
            f"{what}, but the gradient norm is still {gnorm:.3g}: not converged (an "
            "ill-conditioned problem: scale the features, or use optimizer='lbfgs')"
        )

    def diverged(self, what: str) -> None:
        self.stop(
            "diverged",
            error=f"training diverged: {what}. Use a smaller learning_rate "
            f"(now {self.optimizer.schedule.eta0:g}) or a decaying lr_schedule.",
            kind="divergence",
        )
