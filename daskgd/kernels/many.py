"""Loss and gradient of many linear models on one block of rows: :func:`grad_loss_many`.

A cross-validated path evaluates every fold model training on a chunk; one call of
:func:`~daskgd.kernels.grad_loss` per model reads the chunk from memory once per model,
this reads it once for all of them (each block of rows is used by every model while it is in
cache). Inputs are checked as by :func:`~daskgd.kernels.grad_loss`; the weights, targets and
sums are carried in float64 whatever ``X``'s dtype.
"""

from __future__ import annotations

import numpy as np

from daskgd.kernels.builds import KERNELS, available_builds
from daskgd.kernels.dispatch import check_block

__all__ = ["grad_loss_many"]


def grad_loss_many(
    X,
    y,
    W,
    b=None,
    *,
    loss: str = "squared_error",
    sample_weight=None,
    offset=None,
    epsilon: float = 0.1,
    power: float = 1.5,
    check_input: bool = True,
    _build: str | None = None,
):
    """Summed loss and gradient of each of ``M`` linear models on a block of rows.

    Parameters
    ----------
    X : ndarray of shape (n, d), float32 or float64, C-contiguous
        The block of rows. Never copied.
    y : array-like of shape (n,)
        Targets, in the domain of ``loss``.
    W : array-like of shape (M, d)
        One model's weights per row.
    b : array-like of shape (M,), optional
        The models' intercepts (zeros by default).
    loss : str, default="squared_error"
        Any loss of :data:`daskgd.objective.LOSSES` but the multinomial one.
    sample_weight, offset : array-like of shape (n,), optional
        Non-negative weight of each row; added to each row's margin.
    epsilon : float, default=0.1
        Width of the Huber loss's quadratic zone.
    power : float, default=1.5
        The Tweedie power (``loss="tweedie"``).
    check_input : bool, default=True
        Check the targets' domain, the weights' sign and the offset's finiteness.

    Returns
    -------
    losses : ndarray of shape (M,), float64
        ``sum_i sample_weight[i] * loss(x_i @ W[m] + b[m] + offset_i, y_i)`` per model.
    grads : ndarray of shape (M, d + 1), float64
        Each model's gradient in ``w`` (first ``d`` entries) then ``b``.

    Raises
    ------
    TypeError
        If ``X`` is not a float32/float64 ndarray.
    ValueError
        On a wrong shape or layout, an unknown loss, targets outside the loss's domain, a
        negative weight or a non-finite offset.

    Examples
    --------
    >>> import numpy as np
    >>> from daskgd.kernels import grad_loss_many
    >>> losses, grads = grad_loss_many(np.array([[1.0], [2.0]]), [1.0, 2.0], [[0.0], [1.0]])
    >>> losses.tolist(), grads.tolist()
    ([2.5, 0.0], [[-5.0, -3.0], [0.0, 0.0]])
    """
    W = np.ascontiguousarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"W must be 2-D, one model per row (M, d); got shape {W.shape}")
    M = W.shape[0]
    b = np.zeros(M) if b is None else np.ascontiguousarray(b, dtype=np.float64)
    if b.shape != (M,):
        raise ValueError(f"b must have shape ({M},), one intercept per row of W; got {b.shape}")
    d = W.shape[1]
    if np.ndim(X) == 2 and np.shape(X)[1] != d:
        raise ValueError(
            f"W has {d} columns but X has {np.shape(X)[1]} features; W needs one row of "
            "weights per model, one column per feature"
        )
    # the block checks (of X, y, the weights and offset) with the first model's weights
    X, y, _, _, info, sample_weight, _, offset, power = check_block(
        X,
        y,
        W[0] if M else np.zeros(d),
        0.0,
        loss,
        sample_weight,
        check_input,
        offset,
        power,
        vector_dtype=np.float64,
    )
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")
    grads = np.empty((M, d + 1))
    losses = np.empty(M)
    kernels = KERNELS if _build is None else available_builds()[_build]
    kernels.grad_loss_many(
        X, y, W, b, sample_weight, offset, grads, losses, info.code, float(epsilon), float(power)
    )
    return losses, grads
