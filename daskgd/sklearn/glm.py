"""Generalized linear models with a log link: :class:`PoissonRegressor`,
:class:`GammaRegressor` and :class:`TweedieRegressor`.

They minimise scikit-learn's objective for these models,

    (1 / sum_i s_i) * sum_i s_i * d(y_i, mu_i) / 2 + alpha / 2 * ||coef||^2,

with ``d`` the unit deviance of the family, ``mu_i = exp(x_i @ coef + b + o_i)`` and ``o_i``
the row's offset (``log(exposure)``; 0 without). The engine's losses (``poisson``,
``gamma``, ``tweedie`` in :mod:`daskgd.objective.losses`) are these half deviances up to
terms that do not depend on the parameters, and daskgd's regularizer with ``l1_ratio=0``
is exactly ``alpha / 2 * ||coef||^2``: the optimum is scikit-learn's.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import dask.array as da
import numpy as np
from sklearn.utils.validation import check_is_fitted, validate_data

from daskgd.data import Dataset, as_dataset
from daskgd.sklearn.families import (
    GLM_PARAMS,
    POWER,
    family_loss,
    solver_optimizer,
    unit_deviance,
)
from daskgd.sklearn.glm_start import log_mean_intercept
from daskgd.sklearn.inputs import (
    dask_map,
    is_lazy,
    lazy_features,
    lazy_inputs,
    offset_array,
)
from daskgd.sklearn.params import Rule, one_of
from daskgd.sklearn.regression import LinearRegressor

__all__ = ["GammaRegressor", "PoissonRegressor", "TweedieRegressor"]


class _GLM(LinearRegressor):
    """Shared fit/predict/score of the log-link GLMs; subclasses give the power."""

    _tol_is_gradient = True
    _parameter_constraints: ClassVar[dict[str, Rule]] = GLM_PARAMS
    verbose: int | str
    solver: str

    def _family(self) -> tuple[str, float, str]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _objective(self) -> tuple[str, float, float, dict[str, Any]]:
        loss, power, _ = self._family()
        extra: dict[str, Any] = {"optimizer": solver_optimizer(self.solver, float(self.alpha))}
        if loss == "tweedie":  # only its loss reads the power (the others: 0, 1, 2)
            extra["power"] = power
        if self.warm_start and hasattr(self, "coef_") and self.tol is not None:
            # from a fitted model the gradient at the start is already small, so a tolerance
            # relative to it asks for more than floating point gives: also stop on the
            # absolute norm (scikit-learn's lbfgs tests max |g_j| <= tol; the objective is a
            # weighted mean, so its gradient has the same scale for any data size)
            extra["gtol"] = float(self.tol)
        return loss, float(self.alpha), 0.0, extra

    def _check_y(self, y: np.ndarray) -> None:
        loss, power, _ = self._family()
        if loss == "squared_error":
            return
        positive = loss == "gamma" or (loss == "tweedie" and power >= 2.0)
        bad = (y <= 0) if positive else (y < 0)
        if np.any(bad):
            first = int(np.flatnonzero(bad)[0])
            need = "positive targets (y > 0)" if positive else "non-negative targets (y >= 0)"
            fix = "Drop the rows with y <= 0 or use" if positive else "Use"
            raise ValueError(
                f"{type(self).__name__} (power={power:g}) needs {need}; y[{first}] = "
                f"{float(y[first])!r}. {fix} a family whose targets include such values"
            )
        if self.fit_intercept and not np.any(y > 0):
            raise ValueError(
                f"every target is 0: {type(self).__name__}'s intercept would go to -inf "
                "(the predicted mean to 0); there is nothing to fit"
            )

    def _start_intercept(self, data: Any, client: Any) -> float | None:
        """``log`` of the weighted mean target over the mean exposure (the optimum of a
        Poisson model with an intercept alone), where scikit-learn starts too: far from it,
        the first steps of the log link overflow."""
        _, _, link = self._family()
        if not self.fit_intercept or link != "log":
            return None
        return log_mean_intercept(data, client)

    def fit(
        self, X: Any, y: Any = None, sample_weight: Any = None, offset: Any = None
    ) -> Any:  # fmt: skip
        """Fit the model on the cluster.

        Parameters
        ----------
        X : array-like, DataFrame (pandas or dask), dask array, Dataset or str
            ``(n_samples, n_features)`` features, or a dataset (then ``y``, the weights
            and the offsets may come from it).
        y : array-like, dask array or Series, optional
            Targets: >= 0 (Poisson, Tweedie with 1 <= power < 2) or > 0 (Gamma, Tweedie
            with power >= 2).
        sample_weight : array-like or dask array, optional
            Non-negative row weights.
        offset : array-like or dask array, optional
            ``(n_samples,)`` finite offsets added to the linear predictor:
            ``log(exposure)`` for rates (pass ``offset=np.log(exposure)``, not the
            exposure). Default: the dataset's ``offset`` array, if any.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, partial=False, offset=offset)

    def _linear(self, X: Any, offset: Any) -> Any:
        """``X @ coef + b + offset``: numpy for numpy ``X``, else lazy."""
        check_is_fitted(self)
        coef, b = self.coef_, float(self.intercept_[0])
        if not is_lazy(X):
            X = validate_data(
                self, X, reset=False, dtype=[np.float64, np.float32], accept_sparse="csr"
            )
            eta = X @ coef.astype(X.dtype) + b
            off = offset_array(offset, X.shape[0])
            return eta if off is None else eta + off
        self._check_frame_names(X, reset=False)
        if offset is None and isinstance(X, str | os.PathLike | Dataset):
            ds = X if isinstance(X, Dataset) else as_dataset(X, validate=False)
            offset, X = ds.offset, ds.X
        Xd = lazy_features(X)
        self._check_n_features(Xd.shape[1])
        eta = dask_map(Xd, lambda blk: blk @ coef.astype(blk.dtype) + b, None, Xd.dtype)
        if offset is None:
            return eta
        off = da.asarray(offset).astype(np.float64)
        if off.shape != eta.shape:
            raise ValueError(f"offset has shape {off.shape}, X has {eta.shape[0]} rows")
        return eta + off.rechunk(eta.chunks)

    def predict(self, X: Any, offset: Any = None) -> Any:
        """The predicted mean ``exp(X @ coef_ + intercept_ + offset)`` (the identity link
        of ``TweedieRegressor(power=0)``: no ``exp``).

        Parameters
        ----------
        X : array-like, DataFrame, dask array, Dataset or str
        offset : array-like or dask array, optional
            Per-row offsets (``log(exposure)``); default: the dataset's, else none.

        Returns
        -------
        numpy.ndarray or dask.array.Array of shape (n_samples,)
        """
        eta = self._linear(X, offset)
        if self._family()[2] == "identity":
            return eta
        return da.exp(eta) if isinstance(eta, da.Array) else np.exp(eta)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None, offset: Any = None) -> Any:
        """D², the fraction of deviance explained (scikit-learn's ``d2_tweedie_score``
        with the family's power; R² for power 0); lazy for lazy input.

        Parameters
        ----------
        X : array-like, DataFrame, dask array, Dataset or str
        y : array-like or dask array, optional (taken from the dataset when omitted)
        sample_weight : array-like, optional
        offset : array-like, optional

        Returns
        -------
        float or dask.array.Array
        """
        _, power, _ = self._family()
        if not is_lazy(X):
            from sklearn.metrics import d2_tweedie_score

            mu = self.predict(X, offset)
            return d2_tweedie_score(y, mu, sample_weight=sample_weight, power=power)
        check_is_fitted(self)
        _, yd, sw, _ = lazy_inputs(X, y, sample_weight)
        if yd is None:
            raise ValueError("score needs y (the dataset has no targets)")
        mu = self.predict(X, offset)
        w = da.ones_like(yd, dtype=np.float64) if sw is None else sw.astype(np.float64)
        yd = yd.astype(np.float64).rechunk(mu.chunks)
        w = w.rechunk(mu.chunks)
        mean = (w * yd).sum() / w.sum()
        num = (w * unit_deviance(yd, mu, power)).sum()
        den = (w * unit_deviance(yd, mean, power)).sum()
        return 1.0 - num / den

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = self._family()[0] != "squared_error"
        return tags


_DOC_PARAMS = """
    Parameters
    ----------
    alpha : float, default 1.0
        L2 penalty: the objective adds ``alpha / 2 * ||coef||^2`` (the intercept is not
        penalised).
    fit_intercept : bool, default True
    solver : {"auto", "lbfgs", "newton", "newton-cholesky"}, default "auto"
        "lbfgs": full-batch L-BFGS on the parameter server; "newton" (scikit-learn's
        "newton-cholesky" is the same name here): Newton steps from the summed Hessians;
        "auto": the estimators' choice (:func:`daskgd.sklearn.params.resolve_optimizer`).
    max_iter : int, default 100
        Most epochs (passes over the data).
    tol : float or None, default 1e-4
        Stop, converged, when the gradient norm of the objective is at most ``tol``
        times its value at the start (None: run ``max_iter`` epochs).
    warm_start : bool, default False
        Start from the previous fit's coefficients; the fit then also stops when the
        gradient norm is at most ``tol`` itself (it starts small there).
    verbose : int or "auto", default 0
        Progress bar: 0 never, 1 always, "auto" when stderr is a terminal.
    client : distributed.Client, str or None, default None
        The cluster (see :class:`daskgd.SGDRegressor`).
    checkpoint, checkpoint_every
        As for :class:`daskgd.SGDRegressor`.
"""

_DOC_ATTRS = """
    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : ndarray of shape (1,)
    n_iter_, n_updates_, converged_, history_, n_features_in_, feature_names_in_
        As for :class:`daskgd.LinearRegression`.
"""


class _FixedPower(_GLM):
    """Poisson and Gamma: scikit-learn's parameters, the power fixed."""

    _power: ClassVar[float]

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        fit_intercept: bool = True,
        solver: str = "auto",
        max_iter: int = 100,
        tol: float | None = 1e-4,
        warm_start: bool = False,
        verbose: int | str = 0,
        client: Any = None,
        checkpoint: str | None = None,
        checkpoint_every: int = 10,
    ) -> None:
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.warm_start = warm_start
        self.verbose = verbose
        self.client = client
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every

    def _family(self) -> tuple[str, float, str]:
        return family_loss(self._power)[0], self._power, "log"


class PoissonRegressor(_FixedPower):
    __doc__ = (
        """Poisson regression (log link) on the cluster: counts or rates, with offsets.

    Minimises scikit-learn's ``PoissonRegressor`` objective: the weighted mean half
    Poisson deviance plus ``alpha / 2 * ||coef||^2``; targets ``y >= 0``.
    """
        + _DOC_PARAMS
        + _DOC_ATTRS
    )
    _power = 1.0


class GammaRegressor(_FixedPower):
    __doc__ = (
        """Gamma regression (log link) on the cluster: positive, skewed targets.

    Minimises scikit-learn's ``GammaRegressor`` objective: the weighted mean half Gamma
    deviance plus ``alpha / 2 * ||coef||^2``; targets ``y > 0``.
    """
        + _DOC_PARAMS
        + _DOC_ATTRS
    )
    _power = 2.0


class TweedieRegressor(_GLM):
    __doc__ = (
        """Tweedie regression on the cluster (scikit-learn's ``TweedieRegressor``).

    ``power=0``: least squares (identity link); 1: Poisson; in (1, 2): compound
    Poisson-Gamma (targets >= 0, zeros allowed); 2: Gamma; > 2 (e.g. 3, inverse
    Gaussian): targets > 0; all with the log link. Powers in (0, 1) do not exist and
    are refused, as scikit-learn does; so are negative powers.
    """
        + _DOC_PARAMS.replace(
            "    solver :",
            """    power : float, default 0.0
        The Tweedie power.
    link : {"auto", "log", "identity"}, default "auto"
        "auto": identity for ``power=0``, else log; "identity" takes ``power=0`` only.
    solver :""",
        )
        + _DOC_ATTRS
    )

    _parameter_constraints: ClassVar[dict[str, Rule]] = {
        **GLM_PARAMS,
        "power": POWER,
        "link": one_of("auto", "log", "identity"),
    }

    def __init__(
        self,
        *,
        power: float = 0.0,
        alpha: float = 1.0,
        fit_intercept: bool = True,
        link: str = "auto",
        solver: str = "auto",
        max_iter: int = 100,
        tol: float | None = 1e-4,
        warm_start: bool = False,
        verbose: int | str = 0,
        client: Any = None,
        checkpoint: str | None = None,
        checkpoint_every: int = 10,
    ) -> None:
        self.power = power
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.link = link
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.warm_start = warm_start
        self.verbose = verbose
        self.client = client
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every

    def _family(self) -> tuple[str, float, str]:
        loss, link = family_loss(self.power, self.link)
        return loss, float(self.power), link
