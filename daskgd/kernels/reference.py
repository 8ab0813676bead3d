"""The numpy oracle of the kernels: :func:`grad_loss_reference`.

Each loss's per-row definition lives with its family in :mod:`daskgd.objective.losses`
(:meth:`~daskgd.objective.losses.Loss.reference`); this module sums it over a block the
way the compiled kernels do (clipped derivatives, sample weights), in float64 and two
plain passes over ``X``. The tests compare the kernels with it.
"""

from __future__ import annotations

import numpy as np

from daskgd.objective import MAX_DLOSS, LogLoss, get_loss

__all__ = ["grad_loss_reference"]


def grad_loss_reference(
    X, y, w, b=0.0, *, loss: str = "squared_error", sample_weight=None, epsilon: float = 0.1
):
    """The numpy oracle for :func:`~daskgd.kernels.grad_loss`: same arguments, same results.

    Computes in float64 whatever the input dtype, in two passes over ``X``. Inputs are not
    validated (see :func:`~daskgd.kernels.grad_loss` for their meaning).

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
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n = X.shape[0]
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    family = get_loss(loss)
    if w.ndim == 2:  # multinomial: only the log loss has a 2-D form
        if not isinstance(family, LogLoss):
            raise ValueError(f"2-D weights (multinomial) need loss='log_loss', not {loss!r}")
        loss_rows, D = family.reference_multinomial(X @ w + np.asarray(b, dtype=np.float64), y)
        D *= sw[:, None]
        return float(sw @ loss_rows), X.T @ D, D.sum(axis=0)
    loss_rows, dloss = family.reference(X @ w + float(b), y, epsilon)
    dloss = np.clip(dloss, -MAX_DLOSS, MAX_DLOSS) * sw
    return float(sw @ loss_rows), X.T @ dloss, float(dloss.sum())
