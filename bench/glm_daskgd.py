"""daskgd's entries in the GLM benchmark (``bench_glm.py``), called as a user calls them.

Every run starts from the Zarr path with daskgd's defaults (validation on): the
estimators (``LinearRegression``, ``LogisticRegression``, ``PoissonRegressor``) and
``daskgd.fit`` with each full-batch optimizer this build has (``auto``, ``newton``,
``lbfgs``). The first setting of each is the defaults; the next ones tighten the
tolerance, so that the time to the tight target is measured too. A runner this build
lacks (the Newton optimizer, the Poisson loss, offsets, the GLM estimators) is reported
as "not available in this build" instead of being run.

Each fit returns ``(coef, intercept, info)`` with ``info["passes"]``: the rounds of the
fit's history (one pass over the data each).
"""

from __future__ import annotations

import inspect

import numpy as np
from glm_peers import Runners
from glm_problems import GLMProblem
from peers import DEFAULT, setting_kwargs

import daskgd
import daskgd.objective

LOSS = {"least_squares": "squared_error", "logistic": "log_loss", "poisson": "poisson"}


def capabilities() -> dict[str, bool]:
    """What this build of daskgd offers of the newer API."""
    return {
        "newton": "newton" in daskgd.objective.OPTIMIZERS,
        "auto": hasattr(daskgd.objective, "choose_optimizer"),
        "poisson": "poisson" in daskgd.objective.LOSSES,
        "offset": "offset" in inspect.signature(daskgd.fit).parameters,
        "PoissonRegressor": _has("PoissonRegressor"),
        "LogisticRegressionCV": _has("LogisticRegressionCV"),
    }


def _has(name: str) -> bool:
    try:
        getattr(daskgd, name)
    except AttributeError:
        return False
    return True


def missing(problem: GLMProblem, caps: dict[str, bool]) -> str | None:
    """Why this build cannot fit the problem at all, or None."""
    if problem.kind == "poisson" and not (caps["poisson"] and caps["offset"]):
        return "not available in this build (no Poisson loss with an offset)"
    return None


def _estimator(problem: GLMProblem, client, setting):
    tol = setting_kwargs(setting)
    common = {"client": client, "verbose": 0, "fit_intercept": problem.fit_intercept, **tol}
    if problem.kind == "least_squares":
        return daskgd.LinearRegression(**common)
    if problem.kind == "logistic":
        # C = 1 / (n * alpha): the estimator follows scikit-learn's convention
        return daskgd.LogisticRegression(C=1.0 / (problem.n * problem.alpha), **common)
    return daskgd.PoissonRegressor(alpha=problem.alpha, **common)


def estimator_name(problem: GLMProblem) -> str:
    name = {
        "least_squares": "LinearRegression",
        "logistic": "LogisticRegression",
        "poisson": "PoissonRegressor",
    }[problem.kind]
    return f"daskgd {name}"


def daskgd_runners(problem: GLMProblem, client, budget: float) -> Runners:
    caps = capabilities()
    why = missing(problem, caps)
    if why:
        return {estimator_name(problem): why, "daskgd fit": why}
    runners: Runners = {}

    def fit_estimator(setting):
        est = _estimator(problem, client, setting).fit(problem.path)
        info = {
            "passes": len(est.history_["epoch"]),
            "n_iter": int(est.n_iter_),
            "converged": bool(est.converged_),
        }
        return est.coef_.ravel(), float(np.ravel(est.intercept_)[0]), info

    if problem.kind != "poisson" or caps["PoissonRegressor"]:
        runners[estimator_name(problem)] = ([DEFAULT, 1e-11, 1e-13], fit_estimator)
    else:
        runners[estimator_name(problem)] = "not available in this build"

    for optimizer in ("auto", "newton", "lbfgs"):
        name = f'daskgd fit(optimizer="{optimizer}")'
        if optimizer != "lbfgs" and not caps[optimizer]:
            runners[name] = "not available in this build"
            continue
        runners[name] = (_fit_settings(budget), _fit_runner(problem, client, optimizer))
    return runners


def _fit_settings(budget: float) -> list:
    # defaults (max_epochs=100, tol=1e-4 on the loss's relative decrease), then gradient
    # tolerances relative to the start, with room for the epochs they need
    # (max_time: a slow optimizer stops at the budget and reports what it reached)
    tight = [
        {"tol": None, "gtol_rel": g, "max_epochs": 3000, "max_time": budget}
        for g in (1e-6, 1e-8, 1e-10)
    ]
    return [DEFAULT, *tight]


def _fit_runner(problem: GLMProblem, client, optimizer: str):
    def fit(setting):
        extra = setting_kwargs(setting)
        res = daskgd.fit(
            problem.path,
            loss=LOSS[problem.kind],
            alpha=problem.alpha,
            fit_intercept=problem.fit_intercept,
            optimizer=optimizer,
            client=client,
            **extra,
        )
        info = {
            "passes": len(res.history),
            "n_iter": int(res.n_iter_),
            "converged": bool(res.converged_),
        }
        return np.ravel(res.coef_), float(np.ravel(res.intercept_)[0]), info

    return fit
