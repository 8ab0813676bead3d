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

    Minimises scikit-learn's objective ``C * sum_i s_i loss_i + 0.5 ||w||^2`` (with
    ``l1_ratios``, its elastic net) for every ``C`` of the path in every fold, by Newton's
    method (Cholesky solves, or coordinate descent on the quadratic model with an L1 part; a
    backtracking line search) with warm starts along the path, as scikit-learn's
    ``solver="newton-cholesky"``.
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
    penalty : {"l2", "l1", "elasticnet"}, default "l2"
        The penalty without ``l1_ratios`` ("l1": ``l1_ratios=[1.0]``; "elasticnet" needs
        ``l1_ratios``). Given ``l1_ratios`` decide, as in scikit-learn 1.8+.
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
    l1_ratios : array-like of float in [0, 1] or None, default None
        Elastic-net mixings to cross-validate with the Cs: the penalty is ``l1_ratio
        ||w||_1 + (1 - l1_ratio) / 2 ||w||^2`` (scikit-learn's). Each l1_ratio's K fold
        paths advance in the same passes as the others'; steps with an L1 part solve the
        quadratic model plus the L1 term by coordinate descent (exact zeros). None: L2.
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
        The chosen l1_ratio (``[None]`` without ``l1_ratios``).
    l1_ratios_ : ndarray of shape (n_l1_ratios,)
        With ``l1_ratios`` only.
    coef_ : ndarray of shape (1, n_features)
    intercept_ : ndarray of shape (1,)
    scores_ : dict
        ``{classes_[1]: ndarray (n_folds, n_cs)}``, each fold's validation score per C
        (with ``l1_ratios``: ``(n_folds, n_cs, n_l1_ratios)``, scikit-learn's layout).
    coefs_paths_ : dict
        ``{classes_[1]: ndarray (n_folds, n_cs[, n_l1_ratios], n_features [+ 1])}``.
    n_iter_ : ndarray of shape (1, n_folds, n_cs[, n_l1_ratios])
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

    _dense_only = True

    _parameter_constraints: ClassVar[dict[str, Rule]] = {
        "fit_intercept": BOOL,
        "cv": Rule(
            lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 2,
            "an integer >= 2 (the number of folds)",
        ),
        "penalty": one_of("l2", "l1", "elasticnet"),
        "scoring": Rule(_scorer_ok, "None, a callable or a scorer name of sklearn.metrics"),
        "tol": Rule(lambda v: TOL.test(v) and v is not None, "a number >= 0"),
        "max_iter": POSITIVE_INT,
        "refit": BOOL,
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
        self._l1_grid()  # checked before any data is read
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
            chunks, held = persist_chunks(client, data)
            try:
                with EvaluatorPool(client, chunks, held) as pool:
                    self._fit_paths(client, data, chunks, pool, Cs)
            finally:
                del chunks, held
        return self

    def _scores(
        self,
        client: Any,
        chunks: list[Any],
        pool: EvaluatorPool,
        fold_of: np.ndarray,
        coefs: np.ndarray,
        classes: np.ndarray,
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
                classes,
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
        ratios = self._l1_grid()
        L = 1 if ratios is None else len(ratios)
        r_of = [0.0] * L if ratios is None else [float(r) for r in ratios]

        def path_model(Cs: np.ndarray, weight: float, start: np.ndarray, r: float) -> PathModel:
            return PathModel(Cs, weight, start, self.fit_intercept, float(self.tol),
                             int(self.max_iter), rounding, l1_ratio=r)  # fmt: skip

        # model j * K + k: fold k's path at the j-th l1_ratio, all advancing in the same rounds
        models = {
            j * K + k: path_model(Cs, sw_total - float(folds[k][0][0]), np.zeros(m), r_of[j])
            for j in range(L)
            for k in range(K)
        }
        passes = (
            1
            + int(data.weighted)
            + run_paths(pool, fold_of, models, lambda i, f: f != i % K, self.fit_intercept)
        )
        n_cs = len(Cs)
        coefs = np.stack(  # (K, L, n_cs, m)
            [np.stack([np.stack(models[j * K + k].coefs) for j in range(L)]) for k in range(K)]
        )
        scores = self._scores(
            client, chunks, pool, fold_of, coefs.reshape(K, L * n_cs, m), data.classes
        ).reshape(K, L, n_cs)
        passes += 1
        unconverged: list[tuple[Any, float]] = [
            (i % K, C) for i, model in models.items() for C in model.unconverged
        ]
        if self.refit:
            # the first of equal scores, l1_ratio fastest (scikit-learn's order over (C, l1))
            cb, lb = divmod(int(np.argmax(scores.mean(axis=0).T)), L)
            C_best, r_best = float(Cs[cb]), r_of[lb]
            final = path_model(np.array([C_best]), sw_total, coefs[:, lb, cb].mean(axis=0), r_best)
            passes += run_paths(pool, fold_of, {-1: final}, lambda i, f: True, self.fit_intercept)
            theta = final.coefs[0]
            unconverged += [("refit", C) for C in final.unconverged]
        else:
            picks = [divmod(int(np.argmax(scores[k].T)), L)[::-1] for k in range(K)]
            C_best = float(np.mean([Cs[c] for _, c in picks]))
            r_best = float(np.mean([r_of[lb] for lb, _ in picks]))
            theta = np.mean([coefs[k, lb, c] for k, (lb, c) in enumerate(picks)], axis=0)
        pool.verify()  # mapped rows: before any attribute is set, no file changed under them
        n_iter = np.array(
            [[models[j * K + k].n_iter for j in range(L)] for k in range(K)], dtype=np.int64
        )  # (K, L, n_cs)
        self.classes_ = data.classes
        self.Cs_ = Cs
        self.C_ = np.array([C_best])
        self.coef_ = np.asarray(theta[:d], dtype=np.float64).reshape(1, -1)
        self.intercept_ = np.array([float(theta[d]) if self.fit_intercept else 0.0])
        label = self.classes_[1]
        # scikit-learn's (legacy) layouts: without l1_ratios (n_folds, n_cs[, m]), with
        # them (n_folds, n_cs, n_l1_ratios[, m]); n_iter_ with a leading 1
        if self.l1_ratios is None:  # penalty="l2" or "l1": scikit-learn's 2-D layouts
            self.__dict__.pop("l1_ratios_", None)
            self.l1_ratio_ = np.array([None])
            self.scores_ = {label: scores[:, 0]}
            self.coefs_paths_ = {label: coefs[:, 0]}
            self.n_iter_ = n_iter[None, :, 0]  # type: ignore[assignment]
        else:
            assert ratios is not None
            self.l1_ratios_ = np.asarray(ratios, dtype=np.float64)
            self.l1_ratio_ = np.array([r_best])
            self.scores_ = {label: scores.transpose(0, 2, 1)}
            self.coefs_paths_ = {label: coefs.transpose(0, 2, 1, 3)}
            self.n_iter_ = n_iter.transpose(0, 2, 1)[None]  # type: ignore[assignment]
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

    def _l1_grid(self) -> np.ndarray | None:
        """The l1_ratios (None: the plain L2 path); ``penalty="l1"`` alone is ``[1.0]``."""
        if self.l1_ratios is None:
            if self.penalty == "elasticnet":
                raise ValueError(
                    "penalty='elasticnet' needs l1_ratios, e.g. l1_ratios=[0.1, 0.5, 0.9]"
                )
            return np.array([1.0]) if self.penalty == "l1" else None
        try:
            ratios = np.atleast_1d(np.asarray(self.l1_ratios, dtype=np.float64))
        except (TypeError, ValueError):
            ratios = np.array([np.nan])
        if ratios.ndim != 1 or not ratios.size or not np.all((ratios >= 0) & (ratios <= 1)):
            raise ValueError(
                f"l1_ratios must be a non-empty list of numbers in [0, 1], got {self.l1_ratios!r}"
            )
        return ratios


def _persisted(data: Any, chunks: list[Any]) -> Any:
    """``data`` with its sources replaced by the chunks in memory (already prepared)."""
    from dataclasses import replace

    return replace(data, sources=chunks, checked=True, classes=None, dtype=data.dtype, mapped=False)
