"""Least squares from Gram statistics: ridge solves and elastic-net coordinate descent.

One pass over the data gives each row-chunk's statistics (:func:`squared_stats`:
``A^T W A``, ``A^T W y``, ``y^T W y`` and the weight sum, with ``A = [X, 1]``); a fold's
training statistics are the total minus the fold's own, and its validation error comes from
the fold's own (:func:`validation_sse`). Every fold x penalty is solved from these small
``(d + 1, d + 1)`` arrays on the driver: ridge in closed form (one eigendecomposition per
fold serves every alpha), the elastic net by coordinate descent with covariance updates
along the alpha path, as scikit-learn's ``enet_path`` does with a precomputed Gram matrix.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

__all__ = [
    "Centered",
    "alpha_grid",
    "center",
    "enet_coordinate_descent",
    "enet_path",
    "ridge_path",
    "ridge_solve",
    "squared_stats",
    "validation_sse",
]


def squared_stats(
    chunk: tuple[np.ndarray, np.ndarray, np.ndarray | None],
) -> tuple[np.ndarray, ...]:
    """Runs on a worker: ``(A^T W A, A^T W y, [y^T W y])`` of one row-chunk, ``A = [X, 1]``.

    ``grad_hess`` of the squared loss ``0.5 (p - y)^2`` at zero is exactly these: its
    Hessian is ``A^T W A``, its gradient ``-A^T W y``, its loss ``0.5 y^T W y``.
    """
    from daskgd.kernels import grad_hess

    X, y, sw = chunk
    loss, grad, hess = grad_hess(
        X, y, np.zeros(X.shape[1], dtype=X.dtype), 0.0, loss="squared_error", sample_weight=sw
    )
    return (
        np.asarray(hess, dtype=np.float64),
        -np.asarray(grad, dtype=np.float64),
        np.array([2.0 * float(loss)]),
    )


class Centered(NamedTuple):
    """A least-squares system with the intercept eliminated: minimise over ``w``
    ``0.5 w^T Q w - q^T w + 0.5 yy`` (= half the weighted residual sum of squares), then
    ``b = y_mean - x_mean @ w``. ``n`` is the weight sum."""

    Q: np.ndarray
    q: np.ndarray
    yy: float
    n: float
    x_mean: np.ndarray
    y_mean: float


def center(G: np.ndarray, r: np.ndarray, yy: np.ndarray, fit_intercept: bool) -> Centered:
    """The centred system of statistics ``(A^T W A, A^T W y, y^T W y)``: what scikit-learn
    gets by centring X and y with their weighted means (without the intercept: as they are)."""
    d = G.shape[0] - 1
    n = float(G[d, d])
    if n <= 0:
        raise ValueError("a training set has zero total sample weight; use other folds")
    Q, q, s = G[:d, :d], r[:d], float(yy[0])
    if not fit_intercept:
        return Centered(Q.copy(), q.copy(), s, n, np.zeros(d), 0.0)
    mx = G[:d, d] / n
    my = float(r[d]) / n
    Qc = Q - n * np.outer(mx, mx)
    Qc = 0.5 * (Qc + Qc.T)
    return Centered(Qc, q - n * mx * my, max(s - n * my * my, 0.0), n, mx, my)


def ridge_solve(c: Centered, alpha: float) -> np.ndarray:
    """``(w, b)`` of ridge ``alpha`` (scikit-learn's ``Ridge``: RSS + alpha ||w||^2)."""
    from scipy.linalg import LinAlgError, cho_factor, cho_solve, lstsq

    A = c.Q + alpha * np.eye(len(c.q))
    try:
        w = cho_solve(cho_factor(A), c.q)
    except LinAlgError:  # a singular system (alpha = 0 and collinear columns): least norm
        w = lstsq(A, c.q)[0]
    return np.append(w, c.y_mean - c.x_mean @ w)


def ridge_path(c: Centered, alphas: np.ndarray) -> np.ndarray:
    """``(len(alphas), d + 1)`` ridge solutions: one eigendecomposition for all alphas."""
    lam, V = np.linalg.eigh(c.Q)
    lam = np.maximum(lam, 0.0)  # rounding can make a zero eigenvalue slightly negative
    Vq = V.T @ c.q
    W = (V @ (Vq[:, None] / (lam[:, None] + alphas[None, :]))).T
    return np.column_stack([W, c.y_mean - W @ c.x_mean])


def validation_sse(G: np.ndarray, r: np.ndarray, yy: np.ndarray, thetas: np.ndarray) -> np.ndarray:
    """Weighted residual sums of squares of models ``thetas`` (``(m, d + 1)``: w, b) on the
    rows of statistics ``(G, r, yy)``: ``theta^T G theta - 2 theta^T r + yy``."""
    sse = np.einsum("mi,ij,mj->m", thetas, G, thetas) - 2.0 * thetas @ r + float(yy[0])
    return np.maximum(sse, 0.0)


def alpha_grid(c: Centered, l1_ratio: float, eps: float, n_alphas: int) -> np.ndarray:
    """scikit-learn's elastic-net alpha grid: ``alpha_max = max |X^T y| / (n l1_ratio)``
    (centred, weighted), then ``n_alphas`` values down to ``eps * alpha_max``."""
    if l1_ratio <= 0:
        raise ValueError(
            "an automatic alpha grid needs l1_ratio > 0 (alpha_max is infinite for a pure L2 "
            "penalty); pass alphas=[...] or use RidgeCV"
        )
    alpha_max = float(np.max(np.abs(c.q))) / (c.n * l1_ratio)
    if alpha_max <= np.finfo(float).resolution:
        return np.full(n_alphas, np.finfo(float).resolution)
    return np.geomspace(alpha_max, alpha_max * eps, num=n_alphas)


def _dual_gap(c: Centered, w: np.ndarray, H: np.ndarray, l1: float, l2: float) -> float:
    """The duality gap of scikit-learn's ``enet_coordinate_descent_gram``."""
    q_dot_w = float(w @ c.q)
    r_norm2 = c.yy - 2.0 * q_dot_w + float(w @ H)
    xta = c.q - H - l2 * w
    dual_norm = float(np.max(np.abs(xta))) if len(xta) else 0.0
    if dual_norm > l1:
        const = l1 / dual_norm
        gap = 0.5 * (r_norm2 + r_norm2 * const**2)
    else:
        const = 1.0
        gap = r_norm2
    gap += l1 * float(np.abs(w).sum()) - const * (c.yy - q_dot_w)
    return gap + 0.5 * l2 * (1.0 + const**2) * float(w @ w)


def enet_coordinate_descent(
    c: Centered, alpha: float, l1_ratio: float, w: np.ndarray, max_iter: int, tol: float
) -> tuple[np.ndarray, float, int]:
    """Cyclic coordinate descent on the Gram matrix (covariance updates), as scikit-learn's
    ``enet_coordinate_descent_gram``: minimises
    ``1/(2n) RSS + alpha l1_ratio ||w||_1 + alpha (1 - l1_ratio)/2 ||w||^2``
    from ``w`` (changed in place), until the duality gap is below ``tol * y^T y``.

    Returns ``(w, gap, sweeps)``; the gap is above the tolerance only after ``max_iter``.
    """
    l1 = alpha * l1_ratio * c.n
    l2 = alpha * (1.0 - l1_ratio) * c.n
    Q = c.Q
    diag = np.diag(Q).copy()
    H = Q @ w
    tol_gap = tol * c.yy
    qs = c.q.tolist()
    gap = np.inf
    sweeps = 0
    for sweeps in range(1, max_iter + 1):
        w_max = 0.0
        dw_max = 0.0
        for j in range(len(qs)):
            qj = diag[j]
            if qj == 0.0:
                continue
            old = w[j]
            tmp = qs[j] - H[j] + qj * old
            new = np.sign(tmp) * max(abs(tmp) - l1, 0.0) / (qj + l2)
            if new != old:
                H += (new - old) * Q[j]
                w[j] = new
            dw_max = max(dw_max, abs(new - old))
            w_max = max(w_max, abs(new))
        if w_max == 0.0 or dw_max / w_max < tol or sweeps == max_iter:
            gap = _dual_gap(c, w, H, l1, l2)
            if gap <= tol_gap:
                break
    return w, gap, sweeps


def enet_path(
    c: Centered, alphas: np.ndarray, l1_ratio: float, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solutions along ``alphas`` (largest first), each warm-started from the one before.

    Returns ``thetas`` ``(len(alphas), d + 1)`` (w then b), the duality gaps and sweeps.
    """
    from sklearn.exceptions import ConvergenceWarning  # here: workers import this module

    d = len(c.q)
    w = np.zeros(d)
    thetas = np.empty((len(alphas), d + 1))
    gaps = np.empty(len(alphas))
    sweeps = np.empty(len(alphas), dtype=np.int64)
    for i, alpha in enumerate(alphas):
        w, gaps[i], sweeps[i] = enet_coordinate_descent(c, float(alpha), l1_ratio, w, max_iter, tol)
        if gaps[i] > tol * c.yy:
            warnings.warn(
                f"coordinate descent did not converge at alpha={alpha:.4g}, l1_ratio={l1_ratio}: "
                f"duality gap {gaps[i]:.3g} > tol * y^T y = {tol * c.yy:.3g} after {max_iter} "
                "sweeps; increase max_iter or loosen tol",
                ConvergenceWarning,
                stacklevel=3,
            )
        thetas[i, :d] = w
        thetas[i, d] = c.y_mean - c.x_mean @ w
    return thetas, gaps, sweeps
