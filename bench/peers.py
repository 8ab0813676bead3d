"""The problems and the peer solvers of the comparison benchmark (``bench_peers.py``).

Every system minimises the same objective on the same Zarr data, and every run is
timed from the read of the data (Zarr to memory) to the fitted coefficients.

Objectives (``n`` rows, labels ``y`` in {-1, +1} for logistic regression):

* least squares: ``f(w, b) = 1/(2n) * sum (x_i @ w + b - y_i)**2``, no penalty;
* logistic: ``f(w) = 1/n * sum log(1 + exp(-y_i x_i @ w)) + alpha/2 * ||w||**2``, no
  intercept (dask-glm and snapml penalise an intercept column and scikit-learn does not,
  so with an intercept the peers would not share one optimum).

Each system is a :class:`System`: ``fit(setting, client)``, the setting of its defaults
(what a user who calls it plainly gets) and a sweep of settings of growing cost (to
measure its time to the targets). How each peer's parameters map onto the objectives is
written beside each runner below.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import dask.array as da
import numpy as np
import zarr
from scipy.optimize import minimize


@dataclass
class Problem:
    """One benchmark problem stored as a daskgd Zarr dataset."""

    name: str
    kind: str  # "least_squares" or "logistic"
    path: str
    n: int
    d: int
    alpha: float = 0.0
    fit_intercept: bool = True
    targets: tuple[float, float] = (1e-3, 1e-6)
    X: np.ndarray | None = field(default=None, repr=False)
    y: np.ndarray | None = field(default=None, repr=False)
    f_star: float = float("nan")

    def load(self) -> None:
        """Read the data into this process (for the oracle and the objective)."""
        g = zarr.open_group(self.path, mode="r")
        self.X = np.ascontiguousarray(g["X"][:], dtype=np.float64)
        y = np.asarray(g["y"][:], dtype=np.float64)
        self.y = np.where(y > 0, 1.0, -1.0) if self.kind == "logistic" else y

    def objective(self, coef: np.ndarray, intercept: float = 0.0) -> float:
        assert self.X is not None and self.y is not None
        z = self.X @ np.asarray(coef, dtype=np.float64).ravel() + float(intercept)
        if self.kind == "least_squares":
            return 0.5 * float(np.mean((z - self.y) ** 2))
        return float(np.mean(np.logaddexp(0.0, -self.y * z))) + 0.5 * self.alpha * float(
            np.dot(coef, coef)
        )

    def solve_exactly(self) -> None:
        """The optimum: lstsq for least squares, scipy L-BFGS to gradient norm 1e-10."""
        assert self.X is not None and self.y is not None
        X, y, n = self.X, self.y, self.X.shape[0]
        if self.kind == "least_squares":
            A = np.hstack([X, np.ones((n, 1))]) if self.fit_intercept else X
            if X.shape[1] <= 500:
                sol = np.linalg.lstsq(A, y, rcond=None)[0]
            else:
                # normal equations: exact to ~cond(A)^2 * eps, about 1e-15 for these
                # well-conditioned problems, and many times faster than an SVD at d = 2,000
                G = A.T @ A
                if np.linalg.cond(G) > 1e6:
                    raise ValueError("the problem is too ill-conditioned for normal equations")
                sol = np.linalg.solve(G, A.T @ y)
            coef, b = (sol[:-1], sol[-1]) if self.fit_intercept else (sol, 0.0)
            self.f_star = self.objective(coef, b)
            return

        def f_and_grad(w):
            z = y * (X @ w)
            loss = np.mean(np.logaddexp(0.0, -z)) + 0.5 * self.alpha * w @ w
            s = -y * np.exp(-np.logaddexp(0.0, z))
            return loss, X.T @ s / n + self.alpha * w

        res = minimize(
            f_and_grad,
            np.zeros(X.shape[1]),
            jac=True,
            method="L-BFGS-B",
            options={"gtol": 1e-10, "ftol": 0.0, "maxiter": 10_000},
        )
        self.f_star = float(res.fun)

    def suboptimality(self, coef, intercept=0.0) -> float:
        return max((self.objective(coef, intercept) - self.f_star) / abs(self.f_star), 0.0)


DEFAULT = "defaults"  # a setting: the system's defaults (with the problem's mapping)


@dataclass
class System:
    """One system as its users call it (see the module's docstring)."""

    fit: Callable  # fit(setting, client) -> (coef, intercept[, breakdown])
    defaults: object = DEFAULT
    settings: list = field(default_factory=list)
    dask: bool = False  # runs on the Dask cluster (then timed on a fresh one)


@dataclass
class Run:
    """One fit: the setting, seconds from the read to the coefficients, suboptimality."""

    setting: str
    seconds: float
    suboptimality: float
    breakdown: dict | None = None


def read_numpy(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    g = zarr.open_group(problem.path, mode="r")
    X = g["X"][:]
    y = g["y"][:]
    if problem.kind == "logistic":
        y = (y > 0).astype(np.float64)
    return X, y


def read_dask(problem: Problem, client) -> tuple[da.Array, da.Array]:
    g = zarr.open_group(problem.path, mode="r")
    rows = g["X"].chunks[0]
    X = da.from_array(g["X"], chunks=(rows, problem.d))
    y = da.from_array(g["y"], chunks=(rows,))
    if problem.kind == "logistic":
        y = (y > 0).astype(np.float64)  # dask-glm's Logistic family takes 0/1
    X, y = client.persist([X, y])
    return X, y


def sweep(
    problem: Problem,
    fit: Callable[[object], tuple],
    settings: Iterable[object],
    budget: float,
) -> list[Run]:
    """Fit once per setting, cheapest first, until the tight target or the budget.

    A setting is not started when the budget left is less than twice the last run's time.

    ``fit(setting)`` returns ``(coef, intercept)``, or ``(coef, intercept, breakdown)``.
    """
    runs: list[Run] = []
    spent = 0.0
    for setting in settings:
        # the next setting costs more than the last: skip it when it would likely
        # overrun the budget (at least twice the last run's time)
        if runs and spent + 2 * runs[-1].seconds > budget:
            break
        t0 = time.perf_counter()
        coef, intercept, *breakdown = fit(setting)  # daskgd adds where its time went
        seconds = time.perf_counter() - t0
        spent += seconds
        sub = problem.suboptimality(coef, intercept)
        runs.append(Run(str(setting), seconds, sub, breakdown[0] if breakdown else None))
        if runs[-1].suboptimality <= problem.targets[1] or spent > budget:
            break
    return runs


def _split_intercept(beta: np.ndarray, fit_intercept: bool) -> tuple[np.ndarray, float]:
    beta = np.asarray(beta).ravel()
    return (beta[:-1], float(beta[-1])) if fit_intercept else (beta, 0.0)


def setting_kwargs(setting, key: str = "tol") -> dict:
    """The keyword arguments of a setting: none for the defaults, else ``{key: setting}``
    (or the setting itself when it is a dict)."""
    if setting == DEFAULT:
        return {}
    return dict(setting) if isinstance(setting, dict) else {key: setting}


# --- the peers ---------------------------------------------------------------------------
# Each returns {system name: System}. In-process systems get the two cores the Dask
# systems get (BLAS as configured by the environment; snapml's n_jobs=2).


def sklearn_runners(problem: Problem) -> dict[str, System]:
    from sklearn.linear_model import (
        LinearRegression,
        LogisticRegression,
        Ridge,
        SGDClassifier,
        SGDRegressor,
    )

    n, fi = problem.n, problem.fit_intercept
    if problem.kind == "least_squares":

        def linreg(setting, client=None):
            X, y = read_numpy(problem)
            m = LinearRegression(fit_intercept=fi).fit(X, y)
            return m.coef_, m.intercept_

        def ridge(setting, client=None):
            # the normal equations by Cholesky (alpha=0: least squares)
            X, y = read_numpy(problem)
            m = Ridge(alpha=0.0, solver="cholesky", fit_intercept=fi).fit(X, y)
            return m.coef_, m.intercept_

        def sgd(setting, client=None):
            # SGDRegressor's objective is ours (mean 0.5 r^2 + alpha * penalty), alpha=0
            X, y = read_numpy(problem)
            m = SGDRegressor(
                penalty=None, alpha=0.0, fit_intercept=fi, random_state=0, **setting_kwargs(setting)
            ).fit(X, y)
            return m.coef_, float(m.intercept_[0])

        sweep_epochs = [{"max_iter": k, "tol": None} for k in (1, 3, 10, 30)]
        return {
            "scikit-learn LinearRegression": System(linreg),
            "scikit-learn Ridge (cholesky, alpha=0)": System(ridge),
            "scikit-learn SGDRegressor": System(sgd, settings=sweep_epochs),
        }

    def logreg(solver):
        def fit(setting, client=None):
            # C = 1 / (n * alpha): scikit-learn sums the losses, we average them
            X, y = read_numpy(problem)
            m = LogisticRegression(
                C=1.0 / (n * problem.alpha),
                fit_intercept=False,
                solver=solver,
                max_iter=10_000,
                **setting_kwargs(setting),
            ).fit(X, y)
            return m.coef_.ravel(), 0.0

        return System(fit, settings=[1e-2, 1e-4, 1e-6, 1e-8])

    def sgd_clf(setting, client=None):
        X, y = read_numpy(problem)
        m = SGDClassifier(
            loss="log_loss",
            alpha=problem.alpha,
            fit_intercept=False,
            random_state=0,
            **setting_kwargs(setting),
        ).fit(X, y)
        return m.coef_.ravel(), 0.0

    return {
        "scikit-learn LogisticRegression (lbfgs)": logreg("lbfgs"),
        "scikit-learn LogisticRegression (newton-cholesky)": logreg("newton-cholesky"),
        "scikit-learn SGDClassifier": System(
            sgd_clf, settings=[{"max_iter": k, "tol": None} for k in (1, 3, 10, 30)]
        ),
    }


def glum_runners(problem: Problem) -> dict[str, System]:
    from glum import GeneralizedLinearRegressor

    # glum: mean half deviance + alpha/2 * ||w||^2 (l1_ratio=0), the same alpha; its
    # default solver (IRLS); the tolerance is gradient_tol
    family = "normal" if problem.kind == "least_squares" else "binomial"

    def fit(setting, client=None):
        X, y = read_numpy(problem)
        m = GeneralizedLinearRegressor(
            family=family,
            alpha=problem.alpha,
            l1_ratio=0.0,
            fit_intercept=problem.fit_intercept,
            **setting_kwargs(setting, "gradient_tol"),
        ).fit(X, y)
        return m.coef_, float(m.intercept_)

    return {"glum GeneralizedLinearRegressor": System(fit, settings=[1e-6, 1e-8, 1e-10])}


def snapml_runners(problem: Problem) -> dict[str, System]:
    """IBM's snapml: proprietary, run for comparison only."""
    import snapml

    n = problem.n
    if problem.kind == "least_squares":

        def fit(setting, client=None):
            # the dual solver (the default) does not converge with a near-zero penalty,
            # and the primal one ignores fit_intercept: a constant column carries the
            # intercept, everything penalised by a negligible n * 1e-10
            X, y = read_numpy(problem)
            if problem.fit_intercept:
                X = np.hstack([X, np.ones((X.shape[0], 1))])
            m = snapml.LinearRegression(
                regularizer=n * 1e-10,
                dual=False,
                fit_intercept=False,
                n_jobs=2,
                **setting_kwargs(setting),
            ).fit(X, y)
            return _split_intercept(m.coef_, problem.fit_intercept)

        return {"snapml LinearRegression": System(fit, settings=[1e-6, 1e-8, 1e-10])}

    def fit_logistic(setting, client=None):
        # snapml: sum of the losses + regularizer/2 * ||w||^2, so regularizer = n * alpha
        X, y = read_numpy(problem)
        m = snapml.LogisticRegression(
            regularizer=n * problem.alpha, fit_intercept=False, n_jobs=2, **setting_kwargs(setting)
        ).fit(X, y)
        return np.ravel(m.coef_), 0.0

    return {"snapml LogisticRegression": System(fit_logistic, settings=[1e-6, 1e-8, 1e-10])}


def dask_glm_runners(problem: Problem) -> dict[str, System]:
    from dask_glm import algorithms
    from dask_glm.families import Logistic, Normal

    n = problem.n
    ls = problem.kind == "least_squares"
    family = Normal if ls else Logistic
    # dask-glm sums the log-likelihood (Normal: sum r^2, twice ours times n) and adds
    # lamduh * ||w||^2 / 2, so lamduh = n * alpha for the logistic problem.
    reg = {} if ls else {"regularizer": "l2", "lamduh": n * problem.alpha}
    no_penalty = reg or {"regularizer": "l2", "lamduh": 0.0}

    def system(algorithm, fixed, settings):
        def fit(setting, client=None):
            X, y = read_dask(problem, client)
            if ls and problem.fit_intercept:
                X = da.hstack([X, da.ones((X.shape[0], 1), chunks=(X.chunks[0], 1))])
            beta = algorithm(X, y, family=family, **fixed, **setting_kwargs(setting))
            return _split_intercept(beta, ls and problem.fit_intercept)

        return System(fit, settings=settings, dask=True)

    iters = [{"max_iter": k} for k in (5, 20, 100, 300)]
    runners = {
        "dask-glm lbfgs": system(algorithms.lbfgs, {**reg, "tol": 1e-12}, iters),
        # admm's defaults (250 iterations, each a local solve per chunk) take minutes: its
        # first setting (5 iterations) stands for them
        "dask-glm admm (first fit: max_iter=5)": System(
            system(algorithms.admm, {**no_penalty, "abstol": 1e-12, "reltol": 1e-12}, []).fit,
            defaults={"max_iter": 5},
            settings=[{"max_iter": k} for k in (20, 60)],
            dask=True,
        ),
        "dask-glm proximal_grad": system(
            algorithms.proximal_grad, {**no_penalty, "tol": 1e-14}, iters
        ),
    }
    if ls:  # newton and gradient_descent have no penalty: least squares only
        runners["dask-glm newton"] = system(
            algorithms.newton, {"tol": 1e-14}, [{"max_iter": k} for k in (1, 3, 10)]
        )
        runners["dask-glm gradient_descent"] = system(
            algorithms.gradient_descent, {"tol": 1e-14}, iters
        )
    return runners


def dask_ml_runners(problem: Problem) -> dict[str, System]:
    from dask_ml.linear_model import LinearRegression, LogisticRegression

    n = problem.n
    ls = problem.kind == "least_squares"

    def fit(setting, client=None):
        X, y = read_dask(problem, client)
        kw = {"solver": "lbfgs", "fit_intercept": problem.fit_intercept, **setting_kwargs(setting)}
        if ls:  # dask-ml always penalises; C = 1e12 makes the penalty negligible
            m = LinearRegression(C=1e12, **kw)
        else:
            m = LogisticRegression(C=1.0 / (n * problem.alpha), **kw)
        m.fit(X, y)
        return np.asarray(m.coef_).ravel(), float(getattr(m, "intercept_", 0.0) or 0.0)

    settings = [{"max_iter": k, "tol": 1e-12} for k in (5, 20, 100, 300)]
    name = "dask-ml LinearRegression (lbfgs)" if ls else "dask-ml LogisticRegression (lbfgs)"
    return {name: System(fit, settings=settings, dask=True)}
