"""daskgd against its peers: time to reach a relative suboptimality on the same data.

``python bench/bench_peers.py [--quick] [--only NAME ...] [--budget SECONDS]``

Problems (generated once into Zarr with daskgd's generators, under ``--data``): least
squares and L2-regularised logistic regression at 1,000,000 x 100 float64, and a wide
least-squares problem at 100,000 x 1,000 (``--quick``: 100,000 x 100 and 20,000 x 500;
at 200,000 x 2,000, scikit-learn's SVD-based LinearRegression alone takes minutes). For
each, the exact optimum is computed once (lstsq, or normal equations when d > 500; scipy
L-BFGS to gradient norm 1e-10), then every system is run with settings of growing cost
until it reaches the tight target or spends its time budget; its time to a target is
that of its fastest run that reached it. Runs are timed from the read of the Zarr data
to the coefficients; the Dask cluster (2 worker processes x 1 thread, shared by the Dask
systems) is started once, outside the timings. Spark MLlib is run when pyspark and Java
are installed.

Writes ``bench/results/peers.md``, ``peers.json`` and one ``peers_<problem>.png`` each.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, table, write_results
from distributed import Client, LocalCluster
from peers import Problem, Run, dask_glm_runners, dask_ml_runners, sklearn_runners

import daskgd


def make_problems(root: Path, quick: bool, client) -> list[Problem]:
    # wide: 100,000 x 1,000, not 200,000 x 2,000: scikit-learn's LinearRegression (an SVD
    # least-squares solve) alone would take about 5 minutes at that size here
    n, wide_n, wide_d = (100_000, 20_000, 500) if quick else (1_000_000, 100_000, 1_000)
    problems = [
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
    for p in problems:
        rows = max(1_000, p.n // 8)  # 8 equal chunks: 4 per worker
        if p.kind == "least_squares":
            daskgd.make_regression(
                p.path,
                p.n,
                p.d,
                chunk_rows=rows,
                noise=1.0,
                random_state=0,
                client=client,
                compressor=None,
            )
        else:
            daskgd.make_classification(
                p.path, p.n, p.d, chunk_rows=rows, random_state=0, client=client, compressor=None
            )
    return problems


def providers() -> dict[str, object]:
    found = {"scikit-learn": sklearn_runners}
    if importlib.util.find_spec("dask_glm"):
        found["dask-glm"] = dask_glm_runners
    if importlib.util.find_spec("dask_ml"):
        found["dask-ml"] = dask_ml_runners
    from daskgd_runners import daskgd_runners

    found["daskgd"] = daskgd_runners
    return found


def warm_up(client) -> None:
    """What a first fit on a fresh cluster pays once: the workers import the systems' modules
    (and daskgd installs its parameter server). Timed apart, like the cluster's start."""

    def imports():
        import importlib

        for name in (
            "daskgd.worker.task",
            "daskgd.kernels",
            "daskgd.data.chunkio",
            "dask_glm",
            "dask_ml",
        ):
            if importlib.util.find_spec(name.split(".")[0]):
                importlib.import_module(name)

    client.run(imports)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 4))
    daskgd.fit((X, X @ np.ones(4)), client=client, max_epochs=2, validate=False)


def breakdown_table(problems, results) -> str:
    """Where daskgd's fastest run to each tight target spent its time."""
    rows = []
    for p in problems:
        tight = p.targets[1]
        best = [
            (r.seconds, system, r)
            for system, rs in results[p.name].items()
            if system.startswith("daskgd")
            for r in rs
            if r.suboptimality <= tight and r.breakdown
        ]
        if not best:
            continue
        _, system, r = min(best, key=lambda b: b[0])
        b = r.breakdown
        other = b["wall"] - b["driver"] - b["load"] - b["kernel"] - b["push"]
        rows.append(
            [p.name, f"{system} ({b['epochs']} epochs)", f"{b['wall']:.2f}", f"{b['driver']:.2f}",
             f"{b['load']:.2f}", f"{b['kernel']:.2f}", f"{b['push']:.2f}", f"{other:.2f}"]
        )  # fmt: skip
    if not rows:
        return ""
    return (
        "## Where daskgd's time goes\n\nThe fastest daskgd run to each tight target, in "
        "seconds: driver (opening the data, installing the job, submitting the tasks), then "
        "the slowest training task's load (reading its rows from Zarr), kernel (gradients) "
        "and push (round trips, the aggregator's steps, waiting for the other worker); other: "
        "the rest of the wall time (the driver noticing the end, collecting the result).\n\n"
        + table(rows, ["problem", "run", "wall", "driver", "load", "kernel", "push", "other"])
        + "\n"
    )


def time_to(runs: list[Run], target: float) -> float | None:
    times = [r.seconds for r in runs if r.suboptimality <= target]
    return min(times) if times else None


def report(problems, results, skipped, quick: bool, startup: dict) -> None:
    md = ["# daskgd against its peers\n\n{header}"]
    md.append(
        "Time from reading the Zarr data to coefficients within a relative suboptimality "
        "target of the exact optimum (lower is better); ratio = time / best peer's time "
        "(best peer = fastest system other than daskgd). A dash: not reached within the "
        "budget. Dask systems share one LocalCluster of 2 worker processes x 1 thread; "
        "scikit-learn runs in the driver process, where BLAS may use both cores. Not "
        f"counted: the cluster's start ({startup['cluster_s']:.1f} s) and a warm-up "
        f"({startup['warm_up_s']:.1f} s: the workers import daskgd, dask-glm and dask-ml, "
        "and one tiny daskgd fit installs the parameter server).\n\n"
    )
    payload = {"quick": quick, "startup": startup, "problems": {}}
    for p in problems:
        runs = results[p.name]
        loose, tight = p.targets
        best = {}
        for t in (loose, tight):
            peer_times = [time_to(r, t) for s, r in runs.items() if not s.startswith("daskgd")]
            peer_times = [x for x in peer_times if x is not None]
            best[t] = min(peer_times) if peer_times else None
        rows = []
        for system, rs in sorted(runs.items(), key=lambda kv: time_to(kv[1], tight) or 1e9):
            cells = [system]
            for t in (loose, tight):
                x = time_to(rs, t)
                cells.append("—" if x is None else f"{x:.2f}")
                cells.append("—" if x is None or not best[t] else f"{x / best[t]:.2f}")
            cells.append(f"{min(r.suboptimality for r in rs):.1e}")
            rows.append(cells)
        md.append(
            f"## {p.name}: {p.n:,} x {p.d:,} ({p.kind}"
            f"{f', alpha={p.alpha:g}' if p.alpha else ''})\n\n"
        )
        md.append(
            table(
                rows,
                [
                    "system",
                    f"s to {loose:g}",
                    "ratio",
                    f"s to {tight:g}",
                    "ratio",
                    "best suboptimality",
                ],
            )
        )
        md.append(f"\n![{p.name}](peers_{p.name}.png)\n\n")
        payload["problems"][p.name] = {
            "n": p.n,
            "d": p.d,
            "kind": p.kind,
            "alpha": p.alpha,
            "f_star": p.f_star,
            "targets": list(p.targets),
            "runs": {s: [vars(r) for r in rs] for s, rs in runs.items()},
        }
        plot(p, runs)
    md.append(breakdown_table(problems, results))
    if skipped:
        md.append("Not run: " + "; ".join(skipped) + ".\n")
    write_results("peers", payload, "".join(md))


def plot(problem: Problem, runs: dict[str, list[Run]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system, rs in sorted(runs.items()):
        pts = sorted((r.seconds, max(r.suboptimality, 1e-16)) for r in rs)
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
        xlabel="seconds (read + fit)",
        ylabel="relative suboptimality",
        title=f"{problem.name}: {problem.n:,} x {problem.d:,}",
    )
    ax.legend(fontsize=7)
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
    budget = args.budget or (20.0 if args.quick else 60.0)
    root = Path(args.data or tempfile.mkdtemp(prefix="daskgd-bench-"))
    skipped = []
    if not (importlib.util.find_spec("pyspark") and shutil.which("java")):
        skipped.append("Spark MLlib (pyspark or Java not installed)")
    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        startup = {"cluster_s": time.perf_counter() - t0}
        t0 = time.perf_counter()
        warm_up(client)
        startup["warm_up_s"] = time.perf_counter() - t0
        problems = make_problems(root, args.quick, client)
        if args.only:
            problems = [p for p in problems if p.name in args.only]
        results = {}
        for p in problems:
            p.load()
            t0 = time.perf_counter()
            p.solve_exactly()
            print(f"{p.name}: f* = {p.f_star:.12g} ({time.perf_counter() - t0:.1f} s)", flush=True)
            results[p.name] = {}
            for provider in providers().values():
                for system, run in provider(p).items():
                    try:
                        results[p.name][system] = run(p, client, budget)
                    except Exception as exc:  # a peer that fails is reported, not fatal
                        skipped.append(f"{system} on {p.name} ({type(exc).__name__}: {exc})")
                        continue
                    best = min(r.suboptimality for r in results[p.name][system])
                    print(
                        f"  {system}: {len(results[p.name][system])} runs, best {best:.1e}",
                        flush=True,
                    )
            p.X = p.y = None
    report(problems, results, skipped, args.quick, startup)
    if args.data is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
