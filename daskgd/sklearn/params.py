"""The estimators' parameters: declared constraints, checked once at ``fit``, and the
translation of scikit-learn's settings into the engine's.

Each estimator class declares ``_parameter_constraints`` (scikit-learn's convention): a dict
from parameter name to a :class:`Rule`; :func:`check_params` checks every one at the start
of ``fit``/``partial_fit``, before any data is read, and raises ``ValueError`` naming the
parameter, what it must be and the value it got.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskgd.objective import choose_optimizer
from daskgd.progress import progress_enabled

__all__ = [
    "Rule",
    "check_params",
    "engine_seed",
    "one_of",
    "resolve_optimizer",
    "sgd_extra",
    "sgd_penalty",
]

PENALTIES: dict[str | None, float | None] = {"l2": 0.0, "l1": 1.0, "elasticnet": None, None: 0.0}


@dataclass(frozen=True)
class Rule:
    """A constraint on one parameter: ``test(value)`` holds, else "``name`` must be
    ``expected``, got ``value``"."""

    test: Callable[[Any], bool]
    expected: str

    def check(self, name: str, value: Any) -> None:
        """Raise ``ValueError`` when ``value`` breaks the rule."""
        if not self.test(value):
            raise ValueError(f"{name} must be {self.expected}, got {value!r}")


def one_of(*values: Any, note: str = "") -> Rule:
    """A rule accepting exactly ``values`` (strings or None)."""

    def test(v: Any) -> bool:
        return (v is None or isinstance(v, str)) and v in values

    return Rule(test, f"one of {values}{note}")


def _real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and math.isfinite(float(v))


def _verbose(v: Any) -> bool:
    try:
        progress_enabled(v)
    except (TypeError, ValueError):
        return False
    return True


def _random_state(v: Any) -> bool:
    kinds = numbers.Integral | np.random.RandomState | np.random.Generator
    return v is None or isinstance(v, kinds)


POSITIVE_INT = Rule(lambda v: isinstance(v, numbers.Integral) and int(v) >= 1, "a positive integer")
TOL = Rule(lambda v: v is None or (_real(v) and float(v) >= 0), "None or a number >= 0")
BATCH_SIZE = Rule(
    lambda v: v is None or (isinstance(v, numbers.Integral) and int(v) >= 1),
    "None (full batch) or an integer >= 1",
)
STEP = Rule(
    lambda v: (isinstance(v, str) and v == "auto") or (_real(v) and float(v) > 0),
    "'auto' or a positive number",
)
NON_NEGATIVE = Rule(lambda v: _real(v) and float(v) >= 0, "a number >= 0")
POSITIVE = Rule(lambda v: _real(v) and float(v) > 0, "a positive number")
FRACTION = Rule(lambda v: _real(v) and 0 <= float(v) <= 1, "a number in [0, 1]")
OPEN_FRACTION = Rule(lambda v: _real(v) and 0 < float(v) < 1, "a number in (0, 1)")
BOOL = Rule(lambda v: isinstance(v, bool | np.bool_), "True or False")
VERBOSE = Rule(_verbose, "an integer >= 0 or 'auto'")
RANDOM_STATE = Rule(_random_state, "None, an int, a RandomState or a Generator")
PENALTY = one_of("l2", "l1", "elasticnet", None)
CLASS_WEIGHT = Rule(
    lambda v: v is None or isinstance(v, dict) or (isinstance(v, str) and v == "balanced"),
    "None, 'balanced' or a dict",
)
CHECKPOINT = Rule(lambda v: v is None or isinstance(v, str), "None or a Zarr path (str)")

#: the constraints every estimator shares
COMMON: dict[str, Rule] = {
    "fit_intercept": BOOL,
    "max_iter": POSITIVE_INT,
    "tol": TOL,
    "verbose": VERBOSE,
    "batch_size": BATCH_SIZE,
    "random_state": RANDOM_STATE,
    "warm_start": BOOL,
    "checkpoint": CHECKPOINT,
    "checkpoint_every": POSITIVE_INT,
}

#: the SGD estimators' own
SGD: dict[str, Rule] = {
    **COMMON,
    "penalty": PENALTY,
    "alpha": NON_NEGATIVE,
    "l1_ratio": FRACTION,
    "learning_rate": one_of(
        "constant",
        "invscaling",
        "step",
        note=" (scikit-learn's 'optimal' and 'adaptive' are not offered)",
    ),
    "eta0": STEP,
    "power_t": Rule(_real, "a number"),
    "early_stopping": BOOL,
    "validation_fraction": OPEN_FRACTION,
    "n_iter_no_change": POSITIVE_INT,
}


def check_params(estimator: Any) -> None:
    """Check every parameter of ``estimator`` against its class's ``_parameter_constraints``."""
    params = estimator.get_params(deep=False)
    for name, rule in type(estimator)._parameter_constraints.items():
        rule.check(name, params[name])


def sgd_penalty(penalty: str | None, alpha: float, l1_ratio: float) -> tuple[float, float]:
    """The engine's ``(alpha, l1_ratio)`` for scikit-learn's ``penalty`` (checked values)."""
    if penalty is None:
        return 0.0, 0.0
    ratio = PENALTIES[penalty]
    return float(alpha), float(l1_ratio if ratio is None else ratio)


def sgd_extra(est: Any) -> dict[str, Any]:
    """Engine options of the SGD estimators besides the objective."""
    extra: dict[str, Any] = {
        "lr_schedule": est.learning_rate,
        "n_iter_no_change": int(est.n_iter_no_change),
    }
    if est.learning_rate == "invscaling":
        extra["power_t"] = float(est.power_t)
    if getattr(est, "loss", None) == "huber":
        extra["epsilon"] = float(est.epsilon)
    return extra


def resolve_optimizer(
    params: dict[str, Any],
    alpha: float,
    l1_ratio: float,
    *,
    n_features: int | None = None,
    multinomial: bool = False,
) -> str:
    """``optimizer="auto"``: :func:`daskgd.objective.choose_optimizer`'s rule, the one
    ``daskgd.fit`` applies: Newton for a full-batch sync fit of one coefficient vector with
    at most :data:`~daskgd.objective.NEWTON_MAX_FEATURES` parameters, else L-BFGS where it
    applies (a smooth objective, full-batch sync mode), else the proximal first-order
    ``sgd``.

    Without ``n_features`` (the estimators call it before the data is opened) a full-batch
    sync fit gets ``"auto"``, which the engine resolves by the same rule once it knows the
    data's width; a fit that is not full-batch sync gets ``"sgd"`` at once.
    """
    optimizer = params.get("optimizer", "sgd")
    if optimizer != "auto":
        return str(optimizer)
    smooth = not (alpha and l1_ratio)
    full_batch_sync = (
        params.get("mode", "sync") == "sync"
        and params.get("batch_size") is None
        and params.get("sync_quorum") is None
    )
    if n_features is None:
        return "auto" if full_batch_sync else choose_optimizer(1, smooth, False, multinomial)
    return choose_optimizer(int(n_features) + 1, smooth, full_batch_sync, multinomial)


def engine_seed(random_state: Any) -> int | None:
    """An int seed for the engine (a RandomState draws one, as scikit-learn would)."""
    if random_state is None or isinstance(random_state, numbers.Integral):
        return None if random_state is None else int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    return int(random_state.integers(np.iinfo(np.int32).max))
