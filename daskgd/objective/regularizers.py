"""The penalty: elastic net, with the L1 part applied as a proximal (soft-threshold) step.

The objective (scikit-learn SGD's convention) is::

    F(w, b) = (1 / sum_i s_i) * sum_i s_i * loss(x_i @ w + b, y_i)
              + alpha * ((1 - l1_ratio) / 2 * ||w||_2^2 + l1_ratio * ||w||_1)

with ``s_i`` the sample weights (1 when absent). The intercept (the last row of the
parameters) is never penalised. The L2 part enters the gradient; the L1 part is applied
after each step as a proximal step, so L1 produces exact zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from daskgd.objective.finite import dot

__all__ = ["Regularizer", "soft_threshold"]

#: Entries a temporary of the penalty's arithmetic holds at most (512 kB in float64).
BLOCK = 65536


def soft_threshold(x: np.ndarray, threshold: np.ndarray | float) -> np.ndarray:
    """The proximal operator of ``threshold * ||x||_1``: shrink towards zero, exact zeros.

    Examples
    --------
    >>> soft_threshold(np.array([-2.0, 0.5, 3.0]), 1.0).tolist()
    [-1.0, 0.0, 2.0]
    """
    return np.sign(x) * np.maximum(np.abs(x) - threshold, 0.0)


@dataclass(frozen=True)
class Regularizer:
    """Elastic-net penalty ``alpha * ((1 - l1_ratio)/2 ||w||^2 + l1_ratio ||w||_1)``.

    Parameters
    ----------
    alpha : float
        Overall strength, >= 0.
    l1_ratio : float
        Share of L1 in [0, 1]: 0 is ridge (L2), 1 is lasso (L1).
    """

    alpha: float = 0.0
    l1_ratio: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        if not 0 <= self.l1_ratio <= 1:
            raise ValueError(f"l1_ratio must lie in [0, 1], got {self.l1_ratio!r}")

    @property
    def l2(self) -> float:
        """Coefficient of the smooth part's gradient, ``alpha * (1 - l1_ratio)``."""
        return self.alpha * (1.0 - self.l1_ratio)

    @property
    def l1(self) -> float:
        """Coefficient of the L1 norm, ``alpha * l1_ratio``."""
        return self.alpha * self.l1_ratio

    def penalty(self, params: np.ndarray) -> float:
        """Value of the penalty at ``params`` (intercept row excluded)."""
        w = np.ravel(params[:-1])  # a view: the rows are contiguous
        # w @ w: no temporary array (at millions of parameters each one costs its page faults)
        l1 = self.l1 * float(np.abs(w).sum()) if self.l1 else 0.0
        l2 = 0.5 * self.l2 * dot(w, w) if self.l2 else 0.0  # a pass over w saved
        return float(l2 + l1)

    def column_penalty(self, params: np.ndarray) -> np.ndarray:
        """The penalty of each column of 2-D ``params`` (intercept row excluded)."""
        w = params[:-1]
        return 0.5 * self.l2 * np.sum(w * w, axis=0) + self.l1 * np.sum(np.abs(w), axis=0)

    def proximal_gradient(
        self, params: np.ndarray, grad: np.ndarray, fit_intercept: bool = True
    ) -> np.ndarray:
        """The objective's (proximal) gradient at ``params`` from the mean data gradient
        ``grad`` (a fresh array; changed in place): the L2 part added, the intercept's
        entry zero when it is not fitted, and with L1 the proximal gradient mapping (step
        1), zero exactly at the optimum. Coordinate-wise: it applies to a parameter shard
        whose last row stands for the intercept."""
        self.add_gradient(params, grad)
        if not fit_intercept:
            grad[-1] = 0.0
        if self.l1:
            z = params - grad
            z[:-1] = soft_threshold(z[:-1], self.l1)
            grad = params - z
        return grad

    def add_gradient(self, params: np.ndarray, grad: np.ndarray) -> None:
        """Add the L2 part's gradient to ``grad`` in place (intercept row excluded)."""
        if not self.l2:
            return
        g, w = grad[:-1], params[:-1]
        # by blocks of rows: ``l2 * w`` whole is a temporary the size of the model, which
        # at millions of parameters costs its page faults (each block's is reused memory)
        rows = max(1, BLOCK // max(1, int(np.prod(g.shape[1:]))))
        for lo in range(0, g.shape[0], rows):
            g[lo : lo + rows] += self.l2 * w[lo : lo + rows]

    def prox(self, params: np.ndarray, step: np.ndarray | float) -> None:
        """Apply the L1 proximal step in place; ``step`` is the (per-coordinate) step size."""
        if self.l1:
            if isinstance(step, np.ndarray):
                step = step[:-1]
            params[:-1] = soft_threshold(params[:-1], step * self.l1)
