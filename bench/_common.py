"""Helpers shared by the benchmark scripts: timing, machine facts, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cloudpickle

RESULTS = Path(__file__).resolve().parent / "results"

# The memory probes below run on a cluster's processes (``client.run``), which cannot
# import this folder: this module's functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def peak_mb(**_) -> float:
    """Peak resident memory (MB) of this process: VmHWM (``ru_maxrss`` keeps the parent's
    across exec)."""
    return _status_mb("VmHWM")


def rss_mb(**_) -> float:
    """Resident memory (MB) of this process now: VmRSS."""
    return _status_mb("VmRSS")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas_threads": _blas_threads(),
        # relative to the repository, wherever it was checked out
        "command": " ".join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
    }


def _blas_threads() -> int | None:
    """The BLAS threads of this process (the in-process systems' cores), when known."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    blas = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(blas) if blas else None


def write_results(name: str, payload: dict, markdown: str) -> None:
    """Write ``bench/results/<name>.json`` and ``<name>.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    m = payload["machine"]
    header = (
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores), Python {m['python']}, "
        f"numpy {m['numpy']}; BLAS threads in the benchmark's process: {m['blas_threads']}. "
        f"Command: `{m['command']}`.\n\n"
    )
    (RESULTS / f"{name}.md").write_text(markdown.replace("{header}", header))
    print(markdown.replace("{header}", header))


def table(rows: list[list[str]], header: list[str]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def use_peer_threads(n: int = 2):
    """Give the systems that run in this process ``n`` BLAS/OpenMP threads.

    Set here, not through ``OPENBLAS_NUM_THREADS`` in the environment: the Dask worker
    processes inherit the environment, and two workers running two-thread BLAS on two
    cores slow each other down several times (measured on the Newton Hessian). The peers'
    libraries are imported first so that their thread pools are found.
    """
    import importlib

    from threadpoolctl import threadpool_limits

    for name in ("scipy.linalg", "sklearn.linear_model", "glum", "snapml"):
        try:
            importlib.import_module(name)
        except Exception:  # a peer that is not installed is reported elsewhere
            pass
    return threadpool_limits(limits=n)
