"""Feature partitioning on a wide problem: time to a 1e-6 relative suboptimality, bytes per
iteration and the largest parameter block, rows against features.

``python bench/bench_features.py [--quick] [--systems NAME,NAME] [--problems LOSS,LOSS]
[--budget S] [--slow-budget S] [--data DIR]``

Two problems on 50,000 x 20,000 float32 (4 GB; ``--quick``: 20,000 x 4,000), written by
``daskgd.make_regression`` (noise 1) and ``daskgd.make_classification`` in row-chunks of
6,250 (2,500) rows and column chunks of 5,000 (1,000), uncompressed: ridge least squares
(``loss="squared_error"``) and L2 logistic regression (``loss="log_loss"``), both with
alpha = 1e-3. The same columns are also written as 4 separate groups of 5,000 (1,000)
columns (``read_columns`` of the store, then ``write_zarr``; each holds ``y``) and joined
with ``daskgd.concat_features`` (the generator draws each row whole: a narrower call gives
other columns). ``--data DIR`` keeps the data (a folder per problem and size) and reuses
it. ``--problems``: the losses to run; ``--systems``: the systems named, or whose names
contain a string given (split at a comma not followed by a space: ``"rows, L-BFGS,grid"``
is two); the reference runs whatever is picked.

Systems: the scheduler in a process of its own and 2 worker processes x 1 thread (the grid:
4), a fresh cluster a run (started, the workers' imports done, outside the timing):

- ``rows, L-BFGS``: ``partition="rows"``, ``optimizer="lbfgs"`` (what ``"auto"`` picks
  for a model over 512 parameters), from the column-chunked store;
- ``features, L-BFGS``: ``partition="features"``, ``optimizer="lbfgs"``, from the same
  store: each worker reads one block of 2 column chunks;
- ``features, L-BFGS, 4 groups``: the same from ``concat_features`` of the 4 groups, 2 per
  worker (opening the groups is timed);
- ``features, gradient descent``: ``optimizer="sgd"`` full batch (``learning_rate="auto"``);
- ``features, block method (cocoa)``: ``optimizer="cocoa"`` (10 local steps a round);
- ``grid, L-BFGS``: ``partition="grid"``, ``optimizer="lbfgs"`` on 4 worker processes x 1
  thread: ``max(2, round(sqrt(W)))`` column blocks of W workers (on 2, a feature partition),
  here 2 x 2 row blocks, a quarter of X a worker. Its 4 processes share this machine's 2
  cores, so its time is not comparable one to one: it is there for the bytes per
  iteration, the parameters a process holds and the iterations.

f*: the ``rows, L-BFGS`` run is the reference: it runs on (``tol=None``) until 20 history
rows improved on the best loss before them by less than 1e-10 of it (or 300 rows, or its
budget); its final coefficients are evaluated here in float64, chunk by chunk from the
store (for least squares with d <= 5,000 also the normal equations). Its ``to 1e-6 s`` is
read off its history, its ``fit s`` is to the plateau. f* is the least of those and of
every run's final coefficients evaluated here (one pass over the store after the runs),
not of history losses (the row-partitioned history went 2e-9 below the normal equations'
optimum at ``--quick``: not exact). Each other run stops (its callback) at the first
history row within ``REL`` = 1e-6 of the reference, or at its budget: ``--budget`` (600 s)
for L-BFGS, ``--slow-budget`` (120 s) for gradient descent and the block method ("not in
S s", with the relative suboptimality reached).
``to 1e-6 s``: from ``daskgd.fit``'s call to the callback of the first history row within
1e-6 of f* ((f - f*) / |f*|); ``fit s``: to its return (the stop, the blocks, the result).

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
``history vs exact`` (block fits; a row-partitioned result is the step after its last
history row): the relative gap between the last history loss and the final coefficients'
loss evaluated here. The block fits sum float32 blocks in float64 (a slice of rows widened
at a time, as the row kernels do), so the margins they carry from iterate to iterate
(``m += t X p``) keep to rounding (below 1e-12); more would be a fault. ``peak RSS MB``:
the largest worker's resident memory. Progress lines (clock time, seconds since the
start) go to standard output: each dataset written, each run, a fit's loss every 30 s.

Writes ``bench/results/features.md`` and ``features.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

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
WORKERS, GRID_WORKERS, GROUPS, REF_EPOCHS, SETTLE = 2, 4, 4, 300, 20
PROGRESS_S = 30.0  # a running fit's loss is printed this often
NORMAL_EQUATIONS_MAX_D = 5_000  # a (d + 1)^2 float64 Gram matrix in this process
# rows, columns, rows per chunk, columns per chunk (= a group's columns)
SIZES = {"full": (50_000, 20_000, 6_250, 5_000), "quick": (20_000, 4_000, 2_500, 1_000)}
PROBLEMS = {"least squares": "squared_error", "logistic": "log_loss"}
START = time.perf_counter()


class System(NamedTuple):
    name: str
    data: str  # "store" (the column-chunked store) or "groups" (concat_features of them)
    kw: dict  # daskgd.fit keyword arguments
    workers: int = WORKERS
    slow: bool = False  # a first-order method, stopped at --slow-budget


SYSTEMS = [
    System("rows, L-BFGS", "store", {"partition": "rows", "optimizer": "lbfgs"}),
    System("features, L-BFGS", "store", {"partition": "features", "optimizer": "lbfgs"}),
    System(f"features, L-BFGS, {GROUPS} groups", "groups",
           {"partition": "features", "optimizer": "lbfgs"}),
    System("features, gradient descent", "store",
           {"partition": "features", "optimizer": "sgd"}, slow=True),
    System("features, block method (cocoa)", "store",
           {"partition": "features", "optimizer": "cocoa"}, slow=True),
    System("grid, L-BFGS", "store", {"partition": "grid", "optimizer": "lbfgs"},
           workers=GRID_WORKERS),
]  # fmt: skip
REFERENCE = SYSTEMS[0]  # runs on to its plateau: its final loss is the reference


def log(message: str) -> None:
    """A progress line: the clock time and the seconds since the start."""
    print(f"[{time.strftime('%X')} {time.perf_counter() - START:7.1f} s] {message}", flush=True)


@contextlib.contextmanager
def cluster(workers: int = WORKERS):
    """A client of a fresh cluster: the scheduler and each worker in a process of its own."""
    with (
        SubprocessCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None,
                          silence_logs=logging.ERROR) as c,
        Client(c) as client,
    ):  # fmt: skip
        client.wait_for_workers(workers)
        yield client


def prepare(root: Path, loss: str, size: tuple, client: Client,
            with_groups: bool) -> tuple[str, list[str], dict]:  # fmt: skip
    """The column-chunked store and its groups, written unless there; the seconds it took."""
    n, d, chunk_rows, chunk_cols = size
    folder = root / f"{loss}-{n}x{d}"
    folder.mkdir(parents=True, exist_ok=True)
    store = str(folder / "X.zarr")
    seconds: dict[str, float] = {}
    if not Path(store).exists():
        log(f"writing {store} ({n * d * 4 / 1e9:.2f} GB)")
        t = time.perf_counter()
        make = daskgd.make_regression if loss == "squared_error" else daskgd.make_classification
        extra = {"noise": 1.0} if loss == "squared_error" else {}
        make(store, n, d, chunk_rows=chunk_rows, chunk_cols=chunk_cols, dtype=np.float32,
             random_state=0, client=client, compressor=None, **extra)  # fmt: skip
        seconds["store"] = time.perf_counter() - t
        log(f"wrote the store in {seconds['store']:.1f} s")
    groups = [str(folder / f"group-{k}.zarr") for k in range(GROUPS)]
    width = d // GROUPS
    y, t = None, time.perf_counter()
    for k, g in enumerate(groups if with_groups else []):
        if not Path(g).exists():
            if y is None:
                every = list(range(daskgd.open_zarr(store).n_chunks))
                y = read_row_arrays(store, every, names=("y",))["y"]
            # one group at a time: its column chunk of each row-chunk, read whole
            X = read_columns(store, k * width, (k + 1) * width)
            daskgd.write_zarr(g, X, y, chunk_rows=chunk_rows, compressor=None, client=client)
            del X
            log(f"wrote group {k} ({n * width * 4 / 1e9:.2f} GB)")
    if y is not None:
        seconds["groups"] = time.perf_counter() - t
    return store, groups, seconds


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

    def __call__(self, params: list[tuple[np.ndarray, float]]) -> list[float]:
        """The objective at each ``(coef, intercept)``, all in one pass over the store."""
        W = np.column_stack([np.asarray(c, dtype=np.float64) for c, _ in params])
        b = np.array([float(i) for _, i in params])
        total = np.zeros(len(params))
        n = 0
        with use_peer_threads(2):
            for X, y in self._chunks():
                Z = X @ W + b
                if self.loss == "log_loss":
                    total += np.logaddexp(0.0, -y[:, None] * Z).sum(axis=0)
                else:
                    total += 0.5 * ((Z - y[:, None]) ** 2).sum(axis=0)
                n += len(y)
        return [float(v) for v in total / n + 0.5 * ALPHA * (W * W).sum(axis=0)]

    def normal_equations(self) -> float:
        """The ridge optimum's objective, from ``(A^T A / n + alpha I') v = A^T y / n``."""
        d = daskgd.open_zarr(self.path).n_features
        H, b, n = np.zeros((d + 1, d + 1)), np.zeros(d + 1), 0
        with use_peer_threads(2):
            for X, y in self._chunks():
                A = np.column_stack([X, np.ones(len(y))])
                H += A.T @ A
                b += A.T @ y
                n += len(y)
            H /= n
            H[np.arange(d), np.arange(d)] += ALPHA
            v = np.linalg.solve(H, b / n)
        return self([(v[:-1], v[-1])])[0]


def below(level: float) -> Callable[[list[dict]], bool]:
    """Stop at the first history row at or below ``level``."""
    return lambda points: points[-1]["loss"] <= level


def settled(points: list[dict]) -> bool:
    """Stop once the last ``SETTLE`` rows improved on the best before by < ``REL * 1e-4``."""
    if len(points) <= SETTLE:
        return False
    before = min(p["loss"] for p in points[:-SETTLE])
    return min(p["loss"] for p in points[-SETTLE:]) >= before - REL * 1e-4 * abs(before)


def run(system: System, data: str | list[str], loss: str, stop: Callable[[list[dict]], bool],
        budget: float, max_epochs: int = 100_000) -> dict:  # fmt: skip
    """One fit on a fresh cluster, stopped by its callback at ``stop(points)`` or ``budget``."""
    name, kw = system.name, system.kw
    points: list[dict] = []
    log(f"{name}: starting ({system.workers} workers, budget {budget:g} s)")
    with cluster(system.workers) as client:
        client.run(lambda: [importlib.import_module(f"daskgd.worker.{m}")
                            for m in ("task", "block_task")] and None)  # fmt: skip
        t0 = shown = time.perf_counter()

        def callback(h: dict):
            nonlocal shown
            now = time.perf_counter()
            points.append({"epoch": h["epoch"], "seconds": now - t0, "loss": h["loss"]})
            if now - shown >= PROGRESS_S:
                shown = now
                log(f"  {name}: {len(points)} rows, loss {h['loss']:.12g}")
            return False if stop(points) or now - t0 >= budget else None

        source = data if isinstance(data, str) else daskgd.concat_features(data, client=client)
        res = daskgd.fit(source, loss=loss, alpha=ALPHA, tol=None, max_epochs=max_epochs,
                         max_time=budget, callback=callback, client=client, **kw)  # fmt: skip
        wall = time.perf_counter() - t0
        workers, sched = client.run(peak_mb), client.run_on_scheduler(peak_mb)
    t = res.timings_
    out = {
        "system": name, "settings": kw, "workers": system.workers, "budget_s": budget,
        "reason": res.reason, "fit_s": wall, "open_s": t["open"],
        "load_s": max(r["load"] for r in t["ranks"]),
        "history_rows": len(res.history), "points": points,
        "peak_MB": {"scheduler": sched, "workers": sorted(workers.values())},
        "coef": res.coef_, "intercept": float(np.ravel(res.intercept_)[0]),
        "min_history_loss": min(h["loss"] for h in res.history),
        "last_history_loss": res.history[-1]["loss"],
    }  # fmt: skip
    d, rows = res.coef_.size, len(res.history)
    if kw["partition"] == "rows":
        pushes = sum(t["push_bytes"]) / (4 * (d + 1))  # float32 gradients of d + 1
        out.update(to_bytes=sum(t["push_bytes"]) / rows, back_bytes=pushes * 8 * (d + 1) / rows,
                   worker_params=d + 1, scheduler_params=d + 1)  # fmt: skip
    else:
        widths = [b["columns"][1] - b["columns"][0] for b in res.blocks_]
        backups = sum(8 * (w + 1) * rows for w in widths)  # one with each iterate's stats
        sent = sum(t["reduce_bytes"])
        n_cols = len({tuple(b["columns"]) for b in res.blocks_})
        out.update(to_bytes=sent / rows, back_bytes=(sent - backups) / rows,
                   worker_params=max(widths) + 1,
                   scheduler_params=2 * sum(w + 1 for w in widths),
                   blocks=res.blocks_, grid=[len(res.blocks_) // n_cols, n_cols],
                   reductions=t["reductions"])  # fmt: skip
    log(f"{name}: {res.reason}; {len(points)} rows, {wall:.1f} s")
    return out


def reached(run_: dict, f_star: float) -> dict | None:
    """The first point within ``REL`` of ``f_star``, or None."""
    return next((p for p in run_["points"] if (p["loss"] - f_star) / abs(f_star) <= REL), None)


def solve(loss: str, store: str, groups: list[str], size: tuple, systems: list[System],
          budget: float, slow_budget: float) -> dict:  # fmt: skip
    """The reference (rows, L-BFGS), every other picked system's run and f*, for a problem."""
    objective = Objective(store, loss)
    ref = run(REFERENCE, store, loss, settled, budget, max_epochs=REF_EPOCHS)
    log("evaluating the reference's coefficients")
    exact = {"reference": objective([(ref.pop("coef"), ref["intercept"])])[0]}
    if loss == "squared_error" and size[1] <= NORMAL_EQUATIONS_MAX_D:
        exact["normal equations"] = objective.normal_equations()
    f_ref = min(exact.values())
    log(f"reference: {f_ref!r} ({exact})")
    ref["final_loss"] = exact["reference"]
    runs, failed = [ref] if REFERENCE in systems else [], {}
    for s in (s for s in systems if s is not REFERENCE):
        try:  # one system's failure must not lose the others' figures
            runs.append(run(s, store if s.data == "store" else groups, loss,
                            below(f_ref + REL * abs(f_ref)),
                            slow_budget if s.slow else budget))  # fmt: skip
        except Exception as e:
            log(f"{s.name}: FAILED: {e!r}")
            failed[s.name] = repr(e)
    others = [r for r in runs if r is not ref]
    if others:
        log(f"evaluating {len(others)} runs' coefficients (one pass over the store)")
        finals = objective([(r.pop("coef"), r["intercept"]) for r in others])
        for r, f in zip(others, finals, strict=True):
            r["final_loss"] = f
    f_star = min(*exact.values(), *(r["final_loss"] for r in others))
    for r in [ref, *others]:
        hit = reached(r, f_star)
        r["to_target_s"] = None if hit is None else hit["seconds"]
        r["iterations"] = None if hit is None else hit["epoch"]
        r["final_subopt"] = (r["final_loss"] - f_star) / abs(f_star)
        # a row-partitioned result has taken the step after its last history row
        gap = (r["last_history_loss"] - r["final_loss"]) / abs(f_star)
        r["history_vs_exact"] = None if r["settings"]["partition"] == "rows" else gap
    log(f"f* = {f_star!r}")
    return {"loss": loss, "f_star": f_star, "f_ref": f_ref, "exact": exact,
            "reference": ref, "runs": runs, "failed": failed}  # fmt: skip


def summary_rows(results: dict) -> list[list[str]]:
    rows = []
    for problem, res in results.items():
        for r in res["runs"]:
            hit = r["to_target_s"]
            best = min((p["loss"] for p in r["points"]), default=np.nan)
            to = (f"{hit:.1f}" if hit is not None else f"not in {r['budget_s']:g} s "
                  f"({(best - res['f_star']) / abs(res['f_star']):.1e})")  # fmt: skip
            fit = f"{r['fit_s']:.1f}" + (" (to the plateau)" if r is res["reference"] else "")
            rows.append([
                problem, r["system"], to, fit,
                "" if r["iterations"] is None else str(r["iterations"]),
                f"{r['to_bytes'] / 1e6:.2f} / {r['back_bytes'] / 1e6:.2f}",
                f"{r['worker_params']:,}", f"{r['scheduler_params']:,}",
            ])  # fmt: skip
    return rows


def detail_rows(results: dict) -> list[list[str]]:
    rows = []
    for problem, res in results.items():
        ref, runs = res["reference"], res["runs"]
        for r in runs if any(r is ref for r in runs) else [ref, *runs]:
            rows.append([
                problem, r["system"] + (" (the reference)" if r is ref else ""),
                f"{r['load_s']:.1f}", str(r["history_rows"]), f"{r['final_subopt']:.1e}",
                "" if r["history_vs_exact"] is None else f"{r['history_vs_exact']:.1e}",
                f"{max(r['peak_MB']['workers']):,.0f}", f"{r['peak_MB']['scheduler']:,.0f}",
                r["reason"],
            ])  # fmt: skip
    return rows


def _bytes(r: dict) -> float:
    return r["to_bytes"] + r["back_bytes"]


def reading(results: dict, n: int, d: int) -> str:
    """A few sentences on the figures, from them (of the systems that ran)."""
    out = []
    for problem, res in results.items():
        by = {r["system"]: r for r in res["runs"]}
        rows, cols = by.get("rows, L-BFGS"), by.get("features, L-BFGS")
        if rows is None or cols is None:
            continue
        a, b = cols["to_target_s"], rows["to_target_s"]
        out.append((f"{problem}: feature-partitioned L-BFGS reached 1e-6 in {a:.1f} s, "
                    f"{a / b:.2f}x the row-partitioned {b:.1f} s" if a and b else
                    f"{problem}: rows or features L-BFGS did not reach 1e-6 (see the table)")
                   + f"; it moved {_bytes(cols) / _bytes(rows):.2f}x the bytes per iteration "
                   f"(its messages grow with the rows, n = {n:,}, the row partition's with "
                   f"the columns, d = {d:,}).")  # fmt: skip
    runs = [r for res in results.values() for r in res["runs"]]
    cols = next((r for r in runs if r["system"] == "features, L-BFGS"), None)
    if cols is not None:
        out.append(
            f"The largest parameter block a process computes with: {d + 1:,} values (the "
            "whole model, on the scheduler and sent to every worker each round) partitioned "
            f"by rows, {cols['worker_params']:,} partitioned by features. The coordinator "
            f"still keeps {cols['scheduler_params']:,} values: each block's last two "
            "iterates, backups to restart from after a lost worker, not used to compute; "
            f"and each feature-partitioned worker holds margin vectors of n = {n:,} values."
        )
    for problem, res in results.items():
        by = {r["system"]: r for r in res["runs"]}
        grid, cols = by.get("grid, L-BFGS"), by.get("features, L-BFGS")
        if grid is not None and cols is not None:
            R, C = grid["grid"]
            its = grid["iterations"] or f"over {grid['history_rows']}"
            out.append(f"{problem}: the {C} x {R} grid took {its} iterations (features: "
                       f"{cols['iterations']}), {grid['worker_params']:,} parameters and "
                       f"{n // R:,} rows a process, and moved {_bytes(grid) / _bytes(cols):.2f}x"
                       " the bytes per iteration of the feature partition.")  # fmt: skip
    return "\n\n".join(out) + "\n"


def pick(spec: str, names: list[str], what: str) -> list[str]:
    """The names ``spec`` picks: its items are split at commas not followed by a space (the
    names hold ", "); an item picks the name it equals, else every name containing it."""
    picked = set()
    for w in (w.strip() for w in re.split(r",(?! )", spec) if w.strip()):
        hits = [n for n in names if n == w] or [n for n in names if w in n]
        if not hits:
            raise SystemExit(f"--{what}: {w!r} picks none of: " + "; ".join(names))
        picked.update(hits)
    return [n for n in names if n in picked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budget", type=float, default=600.0,
                        help="seconds an L-BFGS run may take (default 600)")  # fmt: skip
    parser.add_argument("--slow-budget", type=float, default=120.0,
                        help="seconds a first-order run may take (default 120)")  # fmt: skip
    parser.add_argument("--systems", default=",".join(s.name for s in SYSTEMS),
                        help='names or parts, split at "," (not ", "); default all')  # fmt: skip
    parser.add_argument("--problems", default=",".join(PROBLEMS.values()),
                        help="comma-separated losses (default squared_error,log_loss)")  # fmt: skip
    parser.add_argument("--data", default=None, help="folder for the Zarr datasets (kept)")
    args = parser.parse_args()
    size = SIZES["quick" if args.quick else "full"]
    n, d = size[:2]
    picked = pick(args.systems, [s.name for s in SYSTEMS], "systems")
    systems = [s for s in SYSTEMS if s.name in picked]
    losses = pick(args.problems, list(PROBLEMS.values()), "problems")
    root = Path(args.data or tempfile.mkdtemp(prefix="daskgd-bench-features-"))
    log(f"{n:,} x {d:,}: {', '.join(losses)}; systems: {'; '.join(picked)}; data in {root}")
    results, written = {}, {}
    for problem, loss in PROBLEMS.items():
        if loss not in losses:
            continue
        with cluster() as client:
            store, groups, written[problem] = prepare(
                root, loss, size, client, any(s.data == "groups" for s in systems)
            )
        results[problem] = solve(loss, store, groups, size, systems, args.budget,
                                 args.slow_budget)  # fmt: skip
    total = time.perf_counter() - START
    log(f"done in {total:.0f} s")
    md = ["# Feature partitioning on a wide problem\n\n{header}", __doc__.split("\n\n", 2)[2]]
    header = ["problem", "system", "to 1e-6 s", "fit s", "iterations",
              "MB per iteration (to / back)", "parameters a worker holds",
              "on the scheduler"]  # fmt: skip
    C = max(2, round(math.sqrt(GRID_WORKERS)))
    grid = (f"the grid: {GRID_WORKERS} workers, {C} column x {GRID_WORKERS // C} row blocks, "
            f"sharing {os.cpu_count()} cores: its time is not comparable one to one")  # fmt: skip
    md.append(f"\n## Summary\n\n{n:,} x {d:,} float32, {WORKERS} workers ({grid}). Budgets: "
              f"{args.budget:g} s (L-BFGS), {args.slow_budget:g} s (gradient descent, the "
              "block method).\n\n" + table(summary_rows(results), header))  # fmt: skip
    failed = [f"{p}, {k}: {e}" for p, r in results.items() for k, e in r["failed"].items()]
    md.append("".join(f"\nFAILED: {f}.\n" for f in failed) + "\n" + reading(results, n, d))
    dheader = ["problem", "system", "load s (slowest rank)", "history rows", "final subopt",
               "history vs exact", "peak RSS MB (worker)", "peak RSS MB (scheduler)",
               "reason"]  # fmt: skip
    md.append("\n## Details\n\n" + table(detail_rows(results), dheader))
    f = "; ".join(f"{p}: f* = {r['f_star']:.12g}" for p, r in results.items())
    w = "; ".join(f"{p}: " + (", ".join(f"{k} {v:.0f} s" for k, v in s.items()) or "reused")
                  for p, s in written.items())  # fmt: skip
    md.append(f"\n{f}. Data written: {w}. The whole run: {total:.0f} s.\n")
    write_results("features", {"n": n, "d": d, "workers": WORKERS, "grid_workers": GRID_WORKERS,
                               "alpha": ALPHA, "rel": REL, "budget_s": args.budget,
                               "slow_budget_s": args.slow_budget, "written_s": written,
                               "total_s": total, "results": results}, "".join(md))  # fmt: skip


if __name__ == "__main__":
    main()
