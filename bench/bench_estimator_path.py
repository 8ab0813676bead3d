"""An estimator on a Zarr path against ``daskgd.fit`` on the same path: the time to open
the data, set up the job, for the slowest training task to load its rows, and the whole fit.

    python bench/bench_estimator_path.py --rows 1000000 --features 100 --workers 2

``--compare FILE`` also times the LinearRegression of another source file (e.g. an older
``daskgd/sklearn/estimators.py``), interleaved with the others (a fair comparison on a
busy machine). Each fit runs 3 epochs (the load is
paid once per fit), on one LocalCluster shared by all fits; the figures are the median of
``--repeat`` fits.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import table, write_results
from distributed import Client, LocalCluster

import daskgd
import daskgd.driver
import daskgd.driver.api


def _capture() -> list[Any]:
    """Keep every FitResult of a fit: ``daskgd.fit`` and the estimators both run the one
    core, ``fit_with_settings``."""
    results: list[Any] = []
    real = daskgd.driver.api.fit_with_settings

    def capture(data: Any, settings: Any, **kwargs: Any) -> Any:
        result = real(data, settings, **kwargs)
        results.append(result)
        return result

    daskgd.driver.api.fit_with_settings = capture  # type: ignore[assignment]
    daskgd.driver.fit_with_settings = capture  # type: ignore[assignment]
    return results


def _times(result: Any) -> tuple[float, float, float]:
    """(open, setup, slowest rank's load) of one fit, in seconds."""
    t = result.timings_
    return t["open"], t["setup"], max(r["load"] for r in t["ranks"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=100)
    ap.add_argument("--chunk-rows", type=int, default=50_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compare", help="a source file holding another LinearRegression")
    ap.add_argument("--store", help="an existing store to use (else one is written)")
    ap.add_argument("--quick", action="store_true", help="200,000 rows instead of 1,000,000")
    args = ap.parse_args()
    if args.quick:
        args.rows = min(args.rows, 200_000)
    results = _capture()
    estimators = {"estimator": daskgd.LinearRegression}
    if args.compare:
        spec = importlib.util.spec_from_file_location("estimators_compared", args.compare)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        estimators[f"estimator ({Path(args.compare).name})"] = module.LinearRegression
    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or str(Path(tmp) / "bench.zarr")
        if not args.store:
            daskgd.make_regression(path, args.rows, args.features, chunk_rows=args.chunk_rows)
        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                dashboard_address=":0",
                memory_limit="8GiB",
            ) as cluster,  # fmt: skip
            Client(cluster, set_as_default=False) as client,
        ):
            rows: dict[str, list[tuple[float, ...]]] = {"daskgd.fit": []}
            rows.update({name: [] for name in estimators})
            names = list(rows)
            for i in range(args.repeat):
                # each repeat starts with another one: no fit always follows the same one
                for name in names[i % len(names) :] + names[: i % len(names)]:
                    started = time.perf_counter()
                    if name == "daskgd.fit":
                        daskgd.fit(path, client=client, max_epochs=3, tol=None,
                                   optimizer="lbfgs")  # fmt: skip
                    else:
                        est = estimators[name](max_iter=3, tol=None, verbose=0, client=client)
                        est.fit(path)
                    wall = time.perf_counter() - started
                    rows[name].append((*_times(results[-1]), wall))
    header = ["", "open (s)", "setup (s)", "slowest load (s)", "whole fit (s)"]
    table_rows, payload = [], {}
    for name, runs in rows.items():
        med = [statistics.median(r[i] for r in runs) for i in range(4)]
        payload[name] = dict(zip(("open", "setup", "load", "fit"), med, strict=True))
        table_rows.append([name, *(f"{m:.2f}" for m in med)])
    what = (
        f"{args.rows:,} x {args.features} float64 (`make_regression`), chunks of "
        f"{args.chunk_rows:,} rows, LocalCluster of {args.workers} workers x 1 thread; "
        f"3 epochs per fit (`daskgd.fit(path, optimizer='lbfgs')` and "
        f"`LinearRegression(max_iter=3).fit(path)`), median of {args.repeat}, fits rotated"
    )
    md = f"# An estimator on a Zarr path against daskgd.fit\n\n{{header}}{what}.\n\n" + table(
        table_rows, header
    )
    write_results("estimator_path", {"settings": vars(args), "results": payload}, md)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
