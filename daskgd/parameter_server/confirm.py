"""Async and ssp full-batch fits: a gradient tolerance confirmed at one point.

In sync full-batch mode an epoch's gradient is the exact gradient at one point. In async
and ssp modes it is the sum of each rank's gradient at the parameters that rank had, and
with a full batch the ranks' steps come in much the same order every epoch: with a
constant step each moves the parameters towards its own partition's optimum, and the
iterates settle on a cycle around the optimum, whose gradients, taken along the cycle, sum
to zero. Such a sum meeting ``gtol`` says the iterates stopped moving, not that they are
optimal (measured: ``gtol=1e-8`` met 3e-4 away from the least-squares solution).

So there the test only opens a check: no step is applied until every rank has pushed its
gradient at the same, current parameters (pushes computed at earlier ones are dropped and
answered with the current parameters, as a sync round's stale pushes are); their sum is
the exact gradient there, and the fit stops as converged only if it meets the tolerance.
The history row of the epoch that opened the check records it (``check``: the version and
the exact gradient norm). A gradient tolerance that the check does not confirm lets the
steps resume, and no check opens again before twice as many epochs have run (a fit on a
cycle costs one extra round per check, a geometrically rarer one); a stalled loss (``tol``)
stops the fit either way, as in sync mode: converged only if the gradient at one point is
below ``gtol``/``gtol_rel`` when given, else ``sqrt(tol)`` times its norm at the start.

Mini-batch epochs are stochastic anyway (their stop rules follow scikit-learn's SGD). A
sharded job's gradients are in its shards: there the test stops the fit without
claiming convergence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["CYCLE_HINT", "Confirmation", "GradientCheck", "needs_check"]

#: What a fit whose check failed says of it.
CYCLE_HINT = (
    "The iterates circle the optimum, each push stepping towards its partition's own: use "
    "a decaying learning rate, or mode='sync' for the exact optimum"
)


def needs_check(config: Any) -> bool:
    """Whether a gradient tolerance met by ``config``'s job must be confirmed at one point
    (async/ssp, full batch)."""
    return config.mode != "sync" and config.batches_per_epoch == 1


@dataclass
class GradientCheck:
    """An open check: the version every rank computes its gradient at, and the parts in."""

    reason: str  # the test that opened it
    epoch: int  # the epoch whose history row records it
    bound: float  # the gradient norm that confirms it
    final: bool = False  # the stop rule stops the fit either way (the stalled loss's)
    #: the parameters' version every rank computes its gradient at: None until the first
    #: push taken (the push that opened the check applies its own step after opening it)
    version: int | None = None
    parts: dict[int, tuple[np.ndarray, float, float]] = field(default_factory=dict)

    def add(self, rank: int, grad: np.ndarray, weight: float, loss: float) -> None:
        self.parts[rank] = (np.array(grad, dtype=np.float64), float(weight), float(loss))

    def complete(self, n_ranks: int) -> bool:
        return len(self.parts) == n_ranks

    def gradient(self) -> tuple[np.ndarray, float, float]:
        """The mean data gradient, the summed weight and the summed loss (rank order)."""
        order = sorted(self.parts)
        total = self.parts[order[0]][0].copy()
        for r in order[1:]:
            total += self.parts[r][0]
        weight = math.fsum(self.parts[r][1] for r in order)
        loss = math.fsum(self.parts[r][2] for r in order)
        return total / (weight if weight > 0 else 1.0), weight, loss


class Confirmation:
    """A job's side of the checks (a base of ``Job``)."""

    #: whether the job's pushes can be checked at one point (a key-value job's cannot:
    #: its epochs are stochastic and it computes no gradient norm)
    checkable: bool = True
    #: the open check, or None
    check: GradientCheck | None = None
    #: no check opens before this epoch (doubled after each that failed)
    next_check: int = 0
    config: Any
    epochs: int
    published: tuple[int, Any]  # (version, parameters)
    shards: Any
    ranks: list
    history: list[dict[str, Any]]

    stop: Callable[..., None]
    grad_norm: Callable[[np.ndarray, np.ndarray], float]

    #: the last check that did not confirm its test: (the test, the gradient norm found)
    checked: tuple[str, float] | None = None

    def check_note(self) -> str:
        """What a fit stopped on ``max_epochs`` says of a check that failed, or ''."""
        if self.checked is None:
            return ""
        reason, gnorm = self.checked
        return (
            f" (at some epochs the gradients summed along the way met the stop rule ({reason}), "
            f"but the gradient at one point did not: its norm was {gnorm:.3g}. {CYCLE_HINT})"
        )

    def open_check(self, reason: str, bound: float, final: bool = False) -> None:
        """A stop rule held on gradients taken at different parameters: check it at one
        point (see the module notes). ``final``: the rule stops the fit whatever the check
        finds (the stalled loss: converged or not)."""
        if self.shards is not None:
            self.stop(
                f"{reason}, on gradients each taken at the parameters its rank had (async, "
                "sharded): not confirmed at one point, so not reported as converged. Use "
                "mode='sync' for a full-batch fit that reaches the optimum"
            )
            return
        if self.check is None and (final or self.epochs >= self.next_check):
            self.check = GradientCheck(reason, self.epochs, bound, final)

    def take_check_part(
        self, rank: int, check: GradientCheck, version: int, grad: np.ndarray, weight: float,
        loss: float,
    ) -> bool:  # fmt: skip
        """A push while ``check`` is open: kept if computed at its version (the check
        closes when every rank's is in), else dropped. Returns whether it was kept."""
        # the check's version is the one published when its first push is taken: the push
        # that closed the epoch opened the check before its own step was applied
        if check.version is None:
            check.version = self.published[0]
        if check is not self.check or version != check.version or rank in check.parts:
            return False
        check.add(rank, grad, weight, loss)
        if check.complete(len(self.ranks)):
            self.close_check()
        return True

    def close_check(self, abandoned: str | None = None) -> None:
        """Judge the open check: stop as converged if the gradient at its version meets
        its bound, else record it and let the steps resume."""
        check, self.check = self.check, None
        if check is None:
            return
        # its version is set: a check closes only after a push was taken (take_check_part)
        self.next_check = max(2 * self.epochs, self.epochs + 1)
        row = next((h for h in self.history if h["epoch"] == check.epoch), None)
        if abandoned is not None:
            if row is not None:
                row["check"] = {"version": check.version, "abandoned": abandoned}
            return
        g, _, _ = check.gradient()
        gnorm = self.grad_norm(self.published[1], g)
        if row is not None:
            row["check"] = {"version": check.version, "grad_norm": gnorm}
        self.checked = (check.reason, gnorm)
        if gnorm <= check.bound:
            self.stop(
                f"{check.reason}; confirmed at version {check.version}: the gradient there, "
                f"every partition's, has norm {gnorm:.3g} <= {check.bound:.3g}",
                converged=True,
            )
        elif check.final:
            self.stop(
                f"{check.reason}, but the gradient at one point (version {check.version}, "
                f"every partition's) has norm {gnorm:.3g} > {check.bound:.3g}: not converged. "
                + CYCLE_HINT
            )
