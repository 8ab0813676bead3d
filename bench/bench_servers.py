"""Sharded parameter servers: sync round time and throughput against d and n_servers.

``python bench/bench_servers.py [--quick]``; writes ``bench/results/servers.md`` and
``servers.json``.

Full-batch sync gradient descent (least squares, sgd) on very wide, very short data (8 rows
a worker), so that the parameter traffic, not the kernel, sets the pace; 2 worker
processes x 1 thread, d = 10^2, 10^4, 10^5, 10^6, 4 * 10^6 (``--quick``: up to 10^6),
``n_servers`` = 0 (the whole model on the scheduler), 1 and 2 (as many shards as workers;
4 shards need 4 workers, which this 2-core machine cannot run as separate machines).

For each: the median time of a round (the gap between epochs in the history), the MB/s
of parameter traffic (each worker's gradient in and parameters out, float64), and what
the scheduler process paid per round: its CPU seconds (psutil) over the timed rounds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import table, write_results
from distributed import Client, LocalCluster

import daskgd

ROWS_PER_WORKER = 8
ROUNDS = 12


def _scheduler_cpu(dask_scheduler=None) -> float:
    import psutil

    cpu = psutil.Process().cpu_times()
    return cpu.user + cpu.system


def _one(client: Client, path: str, d: int, k: int, rounds: int) -> dict:
    kw = dict(optimizer="sgd", learning_rate=0.1 / d, tol=None, validate=False, n_servers=k)
    daskgd.fit(path, client=client, max_epochs=2, **kw)  # warm: imports, page cache
    c0 = client.run_on_scheduler(_scheduler_cpu)
    t0 = time.perf_counter()
    res = daskgd.fit(path, client=client, max_epochs=rounds, **kw)
    wall = time.perf_counter() - t0
    c1 = client.run_on_scheduler(_scheduler_cpu)
    times = [h["time"] for h in res.history]
    round_s = statistics.median(np.diff(times))
    n_workers = 2
    traffic = 2 * 8 * (d + 1) * n_workers  # bytes a round: gradients in, parameters out
    return {
        "d": d,
        "n_servers": k,
        "round_ms": 1e3 * round_s,
        "MB_per_s": traffic / round_s / 1e6,
        "fit_s": wall,
        "sched_cpu_ms_per_round": 1e3 * (c1 - c0) / rounds,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sizes = [100, 10**4, 10**5, 10**6] + ([] if args.quick else [4 * 10**6])
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        for d in sizes:
            path = str(Path(tmp) / f"d{d}.zarr")
            n = 2 * ROWS_PER_WORKER
            rng = np.random.default_rng(0)
            X = rng.standard_normal((n, d), dtype=np.float32)
            y = rng.standard_normal(n).astype(np.float32)
            daskgd.write_zarr(path, X, y, chunk_rows=ROWS_PER_WORKER)
            del X
            for k in (0, 1, 2):
                r = _one(client, path, d, k, ROUNDS)
                print(r, flush=True)
                rows.append(r)
    by = {(r["d"], r["n_servers"]): r for r in rows}
    for r in rows:
        base = by[(r["d"], 0)]
        r["vs_scheduler_MBps"] = r["MB_per_s"] / base["MB_per_s"]
    cols = ["d", "n_servers", "round_ms", "MB_per_s", "vs_scheduler_MBps",
                    "sched_cpu_ms_per_round", "fit_s"]  # fmt: skip
    md = table([[_fmt(r[c]) for c in cols] for r in rows], cols)
    text = (
        "# Sharded parameter servers: sync rounds against d and n_servers\n\n{header}"
        f"Full-batch sync sgd, least squares, {ROWS_PER_WORKER} rows a worker (the traffic, "
        "not the kernel, sets the pace), 2 worker processes x 1 thread on one 2-core "
        "machine; the scheduler (and the driver) in the benchmark's process. `round_ms`: "
        "median gap between epochs; `MB_per_s`: parameter traffic (each worker's float64 "
        "gradient in and parameters out) over the round time; `vs_scheduler_MBps`: against "
        "n_servers=0 at the same d; `sched_cpu_ms_per_round`: the CPU time of the "
        "scheduler's process (psutil) per round.\n\n" + md
    )
    write_results("servers", {"rows": rows}, text)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return "" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


if __name__ == "__main__":
    main()
