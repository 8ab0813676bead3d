"""The gradient of a CSR batch at the columns it touches: :func:`grad_loss_keys`.

A key-value parameter server holds ``w`` by column (key). A sparse batch touches few of
them: the training task pulls the weights at those keys only
(:func:`~daskgd.kernels.compact_columns` lists them) and pushes back the gradient at the
same keys, so neither message grows with ``d``. The batch is renumbered to the columns it
touches (a sort of its column indices), then the CSR kernel runs on the compact batch with
the weights at those columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from daskgd.kernels.dispatch import grad_loss
from daskgd.kernels.sparse import check_csr, compact_columns, row_of_entry

__all__ = ["grad_loss_keys"]


def _as_keys(keys: ArrayLike, d: int) -> np.ndarray:
    keys = np.asarray(keys)
    if keys.ndim != 1 or (keys.size and not np.issubdtype(keys.dtype, np.integer)):
        raise TypeError(f"keys must be a 1-D integer array, got {keys.dtype} {keys.shape}")
    keys = keys.astype(np.int64, copy=False)
    if keys.size and (keys[0] < 0 or keys[-1] >= d):
        raise ValueError(
            f"keys must lie in [0, {d}) (X's columns), got {int(keys[0])} .. {int(keys[-1])}"
        )
    if np.any(keys[1:] <= keys[:-1]):
        raise ValueError(
            "keys must be sorted and unique; compact_columns(X)[0] gives the keys of a batch"
        )
    return keys


def grad_loss_keys(
    X: Any,
    y: ArrayLike,
    w_keys: ArrayLike,
    keys: ArrayLike,
    b: float | ArrayLike = 0.0,
    *,
    loss: str = "squared_error",
    sample_weight: ArrayLike | None = None,
    epsilon: float = 0.1,
    check_input: bool = True,
    offset: ArrayLike | None = None,
    power: float = 1.5,
    _build: str | None = None,
) -> tuple[float, np.ndarray, np.ndarray, float | np.ndarray]:
    """Summed loss of a CSR batch and its gradient at the columns the batch touches.

    The same loss and gradient as :func:`~daskgd.kernels.grad_loss` with the full weight
    vector, but the weights are given only at ``keys`` and the gradient is returned only at
    the columns ``X`` touches (everywhere else it is zero).

    Parameters
    ----------
    X : scipy.sparse CSR matrix or array, or CSRBlock, of shape (n, d)
        The batch, with its global column indices. Its values are not copied; its indices are
        renumbered into a new array (:func:`~daskgd.kernels.compact_columns`). A caller that
        kept ``X_local`` from ``compact_columns`` when it pulled the weights can call
        ``grad_loss(X_local, y, w_keys, b)`` instead, without renumbering again.
    y : array-like of shape (n,)
        Targets, in the domain of ``loss``.
    w_keys : array-like of shape (K,) or (K, k)
        The weights at ``keys``. 2-D weights select the multinomial (softmax) loss.
    keys : array-like of int, shape (K,)
        Sorted unique column indices in ``[0, d)`` holding every column ``X`` touches:
        ``compact_columns(X)[0]``, or a superset of it (the keys of a whole chunk, pulled once
        for several batches).
    b : float or array-like of shape (k,), default=0.0
        Intercept.
    loss, sample_weight, epsilon, check_input, offset, power
        As for :func:`~daskgd.kernels.grad_loss`.

    Returns
    -------
    loss_sum : float
        ``sum_i sample_weight[i] * loss(x_i @ w + b + offset_i, y_i)``.
    keys : ndarray of shape (K_t,), int64
        The sorted unique columns ``X`` touches (``compact_columns(X)[0]``, a subset of the
        ``keys`` given).
    grad_keys : ndarray of shape (K_t,) or (K_t, k)
        The gradient of ``loss_sum`` at those columns, in ``X``'s dtype.
    grad_b : float or ndarray of shape (k,)
        Gradient with respect to ``b``.

    Raises
    ------
    TypeError
        As :func:`~daskgd.kernels.grad_loss` for a CSR block, or if ``keys`` is not a 1-D
        integer array.
    ValueError
        If ``keys`` is not sorted and unique in ``[0, d)``, ``w_keys`` has not ``len(keys)``
        rows, ``X`` touches a column outside ``keys`` (naming it and its row; always
        checked), or as :func:`~daskgd.kernels.grad_loss`.

    Examples
    --------
    >>> import numpy as np
    >>> from daskgd.kernels import CSRBlock, grad_loss_keys
    >>> X = CSRBlock(np.array([1.0, 2.0]), np.array([7, 2]), np.array([0, 1, 2]), (2, 9))
    >>> loss, keys, g, gb = grad_loss_keys(X, [1.0, 0.0], [0.5, 0.5, 0.5], keys=[2, 5, 7])
    >>> float(loss), keys.tolist(), g.tolist(), float(gb)
    (0.625, [2, 7], [2.0, -0.5], 0.5)
    """
    block = check_csr(X, check_input=False)  # the column checks are the keys' below
    keys = _as_keys(keys, block.shape[1])
    w_keys = np.asarray(w_keys)
    if w_keys.ndim not in (1, 2) or w_keys.shape[0] != keys.size:
        raise ValueError(
            f"w_keys must have shape ({keys.size},) or ({keys.size}, n_classes), one row per "
            f"key, got {w_keys.shape}"
        )
    # Sorting the batch's columns (np.unique) costs less than a binary search into keys
    # per stored entry, whose probes miss the cache; the searches then go per touched column.
    touched, X_local = compact_columns(block)
    at = np.searchsorted(keys, touched)
    if touched.size:
        if keys.size:
            missing = keys[np.minimum(at, keys.size - 1)] != touched
        else:
            missing = np.ones(touched.size, dtype=bool)
        if missing.any():
            col = touched[int(np.argmax(missing))]
            entry = int(np.flatnonzero(block.indices[: block.nnz] == col)[0])
            raise ValueError(
                f"X has column {int(col)} in row {row_of_entry(block.indptr, entry)}, which "
                "is not among keys; pull the weights at compact_columns(X)[0]"
            )
    if touched.size < keys.size:  # only what the batch changed goes back
        w_keys = w_keys[at]
    loss_sum, grad_w, grad_b = grad_loss(
        X_local,
        y,
        w_keys,
        b,
        loss=loss,
        sample_weight=sample_weight,
        epsilon=epsilon,
        check_input=check_input,
        offset=offset,
        power=power,
        _build=_build,
    )
    return loss_sum, touched, grad_w, grad_b
