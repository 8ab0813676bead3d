"""scikit-learn estimators trained by daskgd's distributed engine.

:class:`SGDRegressor`, :class:`SGDClassifier`, :class:`LinearRegression` and
:class:`LogisticRegression` follow scikit-learn's API (they derive from its ``BaseEstimator``
and mixins, so ``clone``, ``Pipeline``, ``GridSearchCV`` and ``check_estimator`` work) and
delegate the optimisation to :func:`daskgd.driver.engine.fit`: the data is cut into row-chunks, one
training task per Dask worker computes gradients with the compiled kernels, and the parameter
server on the scheduler applies the updates.

Input kinds
    ``fit`` takes numpy arrays (validated like scikit-learn does), dask arrays, a
    :class:`daskgd.Dataset` or a Zarr path/URL (then ``y`` may be omitted: the stored targets
    and weights are used). ``predict``, ``predict_proba``, ``decision_function`` and ``score``
    return numpy for numpy input and lazy dask arrays for dask/Dataset/Zarr input.

Labels
    Classifiers accept labels of any type (strings too). Internally, binary problems use
    ``-1``/``+1`` targets (``classes_[1]`` is the positive class) and the multinomial loss uses
    class indices.

Multiclass
    :class:`LogisticRegression` and ``SGDClassifier(loss="log_loss")`` fit one multinomial
    (softmax) model. ``SGDClassifier`` with the other losses (``hinge``, ``squared_hinge``)
    fits one binary model per class (one-vs-rest), all k in one job: the parameters have one
    column per class, and each round steps every column, so an epoch is one pass over the
    data for all classes. The k binary objectives are separable: each column is the model
    its binary fit alone would give.

The cluster
    ``client`` is a ``distributed.Client``, a scheduler address, or None (the current client,
    else an embedded ``LocalCluster`` that lives for one fit). A fitted estimator holds no
    client: it pickles without a cluster, and a ``Client`` passed as ``client`` is dropped when
    pickling (the unpickled estimator uses the current client on its next fit).
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from daskgd.cluster import check_scheduler, check_tls_address
from daskgd.data import Dataset, as_dataset, check_dense
from daskgd.errors import DataValidationError
from daskgd.history import history_to_dict
from daskgd.kernels import grad_loss
from daskgd.progress import ProgressBar, progress_enabled

__all__ = ["LinearRegression", "LogisticRegression", "SGDClassifier", "SGDRegressor"]

_REGRESSION_LOSSES = ("squared_error", "huber")
_CLASSIFICATION_LOSSES = ("log_loss", "hinge", "squared_hinge")
_PENALTIES = {"l2": 0.0, "l1": 1.0, "elasticnet": None, None: 0.0}


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _is_lazy(X: Any) -> bool:
    """Dask arrays, Datasets and Zarr paths stay on the cluster; anything else is numpy."""
    return isinstance(X, da.Array | Dataset | str | os.PathLike)


def _check_sample_weight(sample_weight: Any, n: int, dtype: Any) -> np.ndarray | None:
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        sw = np.full(n, sample_weight, dtype=dtype)
    else:
        sw = np.asarray(sample_weight, dtype=dtype)
    if sw.ndim != 1 or sw.shape[0] != n:
        raise ValueError(
            f"sample_weight.shape == {sw.shape}, expected ({n},): one weight per row of X"
        )
    if not np.all(np.isfinite(sw)) or np.any(sw < 0):
        raise ValueError("sample_weight must hold finite, non-negative values")
    if not sw.sum() > 0:
        raise ValueError("sample_weight sums to zero: at least one row needs a positive weight")
    return sw


def _as_dask_1d(a: Any, chunks: tuple[int, ...], name: str) -> da.Array:
    if isinstance(a, da.Array):
        if a.ndim != 1:
            raise DataValidationError(f"{name} must be 1-D, got shape {a.shape}")
        return a.rechunk({0: chunks})
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise DataValidationError(f"{name} must be 1-D, got shape {arr.shape}")
    return da.from_array(arr, chunks=(chunks,))


def _lazy_inputs(X: Any, y: Any, sample_weight: Any) -> tuple[da.Array, da.Array | None, Any]:
    """X (dask), y and weights (dask or None) from dask arrays, a Dataset or a Zarr path."""
    if isinstance(X, str | os.PathLike):
        X = as_dataset(X, validate=False)
    if isinstance(X, Dataset):
        ds = X
        y = ds.y if y is None else y
        sample_weight = ds.sample_weight if sample_weight is None else sample_weight
        X = ds.X
    check_dense(X, y, sample_weight)  # a dask array of sparse blocks
    if X.ndim != 2:
        raise DataValidationError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if np.dtype(X.dtype).kind in "biu":
        X = X.astype(np.float64)
    elif np.dtype(X.dtype) not in (np.float32, np.float64):
        raise DataValidationError(f"X must be float32 or float64, got {X.dtype}")
    if any(math.isnan(c) for c in X.chunks[0]):
        raise DataValidationError("X has unknown chunk sizes; call X.compute_chunk_sizes() first")
    X = X.rechunk({1: -1})
    if y is not None:
        y = _as_dask_1d(y, X.chunks[0], "y")
        if y.shape[0] != X.shape[0]:
            raise DataValidationError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
    if sample_weight is not None and not isinstance(sample_weight, numbers.Number):
        sample_weight = _as_dask_1d(sample_weight, X.chunks[0], "sample_weight")
        if sample_weight.shape[0] != X.shape[0]:
            raise DataValidationError(
                f"X has {X.shape[0]} rows but sample_weight has {sample_weight.shape[0]}"
            )
    return X, y, sample_weight


def _dask_map(X: da.Array, fn: Callable[[np.ndarray], np.ndarray], k: int | None, dtype: Any):
    """Row-wise ``fn`` over the blocks of ``X``: an (n,) or (n, k) lazy result."""
    if k is None:
        return da.map_blocks(fn, X, drop_axis=1, dtype=dtype, meta=np.empty((0,), dtype=dtype))
    return da.map_blocks(fn, X, chunks=(X.chunks[0], (k,)), dtype=dtype,
                         meta=np.empty((0, 0), dtype=dtype))  # fmt: skip


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------


def _engine_fit(data: Any, **kwargs: Any) -> Any:
    """Call :func:`daskgd.driver.engine.fit` with the estimator's settings."""
    from daskgd.driver import engine as train

    return train.fit(data, **kwargs)


def _resolve_optimizer(params: dict[str, Any], alpha: float, l1_ratio: float) -> str:
    """``optimizer="auto"``: L-BFGS where it applies (a smooth objective, full-batch sync
    mode), else the proximal first-order ``sgd``."""
    optimizer = params.get("optimizer", "sgd")
    if optimizer != "auto":
        return str(optimizer)
    smooth = not (alpha and l1_ratio)
    full_batch_sync = params.get("mode", "sync") == "sync" and params.get("batch_size") is None
    return "lbfgs" if smooth and full_batch_sync else "sgd"


class _EarlyStopping:
    """Stop when the loss on held-out rows has not improved for ``patience`` epochs.

    scikit-learn's ``early_stopping`` scores a held-out ``validation_fraction`` after
    every epoch; here the score is the model's own loss on those rows (in the engine's
    encoding of the targets), computed by the kernel at each epoch's parameters.
    """

    def __init__(self, held_out: tuple, loss: str, epsilon: float, tol: float | None,
                 patience: int, one_vs_rest: bool = False) -> None:  # fmt: skip
        self.X, self.y = held_out[0], held_out[1]
        # one-vs-rest: y holds class indices and the coefficients one column per class
        self.one_vs_rest = one_vs_rest
        self.sw = held_out[2] if len(held_out) > 2 else None
        self.weight = float(len(self.y) if self.sw is None else np.sum(self.sw))
        self.loss, self.epsilon = loss, epsilon
        self.tol, self.patience = (tol or 0.0), int(patience)
        self.best, self.bad = math.inf, 0
        self.stopped = False

    @classmethod
    def split(cls, data: tuple, fraction: float, seed: int | None, **kwargs: Any):
        """(training data, stopper): a random ``fraction`` of the rows is held out."""
        n = len(data[1])
        n_val = max(1, round(fraction * n))
        if n - n_val < 1:
            raise ValueError(f"validation_fraction={fraction} leaves no rows to train on")
        order = np.random.default_rng(seed).permutation(n)
        train, val = np.sort(order[n_val:]), np.sort(order[:n_val])
        pick = lambda idx: tuple(np.ascontiguousarray(a[idx]) for a in data)  # noqa: E731
        return pick(train), cls(pick(val), **kwargs)

    def __call__(self, row: dict[str, Any]) -> bool:
        coef = np.asarray(row["coef"], dtype=self.X.dtype)
        if self.one_vs_rest:  # the sum of the k binary losses, the joint job's objective
            intercept = np.asarray(row["intercept"])
            total = 0.0
            for j in range(coef.shape[1]):
                yj = np.where(self.y == j, 1.0, -1.0).astype(self.X.dtype)
                part, _, _ = grad_loss(self.X, yj, np.ascontiguousarray(coef[:, j]),
                                       float(intercept[j]), loss=self.loss,
                                       sample_weight=self.sw, epsilon=self.epsilon,
                                       check_input=False)  # fmt: skip
                total += part
        else:
            total, _, _ = grad_loss(self.X, self.y, coef, row["intercept"], loss=self.loss,
                                    sample_weight=self.sw, epsilon=self.epsilon,
                                    check_input=False)  # fmt: skip
        held_out_loss = total / self.weight
        if held_out_loss > self.best - self.tol * abs(self.best):
            self.bad += 1
        else:
            self.bad = 0
        self.best = min(self.best, held_out_loss)
        self.stopped = self.bad >= self.patience
        return not self.stopped  # False stops the fit


class _Runner:
    """What the estimators share: validation of settings, calling the engine, the bar."""

    client: Any  # set by the subclasses' __init__ (a scikit-learn parameter)
    #: LinearRegression, LogisticRegression: ``tol`` is a gradient tolerance, not a loss one
    _tol_is_gradient = False

    def _check_common(self) -> None:
        p = self.get_params(deep=False)  # type: ignore[attr-defined]
        if not (isinstance(p["max_iter"], numbers.Integral) and int(p["max_iter"]) >= 1):
            raise ValueError(f"max_iter must be a positive integer, got {p['max_iter']!r}")
        tol = p.get("tol")
        if tol is not None and not (isinstance(tol, numbers.Real) and float(tol) >= 0):
            raise ValueError(f"tol must be None or a number >= 0, got {tol!r}")
        bs = p.get("batch_size")
        if bs is not None and not (isinstance(bs, numbers.Integral) and int(bs) >= 1):
            raise ValueError(f"batch_size must be None (full batch) or >= 1, got {bs!r}")
        progress_enabled(p.get("verbose", 0))  # raises on a bad value

    def _check_cluster(self) -> None:
        """Check the schedulers this fit will use before any work is sent to them.

        The estimator's own passes (classes, the auto step size) run on dask's default
        client, the training on ``client``: each must be able to import daskgd.
        """
        from distributed import default_client

        client = self.client
        if isinstance(client, str | os.PathLike):
            check_tls_address(str(client))  # fit connects, then checks the scheduler
        elif client is not None:
            check_scheduler(client)
        try:
            default = default_client()
        except ValueError:
            return
        if default is not client:
            check_scheduler(default)

    def _eta0(self) -> float | str:
        """The step size: ``eta0`` as given, or "auto" (``1 / L``, computed by the workers
        from their rows while they load them; see :func:`daskgd.fit`)."""
        eta0 = getattr(self, "eta0", "auto")
        if isinstance(eta0, str) and eta0 == "auto":
            return "auto"
        if not (isinstance(eta0, numbers.Real) and math.isfinite(eta0) and float(eta0) > 0):
            raise ValueError(f"eta0 must be 'auto' or a positive number, got {eta0!r}")
        return float(eta0)

    def _warn_unconverged(self, results: list[Any], tol: float | None) -> None:
        """scikit-learn's ``ConvergenceWarning`` for a fit that stopped short of its optimum
        (as scikit-learn, only when a tolerance was asked for)."""
        if tol is None:
            return
        for r in results:
            if not r.converged_:
                warnings.warn(
                    f"{type(self).__name__} did not converge: {r.reason}. Increase max_iter, "
                    "scale the features (e.g. with sklearn.preprocessing.StandardScaler) or "
                    "loosen tol.",
                    ConvergenceWarning,
                    stacklevel=4,
                )
                return

    def _run(
        self,
        data: Any,
        *,
        loss: str,
        alpha: float,
        l1_ratio: float,
        max_iter: int,
        tol: float | None,
        eta0: float | str,
        coef_init: np.ndarray | None = None,
        intercept_init: Any = None,
        desc: str = "daskgd",
        lazy: bool = False,
        **extra: Any,
    ) -> Any:
        """One engine fit; returns the FitResult. The client is never kept.

        In-memory input was validated here already (``lazy=False``): the engine skips its scan.
        """
        p = self.get_params(deep=False)  # type: ignore[attr-defined]
        extra.update(self._checkpoint_settings(p, partial=extra.pop("partial", False)))
        if self._tol_is_gradient:
            # ``tol`` is a relative gradient tolerance; the loss rule only catches a solver
            # that can get no further (no decrease at all, longer than L-BFGS backtracks)
            extra["gtol_rel"], tol = tol, (None if tol is None else 0.0)
            extra["n_iter_no_change"] = 40
        bar = ProgressBar(max_iter, enabled=progress_enabled(p.get("verbose", 0)), desc=desc)
        callback: Callable[[dict[str, Any]], Any] = bar.update
        stopper = None
        if p.get("early_stopping") and max_iter > 1:  # not for partial_fit's single epoch
            if lazy:
                raise ValueError(
                    "early_stopping=True holds out a share of in-memory data: pass numpy "
                    "arrays, or use early_stopping=False with dask arrays and Zarr data"
                )
            data, stopper = _EarlyStopping.split(
                data, p["validation_fraction"], _seed(p.get("random_state")), loss=loss,
                epsilon=extra.get("epsilon", 0.1), tol=tol, patience=p["n_iter_no_change"],
                one_vs_rest=bool(extra.get("_one_vs_rest")),
            )  # fmt: skip
            tol = None  # the held-out loss, not the training loss, decides when to stop

            def update_and_check(row: dict[str, Any]) -> bool:
                bar.update(row)
                return stopper(row)

            callback = update_and_check
            extra["callback_params"] = True
        try:
            result = _engine_fit(
                data,
                loss=loss,
                mode=p.get("mode", "sync"),
                optimizer=_resolve_optimizer(p, alpha, l1_ratio),
                learning_rate=eta0,
                lr_schedule=extra.pop("lr_schedule", "constant"),
                batch_size=p.get("batch_size"),
                max_epochs=max_iter,
                tol=tol,
                alpha=alpha,
                l1_ratio=l1_ratio,
                fit_intercept=p["fit_intercept"],
                max_staleness=p.get("max_staleness"),
                client=p.get("client"),
                random_state=_seed(p.get("random_state")),
                coef_init=coef_init,
                intercept_init=intercept_init,
                callback=callback,
                validate=lazy,
                _labels_checked=True,  # by the classifiers, up front (see _Settings)
                **extra,
            )
        finally:
            bar.close()
        if stopper is not None and stopper.stopped:
            # the held-out loss stalled: scikit-learn's stopping test held
            result.converged_ = True
        return result

    @staticmethod
    def _checkpoint_settings(p: dict[str, Any], partial: bool) -> dict[str, Any]:
        """The engine's checkpoint settings: ``fit`` writes them; ``warm_start`` resumes."""
        path = p.get("checkpoint")
        if path is None or partial:
            return {}
        return {
            "checkpoint": path,
            "checkpoint_every": p.get("checkpoint_every", 10),
            "resume": bool(p.get("warm_start")),
        }

    def __getstate__(self) -> dict[str, Any]:
        # A live Client does not pickle; the estimator falls back to the current client.
        state = dict(self.__dict__)
        if state.get("client") is not None and not isinstance(state["client"], str):
            state["client"] = None
        return state

    def __sklearn_clone__(self) -> Any:
        # clone() deep-copies parameters, which a live Client cannot survive: share it instead.
        params = self.get_params(deep=False)  # type: ignore[attr-defined]
        client = params.pop("client", None)
        new = type(self)(**{k: clone(v, safe=False) for k, v in params.items()})
        new.client = client
        return new


def _seed(random_state: Any) -> int | None:
    """An int seed for the engine (a RandomState draws one, as scikit-learn would)."""
    if random_state is None or isinstance(random_state, numbers.Integral):
        return None if random_state is None else int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(np.iinfo(np.int32).max))
    raise ValueError(f"random_state must be None, an int or a RandomState, got {random_state!r}")


# --------------------------------------------------------------------------------------------
# Regressors
# --------------------------------------------------------------------------------------------


class _LinearRegressorBase(_Runner, RegressorMixin, BaseEstimator):
    """Shared fit/predict of the regressors; subclasses say which objective."""

    # Fitted attributes (set by fit; declared here for the type checker only).
    coef_: np.ndarray
    intercept_: np.ndarray

    def _objective(self) -> tuple[str, float, float, dict[str, Any]]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _fit(self, X: Any, y: Any, sample_weight: Any, *, partial: bool) -> Any:
        self._check_common()
        self._check_cluster()
        loss, alpha, l1_ratio, extra = self._objective()
        lazy = _is_lazy(X)
        first = not (partial and hasattr(self, "coef_"))
        if lazy:
            X, y, sample_weight = _lazy_inputs(X, y, sample_weight)
            if y is None:
                raise ValueError(
                    f"{type(self).__name__} requires y to be passed, but the target y is None "
                    "(and the dataset has none)"
                )
            if first:
                self.n_features_in_ = X.shape[1]
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input"
                )
            y = y.astype(X.dtype)
            if isinstance(sample_weight, numbers.Number):
                sample_weight = da.full(X.shape[0], sample_weight, chunks=X.chunks[0],
                                        dtype=X.dtype)  # fmt: skip
            data = (X, y) if sample_weight is None else (X, y, sample_weight)
        else:
            X, y = validate_data(self, X, y, reset=first, dtype=[np.float64, np.float32],
                                 order="C", y_numeric=True)  # fmt: skip
            y = np.ascontiguousarray(y, dtype=X.dtype)
            sample_weight = _check_sample_weight(sample_weight, X.shape[0], X.dtype)
            data = (X, y) if sample_weight is None else (X, y, sample_weight)
        warm = not first or (getattr(self, "warm_start", False) and hasattr(self, "coef_"))
        result = self._run(
            data,
            loss=loss,
            alpha=alpha,
            l1_ratio=l1_ratio,
            max_iter=1 if partial else self.max_iter,
            tol=None if partial else self.tol,
            eta0=self._eta0(),
            coef_init=np.asarray(self.coef_, dtype=np.float64) if warm else None,
            intercept_init=float(self.intercept_[0]) if warm else None,
            desc=type(self).__name__,
            lazy=lazy,
            partial=partial,
            **extra,
        )
        self.coef_ = np.asarray(result.coef_, dtype=np.float64).ravel()
        self.intercept_ = np.atleast_1d(np.asarray(result.intercept_, dtype=np.float64))
        self.n_iter_ = max(1, int(result.n_iter_))
        self.n_updates_ = int(result.n_updates_)
        self.converged_ = bool(result.converged_)
        self.history_ = history_to_dict(result.history)
        if not partial:
            self._warn_unconverged([result], self.tol)
        return self

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit the model on the cluster.

        Parameters
        ----------
        X : array-like, dask array, Dataset or str
            ``(n_samples, n_features)`` features, or a dataset (then ``y`` may be omitted).
        y : array-like or dask array, optional
            Targets.
        sample_weight : array-like or dask array, optional
            Non-negative row weights.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, partial=False)

    def _decision(self, X: Any) -> Any:
        check_is_fitted(self)
        coef, b = self.coef_, float(self.intercept_[0])
        if _is_lazy(X):
            X, _, _ = _lazy_inputs(X, None, None)
            self._check_n_features(X.shape[1])
            return _dask_map(X, lambda blk: blk @ coef.astype(blk.dtype) + b, None, X.dtype)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return X @ coef.astype(X.dtype) + b

    def _check_n_features(self, d: int) -> None:
        if d != self.n_features_in_:
            raise ValueError(
                f"X has {d} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )

    def predict(self, X: Any) -> Any:
        """Predicted targets: numpy for numpy input, a lazy dask array for dask input.

        Parameters
        ----------
        X : array-like, dask array, Dataset or str

        Returns
        -------
        numpy.ndarray or dask.array.Array of shape (n_samples,)
        """
        return self._decision(X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """R² of the predictions (a lazy dask scalar for dask input).

        Parameters
        ----------
        X : array-like, dask array, Dataset or str
        y : array-like or dask array, optional (taken from the dataset when omitted)
        sample_weight : array-like, optional

        Returns
        -------
        float or dask.array.Array
        """
        if not _is_lazy(X):
            return super().score(X, y, sample_weight)
        Xd, yd, sw = _lazy_inputs(X, y, sample_weight)
        if yd is None:
            raise ValueError("score needs y (the dataset has no targets)")
        pred = self.predict(Xd)
        w = da.ones_like(yd, dtype=np.float64) if sw is None else sw.astype(np.float64)
        yd = yd.astype(np.float64)
        mean = (w * yd).sum() / w.sum()
        ss_res = (w * (yd - pred) ** 2).sum()
        ss_tot = (w * (yd - mean) ** 2).sum()
        return 1.0 - ss_res / ss_tot

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


class SGDRegressor(_LinearRegressorBase):
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
        self.client = client
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every

    def _objective(self) -> tuple[str, float, float, dict[str, Any]]:
        if self.loss not in _REGRESSION_LOSSES:
            raise ValueError(f"loss must be one of {_REGRESSION_LOSSES}, got {self.loss!r}")
        alpha, l1_ratio = _sgd_penalty(self.penalty, self.alpha, self.l1_ratio)
        return self.loss, alpha, l1_ratio, _sgd_extra(self)

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


class LinearRegression(_LinearRegressorBase):
    """Ordinary least squares solved on the cluster by full-batch L-BFGS (by default).

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
        "auto" is "lbfgs" (one pass over the data per round, a line search on the exact
        loss) for full-batch sync fits, else "sgd". Any :func:`daskgd.fit` optimizer.
    mode, max_staleness, client
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


# --------------------------------------------------------------------------------------------
# Classifiers
# --------------------------------------------------------------------------------------------


def _sgd_penalty(penalty: str | None, alpha: float, l1_ratio: float) -> tuple[float, float]:
    if penalty not in _PENALTIES:
        raise ValueError(f"penalty must be 'l2', 'l1', 'elasticnet' or None, got {penalty!r}")
    if not (isinstance(alpha, numbers.Real) and alpha >= 0):
        raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
    if penalty is None:
        return 0.0, 0.0
    ratio = _PENALTIES[penalty]
    if ratio is None:
        if not (isinstance(l1_ratio, numbers.Real) and 0 <= l1_ratio <= 1):
            raise ValueError(f"l1_ratio must lie in [0, 1], got {l1_ratio!r}")
        ratio = float(l1_ratio)
    return float(alpha), float(ratio)


def _sgd_extra(est: Any) -> dict[str, Any]:
    """Engine options of the SGD estimators besides the objective."""
    if est.learning_rate not in ("constant", "invscaling", "step"):
        raise ValueError(
            "learning_rate must be 'constant', 'invscaling' or 'step', got "
            f"{est.learning_rate!r} (scikit-learn's 'optimal' and 'adaptive' are not offered)"
        )
    if not (isinstance(est.n_iter_no_change, numbers.Integral) and int(est.n_iter_no_change) >= 1):
        raise ValueError(f"n_iter_no_change must be >= 1, got {est.n_iter_no_change!r}")
    extra: dict[str, Any] = {
        "lr_schedule": est.learning_rate,
        "n_iter_no_change": int(est.n_iter_no_change),
    }
    if est.learning_rate == "invscaling":
        extra["power_t"] = float(est.power_t)
    if getattr(est, "loss", None) == "huber":
        extra["epsilon"] = float(est.epsilon)
    if not 0 < est.validation_fraction < 1:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {est.validation_fraction!r}")
    return extra


class _LinearClassifierBase(_Runner, ClassifierMixin, BaseEstimator):
    """Shared fit/predict of the classifiers: label encoding, binary, multinomial, OvR."""

    # Fitted attributes (set by fit; declared here for the type checker only).
    coef_: np.ndarray
    intercept_: np.ndarray

    def _objective(self, n_samples_weight: float) -> tuple[str, float, float, dict[str, Any]]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _multinomial(self, loss: str) -> bool:
        return loss == "log_loss"

    def _fit(
        self, X: Any, y: Any, sample_weight: Any, *, partial: bool, classes: Any = None
    ) -> Any:
        self._check_common()
        self._check_cluster()
        lazy = _is_lazy(X)
        first = not (partial and hasattr(self, "coef_"))
        if lazy:
            X, y, sample_weight = _lazy_inputs(X, y, sample_weight)
            if y is None:
                raise ValueError(
                    f"{type(self).__name__} requires y to be passed, but the target y is None "
                    "(and the dataset has none)"
                )
            if first:
                self.n_features_in_ = X.shape[1]
            else:
                self._check_n_features(X.shape[1])
            if isinstance(sample_weight, numbers.Number):
                sample_weight = da.full(X.shape[0], sample_weight, chunks=X.chunks[0],
                                        dtype=X.dtype)  # fmt: skip
        else:
            X, y = validate_data(self, X, y, reset=first, dtype=[np.float64, np.float32],
                                 order="C")  # fmt: skip
            check_classification_targets(y)
            sample_weight = _check_sample_weight(sample_weight, X.shape[0], X.dtype)
        if first:
            self.classes_ = self._find_classes(y, classes, partial)
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes={classes!r} differs from the classes of the first partial_fit "
                f"call, {self.classes_!r}"
            )
        k = len(self.classes_)
        codes = self._encode(y, lazy)
        sample_weight = self._apply_class_weight(codes, sample_weight, X.dtype, lazy)
        sum_w = self._sum(sample_weight, X.shape[0])
        loss, alpha, l1_ratio, extra = self._objective(sum_w)
        eta0 = self._eta0()
        warm = not first or (getattr(self, "warm_start", False) and hasattr(self, "coef_"))
        common = {
            "alpha": alpha,
            "l1_ratio": l1_ratio,
            "max_iter": 1 if partial else self.max_iter,
            "tol": None if partial else self.tol,
            "eta0": eta0,
            **extra,
        }
        common["partial"] = partial
        if k == 2:
            yj = self._binary_targets(codes, 1, X.dtype, lazy)
            result = self._run(
                _pack(X, yj, sample_weight),
                loss=loss,
                coef_init=np.asarray(self.coef_[0], dtype=np.float64) if warm else None,
                intercept_init=float(self.intercept_[0]) if warm else None,
                desc=type(self).__name__,
                lazy=lazy,
                **common,
            )
            self.coef_ = np.asarray(result.coef_, dtype=np.float64).reshape(1, -1)
            self.intercept_ = np.asarray([float(np.ravel(result.intercept_)[0])])
        elif not self._multinomial(loss):
            if getattr(self, "checkpoint", None) is not None and not partial:
                raise ValueError(
                    f"checkpoint= holds one model, and one-vs-rest fits {k} (one per class); "
                    "use LogisticRegression (multinomial) or fit without checkpoint"
                )
            # one-vs-rest as one job: the k binary problems are the k columns of one
            # parameter matrix, all stepped by each round (one pass over the data per epoch
            # for all of them, and one round trip per batch instead of k)
            result = self._run(
                _pack(X, codes.astype(X.dtype), sample_weight),
                loss=loss,
                n_classes=k,
                _one_vs_rest=True,
                lazy=lazy,
                coef_init=np.ascontiguousarray(self.coef_.T, dtype=np.float64) if warm else None,
                intercept_init=np.asarray(self.intercept_, dtype=np.float64) if warm else None,
                desc=f"{type(self).__name__} (one-vs-rest, {k} classes)",
                **common,
            )
            self.coef_ = np.ascontiguousarray(np.asarray(result.coef_, dtype=np.float64).T)
            self.intercept_ = np.asarray(result.intercept_, dtype=np.float64).ravel()
        else:
            yk = codes.astype(X.dtype)
            result = self._run(
                _pack(X, yk, sample_weight),
                loss=loss,
                n_classes=k,
                lazy=lazy,
                coef_init=np.ascontiguousarray(self.coef_.T, dtype=np.float64) if warm else None,
                intercept_init=np.asarray(self.intercept_, dtype=np.float64) if warm else None,
                desc=type(self).__name__,
                **common,
            )
            self.coef_ = np.ascontiguousarray(np.asarray(result.coef_, dtype=np.float64).T)
            self.intercept_ = np.asarray(result.intercept_, dtype=np.float64).ravel()
        self.n_iter_ = max(1, int(result.n_iter_))
        self.n_updates_ = int(result.n_updates_)
        self.converged_ = bool(result.converged_)
        if k > 2 and not self._multinomial(loss):
            self.history_ = _one_vs_rest_history(result.history, self.classes_)
        else:
            self.history_ = history_to_dict(result.history)
        if not partial:
            self._warn_unconverged([result], self.tol)
        return self

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit the model on the cluster.

        Parameters
        ----------
        X : array-like, dask array, Dataset or str
            Features, or a dataset (then ``y`` may be omitted).
        y : array-like or dask array, optional
            Class labels of any type.
        sample_weight : array-like or dask array, optional

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, partial=False)

    # -- labels ------------------------------------------------------------------------------

    def _find_classes(self, y: Any, classes: Any, partial: bool) -> np.ndarray:
        if classes is not None:
            found = np.unique(np.asarray(classes))
        elif partial:
            raise ValueError("classes must be passed on the first call to partial_fit")
        elif isinstance(y, da.Array):
            if y.dtype.kind == "f" and not bool(da.all(y == da.round(y)).compute()):
                # scikit-learn refuses continuous targets for numpy input; so do we for dask
                raise DataValidationError(
                    f"{type(self).__name__} needs class labels, but y holds continuous "
                    "(non-integer) values, a regression target; use SGDRegressor or "
                    "LinearRegression, or integer class labels"
                )
            found = np.unique(y.compute() if y.size < 1 else da.unique(y).compute())
        else:
            found = np.unique(y)
        if len(found) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, but "
                f"the data contains only one class: {found[0] if len(found) else None!r}"
            )
        return found

    def _encode(self, y: Any, lazy: bool) -> Any:
        """Class indices 0..k-1 of ``y``; unknown labels are an error."""
        classes = self.classes_

        def encode(block: np.ndarray) -> np.ndarray:
            idx = np.searchsorted(classes, block)
            idx = np.clip(idx, 0, len(classes) - 1)
            bad = classes[idx] != block
            if np.any(bad):
                raise ValueError(
                    f"y contains labels not in classes_ {classes!r}: {np.unique(block[bad])!r}"
                )
            return idx.astype(np.int64)

        if lazy:
            return y.map_blocks(encode, dtype=np.int64, meta=np.empty((0,), dtype=np.int64))
        return encode(np.asarray(y))

    @staticmethod
    def _binary_targets(codes: Any, j: int, dtype: Any, lazy: bool) -> Any:
        """+1 for class ``j``, -1 for the others (the binary losses' convention)."""
        if lazy:
            return da.where(codes == j, 1.0, -1.0).astype(dtype)
        return np.where(codes == j, 1.0, -1.0).astype(dtype)

    def _apply_class_weight(self, codes: Any, sw: Any, dtype: Any, lazy: bool) -> Any:
        cw = getattr(self, "class_weight", None)
        if cw is None:
            return sw
        k = len(self.classes_)
        if cw == "balanced":
            if lazy:
                counts = da.bincount(codes, minlength=k).compute().astype(np.float64)
                per_class = counts.sum() / (k * np.maximum(counts, 1))
            else:
                per_class = compute_class_weight("balanced", classes=np.arange(k), y=codes)
        elif isinstance(cw, dict):
            unknown = set(cw) - set(self.classes_.tolist())
            if unknown:
                raise ValueError(f"class_weight has labels not in the data: {sorted(unknown)!r}")
            per_class = np.array([float(cw.get(c, 1.0)) for c in self.classes_.tolist()])
        else:
            raise ValueError(f"class_weight must be None, 'balanced' or a dict, got {cw!r}")
        per_class = per_class.astype(dtype)
        w = per_class[codes] if not lazy else codes.map_blocks(lambda c: per_class[c], dtype=dtype)
        return w if sw is None else w * sw

    @staticmethod
    def _sum(sw: Any, n: int) -> float:
        if sw is None:
            return float(n)
        total = sw.sum()
        return float(total.compute() if isinstance(total, da.Array) else total)

    def _check_n_features(self, d: int) -> None:
        if d != self.n_features_in_:
            raise ValueError(
                f"X has {d} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )

    # -- prediction ---------------------------------------------------------------------------

    def _margins(self, X: Any) -> Any:
        check_is_fitted(self)
        W, b = self.coef_.T, self.intercept_
        k = W.shape[1]

        def margins(blk: np.ndarray) -> np.ndarray:
            m = blk @ W.astype(blk.dtype) + b.astype(blk.dtype)
            return m[:, 0] if k == 1 else m

        if _is_lazy(X):
            X, _, _ = _lazy_inputs(X, None, None)
            self._check_n_features(X.shape[1])
            return _dask_map(X, margins, None if k == 1 else k, X.dtype)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return margins(X)

    def decision_function(self, X: Any) -> Any:
        """Margins: (n_samples,) for two classes (positive favours ``classes_[1]``), else
        (n_samples, n_classes).

        Parameters
        ----------
        X : array-like, dask array, Dataset or str

        Returns
        -------
        numpy.ndarray or dask.array.Array
        """
        return self._margins(X)

    def predict(self, X: Any) -> Any:
        """Predicted class labels (numpy for numpy input, lazy dask for dask input).

        Parameters
        ----------
        X : array-like, dask array, Dataset or str

        Returns
        -------
        numpy.ndarray or dask.array.Array of shape (n_samples,)
        """
        m = self._margins(X)
        classes = self.classes_

        def labels(block: np.ndarray) -> np.ndarray:
            idx = (block > 0).astype(np.intp) if block.ndim == 1 else block.argmax(axis=1)
            return classes[idx]

        if isinstance(m, da.Array):
            meta = np.empty((0,), dtype=classes.dtype)
            if m.ndim == 1:
                return da.map_blocks(labels, m, dtype=classes.dtype, meta=meta)
            return da.map_blocks(labels, m, drop_axis=1, dtype=classes.dtype, meta=meta)
        return labels(m)

    def _has_proba(self) -> bool:
        return self._proba_loss() == "log_loss"

    def _proba_loss(self) -> str:
        return "log_loss"

    @available_if(_has_proba)
    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, shape (n_samples, n_classes) (log loss only).

        Binary: the logistic sigmoid of the margin; multiclass: the softmax of the margins
        (the multinomial model that was fitted).

        Parameters
        ----------
        X : array-like, dask array, Dataset or str

        Returns
        -------
        numpy.ndarray or dask.array.Array
        """
        from daskgd.objective.losses import link

        m = self._margins(X)
        k = len(self.classes_)

        def proba(block: np.ndarray) -> np.ndarray:
            if block.ndim == 1:
                p1 = link("log_loss", block)
                return np.column_stack([1.0 - p1, p1])
            return link("log_loss", block)

        if isinstance(m, da.Array):
            if m.ndim == 1:
                return da.map_blocks(proba, m, new_axis=1, chunks=(m.chunks[0], (2,)),
                                     dtype=np.float64)  # fmt: skip
            return da.map_blocks(proba, m, chunks=(m.chunks[0], (k,)), dtype=np.float64)
        return proba(m)

    @available_if(_has_proba)
    def predict_log_proba(self, X: Any) -> Any:
        """Logarithm of :meth:`predict_proba`."""
        p = self.predict_proba(X)
        return da.log(p) if isinstance(p, da.Array) else np.log(p)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Accuracy (a lazy dask scalar for dask input).

        Parameters
        ----------
        X : array-like, dask array, Dataset or str
        y : array-like or dask array, optional (taken from the dataset when omitted)
        sample_weight : array-like, optional

        Returns
        -------
        float or dask.array.Array
        """
        if not _is_lazy(X):
            return super().score(X, y, sample_weight)
        Xd, yd, sw = _lazy_inputs(X, y, sample_weight)
        if yd is None:
            raise ValueError("score needs y (the dataset has no targets)")
        hit = (self.predict(Xd) == yd).astype(np.float64)
        if sw is None:
            return hit.mean()
        return (hit * sw).sum() / sw.sum()

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


def _pack(X: Any, y: Any, sw: Any) -> tuple[Any, ...]:
    return (X, y) if sw is None else (X, y, sw)


def _one_vs_rest_history(rows: list[dict[str, Any]], classes: np.ndarray) -> dict[str, list[Any]]:
    """The joint one-vs-rest job's history, one row per class and epoch, with a ``run``
    column (``"class <label>"``) and that class's objective as ``loss``.

    The other columns (time, updates, grad_norm, ...) are the joint job's, shared by the
    classes' rows of an epoch; ``total_loss`` is the sum of the classes' objectives.
    """
    entries = []
    for j, label in enumerate(classes.tolist()):
        for row in rows:
            entry = {key: value for key, value in row.items() if key != "class_loss"}
            entry["total_loss"] = row["loss"]
            entry["loss"] = float(row["class_loss"][j])
            entry["run"] = f"class {label}"
            entries.append(entry)
    return history_to_dict(entries)


class SGDClassifier(_LinearClassifierBase):
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
    batch_size, mode, optimizer, max_staleness, client, checkpoint, checkpoint_every
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
        self.client = client
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every

    def _proba_loss(self) -> str:
        return self.loss

    def _objective(self, n_samples_weight: float) -> tuple[str, float, float, dict[str, Any]]:
        if self.loss not in _CLASSIFICATION_LOSSES:
            raise ValueError(f"loss must be one of {_CLASSIFICATION_LOSSES}, got {self.loss!r}")
        alpha, l1_ratio = _sgd_penalty(self.penalty, self.alpha, self.l1_ratio)
        return self.loss, alpha, l1_ratio, _sgd_extra(self)

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


class LogisticRegression(_LinearClassifierBase):
    """Logistic regression solved on the cluster by full-batch L-BFGS (by default).

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
        "auto" is "lbfgs" (one pass over the data per round, a line search on the exact
        loss) when the objective is smooth and the fit is full-batch sync, else "sgd"
        (proximal gradient descent, which handles L1). Any :func:`daskgd.fit` optimizer.
    mode, max_staleness, client, checkpoint, checkpoint_every
        As for :class:`SGDRegressor`.

    Attributes
    ----------
    classes_, coef_, intercept_, n_iter_, n_updates_, converged_, history_, n_features_in_
        As for :class:`SGDClassifier`.
    """

    _tol_is_gradient = True

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
        self.client = client
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every

    @property
    def eta0(self) -> float | str:
        """The step size (``learning_rate``), under the name the base class reads."""
        return self.learning_rate

    def _objective(self, n_samples_weight: float) -> tuple[str, float, float, dict[str, Any]]:
        if not (isinstance(self.C, numbers.Real) and self.C > 0):
            raise ValueError(f"C must be a positive number, got {self.C!r}")
        if self.penalty == "elasticnet":
            if self.l1_ratio is None:
                raise ValueError("penalty='elasticnet' needs l1_ratio, a number in [0, 1]")
            ratio = self.l1_ratio
        else:
            ratio = 0.0
        _, l1_ratio = _sgd_penalty(self.penalty, 0.0, ratio)
        alpha = 0.0 if self.penalty is None else 1.0 / (self.C * n_samples_weight)
        return "log_loss", alpha, l1_ratio, {}
