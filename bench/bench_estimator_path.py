"""An estimator on a Zarr path against ``daskgd.fit`` on the same path: how long the
training tasks take to read their rows (the slowest rank's ``load``), and the whole fit.

    python bench/bench_estimator_path.py --rows 1000000 --features 100 --workers 2

``--estimators FILE`` loads the estimators from another source file (e.g. an older
``daskgd/sklearn/estimators.py``) to compare with. Each fit runs 3 epochs (the load is
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
from distributed import Client, LocalCluster

import daskgd
import daskgd.driver
import daskgd.driver.engine


def _capture() -> list[Any]:
    """Keep every FitResult the engine returns, whichever name the estimators call it by."""
    results: list[Any] = []
    real = daskgd.driver.engine.fit

    def fit(data: Any, **kwargs: Any) -> Any:
        result = real(data, **kwargs)
        results.append(result)
        return result

    daskgd.driver.engine.fit = fit  # type: ignore[assignment]
    daskgd.driver.fit = fit  # type: ignore[assignment]
    return results


def _load(result: Any) -> float:
    return max(r["load"] for r in result.timings_["ranks"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=100)
    ap.add_argument("--chunk-rows", type=int, default=50_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--estimators", help="a source file holding LinearRegression")
    ap.add_argument("--store", help="an existing store to use (else one is written)")
    args = ap.parse_args()
    results = _capture()
    if args.estimators:
        spec = importlib.util.spec_from_file_location("estimators_under_test", args.estimators)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        LinearRegression = module.LinearRegression
    else:
        LinearRegression = daskgd.LinearRegression
    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or str(Path(tmp) / "bench.zarr")
        if not args.store:
            daskgd.make_regression(path, args.rows, args.features, chunk_rows=args.chunk_rows)
        with (
            LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=":0",
                         memory_limit="8GiB") as cluster,  # fmt: skip
            Client(cluster, set_as_default=False) as client,
        ):
            rows: dict[str, list[tuple[float, float]]] = {"daskgd.fit": [], "estimator": []}
            for _ in range(args.repeat):
                for name in rows:
                    started = time.perf_counter()
                    if name == "daskgd.fit":
                        daskgd.fit(path, client=client, max_epochs=3, tol=None,
                                   optimizer="lbfgs")  # fmt: skip
                    else:
                        LinearRegression(max_iter=3, tol=None, verbose=0, client=client).fit(path)
                    rows[name].append((_load(results[-1]), time.perf_counter() - started))
    print(f"{args.rows} x {args.features} float64, chunks of {args.chunk_rows} rows, "
          f"{args.workers} workers, median of {args.repeat}")  # fmt: skip
    for name, runs in rows.items():
        load = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        print(f"{name:12s} load {load:6.2f} s   whole fit {wall:6.2f} s")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
