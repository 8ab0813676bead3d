"""The numpy oracle of the kernels: :func:`grad_loss_reference` and :func:`grad_hess_reference`.

Each loss's per-row definition lives with its family in :mod:`daskgd.objective.losses`
(:meth:`~daskgd.objective.losses.Loss.reference` and
:meth:`~daskgd.objective.losses.Loss.reference_hessian`); this module sums it over a
block the way the compiled kernels do (clipped derivatives, sample weights, offsets), in
float64 and plain passes over ``X``. The tests compare the kernels with it.
:func:`grad_loss_reference` also takes a ``scipy.sparse`` ``X`` (any format; scipy's own
products ``X @ w`` and ``X.T @ r``), the oracle of the CSR kernels.
"""

from __future__ import annotations

import numpy as np

from daskgd.kernels.sparse import is_sparse
from daskgd.objective import MAX_DLOSS, LogLoss, get_loss

__all__ = ["grad_hess_reference", "grad_loss_reference"]


def _margins(X, w, b, offset) -> np.ndarray:
    p = np.asarray(X @ w) + float(b)
    if offset is not None:
        p += np.asarray(offset, dtype=np.float64)
    return p


def grad_loss_reference(
    X,
    y,
    w,
    b=0.0,
    *,
    loss: str = "squared_error",
    sample_weight=None,
    epsilon: float = 0.1,
    offset=None,
    power: float = 1.5,
):
    """The numpy oracle for :func:`~daskgd.kernels.grad_loss`: same arguments, same results.

    Computes in float64 whatever the input dtype, in two passes over ``X``. Inputs are not
    validated (see :func:`~daskgd.kernels.grad_loss` for their meaning). ``X`` may be a
    ``scipy.sparse`` matrix or array of any format; the results are numpy arrays either way.

    Returns
    -------
    loss_sum : float
    grad_w : ndarray of shape (d,) or (d, k)
    grad_b : float or ndarray of shape (k,)

    Examples
    --------
    >>> import numpy as np
    >>> loss, g, gb = grad_loss_reference(np.array([[1.0, 2.0]]), [1.0], [0.5, 0.0])
    >>> float(loss), g.tolist(), float(gb)
    (0.125, [-0.5, -1.0], -0.5)
    """
    # scipy's products of a sparse matrix with a dense array are dense: np.asarray keeps
    # them numpy arrays (not numpy.matrix) for either kind of X
    X = X.astype(np.float64) if is_sparse(X) else np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n = X.shape[0]
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    family = get_loss(loss)
    if w.ndim == 2:  # multinomial: only the log loss has a 2-D form
        if not isinstance(family, LogLoss):
            raise ValueError(f"2-D weights (multinomial) need loss='log_loss', not {loss!r}")
        P = np.asarray(X @ w) + np.asarray(b, dtype=np.float64)
        if offset is not None:
            P += np.asarray(offset, dtype=np.float64)[:, None]
        loss_rows, D = family.reference_multinomial(P, y)
        D *= sw[:, None]
        return float(sw @ loss_rows), np.asarray(X.T @ D), D.sum(axis=0)
    loss_rows, dloss = family.reference(_margins(X, w, b, offset), y, epsilon, power)
    dloss = np.clip(dloss, -MAX_DLOSS, MAX_DLOSS) * sw
    return float(sw @ loss_rows), np.asarray(X.T @ dloss), float(dloss.sum())


def grad_hess_reference(
    X,
    y,
    w,
    b=0.0,
    *,
    loss: str = "squared_error",
    sample_weight=None,
    offset=None,
    epsilon: float = 0.1,
    power: float = 1.5,
    fit_intercept: bool = True,
    check_input: bool = True,
):
    """The numpy oracle for :func:`~daskgd.kernels.grad_hess`: same arguments, same results.

    Float64, plain passes over ``X``: the Hessian is ``A.T @ (A * h[:, None])`` with
    ``A = [X, 1]`` and ``h = sample_weight * l''`` (``l''`` clipped to
    :data:`~daskgd.objective.MAX_DLOSS` as the derivative is). Inputs are not validated
    (``check_input`` is accepted for the same signature).

    Returns
    -------
    loss_sum : float
    grad : ndarray of shape (d + 1,)
        Gradient of ``w`` then of ``b``.
    hess : ndarray of shape (d + 1, d + 1)
        With ``fit_intercept=False`` its last row and column are zero (not computed).

    Examples
    --------
    >>> import numpy as np
    >>> loss, g, H = grad_hess_reference(np.array([[1.0], [2.0]]), [1.0, 2.0], [0.0])
    >>> float(loss), g.tolist(), H.tolist()
    (2.5, [-5.0, -3.0], [[5.0, 3.0], [3.0, 2.0]])
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 1:
        raise ValueError(f"grad_hess takes 1-D weights (d,), got shape {w.shape}")
    n, d = X.shape
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    family = get_loss(loss)
    p = _margins(X, w, b, offset)
    loss_rows, dloss = family.reference(p, y, epsilon, power)
    dloss = np.clip(dloss, -MAX_DLOSS, MAX_DLOSS) * sw
    h = np.clip(family.reference_hessian(p, y, epsilon, power), -MAX_DLOSS, MAX_DLOSS) * sw
    grad = np.empty(d + 1)
    grad[:d] = X.T @ dloss
    grad[d] = dloss.sum()
    hess = np.zeros((d + 1, d + 1))
    G = X.T @ (X * h[:, None])
    hess[:d, :d] = np.triu(G) + np.triu(G, 1).T  # exactly symmetric, as the kernel's
    if fit_intercept:
        hess[d, :d] = hess[:d, d] = X.T @ h
        hess[d, d] = h.sum()
    return float(sw @ loss_rows), grad, hess
