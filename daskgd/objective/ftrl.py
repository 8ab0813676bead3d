"""FTRL-Proximal, the per-coordinate rule of click prediction (McMahan et al., "Ad Click
Prediction: a View from the Trenches", KDD 2013, Algorithm 1).

Per coefficient it keeps ``z`` (the sum of the gradients, less the proximal terms'
pull towards the past weights) and ``n`` (the sum of the squared gradients); the weight is
a closed form of the two::

    w = 0                                                    if |z| <= l1
    w = -(z - sign(z) l1) / ((beta + sqrt(n)) / alpha + l2)  otherwise

so a coefficient no gradient touched needs no catch-up, and L1 gives exact zeros. A step
at the touched keys, with ``g`` their gradient and ``w`` their current weights::

    sigma = (sqrt(n + g^2) - sqrt(n)) / alpha;  z += g - sigma w;  n += g^2

The intercept follows the same rule without penalty (``l1 = l2 = 0``).

**The penalty.** McMahan et al.'s ``l1`` and ``l2`` are fixed: they weigh against the
*sum* of all the losses seen, so an endless stream's penalty weighs less and less against
its data. daskgd's objective (:mod:`daskgd.objective.regularizers`) is a *mean* loss plus
its penalty, and the server receives at each step the mean gradient of a batch: the round
loss of step ``s`` is ``f_s(w) + P(w)``, ``f_s`` the batch's mean loss and ``P`` daskgd's
penalty. FTRL-Proximal follows the leader of the summed round losses, so after ``t`` steps
the closed form above takes ``l1 + t * alpha * l1_ratio`` and ``l2 + t * alpha *
(1 - l1_ratio)`` (the cumulative penalty is exact in closed form, as in McMahan's
"Follow-the-Regularized-Leader and Mirror Descent: Equivalence Theorems and L1
Regularization", AISTATS 2011, and in Xiao's regularized dual averaging). Its fixed point
is the minimiser of daskgd's objective (plus ``beta / (2 alpha t) ||w||^2`` from the start
of the per-coordinate rates, which fades), whatever the number of steps. Give daskgd's
penalty as ``regularizer`` (``alpha``, ``l1_ratio`` of
:func:`~daskgd.objective.keyed.make_keyed_optimizer`), McMahan et al.'s as ``l1`` and
``l2``, or both (they add up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from daskgd.objective.keyed_base import KeyedOptimizer
from daskgd.objective.regularizers import Regularizer, soft_threshold

__all__ = ["FTRLProximal"]


def _weights(
    z: np.ndarray, n: np.ndarray, alpha: float, beta: float, l1: float, l2: float
) -> np.ndarray:
    """McMahan et al.'s closed form: the weights of ``z`` and ``n`` (exact zeros where
    ``|z| <= l1``)."""
    z = np.asarray(z, dtype=np.float64)
    shrunk = soft_threshold(z, l1) if l1 else z
    # + 0.0 turns the -0.0 of a thresholded coordinate into 0.0
    return -shrunk / ((beta + np.sqrt(n)) / alpha + l2) + 0.0


@dataclass
class FTRLProximal(KeyedOptimizer):
    """FTRL-Proximal with per-coordinate learning rates, L1 and L2 (see the module docs).

    State: ``z``, ``n`` (per coefficient), ``z_b``, ``n_b`` (the intercept's) and
    ``steps``, ``t + 1`` of the last :meth:`apply` (the updates applied so far, which
    scales ``regularizer``'s share of the penalty; a shard that some steps' keys missed
    is right again at its next step). The epoch plays no part; ``lr_scale``
    (staleness-aware async mode) scales the gradient, so a stale gradient counts for
    that share of a fresh one.

    Parameters
    ----------
    alpha : float, default=0.1
        McMahan et al.'s ``alpha``: the per-coordinate learning rate is
        ``alpha / (beta + sqrt(n))``. Positive.
    beta : float, default=1.0
        McMahan et al.'s ``beta`` (they use 1), positive: it bounds the first steps.
    l1, l2 : float, default=0.0
        The penalty of McMahan et al.'s Algorithm 1, fixed: it weighs against the sum
        of all the steps' losses.
    regularizer : Regularizer, optional
        daskgd's penalty, once per step: after ``s`` steps the closed form uses
        ``l1 + s * regularizer.l1`` and ``l2 + s * regularizer.l2`` (see the module
        docs). The intercept is never penalised.
    fit_intercept : bool, default=True
        When False, the intercept stays at its initial value.
    """

    alpha: float = 0.1
    beta: float = 1.0
    l1: float = 0.0
    l2: float = 0.0
    regularizer: Regularizer = field(default_factory=Regularizer)
    fit_intercept: bool = True
    name: ClassVar[str] = "ftrl"

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"ftrl's {name} must be a positive finite number, got {v!r}")
        for name in ("l1", "l2"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"ftrl's {name} must be a finite number >= 0, got {v!r}")

    def fields(self) -> dict[str, str]:
        """``z``, ``n``, ``z_b``, ``n_b`` and ``steps``."""
        return {"z": "coef", "n": "coef", "z_b": "bias", "n_b": "bias", "steps": "scalar"}

    def penalty(self, state: dict[str, np.ndarray]) -> tuple[float, float]:
        """The ``(l1, l2)`` of the closed form now: the fixed ones plus ``steps`` times
        the regularizer's."""
        steps = float(state["steps"])
        return self.l1 + steps * self.regularizer.l1, self.l2 + steps * self.regularizer.l2

    def _start(self, state, params):
        if params is not None:
            # with n = 0 the closed form inverts: the z whose weight is the given one
            w, b = params[:-1], params[-1]
            state["z"][...] = -(w * (self.beta / self.alpha + self.l2) + np.sign(w) * self.l1)
            state["z_b"][...] = -b * (self.beta / self.alpha)

    def _coef(self, state, rows):
        l1, l2 = self.penalty(state)
        return _weights(state["z"][rows], state["n"][rows], self.alpha, self.beta, l1, l2)

    def _bias(self, state):
        return _weights(state["z_b"], state["n_b"], self.alpha, self.beta, 0.0, 0.0)

    def _step(self, z, n, w, g):
        """New ``z`` and ``n`` of coordinates with weights ``w`` and gradient ``g``."""
        n_new = n + g * g
        sigma = (np.sqrt(n_new) - np.sqrt(n)) / self.alpha
        return z + g - sigma * w, n_new

    def _update(self, state, keys, grad, grad_b, t, epoch, lr_scale):
        # the gradient was computed at the weights of the steps so far (the penalty of t)
        state["steps"][()] = float(t)
        if lr_scale != 1.0:
            grad = grad * lr_scale
            grad_b = grad_b * lr_scale
        if keys.size:
            z = np.asarray(state["z"][keys], dtype=np.float64)
            n = np.asarray(state["n"][keys], dtype=np.float64)
            l1, l2 = self.penalty(state)
            w = _weights(z, n, self.alpha, self.beta, l1, l2)
            state["z"][keys], state["n"][keys] = self._step(z, n, w, grad)
        if self.fit_intercept:
            w_b = self._bias(state)
            state["z_b"][...], state["n_b"][...] = self._step(
                state["z_b"], state["n_b"], w_b, grad_b
            )
        state["steps"][()] = t + 1.0
