"""daskgd's entries in the peer comparison (``bench_peers.py``): the settings, stated.

Every run is ``daskgd.fit`` on the Zarr path, so it includes the workers' reads of their
chunks; ``validate=False`` because no peer scans the data either. Step sizes for the
first-order runs are ``1/L`` with ``L`` the curvature bound of the objective on
standard-normal features (``(1 + sqrt(d/n))^2`` for least squares; a quarter of it plus
``alpha`` for logistic regression).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from peers import Problem, sweep

import daskgd


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


def daskgd_runners(problem: Problem) -> dict[str, Callable]:
    ls = problem.kind == "least_squares"
    curvature = (1 + np.sqrt(problem.d / problem.n)) ** 2 + 1.0  # + the intercept's direction
    common = {
        "loss": "squared_error" if ls else "log_loss",
        "alpha": problem.alpha,
        "fit_intercept": problem.fit_intercept,
        "tol": None,
        "validate": False,
    }

    def runner(settings: dict, epochs: list[int]):
        def fit(max_epochs):
            res = daskgd.fit(problem.path, client=fit.client, max_epochs=max_epochs,
                             **common, **settings)  # fmt: skip
            return res.coef_, float(np.ravel(res.intercept_)[0]), _breakdown(res)

        def run(p, client, budget):
            fit.client = client
            return sweep(p, fit, epochs, budget)

        return run

    lr = 1.0 / (curvature if ls else 0.25 * curvature + problem.alpha)
    # the mini-batch runs (async and ssp): a decaying step from a quarter of 1/L
    sgd = {"batch_size": 1024, "optimizer": "sgd", "learning_rate": lr / 4,
           "lr_schedule": "invscaling", "power_t": 0.25, "random_state": 0}  # fmt: skip
    return {
        "daskgd sync L-BFGS": runner({"mode": "sync", "optimizer": "lbfgs"}, [3, 5, 7, 10, 20, 40]),
        "daskgd sync gradient descent (lr=1/L)": runner(
            {"mode": "sync", "optimizer": "sgd", "learning_rate": lr}, [5, 10, 20, 50, 150]
        ),
        "daskgd async SGD (batch 1,024)": runner({"mode": "async", **sgd}, [1, 2, 5, 10]),
        "daskgd ssp SGD (batch 1,024, staleness 4)": runner(
            {"mode": "ssp", "max_staleness": 4, **sgd}, [1, 2, 5, 10]
        ),
    }
