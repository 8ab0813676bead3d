"""The solvers of Newton's quadratic models (:mod:`daskgd.objective.newton`): coordinate
descent with an L1 term, the inner solver of its steps with lasso or elastic-net penalties,
as glum's IRLS-CD does, and the Cholesky solve of its smooth steps. numpy, and scipy's
triangular solve (the scheduler imports it)."""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_SWEEPS", "cholesky_solve", "coordinate_descent"]

#: Most sweeps over the coordinates one model takes. Each sweep lowers the model, so a cut
#: short solve is still a descent direction for the line search.
MAX_SWEEPS = 500


def coordinate_descent(
    x: np.ndarray, g: np.ndarray, A: np.ndarray, scale: np.ndarray, l1: np.ndarray
) -> np.ndarray:
    """Minimise ``g.(z - x) + (z - x)^T A (z - x) / 2 + sum_j l1[j] |z_j|`` over ``z`` by
    cyclic coordinate descent; return ``z - x``.

    Parameters
    ----------
    x : ndarray of shape (m,)
        The current point (the model's centre and the starting point).
    g : ndarray of shape (m,)
        The gradient of the smooth part at ``x``.
    A : ndarray of shape (m, m)
        The model's symmetric positive semi-definite matrix (the Hessian).
    scale : ndarray of shape (m,)
        The curvature used for each coordinate's update: ``A``'s diagonal, floored above
        zero (a coordinate without curvature would otherwise move without bound).
    l1 : ndarray of shape (m,)
        Each coordinate's L1 coefficient (0: not penalised, e.g. the intercept).

    Returns
    -------
    ndarray of shape (m,)
        The step; exact zeros of ``z`` where the L1 term holds a coordinate at zero.

    Sweeps go over the active set (non-zero or unpenalised coordinates) until it settles,
    then over every coordinate to check it, at most :data:`MAX_SWEEPS` in all.

    Examples
    --------
    >>> import numpy as np
    >>> step = coordinate_descent(np.zeros(2), np.array([-2.0, -0.5]), np.eye(2),
    ...                           np.ones(2), np.array([1.0, 1.0]))
    >>> step.tolist()
    [1.0, 0.0]
    """
    z = x.copy()
    r = g.copy()  # the model's smooth gradient at z: g + A (z - x)
    pen = l1 > 0
    thresh = l1 / scale
    everything = np.arange(len(z))
    sweeps = 0

    def sweep(coords: np.ndarray) -> float:
        nonlocal sweeps
        sweeps += 1
        moved = 0.0
        for j in coords:
            a = scale[j]
            u = z[j] - r[j] / a
            new = float(np.sign(u) * max(abs(u) - thresh[j], 0.0)) if pen[j] else u
            delta = new - z[j]
            if delta != 0.0:
                r[:] += A[j] * delta  # A is symmetric: a row, contiguous
                z[j] = new
                moved = max(moved, a * delta * delta)
        return moved

    first = sweep(everything)
    tol = 1e-24 + 1e-14 * first
    while first > tol and sweeps < MAX_SWEEPS:
        while sweeps < MAX_SWEEPS:
            if sweep(everything[(z != 0) | ~pen]) <= tol:
                break
        first = sweep(everything)
    return z - x


def cholesky_solve(L: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``(L L^T)^-1 rhs`` by two triangular solves (``L`` lower triangular).

    Not ``np.linalg.solve``: its general (LU) solver runs on OpenBLAS's threads, whose
    helper then spins about 0.1 s on a core after each call, a core a worker needs where
    the scheduler shares the machine (``bench/NOTES.md``, section 10); the triangular
    solves run on the calling thread.
    """
    from scipy.linalg import solve_triangular  # on first use: the kernels' import stays light

    return solve_triangular(L.T, solve_triangular(L, rhs, lower=True), lower=False)
