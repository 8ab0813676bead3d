"""The regressors: :class:`SGDRegressor` and :class:`LinearRegression`."""

from __future__ import annotations

from typing import Any, ClassVar

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from daskgd.data import Dataset, FeatureBlocks
from daskgd.sklearn.base import LinearModel, fit_client
from daskgd.sklearn.feature_input import (
    block_margins,
    check_block_fit,
    check_block_targets,
    score_inputs,
)
from daskgd.sklearn.inputs import (
    dask_map,
    is_lazy,
    lazy_features,
    lazy_offset_inputs,
    offset_array,
    sample_weight_array,
)
from daskgd.sklearn.params import (
    COMMON,
    NON_NEGATIVE,
    SGD,
    STEP,
    Rule,
    one_of,
    sgd_extra,
    sgd_penalty,
)

__all__ = ["LinearRegression", "LinearRegressor", "SGDRegressor"]

REGRESSION_LOSSES = ("squared_error", "huber")


class LinearRegressor(LinearModel, RegressorMixin, BaseEstimator):
    """Shared fit/predict of the regressors; subclasses say which objective."""

    def _objective(self) -> tuple[str, float, float, dict[str, Any]]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _check_y(self, y: np.ndarray) -> None:
        """Refuse targets outside the loss's domain (in-memory input; the GLMs')."""

    def _start_intercept(self, data: Any, client: Any) -> float | None:
        """The intercept a fresh fit starts from (None: 0; the GLMs' differs)."""
        return None

    def _fit(self, X: Any, y: Any, sample_weight: Any, *, partial: bool, offset: Any = None) -> Any:
        self._check_params()
        loss, alpha, l1_ratio, extra = self._objective()
        blocks = isinstance(X, FeatureBlocks)
        if blocks:
            check_block_fit(self)
        lazy = is_lazy(X)
        first = not (partial and hasattr(self, "coef_"))
        if not lazy:  # checked before any cluster is started or reached
            X, y = validate_data(self, X, y, reset=first, dtype=[np.float64, np.float32],
                                 accept_sparse="csr",
                                 order="C", y_numeric=True)  # fmt: skip
            y = np.ascontiguousarray(y, dtype=X.dtype)
            sample_weight = sample_weight_array(sample_weight, X.shape[0], X.dtype)
            offset = offset_array(offset, X.shape[0])
            self._check_y(y)
        warm = not first or (getattr(self, "warm_start", False) and hasattr(self, "coef_"))
        with fit_client(self.client) as client:
            data: tuple[np.ndarray, ...] | Dataset | FeatureBlocks
            if blocks:
                self._check_frame_names(X, reset=first)
                check_block_targets(X, y, sample_weight, type(self).__name__, client)
                self._check_n_features(X.n_features, reset=first)
                data = X  # the engine trains on the first group's targets
            elif lazy:
                self._check_frame_names(X, reset=first)
                (Xd, yd, sw, ds), off = lazy_offset_inputs(X, y, sample_weight, offset, client)
                if yd is None:
                    raise ValueError(
                        f"{type(self).__name__} requires y to be passed, but the target y is "
                        "None (and the dataset has none)"
                    )
                self._check_n_features(Xd.shape[1], reset=first)
                # a path or Dataset used as it is goes to the engine as it is (direct reads)
                data = ds if ds is not None else Dataset(Xd, yd.astype(Xd.dtype), sw, offset=off)
            else:
                data = (X, y) if sample_weight is None else (X, y, sample_weight)
                if offset is not None:
                    data = (X, y, sample_weight, offset)
            result = self._run(
                data,
                client,
                loss=loss,
                alpha=alpha,
                l1_ratio=l1_ratio,
                max_iter=1 if partial else self.max_iter,
                tol=None if partial else self.tol,
                coef_init=np.asarray(self.coef_, dtype=np.float64) if warm else None,
                intercept_init=float(self.intercept_[0])
                if warm
                else self._start_intercept(data, client),
                desc=type(self).__name__,
                partial=partial,
                **extra,
            )
        self.coef_ = np.asarray(result.coef_, dtype=np.float64).ravel()
        self.intercept_ = np.atleast_1d(np.asarray(result.intercept_, dtype=np.float64))
        self._set_fitted(result)
        if not partial:
            self._warn_unconverged(result, self.tol)
        return self

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit the model on the cluster.

        Parameters
        ----------
        X : array-like, DataFrame (pandas or dask), dask array, Dataset, FeatureBlocks or str
            ``(n_samples, n_features)`` features, or a dataset (then ``y`` may be omitted).
            A FeatureBlocks (:func:`daskgd.concat_features`) needs
            ``partition="features"``; it is trained on its first group's targets and weights.
        y : array-like, dask array or Series, optional
            Targets (with a FeatureBlocks: only the first group's, checked).
        sample_weight : array-like or dask array, optional
            Non-negative row weights (with a FeatureBlocks: as ``y``).

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, partial=False)

    def _decision(self, X: Any) -> Any:
        check_is_fitted(self)
        coef, b = self.coef_, float(self.intercept_[0])
        if isinstance(X, FeatureBlocks):
            self._check_frame_names(X, reset=False)
            self._check_n_features(X.n_features)
            return block_margins(X, coef, b)
        if is_lazy(X):
            self._check_frame_names(X, reset=False)
            return self._lazy_decision(lazy_features(X))
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32], accept_sparse="csr")
        return X @ coef.astype(X.dtype) + b

    def _lazy_decision(self, Xd: Any) -> Any:
        self._check_n_features(Xd.shape[1])
        coef, b = self.coef_, float(self.intercept_[0])
        return dask_map(Xd, lambda blk: blk @ coef.astype(blk.dtype) + b, None, Xd.dtype)

    def predict(self, X: Any) -> Any:
        """Predicted targets: numpy for numpy input, a lazy dask array for dask input.

        Parameters
        ----------
        X : array-like, DataFrame, dask array, Dataset, FeatureBlocks or str

        Returns
        -------
        numpy.ndarray or dask.array.Array of shape (n_samples,)
        """
        return self._decision(X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """R² of the predictions (a lazy dask scalar for dask input).

        Parameters
        ----------
        X : array-like, DataFrame, dask array, Dataset, FeatureBlocks or str
        y : array-like or dask array, optional (taken from the dataset when omitted)
        sample_weight : array-like, optional

        Returns
        -------
        float or dask.array.Array
        """
        if not is_lazy(X):
            return super().score(X, y, sample_weight)
        check_is_fitted(self)
        pred, yd, sw = score_inputs(self, X, y, sample_weight, self._decision, self._lazy_decision)
        w = da.ones_like(yd, dtype=np.float64) if sw is None else sw.astype(np.float64)
        yd = yd.astype(np.float64)
        mean = (w * yd).sum() / w.sum()
        ss_res = (w * (yd - pred) ** 2).sum()
        ss_tot = (w * (yd - mean) ** 2).sum()
        return 1.0 - ss_res / ss_tot


class SGDRegressor(LinearRegressor):
    """Linear regression by distributed stochastic gradient descent.

    Minimises ``mean_i s_i * loss(x_i @ coef + b, y_i) / mean(s) + alpha * R(coef)`` with
    ``R = (1 - l1_ratio) / 2 * ||coef||² + l1_ratio * ||coef||_1`` (scikit-learn's
    ``SGDRegressor`` objective), on a Dask cluster.

    Parameters
    ----------
    loss : {"squared_error", "huber"}, default "squared_error"
    penalty : {"l2", "l1", "elasticnet"} or None, default "l2"
    alpha : float, default 0.0001
        Regularisation strength.
    l1_ratio : float, default 0.15
        Elastic-net mixing, used with ``penalty="elasticnet"``.
    fit_intercept : bool, default True
    max_iter : int, default 1000
        Most epochs (passes over the data).
    tol : float or None, default 1e-3
        Stop when the epoch loss improved by less than ``tol`` (relative) for
        ``n_iter_no_change`` epochs; None: run ``max_iter`` epochs.
    verbose : int or "auto", default "auto"
        Progress bar: "auto" shows it when stderr is a terminal, 0 never, 1 always.
    epsilon : float, default 0.1
        Huber's threshold.
    random_state : int, RandomState or None, default None
        Seeds the mini-batch order.
    learning_rate : {"constant", "invscaling", "step"}, default "invscaling"
        Learning-rate schedule: ``eta0``, ``eta0 / (1 + t) ** power_t`` (``t`` updates so
        far), or ``eta0`` halved every 10 epochs.
    eta0 : float or "auto", default "auto"
        Initial learning rate; "auto" is ``1 / L`` for ``L`` a bound on the curvature of the
        objective, computed by the workers from their rows while they load them (see
        :func:`daskgd.fit`'s ``learning_rate``): a step full-batch descent cannot diverge
        with, and mini-batches get a smaller one.
    power_t : float, default 0.25
    early_stopping : bool, default False
        Hold out a random ``validation_fraction`` of the rows (numpy input only) and stop
        when the model's loss on them has not improved by ``tol`` (relative) for
        ``n_iter_no_change`` epochs; the training loss then does not stop the fit.
    validation_fraction : float, default 0.1
    n_iter_no_change : int, default 5
    warm_start : bool, default False
        Start from the previous fit's coefficients; with ``checkpoint``, continue from
        the newest checkpoint there (parameters, optimizer state, epochs) when one exists.
    batch_size : int or None, default 256
        Rows per mini-batch on each worker; None for full batch (gradient descent).
    mode : {"sync", "async", "ssp"}, default "sync"
        How the parameter server combines workers' gradients.
    optimizer : {"sgd", "momentum", "nesterov", "adagrad", "adam"}, default "sgd"
    max_staleness : int or None, default None
        The staleness bound of ``mode="ssp"``.
    n_servers : int or "auto", default "auto"
        Parameter servers: 0 keeps the model and its optimizer state on the scheduler,
        K >= 1 cuts them into K shards on K workers (every optimizer but Newton);
        see :func:`daskgd.fit`.
    placement : {"auto", "balanced", "locality", "resources"}, default "auto"
        Which row-chunks each worker trains on ("resources": in proportion to each
        worker's declared ``daskgd`` resource or threads); see :func:`daskgd.fit`.
    partition : {"rows", "features"}, default "rows"
        "features": each worker holds every row of one block of columns and that block of
        the coefficients (wide data, columns from several stores); see :func:`daskgd.fit`.
    client : distributed.Client, str or None, default None
        The cluster: a client, a scheduler address, or None for the current client (else an
        embedded LocalCluster for the duration of the fit).
    checkpoint : str or None, default None
        A Zarr path that ``fit`` writes checkpoints to (see :func:`daskgd.fit`); not used
        by ``partial_fit``, nor by one-vs-rest classifiers with more than two classes.
    checkpoint_every : int, default 10
        Epochs between two checkpoints.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : ndarray of shape (1,)
    n_iter_ : int
        Epochs run.
    n_updates_ : int
        Parameter updates applied by the parameter server.
    converged_ : bool
        Whether the fit stopped at an optimum: the loss stalled (``tol``) in a mini-batch
        fit, as in scikit-learn; with full batches, the gradient norm also fell below
        ``sqrt(tol)`` times its value at the start; early stopping that fired counts.
        A fit that stops short warns with ``ConvergenceWarning`` (when ``tol`` is not None).
    history_ : dict of lists
        Per-epoch loss, gradient norm, wall time, updates and staleness.
    plan_ : dict of str to list of int
        The row-chunks each worker trained on (see ``placement``).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has string feature names (a DataFrame).

    Examples
    --------
    >>> import numpy as np
    >>> from daskgd import SGDRegressor
    >>> X = np.random.default_rng(0).normal(size=(200, 3))
    >>> y = X @ [1.0, 2.0, 3.0] + 0.5
    >>> reg = SGDRegressor(batch_size=None, penalty=None, tol=1e-10, max_iter=300,
    ...                    learning_rate="constant", verbose=0).fit(X, y)  # doctest: +SKIP
    >>> reg.coef_.round(2)  # doctest: +SKIP
    array([1., 2., 3.])
    """

    def __init__(
        self,
        loss: str = "squared_error",
        *,
        penalty: str | None = "l2",
        alpha: float = 0.0001,
        l1_ratio: float = 0.15,
        fit_intercept: bool = True,
        max_iter: int = 1000,
        tol: float | None = 1e-3,
        verbose: int | str = "auto",
        epsilon: float = 0.1,
        random_state: Any = None,
        learning_rate: str = "invscaling",
        eta0: float | str = "auto",
        power_t: float = 0.25,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
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
        self.epsilon = epsilon
        self.random_state = random_state
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
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
        "loss": one_of(*REGRESSION_LOSSES),
        "epsilon": NON_NEGATIVE,
    }

    def _objective(self) -> tuple[str, float, float, dict[str, Any]]:
        alpha, l1_ratio = sgd_penalty(self.penalty, self.alpha, self.l1_ratio)
        return self.loss, alpha, l1_ratio, sgd_extra(self)

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> SGDRegressor:
        """One epoch over the data given, continuing from the current coefficients.

        Parameters
        ----------
        X, y, sample_weight
            As for :meth:`fit`.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, partial=True)


class LinearRegression(LinearRegressor):
    """Ordinary least squares solved on the cluster by full-batch Newton or L-BFGS (by default).

    Minimises ``0.5 * mean_i s_i (x_i @ coef + b - y_i)² / mean(s)``: the same optimum as
    scikit-learn's ``LinearRegression``.

    Parameters
    ----------
    fit_intercept : bool, default True
    tol : float or None, default 1e-9
        Stop, converged, when the norm of the gradient of the objective is at most ``tol``
        times its norm at the starting point (a gradient test, as scikit-learn's
        ``LogisticRegression`` uses). The fit also stops, unconverged and with a
        ``ConvergenceWarning``, when the loss has not decreased for 40 evaluations (the
        solver can get no closer in floating point: scale the features). None: run
        ``max_iter`` epochs.
    max_iter : int, default 2000
        Most gradient steps (epochs).
    verbose : int or "auto", default "auto"
        Progress bar (see :class:`SGDRegressor`).
    batch_size : int or None, default None
        None: full batch.
    optimizer : str, default "auto"
        "auto" is "newton" (one step solves least squares) for full-batch sync fits with
        at most :data:`daskgd.objective.NEWTON_MAX_FEATURES` parameters, "lbfgs" (one pass
        over the data per round, a line search on the exact loss) for wider ones, else
        "sgd". Any :func:`daskgd.fit` optimizer.
    mode, max_staleness, n_servers, placement, partition, client
        As for :class:`SGDRegressor`.
    learning_rate : float or "auto", default "auto"
        Step size of first-order optimizers; "auto" is ``1 / L`` (see
        :class:`SGDRegressor`'s ``eta0``). L-BFGS needs none.
    random_state : int or None, default None
    warm_start : bool, default False
    checkpoint, checkpoint_every
        As for :class:`SGDRegressor`.

    Attributes
    ----------
    coef_, intercept_, n_iter_, n_updates_, converged_, history_, n_features_in_
        As for :class:`SGDRegressor`.
    """

    _tol_is_gradient = True
    _parameter_constraints: ClassVar[dict[str, Rule]] = {
        **COMMON,
        "learning_rate": STEP,
    }

    def __init__(
        self,
        *,
        fit_intercept: bool = True,
        tol: float | None = 1e-9,
        max_iter: int = 2000,
        verbose: int | str = "auto",
        batch_size: int | None = None,
        mode: str = "sync",
        optimizer: str = "auto",
        learning_rate: float | str = "auto",
        max_staleness: int | None = None,
        n_servers: int | str = "auto",
        placement: str = "auto",
        partition: str = "rows",
        random_state: Any = None,
        warm_start: bool = False,
        client: Any = None,
        checkpoint: str | None = None,
        checkpoint_every: int = 10,
    ) -> None:
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.verbose = verbose
        self.batch_size = batch_size
        self.mode = mode
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.max_staleness = max_staleness
        self.n_servers = n_servers
        self.placement = placement
        self.partition = partition
        self.random_state = random_state
        self.warm_start = warm_start
        self.client = client
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every

    @property
    def eta0(self) -> float | str:
        """The step size (``learning_rate``), under the name the base class reads."""
        return self.learning_rate

    def _objective(self) -> tuple[str, float, float, dict[str, Any]]:
        return "squared_error", 0.0, 0.0, {}
