"""Benchmark of one-vs-rest: ``SGDClassifier(loss="hinge")`` on the 10 digits classes.

Compares, in one run, on scikit-learn's digits (1,797 x 64, scaled to [0, 1]):

- ``sklearn``: scikit-learn's ``SGDClassifier(loss="hinge")`` (one process, its defaults);
- ``daskgd, one job``: daskgd's ``SGDClassifier(loss="hinge")``, which trains the 10
  binary problems as one job (one parameter column per class, one round trip per batch
  for all of them);
- ``daskgd, one fit per class``: what daskgd did before, one binary fit after the other
  (emulated with 10 binary ``SGDClassifier`` fits with the same settings on
  ``y == class``; their decision functions are stacked for the accuracy).

Each daskgd variant runs on a LocalCluster of 2 worker processes x 1 thread that is
started once (``client`` given), and, unless ``--quick``, also without a client: then
each fit starts (and closes) a LocalCluster of its own, as a first user's script does.

Usage: ``python bench/bench_ovr.py [--quick]``; writes ``bench/results/ovr.md`` and
``ovr.json``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _common import table, write_results
from distributed import Client, LocalCluster
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier as SkSGDClassifier

from daskgd import SGDClassifier

SETTINGS = {"loss": "hinge", "random_state": 0, "verbose": 0}


def _one_job(X, y, client) -> dict:
    t = time.perf_counter()
    est = SGDClassifier(**SETTINGS, client=client).fit(X, y)
    wall = time.perf_counter() - t
    return {
        "seconds": wall,
        "accuracy": float(est.score(X, y)),
        "epochs": int(est.n_iter_),
        "updates": int(est.n_updates_),
        "fits": 1,
    }


def _per_class(X, y, client) -> dict:
    classes = np.unique(y)
    t = time.perf_counter()
    fits = [SGDClassifier(**SETTINGS, client=client).fit(X, y == c) for c in classes]
    wall = time.perf_counter() - t
    scores = np.column_stack([f.decision_function(X) for f in fits])
    return {
        "seconds": wall,
        "accuracy": float(np.mean(classes[scores.argmax(axis=1)] == y)),
        "epochs": int(sum(f.n_iter_ for f in fits)),
        "updates": int(sum(f.n_updates_ for f in fits)),
        "fits": len(fits),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the runs without a client")
    args = parser.parse_args(argv)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    load_before = os.getloadavg()[0]  # the figures depend on what else the machine runs
    runs: dict[str, dict] = {}
    t = time.perf_counter()
    sk = SkSGDClassifier(loss="hinge", random_state=0).fit(X, y)
    runs["sklearn"] = {
        "seconds": time.perf_counter() - t,
        "accuracy": float(sk.score(X, y)),
        "epochs": int(sk.n_iter_),
        "updates": int(sk.t_ - 1),
        "fits": 1,
    }
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        SGDClassifier(**SETTINGS, max_iter=2, client=client).fit(X[:200], y[:200])  # warm up
        runs["daskgd, one job (client given)"] = _one_job(X, y, client)
        runs["daskgd, one fit per class (client given)"] = _per_class(X, y, client)
    if not args.quick:
        runs["daskgd, one job (no client)"] = _one_job(X, y, None)
        runs["daskgd, one fit per class (no client)"] = _per_class(X, y, None)
    rows = [
        [
            name,
            f"{r['seconds']:.2f}",
            f"{r['accuracy']:.4f}",
            str(r["fits"]),
            str(r["epochs"]),
            str(r["updates"]),
        ]
        for name, r in runs.items()
    ]
    load = {"before": load_before, "after": os.getloadavg()[0]}
    header = ["run", "seconds", "training accuracy", "fits", "epochs (summed)", "updates"]
    markdown = (
        "# One-vs-rest: SGDClassifier(loss='hinge') on digits (10 classes)\n\n{header}"
        "1,797 rows x 64 features (scaled to [0, 1]); daskgd on a LocalCluster of 2 worker "
        'processes x 1 thread ("client given": started once; "no client": each fit '
        'starts its own). "one fit per class" is what daskgd did before it trained the '
        "classes as one job. Load average (1 min) of the machine: "
        f"{load['before']:.1f} before, {load['after']:.1f} after.\n\n" + table(rows, header)
    )
    write_results("ovr", {"runs": runs, "load_average": load}, markdown)


if __name__ == "__main__":
    main()
