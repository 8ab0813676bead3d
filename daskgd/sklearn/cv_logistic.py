"""Cross-validated logistic regression along a path of ``C``: :class:`LogisticRegressionCV`.

The row-chunks are read once into their workers' memory; every round after that is one task
per chunk that evaluates all the fold models training on it (:mod:`~daskgd.sklearn.cv_newton`),
so K folds advance along their paths together, one pass per Newton step of the slowest.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, ClassVar

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from daskgd.sklearn.base import fit_client
from daskgd.sklearn.cv_chunks import EvaluatorPool
from daskgd.sklearn.cv_folds import check_grid, cv_data, fold_sums, map_chunks, persist_chunks
from daskgd.sklearn.cv_newton import ADDITIVE_SCORES, PathModel, run_paths, score_fold
from daskgd.sklearn.cv_tasks import weight_sum
from daskgd.sklearn.linear_classifier import LinearClassifier
from daskgd.sklearn.params import BOOL, POSITIVE_INT, RANDOM_STATE, TOL, Rule, one_of

__all__ = ["LogisticRegressionCV"]


def _scorer_ok(v: Any) -> bool:
    if v is None or callable(v):
        return True
    if not isinstance(v, str):
        return False
    from sklearn.metrics import get_scorer_names

    return v in get_scorer_names()


class LogisticRegressionCV(LinearClassifier):
    """Binary logistic regression with ``C`` chosen by K-fold cross-validation over row-chunks.

    Minimises scikit-learn's objective ``C * sum_i s_i loss_i + 0.5 ||w||^2`` for every ``C``
    of the path in every fold, by Newton's method (Cholesky solves, a backtracking line
    search) with warm starts along the path, as scikit-learn's ``solver="newton-cholesky"``.
    The chunks are read once and kept in the workers' memory; each round is one pass in
    which every chunk evaluates (compiled ``grad_hess`` kernel) all the fold models that
    train on it, so the K folds advance together. Each fold's models are scored on its own
    chunks, on the workers. With ``refit``, the final model is fitted on all the data from
    the mean of the best fold models, in the same way.

    Parameters
    ----------
    Cs : int or array-like of float, default 10
        An int: ``np.logspace(-4, 4, Cs)`` (scikit-learn's grid); else the values of C
        (each finite and > 0), tried in the order given, each warm-started from the last.
    fit_intercept : bool, default True
    cv : int, default 5
        Number of folds (an integer only: a fold is a set of whole row-chunks). numpy input
        is cut into scikit-learn ``KFold(cv)``'s folds (scikit-learn's own default is
        ``StratifiedKFold``); lazy input keeps its row-chunks and needs at least ``cv``.
    penalty : {"l2"}, default "l2"
        Only the L2 path is offered.
    scoring : str, callable or None, default None
        A scikit-learn scorer name (``sklearn.metrics.get_scorer``) or scorer; None is
        accuracy (scikit-learn's default). Computed on the workers, weighted when
        ``sample_weight`` is given.
    tol : float, default 1e-4
        A C's fit has converged when the largest entry of the gradient of the objective
        divided by ``C * sum(sample_weight)`` is at most ``tol`` (scikit-learn's rule).
    max_iter : int, default 100
        Most Newton steps per C.
    refit : bool, default True
        Fit the final model on all the data at the best C (else: the mean of the folds'
        best models, as scikit-learn).
    l1_ratios : None, default None
        Only None (the L2 path); kept for scikit-learn's signature.
    shuffle : bool, default False
        Shuffle (the rows of numpy input, the chunks of lazy input) before the folds.
    random_state : int, RandomState or None, default None
        Seeds ``shuffle``.
    client : distributed.Client, str or None, default None
        As for :class:`LogisticRegression`.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
    Cs_ : ndarray of shape (n_cs,)
    C_ : ndarray of shape (1,)
        The chosen C (``refit=False``: the mean of each fold's best C).
    l1_ratio_ : ndarray of shape (1,)
        ``[None]``: the L2 path.
    coef_ : ndarray of shape (1, n_features)
    intercept_ : ndarray of shape (1,)
    scores_ : dict
        ``{classes_[1]: ndarray (n_folds, n_cs)}``, each fold's validation score per C.
    coefs_paths_ : dict
        ``{classes_[1]: ndarray (n_folds, n_cs, n_features [+ 1])}``.
    n_iter_ : ndarray of shape (1, n_folds, n_cs)
        Newton steps of each fold and C.
    n_passes_ : int
        Passes over the data: the read into memory, the path's rounds, the scoring and the
        refit's rounds (and one for the weight sums of weighted data).
    converged_ : bool
        Whether every C of every fold (and the refit) met ``tol``; else a
        ``ConvergenceWarning`` says which.
    n_features_in_, feature_names_in_
        As for :class:`LogisticRegression`.
    """

    _parameter_constraints: ClassVar[dict[str, Rule]] = {
        "fit_intercept": BOOL,
        "cv": Rule(
            lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 2,
            "an integer >= 2 (the number of folds)",
        ),
        "penalty": one_of("l2", note=" (only the L2 path is offered)"),
        "scoring": Rule(_scorer_ok, "None, a callable or a scorer name of sklearn.metrics"),
        "tol": Rule(lambda v: TOL.test(v) and v is not None, "a number >= 0"),
        "max_iter": POSITIVE_INT,
        "refit": BOOL,
        "l1_ratios": Rule(lambda v: v is None, "None (only the L2 path is offered)"),
        "shuffle": BOOL,
        "random_state": RANDOM_STATE,
    }

    def __init__(
        self,
        *,
        Cs: Any = 10,
        fit_intercept: bool = True,
        cv: int = 5,
        penalty: str = "l2",
        scoring: Any = None,
        tol: float = 1e-4,
        max_iter: int = 100,
        refit: bool = True,
        l1_ratios: Any = None,
        shuffle: bool = False,
        random_state: Any = None,
        client: Any = None,
    ) -> None:
        self.Cs = Cs
        self.fit_intercept = fit_intercept
        self.cv = cv
        self.penalty = penalty
        self.scoring = scoring
        self.tol = tol
        self.max_iter = max_iter
        self.refit = refit
        self.l1_ratios = l1_ratios
        self.shuffle = shuffle
        self.random_state = random_state
        self.client = client

    def _loss(self) -> str:
        return "log_loss"

    def _grid(self) -> np.ndarray:
        if isinstance(self.Cs, numbers.Integral) and not isinstance(self.Cs, bool):
            if int(self.Cs) < 1:
                raise ValueError(
                    f"Cs must be a positive number of Cs or a non-empty list of Cs, got {self.Cs!r}"
                )
            return np.logspace(-4, 4, int(self.Cs))
        return check_grid("Cs", self.Cs)

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> LogisticRegressionCV:
        """Cross-validate the path of C, then fit the final model.

        Parameters
        ----------
        X : array-like, DataFrame, dask array, Dataset or str
        y : array-like or dask array, optional (a dataset's own labels when omitted)
            Two classes, labels of any type.
        sample_weight : array-like or dask array, optional

        Returns
        -------
        self
        """
        self._check_params()
        Cs = self._grid()
        with fit_client(self.client) as client:
            data = cv_data(
                self,
                X,
                y,
                sample_weight,
                client,
                classification=True,
                shuffle=self.shuffle,
                random_state=self.random_state,
            )
            assert data.classes is not None
            if len(data.classes) != 2:
                raise ValueError(
                    f"LogisticRegressionCV fits binary problems only, but y has "
                    f"{len(data.classes)} classes {data.classes!r}; use LogisticRegression "
                    "(multinomial) with sklearn's GridSearchCV, or one binary problem per class"
                )
            self.classes_ = data.classes
            chunks = persist_chunks(client, data)
            try:
                with EvaluatorPool(client, chunks) as pool:
                    self._fit_paths(client, data, chunks, pool, Cs)
            finally:
                del chunks
        return self

    def _scores(
        self,
        client: Any,
        chunks: list[Any],
        pool: EvaluatorPool,
        fold_of: np.ndarray,
        coefs: np.ndarray,
    ) -> np.ndarray:
        """Each fold's validation score of each C, ``(n_folds, n_cs)``, on the workers: chunk by
        chunk for accuracy and log loss, else by the scorer on each fold's chunks together."""
        K = len(coefs)
        if self.scoring in ADDITIVE_SCORES:
            # the path's end is often flat (the same coefficients for many C): each distinct
            # vector is scored once
            unique, inverse = zip(
                *(np.unique(coefs[k], axis=0, return_inverse=True) for k in range(K)), strict=True
            )
            weight = np.zeros(K)
            sums = [np.zeros(len(u)) for u in unique]
            for idx, results in pool.call_all(
                lambda actor, idx: actor.scores(
                    self.fit_intercept, self.scoring, [unique[fold_of[c]] for c in idx]
                )
            ):
                for c, (w, s) in zip(idx, results, strict=True):
                    weight[fold_of[c]] += w
                    sums[fold_of[c]] += s
            mean = np.stack([sums[k][np.ravel(inverse[k])] / weight[k] for k in range(K)])
            return -mean if self.scoring == "neg_log_loss" else mean
        jobs = [
            client.submit(
                score_fold,
                self.scoring,
                self.classes_,
                coefs[k],
                self.fit_intercept,
                *[c for c, f in zip(chunks, fold_of, strict=True) if f == k],
                pure=False,
            )
            for k in range(K)
        ]
        return np.stack(client.gather(jobs))

    def _fit_paths(
        self, client: Any, data: Any, chunks: list[Any], pool: EvaluatorPool, Cs: np.ndarray
    ) -> None:
        fold_of, K, d = data.fold_of, data.n_folds, data.n_features
        m = d + 1 if self.fit_intercept else d
        # what rounding can do to the objective: float32 data is summed from float32 margins
        rounding = 16 * float(np.finfo(data.dtype).eps)
        if data.weighted:  # one pass for the weight sums
            total, folds = fold_sums(
                map_chunks(client, _persisted(data, chunks), weight_sum), fold_of
            )
        else:  # the row counts are the weight sums
            sizes = np.asarray(data.sizes, dtype=np.float64)
            total = [np.array([sizes.sum()])]
            folds = [[np.array([sizes[fold_of == k].sum()])] for k in range(K)]
        sw_total = float(total[0][0])
        models = {
            k: PathModel(
                Cs,
                sw_total - float(folds[k][0][0]),
                np.zeros(m),
                self.fit_intercept,
                float(self.tol),
                int(self.max_iter),
                rounding,
            )
            for k in range(K)
        }
        passes = (
            1
            + int(data.weighted)
            + run_paths(pool, fold_of, models, lambda k, f: f != k, self.fit_intercept)
        )
        coefs = np.stack([np.stack(models[k].coefs) for k in range(K)])  # (K, n_cs, m)
        scores = self._scores(client, chunks, pool, fold_of, coefs)
        passes += 1
        unconverged: list[tuple[Any, float]] = [
            (k, C) for k in range(K) for C in models[k].unconverged
        ]
        if self.refit:
            best = int(np.argmax(scores.mean(axis=0)))  # the first of equal scores
            C_best = float(Cs[best])
            final = PathModel(
                np.array([C_best]),
                sw_total,
                coefs[:, best].mean(axis=0),
                self.fit_intercept,
                float(self.tol),
                int(self.max_iter),
                rounding,
            )
            passes += run_paths(pool, fold_of, {K: final}, lambda k, f: True, self.fit_intercept)
            theta = final.coefs[0]
            unconverged += [("refit", C) for C in final.unconverged]
        else:
            picks = np.argmax(scores, axis=1)
            C_best = float(np.mean(Cs[picks]))
            theta = np.mean([coefs[k, picks[k]] for k in range(K)], axis=0)
        self.Cs_ = Cs
        self.C_ = np.array([C_best])
        self.l1_ratio_ = np.array([None])
        self.coef_ = np.asarray(theta[:d], dtype=np.float64).reshape(1, -1)
        self.intercept_ = np.array([float(theta[d]) if self.fit_intercept else 0.0])
        label = self.classes_[1]
        self.scores_ = {label: scores}
        self.coefs_paths_ = {label: coefs}
        # scikit-learn's shape (1, n_folds, n_cs), not the single count of the other estimators
        self.n_iter_ = np.array([[models[k].n_iter for k in range(K)]], dtype=np.int64)  # type: ignore[assignment]
        self.n_passes_ = int(passes)
        self.converged_ = not unconverged
        if unconverged:
            where = ", ".join(f"fold {k} at C={C:.4g}" for k, C in unconverged[:5])
            warnings.warn(
                f"LogisticRegressionCV: Newton did not reach tol={self.tol} in {len(unconverged)} "
                f"fit(s) ({where}{', ...' if len(unconverged) > 5 else ''}); increase max_iter, "
                "scale the features, or loosen tol",
                ConvergenceWarning,
                stacklevel=3,
            )


def _persisted(data: Any, chunks: list[Any]) -> Any:
    """``data`` with its sources replaced by the chunks in memory (already prepared)."""
    from dataclasses import replace

    return replace(data, sources=chunks, checked=True, classes=None, dtype=data.dtype)
