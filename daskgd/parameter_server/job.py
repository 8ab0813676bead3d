"""The state of one job on the parameter server.

A :class:`Job` holds the ranks (members, their clocks, incarnations and leases), the
published ``(version, params)`` pair, the optimizer state, the epoch statistics and the
history. Every change of a job is made by one owner at a time: the plugin
(:mod:`daskgd.parameter_server.plugin`) runs the job's methods on the event loop for a
small model, or under the job's :attr:`Job.lock` in a worker thread for a large one, so
the steps of one job run in order while another job's steps are not held up. Readers on
the event loop take ``published`` (one immutable pair) and never see half a step.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Container
from typing import Any

import numpy as np
from distributed.protocol import ToPickle

from daskgd.objective import LBFGSOptimizer, Optimizer
from daskgd.objective.lbfgs_sharded import LBFGSCoordinator
from daskgd.parameter_server.config import JobConfig
from daskgd.parameter_server.rebalance import Rebalancer
from daskgd.parameter_server.rounds import Steps
from daskgd.parameter_server.sharding import ShardSet
from daskgd.parameter_server.stats import EpochStats, Rank

__all__ = ["Job"]


class Job(Steps):
    """The state of one fit on the parameter server (see the module docstring)."""

    def __init__(
        self,
        job_id: str,
        params: np.ndarray,
        config: JobConfig,
        optimizer: Optimizer,
        ranks: list[str],
        client: str | None,
        shards: ShardSet | None = None,
    ) -> None:
        self.id = job_id
        self.config = config
        self.optimizer = optimizer
        #: the parameters' shape (their rows may live in shards on the workers)
        self.shape = params.shape
        #: the shards holding the parameters and the optimizer state (None: held here)
        self.shards = shards
        self.published = (0, None if shards is not None else params)
        self.opt_state = None if shards is not None else optimizer.init_state(params)
        #: sharded L-BFGS: its numbers (the shards hold its vectors), and a copy of them at
        #: each shard backup's version, for a rebuild
        self.lbfgs: LBFGSCoordinator | None = None
        if shards is not None and isinstance(optimizer, LBFGSOptimizer):
            self.lbfgs = LBFGSCoordinator(memory=optimizer.memory)
        self.lbfgs_backups: dict[int, LBFGSCoordinator] = {}
        #: Newton: whether the round at the published point needs the Hessian (replies
        #: carry it as ``hessian``; see :class:`daskgd.objective.newton.Newton`)
        self.wants_hessian = optimizer.needs_hessian
        #: steps run on the event loop (small models) or in a worker thread
        #: (Newton's steps factor a Hessian: always off the loop)
        self.inline = (
            params.size <= config.inline_max_params
            and not optimizer.needs_hessian
            and shards is None  # a sharded step waits for the shards: never on the loop
        )
        #: held while a step of this job runs off the loop (large models only)
        self.lock = asyncio.Lock()
        self.ranks = [Rank(a) for a in ranks]
        #: placement="latency": the ranks' row-chunks, moved at epoch boundaries
        self.rebalancer = None
        if config.rebalance is not None:
            self.rebalancer = Rebalancer(config.rebalance["assignment"],
                                         config.rebalance["chunk_rows"],
                                         config.batches_per_epoch,
                                         patient=config.mode != "sync")  # fmt: skip
        self.client = client
        self.start = time.time()
        self.epochs = 0
        self.history: list[dict[str, Any]] = []
        self.params_kept = 0  # rows before this one have dropped their parameters
        self.stats = EpochStats()
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
        self.pending: dict[int, tuple] = {}  # sync: the open round's gradients by rank
        self.dropped = 0  # sync: gradients that arrived for a round that had closed
        self._dropped_before = 0  # ``dropped`` when the previous epoch closed
        self.tick = asyncio.Event()  # set (and replaced) at every change members wait on
        # set when an epoch closes or the job stops: wakes a driver's waiting status call
        self.progress = asyncio.Event()
        self.reported_epochs = 0
        self.time_offset = 0.0  # seconds spent before a resume, for the history's times
        self.snapshot: dict[str, Any] | None = None
        #: a lost shard is being rebuilt: no round closes meanwhile
        self.recovering = False
        #: the shards rebuilt so far, with the steps each recovery undid
        self.recoveries: list[dict[str, Any]] = []
        self.snapshot_seq = 0
        self._snapshot_due = False

    def touch(self, rank: int) -> None:
        """The rank called: renew its lease."""
        self.ranks[rank].last_seen = time.monotonic()

    def join(self, rank: int, worker: str, incarnation: str | None, workers) -> int:
        """A training task (new or rerun) joins; returns where it starts (a version in
        sync mode, its clock otherwise). A new incarnation supersedes the old run: its
        gradient waiting in the open round is dropped, so the new run can push."""
        r = self.ranks[rank]
        rejoin = r.joined
        r.address, r.active, r.joined = worker, True, True
        if incarnation is not None and incarnation != r.incarnation:
            if r.incarnation is not None:
                self.pending.pop(rank, None)
            r.incarnation = incarnation
        self.touch(rank)
        if self.config.mode == "sync":
            return self.version
        if rejoin:
            # a rerun member must not hold the others back in ssp mode; a first join keeps
            # clock 0, which the others already wait for (bumping it would let them run
            # ahead of its real updates)
            others = [self.ranks[i].clock for i in self.live(workers) if i != rank]
            r.clock = max(r.clock, min(others)) if others else r.clock
        return r.clock

    def take_report(
        self, rank: int, worker: str, loss0: float, loss_zero: float, grad0: np.ndarray,
        weight: float, curvature: Any, gram: np.ndarray | None, workers: Container[str],
        colsq: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        """``ready``: keep what the rank measured before its first step (or stop the job
        when it is not finite), and choose the ``auto_lr`` step once every live rank
        reported."""
        if self.stopped:
            return
        self.ranks[rank].address = worker
        if math.isfinite(loss0) and np.all(np.isfinite(grad0)):
            cur = None
            if curvature is not None:
                cur = (float(curvature[0]), float(curvature[1]), float(curvature[2]))
            g = np.array(grad0, dtype=np.float64)
            self.report(rank, float(loss0), float(loss_zero), g, float(weight), cur, gram, colsq)
        else:
            self.diverged(
                f"worker {worker} (rank {rank}) computed a non-finite loss or gradient at "
                "the starting parameters"
            )
        self.auto_step(self.live(workers))

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
        if self.shards is None:
            self.opt_state = self.optimizer.import_state(self.params, dict(resume["state"]))
            # Newton: a fit stopped during a backtrack published its last accepted point,
            # but its line search goes on from the point it proposed last
            nxt = self.optimizer.resume_params(self.opt_state)
            P = self.params if nxt is None else nxt.reshape(self.shape)
        else:  # the shards get the state (checked here first: it must fit the whole)
            self.optimizer.import_state(self.initial, dict(resume["state"]))
            P = None
            if self.lbfgs is not None:
                state = {k[len("lbfgs_") :]: v for k, v in dict(resume["state"]).items()}
                self.lbfgs = LBFGSCoordinator.from_whole(self.lbfgs.memory, state)
        self.published = (int(resume["version"]), P)
        if self.optimizer.needs_hessian:
            self.wants_hessian = bool(self.opt_state["newton"].want_hessian)
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
            self.set_eta(self.eta)
        self.time_offset = float(progress.get("elapsed") or 0.0)
        clocks = progress.get("clocks")
        if not (isinstance(clocks, list) and len(clocks) == len(self.ranks)):
            clocks = [self.epochs * self.config.batches_per_epoch] * len(self.ranks)
        for r, c in zip(self.ranks, clocks, strict=True):
            r.clock = int(c)

    def forget_params(self, below: int) -> None:
        """Drop the parameter vectors of history rows before ``below``: the driver has them."""
        for h in self.history[self.params_kept : below]:
            h.pop("params", None)
        self.params_kept = max(self.params_kept, min(below, len(self.history)))

    def summary(self, since: int = 0, params: bool = False, live=()) -> dict[str, Any]:
        """The reply of ``daskgd_status``."""
        version, P = self.published
        out: dict[str, Any] = {
            "status": "OK",
            "stopped": self.stopped,
            "reason": self.reason,
            "converged": self.converged,
            "error": self.error,
            "error_kind": self.error_kind,
            "history": self.history[since:],
            "version": version,
            "epochs": self.epochs,
            "live": list(live),
            "rank_updates": [r.updates for r in self.ranks],
            "dropped_gradients": self.dropped,
            "snapshot_seq": self.snapshot_seq,
            "learning_rate": self.optimizer.schedule.eta0,
            "recoveries": list(self.recoveries),
        }
        if params:
            out["params"] = ToPickle(P)
        return out

    def over_time(self) -> bool:
        """Stop the job if its time budget is used up; whether it is stopped."""
        cfg = self.config
        if not self.stopped and cfg.max_time is not None:
            if time.time() - self.start > cfg.max_time:
                self.stop(f"time budget max_time={cfg.max_time}s used up")
        return self.stopped

    def report_status(self, since: int, params: bool, workers: Container[str]) -> dict[str, Any]:
        """``status``: the rows from ``since`` (the driver holds the earlier ones, whose
        parameter vectors are dropped here) and the state, read in one piece."""
        self.forget_params(since)
        self.over_time()
        return self.summary(since, params, self.live(workers))

    def close(self, since: int, workers: Container[str]) -> dict[str, Any]:
        """``close``: stop (no step after this), and the final status with the parameters."""
        self.stop("closed by the driver")
        return self.summary(since, params=True, live=self.live(workers))
