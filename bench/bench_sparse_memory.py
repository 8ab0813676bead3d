"""Where a large sparse model lives: the scheduler's and the workers' peak memory while a
model of 2^26 parameters with AdaGrad state trains key by key.

``python bench/bench_sparse_memory.py [--quick | --tiny]``

Data from ``daskgd.make_sparse_classification``: 400,000 rows (``--quick``: 200,000;
``--tiny``, a smoke run: 20,000 rows and 2^20 features, its results in a temporary
folder) x 2^26 hashed features, 40 non-zeros a row (power-law column popularity). Each fit:
``loss="log_loss"``, ``optimizer="adagrad"`` with ``alpha=0`` (a key-value fit: pushes and
pulls by key, the per-coordinate state on the servers), ``batch_size=10,000`` rows a
worker, 2 epochs, on a fresh cluster (the scheduler and 2 worker processes x 1 thread, each
a process of its own). The model with its AdaGrad state is ``2 x 8 x (2^26 + 1)`` bytes,
1 GiB: with ``n_servers=0`` it lives in the scheduler, with ``n_servers=2`` in two
key-hashed shards on the workers, and the scheduler only coordinates.

``peak RSS``: each process's largest resident memory (``VmHWM``), its start included;
``idle``: the scheduler's before the fit (a started cluster with daskgd imported).
Target (issue 15): the scheduler's peak under 300 MB with the model on the servers.

Writes ``bench/results/sparse_memory.md`` and ``sparse_memory.json``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import numpy as np
from distributed import Client
from distributed.deploy.subprocess import SubprocessCluster

import daskgd

TARGET_MB, WORKERS, BATCH, EPOCHS = 300.0, 2, 10_000, 2
SIZES = {"full": (400_000, 2**26), "quick": (200_000, 2**26), "tiny": (20_000, 2**20)}
CONFIGS = [
    ("AdaGrad sync, n_servers=0 (the model on the scheduler)", {"n_servers": 0, "mode": "sync"}),
    ("AdaGrad sync, n_servers=2 (key-hashed shards)", {"n_servers": 2, "mode": "sync"}),
    ("AdaGrad async, n_servers=2 (key-hashed shards)", {"n_servers": 2, "mode": "async"}),
]


def run(name: str, kw: dict, path: str) -> dict:
    """One fit on a fresh cluster; its peak memory by process."""
    with (
        SubprocessCluster(n_workers=WORKERS, threads_per_worker=1, dashboard_address=None,
                          silence_logs=logging.ERROR) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        client.wait_for_workers(WORKERS)
        client.run(lambda: bool(importlib.import_module("daskgd.worker.task")))
        client.run_on_scheduler(lambda: bool(importlib.import_module("daskgd")))
        idle = client.run_on_scheduler(_common.rss_mb)
        t0 = time.perf_counter()
        res = daskgd.fit(path, client=client, loss="log_loss", optimizer="adagrad", alpha=0.0,
                         batch_size=BATCH, max_epochs=EPOCHS, tol=None, random_state=0,
                         **kw)  # fmt: skip
        seconds = time.perf_counter() - t0
        sched, workers = client.run_on_scheduler(_common.peak_mb), client.run(_common.peak_mb)
    t = res.timings_
    pushes = res.n_updates_ * (WORKERS if kw["mode"] == "sync" else 1)
    out = {
        "system": name, "settings": kw, "seconds": seconds, "epochs": res.n_iter_,
        "loss": res.history[-1]["loss"], "scheduler_idle_MB": idle, "scheduler_MB": sched,
        "workers_MB": sorted(workers.values()), "pushes": pushes,
        "push_bytes": sum(t["push_bytes"]), "pull_bytes": sum(t["pull_bytes"]),
        "nonzero_coef": int(np.count_nonzero(res.coef_)),
    }  # fmt: skip
    print(name, {k: v for k, v in out.items() if k != "settings"}, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--tiny", action="store_true", help="a smoke run of the whole script")
    args = ap.parse_args()
    n, d = SIZES["tiny" if args.tiny else "quick" if args.quick else "full"]
    with tempfile.TemporaryDirectory(prefix="daskgd-bench-sparse-memory-") as tmp:
        path = str(Path(tmp) / "wide.zarr")
        t0 = time.perf_counter()
        daskgd.make_sparse_classification(path, n_samples=n, n_features=d, nnz_per_row=40,
                                          chunk_rows=n // 8, random_state=0)  # fmt: skip
        made = time.perf_counter() - t0
        results = [run(name, kw, path) for name, kw in CONFIGS]
    rows = []
    for r in results:
        per = r["push_bytes"] / max(r["pushes"], 1)
        pulled = r["pull_bytes"] / max(r["pushes"], 1)
        rows.append([r["system"], f"{r['scheduler_MB']:,.0f}", f"{r['scheduler_idle_MB']:,.0f}",
                     ", ".join(f"{w:,.0f}" for w in r["workers_MB"]), f"{r['seconds']:.1f}",
                     f"{r['loss']:.4f}", f"{per:,.0f}", f"{pulled:,.0f}"])  # fmt: skip
    sharded = [r["scheduler_MB"] for r in results if r["settings"]["n_servers"] > 0]
    met = "yes" if sharded and max(sharded) < TARGET_MB else "no"
    m, doc = _common.machine(), __doc__.split("\n\n")
    md = (
        f"# A model of 2^{int(np.log2(d))} parameters with AdaGrad state: peak memory\n\n"
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores), Python {m['python']}, "
        f"daskgd {daskgd.__version__}. Command: `python bench/bench_sparse_memory.py"
        f"{' --quick' if args.quick else ' --tiny' if args.tiny else ''}`.\n\n"
        f"Data: {n:,} x {d:,} (2^{int(np.log2(d))}), 40 non-zeros a row, written in "
        f"{made:.1f} s.\n\n" + "\n\n".join(doc[1:4]) + "\n\n"
        f"Target met (the scheduler's peak with shards under {TARGET_MB:.0f} MB): **{met}**.\n\n"
        + _common.table(
            rows,
            [
                "configuration",
                "scheduler peak RSS MB",
                "scheduler idle MB",
                "workers' peak RSS MB",
                "s (2 epochs)",
                "epoch loss",
                "bytes per push",
                "bytes pulled per push",
            ],
        )
        + "\n"
    )
    payload = {"n": n, "d": d, "target_MB": TARGET_MB, "target_met": met == "yes",
               "results": results}  # fmt: skip
    if args.tiny:
        print(md)
        return
    _common.write_results("sparse_memory", payload, md)
    print(md)


if __name__ == "__main__":
    main()
