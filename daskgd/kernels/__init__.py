"""Loss and gradient of a linear model over a block of rows.

:func:`grad_loss` is the Python face of the compiled kernels in
``src_ext/_kernels.pyx``: it checks shapes, dtypes and layout, then calls the
kernel for the array's precision.  :func:`grad_loss_reference` computes the same
quantities with plain numpy; it is the oracle in the tests and the executable
definition of every loss (see :mod:`daskgd.objective.losses`).

Instruction sets
----------------
The kernels are built twice from one source: for the baseline instruction set
and, on x86-64, for AVX2 with FMA. The faster build is chosen at import when the
CPU supports it (as numpy reports); set the environment variable
``DASKGD_KERNELS=baseline`` to force the portable one. :data:`KERNEL_BUILD`
names the build in use.

Conversions
-----------
``X`` is never copied: it must be a C-contiguous float32 or float64 array (a
hidden copy of a data block inside a training loop would cost more than the
gradient).  ``y``, ``w``, ``b`` and ``sample_weight`` are small and are converted
to ``X``'s dtype when they differ.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import numpy as np

from daskgd.objective.losses import MAX_DLOSS, check_targets, get_loss

__all__ = ["KERNEL_BUILD", "available_builds", "grad_loss", "grad_loss_reference"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _cpu_has_avx2_fma() -> bool:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # pragma: no cover - numpy moved its private module
        return False
    return bool(__cpu_features__.get("AVX2")) and bool(__cpu_features__.get("FMA3"))


def available_builds() -> dict[str, ModuleType]:
    """The compiled kernel builds importable on this machine, by name.

    ``"baseline"`` is always there once daskgd is installed; ``"avx2"`` only on
    x86-64 CPUs with AVX2 and FMA.
    """
    builds: dict[str, ModuleType] = {}
    try:
        builds["baseline"] = importlib.import_module("daskgd._kernels")
    except ImportError as exc:  # pragma: no cover - only without a build
        raise ImportError(
            "daskgd's compiled kernels are missing; install daskgd with `pip install .` "
            "(or build in place with `python setup.py build_ext --inplace`)"
        ) from exc
    if _cpu_has_avx2_fma():
        try:
            builds["avx2"] = importlib.import_module("daskgd._kernels_avx2")
        except ImportError:
            pass  # built without it (another architecture or compiler)
    return builds


def _select_build() -> tuple[str, ModuleType]:
    builds = available_builds()
    wanted = os.environ.get("DASKGD_KERNELS", "").strip().lower()
    if wanted:
        if wanted not in builds:
            raise ImportError(
                f"DASKGD_KERNELS={wanted!r} is not available here; choose one of {sorted(builds)}"
            )
        return wanted, builds[wanted]
    name = "avx2" if "avx2" in builds else "baseline"
    return name, builds[name]


KERNEL_BUILD, _KERNELS = _select_build()


def _as_vector(a, name: str, dtype: np.dtype, length: int) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {a.shape}")
    if a.shape[0] != length:
        raise ValueError(f"{name} has {a.shape[0]} entries; expected {length}")
    return a


def _check_block(X, y, w, b, loss: str, sample_weight, check_input: bool):
    if not isinstance(X, np.ndarray):
        raise TypeError(f"X must be a numpy.ndarray, got {type(X).__name__}")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.dtype not in _FLOATS:
        raise TypeError(
            f"X must be float32 or float64, got {X.dtype}; convert it once with "
            "X.astype(numpy.float64)"
        )
    if not X.flags.c_contiguous:
        raise ValueError(
            "X must be C-contiguous (row-major); convert it once with numpy.ascontiguousarray(X)"
        )
    n, d = X.shape
    info = get_loss(loss)
    y = _as_vector(y, "y", X.dtype, n)
    w = np.ascontiguousarray(w, dtype=X.dtype)
    multinomial = w.ndim == 2
    if w.ndim not in (1, 2) or w.shape[0] != d:
        raise ValueError(
            f"w must have shape ({d},) or ({d}, n_classes) to match X's {d} features, got {w.shape}"
        )
    if multinomial and info.name != "log_loss":
        raise ValueError(f"2-D weights (multinomial) need loss='log_loss', not {loss!r}")
    if multinomial:
        b = _as_vector(np.broadcast_to(b, (w.shape[1],)), "b", X.dtype, w.shape[1])
    else:
        b = float(b)
    if sample_weight is not None:
        sample_weight = _as_vector(sample_weight, "sample_weight", X.dtype, n)
    if check_input:
        check_targets(info, y, multinomial=multinomial, n_classes=w.shape[1] if multinomial else 0)
        if sample_weight is not None and np.any(sample_weight < 0):
            raise ValueError("sample_weight must be non-negative")
    return X, y, w, b, info, sample_weight, multinomial


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
    _build: str | None = None,
):
    """Summed loss and its gradient for a block of rows, in one pass over ``X``.

    Parameters
    ----------
    X : ndarray of shape (n, d), float32 or float64, C-contiguous
        The block of rows. Never copied.
    y : array-like of shape (n,)
        Targets: real values for regression losses, ``-1``/``+1`` for binary
        classification losses, class indices ``0..k-1`` for the multinomial loss.
    w : array-like of shape (d,) or (d, k)
        Weights. 2-D weights select the multinomial (softmax) loss.
    b : float or array-like of shape (k,), default=0.0
        Intercept.
    loss : str, default="squared_error"
        One of ``squared_error``, ``huber``, ``log_loss``, ``hinge``, ``squared_hinge``.
    sample_weight : array-like of shape (n,), optional
        Non-negative weight of each row.
    out : ndarray of shape (d + 1,) or (d + 1, k), optional
        Buffer, of ``X``'s dtype, that receives the gradient of ``w`` in its first
        ``d`` rows and that of ``b`` in its last. Pass it to avoid an allocation per call.
    epsilon : float, default=0.1
        Width of the quadratic zone of the Huber loss.
    check_input : bool, default=True
        Check the labels' domain and the weights' sign. Set it to False for blocks
        that were validated once already (as the training loop does).

    Returns
    -------
    loss_sum : float
        ``sum_i sample_weight[i] * loss(x_i @ w + b, y_i)``.
    grad_w : ndarray of shape (d,) or (d, k)
        Gradient of ``loss_sum`` with respect to ``w`` (a view of ``out``).
    grad_b : float or ndarray of shape (k,)
        Gradient with respect to ``b``.

    Raises
    ------
    TypeError
        If ``X`` is not a float32/float64 ndarray.
    ValueError
        On a wrong shape or layout, an unknown loss, or labels outside the loss's domain.

    Examples
    --------
    >>> import numpy as np
    >>> from daskgd.kernels import grad_loss
    >>> X = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> loss, g, gb = grad_loss(X, y=[1.0, 2.0], w=[0.5, 0.0])
    >>> float(loss), g.tolist(), float(gb)
    (0.25, [-2.0, -3.0], -1.0)
    """
    X, y, w, b, info, sample_weight, multinomial = _check_block(
        X, y, w, b, loss, sample_weight, check_input
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
    kernels = _KERNELS if _build is None else available_builds()[_build]
    if multinomial:
        loss_sum = kernels.grad_loss_multinomial(X, y, w, b, sample_weight, out)
        return float(loss_sum), out[:d], out[d]
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")
    loss_sum = kernels.grad_loss_linear(X, y, w, b, sample_weight, out, info.code, float(epsilon))
    return float(loss_sum), out[:d], float(out[d])


def _loss_and_derivative(name: str, p: np.ndarray, y: np.ndarray, epsilon: float):
    """Per-row loss and derivative with respect to the margin (numpy reference)."""
    if name == "squared_error":
        r = p - y
        return 0.5 * r * r, r
    if name == "huber":
        r = p - y
        inside = np.abs(r) <= epsilon
        loss = np.where(inside, 0.5 * r * r, epsilon * np.abs(r) - 0.5 * epsilon**2)
        return loss, np.clip(r, -epsilon, epsilon)
    z = p * y
    if name == "log_loss":
        # log(1 + exp(-z)) = logaddexp(0, -z); derivative -y * sigmoid(-z)
        sig = np.exp(-np.logaddexp(0.0, z))
        return np.logaddexp(0.0, -z), -y * sig
    if name == "hinge":
        active = z <= 1.0
        return np.where(active, 1.0 - z, 0.0), np.where(active, -y, 0.0)
    if name == "squared_hinge":
        m = np.maximum(1.0 - z, 0.0)
        return m * m, -2.0 * y * m
    raise ValueError(f"unknown loss {name!r}")


def grad_loss_reference(
    X, y, w, b=0.0, *, loss: str = "squared_error", sample_weight=None, epsilon: float = 0.1
):
    """The numpy oracle for :func:`grad_loss`: same arguments, same results.

    Computes in float64 whatever the input dtype, in two passes over ``X``.
    Returns ``(loss_sum, grad_w, grad_b)``.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n = X.shape[0]
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 2:
        P = X @ w + np.asarray(b, dtype=np.float64)
        m = P.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(P - m).sum(axis=1))
        labels = y.astype(np.intp)
        loss_rows = lse - P[np.arange(n), labels]
        D = np.exp(P - lse[:, None])
        D[np.arange(n), labels] -= 1.0
        D *= sw[:, None]
        return float(sw @ loss_rows), X.T @ D, D.sum(axis=0)
    p = X @ w + float(b)
    loss_rows, dloss = _loss_and_derivative(get_loss(loss).name, p, y, epsilon)
    dloss = np.clip(dloss, -MAX_DLOSS, MAX_DLOSS) * sw
    return float(sw @ loss_rows), X.T @ dloss, float(dloss.sum())
