"""daskgd's entries in the peer comparison (``bench_peers.py``), called as a user calls them.

Every run starts from the Zarr path with daskgd's defaults, validation included: the
estimators (``LinearRegression()``, ``LogisticRegression(C=...)``) and ``daskgd.fit``
with the full-batch optimizers (``lbfgs``; ``auto`` and ``newton`` where this build has
them; its default, gradient descent with the automatic step). The defaults of each are
what the "defaults" columns measure; the sweeps (``max_epochs`` with ``tol=None``) give
the time to the targets. The mini-batch runs (async and ssp SGD) have no defaults that
make sense here: their first setting stands for them.
"""

from __future__ import annotations

import numpy as np
from peers import Problem, System, setting_kwargs

import daskgd
import daskgd.objective


def _breakdown(res) -> dict:
    """Where the fit's time went (seconds): the slowest task's load, kernel and push."""
    t = res.timings_
    ranks = t["ranks"]
    slowest = max(ranks, key=lambda r: sum(r.values())) if ranks else {}
    return {
        "wall": t["wall"],
        "driver": t["open"] + t["setup"],
        **{k: slowest.get(k, 0.0) for k in ("load", "kernel", "push")},
        "epochs": res.n_iter_,
    }


def estimator_name(problem: Problem) -> str:
    if problem.kind == "least_squares":
        return "daskgd LinearRegression()"
    return "daskgd LogisticRegression(C=1/(n alpha), fit_intercept=False)"


def _estimator(problem: Problem):
    def fit(setting, client=None):
        common = {"client": client, "verbose": 0, "fit_intercept": problem.fit_intercept}
        if problem.kind == "least_squares":
            est = daskgd.LinearRegression(**common, **setting_kwargs(setting))
        else:
            # the estimator follows scikit-learn: C = 1 / (n * alpha)
            est = daskgd.LogisticRegression(
                C=1.0 / (problem.n * problem.alpha), **common, **setting_kwargs(setting)
            )
        est.fit(problem.path)
        return est.coef_.ravel(), float(np.ravel(est.intercept_)[0]), {"epochs": est.n_iter_}

    return System(fit, dask=True)


def _fit(problem: Problem, defaults: dict, settings: list) -> System:
    base = {
        "loss": "squared_error" if problem.kind == "least_squares" else "log_loss",
        "alpha": problem.alpha,
        "fit_intercept": problem.fit_intercept,
    }

    def fit(setting, client=None):
        res = daskgd.fit(problem.path, client=client, **base, **defaults, **setting_kwargs(setting))
        return res.coef_, float(np.ravel(res.intercept_)[0]), _breakdown(res)

    return System(fit, settings=settings, dask=True)


def daskgd_runners(problem: Problem) -> dict[str, System]:
    def epochs(ks):
        return [{"max_epochs": k, "tol": None} for k in ks]

    runners = {estimator_name(problem): _estimator(problem)}
    for optimizer in ("auto", "newton"):
        # the newer optimizers, where this build has them
        if optimizer == "auto" and not hasattr(daskgd.objective, "choose_optimizer"):
            continue
        if optimizer == "newton" and "newton" not in daskgd.objective.OPTIMIZERS:
            continue
        runners[f'daskgd fit(optimizer="{optimizer}")'] = _fit(
            problem, {"optimizer": optimizer}, epochs([1, 2, 3, 5, 10, 20])
        )
    runners['daskgd fit(optimizer="lbfgs")'] = _fit(
        problem, {"optimizer": "lbfgs"}, epochs([3, 5, 7, 10, 20, 40])
    )
    runners["daskgd fit() (its defaults: sync gradient descent)"] = _fit(
        problem, {}, epochs([5, 10, 20, 50, 150])
    )
    # the mini-batch runs: a decaying step from the automatic one
    sgd = {
        "batch_size": 1024,
        "optimizer": "sgd",
        "lr_schedule": "invscaling",
        "power_t": 0.25,
        "random_state": 0,
    }
    for name, mode in (
        ("async SGD (batch 1,024)", {"mode": "async"}),
        ("ssp SGD (batch 1,024, staleness 4)", {"mode": "ssp", "max_staleness": 4}),
    ):
        runs = epochs([1, 2, 5, 10])
        system = _fit(problem, {**mode, **sgd}, runs[1:])
        system.defaults = runs[0]
        runners[f"daskgd {name}"] = system
    return runners


__all__ = ["daskgd_runners", "estimator_name"]
