"""Scaling: time per epoch against rows and workers, aggregator throughput against d.

``python bench/bench_scaling.py [--quick]``; writes ``bench/results/scaling.md`` and
``scaling.json``.

1. **Rows**: full-batch sync gradient descent (least squares, d = 100, Zarr data read by
   the workers) on n = 125,000 ... 2,000,000 rows (``--quick``: 31,250 ... 500,000),
   2 worker processes x 1 thread. Time per epoch is the median gap between epochs in
   the fit's history; ``FitResult.timings_`` splits each task's time into load, kernel and
   push.
2. **Workers**: the largest n on 1 and 2 workers of a 2-worker cluster (``n_workers``),
   then on 4 worker processes, which share the machine's cores with each other
   (oversubscribed when there are fewer than 4 cores: labelled so).
3. **Aggregator throughput**: async mode with one-row batches, so that the aggregator and
   the round trip, not the kernel, bound the rate; pushes applied per second and the
   bytes they carry (gradient in, parameters out) for d = 10 ... 1,000,000.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
from _common import table, write_results
from distributed import Client, LocalCluster

import daskgd

EPOCHS = 12


def _cluster(n_workers: int) -> LocalCluster:
    return LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    )


def _epoch_fit(client: Client, path: str, n_workers: int | None = None) -> dict:
    res = daskgd.fit(
        path,
        client=client,
        mode="sync",
        optimizer="sgd",
        learning_rate=0.5,
        max_epochs=EPOCHS,
        tol=None,
        validate=False,
        n_workers=n_workers,
    )
    times = [h["time"] for h in res.history]
    ranks = res.timings_["ranks"]
    return {
        "epoch_ms": 1e3 * statistics.median(np.diff(times)),
        "load_s": max(r["load"] for r in ranks),
        "kernel_ms_per_epoch": 1e3 * max(r["kernel"] for r in ranks) / EPOCHS,
        "push_ms_per_epoch": 1e3 * max(r["push"] for r in ranks) / EPOCHS,
        "wall_s": res.timings_["wall"],
    }


def rows_scaling(client: Client, root: Path, sizes: list[int]) -> list[dict]:
    out = []
    for n in sizes:
        path = str(root / f"n{n}.zarr")
        daskgd.make_regression(
            path, n, 100, chunk_rows=max(1_000, n // 8), random_state=0, client=client,
            compressor=None,
        )  # fmt: skip
        _epoch_fit(client, path)  # warm: the workers' imports and page cache
        r = {"n": n, **_epoch_fit(client, path)}
        print(f"rows {n:,}: {r['epoch_ms']:.1f} ms/epoch", flush=True)
        out.append(r)
    return out


def worker_scaling(path: str, n: int) -> list[dict]:
    out = []
    cores = os.cpu_count() or 1
    with _cluster(2) as cluster, Client(cluster) as client:
        for k in (1, 2):
            _epoch_fit(client, path, n_workers=k)
            out.append({"workers": k, "label": f"{k} x 1 thread", **_epoch_fit(client, path, k)})
    with _cluster(4) as cluster, Client(cluster) as client:
        _epoch_fit(client, path)
        label = "4 x 1 thread" + (f" (on {cores} cores: oversubscribed)" if cores < 4 else "")
        out.append({"workers": 4, "label": label, **_epoch_fit(client, path)})
    base = out[0]["epoch_ms"]
    for r in out:
        r["speedup"] = base / r["epoch_ms"]
        print(f"workers {r['label']}: {r['epoch_ms']:.1f} ms/epoch", flush=True)
    return out


def aggregator_throughput(client: Client, dims: list[int], seconds: float) -> list[dict]:
    out = []
    rng = np.random.default_rng(0)
    for d in dims:
        rows = 64  # per worker; one-row batches
        X = rng.standard_normal((2 * rows, d)) / np.sqrt(d)
        y = rng.standard_normal(2 * rows)
        res = daskgd.fit(
            (X, y),
            client=client,
            mode="async",
            batch_size=1,
            max_epochs=1,
            tol=None,
            learning_rate=0.01,
            n_servers=0,
        )  # fmt: skip  (warm)
        t0 = res.history[-1]["time"]
        epochs = 2
        while True:  # grow the run until it lasts about ``seconds``
            res = daskgd.fit((X, y), client=client, mode="async", batch_size=1,
                             max_epochs=epochs, tol=None, learning_rate=0.01,
                             n_servers=0)  # fmt: skip
            h = res.history
            span = h[-1]["time"] - h[0]["time"]
            if span >= seconds or epochs >= 4096:
                break
            epochs *= 2
        updates = sum(r["updates"] for r in h[1:])
        rate = updates / span
        out.append({"d": d, "pushes_per_s": rate, "MB_per_s": rate * 2 * (d + 1) * 8 / 1e6,
                    "updates": updates, "first_epoch_s": t0})  # fmt: skip
        print(f"aggregator d={d:,}: {rate:,.0f} pushes/s", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--data", default=None, help="folder for the Zarr data (default: a temp dir)")
    args = p.parse_args()
    sizes = [125_000 * 2**k for k in range(5)]
    if args.quick:
        sizes = [n // 4 for n in sizes]
    dims = [10, 100, 1_000, 10_000, 100_000] + ([] if args.quick else [1_000_000])
    root = Path(args.data or tempfile.mkdtemp(prefix="daskgd-scaling-"))
    try:
        with _cluster(2) as cluster, Client(cluster) as client:
            rows = rows_scaling(client, root, sizes)
            agg = aggregator_throughput(client, dims, 0.5 if args.quick else 2.0)
        workers = worker_scaling(str(root / f"n{sizes[-1]}.zarr"), sizes[-1])
    finally:
        if args.data is None:
            shutil.rmtree(root, ignore_errors=True)
    per = [r["epoch_ms"] / (r["n"] / 1e6) for r in rows]
    md = ["# Scaling\n\n{header}"]
    md.append(
        f"## Time per epoch against rows\n\nFull-batch sync gradient descent, least squares, "
        f"d = 100, float64, Zarr data (uncompressed) read by 2 worker processes x 1 thread; "
        f"{EPOCHS} epochs after a warm-up fit. Per task and epoch: kernel (the gradient), "
        "push (round trip to the aggregator, its step and the wait for the other worker).\n\n"
    )
    md.append(
        table(
            [
                [
                    f"{r['n']:,}",
                    f"{r['epoch_ms']:.1f}",
                    f"{q:.1f}",
                    f"{r['kernel_ms_per_epoch']:.1f}",
                    f"{r['push_ms_per_epoch']:.1f}",
                    f"{r['load_s']:.2f}",
                ]
                for r, q in zip(rows, per, strict=True)
            ],
            ["rows", "ms / epoch", "ms / epoch per 1M rows", "kernel ms", "push ms", "load s"],
        )
    )
    md.append(
        f"\nFrom {sizes[0]:,} to {sizes[-1]:,} rows (x{sizes[-1] // sizes[0]}), the time per "
        f"epoch grows x{rows[-1]['epoch_ms'] / rows[0]['epoch_ms']:.1f}.\n\n"
    )
    md.append(f"## Time per epoch against workers ({sizes[-1]:,} x 100)\n\n")
    md.append(
        table(
            [
                [
                    r["label"],
                    f"{r['epoch_ms']:.1f}",
                    f"{r['speedup']:.2f}",
                    f"{r['kernel_ms_per_epoch']:.1f}",
                    f"{r['push_ms_per_epoch']:.1f}",
                ]
                for r in workers
            ],
            ["workers", "ms / epoch", "speed-up vs 1", "kernel ms", "push ms"],
        )
    )
    md.append(
        "\n## Aggregator throughput against d\n\nAsync mode, one-row batches from 2 workers, "
        "the model on the scheduler (`n_servers=0`: `bench_servers.py` measures the shards), "
        "so that the round trip and the aggregator's step bound the rate. MB/s counts the "
        "gradient in and the parameters out (2 x (d + 1) x 8 bytes per push).\n\n"
    )
    md.append(
        table(
            [[f"{r['d']:,}", f"{r['pushes_per_s']:,.0f}", f"{r['MB_per_s']:,.1f}"] for r in agg],
            ["d", "pushes / s", "MB / s"],
        )
    )
    write_results(
        "scaling",
        {
            "quick": args.quick,
            "epochs": EPOCHS,
            "rows": rows,
            "workers": workers,
            "aggregator": agg,
        },
        "".join(md),
    )


if __name__ == "__main__":
    main()
