"""Latency placement in async and ssp modes, on a cluster with a slow worker.

``python bench/bench_placement_async.py [--quick] [--data DIR]``

The same three workers as ``bench_placement.py`` (1 thread each, one computing its
gradients at half the speed of the others, played by ``_heterogeneous.Throttle``). In
async mode nobody waits, but each push steps with its partition's gradient alone, so the
slow worker's rows, pushed half as often, weigh half as much in the point the fit settles
at; in ssp mode the bound makes the fast workers wait for the slow one. Latency placement
moves row-chunks until each worker's pass over its rows takes as long as the others', and
weighs each push's step by its rows.

Least squares on ``n x 50`` float64 rows (``--quick``: a quarter of them) in 24
row-chunks, each chunk with its own offset in ``y`` (as rows gathered from different
sources would have), so that the partitions' own optima differ and a fit that weighs
some partitions more than others settles visibly away from the optimum. For each of
balanced and latency placement:

- async full batch (600 epochs) and async mini-batch SGD (40 epochs of 20 batches a rank),
  with a decaying step (``lr / sqrt(1 + t)``, t the updates so far: what remains at the end
  is where the weights of the partitions put the fit, not the cycle a constant step keeps
  around it): how often each worker pushed over the second half
  (the slow worker's pushes over the mean of the others'), the distance of the result to
  the least-squares solution (max over the coefficients), and the median seconds per epoch;
- ssp full batch (``max_staleness=2``, 150 epochs): the median seconds per epoch (the fast
  workers wait for the slow one) and the distance to the solution.

Each fit ``--repeats`` times (3), balanced and latency alternating; the table gives the
medians (and each fit's distance: the async fixed point depends on the timings).

Writes ``bench/results/placement_async.md`` and ``placement_async.json``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
from pathlib import Path

import numpy as np
from _common import table, write_results
from _heterogeneous import Throttle, heterogeneous_cluster
from distributed import Client

import daskgd

#: As in bench_placement.py: the slow worker half as fast, no worker competing for a core
THROTTLE = {"slow": 4.0, "fast-1": 2.0, "fast-2": 2.0}
CHUNKS = 24
#: async: a decaying step (lr / sqrt(1 + t)), as the README advises for async mode, so
#: that what is left at the end is the bias of the weights, not the cycle a constant step
#: keeps around the optimum
DECAY = {"lr_schedule": "invscaling", "power_t": 0.5}
RUNS = {
    "async, full batch": {"mode": "async", "max_epochs": 600, "learning_rate": 0.5, **DECAY},
    "async, mini-batch": {"mode": "async", "max_epochs": 40, "learning_rate": 0.5,
                          "batch_size": "20 a rank", **DECAY},
    "ssp, full batch": {"mode": "ssp", "max_staleness": 2, "max_epochs": 150,
                        "learning_rate": 0.5},
}  # fmt: skip


def _data(path: str, n: int, d: int) -> np.ndarray:
    """Write the dataset; returns the least-squares solution (coefficients, intercept)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    offsets = np.repeat(rng.standard_normal(CHUNKS), n // CHUNKS)
    y = X @ rng.standard_normal(d) + 0.5 + offsets + 0.1 * rng.standard_normal(n)
    daskgd.write_zarr(path, X, y, chunk_rows=n // CHUNKS, overwrite=True)
    A = np.column_stack([X, np.ones(n)])
    return np.linalg.lstsq(A, y, rcond=None)[0]


def _one(client: Client, path: str, placement: str, settings: dict, n: int, exact) -> dict:
    kw = dict(settings)
    if kw.get("batch_size"):
        kw["batch_size"] = n // 3 // 20
    res = daskgd.fit(path, client=client, placement=placement, tol=None, random_state=0, **kw)
    names = {a: str(w["name"]) for a, w in client.scheduler_info()["workers"].items()}
    pushes: dict[str, int] = {}
    for h in res.history[len(res.history) // 2 :]:
        for a, k in h["worker_updates"].items():
            pushes[names[a]] = pushes.get(names[a], 0) + k
    fast = [pushes.get(w, 0) for w in ("fast-1", "fast-2")]
    gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(res.history)]
    return {
        "epoch_s": statistics.median(gaps[len(gaps) // 2 :]),
        "fit_s": res.timings_["wall"],
        "pushes_second_half": pushes,
        "slow_share": pushes.get("slow", 0) / (sum(fast) / 2) if sum(fast) else None,
        "error": float(np.abs(np.append(res.coef_, res.intercept_) - exact).max()),
        "moves": sum(len(h.get("moves", ())) for h in res.history),
        "chunks_at_end": {names[w]: len(c) for w, c in res.plan_.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", default=None, help="folder for the Zarr dataset")
    parser.add_argument("--repeats", type=int, default=3, help="fits of each (median)")
    args = parser.parse_args()
    n, d = (120_000, 50) if args.quick else (480_000, 50)
    root = Path(args.data or tempfile.mkdtemp(prefix="daskgd-bench-placement-async-"))
    path = str(root / f"offsets-{n}.zarr")
    exact = _data(path, n, d)
    results: dict[str, dict] = {}
    workers = {w: {} for w in THROTTLE}
    with heterogeneous_cluster(workers) as cluster, Client(cluster) as client:
        client.wait_for_workers(3)
        client.register_plugin(Throttle(THROTTLE))
        daskgd.fit(path, client=client, max_epochs=1, tol=None)  # imports, page cache
        for name, settings in RUNS.items():
            results[name] = {p: [] for p in ("balanced", "latency")}
            for _ in range(args.repeats):  # alternating: a slow spell hits both alike
                for placement in ("balanced", "latency"):
                    run = _one(client, path, placement, settings, n, exact)
                    results[name][placement].append(run)
                    print(name, placement, run, flush=True)
    rows = []
    for name, runs in results.items():
        for placement, fits in runs.items():
            shares = [f["slow_share"] for f in fits if f["slow_share"] is not None]
            errors = sorted(f["error"] for f in fits)
            rows.append([
                name, placement, f"{statistics.median(f['epoch_s'] for f in fits):.3f}",
                f"{statistics.median(shares):.2f}" if shares else "",
                f"{statistics.median(errors):.2e}",
                " / ".join(f"{e:.1e}" for e in errors),
                " / ".join(str(f["moves"]) for f in fits),
                ", ".join(f"{k} {v}" for k, v in sorted(fits[-1]["chunks_at_end"].items())),
            ])  # fmt: skip
    header = ["fit", "placement", "s per epoch (median, second half)",
              "slow worker's pushes / a fast one's (second half)",
              "distance to the solution (max abs, median)", "each fit's distance",
              "chunks moved (each fit)", "chunks at the end (last fit)"]  # fmt: skip
    md = ["# Latency placement in async and ssp modes\n\n{header}", __doc__.split("\n\n", 2)[2],
          "\n## Summary\n\n" + table(rows, header)]  # fmt: skip
    write_results("placement_async", {"n": n, "d": d, "chunks": CHUNKS, "results": results},
                  "".join(md))  # fmt: skip


if __name__ == "__main__":
    main()
