"""One typed, validated settings object for a fit, and what is derived from it.

:class:`FitSettings` holds every setting ``fit`` takes (same names, same defaults). It is
checked once, when it is made: each field against the declared :data:`CONSTRAINTS`, then
the rules that tie settings together (:meth:`FitSettings.check_rules`). The parameter
server's job settings (:meth:`~FitSettings.job_config`), the optimizer's
(:meth:`~FitSettings.optimizer_spec`) and the training tasks' (:meth:`~FitSettings.worker_spec`)
are derived from it here and nowhere else; the parameter server's own rules
(:func:`~daskgd.parameter_server.make_settings`, :func:`~daskgd.parameter_server.check_quorum`)
are called, not copied.

Adding a setting: a field here (with its default and constraint), the parameter in
``fit``/``fit_async`` (:mod:`daskgd.driver.api`, with its documentation) and the line
that uses it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from daskgd.checkpoint import local_path
from daskgd.driver.constraints import (
    ANY,
    CALLABLE,
    MAPPING,
    NONE,
    SECONDS,
    Boolean,
    Constraint,
    Delays,
    Integer,
    Options,
    PathLike,
    Real,
    validate,
)
from daskgd.driver.servers import check_servers
from daskgd.errors import InvalidSettingError
from daskgd.objective import (
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    choose_optimizer,
    curvature_bound,
    make_keyed_optimizer,
)
from daskgd.parameter_server import MODES, make_settings

__all__ = ["CONSTRAINTS", "FEATURES_ONLY", "KEYED_ONLY", "OVR_LOSSES", "FitSettings"]

#: The binary losses a one-vs-rest fit trains, one column per class.
OVR_LOSSES = ("hinge", "squared_hinge", "log_loss")

#: Optimizers that only key-value (sparse, mini-batch) fits run (:mod:`daskgd.driver.keyed`).
KEYED_ONLY = ("ftrl",)

#: Optimizers of feature-partitioned fits only (``partition="features"``): the block method.
FEATURES_ONLY = ("cocoa",)

#: ``placement``: which rows each worker trains on (see :mod:`daskgd.driver.placement`).
PLACEMENTS = ("auto", "balanced", "locality", "resources", "latency")

#: ``partition``: how the data is split between the training tasks.
PARTITIONS = ("rows", "features", "grid")

#: ``reduction``: how a feature-partitioned fit sums the blocks' partial margins.
REDUCTIONS = ("auto", "coordinator", "tree")

_BOOL = (Boolean(),)
_TOL = (NONE, Real(0.0))

#: The kinds of value each setting takes (a value must match one of them).
CONSTRAINTS: dict[str, tuple[Constraint, ...]] = {
    "loss": (Options(tuple(sorted(LOSSES))),),
    "mode": (Options(MODES),),
    "optimizer": (Options((*OPTIMIZERS, *KEYED_ONLY, *FEATURES_ONLY, "auto")),),
    "learning_rate": (Options(("auto",)), Real(0.0, open=True)),
    "lr_schedule": (Options(SCHEDULES),),
    "power_t": (Real(),),
    "step_size": (Integer(1),),
    "gamma": (Real(0.0, open=True),),
    "optimizer_options": (NONE, MAPPING),
    "batch_size": (NONE, Integer(1)),
    "max_epochs": (Integer(1),),
    "tol": _TOL,
    "n_iter_no_change": (Integer(1),),
    "gtol": _TOL,
    "gtol_rel": _TOL,
    "max_time": _TOL,
    "alpha": (Real(0.0),),
    "l1_ratio": (Real(0.0, 1.0),),
    "fit_intercept": _BOOL,
    "epsilon": (Real(0.0),),
    "power": (Real(1.0),),
    "n_classes": (NONE, Integer(2)),
    "coef_init": (ANY,),
    "intercept_init": (ANY,),
    "max_staleness": (NONE, Integer(0)),
    "staleness_lr": _BOOL,
    "n_workers": (NONE, Integer(1)),
    "n_servers": (Options(("auto",)), Integer(0)),
    "placement": (Options(PLACEMENTS),),
    "partition": (Options(PARTITIONS),),
    "reduction": (Options(REDUCTIONS),),
    "random_state": (NONE, Integer(0)),
    "progress": _BOOL,
    "callback": (NONE, CALLABLE),
    "poll_interval": (SECONDS,),
    "out_of_core": _BOOL,
    "callback_params": _BOOL,
    "sync_quorum": (NONE, Integer(1)),
    "worker_timeout": (SECONDS,),
    "member_timeout": (SECONDS,),
    "checkpoint": (NONE, PathLike()),
    "checkpoint_every": (Integer(1),),
    "checkpoint_interval": (NONE, SECONDS),
    "resume": _BOOL,
    "one_vs_rest": _BOOL,
    "labels_checked": _BOOL,
    "delay": (NONE, Delays()),
}


@dataclass(frozen=True)
class FitSettings:
    """Every setting of a fit, checked when made.

    The fields are ``fit``'s parameters, with its defaults (see :func:`daskgd.fit` for
    what each means), and three that ``fit`` does not take:

    Attributes
    ----------
    one_vs_rest : bool, default=False
        For the estimators: with ``n_classes=k > 2`` and a binary loss
        (:data:`OVR_LOSSES`), k binary problems "class j against the rest" trained as one
        job: ``y`` holds class indices, the parameters have one column per class. The
        objective is the sum of the k binary objectives, which are separable, so each
        column follows its own binary problem; the history rows carry each class's
        objective as ``class_loss``.
    labels_checked : bool, default=False
        The caller (an estimator) checked the labels already: a one-vs-rest target of a
        ``partial_fit`` batch may hold one class only.
    delay : dict of int to float, optional
        For tests of stragglers: the training task of each listed rank sleeps that many
        seconds before every push, wherever it runs. It only slows a fit down.
    seed : int
        Derived: ``random_state``, or one drawn when that is None.

    Raises
    ------
    InvalidSettingError
        (a ``ValueError`` and a ``TypeError``) On a value of the wrong kind, or settings
        that contradict each other; the message names the setting.
    """

    loss: str = "squared_error"
    mode: str = "sync"
    optimizer: str = "sgd"
    learning_rate: float | str = "auto"
    lr_schedule: str = "constant"
    power_t: float = 0.25
    step_size: int = 10
    gamma: float = 0.5
    optimizer_options: Mapping[str, float] | None = None
    batch_size: int | None = None
    max_epochs: int = 100
    tol: float | None = 1e-4
    n_iter_no_change: int = 5
    gtol: float | None = None
    gtol_rel: float | None = None
    max_time: float | None = None
    alpha: float = 0.0
    l1_ratio: float = 0.0
    fit_intercept: bool = True
    epsilon: float = 0.1
    power: float = 1.5
    n_classes: int | None = None
    coef_init: Any = None
    intercept_init: Any = None
    max_staleness: int | None = None
    staleness_lr: bool = False
    n_workers: int | None = None
    n_servers: int | str = "auto"
    placement: str = "auto"
    partition: str = "rows"
    reduction: str = "auto"
    random_state: int | None = None
    progress: bool = False
    callback: Callable[[dict[str, Any]], Any] | None = None
    poll_interval: float = 0.05
    out_of_core: bool = False
    callback_params: bool = False
    sync_quorum: int | None = None
    worker_timeout: float = 60.0
    member_timeout: float = 600.0
    checkpoint: str | os.PathLike[str] | None = None
    checkpoint_every: int = 10
    checkpoint_interval: float | None = None
    resume: bool = False
    one_vs_rest: bool = False
    labels_checked: bool = False
    delay: Mapping[int, float] | None = None
    seed: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.init:
                validate(f.name, getattr(self, f.name), CONSTRAINTS[f.name])
        # plain Python values from here on (numpy integers and bools are accepted)
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.bool_):
                object.__setattr__(self, f.name, bool(v))
            elif isinstance(v, np.integer):
                object.__setattr__(self, f.name, int(v))
            elif isinstance(v, np.floating):
                object.__setattr__(self, f.name, float(v))
        if self.checkpoint is not None:
            try:
                path = os.fspath(local_path(self.checkpoint))
            except ValueError as exc:
                raise InvalidSettingError(str(exc)) from None
            object.__setattr__(self, "checkpoint", path)
        if self.random_state is None:
            seed = int(np.random.default_rng().integers(2**63 - 1))
        else:
            seed = int(self.random_state)
        object.__setattr__(self, "seed", seed)
        self.check_rules()

    # -- the rules that tie settings together, each written once ------------------------------
    def check_rules(self) -> None:
        """Refuse settings that contradict each other.

        The rules the parameter server enforces too are its own, called here:
        :func:`~daskgd.parameter_server.make_settings` (``ssp`` needs ``max_staleness``,
        ``sync_quorum`` is for sync mode, L-BFGS needs a smooth objective...).
        """
        if self.one_vs_rest:
            if not (self.n_classes is not None and self.n_classes > 2) or (
                self.loss not in OVR_LOSSES
            ):
                raise InvalidSettingError(
                    f"one-vs-rest takes n_classes > 2 and a binary loss "
                    f"({', '.join(OVR_LOSSES)}); got n_classes={self.n_classes!r}, "
                    f"loss={self.loss!r}"
                )
            if self.checkpoint is not None:
                raise InvalidSettingError("checkpoint= is not available for one-vs-rest fits")
        elif self.n_classes is not None and self.loss != "log_loss":
            raise InvalidSettingError(
                "n_classes (an integer >= 2) is for the multinomial log_loss only"
            )
        if self.optimizer == "lbfgs" and (self.mode != "sync" or self.batch_size is not None):
            raise InvalidSettingError(
                "optimizer='lbfgs' needs mode='sync' and full batches (batch_size=None): its "
                "line search compares exact losses of the whole data"
            )
        if self.optimizer == "newton":
            if self.mode != "sync" or self.batch_size is not None or self.sync_quorum:
                raise InvalidSettingError(
                    "optimizer='newton' needs mode='sync', full batches (batch_size=None) "
                    "and every worker in every round (sync_quorum=None): each round "
                    "evaluates the exact loss, gradient and Hessian of the whole data"
                )
            if self.n_columns is not None:
                raise InvalidSettingError(
                    "optimizer='newton' fits one coefficient vector; a multinomial or "
                    "one-vs-rest model has one column per class: use optimizer='lbfgs'"
                )
        if self.mode != "ssp" and self.max_staleness is not None:
            raise InvalidSettingError("max_staleness applies to mode='ssp' only")
        if self.reduction == "tree" and self.partition == "rows":
            raise InvalidSettingError(
                f"reduction={self.reduction!r} sums the column blocks' partial margins of "
                "partition='features' or 'grid'; partition='rows' sums gradients on the "
                "parameter server: drop reduction, or use partition='features'"
            )
        check_servers(self)
        if self.resume and self.checkpoint is None:
            raise InvalidSettingError(
                "resume=True needs checkpoint=<the path the earlier fit wrote>"
            )
        try:
            config = self.job_config(n_samples=1, batches_per_epoch=1)
            # "auto": every optimizer it may stand for must accept the other settings
            names = [self.optimizer] if self.optimizer != "auto" else self.auto_candidates()
            for name in names:
                if name in FEATURES_ONLY:
                    self._check_features_only()
                    continue
                if name in KEYED_ONLY:
                    self._check_keyed_only()
                    continue
                make_settings(np.zeros(self.params_shape(1)), config,
                              {**self.optimizer_spec(), "name": name})  # fmt: skip
        except InvalidSettingError:
            raise
        except ValueError as exc:  # the lower layers' rules, in their words
            raise InvalidSettingError(str(exc)) from None

    def _check_features_only(self) -> None:
        """``cocoa``: the block method of feature-partitioned, full-batch fits; its one
        option, ``local_steps`` (an integer >= 1)."""
        if self.partition != "features" or self.batch_size is not None:
            raise InvalidSettingError(
                f"optimizer={self.optimizer!r} is the block method of feature-partitioned "
                "fits: use partition='features' and full batches (batch_size=None)"
            )
        options = dict(self.optimizer_options or {})
        unknown = set(options) - {"local_steps"}
        steps = options.get("local_steps", 10)
        if unknown or not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise InvalidSettingError(
                f"optimizer={self.optimizer!r} takes one option, local_steps (an integer "
                f">= 1, default 10); got {options!r}"
            )

    def _check_keyed_only(self) -> None:
        """``ftrl``: mini-batches, and the rule's own settings (sparse data is checked
        when the data is known, :func:`daskgd.driver.keyed.is_keyed`)."""
        if self.batch_size is None:
            raise InvalidSettingError(
                f"optimizer={self.optimizer!r} trains sparse data on mini-batches, key by "
                "key: set batch_size (and pass sparse X)"
            )
        make_keyed_optimizer(**self.optimizer_spec())

    # -- optimizer="auto" ---------------------------------------------------------------------
    def _choose(self, n_params: int) -> str:
        return choose_optimizer(
            n_params,
            smooth=not (self.alpha and self.l1_ratio) and self.loss != "hinge",
            full_batch_sync=self.mode == "sync"
            and self.batch_size is None
            and self.sync_quorum is None,
            multinomial=self.n_columns is not None,
            twice_differentiable=self.loss != "hinge",
        )

    def auto_candidates(self) -> list[str]:
        """The optimizers ``optimizer="auto"`` may stand for with these settings (the data's
        width decides between them, :meth:`resolved`)."""
        return sorted({self._choose(1), self._choose(2**62)})

    def resolved(self, n_features: int, *, sparse: bool = False) -> FitSettings:
        """These settings with ``optimizer="auto"`` replaced by the optimizer it stands for
        on data with ``n_features`` columns (:func:`daskgd.objective.choose_optimizer`);
        the same settings for any other optimizer. Sparse data is never given Newton's
        method (its Hessian is dense, ``d x d``): the choice is that of a wide problem."""
        if self.optimizer != "auto":
            return self
        n_params = 2**62 if sparse else int(n_features) + 1
        out = replace(self, optimizer=self._choose(n_params))
        object.__setattr__(out, "seed", self.seed)  # the seed drawn for this fit stays
        return out

    # -- derived ------------------------------------------------------------------------------
    @property
    def auto_lr(self) -> bool:
        """The parameter server sets the step once the workers measured the data (L-BFGS
        and Newton take no step size)."""
        return isinstance(self.learning_rate, str) and self.optimizer not in (
            "lbfgs",
            "newton",
            "auto",
        )

    @property
    def multinomial(self) -> bool:
        """The multinomial log_loss (``n_classes > 2``, not one-vs-rest)."""
        return bool(self.n_classes and self.n_classes > 2 and not self.one_vs_rest)

    @property
    def n_columns(self) -> int | None:
        """Columns of the parameters: the classes (multinomial, one-vs-rest), else None."""
        return self.n_classes if self.n_classes and self.n_classes > 2 else None

    def params_shape(self, n_features: int) -> tuple[int, ...]:
        """The shape of the parameters: ``(d + 1,)`` or ``(d + 1, k)``, the intercept last."""
        k = self.n_columns
        return (n_features + 1,) if k is None else (n_features + 1, k)

    def optimizer_spec(self) -> dict[str, Any]:
        """The keyword arguments of :func:`daskgd.objective.make_optimizer` (sent to the
        parameter server)."""
        return {
            "name": self.optimizer,
            # "auto": a placeholder the parameter server replaces before the first step
            "learning_rate": 1.0 if isinstance(self.learning_rate, str) else self.learning_rate,
            "lr_schedule": self.lr_schedule,
            "power_t": self.power_t,
            "step_size": self.step_size,
            "gamma": self.gamma,
            "alpha": self.alpha,
            "l1_ratio": self.l1_ratio,
            "fit_intercept": self.fit_intercept,
            "options": dict(self.optimizer_options or {}),
        }

    def job_config(self, *, n_samples: int, batches_per_epoch: int) -> dict[str, Any]:
        """The keyword arguments of :class:`~daskgd.parameter_server.JobConfig` (sent to the
        parameter server), for data of ``n_samples`` rows."""
        return {
            "mode": self.mode,
            "n_samples": int(n_samples),
            "batches_per_epoch": int(batches_per_epoch),
            "max_epochs": self.max_epochs,
            "tol": self.tol,
            "n_iter_no_change": self.n_iter_no_change,
            "gtol": self.gtol,
            "gtol_rel": self.gtol_rel,
            "max_time": self.max_time,
            "max_staleness": self.max_staleness,
            "staleness_lr": self.staleness_lr,
            "record_params": self.callback_params,
            "sync_quorum": self.sync_quorum,
            "checkpoint_every": self.checkpoint_every if self.checkpoint is not None else None,
            "auto_lr": self.auto_lr,
            "loss_curvature": curvature_bound(self.loss, self.multinomial),
            "smooth": self.loss != "hinge",
            "quadratic": self.loss == "squared_error" and not (self.alpha and self.l1_ratio),
            "loss_below_zero": self.loss in ("poisson", "gamma", "tweedie"),
            "member_timeout": float(self.member_timeout),
        }

    def worker_spec(self, *, classes: list | None, batches_per_epoch: int) -> dict[str, Any]:
        """What every training task is told (:func:`daskgd.worker.train_partition`)."""
        return {
            "classes": classes,
            "loss": self.loss,
            "epsilon": float(self.epsilon),
            "power": float(self.power),
            "curvature": {"intercept": self.fit_intercept} if self.auto_lr else None,
            "batches_per_epoch": int(batches_per_epoch),
            "seed": self.seed,
            "mode": self.mode,
            "out_of_core": self.out_of_core,
            "delay": {int(r): float(t) for r, t in (self.delay or {}).items()},
            "one_vs_rest": self.one_vs_rest,
            "hessian": self.optimizer == "newton",
            "fit_intercept": self.fit_intercept,
        }

    def batches_per_epoch(self, n_samples: int, rows: list[int]) -> int:
        """Pushes each member makes per pass over its rows (``rows``: per member)."""
        if self.batch_size is None:
            return 1
        nb = max(1, round(n_samples / (len(rows) * self.batch_size)))
        return min(nb, min(rows))

    def checkpoint_record(self, n_features: int, n_samples: int, config: dict[str, Any],
                          data: str | None, version: str) -> dict[str, Any]:  # fmt: skip
        """The settings stored with each checkpoint (JSON)."""
        return {
            "n_features": int(n_features),
            "n_samples": int(n_samples),
            "loss": self.loss,
            "n_classes": self.n_columns,
            "epsilon": float(self.epsilon),
            "mode": self.mode,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "optimizer": self.optimizer_spec(),
            "job": dict(config),
            "data": data,
            "daskgd_version": version,
        }
