"""The log-link GLM families: Poisson, Gamma and Tweedie half deviances, ``mu = exp(p)``.

As scikit-learn's ``HalfPoissonLoss``, ``HalfGammaLoss`` and ``HalfTweedieLoss`` (log
link), without their terms free of the margin ``p``: the values differ from scikit-learn's
by a function of ``y`` alone, the derivatives agree. Plain numpy, as the rest of
:mod:`daskgd.objective`.
"""

from __future__ import annotations

import numpy as np

from daskgd.objective.loss_base import Loss

__all__ = ["GAMMA", "POISSON", "Gamma", "Poisson", "Tweedie", "check_power"]


def check_power(power: float) -> float:
    """Return the Tweedie ``power`` as a float, or raise ``ValueError`` when no family has it.

    The ``tweedie`` loss takes ``power >= 1`` (1: Poisson, 2: Gamma, between: compound
    Poisson-Gamma, 3: inverse Gaussian). Power 0, the normal distribution, is the loss
    ``squared_error``; no Tweedie distribution has a power strictly between 0 and 1.

    Examples
    --------
    >>> check_power(1.5)
    1.5
    """
    try:
        value = float(power)
    except (TypeError, ValueError):
        raise ValueError(f"power must be a number, got {power!r}") from None
    if value == 0.0:
        raise ValueError(
            "power=0 is the normal distribution: use loss='squared_error' (identity link) "
            "instead of loss='tweedie'"
        )
    if not (np.isfinite(value) and value >= 1.0):
        raise ValueError(
            f"the Tweedie power must be 0 (loss='squared_error') or >= 1, got {power!r}; "
            "no Tweedie distribution has a power in (0, 1)"
        )
    return value


def _first_bad(bad: np.ndarray, y: np.ndarray, name: str, what: str, loss: str) -> None:
    if np.any(bad):
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must be {what} for loss {loss!r}; found {y[first]!r} at row {first}. "
            "The log-link losses model counts, amounts or rates: check the target column."
        )


def _times(y: np.ndarray, e: np.ndarray) -> np.ndarray:
    """``y * e`` with ``0 * inf = 0``: a zero target has no term, however large ``e``."""
    with np.errstate(invalid="ignore"):
        return np.where(y != 0.0, y * e, 0.0)


class _LogLink(Loss):
    """A log-link family: predictions ``mu = exp(p)``.

    Its curvature is unbounded (``l''`` grows like a power of ``mu``); :attr:`curvature`
    is 1, the scale of the other losses, for first-order step sizes, not a bound.
    """

    def link(self, margin: np.ndarray) -> np.ndarray:
        """Predicted means ``exp(margin)``."""
        with np.errstate(over="ignore"):
            return np.exp(margin)

    def check_targets(self, y, *, multinomial=False, n_classes=0, name="y", power=1.5):
        y = np.asarray(y)
        if self._strict(power):
            _first_bad(~(y > 0), y, name, "positive", self.name)
        else:
            _first_bad(~(y >= 0), y, name, "non-negative", self.name)

    def _strict(self, power: float) -> bool:
        raise NotImplementedError  # pragma: no cover - every family below defines it


class Poisson(_LogLink):
    """Half Poisson deviance ``exp(p) - y p`` (up to terms in ``y``); targets ``y >= 0``."""

    name = "poisson"
    code = 5

    def _strict(self, power):
        return False

    def reference(self, p, y, epsilon=0.1, power=1.5):
        with np.errstate(over="ignore"):
            mu = np.exp(p)
        return mu - _times(y, p), mu - y

    def reference_hessian(self, p, y, epsilon=0.1, power=1.5):
        with np.errstate(over="ignore"):
            return np.exp(p)


class Gamma(_LogLink):
    """Half Gamma deviance ``p + y exp(-p)`` (up to terms in ``y``); targets ``y > 0``."""

    name = "gamma"
    code = 6

    def _strict(self, power):
        return True

    def reference(self, p, y, epsilon=0.1, power=1.5):
        with np.errstate(over="ignore"):
            t = _times(y, np.exp(-p))
        return p + t, 1.0 - t

    def reference_hessian(self, p, y, epsilon=0.1, power=1.5):
        with np.errstate(over="ignore"):
            return _times(y, np.exp(-p))


class Tweedie(_LogLink):
    """Half Tweedie deviance of power ``r >= 1`` (up to terms in ``y``), log link.

    ``exp((2-r) p)/(2-r) - y exp((1-r) p)/(1-r)``; ``r = 1`` is :class:`Poisson`, ``r = 2``
    :class:`Gamma`. Targets ``y >= 0`` for ``r < 2``, ``y > 0`` from 2 on. For ``r > 2``
    the loss is not convex in ``p`` where ``(r-2) mu > (r-1) y``: its second derivative is
    negative there (as scikit-learn's ``HalfTweedieLoss``).
    """

    name = "tweedie"
    code = 7

    def _strict(self, power):
        return check_power(power) >= 2.0

    def reference(self, p, y, epsilon=0.1, power=1.5):
        r = check_power(power)
        if r == 1.0:
            return POISSON.reference(p, y)
        if r == 2.0:
            return GAMMA.reference(p, y)
        f, e, lead = _tweedie_parts(p, r)
        # a bracket of 0 (y = 0 and exp(p) underflowed) times an infinite f is 0
        loss = _times(np.where(lead, 1.0 / (2.0 - r) - y * e / (1.0 - r),
                               e / (2.0 - r) - y / (1.0 - r)), f)  # fmt: skip
        return loss, _times(np.where(lead, 1.0 - y * e, e - y), f)

    def reference_hessian(self, p, y, epsilon=0.1, power=1.5):
        r = check_power(power)
        if r == 1.0:
            return POISSON.reference_hessian(p, y)
        if r == 2.0:
            return GAMMA.reference_hessian(p, y)
        f, e, lead = _tweedie_parts(p, r)
        return _times(np.where(lead, (2.0 - r) - (1.0 - r) * y * e,
                               (2.0 - r) * e - (1.0 - r) * y), f)  # fmt: skip


def _tweedie_parts(p: np.ndarray, r: float):
    """The Tweedie terms ``exp((2-r) p)`` and ``y exp((1-r) p)`` factored so that neither
    factor's companion overflows: for ``p >= 0`` (``lead``) ``f = exp((2-r) p)`` and
    ``e = exp(-p)``, else ``f = exp((1-r) p)`` and ``e = exp(p)``; ``e <= 1`` either way,
    so a term that overflows makes ``f`` infinite times a finite bracket, never inf - inf.
    """
    p = np.asarray(p, dtype=np.float64)
    lead = p >= 0.0
    with np.errstate(over="ignore"):
        f = np.exp(np.where(lead, 2.0 - r, 1.0 - r) * p)
        e = np.exp(-np.abs(p))
    return f, e, lead


POISSON, GAMMA = Poisson(), Gamma()
