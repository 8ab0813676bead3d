"""The reduction of a feature-partitioned fit's partial margins: through the scheduler's
coordinator, or worker to worker along a binary tree (``reduction="coordinator" | "tree"``).

``python bench/bench_reduction.py [--quick] [--iterations K] [--repeats R] [--data DIR]``

A LocalCluster of 4 worker processes x 1 thread (its scheduler in this process); least
squares (alpha = 1e-3), full-batch L-BFGS, ``partition="features"`` (4 column blocks of 8
columns), on n x 32 float64 written by ``daskgd.make_regression`` (noise 1) in column chunks
of 8 and row chunks of n / 8, uncompressed, for n in 200,000, 1,000,000 and 4,000,000
(``--quick``: 20,000 and 100,000). Each fit runs ``--iterations`` (30; ``--quick`` 10)
iterations (``tol=None``, ``max_epochs``); the two reductions alternate, ``--repeats`` (3)
fits each, on the same cluster, after an untimed fit of 3 iterations of each at that size.

``s per iteration``: the median over the fits of the median gap between consecutive
history rows (one row per L-BFGS iterate: two passes over each block, one ``n``-long
reduction of ``X_k p_k``, a few small ones). ``MB through the scheduler per iteration``:
what the ranks sent to the coordinator and got back (``timings_["scheduler_bytes"]``, all
ranks, divided by the iterations): the coordinator path moves each rank's ``n + 3``-long
partial margins there and the sum back, ``2 x 8 (n + 3)`` bytes per rank and iteration,
besides the small reductions and the backups that both paths send; the tree moves no
margin through the scheduler. ``MB worker to worker``: what the ranks sent each other
(``timings_["peer_bytes"]``; the tree of 4 ranks: 3 partial sums up and 3 totals down).
``coef rel. diff``: the largest relative difference between the two reductions'
coefficients (the tree adds the parts in another fixed order). ``load``: the machine's
1-minute load average after each fit (the 4 workers and the scheduler make about 2-3 on
their own; more is other work on the machine, which slows the fits it overlaps).

Writes ``bench/results/reduction.md`` and ``reduction.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # inherited by the Dask processes (see _common)

import numpy as np  # noqa: E402
from _common import table, write_results  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import daskgd  # noqa: E402

WORKERS, D, CHUNK_COLS, ALPHA = 4, 32, 8, 1e-3
SIZES = {"full": (200_000, 1_000_000, 4_000_000), "quick": (20_000, 100_000)}
REDUCTIONS = ("coordinator", "tree")
START = time.perf_counter()


def log(message: str) -> None:
    """A progress line: the clock time and the seconds since the start."""
    print(f"[{time.strftime('%X')} {time.perf_counter() - START:7.1f} s] {message}", flush=True)


def prepare(root: Path, n: int, client: Client) -> str:
    """The n x 32 store, written unless there."""
    path = str(root / f"ls-{n}x{D}.zarr")
    if not Path(path).exists():
        t = time.perf_counter()
        daskgd.make_regression(path, n, D, chunk_rows=-(-n // 8), chunk_cols=CHUNK_COLS,
                               noise=1.0, random_state=0, client=client,
                               compressor=None)  # fmt: skip
        log(f"wrote {path} ({n * D * 8 / 1e9:.2f} GB) in {time.perf_counter() - t:.1f} s")
    return path


def one_fit(client: Client, path: str, reduction: str, iterations: int) -> dict:
    """One fit's seconds per iteration and bytes."""
    res = daskgd.fit(path, partition="features", optimizer="lbfgs", reduction=reduction,
                     alpha=ALPHA, tol=None, max_epochs=iterations, client=client)  # fmt: skip
    times = [h["time"] for h in res.history]
    steps = max(len(times) - 1, 1)
    t = res.timings_
    return {
        "s_per_iteration": statistics.median(np.diff(times)) if len(times) > 1 else None,
        "iterations": steps,
        "scheduler_bytes_per_iteration": sum(t["scheduler_bytes"]) / steps,
        "peer_bytes_per_iteration": sum(t["peer_bytes"]) / steps,
        "wall_s": t["wall"],
        "load": os.getloadavg()[0],  # other work on the machine disturbs the figures
        "coef": [float(c) for c in res.coef_],
        "intercept": float(res.intercept_),
    }


def measure(client: Client, path: str, n: int, iterations: int, repeats: int) -> dict:
    """Both reductions on one store, alternating; the medians and the coefficients' gap."""
    runs: dict[str, list[dict]] = {r: [] for r in REDUCTIONS}
    for k in range(repeats):
        for reduction in REDUCTIONS if k % 2 == 0 else REDUCTIONS[::-1]:
            runs[reduction].append(one_fit(client, path, reduction, iterations))
            r = runs[reduction][-1]
            log(f"n={n:,} {reduction}: {r['s_per_iteration']:.4f} s per iteration, "
                f"{r['scheduler_bytes_per_iteration'] / 1e6:.2f} MB/iteration through the "
                "scheduler")  # fmt: skip
    out: dict = {"n": n}
    for reduction, rs in runs.items():
        out[reduction] = {
            "s_per_iteration": statistics.median(r["s_per_iteration"] for r in rs),
            "s_per_iteration_runs": [r["s_per_iteration"] for r in rs],
            "scheduler_bytes_per_iteration": rs[0]["scheduler_bytes_per_iteration"],
            "peer_bytes_per_iteration": rs[0]["peer_bytes_per_iteration"],
            "iterations": rs[0]["iterations"],
            "wall_s": [r["wall_s"] for r in rs],
            "load": [r["load"] for r in rs],
        }
    a = np.array(runs["coordinator"][0]["coef"])
    b = np.array(runs["tree"][0]["coef"])
    out["coef_rel_diff"] = float(np.abs(a - b).max() / np.abs(a).max())
    out["margin_bytes_per_rank"] = 2 * 8 * (n + 3)
    return out


def rows(results: list[dict]) -> list[list[str]]:
    out = []
    for r in results:
        c, t = r["coordinator"], r["tree"]
        for name, x in (("coordinator", c), ("tree", t)):
            out.append([
                f"{r['n']:,}", name, f"{x['s_per_iteration']:.4f}",
                " / ".join(f"{s:.4f}" for s in x["s_per_iteration_runs"]),
                " / ".join(f"{v:.1f}" for v in x["load"]),
                f"{x['scheduler_bytes_per_iteration'] / 1e6:.2f}",
                f"{x['peer_bytes_per_iteration'] / 1e6:.2f}",
                f"{c['s_per_iteration'] / x['s_per_iteration']:.2f}x",
                f"{r['coef_rel_diff']:.1e}" if name == "tree" else "",
            ])  # fmt: skip
    return out


def reading(results: list[dict]) -> str:
    """What the figures say, in words computed from them."""
    lines = []
    for r in results:
        c, t = r["coordinator"]["s_per_iteration"], r["tree"]["s_per_iteration"]
        gap = abs(c - t) / max(c, t)
        faster = "tree" if t < c else "coordinator"
        which = (f"the {faster} is faster by {gap * 100:.0f}%" if gap >= 0.02 else
                 "the two are the same within 2%")  # fmt: skip
        lines.append(
            f"- n = {r['n']:,}: {which} ({c:.4f} s (coordinator) against {t:.4f} s (tree) "
            "per iteration); the coordinator path moved "
            f"{r['coordinator']['scheduler_bytes_per_iteration'] / 1e6:.1f} MB per iteration "
            f"through the scheduler ({WORKERS} x {r['margin_bytes_per_rank'] / 1e6:.1f} MB of "
            f"margins), the tree {r['tree']['scheduler_bytes_per_iteration'] / 1e6:.2f} MB."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--iterations", type=int, default=None,
                        help="L-BFGS iterations a fit (default 30; --quick 10)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="fits per reduction and size")
    parser.add_argument("--data", default=None, help="folder for the Zarr datasets (kept)")
    args = parser.parse_args()
    sizes = SIZES["quick" if args.quick else "full"]
    iterations = args.iterations or (10 if args.quick else 30)
    root = Path(args.data or tempfile.mkdtemp(prefix="daskgd-bench-reduction-"))
    log(f"n in {sizes} x {D}; {iterations} iterations, {args.repeats} fits each; data in {root}")
    results = []
    with (
        LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                     dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        client.wait_for_workers(WORKERS)
        for n in sizes:
            path = prepare(root, n, client)
            # untimed: the workers' imports, connections and first allocations at this size
            one_fit(client, path, "tree", 3)
            one_fit(client, path, "coordinator", 3)
            results.append(measure(client, path, n, iterations, args.repeats))
    total = time.perf_counter() - START
    log(f"done in {total:.0f} s")
    header = ["n", "reduction", "s per iteration", "per fit", "load", "MB through the scheduler "
              "per iteration", "MB worker to worker per iteration", "coordinator's time / this",
              "coef rel. diff"]  # fmt: skip
    md = ["# Reducing the partial margins: the coordinator or a tree of workers\n\n{header}",
          __doc__.split("\n\n", 2)[2],
          f"\n## Results\n\n{WORKERS} worker processes x 1 thread on {os.cpu_count()} cores, "
          f"n x {D} float64, {iterations} L-BFGS iterations a fit.\n\n",
          table(rows(results), header), "\n", reading(results),
          f"\nThe whole run: {total:.0f} s.\n"]  # fmt: skip
    write_results("reduction", {"workers": WORKERS, "d": D, "alpha": ALPHA,
                                "iterations": iterations, "repeats": args.repeats,
                                "total_s": total, "results": results}, "".join(md))  # fmt: skip


if __name__ == "__main__":
    main()
