"""Cross-validated least squares from one pass: :class:`RidgeCV` and :class:`ElasticNetCV`.

One task per row-chunk returns that chunk's Gram statistics (:func:`~daskgd.sklearn.cv_gram.
squared_stats`, the compiled ``grad_hess`` kernel); the driver sums them per fold. Fold
``k``'s training system is the total minus fold ``k``'s part, its validation error comes
from fold ``k``'s own part, and the final model is solved from the total: every fold x
penalty and the refit cost no further pass over the data.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, ClassVar

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from daskgd.sklearn.base import fit_client
from daskgd.sklearn.cv_folds import CVData, check_grid, cv_data, fold_sums, map_chunks
from daskgd.sklearn.cv_gram import (
    Centered,
    alpha_grid,
    center,
    enet_coordinate_descent,
    enet_path,
    ridge_path,
    ridge_solve,
    squared_stats,
    validation_sse,
)
from daskgd.sklearn.params import BOOL, NON_NEGATIVE, POSITIVE_INT, RANDOM_STATE, TOL, Rule, one_of
from daskgd.sklearn.regression import LinearRegressor

__all__ = ["ElasticNetCV", "RidgeCV"]

CV = Rule(
    lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 2,
    "an integer >= 2 (the number of folds)",
)
_STATS = tuple[np.ndarray, np.ndarray, np.ndarray]
#: most features the Gram statistics are made for (128 MiB per chunk)
MAX_GRAM_FEATURES = 4096


class _GramCV(LinearRegressor):
    """One pass for the per-chunk statistics; the folds' systems from them."""

    _dense_only = True

    fit_intercept: bool
    shuffle: bool
    random_state: Any

    def _statistics(
        self, X: Any, y: Any, sample_weight: Any
    ) -> tuple[CVData, _STATS, list[_STATS]]:
        self._check_params()
        with fit_client(self.client) as client:
            data = cv_data(
                self,
                X,
                y,
                sample_weight,
                client,
                classification=False,
                shuffle=self.shuffle,
                random_state=self.random_state,
            )
            if data.n_features > MAX_GRAM_FEATURES:
                raise ValueError(
                    f"{type(self).__name__} solves from Gram statistics, (d + 1)^2 numbers per "
                    f"row-chunk: {data.n_features} features would take "
                    f"{(data.n_features + 1) ** 2 * 8 / 2**20:.0f} MiB per chunk (at most "
                    f"{MAX_GRAM_FEATURES} features). Fit one penalty at a time with "
                    "daskgd.fit(..., optimizer='lbfgs') or SGDRegressor instead"
                )
            per_chunk = map_chunks(client, data, squared_stats)
        total, folds = fold_sums(per_chunk, data.fold_of)
        return data, (total[0], total[1], total[2]), [(f[0], f[1], f[2]) for f in folds]

    def _train(self, total: _STATS, fold: _STATS) -> Centered:
        G, r, yy = (t - f for t, f in zip(total, fold, strict=True))
        return center(G, r, yy, self.fit_intercept)

    def _set_model(self, theta: np.ndarray) -> None:
        self.coef_ = np.asarray(theta[:-1], dtype=np.float64)
        self.intercept_ = np.array([float(theta[-1]) if self.fit_intercept else 0.0])
        self.n_iter_ = 1
        self.converged_ = True


class RidgeCV(_GramCV):
    """Ridge regression with the penalty chosen by K-fold cross-validation over row-chunks.

    Minimises scikit-learn ``Ridge``'s objective, ``sum_i s_i (x_i @ w + b - y_i)^2 +
    alpha ||w||^2``. One pass over the data (one task per row-chunk, on the workers) gives
    every chunk's Gram statistics; each fold x alpha is then solved in closed form on the
    driver (one eigendecomposition per fold for all alphas), the validation score of each
    comes from the fold's own statistics, and the final model from the total: no further
    pass.

    Parameters
    ----------
    alphas : array-like of float, default (0.1, 1.0, 10.0)
        The penalties to try; each finite and > 0.
    fit_intercept : bool, default True
    scoring : {None, "r2", "neg_mean_squared_error"}, default None
        The fold score to maximise; None is R² as scikit-learn's ``RidgeCV`` with ``cv``
        given. Only these scores follow from the Gram statistics. Weighted by
        ``sample_weight`` when given.
    cv : int, default 5
        Number of folds (an integer only: a fold is a set of whole row-chunks). numpy input
        is cut into scikit-learn ``KFold(cv)``'s folds; lazy input (dask, Dataset, Zarr)
        keeps its row-chunks and ``KFold(cv)`` runs over the chunks, so it needs at least
        ``cv`` of them.
    shuffle : bool, default False
        Shuffle (the rows of numpy input, the chunks of lazy input) before the folds.
    random_state : int, RandomState or None, default None
        Seeds ``shuffle``.
    client : distributed.Client, str or None, default None
        As for :class:`LinearRegression`.

    Attributes
    ----------
    alpha_ : float
    best_score_ : float
        Mean validation score of ``alpha_`` over the folds.
    scores_ : ndarray of shape (n_folds, n_alphas)
        Validation score of each fold and alpha.
    mse_path_ : ndarray of shape (n_alphas, n_folds)
        Validation mean squared error of each alpha and fold.
    coef_ : ndarray of shape (n_features,)
    intercept_ : ndarray of shape (1,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has string feature names.
    """

    _parameter_constraints: ClassVar[dict[str, Rule]] = {
        "fit_intercept": BOOL,
        "scoring": one_of(
            None,
            "r2",
            "neg_mean_squared_error",
            note=" (the scores that follow from Gram statistics)",
        ),
        "cv": CV,
        "shuffle": BOOL,
        "random_state": RANDOM_STATE,
    }

    def __init__(
        self,
        alphas: Any = (0.1, 1.0, 10.0),
        *,
        fit_intercept: bool = True,
        scoring: str | None = None,
        cv: int = 5,
        shuffle: bool = False,
        random_state: Any = None,
        client: Any = None,
    ) -> None:
        self.alphas = alphas
        self.fit_intercept = fit_intercept
        self.scoring = scoring
        self.cv = cv
        self.shuffle = shuffle
        self.random_state = random_state
        self.client = client

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> RidgeCV:
        """Choose alpha by cross-validation, then fit on all the data.

        Parameters
        ----------
        X : array-like, DataFrame, dask array, Dataset or str
        y : array-like or dask array, optional (a dataset's own targets when omitted)
        sample_weight : array-like or dask array, optional

        Returns
        -------
        self
        """
        self._check_params()
        alphas = check_grid("alphas", self.alphas)
        data, total, folds = self._statistics(X, y, sample_weight)
        d = data.n_features
        scores = np.empty((len(folds), len(alphas)))
        mse = np.empty((len(alphas), len(folds)))
        for k, (G, r, yy) in enumerate(folds):
            thetas = ridge_path(self._train(total, (G, r, yy)), alphas)
            sse = validation_sse(G, r, yy, thetas)
            n_val = float(G[d, d])
            mse[:, k] = sse / n_val
            if self.scoring == "neg_mean_squared_error":
                scores[k] = -mse[:, k]
            else:  # R² of the fold, about its own weighted mean
                sst = float(yy[0]) - float(r[d]) ** 2 / n_val
                scores[k] = 1.0 - sse / sst if sst > 0 else np.where(sse > 0, -np.inf, 1.0)
        mean = scores.mean(axis=0)
        best = int(np.argmax(mean))  # the first of equal scores, as GridSearchCV ranks them
        self.alpha_ = float(alphas[best])
        self.best_score_ = float(mean[best])
        self.scores_ = scores
        self.mse_path_ = mse
        self._set_model(ridge_solve(center(*total, self.fit_intercept), self.alpha_))
        return self


class ElasticNetCV(_GramCV):
    """Elastic net along a path of alphas, chosen by K-fold cross-validation over row-chunks.

    Minimises scikit-learn ``ElasticNet``'s objective, ``1/(2 sum(s)) sum_i s_i (x_i @ w + b -
    y_i)^2 + alpha l1_ratio ||w||_1 + alpha (1 - l1_ratio)/2 ||w||^2``. One pass over the
    data gives every chunk's Gram statistics; each fold's path (every alpha, largest first,
    each warm-started from the last) is solved on the driver by coordinate descent on its
    Gram matrix (scikit-learn's ``precompute=True`` algorithm and stopping rule, the duality
    gap), scored on the fold's own statistics, and the final model is solved from the total.

    Parameters
    ----------
    l1_ratio : float or array-like of float, default 0.5
        Elastic-net mixing in [0, 1]; a list is searched too.
    eps : float, default 1e-3
        ``alpha_min / alpha_max`` of an automatic grid.
    alphas : int or array-like of float, default 100
        An int: that many alphas on scikit-learn's grid (from ``alpha_max``, the smallest
        alpha that zeroes every coefficient, down to ``eps * alpha_max``, computed from all
        the data per l1_ratio). A list: those alphas (each finite and >= 0).
    fit_intercept : bool, default True
    max_iter : int, default 1000
        Most coordinate-descent sweeps per alpha.
    tol : float, default 1e-4
        Stop when the duality gap is below ``tol * y^T W y`` (centred), as scikit-learn.
    cv, shuffle, random_state, client
        As for :class:`RidgeCV` (``random_state`` seeds ``shuffle``).

    Attributes
    ----------
    alpha_, l1_ratio_ : float
        The chosen penalty.
    alphas_ : ndarray of shape (n_alphas,) or (n_l1_ratio, n_alphas)
    mse_path_ : ndarray of shape (n_alphas, n_folds) or (n_l1_ratio, n_alphas, n_folds)
        Validation mean squared error of each l1_ratio, alpha and fold.
    coef_, intercept_ : the final model (``intercept_`` of shape (1,))
    dual_gap_ : float
        The final fit's duality gap (in units of half the residual sum of squares).
    n_iter_ : int
        The final fit's coordinate-descent sweeps.
    n_features_in_, feature_names_in_
        As for :class:`RidgeCV`.
    """

    _parameter_constraints: ClassVar[dict[str, Rule]] = {
        "eps": Rule(lambda v: NON_NEGATIVE.test(v) and float(v) > 0, "a positive number"),
        "fit_intercept": BOOL,
        "max_iter": POSITIVE_INT,
        "tol": Rule(lambda v: TOL.test(v) and v is not None, "a number >= 0"),
        "cv": CV,
        "shuffle": BOOL,
        "random_state": RANDOM_STATE,
    }

    def __init__(
        self,
        *,
        l1_ratio: Any = 0.5,
        eps: float = 1e-3,
        alphas: Any = 100,
        fit_intercept: bool = True,
        max_iter: int = 1000,
        tol: float = 1e-4,
        cv: int = 5,
        shuffle: bool = False,
        random_state: Any = None,
        client: Any = None,
    ) -> None:
        self.l1_ratio = l1_ratio
        self.eps = eps
        self.alphas = alphas
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.cv = cv
        self.shuffle = shuffle
        self.random_state = random_state
        self.client = client

    def _n_alphas(self) -> int | None:
        """``alphas`` as a number of alphas (checked), or None for a list."""
        if isinstance(self.alphas, numbers.Integral) and not isinstance(self.alphas, bool):
            if int(self.alphas) < 1:
                raise ValueError(
                    f"alphas must be a positive number of alphas or a non-empty "
                    f"list of alphas, got {self.alphas!r}"
                )
            return int(self.alphas)
        check_grid("alphas", self.alphas, allow_zero=True)
        return None

    def _grids(self, c: Centered, l1_ratios: np.ndarray) -> np.ndarray:
        if self._n_alphas() is not None:
            return np.array(
                [alpha_grid(c, float(r), float(self.eps), int(self.alphas)) for r in l1_ratios]
            )
        grid = np.sort(check_grid("alphas", self.alphas, allow_zero=True))[::-1]
        return np.tile(grid, (len(l1_ratios), 1))

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> ElasticNetCV:
        """Choose alpha (and l1_ratio) by cross-validation, then fit on all the data.

        Parameters
        ----------
        X : array-like, DataFrame, dask array, Dataset or str
        y : array-like or dask array, optional (a dataset's own targets when omitted)
        sample_weight : array-like or dask array, optional

        Returns
        -------
        self
        """
        self._check_params()
        l1_ratios = np.atleast_1d(np.asarray(self.l1_ratio, dtype=np.float64))
        if (
            l1_ratios.ndim != 1
            or l1_ratios.size == 0
            or np.any(~((l1_ratios >= 0) & (l1_ratios <= 1)))
        ):
            raise ValueError(
                f"l1_ratio must be a number in [0, 1] or a non-empty list of them, "
                f"got {self.l1_ratio!r}"
            )
        self._n_alphas()  # checked before any pass
        data, total, folds = self._statistics(X, y, sample_weight)
        d = data.n_features
        everything = center(*total, self.fit_intercept)
        grids = self._grids(everything, l1_ratios)
        mse = np.empty((len(l1_ratios), len(folds), grids.shape[1]))
        for i, ratio in enumerate(l1_ratios):
            for k, (G, r, yy) in enumerate(folds):
                c = self._train(total, (G, r, yy))
                thetas, _, _ = enet_path(c, grids[i], float(ratio), self.max_iter, self.tol)
                mse[i, k] = validation_sse(G, r, yy, thetas) / float(G[d, d])
        mean = mse.mean(axis=1)
        best_mse, best_alpha, best_ratio = np.inf, 0.0, 0.0
        for ratio, alphas, row in zip(l1_ratios, grids, mean, strict=True):
            j = int(np.argmin(row))
            if row[j] < best_mse:  # the first of equal errors, as scikit-learn
                best_mse, best_alpha, best_ratio = float(row[j]), float(alphas[j]), float(ratio)
        self.alpha_, self.l1_ratio_ = best_alpha, best_ratio
        self.mse_path_ = np.squeeze(np.moveaxis(mse, 2, 1))
        self.alphas_ = (
            grids[0]
            if len(l1_ratios) == 1 or not isinstance(self.alphas, numbers.Integral)
            else grids
        )
        w, gap, sweeps = enet_coordinate_descent(
            everything, best_alpha, best_ratio, np.zeros(d), self.max_iter, self.tol
        )
        self._set_model(np.append(w, everything.y_mean - everything.x_mean @ w))
        self.dual_gap_ = float(gap)
        self.n_iter_ = int(sweeps)
        self.converged_ = bool(gap <= self.tol * everything.yy)
        if not self.converged_:
            warnings.warn(
                f"ElasticNetCV: the final fit (alpha={best_alpha:.4g}, l1_ratio={best_ratio}) "
                f"did not reach tol={self.tol} in {self.max_iter} sweeps (duality gap "
                f"{gap:.3g}); increase max_iter, scale the features, or loosen tol",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self
