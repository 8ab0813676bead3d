"""A key-value job: a sparse model whose parameters live in a keyed optimizer's state.

A :class:`KeyedJob` is a :class:`~daskgd.parameter_server.job.Job` (members, leases,
incarnations, epochs, stop rules, history, status and close are the same) whose
parameters are never published as a whole array: they live in the state of a
:class:`~daskgd.objective.keyed_base.KeyedOptimizer`, a push carries the gradient at the
keys (columns) its batch touched, and a reply carries the weights at the keys of the
member's next batch. Every step is O(keys); only the epoch's penalty and the final model
(:meth:`KeyedJob.dense`) are O(d).

Sync mode sums a round's pushes by key (the union of the members' keys, in rank order, so
the result is bitwise reproducible) and applies one step with the row-weighted mean, as
the dense sync mode does; async mode applies each push on arrival. The epoch's loss is
the weighted mean of the pushed losses plus the penalty of the weights when the epoch
closed; the gradient norm of a stochastic sparse fit is not computed (it would cost a
dense gradient per epoch): the history's ``grad_norm`` is NaN, and the gradient
tolerances are refused when the job is created.
"""

from __future__ import annotations

import math
from collections.abc import Container
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from daskgd.objective import Regularizer
from daskgd.objective.keyed import KEYED_OPTIMIZERS, KeyedOptimizer, make_keyed_optimizer
from daskgd.objective.keyed_base import row_blocks
from daskgd.objective.schedules import Schedule
from daskgd.parameter_server.checks import check_push_scalars
from daskgd.parameter_server.config import JobConfig, check_quorum, is_index, is_real
from daskgd.parameter_server.job import Job

__all__ = [
    "KEYED_MODES",
    "KeyedJob",
    "RuleFacts",
    "check_keyed_push",
    "check_keyed_ready",
    "keyed_settings",
]

#: The modes a key-value job runs (ssp waits are not wired to it yet).
KEYED_MODES = ("sync", "async")


@dataclass
class RuleFacts:
    """What the job's bookkeeping (stop rules, summaries) reads of its optimizer, for a
    keyed rule: its name, learning rate, penalty and intercept setting. A keyed rule
    never proposes a point of its own (no line search), so :meth:`best_params` is None."""

    name: str
    schedule: Schedule
    regularizer: Regularizer = field(default_factory=Regularizer)
    fit_intercept: bool = True
    needs_hessian: bool = False

    def init_state(self, params: Any) -> None:
        """No dense state: the keyed rule's lives in :attr:`KeyedJob.state`."""
        return None

    def best_params(self, state: Any) -> None:
        """A keyed rule keeps no better point than its current one."""
        return None


def keyed_settings(
    config: dict[str, Any], optimizer: dict[str, Any], members: int
) -> tuple[JobConfig, KeyedOptimizer, RuleFacts]:
    """A key-value job's settings, its rule and the facts its bookkeeping reads.

    Raises
    ------
    TypeError or ValueError
        On settings a key-value job cannot run, saying what to use instead.
    """
    cfg = JobConfig(**config)
    if cfg.mode not in KEYED_MODES:
        raise ValueError(
            f"a key-value (sparse) job runs mode 'sync' or 'async', not {cfg.mode!r}: use "
            "mode='async' (or dense data for ssp)"
        )
    if cfg.auto_lr and optimizer.get("name") != "sgd":
        raise ValueError(
            "a key-value job measures the step size (auto_lr) for optimizer 'sgd' only: "
            "give the others a numeric learning_rate"
        )
    if cfg.gtol is not None or cfg.gtol_rel is not None:
        raise ValueError(
            "a key-value job computes no gradient norm (a stochastic sparse fit): use tol "
            "(the loss) instead of gtol/gtol_rel"
        )
    if cfg.checkpoint_every:
        raise ValueError("a key-value job does not take checkpoint_every yet")
    opt = dict(optimizer)
    name = str(opt.get("name"))
    if name not in KEYED_OPTIMIZERS:
        raise ValueError(
            f"a key-value job takes optimizer {', '.join(KEYED_OPTIMIZERS)}, "
            f"not {opt.get('name')!r}"
        )
    rule = make_keyed_optimizer(**opt)
    facts = RuleFacts(
        name=name,
        schedule=Schedule(
            opt.get("lr_schedule", "constant"),
            opt["learning_rate"],
            opt.get("power_t", 0.25),
            opt.get("step_size", 10),
            opt.get("gamma", 0.5),
        ),
        regularizer=Regularizer(opt.get("alpha", 0.0), opt.get("l1_ratio", 0.0)),
        fit_intercept=bool(opt.get("fit_intercept", True)),
    )
    check_quorum(cfg, facts, members)  # type: ignore[arg-type]
    return cfg, rule, facts


def _is_keys(a: Any) -> bool:
    return isinstance(a, np.ndarray) and a.ndim == 1 and a.dtype.kind in "iu"


def check_keyed_push(
    j: KeyedJob, version, keys, grad, grad_b, n, weight, loss, worker, next_keys, dense
) -> str | None:
    """A key-value push's arguments (the rank is checked already): types and shapes,
    O(1); the keys' order and range are checked where the step runs (O(keys))."""
    if not is_index(version) or version < 0:
        return f"version must be an integer >= 0, got {version!r}"
    if version > j.version:
        return f"version {version} is from the future (current version {j.version})"
    if not _is_keys(keys):
        return f"keys must be a 1-D integer numpy array, got {type(keys).__name__}"
    tail = j.shape[1:]
    if not (isinstance(grad, np.ndarray) and grad.shape == (keys.size, *tail)):
        shape = getattr(grad, "shape", type(grad).__name__)
        return f"grad must be a numpy array of shape {(keys.size, *tail)}, got {shape}"
    if grad.dtype not in (np.float32, np.float64):
        return f"grad must be float32 or float64, got {grad.dtype}"
    if tail and not (isinstance(grad_b, np.ndarray) and grad_b.shape == tail):
        return f"grad_b must be a numpy array of shape {tail}, got {grad_b!r}"
    if not tail and not is_real(grad_b):
        return f"grad_b must be a real number, got {grad_b!r}"
    bad = check_push_scalars(n, weight, loss, worker)
    if bad:
        return bad
    if next_keys is not None and not _is_keys(next_keys):
        return f"next_keys must be None or a 1-D integer numpy array, got {next_keys!r}"
    if not isinstance(dense, bool):
        return f"dense must be True or False, got {dense!r}"
    return None


def check_keyed_ready(j: KeyedJob, worker, loss0, loss_zero, weight, curvature, gram) -> str | None:
    """A ``kready`` report's arguments (the rank is checked already)."""
    if not isinstance(worker, str):
        return f"worker must be an address string, got {type(worker).__name__}"
    below = j.config.loss_below_zero  # the log-link losses (see JobConfig)
    for name, v in (("loss0", loss0), ("loss_zero", loss_zero), ("weight", weight)):
        if not is_real(v) or (v < 0 and (name == "weight" or not below)):
            return f"{name} must be a real number >= 0, got {v!r}"
    if not math.isfinite(weight):
        return f"weight must be finite, got {weight!r}"
    if curvature is not None and not (
        isinstance(curvature, tuple | list) and len(curvature) == 3
        and all(is_real(c) and math.isfinite(c) and c >= 0 for c in curvature)
    ):  # fmt: skip
        return "curvature must be None or three finite numbers >= 0"
    n = j.shape[0] - (0 if j.optimizer.fit_intercept else 1)
    if gram is not None and not (
        curvature is not None and isinstance(gram, np.ndarray) and gram.shape == (n, n)
        and gram.dtype == np.float64 and bool(np.all(np.isfinite(gram)))
    ):  # fmt: skip
        return f"gram must be None or a finite float64 array of shape ({n}, {n})"
    return None


def _finite(*arrays: Any) -> bool:
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


class KeyedJob(Job):
    """A job whose parameters are a keyed optimizer's state (see the module docstring).

    Parameters
    ----------
    job_id : str
    shape : tuple
        The parameters' shape, ``(d + 1,)`` or ``(d + 1, k)`` (the intercept row last).
    state : dict
        The rule's state (:meth:`KeyedOptimizer.init_state`), owned by the job from here.
    config, rule, facts
        From :func:`keyed_settings`.
    ranks, client
        As for :class:`~daskgd.parameter_server.job.Job`.
    initial_penalty : float, default=0.0
        The penalty of the starting parameters (of a warm start; zero ones have none).
    """

    checkable = False  # no gradient norm: its stop rules are the loss's

    def __init__(
        self,
        job_id: str,
        shape: tuple[int, ...],
        state: dict[str, np.ndarray],
        config: JobConfig,
        rule: KeyedOptimizer,
        facts: RuleFacts,
        ranks: list[str],
        client: str | None,
        initial_penalty: float = 0.0,
    ) -> None:
        # a zero-stride stand-in: the base reads the parameters' shape and size only
        stand_in = np.broadcast_to(np.zeros(()), shape)
        super().__init__(job_id, stand_in, config, facts, ranks, client)  # type: ignore[arg-type]
        self.rule = rule
        self.state = state
        self.published = (0, None)  # never a whole array while the job runs
        self.initial = None  # type: ignore[assignment]  # members do not report (no ready)
        #: keyed steps cost O(keys); the epoch's penalty is O(d): off the loop when large
        self.inline = int(np.prod(shape)) <= config.inline_max_params
        #: the penalty at the start (the divergence reference's share of it)
        self.initial_penalty = float(initial_penalty)

    def take_kreport(
        self, rank: int, worker: str, loss0: float, loss_zero: float, weight: float,
        curvature: Any, gram: np.ndarray | None, workers: Container[str],
    ) -> None:  # fmt: skip
        """``kready``: keep what a rank measured on its first batch before any step (the
        divergence reference: the larger of the mean loss at the start, penalty included,
        and at zero), and its curvature figures, from which ``auto_lr`` sets the step once
        every live rank reported. A rerun task's report is ignored (the first stands)."""
        if self.stopped:
            return
        self.ranks[rank].address = worker
        if not (math.isfinite(loss0) and math.isfinite(loss_zero)):
            self.diverged(f"worker {worker} (rank {rank}) computed a non-finite loss at the "
                          "starting parameters")  # fmt: skip
            return
        if rank not in self.reports:
            cur = None if curvature is None else tuple(float(c) for c in curvature)
            self.reports[rank] = (loss0, loss_zero, None, weight, cur, gram)
            W = math.fsum(r[3] for r in self.reports.values())
            if W > 0:
                at_start = math.fsum(r[0] for r in self.reports.values()) / W
                at_zero = math.fsum(r[1] for r in self.reports.values()) / W
                self.ref_loss = max(at_start + self.initial_penalty, at_zero)
        self.auto_step(self.live(workers))

    def set_eta(self, eta: float) -> None:
        """``auto_lr``'s step size, for the rule's schedule too."""
        super().set_eta(eta)
        schedule = getattr(self.rule, "schedule", None)
        if isinstance(schedule, Schedule):
            self.rule.schedule = replace(schedule, eta0=float(eta))  # type: ignore[attr-defined]

    def fresh_snapshot(self) -> None:
        """No checkpoint snapshots of key-value jobs yet (the driver refuses checkpoints):
        ``daskgd_snapshot`` answers that there is none."""
        return None

    # -- reads ------------------------------------------------------------------------
    def dense(self) -> np.ndarray:
        """The whole parameter array, ``(d + 1,)`` or ``(d + 1, k)`` (O(d))."""
        return self.rule.dense(self.state)

    def read(self, keys: np.ndarray | None, dense: bool) -> dict[str, Any]:
        """The reply's weights: at ``keys``, or every coefficient when ``dense``; with the
        intercept and the version they belong to (read in one piece by the owner)."""
        out: dict[str, Any] = {"version": self.version, "b": self.rule.intercept(self.state)}
        if dense:
            out["w"] = self.dense()[:-1]
        elif keys is not None:
            out["w"] = self.rule.weights(self.state, keys)
        return out

    def penalty(self) -> float:
        """The penalty of the current weights (O(d), in blocks)."""
        reg = self.optimizer.regularizer
        if not reg.alpha:
            return 0.0
        d = self.shape[0] - 1
        l1 = l2 = 0.0
        for rows in row_blocks(d):
            w = self.rule.weights(self.state, np.arange(rows.start, rows.stop))
            l1 += float(np.abs(w).sum())
            l2 += float(np.square(w).sum())
        return reg.alpha * (reg.l1_ratio * l1 + (1.0 - reg.l1_ratio) / 2.0 * l2)

    def summary(self, since: int = 0, params: bool = False, live=()) -> dict[str, Any]:
        """As :meth:`Job.summary`; the parameters, when asked, formed from the state."""
        out = super().summary(since, False, live)
        if params:
            from distributed.protocol import ToPickle

            out["params"] = ToPickle(self.dense())
        return out

    # -- steps --------------------------------------------------------------------------
    def close_epoch(self) -> None:
        """As the dense jobs, with the penalty from the state and no gradient norm; with
        ``record_params`` the row keeps the whole model, formed from the state (O(d))."""
        self.shard_stats = {"penalty": self.penalty(), "grad_norm": 0.0}
        rows = len(self.history)
        try:
            super().close_epoch()
        finally:
            self.shard_stats = None
        if len(self.history) > rows:
            self.history[-1]["grad_norm"] = math.nan
            if self.config.record_params:
                from distributed.protocol import ToPickle

                self.history[-1]["params"] = ToPickle(self.dense())

    def _apply(self, keys, grad_sum, grad_b_sum, weight, lr_scale: float = 1.0) -> None:
        """One step with the row-weighted mean (``weight > 0``), or a version bump."""
        v = self.version
        if weight > 0:
            self.rule.apply(self.state, keys, grad_sum / weight, grad_b_sum / weight, v,
                            self.epochs, lr_scale)  # fmt: skip
            if not _finite(self.rule.weights(self.state, keys), self.rule.intercept(self.state)):
                self.diverged(f"the parameters became non-finite at update {v + 1}")
                return
        self.published = (v + 1, None)

    def kapply_async(
        self, rank: int, version: int, keys: np.ndarray, grad: np.ndarray, grad_b: Any,
        n: int, weight: float, loss: float, next_keys: np.ndarray | None, dense: bool,
    ) -> dict[str, Any] | None:  # fmt: skip
        """Async mode: apply one push now and read the weights the member asked for.
        None: not applied (the job stopped, or the push was not finite)."""
        if self.stopped:
            return None
        if not (math.isfinite(loss) and _finite(grad, grad_b)):
            self._reject(rank, version)
            return None
        staleness = self.version - version
        r = self.ranks[rank]
        r.clock += 1
        r.updates += 1
        self.account(([rank], [n]), loss, weight, np.zeros(0), [staleness])
        if self.error is None:
            scale = 1.0 / max(1, staleness) if self.config.staleness_lr else 1.0
            g = np.asarray(grad, dtype=np.float64)
            self._apply(keys, g, np.asarray(grad_b, dtype=np.float64), weight, scale)
        if self.stopped and self.error is not None:
            return None
        return {**self.read(next_keys, dense), "staleness": staleness}

    def karrive_sync(
        self, rank: int, version: int, keys: np.ndarray, grad: np.ndarray, grad_b: Any,
        n: int, weight: float, loss: float, workers: Container[str],
    ) -> str:  # fmt: skip
        """Sync mode: take a rank's push for the open round, and close the round when it
        is complete; as :meth:`~daskgd.parameter_server.rounds.Steps.arrive_sync`."""
        if self.stopped:
            return "stopped"
        if not (math.isfinite(loss) and _finite(grad, grad_b)):
            self._reject(rank, version)
            return "stopped"
        if version < self.version:
            self.dropped += 1
            return "stale"
        if rank in self.pending:
            return "twice"
        # copies: an in-process sender may reuse its buffers once it has our reply
        g = np.array(grad, dtype=np.float64)
        self.pending[rank] = (np.array(keys, dtype=np.int64), n, weight, loss, g,
                              np.array(grad_b, dtype=np.float64))  # fmt: skip
        self.try_close_round(workers)
        return "OK"

    def finish_round(self, pending: dict[int, tuple]) -> None:
        """Sync mode: sum the round's pushes by key (rank order), one step."""
        order = sorted(pending)
        rows = [pending[r][1] for r in order]
        weight = math.fsum(pending[r][2] for r in order)
        loss_sum = math.fsum(pending[r][3] for r in order)
        for r in order:
            self.ranks[r].updates += 1
        keys = np.unique(np.concatenate([pending[r][0] for r in order]))
        grad = np.zeros((keys.size, *self.shape[1:]))
        grad_b = np.zeros(self.shape[1:])
        for r in order:  # each rank's keys are distinct: one add per key
            grad[np.searchsorted(keys, pending[r][0])] += pending[r][4]
            grad_b += pending[r][5]
        self.account((order, rows), loss_sum, weight, np.zeros(0), [0] * len(order))
        if self.error is None:
            self._apply(keys, grad, grad_b, weight)
