"""The Python face of the compiled kernels: :func:`grad_loss`.

:func:`grad_loss` checks shapes, dtypes and layout, then calls the kernel of the
array's precision in the build :mod:`daskgd.kernels.builds` selected. One compiled
function serves float32 and float64 (Cython fused types): numpy's dtype picks it.
A CSR block (``scipy.sparse`` or :class:`~daskgd.kernels.sparse.CSRBlock`) goes to the
CSR kernels, which read only its stored entries.

Conversions
-----------
``X`` is never copied: it must be a C-contiguous float32 or float64 array, or a CSR
block whose values and indices are used as they are (:func:`~daskgd.kernels.sparse.check_csr`);
a hidden copy of a data block inside a training loop would cost more than the
gradient.  ``y``, ``w``, ``b`` and ``sample_weight`` are small and are converted
to ``X``'s dtype when they differ.
"""

from __future__ import annotations

import numpy as np

from daskgd.kernels.builds import KERNELS, available_builds
from daskgd.kernels.sparse import CSRBlock, check_csr, is_sparse
from daskgd.objective import check_power, check_targets, get_loss

__all__ = ["check_block", "check_offset", "grad_loss"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _as_vector(a, name: str, dtype: np.dtype, length: int) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {a.shape}")
    if a.shape[0] != length:
        raise ValueError(f"{name} has {a.shape[0]} entries; expected {length}")
    return a


def check_block(
    X,
    y,
    w,
    b,
    loss: str,
    sample_weight,
    check_input: bool,
    offset=None,
    power: float = 1.5,
    vector_dtype=None,
    allow_csr: bool = False,
):
    """Check a block's arrays; return them converted, with the loss and the checked power.

    ``X`` is never copied; ``y``, ``w``, ``b``, ``sample_weight`` and ``offset`` are
    converted to ``vector_dtype`` (default: ``X``'s). With ``allow_csr`` a CSR block is
    accepted too and returned as a :class:`~daskgd.kernels.sparse.CSRBlock`
    (:func:`~daskgd.kernels.sparse.check_csr`). See :func:`grad_loss` for the errors.

    Returns
    -------
    tuple
        ``(X, y, w, b, loss, sample_weight, multinomial, offset, power)``.
    """
    if allow_csr and (isinstance(X, CSRBlock) or is_sparse(X)):
        X = check_csr(X, check_input)
    elif not isinstance(X, np.ndarray):
        what = "a numpy.ndarray or a scipy.sparse CSR block" if allow_csr else "a numpy.ndarray"
        hint = "; only grad_loss has a sparse form" if is_sparse(X) and not allow_csr else ""
        raise TypeError(f"X must be {what}, got {type(X).__name__}{hint}")
    elif X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    elif X.dtype not in _FLOATS:
        raise TypeError(
            f"X must be float32 or float64, got {X.dtype}; convert it once with "
            "X.astype(numpy.float64)"
        )
    elif not X.flags.c_contiguous:
        raise ValueError(
            "X must be C-contiguous (row-major); convert it once with numpy.ascontiguousarray(X)"
        )
    n, d = X.shape
    vdt = X.dtype if vector_dtype is None else np.dtype(vector_dtype)
    info = get_loss(loss)
    if info.name == "tweedie":
        power = check_power(power)
    y = _as_vector(y, "y", vdt, n)
    w = np.ascontiguousarray(w, dtype=vdt)
    multinomial = w.ndim == 2
    if w.ndim not in (1, 2) or w.shape[0] != d:
        raise ValueError(
            f"w must have shape ({d},) or ({d}, n_classes) to match X's {d} features, got {w.shape}"
        )
    if multinomial and info.name != "log_loss":
        raise ValueError(f"2-D weights (multinomial) need loss='log_loss', not {loss!r}")
    if multinomial:
        b = _as_vector(np.broadcast_to(b, (w.shape[1],)), "b", vdt, w.shape[1])
    else:
        b = float(b)
    if sample_weight is not None:
        sample_weight = _as_vector(sample_weight, "sample_weight", vdt, n)
    if offset is not None:
        offset = _as_vector(offset, "offset", vdt, n)
    if check_input:
        check_targets(
            info,
            y,
            multinomial=multinomial,
            n_classes=w.shape[1] if multinomial else 0,
            power=power,
        )
        if sample_weight is not None and np.any(sample_weight < 0):
            raise ValueError("sample_weight must be non-negative")
        check_offset(offset)
    return X, y, w, b, info, sample_weight, multinomial, offset, power


def check_offset(offset) -> None:
    """Raise ``ValueError`` when an offset holds NaN or infinity, naming the first row."""
    if offset is not None and not np.all(np.isfinite(offset)):
        first = int(np.flatnonzero(~np.isfinite(offset))[0])
        raise ValueError(
            f"offset must be finite; found {offset[first]!r} at row {first}. An exposure "
            "is passed as offset=numpy.log(exposure), with every exposure positive."
        )


def grad_loss(
    X,
    y,
    w,
    b=0.0,
    *,
    loss: str = "squared_error",
    sample_weight=None,
    out=None,
    epsilon: float = 0.1,
    check_input: bool = True,
    offset=None,
    power: float = 1.5,
    _build: str | None = None,
):
    """Summed loss and its gradient for a block of rows, in one pass over ``X``.

    Parameters
    ----------
    X : ndarray of shape (n, d), float32 or float64, C-contiguous, or CSR block
        The block of rows. Never copied. A ``scipy.sparse`` CSR matrix or array (or a
        :class:`~daskgd.kernels.sparse.CSRBlock`) is read through its stored entries only:
        float32/float64 values, int32/int64 indices in any order within a row (a repeated
        column adds); other sparse formats raise (convert them with ``X.tocsr()``).
    y : array-like of shape (n,)
        Targets: real values for regression losses, ``-1``/``+1`` for binary
        classification losses, class indices ``0..k-1`` for the multinomial loss.
    w : array-like of shape (d,) or (d, k)
        Weights. 2-D weights select the multinomial (softmax) loss.
    b : float or array-like of shape (k,), default=0.0
        Intercept.
    loss : str, default="squared_error"
        One of ``squared_error``, ``huber``, ``log_loss``, ``hinge``, ``squared_hinge``,
        ``poisson``, ``gamma``, ``tweedie`` (:mod:`daskgd.objective.losses`).
    sample_weight : array-like of shape (n,), optional
        Non-negative weight of each row.
    out : ndarray of shape (d + 1,) or (d + 1, k), optional
        Buffer, of ``X``'s dtype, that receives the gradient of ``w`` in its first
        ``d`` rows and that of ``b`` in its last. Pass it to avoid an allocation per call.
    epsilon : float, default=0.1
        Width of the quadratic zone of the Huber loss.
    check_input : bool, default=True
        Check the labels' domain, the weights' sign and the offset's finiteness, and for a
        CSR block its row pointers and that its column indices lie in ``[0, d)``. Set it to
        False for blocks that were validated once already (as the training loop does).
    offset : array-like of shape (n,), optional
        Added to each row's margin (``log(exposure)`` for a rate model); none by default.
    power : float, default=1.5
        The Tweedie power (``loss="tweedie"``; >= 1), ignored by the other losses.

    Returns
    -------
    loss_sum : float
        ``sum_i sample_weight[i] * loss(x_i @ w + b + offset_i, y_i)``.
    grad_w : ndarray of shape (d,) or (d, k)
        Gradient of ``loss_sum`` with respect to ``w`` (a view of ``out``).
    grad_b : float or ndarray of shape (k,)
        Gradient with respect to ``b``.

    Raises
    ------
    TypeError
        If ``X`` is not a float32/float64 ndarray or CSR block (a sparse block in another
        format, or with indices that are not int32/int64).
    ValueError
        On a wrong shape or layout, an unknown loss, labels outside the loss's domain, or
        (with ``check_input``) a CSR column index outside ``[0, d)``, naming its row.

    Examples
    --------
    >>> import numpy as np
    >>> from daskgd.kernels import grad_loss
    >>> X = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> loss, g, gb = grad_loss(X, y=[1.0, 2.0], w=[0.5, 0.0])
    >>> float(loss), g.tolist(), float(gb)
    (0.25, [-2.0, -3.0], -1.0)

    The same rows as a CSR block (scipy's ``csr_array(X)`` works the same):

    >>> from daskgd.kernels import CSRBlock
    >>> rows = CSRBlock(X.ravel(), np.array([0, 1, 0, 1]), np.array([0, 2, 4]), X.shape)
    >>> grad_loss(rows, y=[1.0, 2.0], w=[0.5, 0.0])[1].tolist()
    [-2.0, -3.0]
    """
    X, y, w, b, info, sample_weight, multinomial, offset, power = check_block(
        X, y, w, b, loss, sample_weight, check_input, offset, power, allow_csr=True
    )
    d = X.shape[1]
    shape = (d + 1, w.shape[1]) if multinomial else (d + 1,)
    if out is None:
        out = np.empty(shape, dtype=X.dtype)
    elif (
        not isinstance(out, np.ndarray)
        or out.shape != shape
        or out.dtype != X.dtype
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        raise ValueError(f"out must be a writeable C-contiguous {X.dtype} array of shape {shape}")
    kernels = KERNELS if _build is None else available_builds()[_build]
    if isinstance(X, CSRBlock):
        rows: tuple = (X.data, X.indices, X.indptr)
        linear, softmax = kernels.grad_loss_csr_linear, kernels.grad_loss_csr_multinomial
    else:
        rows = (X,)
        linear, softmax = kernels.grad_loss_linear, kernels.grad_loss_multinomial
    if multinomial:
        if offset is not None:
            raise ValueError("offset is not supported with 2-D weights (multinomial)")
        loss_sum = softmax(*rows, y, w, b, sample_weight, out)
        return float(loss_sum), out[:d], out[d]
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")
    loss_sum = linear(
        *rows, y, w, b, sample_weight, out, info.code, float(epsilon), offset, float(power)
    )
    return float(loss_sum), out[:d], float(out[d])
