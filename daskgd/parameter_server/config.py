"""The settings of a job and the rules the driver checks before it creates one.

Imported by the scheduler side (the plugin) and by the driver, which calls
:func:`check_quorum` and :func:`make_settings` to refuse bad settings before any work
instead of keeping copies of the rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskgd.objective import LBFGSOptimizer, Optimizer, make_optimizer
from daskgd.parameter_server.rebalance import check_rebalance

__all__ = [
    "INLINE_MAX_PARAMS",
    "MODES",
    "PLUGIN_NAME",
    "JobConfig",
    "check_quorum",
    "is_index",
    "is_real",
    "make_settings",
]

PLUGIN_NAME = "daskgd-parameter-server"
MODES = ("sync", "async", "ssp")
#: Default of :attr:`JobConfig.inline_max_params`: models with at most this many parameters
#: are stepped on the event loop (tens of microseconds); larger ones in a worker thread.
INLINE_MAX_PARAMS = 16_384


def is_real(v: Any) -> bool:
    """A Python or numpy real number (not a bool) that fits a float64."""
    if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
        return False
    try:
        float(v)
    except OverflowError:
        return False
    return True


def is_index(v: Any) -> bool:
    """A Python int (not a bool): what ranks, versions and row counts are."""
    return isinstance(v, int) and not isinstance(v, bool)


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
    quadratic : bool
        Whether the objective is exactly quadratic (squared error, no L1): a Newton step
        then lands on the optimum, and the gradient tests (``gtol``, ``gtol_rel``) may be
        applied to the exact quadratic model's gradient at the new point, without a pass.
    loss_below_zero : bool
        The loss may be negative (the log-link losses leave out the deviance's terms in
        ``y`` alone): the ranks' ``ready`` reports may carry negative losses.
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
        Seconds a member may stay silent (no push, join or ready) while a sync round, an
        ssp wait or an ``auto_lr`` start waits for it (its lease); after that it leaves
        the live set until it calls again, so a member that hangs cannot stall the others
        forever. A member whose gradient takes longer than this to compute is left out of
        the rounds: raise it for very large batches. Full-batch L-BFGS and Newton rounds
        need every member (:data:`WHOLE_DATA_OPTIMIZERS`): a member silent that long
        while the others wait stops the job, naming its rank.
    inline_max_params : int
        Models with at most this many parameters are stepped on the scheduler's event
        loop (tens of microseconds, cheaper than a thread hand-off); larger ones in the
        parameter server's worker threads, one step of a job at a time, so that O(d) work
        never holds up the scheduler.
    rebalance : dict or None
        ``placement="latency"``: ``{"assignment": each rank's row-chunks, "chunk_rows":
        each chunk's rows}``; the job then moves chunks between the ranks at epoch
        boundaries, and in async/ssp modes weighs each push's step by its rows
        (:mod:`daskgd.parameter_server.rebalance`). None: never.
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
    quadratic: bool = False
    loss_below_zero: bool = False
    record_params: bool = False
    sync_quorum: int | None = None
    checkpoint_every: int | None = None
    member_timeout: float = 600.0
    inline_max_params: int = INLINE_MAX_PARAMS
    rebalance: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.rebalance is not None:
            bad = check_rebalance(self.rebalance)
            if bad:
                raise ValueError(bad)
        for name in ("n_samples", "batches_per_epoch", "max_epochs", "n_iter_no_change"):
            v = getattr(self, name)
            if not (is_index(v) and v >= 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        v = self.inline_max_params
        if not (is_index(v) and v >= 0):
            raise ValueError(f"inline_max_params must be an integer >= 0, got {v!r}")
        for name in ("tol", "gtol", "gtol_rel", "max_time"):
            v = getattr(self, name)
            if v is not None and not (is_real(v) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be None or a finite number >= 0, got {v!r}")
        for name in ("ssp_timeout", "divergence_factor", "loss_curvature", "member_timeout"):
            v = getattr(self, name)
            if not (is_real(v) and v > 0 and not math.isnan(v)):
                raise ValueError(f"{name} must be a number > 0, got {v!r}")
        for name in (
            "staleness_lr",
            "record_params",
            "auto_lr",
            "smooth",
            "quadratic",
            "loss_below_zero",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.max_staleness is not None and not (
            is_index(self.max_staleness) and self.max_staleness >= 0
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


#: Optimizers whose line search compares exact losses of the whole data: each of their
#: sync rounds needs every partition's rows, a dead member's too (its rerun task pushes at
#: the same version), never a subset.
WHOLE_DATA_OPTIMIZERS = ("lbfgs", "newton")


def check_quorum(cfg: JobConfig, opt: Optimizer, members: int) -> None:
    """Refuse a ``sync_quorum`` larger than the job or one L-BFGS cannot work with.

    Raises
    ------
    ValueError
        Saying which setting to change.
    """
    q = cfg.sync_quorum
    if q is None:
        return
    if q > members:
        raise ValueError(
            f"sync_quorum={q} but the job has {members} member(s) (training tasks); "
            f"use at most {members}, or None to wait for every live member"
        )
    if q < members and opt.name in WHOLE_DATA_OPTIMIZERS:
        raise ValueError(
            f"optimizer={opt.name!r} needs every partition in every round (its line search "
            f"compares exact losses of the whole data); sync_quorum={q} of {members} members "
            "would step on a subset. Use sync_quorum=None, or another optimizer"
        )


def make_settings(
    params: np.ndarray, config: dict[str, Any], optimizer: dict[str, Any]
) -> tuple[JobConfig, Optimizer]:
    """A job's settings and optimizer, tried once on zeros so that a bad value fails here.

    Raises
    ------
    TypeError, ValueError or ArithmeticError
        On settings that do not make a job.
    """
    cfg = JobConfig(**config)
    opt = make_optimizer(**optimizer)
    if isinstance(opt, LBFGSOptimizer) and cfg.mode != "sync":
        raise ValueError("optimizer 'lbfgs' needs mode='sync' (full-batch rounds)")
    if opt.needs_hessian:
        if cfg.mode != "sync" or cfg.batches_per_epoch != 1:
            raise ValueError(
                "optimizer 'newton' needs mode='sync' and full batches (batch_size=None): "
                "each round evaluates the exact loss, gradient and Hessian of the whole data"
            )
        if not cfg.smooth:
            raise ValueError(
                "optimizer 'newton' needs a loss with a second derivative; 'hinge' has "
                "none (its Hessian is zero almost everywhere): use optimizer='sgd', or "
                "loss='squared_hinge'"
            )
    p = params.astype(np.float64)
    extra = {"hess": np.zeros((p.shape[0], p.shape[0]))} if opt.needs_hessian else {}
    trial = opt.step(p, np.zeros_like(p), opt.init_state(p), 0, 0, 1.0, 0.0, **extra)
    if not (isinstance(trial, np.ndarray) and trial.shape == p.shape):
        raise ValueError("the optimizer settings do not give a valid step")
    return cfg, opt
