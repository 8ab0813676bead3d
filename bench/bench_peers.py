"""daskgd against its peers, each called as its users call it, on the same Zarr data.

``python bench/bench_peers.py [--quick] [--only NAME ...] [--budget SECONDS]``

Problems (generated once into Zarr with daskgd's generators, under ``--data``): least
squares and L2-regularised logistic regression at 1,000,000 x 100 float64, and a wide
least-squares problem at 100,000 x 1,000 (``--quick``: 100,000 x 100 and 20,000 x 500).
For each, the exact optimum is computed once (lstsq, or normal equations when d > 500;
scipy L-BFGS to gradient norm 1e-10).

Each system (``peers.System``) is measured in three ways, every fit from its own read of
the Zarr data to the coefficients:

* **first fit**: its defaults, the first call on a fresh Dask cluster (2 worker processes
  x 1 thread, started for this system alone; its start is reported apart): the workers'
  imports and daskgd's parameter server installation are in it. In-process systems
  (scikit-learn, glum, snapml): the first call in this process;
* **warm**: the median of its defaults called again (3 times, ``--quick`` 2);
* **time to a target**: settings of growing cost, warm, until it reaches the tight target
  or spends its time budget; its time to a target is that of its fastest warm run (the
  defaults' included) that reached it.

daskgd runs with its defaults, validation on (``daskgd_runners``). snapml (IBM's,
proprietary) runs where it installs, for comparison only. Spark MLlib is run when pyspark
and Java are installed.

Writes ``bench/results/peers.md``, ``peers.json`` and one ``peers_<problem>.png`` each.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import shutil
import statistics
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path

from _common import RESULTS, table, use_peer_threads, write_results
from daskgd_runners import daskgd_runners, estimator_name
from distributed import Client, LocalCluster
from peers import (
    Problem,
    Run,
    System,
    dask_glm_runners,
    dask_ml_runners,
    glum_runners,
    sklearn_runners,
    snapml_runners,
    sweep,
)

import daskgd


def make_problems(root: Path, quick: bool) -> list[Problem]:
    # wide: 100,000 x 1,000, not 200,000 x 2,000: scikit-learn's LinearRegression (an SVD
    # least-squares solve) alone would take about 5 minutes at that size here
    n, wide_n, wide_d = (100_000, 20_000, 500) if quick else (1_000_000, 100_000, 1_000)
    return [
        Problem("least_squares", "least_squares", str(root / "ls.zarr"), n, 100),
        Problem(
            "logistic_l2",
            "logistic",
            str(root / "logistic.zarr"),
            n,
            100,
            alpha=1e-4,
            fit_intercept=False,
            targets=(1e-3, 1e-4),
        ),
        Problem("wide_least_squares", "least_squares", str(root / "wide.zarr"), wide_n, wide_d),
    ]


def generate(p: Problem, client) -> None:
    rows = max(1_000, p.n // 8)  # 8 equal chunks: 4 per worker
    # written again on every run (``--data`` keeps the folder, not stale data)
    common = {"chunk_rows": rows, "random_state": 0, "client": client, "compressor": None,
              "overwrite": True}  # fmt: skip
    if p.kind == "least_squares":
        daskgd.make_regression(p.path, p.n, p.d, noise=1.0, **common)
    else:
        daskgd.make_classification(p.path, p.n, p.d, **common)


def providers(skipped: list[str]) -> list:
    found = [sklearn_runners]
    for module, provider in (
        ("glum", glum_runners),
        ("dask_glm", dask_glm_runners),
        ("dask_ml", dask_ml_runners),
        ("snapml", snapml_runners),
    ):
        if importlib.util.find_spec(module):
            found.append(provider)
        else:
            skipped.append(f"{module} (not installed)")
    return [*found, daskgd_runners]


@contextlib.contextmanager
def fresh_cluster(dask: bool):
    """(client, seconds to start it): a new LocalCluster for a Dask system, else None."""
    if not dask:
        yield None, 0.0
        return
    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client, time.perf_counter() - t0


def measure(problem: Problem, system: System, budget: float, repeats: int) -> dict:
    """First fit, warm repeats of the defaults, then the sweep (module docstring)."""
    with fresh_cluster(system.dask) as (client, start_s):
        fit = partial(system.fit, client=client)
        first = sweep(problem, fit, [system.defaults], float("inf"))[0]
        # as many warm repeats as fit in a quarter of the budget
        k = min(repeats, max(1, int(0.25 * budget / max(first.seconds, 1e-3))))
        warm = [sweep(problem, fit, [system.defaults], float("inf"))[0] for _ in range(k)]
        runs = sweep(problem, fit, system.settings, budget) if system.settings else []
    return {"cluster_start_s": start_s, "first": first, "warm": warm, "runs": runs}


def time_to(m: dict, target: float) -> float | None:
    times = [r.seconds for r in m["warm"] + m["runs"] if r.suboptimality <= target]
    return min(times) if times else None


def warm_median(m: dict) -> float:
    return statistics.median(r.seconds for r in m["warm"])


def fastest_peer(results: dict, target: float) -> tuple[str, float] | None:
    peers = [(time_to(m, target), s) for s, m in results.items() if not s.startswith("daskgd")]
    peers = [(t, s) for t, s in peers if t is not None]
    return (min(peers)[1], min(peers)[0]) if peers else None


def problem_table(p: Problem, results: dict) -> str:
    loose, tight = p.targets
    best = {t: fastest_peer(results, t) for t in (loose, tight)}
    rows = []
    for system, m in sorted(results.items(), key=lambda kv: time_to(kv[1], tight) or 1e9):
        cells = [
            system,
            f"{m['first'].seconds:.2f}",
            f"{warm_median(m):.2f}",
            f"{m['warm'][-1].suboptimality:.1e}",
        ]
        for t in (loose, tight):
            x = time_to(m, t)
            cells.append("—" if x is None else f"{x:.2f}")
            cells.append("—" if x is None or not best[t] else f"{x / best[t][1]:.2f}")
        runs = [m["first"], *m["warm"], *m["runs"]]
        cells.append(f"{min(r.suboptimality for r in runs):.1e}")
        rows.append(cells)
    return table(
        rows,
        [
            "system",
            "first fit (s)",
            "warm (s)",
            "suboptimality (defaults)",
            f"s to {loose:g}",
            "ratio",
            f"s to {tight:g}",
            "ratio",
            "best suboptimality",
        ],
    )


def summary_table(problems, results) -> str:
    """The README's table: daskgd's estimator on its defaults against the fastest peer."""
    rows = []
    for p in problems:
        tight = p.targets[1]
        est = results[p.name].get(estimator_name(p))
        best = fastest_peer(results[p.name], tight)
        if est is None or best is None:
            continue
        peer = results[p.name][best[0]]
        reached = est["warm"][-1].suboptimality <= tight
        ratio = f"{warm_median(est) / best[1]:.2f}" if reached else "— (not reached)"
        rows.append(
            [
                f"{p.name.replace('_', ' ')}, {p.n:,} x {p.d:,}",
                f"{tight:g}",
                f"{warm_median(est):.2f} s (first fit {est['first'].seconds:.2f} s), "
                f"{est['warm'][-1].suboptimality:.0e}",
                f"{best[0]}: {best[1]:.2f} s (first fit {peer['first'].seconds:.2f} s)",
                ratio,
            ]
        )
    return table(
        rows,
        [
            "problem",
            "target",
            "daskgd estimator, defaults: warm (first fit), suboptimality",
            "fastest peer to the target: warm (its defaults' first fit)",
            "ratio (warm)",
        ],
    )


def breakdown_table(problems, results) -> str:
    """Where daskgd.fit's fastest warm run to each tight target spent its time."""
    rows = []
    for p in problems:
        best = [
            (r.seconds, s, r)
            for s, m in results[p.name].items()
            if s.startswith("daskgd")
            for r in m["warm"] + m["runs"]
            if r.suboptimality <= p.targets[1] and r.breakdown and "wall" in r.breakdown
        ]
        if not best:
            continue
        _, system, r = min(best, key=lambda b: b[0])
        b = r.breakdown
        other = b["wall"] - b["driver"] - b["load"] - b["kernel"] - b["push"]
        rows.append(
            [p.name, f"{system} ({b['epochs']} epochs)"]
            + [f"{b[k]:.2f}" for k in ("wall", "driver", "load", "kernel", "push")]
            + [f"{other:.2f}"]
        )
    if not rows:
        return ""
    return (
        "## Where daskgd.fit's time goes\n\nIts fastest warm run to each tight target, in "
        "seconds: driver (opening and validating the data, installing the job, submitting "
        "the tasks), then the slowest training task's load (reading its rows from Zarr), "
        "kernel (gradients) and push (round trips, the parameter server's steps, waiting "
        "for the other worker); other: the rest of the wall time.\n\n"
        + table(rows, ["problem", "run", "wall", "driver", "load", "kernel", "push", "other"])
        + "\n"
    )


def report(problems, results, skipped, quick: bool) -> None:
    md = ["# daskgd against its peers\n\n{header}", "\n\n".join(__doc__.split("\n\n")[2:6]), "\n\n"]
    starts = [
        m["cluster_start_s"] for r in results.values() for m in r.values() if m["cluster_start_s"]
    ]
    md.append(
        "Ratios are to the fastest peer (system other than daskgd) at that target, warm. A "
        "dash: not reached within the budget. Fresh clusters started in "
        f"{min(starts, default=0):.1f} to {max(starts, default=0):.1f} s (not counted).\n\n"
        "## Summary\n\n" + summary_table(problems, results) + "\n"
    )
    payload: dict = {"quick": quick, "problems": {}}
    for p in problems:
        md.append(
            f"## {p.name}: {p.n:,} x {p.d:,} ({p.kind}"
            f"{f', alpha={p.alpha:g}' if p.alpha else ''})\n\n"
        )
        md.append(problem_table(p, results[p.name]))
        md.append(f"\n![{p.name}](peers_{p.name}.png)\n\n")
        payload["problems"][p.name] = {
            "n": p.n,
            "d": p.d,
            "kind": p.kind,
            "alpha": p.alpha,
            "f_star": p.f_star,
            "targets": list(p.targets),
            "systems": {
                s: {
                    "cluster_start_s": m["cluster_start_s"],
                    "first": vars(m["first"]),
                    "warm": [vars(r) for r in m["warm"]],
                    "runs": [vars(r) for r in m["runs"]],
                }
                for s, m in results[p.name].items()
            },
        }
        plot(p, results[p.name])
    md.append(breakdown_table(problems, results))
    if skipped:
        md.append("Not run: " + "; ".join(skipped) + ".\n")
    write_results("peers", payload, "".join(md))


def plot(problem: Problem, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system, m in sorted(results.items()):
        runs: list[Run] = m["warm"] + m["runs"]
        pts = sorted((r.seconds, max(r.suboptimality, 1e-16)) for r in runs)
        ax.plot(
            *zip(*pts, strict=True),
            marker="o",
            label=system,
            linewidth=2.5 if system.startswith("daskgd") else 1.2,
        )
    for t in problem.targets:
        ax.axhline(t, color="grey", linestyle=":", linewidth=1)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="seconds (read + fit, warm)",
        ylabel="relative suboptimality",
        title=f"{problem.name}: {problem.n:,} x {problem.d:,}",
    )
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(RESULTS / f"peers_{problem.name}.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds per system and problem (default 60, quick 20)",
    )
    parser.add_argument("--only", nargs="*", default=None, help="problems to run, by name")
    parser.add_argument("--data", default=None, help="folder for the Zarr problems")
    args = parser.parse_args()
    _threads = use_peer_threads(2)  # kept for the run
    budget = args.budget or (20.0 if args.quick else 60.0)
    repeats = 2 if args.quick else 3
    root = Path(args.data or tempfile.mkdtemp(prefix="daskgd-bench-"))
    skipped: list[str] = []
    if not (importlib.util.find_spec("pyspark") and shutil.which("java")):
        skipped.append("Spark MLlib (pyspark or Java not installed)")
    problems = make_problems(root, args.quick)
    if args.only:
        problems = [p for p in problems if p.name in args.only]
    found = providers(skipped)
    results: dict = {}
    with fresh_cluster(True) as (client, _):  # writes the data (not timed)
        for p in problems:
            generate(p, client)
    for p in problems:
        p.load()
        t0 = time.perf_counter()
        p.solve_exactly()
        print(f"{p.name}: f* = {p.f_star:.12g} ({time.perf_counter() - t0:.1f} s)", flush=True)
        results[p.name] = {}
        for provider in found:
            for system, entry in provider(p).items():
                try:
                    results[p.name][system] = m = measure(p, entry, budget, repeats)
                except Exception as exc:  # a peer that fails is reported, not fatal
                    traceback.print_exc()
                    skipped.append(f"{system} on {p.name} ({type(exc).__name__}: {exc})")
                    continue
                print(
                    f"  {system}: first {m['first'].seconds:.2f} s, warm "
                    f"{warm_median(m):.2f} s ({m['warm'][-1].suboptimality:.1e}), "
                    f"{len(m['runs'])} sweep runs",
                    flush=True,
                )
        p.X = p.y = None
    report(problems, results, skipped, args.quick)
    if args.data is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
