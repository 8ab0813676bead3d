"""Sharded parameter servers: sync round time, async pushes/s and MB/s against d and n_servers.

``python bench/bench_servers.py [--quick]``; writes ``bench/results/servers.md`` and
``servers.json``.

Full-batch sync gradient descent (least squares, sgd) on very wide, very short data (8 rows
a worker), so that the parameter traffic, not the kernel, sets the pace; 2 worker
processes x 1 thread, d = 10^2, 10^4, 10^5, 10^6, 4 * 10^6 (``--quick``: up to 10^6),
``n_servers`` = 0 (the whole model on the scheduler), 1 and 2 (as many shards as workers;
4 shards need 4 workers, which this 2-core machine cannot run as separate machines).

For each, in sync and async mode: the median time of an epoch (sync: a round), pushes per
second, the MB/s of parameter traffic (each push's gradient in and parameters out,
float64), and what the scheduler process paid per push: its CPU time (psutil).
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
ROUNDS = 30


def _scheduler_cpu(dask_scheduler=None) -> float:
    import psutil

    cpu = psutil.Process().cpu_times()
    return cpu.user + cpu.system


def _one(client: Client, path: str, d: int, k: int, mode: str, rounds: int) -> dict:
    kw = dict(optimizer="sgd", learning_rate=0.1 / d, tol=None, validate=False, n_servers=k,
              mode=mode)  # fmt: skip
    daskgd.fit(path, client=client, max_epochs=2, **kw)  # warm: imports, page cache
    # the scheduler's CPU per push at the margin: a short and a long fit, the difference
    # (a fit's O(d) start and end, which do pass through the scheduler, cancel out)
    c0 = client.run_on_scheduler(_scheduler_cpu)
    short = daskgd.fit(path, client=client, max_epochs=rounds // 3, **kw)
    c1 = client.run_on_scheduler(_scheduler_cpu)
    t0 = time.perf_counter()
    res = daskgd.fit(path, client=client, max_epochs=rounds, **kw)
    wall = time.perf_counter() - t0
    c2 = client.run_on_scheduler(_scheduler_cpu)
    extra = sum(h["updates"] for h in res.history) - sum(h["updates"] for h in short.history)
    times = [h["time"] for h in res.history]
    pushes = sum(h["updates"] for h in res.history[1:])
    span = times[-1] - times[0]  # from the end of the first epoch: no start-up in it
    per_s = pushes / span
    return {
        "mode": mode,
        "d": d,
        "n_servers": k,
        "pushes_per_s": per_s,
        "round_ms": 1e3 * statistics.median(np.diff(times)),
        # each push: a float64 gradient in, the parameters out
        "MB_per_s": per_s * 2 * 8 * (d + 1) / 1e6,
        "fit_s": wall,
        "sched_cpu_ms_per_push": 1e3 * ((c2 - c1) - (c1 - c0)) / extra,
        "sched_cpu_share": (c2 - c1) / wall,
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
            for mode in ("sync", "async"):
                for k in (0, 1, 2):
                    r = _one(client, path, d, k, mode, ROUNDS)
                    print(r, flush=True)
                    rows.append(r)
    by = {(r["mode"], r["d"], r["n_servers"]): r for r in rows}
    for r in rows:
        r["vs_scheduler_MBps"] = r["MB_per_s"] / by[(r["mode"], r["d"], 0)]["MB_per_s"]
    cols = ["mode", "d", "n_servers", "round_ms", "pushes_per_s", "MB_per_s",
            "vs_scheduler_MBps", "sched_cpu_ms_per_push", "sched_cpu_share", "fit_s"]  # fmt: skip
    md = table([[_fmt(r[c]) for c in cols] for r in rows], cols)
    text = (
        "# Sharded parameter servers: sync rounds and async pushes against d and n_servers"
        "\n\n{header}"
        f"Least squares, sgd, {ROWS_PER_WORKER} rows a worker in one batch (the traffic, not "
        "the kernel, sets the pace), 2 worker processes x 1 thread on one 2-core machine; "
        "the scheduler (and the driver) in the benchmark's process. `round_ms`: median gap "
        "between epochs (sync: one round; async: each worker's push); `pushes_per_s` from "
        "the history after the first epoch; `MB_per_s`: parameter traffic (each push's "
        "float64 gradient in and parameters out); `vs_scheduler_MBps`: against n_servers=0 "
        "in the same mode at the same d; `sched_cpu_ms_per_push`: the CPU time of the "
        "scheduler's process (psutil) per push at the margin: the difference between a fit "
        f"of {ROUNDS} epochs and one of {ROUNDS // 3}, over the difference in pushes (a "
        "fit's start and end, which move O(d) through the scheduler, cancel out); "
        "`sched_cpu_share`: that process's CPU seconds per second of the long fit (it also "
        "runs the driver and the scheduler's own periodic work, which cost time, not bytes).\n\n"
        + md
    )
    write_results("servers", {"rows": rows}, text)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return "" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


if __name__ == "__main__":
    main()
