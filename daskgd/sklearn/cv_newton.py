"""Newton along a path of penalties for many logistic models at once, one pass per round.

Every model (one per fold, and the final refit) follows its own path of ``C`` values with
warm starts; a round is one call per worker (:mod:`~daskgd.sklearn.cv_chunks`) that
evaluates, on each row-chunk held in the worker's memory (:func:`logistic_stats`), the exact
loss and gradient of every model that trains on the chunk (the compiled
``grad_loss_many``, one pass for all) and one Hessian, at their mean (the compiled
``grad_hess`` kernel, on a sample of the rows). The driver sums them per model
and takes the Newton steps (:class:`PathModel`): a Cholesky solve, then a backtracking
line search on the exact objective (each trial point is evaluated in the next round,
together with the other models' points). The objective is scikit-learn's,
``C * sum_i s_i loss_i + 0.5 ||w||^2`` (the intercept unpenalised), and its stopping rule
too: the largest entry of the gradient of that objective divided by ``C * sum_i s_i`` is at
most ``tol``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ADDITIVE_SCORES",
    "PathModel",
    "chunk_scores",
    "logistic_stats",
    "run_paths",
    "score_fold",
]

#: Armijo's sufficient-decrease constant and the smallest step tried
_ARMIJO = 1e-4
_MIN_STEP = 2.0**-20
#: rows of a chunk (at least; 32 per feature) its Hessian is estimated from: fewer rows
#: made each Newton step slightly worse (1 more pass of 20 at 16 per feature), more made
#: the pass slower than the steps it saved (measured on 500,000 x 100)
HESSIAN_ROWS = 1024


def logistic_stats(
    chunk: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    models: dict[int, np.ndarray],
    fit_intercept: bool,
) -> tuple[dict[int, tuple[float, np.ndarray]], np.ndarray]:
    """Runs on a worker: the binary log loss (targets -1/+1) of every model on one chunk.

    Returns ``({model: (loss sum, gradient)}, hessian)``. The losses and gradients are
    exact (the compiled ``grad_loss_many``, one pass over the chunk for all the models);
    the Hessian is one, the kernel's ``grad_hess`` at the models' mean, from every k-th row
    of the chunk (at least :data:`HESSIAN_ROWS`, and 32 per feature). The fold models of
    one C differ by a few percent of their rows' influence, so a Newton step with the shared
    Hessian nearly equals each one's own, for a fraction of the work; the
    line search and the exact gradient keep every step a descent and the stopping rule exact.
    """
    from daskgd.kernels import grad_hess, grad_loss_many

    X, t, sw = chunk
    d = X.shape[1]
    keys = list(models)
    thetas = np.stack([models[k] for k in keys])  # (M, m)
    s = np.ones(len(t)) if sw is None else np.asarray(sw, dtype=np.float64)
    # one pass over the chunk for all the models (the compiled grad_loss_many): measured
    # 2.5x faster than one grad_loss pass per model for four models
    losses, grads = grad_loss_many(
        X,
        t,
        thetas[:, :d],
        thetas[:, d] if fit_intercept else None,
        loss="log_loss",
        sample_weight=sw,
        check_input=False,
    )
    out = {k: (float(loss), grad) for k, loss, grad in zip(keys, losses, grads, strict=True)}
    ref = thetas.mean(axis=0)
    b = float(ref[d]) if fit_intercept else 0.0
    # the Hessian from every k-th row, scaled to the chunk's weight: a few thousand rows
    # estimate it within a few percent, which costs a Newton step little and the pass much
    stride = max(1, len(t) // max(HESSIAN_ROWS, 32 * d))
    Xh, th, sh = (
        (X, t, sw)
        if stride == 1
        else (np.ascontiguousarray(X[::stride]), t[::stride], None if sw is None else sw[::stride])
    )
    _, _, H = grad_hess(
        Xh, th, ref[:d], b, loss="log_loss", sample_weight=sh, fit_intercept=fit_intercept
    )
    scale = (
        1.0
        if stride == 1
        else float(s.sum())
        / (len(th) if sh is None else float(np.sum(sh, dtype=np.float64)) or 1.0)
    )
    return out, scale * np.asarray(H, dtype=np.float64)


@dataclass
class PathModel:
    """One model's Newton path over ``Cs`` (driver side, plain numpy).

    ``theta`` is the point the next round evaluates; :meth:`tell` takes that evaluation
    (data loss sum, gradient, Hessian over the model's training rows) and sets the next.
    The penalty is scikit-learn's elastic net, ``l1_ratio ||w||_1 + (1 - l1_ratio) / 2
    ||w||^2`` (0: L2): with an L1 part each step minimises the quadratic model plus the L1
    term by coordinate descent (exact zeros), the line search's slope counts the L1 change
    and the stopping rule takes the smallest subgradient.
    """

    Cs: np.ndarray
    weight_sum: float
    theta: np.ndarray
    fit_intercept: bool
    tol: float
    max_iter: int
    #: relative change of the objective that rounding can make (float32 data: its eps)
    rounding: float = 16 * float(np.finfo(np.float64).eps)
    l1_ratio: float = 0.0
    coefs: list[np.ndarray] = field(default_factory=list)
    n_iter: list[int] = field(default_factory=list)
    unconverged: list[float] = field(default_factory=list)
    done: bool = False
    _j: int = 0
    _it: int = 0
    _data: tuple[float, np.ndarray, np.ndarray] | None = None
    _search: tuple[np.ndarray, float, float, np.ndarray, float, float] | None = None

    def _penalised(self, m: int) -> np.ndarray:
        """1 for the weights, 0 for the intercept (``m`` parameters)."""
        reg = np.zeros(m)
        reg[: m - 1 if self.fit_intercept else m] = 1.0
        return reg

    def _objective(
        self, C: float, theta: np.ndarray, data: tuple[float, np.ndarray, np.ndarray]
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """The objective, the gradient of its smooth part and that part's Hessian."""
        loss, g, H = data
        m = len(theta)  # d + 1 with the intercept, else d: drop the kernel's last entry
        reg = self._penalised(m)
        l2 = 1.0 - self.l1_ratio
        w = theta * reg
        F = C * loss + 0.5 * l2 * float(w @ w) + self.l1_ratio * float(np.abs(w).sum())
        G = C * g[:m] + l2 * w
        Hf = C * H[:m, :m] + np.diag(l2 * reg)
        return F, G, Hf

    def _optimality(self, C: float, theta: np.ndarray, G: np.ndarray) -> float:
        """scikit-learn's measure, ``max |gradient| / (C * sum(s))``, with the L1 part's
        smallest subgradient (``G + l1 sign(w)`` off zero, the soft threshold at zero)."""
        if self.l1_ratio:
            l1 = self.l1_ratio * self._penalised(len(theta))
            G = np.where(
                theta != 0,
                G + l1 * np.sign(theta),
                np.sign(G) * np.maximum(np.abs(G) - l1, 0.0),
            )
        return float(np.max(np.abs(G))) / (C * self.weight_sum)

    def tell(self, data: tuple[float, np.ndarray, np.ndarray]) -> None:
        """The evaluation at ``theta``: accept it (or backtrack), then step or move on."""
        if self._search is not None:
            theta0, F0, slope, p, t, g0 = self._search
            C = float(self.Cs[self._j])
            F, G, _ = self._objective(C, self.theta, data)
            # near the optimum the decrease drowns in rounding: then a smaller gradient
            # accepts the step (as scikit-learn's newton-cholesky line search does), and a
            # larger one means the rounding floor is reached: halving cannot help
            flat = abs(F - F0) <= self.rounding * abs(F0)
            smaller = self._optimality(C, self.theta, G) < g0
            if not (F <= F0 + _ARMIJO * t * slope or (flat and smaller)):
                if not flat and t * 0.5 >= _MIN_STEP:
                    t *= 0.5
                    self._search = (theta0, F0, slope, p, t, g0)
                    self.theta = theta0 + t * p
                    return
                # no decrease (a tiny step, or within rounding): the base point is as good
                # as floating point allows; keep it (its gradient decides whether that
                # counts as converged, and an unconverged C is reported)
                self.theta = theta0
                self._search = None
                self._finish_C()
                self._advance()
                return
            self._search = None
        self._data = data
        self._advance()

    def _finish_C(self) -> None:
        assert self._data is not None
        C = float(self.Cs[self._j])
        G = self._objective(C, self.theta, self._data)[1]
        if (
            self._optimality(C, self.theta, G) > self.tol
        ):  # at max_iter, or stalled short of the tolerance
            self.unconverged.append(C)
        self.coefs.append(self.theta.copy())
        self.n_iter.append(self._it)
        self._j += 1
        self._it = 0
        if self._j == len(self.Cs):
            self.done = True

    def _advance(self) -> None:
        """Newton steps from the accepted point; at convergence (or ``max_iter``) the next
        C starts from here with the same evaluation (no pass needed to start it)."""
        assert self._data is not None
        while not self.done:
            C = float(self.Cs[self._j])
            F, G, Hf = self._objective(C, self.theta, self._data)
            gmax = self._optimality(C, self.theta, G)
            if gmax <= self.tol or self._it >= self.max_iter:
                self._finish_C()
                continue
            p = self._direction(G, Hf)
            l1 = self.l1_ratio * self._penalised(len(p))
            slope = float(G @ p) + float(l1 @ (np.abs(self.theta + p) - np.abs(self.theta)))
            if not slope < 0:  # rounding made the direction useless: steepest descent
                p, slope = -G, -float(G @ G)
            self._it += 1
            self._search = (self.theta.copy(), F, slope, p, 1.0, gmax)
            self.theta = self.theta + p
            return

    def _direction(self, G: np.ndarray, Hf: np.ndarray) -> np.ndarray:
        """Newton's step: a Cholesky solve, or with an L1 part coordinate descent on the
        quadratic model plus the L1 term (as the single fit's Newton does)."""
        from scipy.linalg import LinAlgError, cho_factor, cho_solve

        if self.l1_ratio:
            from daskgd.objective.quadratic import coordinate_descent

            diag = np.diag(Hf)
            scale = np.maximum(diag, 1e-12 * max(1.0, float(diag.max())))
            l1 = self.l1_ratio * self._penalised(len(G))
            return coordinate_descent(self.theta, G, Hf, scale, l1)
        try:
            return -cho_solve(cho_factor(Hf), G)
        except LinAlgError:  # a flat direction (e.g. an all-zero column, no intercept
            # curvature): damp it, as newton-cholesky falls back on a safer step
            damp = 1e-10 * max(1.0, float(np.max(np.abs(np.diag(Hf)))))
            return -np.linalg.solve(Hf + damp * np.eye(len(G)), G)


def run_paths(
    pool: Any,
    fold_of: np.ndarray,
    models: dict[int, PathModel],
    trains_on: Callable[[int, int], bool],
    fit_intercept: bool,
) -> int:
    """Rounds until every model has finished its path; returns the number of rounds (passes).

    ``pool`` holds the chunks on their workers (:class:`~daskgd.sklearn.cv_chunks.EvaluatorPool`);
    ``trains_on(model, fold)`` says whether a model trains on a chunk of that fold.
    """
    rounds = 0
    while any(not m.done for m in models.values()):
        rounds += 1

        def wanted(idx: list[int]) -> list[dict[int, np.ndarray]]:
            return [
                {
                    k: m.theta
                    for k, m in models.items()
                    if not m.done and trains_on(k, int(fold_of[c]))
                }
                for c in idx
            ]

        sums: dict[int, list[Any]] = {}
        for _, per_chunk in pool.call_all(
            lambda actor, idx: actor.stats(fit_intercept, wanted(idx))
        ):
            for stats in per_chunk:
                if stats is None:
                    continue
                per_model, H = stats
                for k, (loss, g) in per_model.items():
                    if k in sums:
                        acc = sums[k]
                        acc[0] += loss
                        acc[1] += g
                        acc[2] += H
                    else:
                        sums[k] = [loss, g.copy(), H.copy()]
        for k, (loss, g, H) in sums.items():
            models[k].tell((loss, g, H))
    return rounds


#: scorers that are sums over rows: computed chunk by chunk where the chunks are
ADDITIVE_SCORES = (None, "accuracy", "neg_log_loss")


def chunk_scores(
    chunk: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    coefs: np.ndarray,
    fit_intercept: bool,
    scoring: str | None,
) -> tuple[float, np.ndarray]:
    """Runs on a worker: ``(weight sum, summed score of each model)`` on one validation
    chunk, for an additive scorer (:data:`ADDITIVE_SCORES`): the weighted count of right
    predictions (accuracy; a zero margin predicts ``classes_[0]``, as scikit-learn) or the
    weighted log loss, for all models ``coefs`` (rows: w, then b) from one product."""
    X, t, sw = chunk
    d = X.shape[1]
    margins = np.asarray(X @ np.ascontiguousarray(coefs[:, :d].T, dtype=X.dtype), np.float64)
    if fit_intercept:
        margins += coefs[:, d]
    s = np.ones(len(t)) if sw is None else np.asarray(sw, dtype=np.float64)
    if scoring == "neg_log_loss":
        sums = s @ np.logaddexp(0.0, -t[:, None] * margins)
    else:
        sums = s @ ((margins > 0) == (t > 0)[:, None])
    return float(s.sum()), np.asarray(sums, dtype=np.float64)


def score_fold(
    scoring: Any,
    classes: np.ndarray,
    coefs: np.ndarray,
    fit_intercept: bool,
    *chunks: tuple[np.ndarray, np.ndarray, np.ndarray | None],
) -> np.ndarray:
    """Runs on a worker: the validation score of each model ``coefs`` (rows: w, then b) on a
    fold's chunks, by scikit-learn's scorer ``scoring`` (None: accuracy)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import get_scorer

    X = np.concatenate([c[0] for c in chunks])
    y = classes[(np.concatenate([c[1] for c in chunks]) > 0).astype(np.intp)]
    sw = (
        None if chunks[0][2] is None else np.concatenate([c[2] for c in chunks if c[2] is not None])
    )
    scorer = get_scorer("accuracy" if scoring is None else scoring)
    d = X.shape[1]
    # a fitted scikit-learn model with these coefficients is what scorers know how to call
    model = LogisticRegression()
    model.classes_ = classes
    out = np.empty(len(coefs))
    for i, theta in enumerate(coefs):
        model.coef_ = theta[None, :d].copy()
        model.intercept_ = np.array([float(theta[d]) if fit_intercept else 0.0])
        kwargs = {} if sw is None else {"sample_weight": sw}
        out[i] = float(scorer(model, X, y, **kwargs))
    return out
