"""Benchmark of the engine: sync round overhead, async push rate, bytes through the aggregator.

Runs a LocalCluster of 2 worker processes x 1 thread and, for d = 100 and d = 100,000:

- sync overhead per round: wall time of a full-batch sync fit divided by its rounds,
  minus the kernel time for one worker's block (measured here, same shapes);
- async pushes per second: updates applied per second by a mini-batch async fit with
  tiny batches (so the aggregator, not the kernel, is the bottleneck);
- bytes per second through the aggregator: pushes/s x 2 x (d + 1) x 8 (gradient in,
  parameters out).

Usage: ``python bench/bench_engine.py [--quick]``; writes ``bench/results/engine.md`` and
``engine.json``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import table, write_results
from distributed import Client, LocalCluster

from daskgd.driver import fit
from daskgd.kernels import grad_loss


def _data(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ (rng.standard_normal(d) / np.sqrt(d)) + 0.1 * rng.standard_normal(n)
    return X, y


def _kernel_time(X: np.ndarray, y: np.ndarray, repeat: int = 50) -> float:
    w, out = np.zeros(X.shape[1]), np.empty(X.shape[1] + 1)
    grad_loss(X, y, w, out=out)
    t = time.perf_counter()
    for _ in range(repeat):
        grad_loss(X, y, w, out=out, check_input=False)
    return (time.perf_counter() - t) / repeat


def bench(client: Client, d: int, rows_per_worker: int, epochs: int, async_pushes: int) -> dict:
    X, y = _data(2 * rows_per_worker, d)
    # stable step: the largest eigenvalue of X^T X / n is about (1 + sqrt(d / n))^2
    lr = 0.5 / (1 + np.sqrt(d / (2 * rows_per_worker))) ** 2
    lr_async = 0.1 / d  # one-row batches: the step must stay below 2 / ||x||^2
    kernel = _kernel_time(np.ascontiguousarray(X[:rows_per_worker]), y[:rows_per_worker])
    fit((X, y), client=client, max_epochs=2, tol=None, learning_rate=lr)  # warm up
    t = time.perf_counter()
    res = fit((X, y), client=client, max_epochs=epochs, tol=None, learning_rate=lr)
    sync_wall = time.perf_counter() - t
    # exclude setup (plan, job creation, task start) by timing inside the history
    h = res.history
    round_time = (h[-1]["time"] - h[0]["time"]) / max(len(h) - 1, 1)
    batch = 1  # one row per push: the aggregator is the bottleneck
    epochs_async = max(1, async_pushes // (2 * rows_per_worker))
    t = time.perf_counter()
    res = fit(
        (X, y),
        client=client,
        mode="async",
        batch_size=batch,
        max_epochs=epochs_async,
        tol=None,
        learning_rate=lr_async,
    )
    ha = res.history
    span = ha[-1]["time"] - ha[0]["time"]
    updates = sum(r["updates"] for r in ha[1:])
    pushes_s = updates / span if span > 0 else float("nan")
    return {
        "d": d,
        "rows_per_worker": rows_per_worker,
        "sync_rounds": len(h),
        "sync_round_ms": round_time * 1e3,
        "kernel_ms": kernel * 1e3,
        "sync_overhead_ms": (round_time - kernel) * 1e3,
        "sync_fit_wall_s": sync_wall,
        "async_pushes_per_s": pushes_s,
        "async_bytes_per_s": pushes_s * 2 * (d + 1) * 8,
        "async_updates_measured": updates,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and pushes")
    args = p.parse_args()
    scale = 5 if args.quick else 1
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        results = [
            bench(
                client, d=100, rows_per_worker=1000, epochs=500 // scale, async_pushes=6000 // scale
            ),
            bench(
                client, d=100_000, rows_per_worker=20, epochs=50 // scale, async_pushes=400 // scale
            ),
        ]
    targets = {"sync_overhead_ms_d100": 2.0, "async_pushes_per_s_d100": 2000}
    rows = [
        [
            f"{r['d']:,}",
            f"{r['sync_round_ms']:.2f}",
            f"{r['kernel_ms']:.2f}",
            f"{r['sync_overhead_ms']:.2f}",
            f"{r['async_pushes_per_s']:,.0f}",
            f"{r['async_bytes_per_s'] / 1e6:.1f}",
        ]
        for r in results
    ]
    small = results[0]
    md = (
        "# Engine: sync round overhead and async aggregator throughput\n\n{header}"
        "LocalCluster of 2 worker processes x 1 thread. Sync: full-batch rounds of "
        f"{small['rows_per_worker']} rows per worker; overhead = round time minus one "
        "worker's kernel time. Async: one-row batches, so the aggregator is the bottleneck; "
        "bytes = pushes x 2 x (d + 1) x 8 (gradient in, parameters out).\n\n"
        + table(
            rows,
            [
                "d",
                "sync round (ms)",
                "kernel (ms)",
                "sync overhead (ms)",
                "async pushes/s",
                "async MB/s",
            ],
        )
        + f"\nTargets at d = 100: sync overhead <= {targets['sync_overhead_ms_d100']} ms "
        f"({'met' if small['sync_overhead_ms'] <= 2.0 else 'not met'}: "
        f"{small['sync_overhead_ms']:.2f} ms); async >= {targets['async_pushes_per_s_d100']:,} "
        f"pushes/s ({'met' if small['async_pushes_per_s'] >= 2000 else 'not met'}: "
        f"{small['async_pushes_per_s']:,.0f}).\n"
    )
    write_results("engine", {"targets": targets, "quick": args.quick, "results": results}, md)


if __name__ == "__main__":
    main()
