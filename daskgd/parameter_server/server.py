"""The parameter server: a scheduler plugin that owns the parameters of every fit.

:class:`ParameterServer` is installed on the Dask scheduler with
``Client.register_plugin`` (idempotent, by name). Its ``start`` adds these
handlers to ``scheduler.handlers``; ``close`` removes them. Every reply is a
dict with a ``status`` key: ``"OK"``, ``"stale"`` (sync: the gradient was
computed at an older version; recompute at the params sent back),
``"stopped"`` (the job is over; see ``reason``/``error``) or ``"error"`` (the
message was invalid and changed nothing; see ``message``). Arrays travel
wrapped in :class:`distributed.protocol.ToPickle`.

==========================  ====================================================
handler                     arguments -> reply (besides ``status``)
==========================  ====================================================
``daskgd_create``           ``job, params, config, optimizer, ranks, client=None``
                            -> ``version``
``daskgd_join``             ``job, rank, worker`` -> ``params, version, position``
                            (and ``initial``, the job's starting parameters, to a rank
                            that has not reported ``ready`` yet)
``daskgd_ready``            ``job, rank, worker, loss0, loss_zero, grad0, weight,
                            curvature=None, gram=None`` -> ``params, version``: after loading, a
                            rank's loss at the starting parameters and at zero and
                            its gradient there (divergence and ``gtol_rel``
                            references), and its curvature figures for
                            ``auto_lr``; with ``auto_lr`` the reply waits until
                            every live rank reported (the step size is then known)
``daskgd_push``             ``job, rank, version, grad, n, weight, loss,
                            worker=None, class_loss=None`` -> ``params, version``
``daskgd_pull``             ``job`` -> ``params, version``
``daskgd_status``           ``job, since=0, params=False, wait=0`` -> ``stopped, reason,
                            converged, error, error_kind, history, version,
                            epochs, live`` (and ``params`` when asked)
``daskgd_stop``             ``job, reason="stopped by the user"`` -> (as status)
``daskgd_close``            ``job`` -> final status with ``params``; frees the job
``daskgd_info``             -> ``jobs, version``
``daskgd_snapshot``         ``job, fresh=False, since=0`` -> ``seq, snapshot``
                            (the latest checkpoint snapshot, or a new one when
                            ``fresh``), ``history`` (its rows from ``since``)
==========================  ====================================================

One-vs-rest jobs (parameters ``(d + 1, k)``, one binary problem per column) push
``class_loss``, the k summed losses, besides their total ``loss``; the epoch's history
row then has ``class_loss``, each class's objective (its mean loss plus its column's
penalty), whose sum is the row's ``loss``.

Checkpoints: with ``checkpoint_every=k`` in the job's config, the job copies its
state (parameters, optimizer state, version, epoch, the length of its history,
stop-rule counters) into a *snapshot* right after the step that closed every
k-th epoch, where the step ran, so the snapshot is consistent; ``status`` replies
carry its sequence number ``snapshot_seq`` and the driver fetches and writes it
(:mod:`daskgd.checkpoint`). ``daskgd_create`` takes ``resume``, such a snapshot,
to continue a checkpointed fit. The scheduler never touches the disk.

Modes: ``sync`` waits until every live member pushed a gradient for the current
version and steps with their row-weighted mean (summed in rank order, so the
result is bitwise reproducible); with ``sync_quorum=k`` a round closes as soon
as ``k`` members pushed (or every live member, when fewer than ``k`` are left)
and steps with the row-weighted mean of the gradients that made it: the
stragglers' late gradients are dropped, counted (``dropped_gradients``) and
answered ``stale`` with the current parameters (backup workers, as in Chen et
al., "Revisiting distributed synchronous SGD", 2016); ``async`` applies each push on arrival and
records its staleness; ``ssp`` is ``async`` where a member more than
``max_staleness`` pushes ahead of the slowest live member waits.

Membership comes from the scheduler: ``remove_worker`` deactivates the ranks
running there, so a round never waits on a dead worker; a rerun training task
calls ``daskgd_join`` and continues from the current parameters.

A step on a large model runs in a dedicated one-thread executor so that it
never holds up the scheduler's event loop; a step on a small model (at most
``INLINE_MAX_PARAMS`` numbers) runs on the loop itself, because handing it to
the executor and back costs more than the arithmetic (measured in
``bench/bench_engine.py``). Either way only one step runs at a time, and
published parameter arrays are never mutated: each step makes a new array.
This module must stay importable without the compiled kernels.

The scheduler's port must be trusted (it unpickles what it is sent; use TLS with
:class:`distributed.security.Security`), but a handler still accepts only
well-formed messages for existing jobs: every argument is checked (types, shapes,
dtypes, ranges) before anything changes, a message with missing or unknown keys is
answered with an error, and an unexpected failure is logged and answered with an
error of kind ``"internal"`` rather than raised into the scheduler.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol import ToPickle

from daskgd._version import __version__
from daskgd.objective.optimizers import LBFGSOptimizer, Optimizer, make_optimizer

__all__ = ["MODES", "PLUGIN_NAME", "Job", "JobConfig", "ParameterServer"]

logger = logging.getLogger(__name__)

PLUGIN_NAME = "daskgd-parameter-server"
MODES = ("sync", "async", "ssp")
#: Models with at most this many parameters are stepped on the event loop (tens of
#: microseconds); larger ones in the aggregator's executor thread.
INLINE_MAX_PARAMS = 16_384
# handler name suffix -> method name (``close`` is taken by the plugin hook)
_OPS = {
    "create": "create",
    "join": "join",
    "ready": "ready",
    "push": "push",
    "pull": "pull",
    "status": "status",
    "stop": "stop",
    "close": "close_job",
    "info": "info",
    "snapshot": "snapshot",
}


@dataclass(frozen=True)
class JobConfig:
    """Settings of one job, sent by the driver as a plain dict.

    Attributes
    ----------
    mode : {"sync", "async", "ssp"}
    n_samples : int
        Rows in the dataset; an epoch ends each time this many rows were pushed.
    batches_per_epoch : int
        Pushes each member makes per pass over its rows.
    max_epochs : int
    tol : float or None
        Stop when the epoch loss has not decreased by more than ``tol`` relative to
        the best loss for ``n_iter_no_change`` epochs in a row.
    n_iter_no_change : int
    gtol : float or None
        Stop when the norm of the (proximal) gradient of the objective is below it.
    gtol_rel : float or None
        Stop when that norm is below ``gtol_rel`` times its norm at the starting
        parameters (as the ranks report it with ``ready``).
    max_time : float or None
        Time budget in seconds.
    max_staleness : int or None
        The bound of ``ssp`` mode.
    staleness_lr : bool
        Async/ssp: divide the learning rate by ``max(1, staleness)``.
    ssp_timeout : float
        Longest an ``ssp`` member waits for the slowest one, in seconds.
    divergence_factor : float
        An epoch loss this many times the reference counts as divergence: the larger
        of the loss at the starting parameters and the loss at zero (reported by the
        ranks before their first step), else the first epoch's loss.
    auto_lr : bool
        The step size is ``1 / L`` with ``L`` computed from the ranks' curvature
        reports (see :meth:`Job.auto_step`), set before the first step.
    loss_curvature : float
        Bound on the second derivative of the loss in the margin (``auto_lr``).
    smooth : bool
        Whether the loss is differentiable (``hinge`` is not: its gradient need not vanish
        at the optimum, so a stalled loss is judged as scikit-learn's SGD judges it).
    record_params : bool
        Keep the parameters of each epoch in its history row (``params``), for a
        driver that scores them (early stopping on held-out data).
    sync_quorum : int or None
        Sync mode: a round closes once this many members pushed (backup workers);
        None waits for every live member. At most the number of members.
    checkpoint_every : int or None
        Take a snapshot for a checkpoint every this many epochs (None: never).
    member_timeout : float
        Seconds a member may stay silent (no push, join or ready) while a sync round or
        an ``auto_lr`` start waits for it; after that it leaves the live set until it
        calls again, so a member that hangs cannot stall the others forever.
    """

    mode: str = "sync"
    n_samples: int = 1
    batches_per_epoch: int = 1
    max_epochs: int = 100
    tol: float | None = 1e-4
    n_iter_no_change: int = 5
    gtol: float | None = None
    gtol_rel: float | None = None
    max_time: float | None = None
    max_staleness: int | None = None
    staleness_lr: bool = False
    ssp_timeout: float = 60.0
    divergence_factor: float = 1e3
    auto_lr: bool = False
    loss_curvature: float = 1.0
    smooth: bool = True
    record_params: bool = False
    sync_quorum: int | None = None
    checkpoint_every: int | None = None
    member_timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("n_samples", "batches_per_epoch", "max_epochs", "n_iter_no_change"):
            v = getattr(self, name)
            if not (_is_index(v) and v >= 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("tol", "gtol", "gtol_rel", "max_time"):
            v = getattr(self, name)
            if v is not None and not (_is_real(v) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be None or a finite number >= 0, got {v!r}")
        for name in ("ssp_timeout", "divergence_factor", "loss_curvature", "member_timeout"):
            v = getattr(self, name)
            if not (_is_real(v) and v > 0 and not math.isnan(v)):
                raise ValueError(f"{name} must be a number > 0, got {v!r}")
        for name in ("staleness_lr", "record_params", "auto_lr", "smooth"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.max_staleness is not None and not (
            _is_index(self.max_staleness) and self.max_staleness >= 0
        ):
            raise ValueError(
                f"max_staleness must be None or an integer >= 0, got {self.max_staleness!r}"
            )
        if self.mode == "ssp" and not (
            isinstance(self.max_staleness, int) and self.max_staleness >= 0
        ):
            raise ValueError(
                f"mode='ssp' needs max_staleness, an integer >= 0; got {self.max_staleness!r}"
            )
        q = self.sync_quorum
        if q is not None:
            if self.mode != "sync":
                raise ValueError(f"sync_quorum applies to mode='sync' only, not {self.mode!r}")
            if not (isinstance(q, int) and not isinstance(q, bool) and q >= 1):
                raise ValueError(f"sync_quorum must be None or an integer >= 1, got {q!r}")
        ce = self.checkpoint_every
        if ce is not None and not (isinstance(ce, int) and not isinstance(ce, bool) and ce >= 1):
            raise ValueError(f"checkpoint_every must be None or an integer >= 1, got {ce!r}")


@dataclass
class _Rank:
    address: str
    active: bool = True
    joined: bool = False
    clock: int = 0
    updates: int = 0
    incarnation: str | None = None  # the run of the training task that joined last


@dataclass
class _EpochStats:
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


class Job:
    """The state of one fit on the parameter server.

    Only the aggregator's executor thread changes ``params``, ``version`` and the
    history; the event loop reads them. ``params`` is replaced, never mutated.
    """

    def __init__(
        self,
        job_id: str,
        params: np.ndarray,
        config: JobConfig,
        optimizer: Optimizer,
        ranks: list[str],
        client: str | None,
    ) -> None:
        self.id = job_id
        self.config = config
        self.optimizer = optimizer
        self.params = params
        self.opt_state = optimizer.init_state(params)
        self.version = 0
        self.ranks = [_Rank(a) for a in ranks]
        self.client = client
        self.start = time.time()
        self.epochs = 0
        self.history: list[dict[str, Any]] = []
        self.params_kept = 0  # rows before this one have dropped their parameters
        self.stats = _EpochStats()
        self.best_loss = math.inf
        self.first_loss: float | None = None
        # what the ranks measured before their first step (``ready``): rank -> (loss at the
        # starting parameters, loss at zero, gradient sum there, weight, curvature figures)
        self.initial = params  # published, never mutated
        self.reports: dict[int, tuple] = {}
        self.ref_loss: float | None = None  # divergence reference (see JobConfig)
        self.g0: float | None = None  # gradient norm at the start, for gtol_rel
        self.eta: float | None = None  # the step size ``auto_lr`` chose
        self._refs_from_checkpoint = False
        self.no_improve = 0
        self.stopped = False
        self.reason = ""
        self.converged = False
        self.error: str | None = None
        self.error_kind: str | None = None
        self.pending: dict[int, tuple] = {}
        # sync: gradients that arrived for a round that had closed (counted on the loop)
        self.dropped = 0
        self._dropped_before = 0  # ``dropped`` when the previous epoch closed
        self.closing = False
        self.round: asyncio.Future = asyncio.get_running_loop().create_future()
        self.tick = asyncio.Event()
        # set when an epoch closes or the job stops: wakes a driver's waiting status call
        self.progress = asyncio.Event()
        self.reported_epochs = 0
        self.time_offset = 0.0  # seconds spent before a resume, for the history's times
        self.snapshot: dict[str, Any] | None = None
        self.snapshot_seq = 0
        self._snapshot_due = False

    # -- checkpoints -----------------------------------------------------------
    def take_snapshot(self) -> dict[str, Any]:
        """This job's state for a checkpoint, copied (run where steps run: consistent)."""
        return {
            "params": self.params,  # published: never mutated
            "state": self.optimizer.export_state(self.opt_state),
            "version": self.version,
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

    def _maybe_snapshot(self) -> None:
        """After a step: keep a snapshot if an epoch due for a checkpoint just closed."""
        if self._snapshot_due and self.error is None:
            self.snapshot = self.take_snapshot()
            self.snapshot_seq += 1
        self._snapshot_due = False

    def restore(self, resume: dict[str, Any]) -> None:
        """Continue from a snapshot (a checkpoint): optimizer state, counters, clocks.

        Raises
        ------
        ValueError, TypeError or KeyError
            On a snapshot that does not fit this job (the handler answers an error).
        """
        if not isinstance(resume, dict):
            raise TypeError(f"resume must be a dict, got {type(resume).__name__}")
        for key in ("version", "epochs"):
            v = resume[key]
            if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 0:
                raise ValueError(f"resume[{key!r}] must be an integer >= 0, got {v!r}")
        self.opt_state = self.optimizer.import_state(self.params, dict(resume["state"]))
        self.version = int(resume["version"])
        self.epochs = int(resume["epochs"])
        progress = dict(resume.get("progress") or {})
        best = progress.get("best_loss")
        self.best_loss = math.inf if best is None else float(best)
        self.no_improve = int(progress.get("no_improve") or 0)
        first = progress.get("first_loss")
        self.first_loss = None if first is None else float(first)
        for key in ("ref_loss", "g0", "eta"):
            v = progress.get(key)
            if v is not None:
                setattr(self, key, float(v))
        self._refs_from_checkpoint = self.ref_loss is not None
        if self.eta is not None and self.config.auto_lr:
            self._set_eta(self.eta)
        self.time_offset = float(progress.get("elapsed") or 0.0)
        clocks = progress.get("clocks")
        if not (isinstance(clocks, list) and len(clocks) == len(self.ranks)):
            clocks = [self.epochs * self.config.batches_per_epoch] * len(self.ranks)
        for r, c in zip(self.ranks, clocks, strict=True):
            r.clock = int(c)

    # -- what the ranks measured before their first step ------------------------
    def report(self, rank: int, loss0: float, loss_zero: float, grad0: np.ndarray,
               weight: float, curvature: tuple[float, float, float] | None,
               gram: np.ndarray | None = None) -> None:  # fmt: skip
        """Keep a rank's ``ready`` report (its first one) and update the references."""
        if rank in self.reports:
            return  # a rerun task: the first report stands
        self.reports[rank] = (loss0, loss_zero, grad0, weight, curvature, gram)
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
        self._set_eta(1.0 / max(L, 1e-300))
        return self.eta

    def _set_eta(self, eta: float) -> None:
        from dataclasses import replace

        self.eta = float(eta)
        self.optimizer.schedule = replace(self.optimizer.schedule, eta0=self.eta)

    def grad_norm(self, P: np.ndarray, g: np.ndarray) -> float:
        """Norm of the (proximal) gradient of the objective from the mean data gradient ``g``
        (a fresh array; changed in place)."""
        opt = self.optimizer
        reg = opt.regularizer
        reg.add_gradient(P, g)
        if not opt.fit_intercept:
            g[-1] = 0.0
        if reg.l1:
            # norm of the proximal gradient mapping (step 1): zero exactly at the optimum
            from daskgd.objective.optimizers import soft_threshold

            z = P - g
            z[:-1] = soft_threshold(z[:-1], reg.l1)
            g = P - z
        return float(np.linalg.norm(g))

    def stochastic(self) -> bool:
        """Whether the epochs' gradients are not the exact gradient at one point."""
        cfg = self.config
        full_rounds = cfg.sync_quorum is None or cfg.sync_quorum == len(self.ranks)
        return not (cfg.mode == "sync" and cfg.batches_per_epoch == 1 and full_rounds)

    # -- decisions -------------------------------------------------------------
    def stop(
        self,
        reason: str,
        *,
        converged: bool = False,
        error: str | None = None,
        kind: str | None = None,
    ) -> None:
        """Mark the job stopped (first reason wins) and wake every waiter."""
        if self.stopped:
            return
        self.stopped, self.reason, self.converged = True, reason, converged
        self.error, self.error_kind = error, kind

    def live(self, workers) -> list[int]:
        """Ranks that are active and whose worker the scheduler still knows."""
        return [i for i, r in enumerate(self.ranks) if r.active and r.address in workers]

    def _account(self, rank_rows, loss_sum, weight, grad_sum, staleness, class_loss=None) -> None:
        """Add pushes to the epoch; close epochs and check the stop rules (executor)."""
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
        s.grad_sum = grad_sum.copy() if s.grad_sum is None else s.grad_sum + grad_sum
        if s.rows >= self.config.n_samples:
            self._close_epoch()

    def _close_epoch(self) -> None:
        s, cfg, opt = self.stats, self.config, self.optimizer
        self.stats = _EpochStats()
        self.epochs += 1
        if cfg.checkpoint_every is not None and self.epochs % cfg.checkpoint_every == 0:
            self._snapshot_due = True
        P = self.params
        mean_w = s.weight if s.weight > 0 else 1.0
        reg = opt.regularizer
        loss = s.loss_sum / mean_w + reg.penalty(P)
        per_class = {}
        if s.class_loss_sum is not None:  # each column's objective: its loss and its penalty
            W = P[:-1]
            pen = 0.5 * reg.l2 * np.sum(W * W, axis=0) + reg.l1 * np.sum(np.abs(W), axis=0)
            per_class["class_loss"] = (s.class_loss_sum / mean_w + pen).tolist()
        assert s.grad_sum is not None  # an epoch closes only after a push
        gnorm = self.grad_norm(P, s.grad_sum / mean_w)
        complete = len(s.ranks) == len(self.ranks)
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
        if not math.isfinite(loss) or not math.isfinite(gnorm):
            self._diverged(f"the loss became {loss} at epoch {self.epochs}")
            return
        if self.first_loss is None:
            self.first_loss = loss
        # the reference is the loss before any step (at the starting parameters, or at zero
        # when that is larger), never an epoch that may have diverged already; a job whose
        # ranks did not report one compares with its first epoch
        ref = self.ref_loss if self.ref_loss is not None and self.ref_loss > 0 else None
        if ref is None and self.epochs > 1 and self.first_loss > 0:
            ref = self.first_loss
        if opt.name == "lbfgs":
            ref = None  # its line search tries points far out and backs off by itself
        if ref is not None and loss > cfg.divergence_factor * ref:
            self._diverged(
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
            gtest = self._gradient_test(gnorm)
            if gtest:
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
            self.stop(f"reached max_epochs={cfg.max_epochs}")

    def _gradient_test(self, gnorm: float) -> str:
        """The reason to stop when a gradient tolerance holds, else an empty string."""
        cfg = self.config
        if cfg.gtol is not None and gnorm <= cfg.gtol:
            return f"gradient norm {gnorm:.3g} <= gtol"
        if cfg.gtol_rel is not None and self.g0 is not None and gnorm <= cfg.gtol_rel * self.g0:
            return f"gradient norm {gnorm:.3g} <= gtol_rel * {self.g0:.3g} (its norm at the start)"
        return ""

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

    def _diverged(self, what: str) -> None:
        self.stop(
            "diverged",
            error=f"training diverged: {what}. Use a smaller learning_rate "
            f"(now {self.optimizer.schedule.eta0:g}) or a decaying lr_schedule.",
            kind="divergence",
        )

    def _step(
        self, mean_grad: np.ndarray, lr_scale: float = 1.0, loss: float | None = None
    ) -> None:
        new = self.optimizer.step(
            self.params, mean_grad, self.opt_state, self.version, self.epochs, lr_scale, loss
        )
        if not np.all(np.isfinite(new)):
            self._diverged(f"the parameters became non-finite at update {self.version + 1}")
            return
        self.params = new  # publish: readers keep the old array, which is never mutated
        self.version += 1

    def finish_round(self, pending: dict[int, tuple]) -> None:
        """Sync mode: one step with the row-weighted mean of the round's gradients (executor)."""
        order = sorted(pending)  # rank order: the sum is bitwise reproducible
        grad_sum = pending[order[0]][0].astype(np.float64, copy=True)
        for r in order[1:]:
            grad_sum += pending[r][0]
        rows = [pending[r][1] for r in order]
        weight = math.fsum(pending[r][2] for r in order)
        loss_sum = math.fsum(pending[r][3] for r in order)
        class_loss = None
        if all(pending[r][4] is not None for r in order):
            class_loss = np.sum([pending[r][4] for r in order], axis=0)
        for r in order:
            self.ranks[r].updates += 1
        self._account((order, rows), loss_sum, weight, grad_sum, [0] * len(order), class_loss)
        if self.error is None and weight > 0:
            self._step(grad_sum / weight, loss=loss_sum / weight)
        elif self.error is None:
            self.version += 1
        self._maybe_snapshot()

    def apply_async(self, rank, version, grad, n, weight, loss, class_loss=None) -> int:
        """Async/ssp mode: apply one push now; returns its staleness (executor)."""
        staleness = self.version - version
        r = self.ranks[rank]
        r.clock += 1
        r.updates += 1
        g = grad.astype(np.float64, copy=False)
        self._account(([rank], [n]), loss, weight, g, [staleness], class_loss)
        if self.error is None:
            scale = 1.0 / max(1, staleness) if self.config.staleness_lr else 1.0
            if weight > 0:
                self._step(g / weight, scale)
            else:
                self.version += 1
        self._maybe_snapshot()
        return staleness

    def forget_params(self, below: int) -> None:
        """Drop the parameter vectors of history rows before ``below``: the driver has them."""
        for h in self.history[self.params_kept : below]:
            h.pop("params", None)
        self.params_kept = max(self.params_kept, min(below, len(self.history)))

    def summary(self, since: int = 0, params: bool = False, live=()) -> dict[str, Any]:
        """The reply of ``daskgd_status``."""
        out: dict[str, Any] = {
            "status": "OK",
            "stopped": self.stopped,
            "reason": self.reason,
            "converged": self.converged,
            "error": self.error,
            "error_kind": self.error_kind,
            "history": self.history[since:],
            "version": self.version,
            "epochs": self.epochs,
            "live": list(live),
            "rank_updates": [r.updates for r in self.ranks],
            "dropped_gradients": self.dropped,
            "snapshot_seq": self.snapshot_seq,
            "learning_rate": self.optimizer.schedule.eta0,
        }
        if params:
            out["params"] = ToPickle(self.params)
        return out


def check_quorum(cfg: JobConfig, opt: Optimizer, members: int) -> None:
    """Refuse a ``sync_quorum`` larger than the job or one L-BFGS cannot work with."""
    q = cfg.sync_quorum
    if q is None:
        return
    if q > members:
        raise ValueError(
            f"sync_quorum={q} but the job has {members} member(s) (training tasks); "
            f"use at most {members}, or None to wait for every live member"
        )
    if q < members and opt.name == "lbfgs":
        raise ValueError(
            f"optimizer='lbfgs' needs every partition in every round (its line search "
            f"compares exact losses of the whole data); sync_quorum={q} of {members} members "
            "would step on a subset. Use sync_quorum=None, or another optimizer"
        )


def _error(message: str, kind: str = "bad_message") -> dict[str, str]:
    return {"status": "error", "message": message, "kind": kind}


def _is_real(v: Any) -> bool:
    """A Python or numpy real number (not a bool) that fits a float64."""
    if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
        return False
    try:
        float(v)
    except OverflowError:
        return False
    return True


def _is_index(v: Any) -> bool:
    """A Python int (not a bool): what ranks, versions and row counts are."""
    return isinstance(v, int) and not isinstance(v, bool)


def _guard(op: str, method: Any) -> Any:
    """Wrap a handler: bad argument sets and unexpected failures become error replies.

    A message with a missing or unknown key would otherwise raise ``TypeError`` in the
    scheduler's comm loop; a bug in a handler is logged here (with its traceback) and
    answered with an error of kind ``"internal"`` instead of an uncaught exception.
    """
    sig = inspect.signature(method)

    @functools.wraps(method)
    async def handler(**msg: Any) -> Any:
        try:
            sig.bind(**msg)
        except TypeError as exc:
            return _error(f"daskgd_{op}: {exc}")
        try:
            return await method(**msg)
        except Exception as exc:
            logger.exception("daskgd_%s failed", op)
            return _error(f"daskgd_{op} failed on the scheduler: {exc!r}", kind="internal")

    return handler


class ParameterServer(SchedulerPlugin):
    """The daskgd aggregator, installed on the scheduler as a plugin.

    Register it once per scheduler (registration is idempotent, by name)::

        client.register_plugin(ParameterServer())

    The driver in :mod:`daskgd.driver.engine` does this; the handlers are listed in the
    module docstring.
    """

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.scheduler: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Future] = set()

    def __getstate__(self) -> dict:
        # only the class travels to the scheduler; state is created by ``start``
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()  # type: ignore[misc]

    # -- plugin hooks ----------------------------------------------------------
    async def start(self, scheduler) -> None:
        """Install the ``daskgd_*`` handlers on ``scheduler``."""
        self.scheduler = scheduler
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="daskgd-aggregator")
        scheduler.handlers.update(
            {f"daskgd_{op}": _guard(op, getattr(self, m)) for op, m in _OPS.items()}
        )

    async def close(self) -> None:
        """Remove the handlers, stop every job and release the executor."""
        if self.scheduler is not None:
            for op in _OPS:
                self.scheduler.handlers.pop(f"daskgd_{op}", None)
        for job in self.jobs.values():
            job.stop("the parameter server closed", error="the scheduler closed", kind="training")
            self._wake(job)
        self.jobs.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def remove_worker(self, scheduler, worker: str, **kwargs: Any) -> None:
        """Deactivate the ranks that ran on ``worker`` and re-check open rounds."""
        for job in self.jobs.values():
            hit = False
            for r in job.ranks:
                if r.address == worker and r.active:
                    r.active, hit = False, True
            if hit:
                task = asyncio.ensure_future(self._maybe_finish(job))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                self._wake(job)

    def remove_client(self, scheduler, client: str) -> None:
        """Free the jobs of a driver that disconnected without closing them."""
        for job_id in [k for k, j in self.jobs.items() if j.client == client]:
            job = self.jobs.pop(job_id)
            job.stop("the driver disconnected", error="the driver disconnected", kind="training")
            self._wake(job)

    # -- helpers ---------------------------------------------------------------
    async def _run(self, j: Job, fn, *args):
        if j.params.size <= INLINE_MAX_PARAMS:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _wake(self, job: Job) -> None:
        job.tick.set()
        job.tick = asyncio.Event()
        if job.epochs != job.reported_epochs or job.stopped:
            job.reported_epochs = job.epochs
            job.progress.set()
            job.progress = asyncio.Event()
        if job.stopped and not job.round.done():
            job.round.set_result(None)

    def _get(self, job: Any) -> Job | dict:
        if not isinstance(job, str) or job not in self.jobs:
            return _error(
                f"unknown job {job!r} (finished, closed, or never created)", kind="unknown_job"
            )
        return self.jobs[job]

    def _workers(self):
        return self.scheduler.workers

    def _params_reply(self, job: Job, status: str = "OK") -> dict[str, Any]:
        if job.stopped:
            status = "stopped"
        out = {"status": status, "params": ToPickle(job.params), "version": job.version}
        if job.stopped:
            out.update(reason=job.reason, error=job.error, error_kind=job.error_kind)
        return out

    def _check_rank(self, job: Job, rank: Any) -> str | None:
        if not _is_index(rank) or not 0 <= rank < len(job.ranks):
            return f"rank must be an integer in [0, {len(job.ranks)}), got {rank!r}"
        return None

    @staticmethod
    def _check_incarnation(job: Job, rank: int, incarnation: Any) -> dict | str | None:
        """A call from an older run of the rank than the one that joined last is refused."""
        if incarnation is None:
            return None
        if not isinstance(incarnation, str):
            return f"incarnation must be None or a string, got {incarnation!r}"
        current = job.ranks[rank].incarnation
        if current is not None and incarnation != current:
            return _error(
                f"rank {rank}: a newer run of this training task joined the job; this run "
                "(its worker was thought lost) must end",
                kind="superseded",
            )
        return None

    def _check_push(self, job: Job, rank, version, grad, n, weight, loss, worker) -> str | None:
        bad = self._check_rank(job, rank)
        if bad:
            return bad
        if not _is_index(version) or version < 0:
            return f"version must be an integer >= 0, got {version!r}"
        if version > job.version:
            return f"version {version} is from the future (current version {job.version})"
        if not isinstance(grad, np.ndarray):
            return f"grad must be a numpy array, got {type(grad).__name__}"
        if grad.shape != job.params.shape:
            return f"grad has shape {grad.shape}; this job's parameters have {job.params.shape}"
        if grad.dtype not in (np.float32, np.float64):
            return f"grad must be float32 or float64, got {grad.dtype}"
        if not _is_index(n) or n < 1:
            return f"n (rows in the batch) must be a positive integer, got {n!r}"
        if not (_is_real(weight) and math.isfinite(weight) and weight >= 0):
            return f"weight must be a finite number >= 0, got {weight!r}"
        if not _is_real(loss):
            return f"loss must be a real number, got {loss!r}"
        if worker is not None and not isinstance(worker, str):
            return f"worker must be None or an address string, got {type(worker).__name__}"
        return None

    @staticmethod
    def _check_class_loss(job: Job, class_loss: Any) -> str | None:
        k = job.params.shape[1] if job.params.ndim == 2 else None
        if k is None:
            return "class_loss is for one-vs-rest jobs (2-D parameters) only"
        if not (isinstance(class_loss, np.ndarray) and class_loss.shape == (k,)):
            shape = getattr(class_loss, "shape", type(class_loss).__name__)
            return f"class_loss must be a numpy array of shape ({k},), got {shape}"
        if class_loss.dtype.kind != "f":
            return f"class_loss must be a float array, got {class_loss.dtype}"
        return None

    def _check_create(self, params, config, optimizer, ranks, client) -> str | None:
        if (
            not isinstance(params, np.ndarray)
            or params.ndim not in (1, 2)
            or params.dtype.kind not in "iuf"
            or params.size < 1
        ):
            return "params must be a real numpy array of shape (d + 1,) or (d + 1, k)"
        if not np.all(np.isfinite(params)):
            return "params must be finite"
        if (
            not isinstance(ranks, list | tuple)
            or not ranks
            or not all(isinstance(a, str) for a in ranks)
        ):
            return "ranks must be a non-empty list of worker address strings"
        if client is not None and not isinstance(client, str):
            return f"client must be None or a client id string, got {type(client).__name__}"
        for name, value in (("config", config), ("optimizer", optimizer)):
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                return f"{name} must be a dict with string keys, got {type(value).__name__}"
        return None

    @staticmethod
    def _make(params: np.ndarray, config: dict, optimizer: dict) -> tuple[JobConfig, Optimizer]:
        """The job's settings and optimizer, tried once on zeros so a bad value fails here."""
        cfg = JobConfig(**config)
        opt = make_optimizer(**optimizer)
        if isinstance(opt, LBFGSOptimizer) and cfg.mode != "sync":
            raise ValueError("optimizer 'lbfgs' needs mode='sync' (full-batch rounds)")
        p = params.astype(np.float64)
        trial = opt.step(p, np.zeros_like(p), opt.init_state(p), 0, 0, 1.0, 0.0)
        if not (isinstance(trial, np.ndarray) and trial.shape == p.shape):
            raise ValueError("the optimizer settings do not give a valid step")
        return cfg, opt

    @staticmethod
    def _check_status(since: Any, params: Any) -> str | None:
        if not _is_index(since) or since < 0:
            return f"since must be an integer >= 0, got {since!r}"
        if not isinstance(params, bool):
            return f"params must be True or False, got {params!r}"
        return None

    # -- handlers --------------------------------------------------------------
    async def create(self, job, params, config, optimizer, ranks, client=None, resume=None):
        """Create a job; see the module docstring."""
        if not isinstance(job, str) or not job:
            return _error(f"job must be a non-empty string, got {job!r}")
        if job in self.jobs:
            return _error(f"job {job!r} exists already")
        bad = self._check_create(params, config, optimizer, ranks, client)
        if bad:
            return _error(bad)
        try:
            cfg, opt = self._make(params, config, optimizer)
            check_quorum(cfg, opt, len(ranks))
        except (TypeError, ValueError, ArithmeticError) as exc:
            return _error(f"bad job settings: {exc}")
        j = Job(job, params.astype(np.float64), cfg, opt, list(ranks), client)
        if resume is not None:
            try:
                j.restore(resume)
            except (TypeError, ValueError, KeyError, ArithmeticError) as exc:
                return _error(f"cannot resume from this checkpoint: {exc}", kind="bad_resume")
        self.jobs[job] = j
        return {"status": "OK", "version": j.version}

    async def join(self, job, rank, worker, incarnation=None):
        """A training task (new or rerun) joins: mark it live, send it the current state."""
        j = self._get(job)
        if isinstance(j, dict):
            return j
        bad = self._check_rank(j, rank)
        if bad:
            return _error(bad)
        if not isinstance(worker, str):
            return _error(f"worker must be an address string, got {type(worker).__name__}")
        if incarnation is not None and not isinstance(incarnation, str):
            return _error(f"incarnation must be None or a string, got {incarnation!r}")
        r = j.ranks[rank]
        r.address, r.active, r.joined = worker, True, True
        if incarnation is not None:
            r.incarnation = incarnation
        if j.config.mode == "sync":
            position = j.version
        else:
            others = [j.ranks[i].clock for i in j.live(self._workers()) if i != rank]
            # a rejoining member must not hold the others back in ssp mode
            r.clock = max(r.clock, min(others)) if others else r.clock
            position = r.clock
        self._wake(j)
        out = self._params_reply(j)
        out["position"] = position
        out["wait_bound"] = j.config.member_timeout + j.config.ssp_timeout
        if rank not in j.reports:
            out["initial"] = ToPickle(j.initial)
        return out

    async def ready(
        self, job, rank, worker, loss0, loss_zero, grad0, weight, curvature=None, gram=None,
        incarnation=None,
    ):  # fmt: skip
        """A rank loaded its rows: keep what it measured before its first step.

        With ``auto_lr`` the reply waits until every live rank reported and the step size
        is set (or the job stopped), so no step is taken before it is known.
        """
        j = self._get(job)
        if isinstance(j, dict):
            return j
        bad = self._check_rank(j, rank) or self._check_incarnation(j, rank, incarnation)
        if isinstance(bad, dict):
            return bad
        if bad is None and not isinstance(worker, str):
            bad = f"worker must be an address string, got {type(worker).__name__}"
        for name, v in (("loss0", loss0), ("loss_zero", loss_zero), ("weight", weight)):
            # non-finite losses are divergence, answered below; negative ones are malformed
            finite = name != "weight" or (_is_real(v) and math.isfinite(v))
            if bad is None and (not _is_real(v) or v < 0 or not finite):
                bad = f"{name} must be a real number >= 0, got {v!r}"
        if bad is None and not (
            isinstance(grad0, np.ndarray) and grad0.shape == j.params.shape
            and grad0.dtype in (np.float32, np.float64)
        ):  # fmt: skip
            bad = f"grad0 must be a float array of shape {j.params.shape}"
        if bad is None and curvature is not None and not (
            isinstance(curvature, tuple | list) and len(curvature) == 3
            and all(_is_real(c) and math.isfinite(c) and c >= 0 for c in curvature)
        ):  # fmt: skip
            bad = "curvature must be None or three finite numbers >= 0"
        # A^T W A: with the intercept's column of ones when the intercept is fitted
        n = j.params.shape[0] - (0 if j.optimizer.fit_intercept else 1)
        if bad is None and gram is not None and not (
            curvature is not None and isinstance(gram, np.ndarray) and gram.shape == (n, n)
            and gram.dtype == np.float64 and np.all(np.isfinite(gram))
        ):  # fmt: skip
            bad = f"gram must be None or a finite float64 array of shape ({n}, {n})"
        if bad:
            return _error(bad)
        if j.stopped:
            return self._params_reply(j)
        j.ranks[rank].address = worker
        if math.isfinite(loss0) and np.all(np.isfinite(grad0)):
            cur = None
            if curvature is not None:
                cur = (float(curvature[0]), float(curvature[1]), float(curvature[2]))
            g = np.array(grad0, dtype=np.float64)
            j.report(rank, float(loss0), float(loss_zero), g, float(weight), cur, gram)
        else:
            j._diverged(
                f"worker {worker} (rank {rank}) computed a non-finite loss or gradient at "
                "the starting parameters"
            )
        j.auto_step(j.live(self._workers()))
        self._wake(j)
        while j.config.auto_lr and j.eta is None and not j.stopped:
            tick = j.tick
            try:
                await asyncio.wait_for(tick.wait(), 0.5)
            except TimeoutError:
                pass  # re-check: a rank that died leaves the live set
            j.auto_step(j.live(self._workers()))
        return self._params_reply(j)

    async def push(
        self, job, rank, version, grad, n, weight, loss, worker=None, class_loss=None,
        incarnation=None,
    ):  # fmt: skip
        """Take a gradient; see the module docstring."""
        j = self._get(job)
        if isinstance(j, dict):
            return j
        bad = self._check_rank(j, rank) or self._check_incarnation(j, rank, incarnation)
        if bad:
            return bad if isinstance(bad, dict) else _error(bad)
        if j.stopped:
            return self._params_reply(j)
        bad = self._check_push(j, rank, version, grad, n, weight, loss, worker)
        if bad is None and class_loss is not None:
            bad = self._check_class_loss(j, class_loss)
        if bad:
            return _error(bad)
        if class_loss is not None:
            class_loss = np.array(class_loss, dtype=np.float64)
        cfg = j.config
        if cfg.max_time is not None and time.time() - j.start > cfg.max_time:
            j.stop(f"time budget max_time={cfg.max_time}s used up")
            self._wake(j)
            return self._params_reply(j)
        r = j.ranks[rank]
        if worker is not None:
            r.address = worker
        r.active = True
        finite_classes = class_loss is None or bool(np.all(np.isfinite(class_loss)))
        if not (math.isfinite(loss) and np.all(np.isfinite(grad)) and finite_classes):
            j._diverged(
                f"worker {r.address} (rank {rank}) computed a non-finite loss or "
                f"gradient at version {version}"
            )
            self._wake(j)
            return self._params_reply(j)
        if cfg.auto_lr and j.eta is None:
            # a training task that skipped ``ready``: the step is not known yet; fix it
            # from the reports so far rather than stepping with the placeholder
            if not j.reports:
                return _error("auto_lr: a push came before any rank reported ready")
            j.auto_step(list(j.reports))
        if cfg.mode == "sync":
            return await self._push_sync(
                j, rank, version, grad, n, float(weight), float(loss), class_loss
            )
        await self._run(
            j, j.apply_async, rank, version, grad, n, float(weight), float(loss), class_loss
        )
        self._wake(j)
        if cfg.mode == "ssp":
            await self._ssp_wait(j, rank)
        return self._params_reply(j)

    async def _push_sync(self, j: Job, rank, version, grad, n, weight, loss, class_loss=None):
        if version < j.version:
            j.dropped += 1  # its round closed without it (a quorum, or it was thought dead)
            return self._params_reply(j, "stale")
        fut = j.round
        if j.closing:
            j.dropped += 1
            await asyncio.shield(fut)
            return self._params_reply(j, "stale")
        if rank in j.pending:
            return _error(f"rank {rank} pushed twice for version {version}")
        # copy: an in-process sender may reuse its buffer once it has our reply
        j.pending[rank] = (np.array(grad, dtype=np.float64), n, weight, loss, class_loss)
        await self._maybe_finish(j)
        while not fut.done():
            try:
                await asyncio.wait_for(asyncio.shield(fut), 1.0)
            except TimeoutError:
                # safety net: the scheduler may have dropped a worker silently
                await self._maybe_finish(j)
        return self._params_reply(j)

    async def _maybe_finish(self, j: Job) -> None:
        if j.config.mode != "sync" or j.closing or not j.pending or j.stopped:
            if j.stopped:
                self._wake(j)
            return
        live = set(j.live(self._workers()))
        quorum = j.config.sync_quorum
        if not (live <= set(j.pending) or (quorum is not None and len(j.pending) >= quorum)):
            return
        pending, j.pending, j.closing = j.pending, {}, True
        fut = j.round
        try:
            await self._run(j, j.finish_round, pending)
        except Exception as exc:  # a bug must fail the job loudly, not hang its members
            j.stop("aggregator error", error=f"the aggregator failed: {exc!r}", kind="training")
        finally:
            j.round = asyncio.get_running_loop().create_future()
            j.closing = False
            if not fut.done():
                fut.set_result(None)
            self._wake(j)

    async def _ssp_wait(self, j: Job, rank: int) -> None:
        s = j.config.max_staleness
        assert s is not None  # JobConfig requires it in ssp mode
        deadline = time.monotonic() + j.config.ssp_timeout
        me = j.ranks[rank]
        while not j.stopped and time.monotonic() < deadline:
            others = [j.ranks[i].clock for i in j.live(self._workers()) if i != rank]
            if not others or me.clock - min(others) <= s:
                return
            tick = j.tick
            try:
                await asyncio.wait_for(tick.wait(), 0.5)
            except TimeoutError:
                pass

    async def pull(self, job):
        """Current parameters and version."""
        j = self._get(job)
        return j if isinstance(j, dict) else self._params_reply(j)

    async def status(self, job, since=0, params=False, wait=0.0):
        """Progress: stop state, history from epoch ``since``, optionally the parameters.

        With ``wait`` > 0 (seconds, at most 60), a call that has nothing new to report
        waits up to that long for the next epoch or the stop, so that a driver hears of
        them at once instead of at its next poll.
        """
        j = self._get(job)
        if isinstance(j, dict):
            return j
        bad = self._check_status(since, params)
        if bad:
            return _error(bad)
        if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= 60:
            return _error(f"wait must be a number of seconds in [0, 60], got {wait!r}")
        j.forget_params(since)
        if wait > 0 and not j.stopped and len(j.history) <= since:
            try:
                await asyncio.wait_for(j.progress.wait(), wait)
            except TimeoutError:
                pass
            j = self._get(job)  # closed meanwhile?
            if isinstance(j, dict):
                return j
        cfg = j.config
        if not j.stopped and cfg.max_time is not None and time.time() - j.start > cfg.max_time:
            j.stop(f"time budget max_time={cfg.max_time}s used up")
            self._wake(j)
        out = j.summary(since, params, j.live(self._workers()))
        out["n_workers"] = len(self._workers())  # the driver's "every worker is gone" check
        return out

    async def stop(self, job, reason="stopped by the user"):
        """Stop a job; its members get ``stopped`` at their next push."""
        j = self._get(job)
        if isinstance(j, dict):
            return j
        if not isinstance(reason, str):
            return _error(f"reason must be a string, got {type(reason).__name__}")
        j.stop(reason)
        self._wake(j)
        return j.summary(live=j.live(self._workers()))

    async def close_job(self, job, since=0):
        """Stop a job, free its state and return its final status with the parameters and
        the history rows from ``since`` (the driver holds the earlier ones)."""
        j = self._get(job)
        if isinstance(j, dict):
            return j
        bad = self._check_status(since, False)
        if bad:
            return _error(bad)
        if not j.stopped:
            j.stop("closed by the driver")
        self._wake(j)
        out = j.summary(since, params=True, live=j.live(self._workers()))
        del self.jobs[job]
        return out

    async def snapshot(self, job, fresh=False, since=0):
        """The latest checkpoint snapshot of ``job`` (None before the first), or a new one.

        A fresh snapshot is taken where steps run (the executor for large models), so
        it never sees half a step; a failed job gives none.
        """
        j = self._get(job)
        if isinstance(j, dict):
            return j
        if not isinstance(fresh, bool):
            return _error(f"fresh must be True or False, got {fresh!r}")
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            return _error(f"since must be an integer >= 0, got {since!r}")
        if fresh and j.error is not None:
            return {"status": "OK", "seq": j.snapshot_seq, "snapshot": None, "history": []}
        if fresh:
            snap = await self._run(j, j.take_snapshot)
            j.snapshot, j.snapshot_seq = snap, j.snapshot_seq + 1
        snap = j.snapshot
        if snap is None:
            return {"status": "OK", "seq": j.snapshot_seq, "snapshot": None, "history": []}
        rows = j.history[since : snap["history_len"]]
        return {
            "status": "OK",
            "seq": j.snapshot_seq,
            "snapshot": ToPickle(snap),
            "history": [{k: v for k, v in h.items() if k != "params"} for h in rows],
        }

    async def info(self):
        """Jobs on this scheduler and the daskgd version running it."""
        return {"status": "OK", "jobs": sorted(self.jobs), "version": __version__}
