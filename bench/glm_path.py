"""The cross-validated path of the GLM benchmark: 5 folds x 20 values of C of an L2
logistic regression, daskgd's ``LogisticRegressionCV`` against scikit-learn's.

The same folds for everyone: the data are written in 10 equal row-chunks, and daskgd's
folds are ``KFold(5)`` over the row-chunks (contiguous pairs of chunks), which are
scikit-learn's ``KFold(5)`` (no shuffling) over the same rows. The same grid (``Cs=20``: 20 values
log-spaced in [1e-4, 1e4]) and scoring (accuracy). Each system is timed from its own
read of the Zarr data to the refitted model; daskgd's ratio is to one
``LogisticRegression`` fit at the chosen C on the same cluster.
"""

from __future__ import annotations

import time
import traceback
from functools import partial

import numpy as np
import zarr

import daskgd

FOLDS, N_CS = 5, 20


def write_path_problem(path: str, n: int, d: int, client) -> None:
    # 10 equal chunks (n a multiple of 10): 5 per worker, 2 per fold
    daskgd.make_classification(
        path,
        n,
        d,
        chunk_rows=n // (2 * FOLDS),
        random_state=2,
        client=client,
        compressor=None,
        overwrite=True,
    )


def _summary(seconds: float, C: float, scores: np.ndarray | None, coef, intercept) -> dict:
    return {
        "seconds": seconds,
        "C": float(C),
        # mean accuracy over the folds, per C (None where the estimator has no scores_)
        "mean_scores": None if scores is None else np.asarray(scores).mean(axis=0).tolist(),
        "coef": np.ravel(coef).tolist(),
        "intercept": float(np.ravel(intercept)[0]),
    }


def sklearn_path(path: str, solver: str) -> dict:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import KFold

    t0 = time.perf_counter()
    g = zarr.open_group(path, mode="r")
    X, y = g["X"][:], g["y"][:]
    m = LogisticRegressionCV(Cs=N_CS, cv=KFold(FOLDS), solver=solver, max_iter=10_000)
    m.fit(X, y)
    seconds = time.perf_counter() - t0
    return _summary(seconds, m.C_[0], m.scores_[m.classes_[1]], m.coef_, m.intercept_)


def daskgd_path(path: str, client) -> dict:
    try:
        cv_cls = daskgd.LogisticRegressionCV
    except AttributeError:
        return {"not_run": "not available in this build"}
    t0 = time.perf_counter()
    m = cv_cls(Cs=N_CS, cv=FOLDS, client=client).fit(path)
    seconds = time.perf_counter() - t0
    scores = getattr(m, "scores_", None)
    if isinstance(scores, dict):  # scikit-learn's layout: {positive class: (folds, Cs)}
        scores = next(iter(scores.values()))
    out = _summary(seconds, np.ravel(m.C_)[0], scores, m.coef_, m.intercept_)
    out["passes"] = getattr(m, "n_passes_", None)
    # one fit at the chosen C, the same cluster: the path's cost in fits
    t0 = time.perf_counter()
    daskgd.LogisticRegression(C=out["C"], client=client, verbose=0).fit(path)
    out["one_fit_seconds"] = time.perf_counter() - t0
    return out


def run_path(path: str, client) -> dict[str, dict]:
    runs = {
        f"scikit-learn LogisticRegressionCV ({s})": partial(sklearn_path, path, s)
        for s in ("lbfgs", "newton-cholesky")
    }
    runs["daskgd LogisticRegressionCV"] = partial(daskgd_path, path, client)
    results = {}
    for system, run in runs.items():
        try:
            results[system] = run()
        except Exception as exc:  # a system that fails is reported, not fatal
            traceback.print_exc()
            results[system] = {"not_run": f"failed: {type(exc).__name__}: {str(exc)[:200]}"}
    return results


def path_table_rows(results: dict[str, dict]) -> list[list[str]]:
    peers = [r["seconds"] for s, r in results.items() if "seconds" in r and "daskgd" not in s]
    best = min(peers) if peers else None
    rows = []
    for system, r in results.items():
        if "not_run" in r:
            rows.append([system, "—", "—", "—", "—", r["not_run"]])
            continue
        score = max(r["mean_scores"]) if r["mean_scores"] else float("nan")
        one = r.get("one_fit_seconds")
        rows.append(
            [
                system,
                f"{r['seconds']:.2f}",
                f"{r['seconds'] / best:.2f}" if best else "—",
                f"{r['C']:.3g}",
                f"{score:.4f}",
                f"{r['seconds'] / one:.1f} fits" if one else "",
            ]
        )
    return rows
