"""What a fit returns: :class:`FitResult`, built from the parameter server's final reply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daskgd.errors import DivergenceError, TrainingError

__all__ = ["FitResult", "build_result"]


@dataclass
class FitResult:
    """What a fit returns.

    Attributes
    ----------
    coef_ : ndarray of shape (d,) or (d, k)
    intercept_ : float or ndarray of shape (k,)
    n_iter_ : int
        Epochs completed (passes over the data).
    n_updates_ : int
        Parameter updates the parameter server applied.
    converged_ : bool
        True when the fit stopped at an optimum: the gradient test (``gtol``,
        ``gtol_rel``) held; or, with exact gradients (sync, full batch), the loss stalled
        (``tol``) with the gradient norm below ``sqrt(tol)`` times its norm at the start;
        or, in stochastic fits (mini-batches, async, ssp, ``sync_quorum``), the loss
        stalled (scikit-learn SGD's rule). A stalled loss with a large gradient, and
        ``max_epochs``, ``max_time`` or a callback, stop the fit unconverged.
    history : list of dict
        Per epoch: ``epoch``, ``loss`` (the objective: for full batch, exact at the
        parameters of that round; for mini-batches, the mean of the batch losses over
        the epoch, as scikit-learn's SGD reports), ``grad_norm``, ``time`` (seconds
        since the start), ``updates``, ``version``, ``staleness_min/mean/max``,
        ``worker_updates`` (worker address -> updates) and ``complete`` (every
        partition contributed) and ``dropped_gradients`` (sync: gradients that arrived
        after their round had closed, in this epoch).
    reason : str
        Why the fit stopped.
    timings_ : dict
        Where the time went, in seconds: ``wall`` (the whole fit, from opening the data
        to the result), ``open`` (opening and, with ``validate``, checking the data),
        ``setup`` (installing the parameter server, creating the job,
        submitting the tasks) and, per training task that ended normally, ``ranks``: a
        list of dicts with ``load`` (joining and reading its rows), ``kernel``
        (gradients) and ``push`` (communication, the parameter server's steps and, in sync
        mode, waiting for the round's other members); ``push_bytes``, per task, the bytes
        of the gradients it pushed (they travel in the data's precision: float32 data,
        float32 gradients).
    dropped_gradients_ : int
        Sync mode: gradients dropped because their round had closed without them (with
        ``sync_quorum``, the stragglers' gradients; else a worker wrongly thought dead).
    learning_rate_ : float or None
        The initial step size the fit used: the one given, or the one
        ``learning_rate="auto"`` computed; None for ``optimizer="lbfgs"``.
    plan_ : dict of str to list of int
        Where the training ran: each worker's address and the row-chunks (indices into
        the dataset's chunks) its training task was placed with. Chunks of dask input
        already in a worker's memory are trained by that worker (no transfer); a task
        rerun after its worker died trains the same chunks elsewhere.
    recoveries_ : list of dict
        Sharded fits (``n_servers >= 1``, any mode): each parameter shard rebuilt after its
        worker died: ``shard``, ``from`` and ``to`` (worker addresses), ``version`` (the
        steps taken when it was lost), ``restored`` (the version of the backup the job
        went on from) and ``steps_lost`` (the steps undone and redone). Feature-partitioned
        fits: each restart after a column block's task was rerun: ``rank``, ``worker``
        (where the rerun joined), ``generation`` and ``epoch`` (the iterate every block
        restarted from; None: the start).
    blocks_ : list of dict
        Feature-partitioned fits (``partition="features"``): per column block, its
        ``rank``, the ``worker`` whose task returned it and its ``columns`` ``(c0, c1)``.
    servers_ : list of str
        The workers that held the parameter shards, in shard order, as the fit started
        (``n_servers`` given, or what ``"auto"`` chose); empty: the model was on the
        scheduler.
    """

    coef_: np.ndarray
    intercept_: float | np.ndarray
    n_iter_: int
    n_updates_: int
    converged_: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    timings_: dict[str, Any] = field(default_factory=dict)
    dropped_gradients_: int = 0
    learning_rate_: float | None = None
    plan_: dict[str, list[int]] = field(default_factory=dict)
    recoveries_: list[dict[str, Any]] = field(default_factory=list)
    blocks_: list[dict[str, Any]] = field(default_factory=list)
    servers_: list[str] = field(default_factory=list)

    @property
    def loss_(self) -> float:
        """The objective in the last epoch (nan when no epoch completed)."""
        return self.history[-1]["loss"] if self.history else float("nan")


def build_result(
    final: dict[str, Any],
    history: list[dict[str, Any]],
    *,
    n_features: int,
    lbfgs: bool,
    timings: dict[str, Any],
    plan: dict[str, list[int]],
    servers: list[str] | None = None,
) -> FitResult:
    """The result of a job from its final reply (``close``) and the history the driver saw
    (``servers``: the workers holding its shards).

    Raises
    ------
    DivergenceError
        When the job stopped on a non-finite or exploding loss.
    TrainingError
        When the job failed on the parameter server for another reason.
    """
    if final["error"]:
        cls = DivergenceError if final["error_kind"] == "divergence" else TrainingError
        raise cls(final["error"])
    P = np.asarray(final["params"])
    d = n_features
    intercept = P[d].copy() if P.ndim == 2 else float(P[d])
    return FitResult(
        coef_=P[:d].copy(),
        intercept_=intercept,
        n_iter_=int(final["epochs"]),
        n_updates_=int(final["version"]),
        converged_=bool(final["converged"]),
        history=[dict(h) for h in history],
        reason=final["reason"],
        timings_=timings,
        dropped_gradients_=int(final.get("dropped_gradients", 0)),
        learning_rate_=None if lbfgs else final.get("learning_rate"),
        plan_={w: list(c) for w, c in plan.items()},
        recoveries_=[dict(r) for r in final.get("recoveries") or []],
        servers_=list(servers or []),
    )
