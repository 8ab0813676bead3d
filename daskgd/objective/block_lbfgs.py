"""Vector-free L-BFGS for a block of the parameters (feature-partitioned fits).

The two-loop recursion of L-BFGS only combines its vectors linearly and takes their dot
products, so a block can run it on the coefficients of its vectors alone, given their
Gram matrix, which one small all-reduce of every block's part gives (Chen et al.,
"Large-scale L-BFGS using MapReduce", NIPS 2014). :class:`BlockLBFGS` keeps one block's
share of the memory; :func:`armijo_search` is the line search, on a function of the step
that the caller evaluates from the margins (:mod:`daskgd.objective.block_solvers`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from daskgd.objective.lbfgs import backtrack_step

__all__ = ["BlockLBFGS", "armijo_search"]


@dataclass
class BlockLBFGS:
    """Vector-free L-BFGS memory of one block: the scaled pairs ``(s~, y~)``; ``h`` the
    diagonal preconditioner (the variables are scaled by ``sqrt(h)``, as
    :class:`~daskgd.objective.lbfgs.LBFGS` does with its ``h0``)."""

    h: np.ndarray
    memory: int = 10
    s: list[np.ndarray] = field(default_factory=list)
    y: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = np.sqrt(self.h)

    def basis(self, g: np.ndarray) -> np.ndarray:
        """The rows ``s~_1..s~_m, y~_1..y~_m, g~``."""
        return np.vstack([*self.s, *self.y, g / self.root]) if self.s else (g / self.root)[None]

    def direction(self, B: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, float]:
        """The two-loop recursion on the coefficients of the basis, from its Gram matrix
        ``B`` (every block's part summed): the block's direction and ``g.p`` (global)."""
        m = len(self.s)
        delta = np.zeros(2 * m + 1)
        delta[-1] = 1.0
        alphas = []
        for i in reversed(range(m)):
            rho = 1.0 / B[i, m + i]
            a = rho * float(B[i] @ delta)
            delta[m + i] -= a
            alphas.append((rho, a))
        if m:
            delta *= B[m - 1, 2 * m - 1] / B[2 * m - 1, 2 * m - 1]
        for i, (rho, a) in zip(range(m), reversed(alphas), strict=True):
            b = rho * float(B[m + i] @ delta)
            delta[i] += a - b
        slope = -float(B[-1] @ delta)
        return -(delta @ basis) / self.root, slope

    def remember(self, s: np.ndarray, y: np.ndarray) -> None:
        """Add a pair; :meth:`trim` drops the oldest once the new one passed its test."""
        self.s.append(s * self.root)
        self.y.append(y / self.root)

    def trim(self, basis: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keep ``memory`` pairs: the oldest goes, with its rows of ``basis`` and ``B``."""
        if len(self.s) <= self.memory:
            return basis, B
        m = len(self.s)
        del self.s[0], self.y[0]
        keep = [j for j in range(2 * m + 1) if j not in (0, m)]
        return basis[keep], B[np.ix_(keep, keep)]

    def forget_last(self) -> None:
        del self.s[-1], self.y[-1]

    def clear(self) -> None:
        self.s.clear()
        self.y.clear()


def armijo_search(phi: Callable[[float], tuple[float, float]], f0: float, slope: float,
                 t: float, max_backtracks: int = 30, c1: float = 1e-4) -> float:  # fmt: skip
    """Armijo backtracking along a direction, ``phi(t)`` the objective there and its slope:
    the accepted step, or 0 when none decreases the objective."""
    for _ in range(max_backtracks):
        f, df = phi(t)
        if math.isfinite(f) and f <= f0 + c1 * t * slope:
            return t
        if math.isfinite(f) and abs(f - f0) <= 16 * np.finfo(float).eps * max(abs(f0), 1e-300):
            # at the rounding level of the objective: accept when the slope shrank
            if abs(df) < abs(slope):
                return t
        t = backtrack_step(f, f0, slope, t)
    return 0.0
