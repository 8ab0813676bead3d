"""Loss, gradient and Hessian of a block of rows in one pass: :func:`grad_hess`.

The per-block statistics of Newton's method (and of the Gram matrices of the squared
loss): ``sum_i s_i l(p_i, y_i)``, its gradient ``A^T (s * l')`` and its Hessian
``A^T diag(s * l'') A`` with ``A = [X, 1]`` and ``p = X w + b + offset``. Inputs are
checked as by :func:`~daskgd.kernels.grad_loss`; the small vectors are carried in float64
whatever ``X``'s dtype, and so is every sum.
"""

from __future__ import annotations

import numpy as np

from daskgd.kernels.builds import KERNELS, available_builds
from daskgd.kernels.dispatch import check_block

__all__ = ["grad_hess"]


def grad_hess(
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
    hessian_precision: str = "double",
    _build: str | None = None,
):
    """Summed loss, its gradient and its Hessian for a block of rows, in one pass over ``X``.

    Parameters
    ----------
    X : ndarray of shape (n, d), float32 or float64, C-contiguous
        The block of rows. Never copied.
    y : array-like of shape (n,)
        Targets, in the domain of ``loss``.
    w : array-like of shape (d,)
        Weights (1-D only: the multinomial loss has no Hessian here).
    b : float, default=0.0
        Intercept.
    loss : str, default="squared_error"
        Any loss of :data:`daskgd.objective.LOSSES`. For ``hinge`` the Hessian is zero.
    sample_weight : array-like of shape (n,), optional
        Non-negative weight of each row.
    offset : array-like of shape (n,), optional
        Added to each row's margin.
    epsilon : float, default=0.1
        Width of the Huber loss's quadratic zone.
    power : float, default=1.5
        The Tweedie power (``loss="tweedie"``).
    fit_intercept : bool, default=True
        When False the last row and column of the Hessian are not computed (left zero);
        the intercept's gradient is computed either way.
    check_input : bool, default=True
        Check the targets' domain, the weights' sign and the offset's finiteness.
    hessian_precision : {"double", "single"}, default="double"
        ``"single"`` computes each block of 256 rows' part of the Hessian in float32
        (BLAS ``ssyrk``, about twice as fast as ``dsyrk``) and sums the parts in float64:
        each entry carries about 1e-6 relative rounding, enough for a Newton direction (the
        gradient, which fixes the optimum, and the loss stay exact). Not for a Hessian that is
        the model itself (least squares' normal equations).

    Returns
    -------
    loss_sum : float
        ``sum_i sample_weight[i] * loss(x_i @ w + b + offset_i, y_i)``.
    grad : ndarray of shape (d + 1,), float64
        Its gradient in ``w`` then ``b``.
    hess : ndarray of shape (d + 1, d + 1), float64
        ``A^T diag(sample_weight * l'') A`` with ``A = [X, 1]``; symmetric.

    Raises
    ------
    TypeError
        If ``X`` is not a float32/float64 ndarray.
    ValueError
        On a wrong shape or layout, 2-D ``w``, an unknown loss, targets outside the loss's
        domain (naming the row), a negative weight or a non-finite offset.

    Examples
    --------
    >>> import numpy as np
    >>> from daskgd.kernels import grad_hess
    >>> loss, g, H = grad_hess(np.array([[1.0], [2.0]]), [1.0, 2.0], [0.0])
    >>> float(loss), g.tolist(), H.tolist()
    (2.5, [-5.0, -3.0], [[5.0, 3.0], [3.0, 2.0]])
    """
    if np.ndim(w) != 1:
        raise ValueError(
            f"grad_hess takes 1-D weights of shape (d,), got shape {np.shape(w)}; the "
            "multinomial loss has no Hessian kernel (use grad_loss with L-BFGS)"
        )
    X, y, w, b, info, sample_weight, _, offset, power = check_block(
        X, y, w, b, loss, sample_weight, check_input, offset, power, vector_dtype=np.float64
    )
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")
    if hessian_precision not in ("double", "single"):
        raise ValueError(
            f"hessian_precision must be 'double' or 'single', got {hessian_precision!r}"
        )
    d = X.shape[1]
    grad = np.empty(d + 1)
    hess = np.empty((d + 1, d + 1))
    kernels = KERNELS if _build is None else available_builds()[_build]
    loss_sum = kernels.grad_hess(
        X,
        y,
        w,
        b,
        sample_weight,
        offset,
        grad,
        hess,
        info.code,
        float(epsilon),
        float(power),
        bool(fit_intercept),
        hessian_precision == "single",
    )
    return float(loss_sum), grad, hess
