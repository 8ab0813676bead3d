"""The classifiers: :class:`SGDClassifier` and :class:`LogisticRegression`.

:class:`LogisticRegression` and ``SGDClassifier(loss="log_loss")`` fit one multinomial
(softmax) model; ``SGDClassifier`` with ``hinge``/``squared_hinge`` fits one binary model per
class (one-vs-rest), all k in one job on one cluster: the parameters have one column per
class and each round steps every column, so an epoch is one pass over the data for all
classes. The k binary objectives are separable: each column is the model its binary fit
alone would give. Class weights multiply each row's weight by its class's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from daskgd.sklearn.linear_classifier import LinearClassifier
from daskgd.sklearn.params import (
    CLASS_WEIGHT,
    COMMON,
    FRACTION,
    PENALTY,
    POSITIVE,
    SGD,
    STEP,
    Rule,
    one_of,
    sgd_extra,
    sgd_penalty,
)

__all__ = ["LogisticRegression", "SGDClassifier"]

CLASSIFICATION_LOSSES = ("log_loss", "hinge", "squared_hinge")


class SGDClassifier(LinearClassifier):
    """Linear classifiers (SVM, logistic regression) by distributed stochastic gradient descent.

    Minimises scikit-learn ``SGDClassifier``'s objective, ``mean_i s_i loss_i / mean(s) +
    alpha * R(coef)``. Two classes: one binary model. More classes: one multinomial (softmax)
    model for ``loss="log_loss"``; one-vs-rest (one binary model per class, all trained in
    one job, one parameter column per class) for ``hinge`` and ``squared_hinge``.

    Parameters
    ----------
    loss : {"hinge", "log_loss", "squared_hinge"}, default "hinge"
        ``hinge`` is a linear SVM; ``log_loss`` logistic regression (with ``predict_proba``).
    penalty, alpha, l1_ratio, fit_intercept, max_iter, tol, verbose, random_state
        As for :class:`SGDRegressor`.
    learning_rate, eta0, power_t, early_stopping, validation_fraction, n_iter_no_change
        As for :class:`SGDRegressor`.
    class_weight : dict, "balanced" or None, default None
        Weights multiplying each sample's weight by its class's.
    warm_start : bool, default False
    batch_size, mode, optimizer, max_staleness, n_servers, placement, partition, client,
    checkpoint,
    checkpoint_every
        As for :class:`SGDRegressor`.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (1, n_features) for two classes, else (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    n_iter_, n_updates_, converged_, history_, n_features_in_
        As for :class:`SGDRegressor`. One-vs-rest: ``history_`` has one row per class and
        epoch, with a ``run`` column (``"class <label>"``), that class's objective as
        ``loss``, and ``total_loss``, their sum (the job's objective, which ``tol`` judges);
        ``n_iter_`` and ``n_updates_`` are the job's (every update steps every class).
    """

    def __init__(
        self,
        loss: str = "hinge",
        *,
        penalty: str | None = "l2",
        alpha: float = 0.0001,
        l1_ratio: float = 0.15,
        fit_intercept: bool = True,
        max_iter: int = 1000,
        tol: float | None = 1e-3,
        verbose: int | str = "auto",
        random_state: Any = None,
        learning_rate: str = "invscaling",
        eta0: float | str = "auto",
        power_t: float = 0.25,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        class_weight: Any = None,
        warm_start: bool = False,
        batch_size: int | None = 256,
        mode: str = "sync",
        optimizer: str = "sgd",
        max_staleness: int | None = None,
        n_servers: int | str = "auto",
        placement: str = "auto",
        partition: str = "rows",
        client: Any = None,
        checkpoint: str | None = None,
        checkpoint_every: int = 10,
    ) -> None:
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.batch_size = batch_size
        self.mode = mode
        self.optimizer = optimizer
        self.max_staleness = max_staleness
        self.n_servers = n_servers
        self.placement = placement
        self.partition = partition
        self.client = client
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every

    _parameter_constraints: ClassVar[dict[str, Rule]] = {
        **SGD,
        "loss": one_of(*CLASSIFICATION_LOSSES),
        "class_weight": CLASS_WEIGHT,
    }

    def _proba_loss(self) -> str:
        return self.loss

    def _loss(self) -> str:
        return self.loss

    def _objective(self, total_weight: Callable[[], float]) -> tuple[float, float, dict]:
        alpha, l1_ratio = sgd_penalty(self.penalty, self.alpha, self.l1_ratio)
        return alpha, l1_ratio, sgd_extra(self)

    def partial_fit(
        self, X: Any, y: Any = None, classes: Any = None, sample_weight: Any = None
    ) -> SGDClassifier:
        """One epoch over the data given, continuing from the current coefficients.

        Parameters
        ----------
        X, y, sample_weight
            As for :meth:`fit`.
        classes : array-like, optional
            All the labels; required on the first call.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, partial=True, classes=classes)


class LogisticRegression(LinearClassifier):
    """Logistic regression solved on the cluster by full-batch Newton or L-BFGS (by default).

    The objective is scikit-learn ``LogisticRegression``'s, ``C * sum_i s_i loss_i + R(coef)``,
    divided by ``C * sum_i s_i``: daskgd minimises the mean loss plus ``alpha * R`` with
    ``alpha = 1 / (C * sum_i s_i)``; the optimum is the same. Multiclass problems fit one
    multinomial (softmax) model, as scikit-learn does.

    Parameters
    ----------
    penalty : {"l2", "l1", "elasticnet"} or None, default "l2"
    C : float, default 1.0
        Inverse regularisation strength.
    l1_ratio : float or None, default None
        Elastic-net mixing (``penalty="elasticnet"`` only).
    fit_intercept : bool, default True
    tol : float or None, default 1e-9
        Stop, converged, when the norm of the gradient of the objective is at most ``tol``
        times its norm at the starting point (a gradient test, as scikit-learn's
        ``LogisticRegression`` uses). The fit also stops, unconverged and with a
        ``ConvergenceWarning``, when the loss has not decreased for 40 evaluations (the
        solver can get no closer in floating point: scale the features). None: run
        ``max_iter`` epochs.
    max_iter : int, default 2000
        Most gradient steps.
    class_weight : dict, "balanced" or None, default None
    random_state : int or None, default None
    verbose : int or "auto", default "auto"
    warm_start : bool, default False
    batch_size : int or None, default None
        None: full batch.
    learning_rate : float or "auto", default "auto"
        Step size; "auto" is ``1 / L`` (see :class:`SGDRegressor`'s ``eta0``).
    optimizer : str, default "auto"
        "auto" is "newton" for a full-batch sync binary fit with at most
        :data:`daskgd.objective.NEWTON_MAX_FEATURES` parameters (L1 included), else
        "lbfgs" (one pass over the data per round, a line search on the exact loss) when
        the objective is smooth and the fit is full-batch sync, else "sgd" (proximal
        gradient descent, which handles L1). Any :func:`daskgd.fit` optimizer.
    mode, max_staleness, n_servers, placement, partition, client, checkpoint, checkpoint_every
        As for :class:`SGDRegressor`.

    Attributes
    ----------
    classes_, coef_, intercept_, n_iter_, n_updates_, converged_, history_, n_features_in_
        As for :class:`SGDClassifier`.
    """

    _tol_is_gradient = True
    _parameter_constraints: ClassVar[dict[str, Rule]] = {
        **COMMON,
        "penalty": PENALTY,
        "C": POSITIVE,
        "l1_ratio": Rule(lambda v: v is None or FRACTION.test(v), "None or a number in [0, 1]"),
        "class_weight": CLASS_WEIGHT,
        "learning_rate": STEP,
    }

    def __init__(
        self,
        penalty: str | None = "l2",
        *,
        C: float = 1.0,
        l1_ratio: float | None = None,
        fit_intercept: bool = True,
        tol: float | None = 1e-9,
        max_iter: int = 2000,
        class_weight: Any = None,
        random_state: Any = None,
        verbose: int | str = "auto",
        warm_start: bool = False,
        batch_size: int | None = None,
        learning_rate: float | str = "auto",
        mode: str = "sync",
        optimizer: str = "auto",
        max_staleness: int | None = None,
        n_servers: int | str = "auto",
        placement: str = "auto",
        partition: str = "rows",
        client: Any = None,
        checkpoint: str | None = None,
        checkpoint_every: int = 10,
    ) -> None:
        self.penalty = penalty
        self.C = C
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.mode = mode
        self.optimizer = optimizer
        self.max_staleness = max_staleness
        self.n_servers = n_servers
        self.placement = placement
        self.partition = partition
        self.client = client
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every

    @property
    def eta0(self) -> float | str:
        """The step size (``learning_rate``), under the name the base class reads."""
        return self.learning_rate

    def _loss(self) -> str:
        return "log_loss"

    def _objective(self, total_weight: Callable[[], float]) -> tuple[float, float, dict]:
        ratio = 0.0
        if self.penalty == "elasticnet":
            if self.l1_ratio is None:
                raise ValueError("penalty='elasticnet' needs l1_ratio, a number in [0, 1]")
            ratio = float(self.l1_ratio)
        _, l1_ratio = sgd_penalty(self.penalty, 0.0, ratio)
        # the weight sum (a pass over dask weights) only where the penalty needs it
        alpha = 0.0 if self.penalty is None else 1.0 / (self.C * total_weight())
        return alpha, l1_ratio, {}
