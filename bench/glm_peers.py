"""The peers of the GLM benchmark (``bench_glm.py``), each mapped onto the problems'
objectives (see ``glm_problems``); every fit starts from its own read of the Zarr data.

Each provider returns ``{system: (settings, fit)}`` (``fit(setting) -> (coef,
intercept)``), or ``{system: "why it is not run"}``. Settings go from the system's
defaults to tighter tolerances, cheapest first; ``peers.sweep`` runs them until the
tight target or the time budget.
"""

from __future__ import annotations

from collections.abc import Callable

import dask.array as da
import numpy as np
import zarr
from glm_problems import GLMProblem, read_arrays
from peers import DEFAULT, setting_kwargs


def tols(key: str = "tol") -> list:
    """The library's defaults, then tighter tolerances (``key``) with room for the
    iterations they need; a run that would not end within the budget is not started."""
    tight = [(1e-6, 1_000), (1e-8, 1_000), (1e-10, 10_000), (1e-12, 10_000)]
    return [DEFAULT, *({key: t, "max_iter": m} for t, m in tight)]


Runners = dict[str, tuple[list, Callable] | str]


def _read(problem: GLMProblem):
    """numpy X, y with 0/1 labels for logistic (what these libraries take), offset."""
    X, y, offset = read_arrays(problem)
    if problem.kind == "logistic":
        y = (y > 0).astype(np.float64)
    return X, y, offset


# --- scikit-learn -------------------------------------------------------------------------


def sklearn_runners(problem: GLMProblem) -> Runners:
    from sklearn.linear_model import LinearRegression, LogisticRegression, PoissonRegressor, Ridge

    n, kind = problem.n, problem.kind
    runners: Runners = {}
    if kind == "least_squares":

        def lstsq(setting):
            X, y, _ = _read(problem)
            m = LinearRegression(fit_intercept=problem.fit_intercept).fit(X, y)
            return m.coef_, m.intercept_

        def cholesky(setting):
            X, y, _ = _read(problem)
            m = Ridge(
                alpha=n * problem.alpha, solver="cholesky", fit_intercept=problem.fit_intercept
            ).fit(X, y)
            return m.coef_, m.intercept_

        runners["scikit-learn LinearRegression"] = ([DEFAULT], lstsq)
        runners["scikit-learn Ridge (cholesky)"] = ([DEFAULT], cholesky)
        return runners
    for solver in ("newton-cholesky", "lbfgs"):
        if kind == "logistic":
            # C = 1 / (n * alpha): scikit-learn sums the losses, the problems average them
            def fit(setting, solver=solver):
                X, y, _ = _read(problem)
                m = LogisticRegression(
                    C=1.0 / (n * problem.alpha),
                    solver=solver,
                    fit_intercept=problem.fit_intercept,
                    **setting_kwargs(setting),
                ).fit(X, y)
                return m.coef_.ravel(), float(m.intercept_[0]) if problem.fit_intercept else 0.0

            runners[f"scikit-learn LogisticRegression ({solver})"] = (tols(), fit)
        else:
            # no offset in scikit-learn: the rate y / exposure with weights = exposure has
            # the same optimum; the mean is then over sum(exposure), hence alpha's factor
            def fit(setting, solver=solver):
                X, y, offset = _read(problem)
                e = np.exp(offset)
                m = PoissonRegressor(
                    alpha=problem.alpha * n / e.sum(),
                    solver=solver,
                    **setting_kwargs(setting),
                )
                m.fit(X, y / e, sample_weight=e)
                return m.coef_, m.intercept_

            runners[f"scikit-learn PoissonRegressor ({solver}, y/exposure)"] = (tols(), fit)
    return runners


# --- glum ---------------------------------------------------------------------------------


def glum_runners(problem: GLMProblem) -> Runners:
    from glum import GeneralizedLinearRegressor

    family = {"least_squares": "normal", "logistic": "binomial", "poisson": "poisson"}

    # glum: mean half deviance + alpha * (l1_ratio |w|_1 + (1 - l1_ratio) / 2 |w|^2), the
    # problems' objective with the same alpha; default solver ("auto": IRLS)
    def fit(setting):
        X, y, offset = _read(problem)
        tol = setting_kwargs(setting)
        m = GeneralizedLinearRegressor(
            family=family[problem.kind],
            alpha=problem.alpha,
            l1_ratio=0.0,
            fit_intercept=problem.fit_intercept,
            **tol,
        )
        m.fit(X, y, offset=offset)
        return m.coef_, float(m.intercept_)

    return {"glum GeneralizedLinearRegressor": (tols("gradient_tol"), fit)}


# --- dask-glm -----------------------------------------------------------------------------


def dask_glm_runners(problem: GLMProblem) -> Runners:
    if problem.has_offset:
        return {"dask-glm newton": "takes neither an offset nor sample weights"}
    from dask_glm import algorithms
    from dask_glm.families import Logistic, Normal

    family = Logistic if problem.kind == "logistic" else Normal

    def fit(max_iter):
        g = zarr.open_group(problem.path, mode="r")
        rows = g["X"].chunks[0]
        X = da.from_array(g["X"], chunks=(rows, problem.d))
        y = da.from_array(g["y"], chunks=(rows,))
        if problem.kind == "logistic":
            y = (y > 0).astype(np.float64)
        if problem.fit_intercept:
            X = da.hstack([X, da.ones((X.shape[0], 1), chunks=(X.chunks[0], 1))])
        X, y = fit.client.persist([X, y])
        beta = np.asarray(algorithms.newton(X, y, family=family, max_iter=max_iter, tol=1e-14))
        return (beta[:-1], float(beta[-1])) if problem.fit_intercept else (beta, 0.0)

    # dask-glm's newton has no penalty: it minimises the unpenalised loss, and its
    # suboptimality is measured on the penalised objective
    return {"dask-glm newton (no penalty)": ([1, 3, 5, 10, 20, 40], fit)}


# --- IBM snapml (proprietary; benchmark only) ----------------------------------------------


def snapml_runners(problem: GLMProblem) -> Runners:
    try:
        import snapml
    except ImportError:
        return {"snapml": "not installed (no wheel for this platform or Python)"}
    if problem.kind == "poisson":
        return {"snapml": "has no Poisson model"}
    n = problem.n
    if problem.kind == "logistic":
        # snapml: sum of the losses + regularizer / 2 * ||w||^2 (as scikit-learn with
        # C = 1 / regularizer), so regularizer = n * alpha
        def fit(setting):
            X, y, _ = _read(problem)
            m = snapml.LogisticRegression(
                regularizer=n * problem.alpha,
                penalty="l2",
                fit_intercept=problem.fit_intercept,
                n_jobs=2,  # the two cores the Dask systems get
                **setting_kwargs(setting),
            )
            m.fit(X, y)
            return np.ravel(m.coef_), _snap_intercept(m, problem)

        # its defaults (100 epochs of dual coordinate descent) took 40-60 s at 100,000 rows
        # of the ill-conditioned problem: a first run of 10 epochs, then the defaults, so
        # that a full-size run stays within its budget (the sweep stops at the budget)
        settings = [{"max_iter": 10}, *tols()]
        return {"snapml LogisticRegression (first run: max_iter=10)": (settings, fit)}

    def fit_ls(setting):
        # the dual solver (the default) does not converge with the near-zero penalty of
        # least squares; the primal one ignores fit_intercept: a constant column then
        # carries the intercept (penalised by a negligible n * 1e-10)
        X, y, _ = _read(problem)
        if problem.fit_intercept:
            X = np.hstack([X, np.ones((X.shape[0], 1))])
        m = snapml.LinearRegression(
            regularizer=max(n * problem.alpha, n * 1e-10),
            penalty="l2",
            dual=False,
            fit_intercept=False,
            n_jobs=2,  # the two cores the Dask systems get
            **setting_kwargs(setting),
        )
        m.fit(X, y)
        coef = np.ravel(m.coef_)
        return (coef[:-1], float(coef[-1])) if problem.fit_intercept else (coef, 0.0)

    return {"snapml LinearRegression": (tols(), fit_ls)}


def _snap_intercept(model, problem: GLMProblem) -> float:
    # snapml fits the intercept as the weight of a constant column (intercept_scaling),
    # so it is penalised too: its optimum differs from the others' by that
    return float(np.ravel(model.intercept_)[0]) if problem.fit_intercept else 0.0


PROVIDERS = [sklearn_runners, glum_runners, dask_glm_runners, snapml_runners]
