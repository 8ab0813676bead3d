"""The GLM families: a Tweedie power and link as the engine's loss, scikit-learn's solver
names as daskgd's optimizers, the unit deviance behind ``score``, and the GLMs' declared
parameters (:mod:`daskgd.sklearn.glm` holds the estimators)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import dask.array as da
import numpy as np

from daskgd.sklearn.params import (
    BOOL,
    CHECKPOINT,
    NON_NEGATIVE,
    POSITIVE_INT,
    TOL,
    VERBOSE,
    Rule,
    one_of,
    resolve_optimizer,
)

__all__ = [
    "GLM_PARAMS",
    "POWER",
    "SOLVERS",
    "family_loss",
    "power_ok",
    "solver_optimizer",
    "unit_deviance",
]

#: scikit-learn's solver names, and daskgd's, as daskgd's optimizers ("auto" is resolved)
SOLVERS = {"auto": "auto", "lbfgs": "lbfgs", "newton": "newton", "newton-cholesky": "newton"}


def power_ok(v: Any) -> bool:
    return (
        isinstance(v, numbers.Real)
        and not isinstance(v, bool)
        and math.isfinite(float(v))
        and (float(v) == 0.0 or float(v) >= 1.0)
    )


#: The GLMs' parameters (scikit-learn's, and daskgd's cluster and checkpoint settings).
GLM_PARAMS: dict[str, Rule] = {
    "alpha": NON_NEGATIVE,
    "fit_intercept": BOOL,
    "solver": one_of(*SOLVERS),
    "max_iter": POSITIVE_INT,
    "tol": TOL,
    "warm_start": BOOL,
    "verbose": VERBOSE,
    "checkpoint": CHECKPOINT,
    "checkpoint_every": POSITIVE_INT,
}


def solver_optimizer(solver: str, alpha: float) -> str:
    """daskgd's optimizer for a GLM's ``solver``: scikit-learn's ``"newton-cholesky"`` is
    ``"newton"``; ``"auto"`` is the estimators' rule (:func:`resolve_optimizer`) for a
    smooth, full-batch sync fit."""
    name = SOLVERS[solver]
    if name != "auto":
        return name
    return resolve_optimizer({"optimizer": "auto", "mode": "sync", "batch_size": None}, alpha, 0.0)


def family_loss(power: float, link: str = "auto") -> tuple[str, str]:
    """The engine's loss and the link for a Tweedie ``power`` and ``link``.

    ``power=0`` (the normal distribution) with the identity link is least squares
    (``squared_error``); 1 is ``poisson``, 2 ``gamma``, any other power >= 1 ``tweedie``,
    all with the log link.

    Raises
    ------
    ValueError
        ``power`` in (0, 1) (no Tweedie distribution exists there) or negative, or a link
        that daskgd does not offer with that power.
    """
    if not power_ok(power):
        raise ValueError(
            f"power must be 0 (normal: least squares) or >= 1 (1: Poisson, in (1, 2): "
            f"compound Poisson-Gamma, 2: Gamma, 3: inverse Gaussian); got {power!r}. No "
            "Tweedie distribution has a power in (0, 1), and daskgd does not offer the "
            "negative powers"
        )
    p = float(power)
    if link not in ("auto", "log", "identity"):
        raise ValueError(f"link must be one of ('auto', 'log', 'identity'), got {link!r}")
    if p == 0.0:
        if link == "log":
            raise ValueError(
                "link='log' with power=0 (a normal distribution with a log link) is not "
                "offered; use link='identity' (or 'auto'): least squares"
            )
        return "squared_error", "identity"
    if link == "identity":
        raise ValueError(
            f"link='identity' takes power=0 only (least squares); power={p} uses the log "
            "link (link='log' or 'auto'), which keeps the predicted mean positive"
        )
    return ("poisson" if p == 1.0 else "gamma" if p == 2.0 else "tweedie"), "log"


def unit_deviance(y: Any, mu: Any, power: float) -> Any:
    """The Tweedie unit deviance ``d(y, mu)`` (scikit-learn's), for numpy or dask arrays."""
    xp: Any = da if isinstance(y, da.Array) or isinstance(mu, da.Array) else np
    p = float(power)
    if p == 0.0:
        return (y - mu) ** 2
    if p == 1.0:
        pos = y > 0
        ylogy = xp.where(pos, y * xp.log(xp.where(pos, y, 1.0) / mu), 0.0)
        return 2.0 * (ylogy - y + mu)
    if p == 2.0:
        return 2.0 * (xp.log(mu / y) + y / mu - 1.0)
    first = xp.maximum(y, 0.0) ** (2.0 - p) / ((1.0 - p) * (2.0 - p))
    return 2.0 * (first - y * mu ** (1.0 - p) / (1.0 - p) + mu ** (2.0 - p) / (2.0 - p))


#: TweedieRegressor's ``power``
POWER = Rule(power_ok, "0 or a number >= 1 (no Tweedie power lies in (0, 1))")
