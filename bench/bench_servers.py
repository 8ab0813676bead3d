"""Sharded parameter servers: sync round time, async pushes/s and MB/s against d and n_servers;
and how many pushes a second one scheduler, the coordinator, can carry.

``python bench/bench_servers.py [--quick] [--repeats N]``; writes
``bench/results/servers.md`` and ``servers.json``.

Full-batch sync gradient descent (least squares, sgd) on very wide, very short data (8 rows
a worker), so that the parameter traffic, not the kernel, sets the pace; 2 worker
processes x 1 thread, d = 10^2, 10^4, 10^5, 3 * 10^5, 10^6, 4 * 10^6 (``--quick``: up to
10^6),
``n_servers`` = 0 (the whole model on the scheduler), 1 and 2 (as many shards as workers).
Then 4 worker processes (oversubscribed on this 2-core machine: ``n_servers`` may not
exceed the workers), ``n_servers`` = 0, 2 and 4 at d = 10^5 and 10^6 (``--quick``: 10^5).

For each, in sync and async mode (the long fit ``--repeats`` times, 5 by default, the
n_servers taking turns, the median reported): the median time of an epoch (sync: a round),
pushes per second, the MB/s of parameter traffic (each push's gradient in, float32 as the
data, and the float64 parameters out), and what the scheduler process paid per push: its
CPU time (psutil).

The coordinator's ceiling: 4, 8, 16 and 32 worker processes x 1 thread (``--quick``: 4 and
8; all on the 2 cores), async pushes at d = 100 with the model on the scheduler and in
2 shards; the pushes a second achieved, and 1 / (the scheduler's CPU seconds per push): the
push rate at which the scheduler's process would be busy all the time; and the same with
the scheduler's idle work (heartbeats, growing with the workers) taken out.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import struct
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from _common import table, write_results
from distributed import Client, LocalCluster

import daskgd

ROWS_PER_WORKER = 8
ROUNDS = 30
#: long fits per row of the servers tables (the median reported): one measurement of
#: 30 rounds on a shared 2-core machine varies by 15% from one fit to the next
REPEATS = 5
# the coordinator's ceiling: a small model, the same number of pushes whatever the workers
COORD_D = 100
COORD_PUSHES = 960
COORD_SERVERS = 2
IDLE_S = 3


def _scheduler_cpu(dask_scheduler=None) -> float:
    import psutil

    cpu = psutil.Process().cpu_times()
    return cpu.user + cpu.system


#: where ``struct tcp_info`` (linux/tcp.h, Linux >= 4.1) keeps ``tcpi_bytes_acked`` and
#: ``tcpi_bytes_received``: two u64 after 8 u8 fields, 24 u32 and the two pacing rates
_TCP_INFO_AT = 120


def _scheduler_usage(dask_scheduler=None) -> tuple[float, int, int]:
    """The scheduler's process so far: its CPU seconds (:func:`_scheduler_cpu`), and the
    bytes received and sent on the TCP connections it holds (Linux's ``TCP_INFO``:
    ``tcpi_bytes_received`` and ``tcpi_bytes_acked``, summed over its established sockets;
    0 where the kernel does not say)."""
    import psutil

    got = sent = 0
    pair = struct.Struct("=QQ")  # made here: the function is sent to the scheduler by value
    for conn in psutil.Process().net_connections(kind="tcp"):
        if conn.fd < 0 or conn.status != psutil.CONN_ESTABLISHED:
            continue
        try:
            with socket.socket(fileno=os.dup(conn.fd)) as s:
                info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        except OSError:  # closed meanwhile
            continue
        if len(info) >= _TCP_INFO_AT + pair.size:
            acked, received = pair.unpack_from(info, _TCP_INFO_AT)
            got, sent = got + received, sent + acked
    return _scheduler_cpu(), got, sent


def _fit_kwargs(d: int, k: int, mode: str) -> dict:
    """The settings of every fit of a row (d, n_servers, mode)."""
    return dict(optimizer="sgd", learning_rate=0.1 / d, tol=None, validate=False,
                n_servers=k, mode=mode)  # fmt: skip


def _mb_per_s(pushes_per_s: float, d: int) -> float:
    """Parameter traffic: each push a float32 gradient in (the data's precision), float64
    parameters out."""
    return pushes_per_s * (4 + 8) * (d + 1) / 1e6


def _one(client: Client, path: str, d: int, k: int, mode: str, rounds: int) -> dict:
    kw = _fit_kwargs(d, k, mode)
    daskgd.fit(path, client=client, max_epochs=2, **kw)  # warm: imports, page cache
    # the scheduler's CPU and bytes per push at the margin: a short and a long fit, the
    # difference (a fit's O(d) start and end, which do pass through the scheduler, cancel out)
    u0, s0 = np.array(client.run_on_scheduler(_scheduler_usage)), time.perf_counter()
    short = daskgd.fit(path, client=client, max_epochs=rounds // 3, **kw)
    short_wall = time.perf_counter() - s0
    u1 = np.array(client.run_on_scheduler(_scheduler_usage))
    t0 = time.perf_counter()
    res = daskgd.fit(path, client=client, max_epochs=rounds, **kw)
    wall = time.perf_counter() - t0
    u2 = np.array(client.run_on_scheduler(_scheduler_usage))
    cpu_margin, recv_margin, sent_margin = (u2 - u1) - (u1 - u0)
    extra = sum(h["updates"] for h in res.history) - sum(h["updates"] for h in short.history)
    per_s, round_ms = _rate(res)
    return {
        "mode": mode,
        "d": d,
        "n_servers": k,
        "pushes_per_s": per_s,
        "round_ms": round_ms,
        "MB_per_s": _mb_per_s(per_s, d),
        "fit_s": wall,
        "sched_cpu_ms_per_push": 1e3 * float(cpu_margin) / extra,
        "sched_cpu_share": float(u2[0] - u1[0]) / wall,
        "sched_recv_bytes_per_push": float(recv_margin) / extra,
        "sched_sent_bytes_per_push": float(sent_margin) / extra,
        # the margin's pieces (the coordinator's table takes the idle scheduler's share out)
        "short_fit_s": short_wall,
        "extra_pushes": extra,
        "sched_cpu_margin_s": float(cpu_margin),
    }


def _rate(res) -> tuple[float, float]:
    """Pushes a second and the median ms between epochs of a fit, from the end of its
    first epoch (no start-up in it)."""
    times = [h["time"] for h in res.history]
    pushes = sum(h["updates"] for h in res.history[1:])
    return pushes / (times[-1] - times[0]), 1e3 * statistics.median(np.diff(times))


def _again(client: Client, path: str, d: int, k: int, mode: str, rounds: int) -> tuple:
    """:func:`_rate` of one more long fit (the repeats)."""
    return _rate(daskgd.fit(path, client=client, max_epochs=rounds, **_fit_kwargs(d, k, mode)))


def _median_of_repeats(runs: dict[int, dict], more: dict[int, list[tuple]], d: int) -> None:
    """Each run's pushes/s and round time: the median of its first measurement and the
    repeats; the spread of pushes/s beside it."""
    for k, r in runs.items():
        rates = [r["pushes_per_s"], *(p for p, _ in more[k])]
        r["pushes_per_s"] = statistics.median(rates)
        r["pushes_per_s_min"], r["pushes_per_s_max"] = min(rates), max(rates)
        r["round_ms"] = statistics.median([r["round_ms"], *(m for _, m in more[k])])
        r["MB_per_s"] = _mb_per_s(r["pushes_per_s"], d)
        r["repeats"] = len(rates)


@contextmanager
def _client(n_workers: int, memory_limit: str) -> Iterator[Client]:
    """A client of ``n_workers`` worker processes x 1 thread, the scheduler in this
    process; the workers are retired before the scheduler closes (closing a cluster of
    many workers at once leaves their heartbeats failing, loudly)."""
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                     dashboard_address=":0", memory_limit=memory_limit,
                     silence_logs=logging.ERROR) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        client.wait_for_workers(n_workers)
        yield client
        cluster.scale(0)
        deadline = time.monotonic() + 60
        while client.scheduler_info()["workers"] and time.monotonic() < deadline:
            time.sleep(0.1)


def _write(tmp: str, n_workers: int, d: int) -> str:
    """A Zarr store of ``ROWS_PER_WORKER`` rows per worker in chunks of that many rows, so
    that every worker trains on one chunk."""
    path = str(Path(tmp) / f"w{n_workers}-d{d}.zarr")
    n = n_workers * ROWS_PER_WORKER
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d), dtype=np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    daskgd.write_zarr(path, X, y, chunk_rows=ROWS_PER_WORKER)
    return path


def _servers(
    n_workers: int, sizes: list[int], ks: tuple[int, ...], memory_limit: str, repeats: int
) -> list:
    """The servers table's rows: every d, sync and async, every n_servers in ``ks``; the
    long fit ``repeats`` times, the n_servers taking turns (a machine that slows down for
    a while slows each of them alike)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp, _client(n_workers, memory_limit) as client:
        for d in sizes:
            path = _write(tmp, n_workers, d)
            for mode in ("sync", "async"):
                runs = {k: {"workers": n_workers, **_one(client, path, d, k, mode, ROUNDS)}
                        for k in ks}  # fmt: skip
                more: dict[int, list[tuple]] = {k: [] for k in ks}
                for _ in range(repeats - 1):
                    for k in ks:
                        more[k].append(_again(client, path, d, k, mode, ROUNDS))
                _median_of_repeats(runs, more, d)
                for r in runs.values():
                    print(r, flush=True)
                    rows.append(r)
    return rows


def _rss(dask_worker=None) -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _coordinator(n_workers: int) -> list[dict]:
    """The coordinator's rows for ``n_workers`` worker processes: async pushes at a small d
    with the model on the scheduler and in ``COORD_SERVERS`` shards."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, _client(n_workers, "600MiB") as client:
        start_s = time.perf_counter() - t0
        path = _write(tmp, n_workers, COORD_D)
        epochs = COORD_PUSHES // n_workers
        runs = [_one(client, path, COORD_D, k, "async", epochs) for k in (0, COORD_SERVERS)]
        rss = sum(client.run(_rss).values()) / 1e6
        # the scheduler's process with no fit running: heartbeats and the like, which grow
        # with the workers and which the margin counts as the pushes' cost
        c0, i0 = client.run_on_scheduler(_scheduler_cpu), time.perf_counter()
        time.sleep(IDLE_S)
        idle = (client.run_on_scheduler(_scheduler_cpu) - c0) / (time.perf_counter() - i0)
    rows = []
    for r in runs:
        ms = r["sched_cpu_ms_per_push"]
        net = r["sched_cpu_margin_s"] - idle * (r["fit_s"] - r["short_fit_s"])
        net_ms = 1e3 * net / r["extra_pushes"]
        row = {
            "workers": n_workers,
            "n_servers": r["n_servers"],
            "epochs": epochs,
            "pushes_per_s": r["pushes_per_s"],
            "sched_cpu_ms_per_push": ms,
            # the push rate at which the scheduler's process would be busy all the time
            "ceiling_pushes_per_s": 1e3 / ms if ms > 0 else None,
            "sched_idle_share": idle,
            "sched_net_ms_per_push": net_ms,
            # the same with the idle work taken out of each push and off the core
            "ceiling_net_pushes_per_s": 1e3 * (1 - idle) / net_ms if net_ms > 0 else None,
            "sched_cpu_share": r["sched_cpu_share"],
            "workers_rss_MB": rss,
            "fit_s": r["fit_s"],
            "start_s": start_s,
        }
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--repeats",
        type=int,
        default=REPEATS,
        help="long fits per row, the median reported (default %(default)s)",
    )
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be 1 or more")
    # 10^6: where n_servers="auto" shards (daskgd.driver.servers.AUTO_SHARD_PARAMS); 3 * 10^5
    # the size where 2 shards stopped gaining once the scheduler's BLAS spin was gone
    sizes = [100, 10**4, 10**5, 3 * 10**5, 10**6] + ([] if args.quick else [4 * 10**6])
    rows = _servers(2, sizes, (0, 1, 2), "auto", args.repeats)
    rows += _servers(4, [10**5] + ([] if args.quick else [10**6]), (0, 2, 4), "2GiB",
                     args.repeats)  # fmt: skip
    ns = (4, 8) if args.quick else (4, 8, 16, 32)
    coord = [r for n in ns for r in _coordinator(n)]
    by = {(r["workers"], r["mode"], r["d"], r["n_servers"]): r for r in rows}
    for r in rows:
        r["vs_scheduler_MBps"] = (
            r["MB_per_s"] / by[(r["workers"], r["mode"], r["d"], 0)]["MB_per_s"]
        )
    cols = ["mode", "d", "n_servers", "round_ms", "pushes_per_s", "pushes_per_s_min",
            "pushes_per_s_max", "MB_per_s", "vs_scheduler_MBps", "sched_cpu_ms_per_push",
            "sched_recv_bytes_per_push", "sched_sent_bytes_per_push", "sched_cpu_share",
            "fit_s"]  # fmt: skip
    md2 = table([[_fmt(r[c]) for c in cols] for r in rows if r["workers"] == 2], cols)
    md4 = table([[_fmt(r[c]) for c in ["workers", *cols]] for r in rows if r["workers"] == 4],
                ["workers", *cols])  # fmt: skip
    ccols = ["workers", "n_servers", "epochs", "pushes_per_s", "sched_cpu_ms_per_push",
             "ceiling_pushes_per_s", "sched_idle_share", "sched_net_ms_per_push",
             "ceiling_net_pushes_per_s", "sched_cpu_share", "workers_rss_MB", "fit_s",
             "start_s"]  # fmt: skip
    mdc = table([[_fmt(r[c]) for c in ccols] for r in coord], ccols)
    text = (
        "# Sharded parameter servers: sync rounds and async pushes against d and n_servers"
        "\n\n{header}"
        f"Least squares, sgd, {ROWS_PER_WORKER} rows a worker in one batch (the traffic, not "
        "the kernel, sets the pace), 2 worker processes x 1 thread on one 2-core machine; "
        "the scheduler (and the driver) in the benchmark's process. Each row's long fit "
        f"({ROUNDS} epochs) ran {args.repeats} times, the n_servers of a mode and d taking "
        "turns: `round_ms`, `pushes_per_s` and the figures from it (`MB_per_s`, "
        "`vs_scheduler_MBps`) are the medians; the scheduler's CPU and `fit_s` come from "
        "the first measurement. `round_ms`: median gap "
        "between epochs (sync: one round; async: each worker's push); `pushes_per_s` from "
        "the history after the first epoch (`_min`, `_max`: the slowest and the fastest of "
        "the repeats); `MB_per_s`: parameter traffic (each push's "
        "float32 gradient in, the data's precision, and float64 parameters out); "
        "`vs_scheduler_MBps`: against n_servers=0 "
        "in the same mode at the same d; `sched_cpu_ms_per_push`: the CPU time of the "
        "scheduler's process (psutil) per push at the margin: the difference between a fit "
        f"of {ROUNDS} epochs and one of {ROUNDS // 3}, over the difference in pushes (a "
        "fit's start and end, which move O(d) through the scheduler, cancel out); "
        "`sched_recv_bytes_per_push`, `sched_sent_bytes_per_push`: the bytes that process "
        "received and sent on its TCP connections (Linux's `TCP_INFO`, summed over its "
        "sockets, the driver's connection to the scheduler counted at both ends) per push, "
        "at the same margin (one measurement); "
        "`sched_cpu_share`: that process's CPU seconds per second of the long fit (it also "
        "runs the driver and the scheduler's own periodic work, which cost time, not bytes).\n\n"
        + md2
        + "\n## 4 worker processes: n_servers up to 4\n\n"
        "`n_servers` may not exceed the workers, so 4 shards need 4 workers: the same "
        "measurements with 4 worker processes x 1 thread, `n_servers` = 0, 2 and 4. The 4 "
        "processes, the scheduler and the driver share the same 2 cores (oversubscribed: "
        "twice as many worker processes as cores), so these rows show what the shards' "
        "extra messages cost on a crowded machine, not what 4 machines would do. "
        "`vs_scheduler_MBps`: against 4 workers with n_servers=0.\n\n"
        + md4
        + "\n## The coordinator's ceiling: how many pushes a second one scheduler carries\n\n"
        f"Async, sgd, d = {COORD_D}, {ROWS_PER_WORKER} rows a worker in one chunk each, with "
        f"the model on the scheduler (n_servers=0) and in {COORD_SERVERS} shards (then each "
        "push costs the scheduler only small coordination messages), for "
        f"{', '.join(map(str, ns[:-1]))} and {ns[-1]} worker processes x 1 thread. All of "
        "them, the scheduler and the driver run on the same 2 cores (oversubscribed: up to "
        f"{ns[-1] // 2} worker processes a core), so `pushes_per_s`, the rate achieved, is "
        "bounded by the 2 shared cores, not by the scheduler. `epochs`: of the long fit "
        f"({COORD_PUSHES} pushes whatever the workers); `sched_cpu_ms_per_push`: the "
        "scheduler process's CPU per push at the margin, as above (a long fit against one "
        "of a third the epochs); `ceiling_pushes_per_s` = 1 / that: the push rate at which "
        "the scheduler's process would be busy all the time, the most one scheduler "
        "carries when the workers are on machines of their own. It is conservative: the "
        "process also runs the driver, and the scheduler's periodic work (heartbeats, which "
        "grow with the workers) during the fit is counted as if the pushes cost it. "
        f"`sched_idle_share`: that process's CPU seconds per second over {IDLE_S} s with no "
        "fit running; `sched_net_ms_per_push`: the margin less that idle rate over the long "
        "fit's extra time, per push; `ceiling_net_pushes_per_s` = (1 - idle share) / that: "
        "what is left of the core after the idle work, over what a push costs beyond it. "
        "Each figure is one measurement. `workers_rss_MB`: the worker processes' memory, "
        "added up; `start_s`: the time to start the cluster.\n\n" + mdc
    )
    write_results("servers", {"rows": rows, "coordinator": coord}, text)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return "" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


if __name__ == "__main__":
    main()
