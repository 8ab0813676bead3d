"""Cross-validated paths against one fit: K folds x L penalties, timed on a Zarr dataset.

    python bench/bench_cv.py [--rows 200000] [--features 50] [--workers 2] [--out DIR]

Writes a classification and a regression dataset (``chunk_rows`` rows per chunk), then
times, on one LocalCluster (``--workers`` processes x 1 thread), each estimator as a user
calls it on the path (the second of two runs; the first, warming the workers' imports, is
reported too): ``LogisticRegression()`` (one fit, defaults) against
``LogisticRegressionCV(Cs=20, cv=5)``, ``LinearRegression()`` against ``RidgeCV`` (20
alphas) and ``ElasticNetCV`` (20 alphas), with scikit-learn's ``LogisticRegressionCV``
(newton-cholesky, the same 5 x 20) on the numpy arrays for reference. Prints Markdown and
writes ``cv.md``/``cv.json`` under ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    from distributed import Client, LocalCluster
    from sklearn import linear_model as sk

    import daskgd

    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk-rows", type=int, default=20_000)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    n, d = a.rows, a.features
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d))
    beta = rng.normal(size=d) / np.sqrt(d)
    y_clf = (X @ beta + rng.logistic(size=n) > 0).astype(np.int64)
    y_reg = X @ beta + rng.normal(size=n)
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(n_workers=a.workers, threads_per_worker=1, dashboard_address=":0") as cl,
        Client(cl) as client,
    ):
        clf, reg = os.path.join(tmp, "clf.zarr"), os.path.join(tmp, "reg.zarr")
        daskgd.write_zarr(clf, X, y_clf, chunk_rows=a.chunk_rows)
        daskgd.write_zarr(reg, X, y_reg, chunk_rows=a.chunk_rows)
        cases = [
            ("LogisticRegression()", clf, lambda: daskgd.LogisticRegression(verbose=0)),
            (
                "LogisticRegressionCV(Cs=20, cv=5)",
                clf,
                lambda: daskgd.LogisticRegressionCV(Cs=20, cv=5),
            ),
            ("LinearRegression()", reg, lambda: daskgd.LinearRegression(verbose=0)),
            (
                "RidgeCV(alphas=np.logspace(-3, 3, 20), cv=5)",
                reg,
                lambda: daskgd.RidgeCV(alphas=np.logspace(-3, 3, 20), cv=5),
            ),
            ("ElasticNetCV(alphas=20, cv=5)", reg, lambda: daskgd.ElasticNetCV(alphas=20, cv=5)),
        ]
        for name, path, make in cases:
            first, _ = _timed(lambda make=make, path=path: make().fit(path))
            warm, est = _timed(lambda make=make, path=path: make().fit(path))
            passes = getattr(est, "n_passes_", getattr(est, "n_iter_", None))
            rows.append(
                {
                    "estimator": name,
                    "first_s": first,
                    "warm_s": warm,
                    "passes": int(np.ravel(passes)[0]) if passes is not None else None,
                }
            )
            print(rows[-1], flush=True)
        client.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t, _ = _timed(
            lambda: sk.LogisticRegressionCV(
                Cs=20, cv=5, solver="newton-cholesky", l1_ratios=(0.0,)
            ).fit(X, y_clf)
        )
    rows.append(
        {
            "estimator": "sklearn LogisticRegressionCV(Cs=20, cv=5, newton-cholesky), 1 process",
            "first_s": t,
            "warm_s": t,
            "passes": None,
        }
    )
    base = {r["estimator"]: r["warm_s"] for r in rows}
    ratio_lr = base["LogisticRegressionCV(Cs=20, cv=5)"] / base["LogisticRegression()"]
    ratio_ridge = base["RidgeCV(alphas=np.logspace(-3, 3, 20), cv=5)"] / base["LinearRegression()"]
    lines = [
        f"# Cross-validated paths: {n:,} x {d}, {a.workers} workers x 1 thread, chunks of "
        f"{a.chunk_rows:,} rows (Zarr)",
        "",
        "Command: `python bench/bench_cv.py" + (f" --rows {n} --features {d}") + "`",
        "",
        "| estimator | first fit (s) | warm fit (s) | passes / iterations |",
        "|---|---|---|---|",
        *[
            f"| {r['estimator']} | {r['first_s']:.2f} | {r['warm_s']:.2f} | {r['passes']} |"
            for r in rows
        ],
        "",
        f"LogisticRegressionCV (5 folds x 20 C) / one LogisticRegression fit: {ratio_lr:.2f}x; "
        f"RidgeCV (5 x 20) / one LinearRegression fit: {ratio_ridge:.2f}x. Load average "
        f"after the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
    ]
    print("\n".join(lines))
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cv.md").write_text("\n".join(lines) + "\n")
        (out / "cv.json").write_text(
            json.dumps({"rows": rows, "ratio_lr": ratio_lr, "ratio_ridge": ratio_ridge}, indent=2)
        )


if __name__ == "__main__":
    main()
