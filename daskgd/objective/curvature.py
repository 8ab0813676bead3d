"""How Newton's method carries a Hessian forward between fresh ones (see
:mod:`daskgd.objective.newton`): the cost model that decides when a fresh one pays, the BFGS
update in between, and the resolution of a summed loss. Plain numpy (the scheduler imports
it)."""

from __future__ import annotations

import numpy as np

__all__ = [
    "HESSIAN_COST_FEATURES",
    "NEWTON_CONTRACTION",
    "bfgs_update",
    "loss_resolution",
    "reuse_contraction",
]

#: The cost of a pass with the Hessian in passes without it is modelled as
#: ``1 + (d + 1) / HESSIAN_COST_FEATURES``: the gradient pass reads each row once (memory
#: bound, ``d`` a row), the Hessian adds ``d^2 / 2`` multiply-adds a row (measured with
#: ``bench/bench_glm.py``, 1,000,000 rows on two workers: 0.40 s against 0.085 s at
#: d = 100, about 5x).
HESSIAN_COST_FEATURES = 25.0
#: What a step with a fresh Hessian is counted on to shrink the error by (near the optimum
#: Newton converges quadratically: more). A carried-forward Hessian is kept while its steps
#: shrink the error by ``NEWTON_CONTRACTION ** (1 / cost)`` a pass, as much per unit of
#: work as a fresh one would: 0.63 at d = 100, 0.17 at d = 6 (where the Hessian is nearly
#: free and plain Newton is the cheapest), 0.90 at d = 512.
NEWTON_CONTRACTION = 0.1


def reuse_contraction(n_params: int) -> float:
    """The contraction a step with a carried-forward Hessian must reach to keep it."""
    cost = 1.0 + float(n_params) / HESSIAN_COST_FEATURES
    return float(NEWTON_CONTRACTION ** (1.0 / cost))


def loss_resolution(rows: int) -> float:
    """The relative resolution of a mean loss summed over ``rows`` rows in float64: 16
    roundings, or ``4 sqrt(rows)`` when more (a random walk of the summation's errors;
    measured on 1,000,000 rows: two evaluations at points 1e-9 apart differ by 1e-14
    relative, 45 roundings)."""
    eps = float(np.finfo(np.float64).eps)
    return eps * max(16.0, 4.0 * float(np.sqrt(max(int(rows), 1))))


def bfgs_update(B: np.ndarray, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The BFGS update of the curvature matrix ``B`` along the step ``s`` with gradient
    change ``y`` (a new array). Skipped (a copy of ``B``) when the curvature ``s.y`` is not
    clearly positive, so the matrix stays positive definite."""
    Bs = B @ s
    sBs = float(s @ Bs)
    sy = float(s @ y)
    if not (sBs > 0 and sy > 1e-12 * sBs):
        return B.copy()
    return B - np.outer(Bs, Bs) / sBs + np.outer(y, y) / sy
