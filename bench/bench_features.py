"""Feature partitioning on a wide problem: time to a 1e-6 relative suboptimality, bytes per
iteration and the largest parameter block, rows against features.

``python bench/bench_features.py [--quick] [--budget S] [--data DIR]``

Two problems on 50,000 x 20,000 float32 (4 GB; ``--quick``: 20,000 x 4,000), written by
``daskgd.make_regression`` (noise 1) and ``daskgd.make_classification`` in row-chunks of
6,250 (2,500) rows and column chunks of 5,000 (1,000), uncompressed: ridge least squares
(``loss="squared_error"``) and L2 logistic regression (``loss="log_loss"``), both with
alpha = 1e-3. The same columns are also written as 4 separate groups of 5,000 (1,000)
columns (``read_columns`` of the store, then ``write_zarr``; each holds ``y``) and joined
with ``daskgd.concat_features``. ``--data DIR`` keeps the data (a folder per problem and
size) and reuses it.

Systems, each on 2 worker processes x 1 thread and the scheduler in a process of its own,
a fresh cluster for each run (started, and the workers' imports done, outside the timing):

- ``rows, L-BFGS``: ``partition="rows"``, ``optimizer="lbfgs"`` (what ``"auto"`` picks
  for a model over 512 parameters), from the column-chunked store;
- ``features, L-BFGS``: ``partition="features"``, ``optimizer="lbfgs"``, from the same
  store: each worker reads one block of 2 column chunks;
- ``features, L-BFGS, 4 groups``: the same from ``concat_features`` of the 4 groups, 2 per
  worker (opening the groups is timed);
- ``features, gradient descent``: ``optimizer="sgd"`` full batch (``learning_rate="auto"``);
- ``features, block method (cocoa)``: ``optimizer="cocoa"`` (10 local steps a round);
- ``grid, L-BFGS``: ``partition="grid"``, ``optimizer="lbfgs"``. A grid of W workers has
  ``round(sqrt(W))`` column blocks: on these 2 workers, 1 column block x 2 row blocks, so
  each worker holds every column of half the rows, as partitioned by rows, but through the
  block coordinator; a grid of column and row blocks needs 4 workers or more, which this
  2-core machine does not hold apart.

f*: a reference fit (``rows, L-BFGS``, ``tol=None``, stopped once 20 history rows have
improved on the best loss before them by less than 1e-10 of it, or at 300) whose final
coefficients are evaluated here in float64 (chunk by chunk, from the store); for least
squares with d <= 5,000 also the normal equations, in float64. f* is the least of those,
of every run's final coefficients evaluated here and of the row-partitioned runs' history
losses (exact: the row kernels add in float64). Each run stops (its callback) at the
first history row within ``REL`` = 1e-6 of the reference, or at the budget (``--budget``:
1800 s, ``--quick`` 120 s); ``to 1e-6 s`` is from ``daskgd.fit``'s call to the driver's
callback for the first history row whose loss is within 1e-6 of f* ((f - f*) / |f*|), and
``fit s`` to its return (the stop, gathering the blocks, the result).

``iterations``: history rows to the target. Row-partitioned L-BFGS has one per round, a
gradient at a trial point (accepted or not): one pass over X. Feature-partitioned and grid
fits have one per accepted iterate: two passes over each block (``X_k^T r`` and ``X_k p``)
and two all-reduces (a grid: three, the gradient's over a column of blocks); the line
search runs on the margins without the data. The block method has one per round of 10
local steps (20 passes over each block) and two all-reduces.

``MB per iteration``: to the server (rows: every worker's gradient, in float32,
``timings_["push_bytes"]``) or to the coordinator (features: each rank's partial margins,
dot products and its block's backup, ``timings_["reduce_bytes"]``); ``back``: what comes
back (rows: the whole model, 8 (d + 1) bytes, to every worker each round; features: every
reduction's sum, to every rank; the backups are not sent back). ``parameters a worker
holds``: rows, the whole model (each round's copy); features, its block of coefficients
(the intercept's slot included). ``on the scheduler``: rows, the model (its L-BFGS memory,
20 more vectors of d + 1, is there too); features and grid, the coordinator keeps each
rank's block of the last two iterates as backups (2 (d + K) values for K column blocks; a
grid's row blocks each keep their copy), to restart after a lost worker, never for
computing: a feature-partitioned worker keeps its block's L-BFGS memory itself.

``final subopt``: the final coefficients' relative suboptimality, evaluated here.
``history vs exact`` (feature-partitioned fits; a row-partitioned result is the step after
its last history row): the relative gap between the last history loss and the final
coefficients' loss evaluated here: the block solver carries the margins from iterate to iterate
(``m += t X p``) in products of the data's precision, so its history loss may drift from
the loss of its coefficients. ``peak RSS MB``: the largest worker's resident memory.

Writes ``bench/results/features.md`` and ``features.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # inherited by the Dask processes (see _common)

import numpy as np  # noqa: E402
from _common import peak_mb, table, use_peer_threads, write_results  # noqa: E402
from distributed import Client  # noqa: E402
from distributed.deploy.subprocess import SubprocessCluster  # noqa: E402

import daskgd  # noqa: E402
from daskgd.data import read_columns, read_row_arrays, read_row_chunks  # noqa: E402

REL = 1e-6  # the target's relative suboptimality
ALPHA = 1e-3
WORKERS, GROUPS, REF_EPOCHS, SETTLE = 2, 4, 300, 20
GRID_COLS = max(1, round(math.sqrt(WORKERS)))  # the column blocks of partition="grid"
NORMAL_EQUATIONS_MAX_D = 5_000  # a (d + 1)^2 float64 Gram matrix in this process
# rows, columns, rows per chunk, columns per chunk (= a group's columns), budget (s)
SIZES = {"full": (50_000, 20_000, 6_250, 5_000, 1800.0),
         "quick": (20_000, 4_000, 2_500, 1_000, 120.0)}  # fmt: skip
PROBLEMS = {"least squares": "squared_error", "logistic": "log_loss"}
# name, data ("store" or "groups"), daskgd.fit keyword arguments
SYSTEMS = [
    ("rows, L-BFGS", "store", {"partition": "rows", "optimizer": "lbfgs"}),
    ("features, L-BFGS", "store", {"partition": "features", "optimizer": "lbfgs"}),
    (f"features, L-BFGS, {GROUPS} groups", "groups",
     {"partition": "features", "optimizer": "lbfgs"}),
    ("features, gradient descent", "store", {"partition": "features", "optimizer": "sgd"}),
    ("features, block method (cocoa)", "store",
     {"partition": "features", "optimizer": "cocoa"}),
    ("grid, L-BFGS", "store", {"partition": "grid", "optimizer": "lbfgs"}),
]  # fmt: skip


@contextlib.contextmanager
def cluster():
    """A client of a fresh cluster: the scheduler and each worker in a process of its own."""
    with (
        SubprocessCluster(n_workers=WORKERS, threads_per_worker=1, dashboard_address=None,
                          silence_logs=logging.ERROR) as c,
        Client(c) as client,
    ):  # fmt: skip
        client.wait_for_workers(WORKERS)
        yield client


def prepare(root: Path, loss: str, size: tuple, client: Client) -> tuple[str, list[str]]:
    """The column-chunked store and its column groups, written unless there already."""
    n, d, chunk_rows, chunk_cols, _ = size
    folder = root / f"{loss}-{n}x{d}"
    folder.mkdir(parents=True, exist_ok=True)
    store = str(folder / "X.zarr")
    if not Path(store).exists():
        make = daskgd.make_regression if loss == "squared_error" else daskgd.make_classification
        extra = {"noise": 1.0} if loss == "squared_error" else {}
        make(store, n, d, chunk_rows=chunk_rows, chunk_cols=chunk_cols, dtype=np.float32,
             random_state=0, client=client, compressor=None, **extra)  # fmt: skip
    groups = [str(folder / f"group-{k}.zarr") for k in range(GROUPS)]
    width = d // GROUPS
    y = None
    for k, g in enumerate(groups):
        if not Path(g).exists():
            if y is None:
                every = list(range(daskgd.open_zarr(store).n_chunks))
                y = read_row_arrays(store, every, names=("y",))["y"]
            X = read_columns(store, k * width, (k + 1) * width)  # one group at a time
            daskgd.write_zarr(g, X, y, chunk_rows=chunk_rows, compressor=None, client=client)
            del X
    return store, groups


class Objective:
    """daskgd's objective, evaluated here in float64, one row-chunk at a time."""

    def __init__(self, path: str, loss: str) -> None:
        self.path, self.loss = path, loss
        self.n_chunks = daskgd.open_zarr(path).n_chunks

    def _chunks(self):
        for i in range(self.n_chunks):
            X, y, _ = read_row_chunks(self.path, [i])
            y = y.astype(np.float64)
            yield X.astype(np.float64), (2 * y - 1 if self.loss == "log_loss" else y)

    def __call__(self, coef: np.ndarray, intercept: float) -> float:
        w = np.asarray(coef, dtype=np.float64)
        total = n = 0.0
        with use_peer_threads(2):
            for X, y in self._chunks():
                z = X @ w + float(intercept)
                if self.loss == "log_loss":
                    total += float(np.logaddexp(0.0, -y * z).sum())
                else:
                    total += 0.5 * float(((z - y) ** 2).sum())
                n += len(y)
        return total / n + 0.5 * ALPHA * float(w @ w)

    def normal_equations(self) -> float:
        """The ridge optimum's objective, from ``(A^T A / n + alpha I') v = A^T y / n``."""
        H = b = None
        n = 0
        with use_peer_threads(2):
            for X, y in self._chunks():
                A = np.column_stack([X, np.ones(len(y))])
                H = A.T @ A if H is None else H + A.T @ A
                b = A.T @ y if b is None else b + A.T @ y
                n += len(y)
            assert H is not None and b is not None
            d = H.shape[0] - 1
            H /= n
            H[np.arange(d), np.arange(d)] += ALPHA
            v = np.linalg.solve(H, b / n)
        return self(v[:-1], v[-1])


def below(level: float) -> Callable[[list[dict]], bool]:
    """Stop at the first history row at or below ``level``."""
    return lambda points: points[-1]["loss"] <= level


def settled(points: list[dict]) -> bool:
    """Stop when the best loss of the last ``SETTLE`` rows improved on the best before them
    by less than ``REL * 1e-4`` of it (the reference has converged far past the target)."""
    if len(points) <= SETTLE:
        return False
    before = min(p["loss"] for p in points[:-SETTLE])
    return min(p["loss"] for p in points[-SETTLE:]) >= before - REL * 1e-4 * abs(before)


def run(name: str, data: str | list[str], loss: str, kw: dict,
        stop: Callable[[list[dict]], bool], budget: float,
        max_epochs: int = 100_000) -> dict:  # fmt: skip
    """One fit on a fresh cluster, stopped by its callback when ``stop(points)`` (or at the
    budget)."""
    points: list[dict] = []
    with cluster() as client:
        client.run(lambda: [importlib.import_module(f"daskgd.worker.{m}")
                            for m in ("task", "block_task")] and None)  # fmt: skip
        t0 = time.perf_counter()

        def callback(h: dict):
            points.append({"epoch": h["epoch"], "seconds": time.perf_counter() - t0,
                           "loss": h["loss"]})  # fmt: skip
            return False if stop(points) else None

        source = data if isinstance(data, str) else daskgd.concat_features(data, client=client)
        res = daskgd.fit(source, loss=loss, alpha=ALPHA, tol=None, max_epochs=max_epochs,
                         max_time=budget, callback=callback, client=client, **kw)  # fmt: skip
        wall = time.perf_counter() - t0
        workers = client.run(peak_mb)
        sched = client.run_on_scheduler(peak_mb)
    t = res.timings_
    out = {
        "system": name, "settings": kw, "reason": res.reason, "fit_s": wall,
        "open_s": t["open"], "load_s": max(r["load"] for r in t["ranks"]),
        "history_rows": len(res.history), "points": points,
        "peak_MB": {"scheduler": sched, "workers": sorted(workers.values())},
        "coef": res.coef_, "intercept": float(np.ravel(res.intercept_)[0]),
        "min_history_loss": min(h["loss"] for h in res.history),
        "last_history_loss": res.history[-1]["loss"],
    }  # fmt: skip
    d = res.coef_.size
    rows = len(res.history)
    if kw["partition"] == "rows":
        pushes = sum(t["push_bytes"]) / (4 * (d + 1))  # float32 gradients of d + 1
        out.update(to_bytes=sum(t["push_bytes"]) / rows, back_bytes=pushes * 8 * (d + 1) / rows,
                   worker_params=d + 1, scheduler_params=d + 1)  # fmt: skip
    else:
        widths = [b["columns"][1] - b["columns"][0] for b in res.blocks_]
        backups = sum(8 * (w + 1) * rows for w in widths)  # one with each iterate's stats
        sent = sum(t["reduce_bytes"])
        out.update(to_bytes=sent / rows, back_bytes=(sent - backups) / rows,
                   worker_params=max(widths) + 1,
                   scheduler_params=2 * sum(w + 1 for w in widths),
                   blocks=res.blocks_, reductions=t["reductions"])  # fmt: skip
    print(f"{name}: {res.reason}; {len(points)} rows, {wall:.1f} s", flush=True)
    return out


def reached(run_: dict, f_star: float) -> dict | None:
    """The first point within ``REL`` of ``f_star``, or None."""
    return next((p for p in run_["points"] if (p["loss"] - f_star) / abs(f_star) <= REL), None)


def solve(problem: str, loss: str, store: str, groups: list[str], size: tuple) -> dict:
    """The reference, every system's run, f*, for one problem."""
    d, budget = size[1], size[-1]
    objective = Objective(store, loss)
    ref = run("reference (rows, L-BFGS)", store, loss, SYSTEMS[0][2], settled, budget * 2,
              max_epochs=REF_EPOCHS)  # fmt: skip
    exact = {"reference": objective(ref["coef"], ref["intercept"])}
    if loss == "squared_error" and d <= NORMAL_EQUATIONS_MAX_D:
        exact["normal equations"] = objective.normal_equations()
    f_ref = min(*exact.values(), ref["min_history_loss"])
    runs = []
    for name, kind, kw in SYSTEMS:
        r = run(name, store if kind == "store" else groups, loss, kw,
                below(f_ref + REL * abs(f_ref)), budget)  # fmt: skip
        r["final_loss"] = objective(r.pop("coef"), r["intercept"])
        runs.append(r)
    ref["final_loss"] = exact["reference"]
    candidates = [*exact.values(), *(r["final_loss"] for r in runs), ref["min_history_loss"]]
    candidates += [r["min_history_loss"] for r in runs if r["settings"]["partition"] == "rows"]
    f_star = min(candidates)
    for r in [ref, *runs]:
        r.pop("coef", None)
        hit = reached(r, f_star)
        r["to_target_s"] = None if hit is None else hit["seconds"]
        r["iterations"] = None if hit is None else hit["epoch"]
        r["final_subopt"] = (r["final_loss"] - f_star) / abs(f_star)
        # a row-partitioned result has taken the step after its last history row
        rows = r["settings"]["partition"] == "rows"
        gap = (r["last_history_loss"] - r["final_loss"]) / abs(f_star)
        r["history_vs_exact"] = None if rows else gap
    return {"loss": loss, "f_star": f_star, "f_ref": f_ref, "exact": exact,
            "reference": ref, "runs": runs}  # fmt: skip


def _mb(x: float) -> str:
    return f"{x / 1e6:.2f}"


def summary_rows(results: dict) -> list[list[str]]:
    rows = []
    for problem, res in results.items():
        for r in res["runs"]:
            hit = r["to_target_s"]
            best = min((p["loss"] for p in r["points"]), default=np.nan)
            to = (f"{hit:.1f}" if hit is not None else
                  f"not reached ({(best - res['f_star']) / abs(res['f_star']):.1e})")  # fmt: skip
            rows.append([
                problem, r["system"], to, f"{r['fit_s']:.1f}",
                "" if r["iterations"] is None else str(r["iterations"]),
                f"{_mb(r['to_bytes'])} / {_mb(r['back_bytes'])}",
                f"{r['worker_params']:,}", f"{r['scheduler_params']:,}",
            ])  # fmt: skip
    return rows


def detail_rows(results: dict) -> list[list[str]]:
    rows = []
    for problem, res in results.items():
        for r in [res["reference"], *res["runs"]]:
            rows.append([
                problem, r["system"], f"{r['load_s']:.1f}", str(r["history_rows"]),
                f"{r['final_subopt']:.1e}",
                "" if r["history_vs_exact"] is None else f"{r['history_vs_exact']:.1e}",
                f"{max(r['peak_MB']['workers']):,.0f}", f"{r['peak_MB']['scheduler']:,.0f}",
                r["reason"],
            ])  # fmt: skip
    return rows


def reading(results: dict, n: int, d: int) -> str:
    """A few sentences on the figures, from them."""
    out = []
    for problem, res in results.items():
        by = {r["system"]: r for r in res["runs"]}
        rows, cols = by["rows, L-BFGS"], by["features, L-BFGS"]
        if rows["to_target_s"] and cols["to_target_s"]:
            ratio = cols["to_target_s"] / rows["to_target_s"]
            out.append(f"{problem}: feature-partitioned L-BFGS reached 1e-6 in "
                       f"{cols['to_target_s']:.1f} s, {ratio:.2f}x the row-partitioned "
                       f"{rows['to_target_s']:.1f} s")  # fmt: skip
        else:
            out.append(f"{problem}: rows or features L-BFGS did not reach 1e-6 (see the table)")
        ratio_b = (cols["to_bytes"] + cols["back_bytes"]) / (rows["to_bytes"] + rows["back_bytes"])
        out[-1] += (
            f"; it moved {ratio_b:.2f}x the bytes per iteration (its messages grow with "
            f"the rows, n = {n:,}, the row partition's with the columns, d = {d:,})."
        )
    first = results[next(iter(results))]["runs"]
    cols = next(r for r in first if r["system"] == "features, L-BFGS")
    out.append(
        f"The largest parameter block a process computes with: {d + 1:,} values (the whole "
        f"model, on the scheduler and sent to every worker each round) partitioned by rows, "
        f"{cols['worker_params']:,} partitioned by features. The coordinator still keeps "
        f"{cols['scheduler_params']:,} values: each block's last two iterates, backups to "
        "restart from after a lost worker, not used to compute; and each feature-partitioned "
        f"worker holds margin vectors of n = {n:,} values."
    )
    if GRID_COLS == 1:
        out[-1] += (f" The grid on {WORKERS} workers is one column block: every worker holds "
                    "the whole model, as partitioned by rows.")  # fmt: skip
    return "\n\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budget", type=float, default=None, help="seconds a run may take")
    parser.add_argument("--data", default=None, help="folder for the Zarr datasets (kept)")
    args = parser.parse_args()
    size = SIZES["quick" if args.quick else "full"]
    if args.budget is not None:
        size = (*size[:-1], args.budget)
    n, d = size[:2]
    root = Path(args.data or tempfile.mkdtemp(prefix="daskgd-bench-features-"))
    results = {}
    for problem, loss in PROBLEMS.items():
        with cluster() as client:
            store, groups = prepare(root, loss, size, client)
        results[problem] = solve(problem, loss, store, groups, size)
        print(problem, {k: results[problem][k] for k in ("f_star", "exact")}, flush=True)
    md = ["# Feature partitioning on a wide problem\n\n{header}", __doc__.split("\n\n", 2)[2]]
    header = ["problem", "system", "to 1e-6 s", "fit s", "iterations",
              "MB per iteration (to / back)", "parameters a worker holds",
              "on the scheduler"]  # fmt: skip
    grid = f"{GRID_COLS} column block(s) x {WORKERS // GRID_COLS} row blocks"
    md.append(f"\n## Summary\n\n{n:,} x {d:,} float32, {WORKERS} workers (the grid: {grid})."
              "\n\n" + table(summary_rows(results), header))  # fmt: skip
    md.append("\n" + reading(results, n, d))
    dheader = ["problem", "system", "load s (slowest rank)", "history rows", "final subopt",
               "history vs exact", "peak RSS MB (worker)", "peak RSS MB (scheduler)",
               "reason"]  # fmt: skip
    md.append("\n## Details\n\n" + table(detail_rows(results), dheader))
    f = "; ".join(f"{p}: f* = {r['f_star']:.12g}" for p, r in results.items())
    md.append(f"\n{f}.\n")
    write_results("features", {"n": n, "d": d, "workers": WORKERS, "alpha": ALPHA,
                               "rel": REL, "results": results}, "".join(md))  # fmt: skip


if __name__ == "__main__":
    main()
