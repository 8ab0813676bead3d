"""The losses daskgd can minimise: names, kernel codes, label domains, links.

Every loss is a function of the margin ``p = x @ w + b`` and the target ``y``.
The definitions (which the numpy reference in :mod:`daskgd.kernels` spells out
and the compiled kernels implement) follow scikit-learn's SGD losses:

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
===================  =========================================  ==============
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Loss:
    """A loss known to the kernels.

    Attributes
    ----------
    name : str
        The public name, as passed to ``loss=``.
    code : int
        The integer the compiled kernel dispatches on.
    classification : bool
        True when targets are class labels (``-1``/``+1`` for binary losses).
    """

    name: str
    code: int
    classification: bool


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("squared_error", 0, classification=False),
        Loss("huber", 1, classification=False),
        Loss("log_loss", 2, classification=True),
        Loss("hinge", 3, classification=True),
        Loss("squared_hinge", 4, classification=True),
    )
}

#: Largest absolute loss derivative, as in scikit-learn's SGD.
MAX_DLOSS = 1e12


def get_loss(name: str) -> Loss:
    """Return the :class:`Loss` called ``name``.

    Raises
    ------
    ValueError
        If no loss has that name; the message lists the known ones.
    """
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(LOSSES))
        raise ValueError(f"unknown loss {name!r}; choose one of: {known}") from None


def check_targets(
    loss: Loss, y: np.ndarray, *, multinomial: bool = False, n_classes: int = 0, name: str = "y"
) -> None:
    """Raise ``ValueError`` when ``y`` lies outside the loss's domain.

    Binary classification losses take ``-1``/``+1``; the multinomial loss takes
    class indices ``0 .. n_classes - 1``; regression losses take any finite value.
    """
    if multinomial:
        bad = (y < 0) | (y >= n_classes) | (y != np.floor(y))
        if np.any(bad):
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{name} must hold class indices 0..{n_classes - 1} for the multinomial "
                f"loss; found {y[first]!r} at position {first}. Encode labels first "
                "(e.g. numpy.unique(labels, return_inverse=True))."
            )
    elif loss.classification:
        bad = (y != 1) & (y != -1)
        if np.any(bad):
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{name} must hold -1/+1 labels for loss {loss.name!r}; found {y[first]!r} "
                f"at position {first}. For 0/1 labels pass 2 * y - 1."
            )


def link(loss_name: str, margin: np.ndarray) -> np.ndarray:
    """Map margins to predictions: identity for regression, probabilities for log loss.

    For 2-D margins (multinomial) the softmax over the last axis is returned.
    """
    loss = get_loss(loss_name)
    if loss.name != "log_loss":
        return margin
    if margin.ndim == 2:
        z = margin - margin.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    # numerically stable logistic sigmoid
    out = np.empty_like(margin, dtype=np.result_type(margin, np.float64))
    pos = margin >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-margin[pos]))
    e = np.exp(margin[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def curvature_bound(loss_name: str, multinomial: bool = False) -> float:
    """A bound on the second derivative of the loss in the margin (for ``1 / L`` steps).

    ``squared_error`` and ``huber``: 1; ``log_loss``: 1/4 (binary) or 1/2 (the softmax
    Hessian ``diag(p) - p p^T`` has eigenvalues at most 1/2); ``squared_hinge``: 2;
    ``hinge``, which has no curvature, is given 1, the scale of its smooth neighbours.
    """
    name = get_loss(loss_name).name
    if name == "log_loss":
        return 0.5 if multinomial else 0.25
    return 2.0 if name == "squared_hinge" else 1.0
