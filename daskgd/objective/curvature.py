"""How Newton's method carries a Hessian forward between fresh ones (see
:mod:`daskgd.objective.newton`): the cost model that decides when a fresh one pays, the BFGS
update in between, and the resolution of a summed loss. Plain numpy (the scheduler imports
it)."""

from __future__ import annotations

import numpy as np

__all__ = [
    "HESSIAN_COST_FEATURES",
    "NEWTON_CONTRACTION",
    "PLAIN_NEWTON_COST",
    "ROUNDING_FLOOR",
    "ROUND_COST",
    "bfgs_update",
    "loss_resolution",
    "reuse_contraction",
]

#: The cost of a round, in units of one feature of one row of a gradient pass: a gradient
#: round costs ``ROUND_COST + rows * d``, a round with the Hessian ``ROUND_COST + rows * (d
#: + d^2 / HESSIAN_COST_FEATURES)`` (``rows``: the most rows a worker holds). Measured with
#: ``bench/bench_glm.py`` (500,000 rows a worker, d = 100: 0.085 s a gradient round, 0.40 s
#: with the Hessian) and on small data (a round trip through the scheduler: about 8 ms, the
#: time of a gradient over 5e6 row-features).
HESSIAN_COST_FEATURES = 27.0
ROUND_COST = 5e6
#: What a step with a fresh Hessian is counted on to shrink the error by (near the optimum
#: Newton converges quadratically: more). A carried-forward Hessian is kept while its steps
#: shrink the error by ``NEWTON_CONTRACTION ** (1 / cost)`` a pass, as much per unit of
#: work as a fresh one would. With 500,000 rows a worker: 0.59 at d = 100, 0.12 at d = 6,
#: 0.89 at d = 512; with a few thousand rows the round trip dominates, the Hessian is
#: nearly free and the method is plain Newton (0.1).
NEWTON_CONTRACTION = 0.1
#: Where a Hessian round costs at most this many gradient rounds (few features, or few rows
#: a worker: the round trip dominates) a fresh Hessian is always worth it: plain Newton.
PLAIN_NEWTON_COST = 1.25
#: The relative resolution of a loss summed in float64, at least (16 roundings).
ROUNDING_FLOOR = 16 * float(np.finfo(np.float64).eps)


def reuse_contraction(n_params: int, rows: int | None = None) -> float:
    """The contraction a step with a carried-forward Hessian must reach to keep it, for
    ``n_params`` parameters and at most ``rows`` rows a worker (None: so many that the
    round trip does not count)."""
    d = float(n_params)
    per_row = d + d * d / HESSIAN_COST_FEATURES
    if rows is None:
        cost = per_row / d if d > 0 else 1.0
    else:
        cost = (ROUND_COST + rows * per_row) / (ROUND_COST + rows * d)
    return float(NEWTON_CONTRACTION ** (1.0 / cost))


def loss_resolution(rows: int) -> float:
    """The relative resolution of a mean loss summed over ``rows`` rows in float64: 16
    roundings, or ``4 sqrt(rows)`` when more (a random walk of the summation's errors;
    measured on 1,000,000 rows: two evaluations at points 1e-9 apart differ by 1e-14
    relative, 45 roundings)."""
    eps = float(np.finfo(np.float64).eps)
    return max(ROUNDING_FLOOR, 4.0 * eps * float(np.sqrt(max(int(rows), 1))))


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
