"""Per-coordinate ("key-value") update rules for sparse models: SGD with lazy elastic net,
lazy AdaGrad, lazy Adam, and FTRL-Proximal (:mod:`daskgd.objective.ftrl`).

Each rule updates only the coefficients a gradient touched, in O(len(keys)) per step
(the interface is :class:`~daskgd.objective.keyed_base.KeyedOptimizer`). The objective
and its penalty are those of :mod:`daskgd.objective.regularizers`; the gradient a rule
receives is the mean over the batch's rows, zero at the keys not given.

What "lazy" means differs, and is exact in each case:

- ``sgd`` applies the penalty to *every* coefficient at *every* step, exactly as the
  dense :class:`~daskgd.objective.optimizers.Optimizer` does (L2 in the gradient, L1 as
  a soft-threshold after the step), without touching the untouched ones: the L2 shrink
  is a global weight scale (``w = scale * v``, as scikit-learn's SGD keeps it), and the
  L1 thresholds an untouched coefficient missed are one cumulative sum (in units of
  ``v``) plus, per coefficient, the value of that sum when it was last brought up to
  date; soft-thresholds compose by adding their thresholds, so the catch-up is exact.
  Its iterates equal the dense rule's, step for step, under any schedule.
- ``adagrad`` and ``adam`` are the lazy rules of sparse frameworks (PyTorch's
  ``SparseAdam``, TensorFlow's ``LazyAdam`` and sparse AdaGrad): a step changes the
  rows of the touched keys only, penalty included: the L2 term ``l2 * w`` is added to
  the gradient of the touched keys and the L1 soft-threshold is applied to them, with
  their per-coordinate step size; an untouched coefficient and its accumulators stay as
  they are. With every key touched at every step they are the dense
  :class:`~daskgd.objective.optimizers.AdaGrad` / :class:`~daskgd.objective.optimizers.Adam`
  exactly. A coefficient touched at a fraction ``p`` of the steps feels a penalty about
  ``p`` times as strong as the objective's.
- ``ftrl`` keeps McMahan et al.'s per-coordinate sums and computes the weights in closed
  form, the penalty of all the steps so far included, so L1 and L2 need no catch-up
  (see :mod:`daskgd.objective.ftrl`).

:data:`KEYED_OPTIMIZERS` is the name -> class registry; :func:`make_keyed_optimizer` builds
one from plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from daskgd.objective.ftrl import FTRLProximal
from daskgd.objective.keyed_base import KeyedOptimizer, row_blocks
from daskgd.objective.regularizers import Regularizer, soft_threshold
from daskgd.objective.schedules import Schedule

__all__ = [
    "KEYED_OPTIMIZERS",
    "RESCALE_BELOW",
    "FTRLProximal",
    "KeyedAdaGrad",
    "KeyedAdam",
    "KeyedOptimizer",
    "KeyedSGD",
    "make_keyed_optimizer",
]

#: ``sgd`` folds its weight scale into the coefficients (an O(d) pass) when the scale's
#: magnitude falls below this, as scikit-learn's SGD does; with ``lr * l2 = 1e-3`` that is
#: once every ~20,000 steps.
RESCALE_BELOW = 1e-9


def _rows(x: np.ndarray, ndim: int) -> np.ndarray:
    """``x`` (one value per row) shaped to broadcast over rows of ``ndim`` dimensions."""
    return x if ndim == 1 else x[:, None]


@dataclass
class KeyedSGD(KeyedOptimizer):
    """SGD whose elastic-net penalty is applied lazily and exactly (see the module docs).

    State: ``v`` (coefficients over the scale), ``b`` (intercept), ``scale``; with L1 also
    ``l1_total`` (the L1 thresholds of all steps so far, in units of ``v``) and
    ``l1_seen`` (its value when each row was last brought up to date). The coefficients
    are ``scale * soft_threshold(v, l1_total - l1_seen)``. A step costs O(len(keys));
    when ``|scale|`` falls below :data:`RESCALE_BELOW` one O(d) pass folds it into ``v``.

    Parameters
    ----------
    schedule : Schedule
        The learning-rate schedule.
    regularizer : Regularizer
        The penalty (``alpha``, ``l1_ratio``); the intercept is not penalised.
    fit_intercept : bool, default=True
        When False, the intercept stays at its initial value.
    """

    schedule: Schedule
    regularizer: Regularizer = field(default_factory=Regularizer)
    fit_intercept: bool = True
    name: ClassVar[str] = "sgd"

    def fields(self) -> dict[str, str]:
        """``v``, ``b``, ``scale``, and with L1 ``l1_total`` and ``l1_seen``."""
        out = {"v": "coef", "b": "bias", "scale": "scalar"}
        if self.regularizer.l1:
            out.update(l1_total="scalar", l1_seen="stamp")
        return out

    def _start(self, state, params):
        state["scale"][()] = 1.0
        if params is not None:
            state["v"][...] = params[:-1]
            state["b"][...] = params[-1]

    def _coef(self, state, rows):
        v = np.asarray(state["v"][rows], dtype=np.float64)
        if self.regularizer.l1:
            lag = float(state["l1_total"]) - state["l1_seen"][rows]
            v = soft_threshold(v, _rows(lag, v.ndim))
        return v * float(state["scale"])

    def _bias(self, state):
        return state["b"]

    def _rescale(self, state: dict[str, np.ndarray]) -> None:
        """Fold the scale and the pending L1 thresholds into ``v`` (O(d), in blocks)."""
        v = state["v"]
        for rows in row_blocks(v.shape[0]):
            v[rows] = self._coef(state, rows)
        if self.regularizer.l1:
            state["l1_seen"].fill(0.0)
            state["l1_total"][()] = 0.0
        state["scale"][()] = 1.0

    def _update(self, state, keys, grad, grad_b, t, epoch, lr_scale):
        lr = self.schedule(t, epoch) * lr_scale
        reg = self.regularizer
        v = state["v"]
        if reg.l1:
            # bring the touched rows up to date: the thresholds they missed
            total, seen = float(state["l1_total"]), state["l1_seen"]
            lag = total - seen[keys]
            v[keys] = soft_threshold(np.asarray(v[keys], dtype=np.float64), _rows(lag, v.ndim))
            seen[keys] = total
        # the L2 part of the dense step, (1 - lr l2) w, for every coefficient at once
        shrink = 1.0 - lr * reg.l2
        if abs(float(state["scale"]) * shrink) < RESCALE_BELOW:
            self._rescale(state)
            if abs(shrink) < RESCALE_BELOW:
                v *= shrink
                shrink = 1.0
        scale = float(state["scale"]) * shrink
        state["scale"][()] = scale
        if keys.size:
            v[keys] -= (lr / scale) * grad
        if self.fit_intercept:
            state["b"] -= lr * grad_b
        if reg.l1:
            # this step's soft-threshold, lr * l1 on w, is lr * l1 / |scale| on v: the
            # touched rows get it now, the others when next brought up to date
            step = lr * reg.l1 / abs(scale)
            total = float(state["l1_total"]) + step
            state["l1_total"][()] = total
            if keys.size:
                v[keys] = soft_threshold(np.asarray(v[keys], dtype=np.float64), step)
                state["l1_seen"][keys] = total


@dataclass
class _Penalised(KeyedOptimizer):
    """The fields and the warm start shared by the lazy AdaGrad and Adam."""

    schedule: Schedule
    regularizer: Regularizer = field(default_factory=Regularizer)
    fit_intercept: bool = True

    def _start(self, state, params):
        if params is not None:
            state["w"][...] = params[:-1]
            state["b"][...] = params[-1]

    def _coef(self, state, rows):
        return np.asarray(state["w"][rows], dtype=np.float64)

    def _bias(self, state):
        return state["b"]

    def _step_keys(self, state, keys, grad, lr, t):
        """The penalised step at ``keys``: the rule's direction and per-coordinate scale
        (:meth:`_direction`), then the L1 soft-threshold, as the dense rule's ``apply``."""
        w = state["w"]
        wk = np.asarray(w[keys], dtype=np.float64)
        g = grad + self.regularizer.l2 * wk if self.regularizer.l2 else grad
        direction, scale = self._direction(state, keys, g, t)
        new = wk - lr * scale * direction
        if self.regularizer.l1:
            new = soft_threshold(new, lr * scale * self.regularizer.l1)
        w[keys] = new

    def _direction(self, state, keys, g, t):
        raise NotImplementedError


@dataclass
class KeyedAdaGrad(_Penalised):
    """Lazy AdaGrad: per-coordinate step ``lr / (sqrt(G) + eps)`` at the touched keys only.

    The formula of the dense :class:`~daskgd.objective.optimizers.AdaGrad` (``G`` the sum
    of the squared gradients, penalty's L2 gradient included; ``eps`` added to
    ``sqrt(G)``; L1 soft-threshold ``lr * l1 / (sqrt(G) + eps)`` after the step), applied
    to the rows of the touched keys; untouched rows do not change (see the module docs).
    State: ``w``, ``b``, ``G``, ``G_b``.

    Parameters
    ----------
    schedule, regularizer, fit_intercept
        As for :class:`KeyedSGD`.
    eps : float, default=1e-8
        Added to the denominator.
    """

    eps: float = 1e-8
    name: ClassVar[str] = "adagrad"

    def fields(self) -> dict[str, str]:
        """``w``, ``b``, ``G`` and ``G_b``."""
        return {"w": "coef", "b": "bias", "G": "coef", "G_b": "bias"}

    def _direction(self, state, keys, g, t):
        G = state["G"]
        acc = G[keys] + g * g
        G[keys] = acc
        return g, 1.0 / (np.sqrt(acc) + self.eps)

    def _update(self, state, keys, grad, grad_b, t, epoch, lr_scale):
        lr = self.schedule(t, epoch) * lr_scale
        if keys.size:
            self._step_keys(state, keys, grad, lr, t)
        if self.fit_intercept:
            state["G_b"] += grad_b * grad_b
            state["b"] -= lr * (1.0 / (np.sqrt(state["G_b"]) + self.eps)) * grad_b


@dataclass
class KeyedAdam(_Penalised):
    """Lazy Adam (as PyTorch's ``SparseAdam``, TensorFlow's ``LazyAdam``): the moments of
    the touched keys only, bias-corrected by the global step count ``t + 1``.

    The formula of the dense :class:`~daskgd.objective.optimizers.Adam` (``eps`` added to
    ``sqrt`` of the bias-corrected second moment; penalty as in :class:`KeyedAdaGrad`).
    State: ``w``, ``b``, ``m``, ``v``, ``m_b``, ``v_b``.

    Parameters
    ----------
    schedule, regularizer, fit_intercept
        As for :class:`KeyedSGD`.
    beta1, beta2 : float, default=0.9, 0.999
        Decay rates of the moment estimates, in [0, 1).
    eps : float, default=1e-8
        Added to the denominator.
    """

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    name: ClassVar[str] = "adam"

    def __post_init__(self) -> None:
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)!r}")

    def fields(self) -> dict[str, str]:
        """``w``, ``b``, the moments ``m`` and ``v``, and the intercept's ``m_b``, ``v_b``."""
        return {"w": "coef", "b": "bias", "m": "coef", "v": "coef", "m_b": "bias", "v_b": "bias"}

    def _moments(self, m, v, g, t):
        """Updated moments, and the bias-corrected direction and scale."""
        m = m * self.beta1 + (1 - self.beta1) * g
        v = v * self.beta2 + (1 - self.beta2) * g * g
        k = t + 1
        mhat = m / (1 - self.beta1**k)
        vhat = v / (1 - self.beta2**k)
        return m, v, mhat, 1.0 / (np.sqrt(vhat) + self.eps)

    def _direction(self, state, keys, g, t):
        m, v, mhat, scale = self._moments(state["m"][keys], state["v"][keys], g, t)
        state["m"][keys] = m
        state["v"][keys] = v
        return mhat, scale

    def _update(self, state, keys, grad, grad_b, t, epoch, lr_scale):
        lr = self.schedule(t, epoch) * lr_scale
        if keys.size:
            self._step_keys(state, keys, grad, lr, t)
        if self.fit_intercept:
            m, v, mhat, scale = self._moments(state["m_b"], state["v_b"], grad_b, t)
            state["m_b"][...] = m
            state["v_b"][...] = v
            state["b"] -= lr * scale * mhat


#: The keyed rules by name.
KEYED_OPTIMIZERS: dict[str, type[KeyedOptimizer]] = {
    cls.name: cls for cls in (KeyedSGD, KeyedAdaGrad, KeyedAdam, FTRLProximal)
}

_OPTIONS = {
    "sgd": (),
    "adagrad": ("eps",),
    "adam": ("beta1", "beta2", "eps"),
    "ftrl": ("beta", "l1", "l2"),
}


def make_keyed_optimizer(
    name: str,
    *,
    learning_rate: float,
    lr_schedule: str = "constant",
    power_t: float = 0.25,
    step_size: int = 10,
    gamma: float = 0.5,
    alpha: float = 0.0,
    l1_ratio: float = 0.0,
    fit_intercept: bool = True,
    options: dict[str, float] | None = None,
) -> KeyedOptimizer:
    """Build a keyed (per-coordinate) update rule from plain values.

    Parameters
    ----------
    name : {"sgd", "adagrad", "adam", "ftrl"}
        The rule (see the module docs for what each does with the penalty).
    learning_rate, lr_schedule, power_t, step_size, gamma
        The :class:`~daskgd.objective.schedules.Schedule`. For ``ftrl``,
        ``learning_rate`` is McMahan et al.'s ``alpha`` and the schedule must be
        ``constant`` (its per-coordinate rates are its own).
    alpha, l1_ratio
        The :class:`~daskgd.objective.regularizers.Regularizer` (for ``ftrl``: its
        penalty once per step, see :mod:`daskgd.objective.ftrl`).
    fit_intercept : bool
        Whether the intercept is learned.
    options : dict, optional
        Rule-specific settings: ``eps`` (adagrad, adam), ``beta1``/``beta2`` (adam),
        ``beta`` and McMahan et al.'s fixed ``l1`` and ``l2`` (ftrl). Unknown keys are an
        error.

    Raises
    ------
    ValueError
        On an unknown name or option, an out-of-range value, or settings that contradict
        each other.

    Examples
    --------
    >>> rule = make_keyed_optimizer("adagrad", learning_rate=0.1, alpha=1e-4)
    >>> state = rule.init_state(1000)
    >>> rule.apply(state, [3, 70], [0.5, -1.0], 0.2, t=0)
    >>> rule.weights(state, [3, 70, 71]).round(3).tolist()
    [-0.1, 0.1, 0.0]
    """
    if name not in KEYED_OPTIMIZERS:
        raise ValueError(
            f"unknown keyed optimizer {name!r}; choose one of: {', '.join(KEYED_OPTIMIZERS)}"
        )
    options = dict(options or {})
    unknown = set(options) - set(_OPTIONS[name])
    if unknown:
        allowed = ", ".join(_OPTIONS[name]) or "none"
        raise ValueError(
            f"keyed optimizer {name!r} takes no option(s) {sorted(unknown)}; allowed: {allowed}"
        )
    schedule = Schedule(lr_schedule, learning_rate, power_t, step_size, gamma)
    reg = Regularizer(alpha, l1_ratio)
    if name == "ftrl":
        if lr_schedule != "constant":
            raise ValueError(
                "keyed optimizer 'ftrl' sets its own per-coordinate learning rates: use "
                f"lr_schedule='constant' (learning_rate is its alpha), not {lr_schedule!r}"
            )
        return FTRLProximal(
            alpha=schedule.eta0, regularizer=reg, fit_intercept=fit_intercept, **options
        )
    cls: Any = KEYED_OPTIMIZERS[name]
    return cls(schedule, reg, fit_intercept, **options)
