"""The losses daskgd can minimise, each one family: kernel code, reference, link, curvature.

Every loss is a function of the margin ``p = x @ w + b (+ offset)`` and the target ``y``.
The definitions follow scikit-learn's SGD losses and, for the three log-link families,
scikit-learn's half deviances (``HalfPoissonLoss``, ``HalfGammaLoss``,
``HalfTweedieLoss``) without their terms free of ``p``; each :class:`Loss` below is the
executable definition (:meth:`Loss.reference`, in numpy) that the compiled kernels in
``src_ext/`` implement and that the tests compare them with:

===================  =========================================  ==============
name                 loss(p, y)                                 targets
===================  =========================================  ==============
``squared_error``    ``0.5 * (p - y)**2``                       real
``huber``            ``0.5 r**2`` if ``|r| <= eps`` else        real
                     ``eps*|r| - 0.5*eps**2``, ``r = p - y``
``log_loss``         ``log(1 + exp(-y p))``                     ``-1`` / ``+1``
``hinge``            ``max(0, 1 - y p)``                        ``-1`` / ``+1``
``squared_hinge``    ``max(0, 1 - y p)**2``                     ``-1`` / ``+1``
``log_loss`` (2-D    ``logsumexp(p) - p[y]`` (softmax)          ``0 .. k-1``
weights ``d x k``)
``poisson``          ``exp(p) - y p``                           ``y >= 0``
``gamma``            ``p + y exp(-p)``                          ``y > 0``
``tweedie``          ``exp((2-r)p)/(2-r)``                      ``y >= 0``
                     ``- y exp((1-r)p)/(1-r)``, ``r = power``   (``y > 0``
                     ``>= 1`` (1: poisson, 2: gamma)            if ``r >= 2``)
===================  =========================================  ==============

The log-link families predict ``mu = exp(p)`` (:meth:`Loss.link`). Each family also has
:meth:`Loss.reference_hessian`, the second derivative in the margin (Newton's method).

Everything here is plain numpy: the scheduler imports it (curvature bounds for the
default step size) and must not need the compiled kernels.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from daskgd.objective.loglink import GAMMA, POISSON, Gamma, Poisson, Tweedie, check_power
from daskgd.objective.loss_base import MAX_DLOSS, Loss

__all__ = [
    "LOSSES",
    "MAX_DLOSS",
    "Gamma",
    "Hinge",
    "Huber",
    "LogLoss",
    "Loss",
    "Poisson",
    "SquaredError",
    "SquaredHinge",
    "Tweedie",
    "check_power",
    "check_targets",
    "curvature_bound",
    "encode_labels",
    "get_loss",
    "link",
]


class SquaredError(Loss):
    """``0.5 * (p - y)**2``; curvature 1."""

    name = "squared_error"
    code = 0

    def reference(self, p, y, epsilon=0.1, power=1.5):
        r = p - y
        return 0.5 * r * r, r

    def reference_hessian(self, p, y, epsilon=0.1, power=1.5):
        return np.ones(np.shape(p))


class Huber(Loss):
    """Quadratic within ``epsilon`` of the target, linear beyond; curvature 1."""

    name = "huber"
    code = 1

    def reference(self, p, y, epsilon=0.1, power=1.5):
        r = p - y
        inside = np.abs(r) <= epsilon
        loss = np.where(inside, 0.5 * r * r, epsilon * np.abs(r) - 0.5 * epsilon**2)
        return loss, np.clip(r, -epsilon, epsilon)

    def reference_hessian(self, p, y, epsilon=0.1, power=1.5):
        return (np.abs(p - y) <= epsilon).astype(np.float64)


class LogLoss(Loss):
    """``log(1 + exp(-y p))`` for -1/+1 labels, or the softmax cross-entropy for 2-D margins.

    Curvature 1/4 (binary) or 1/2 (the softmax Hessian ``diag(p) - p p^T`` has eigenvalues
    at most 1/2); its link is the logistic sigmoid (softmax over the last axis in 2-D).
    """

    name = "log_loss"
    code = 2
    classification = True
    curvature = 0.25
    #: :attr:`curvature` of the multinomial (softmax) form.
    curvature_multinomial: ClassVar[float] = 0.5

    def reference(self, p, y, epsilon=0.1, power=1.5):
        z = p * y
        # log(1 + exp(-z)) = logaddexp(0, -z); derivative -y * sigmoid(-z)
        sig = np.exp(-np.logaddexp(0.0, z))
        return np.logaddexp(0.0, -z), -y * sig

    def reference_hessian(self, p, y, epsilon=0.1, power=1.5):
        # s (1 - s) with s = sigmoid(p) (y**2 = 1), from logs so that no exp overflows
        return np.exp(-np.logaddexp(0.0, p) - np.logaddexp(0.0, -p))

    def reference_multinomial(
        self, P: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-row softmax cross-entropy of margins ``P`` (n, k) against class indices.

        Returns
        -------
        loss : ndarray of shape (n,)
        dloss : ndarray of shape (n, k)
            Its derivative in each margin: ``softmax(P) - onehot(labels)``.
        """
        n = P.shape[0]
        m = P.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(P - m).sum(axis=1))
        labels = np.asarray(labels).astype(np.intp)
        loss = lse - P[np.arange(n), labels]
        D = np.exp(P - lse[:, None])
        D[np.arange(n), labels] -= 1.0
        return loss, D

    def link(self, margin: np.ndarray) -> np.ndarray:
        """Probabilities: the stable logistic sigmoid, or the softmax for 2-D margins."""
        if margin.ndim == 2:
            z = margin - margin.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        out = np.empty_like(margin, dtype=np.result_type(margin, np.float64))
        pos = margin >= 0
        out[pos] = 1.0 / (1.0 + np.exp(-margin[pos]))
        e = np.exp(margin[~pos])
        out[~pos] = e / (1.0 + e)
        return out


class Hinge(Loss):
    """``max(0, 1 - y p)``; it has no curvature, and is given 1, the scale of its neighbours."""

    name = "hinge"
    code = 3
    classification = True

    def reference(self, p, y, epsilon=0.1, power=1.5):
        z = p * y
        active = z <= 1.0
        return np.where(active, 1.0 - z, 0.0), np.where(active, -y, 0.0)

    def reference_hessian(self, p, y, epsilon=0.1, power=1.5):
        return np.zeros(np.shape(p))


class SquaredHinge(Loss):
    """``max(0, 1 - y p)**2``; curvature 2."""

    name = "squared_hinge"
    code = 4
    classification = True
    curvature = 2.0

    def reference(self, p, y, epsilon=0.1, power=1.5):
        m = np.maximum(1.0 - p * y, 0.0)
        return m * m, -2.0 * y * m

    def reference_hessian(self, p, y, epsilon=0.1, power=1.5):
        # 2 y**2 where active; the kernel's active zone is 1 - p y > 0 (as its derivative)
        return np.where(1.0 - p * y > 0.0, 2.0, 0.0)


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        SquaredError(),
        Huber(),
        LogLoss(),
        Hinge(),
        SquaredHinge(),
        POISSON,
        GAMMA,
        Tweedie(),
    )
}


def get_loss(name: str) -> Loss:
    """Return the :class:`Loss` called ``name``.

    Raises
    ------
    ValueError
        If no loss has that name; the message lists the known ones.

    Examples
    --------
    >>> get_loss("huber").code
    1
    """
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(LOSSES))
        raise ValueError(f"unknown loss {name!r}; choose one of: {known}") from None


def encode_labels(y: np.ndarray, classes: np.ndarray, multinomial: bool, name: str) -> np.ndarray:
    """Class labels ``y`` in the kernels' encoding: the class indices ``0..k-1``
    (``multinomial``) or ``-1``/``+1`` (binary), float (``y``'s own float dtype, else float64).

    Raises
    ------
    ValueError
        A label of ``y`` (named ``name`` in the message) is not among the sorted ``classes``.
    """
    idx = np.searchsorted(classes, y)
    known = (idx < len(classes)) & (classes[np.minimum(idx, len(classes) - 1)] == y)
    if not np.all(known):
        first = int(np.flatnonzero(~known)[0])
        raise ValueError(
            f"{name} holds the label {y[first]!r} (its row {first}), which is not among the "
            f"dataset's classes {classes.tolist()}"
        )
    dtype = y.dtype if y.dtype.kind == "f" else np.float64
    return (idx if multinomial else 2 * idx - 1).astype(dtype)


def check_targets(
    loss: Loss,
    y: np.ndarray,
    *,
    multinomial: bool = False,
    n_classes: int = 0,
    name: str = "y",
    power: float = 1.5,
) -> None:
    """Raise ``ValueError`` when ``y`` lies outside the domain of ``loss``.

    See :meth:`Loss.check_targets`.
    """
    loss.check_targets(y, multinomial=multinomial, n_classes=n_classes, name=name, power=power)


def link(loss_name: str, margin: np.ndarray) -> np.ndarray:
    """Map margins to predictions: identity for regression, probabilities for log loss.

    For 2-D margins (multinomial) the softmax over the last axis is returned.

    Examples
    --------
    >>> link("log_loss", np.array([0.0])).tolist()
    [0.5]
    """
    return get_loss(loss_name).link(margin)


def curvature_bound(loss_name: str, multinomial: bool = False) -> float:
    """A bound on the second derivative of the loss in the margin (for ``1 / L`` steps).

    ``squared_error`` and ``huber``: 1; ``log_loss``: 1/4 (binary) or 1/2 (multinomial);
    ``squared_hinge``: 2; ``hinge``, which has no curvature, is given 1, and so are the
    log-link families, whose curvature has no bound.

    Examples
    --------
    >>> curvature_bound("log_loss"), curvature_bound("log_loss", multinomial=True)
    (0.25, 0.5)
    """
    loss = get_loss(loss_name)
    if multinomial and isinstance(loss, LogLoss):
        return loss.curvature_multinomial
    return loss.curvature
