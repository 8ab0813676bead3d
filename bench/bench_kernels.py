"""The fused gradient kernel against numpy, on one thread, and on two threads.

``python bench/bench_kernels.py [--quick] [--repeats N]``

For 1,000,000 x 100 float64 and float32 in memory (200,000 rows with ``--quick``),
with BLAS pinned to one thread, times the squared-error gradient computed by

* daskgd's fused kernel (each compiled build available on this CPU);
* numpy's two-pass form ``r = X @ w - y; g = X.T @ r``;
* a numpy sketch of the cache-blocked form (the same two products per block of
  1,000 rows, while the block is in cache), the design alternative to ours;
* a numpy read of the same bytes, ``X.sum()``: the single-thread read bandwidth;
* the fused kernel over the same number of rows taken from a block that stays in
  cache: its arithmetic alone, to show how much of its time is not memory;
* the fused kernel's margin phase alone (hinge loss, no row active) beside numpy's
  single ``X @ w``: where the time goes when the gradient update is skipped.

Then the fused kernel on two blocks in two threads against the same two blocks one
after the other, which shows that the kernel releases the GIL. Results go to
``bench/results/kernels.md`` and ``kernels.json``.
"""

from __future__ import annotations

import argparse
import threading

import numpy as np
from _common import median_seconds, table, write_results
from threadpoolctl import threadpool_limits

from daskgd.kernels import KERNEL_BUILD, available_builds, grad_loss

TARGET_RATIO = 1.8
TARGET_BANDWIDTH = 0.85


def blocked_numpy(X, y, w, block=1000):
    g = np.zeros(X.shape[1], dtype=X.dtype)
    for i in range(0, X.shape[0], block):
        Xb = X[i : i + block]
        g += Xb.T @ (Xb @ w - y[i : i + block])
    return g


def two_threads(X, y, w, out_a, out_b) -> None:
    half = X.shape[0] // 2
    threads = [
        threading.Thread(
            target=grad_loss,
            args=(X[:half], y[:half], w),
            kwargs={"out": out_a, "check_input": False},
        ),
        threading.Thread(
            target=grad_loss,
            args=(X[half:], y[half:], w),
            kwargs={"out": out_b, "check_input": False},
        ),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def measure(dtype, n: int, d: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.standard_normal(n).astype(dtype)
    w = rng.standard_normal(d).astype(dtype)
    out = np.empty(d + 1, dtype=dtype)
    out_b = np.empty(d + 1, dtype=dtype)
    nbytes = X.nbytes
    times = {}
    for build in sorted(available_builds()):
        times[f"fused ({build})"] = median_seconds(
            lambda b=build: grad_loss(X, y, w, out=out, check_input=False, _build=b), repeats
        )
    # Counter-measurement: the same number of rows from a block that stays in
    # L2 cache, i.e. the kernel's arithmetic alone, without waiting on memory.
    block = 2_000
    Xc, yc = X[:block].copy(), y[:block].copy()

    def in_cache():
        for _ in range(n // block):
            grad_loss(Xc, yc, w, out=out, check_input=False)

    times["fused, data in cache (compute only)"] = median_seconds(in_cache, repeats)
    # Counter-measurement: the margin phase alone. With hinge loss and every
    # margin beyond 1 the kernel never updates the gradient.
    w_big = (w * 100).astype(dtype)
    y_sep = np.sign(X @ w_big).astype(dtype)
    times["fused, margins only (hinge, no active row)"] = median_seconds(
        lambda: grad_loss(X, y_sep, w_big, loss="hinge", out=out, check_input=False), repeats
    )
    times["numpy X @ w (one BLAS pass)"] = median_seconds(lambda: X @ w, repeats)
    times["numpy two-pass"] = median_seconds(lambda: X.T @ (X @ w - y), repeats)
    times["numpy blocked sketch"] = median_seconds(lambda: blocked_numpy(X, y, w), repeats)
    times["numpy X.sum() (read)"] = median_seconds(lambda: X.sum(), repeats)
    fused = times[f"fused ({KERNEL_BUILD})"]
    half = n // 2
    sequential = median_seconds(
        lambda: (
            grad_loss(X[:half], y[:half], w, out=out, check_input=False),
            grad_loss(X[half:], y[half:], w, out=out_b, check_input=False),
        ),
        repeats,
    )
    parallel = median_seconds(lambda: two_threads(X, y, w, out, out_b), repeats)
    return {
        "dtype": np.dtype(dtype).name,
        "n": n,
        "d": d,
        "bytes": nbytes,
        "default_build": KERNEL_BUILD,
        "seconds": times,
        "gb_per_s": {k: nbytes / t / 1e9 for k, t in times.items()},
        "speedup_vs_numpy_two_pass": times["numpy two-pass"] / fused,
        "fraction_of_read_bandwidth": times["numpy X.sum() (read)"] / fused,
        "two_threads": {
            "sequential_s": sequential,
            "parallel_s": parallel,
            "speedup": sequential / parallel,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200,000 rows instead of 1,000,000")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    n = 200_000 if args.quick else 1_000_000
    with threadpool_limits(limits=1):
        results = [measure(dt, n, 100, args.repeats) for dt in (np.float64, np.float32)]

    md = ["# Gradient kernel: fused one-pass vs numpy, one thread\n\n{header}"]
    md.append(
        f"Squared-error gradient of {n:,} x 100 in memory, BLAS pinned to one thread, "
        f"median of {args.repeats} runs. Default build on this CPU: `{KERNEL_BUILD}`.\n\n"
    )
    for r in results:
        rows = [
            [
                k,
                f"{t * 1e3:.1f}",
                f"{r['gb_per_s'][k]:.1f}",
                f"{r['seconds']['numpy two-pass'] / t:.2f}",
            ]
            for k, t in r["seconds"].items()
        ]
        md.append(f"## {r['dtype']} ({r['bytes'] / 1e6:.0f} MB)\n\n")
        md.append(table(rows, ["method", "ms", "GB/s", "speed-up vs numpy two-pass"]))
        ok_ratio = r["speedup_vs_numpy_two_pass"] >= TARGET_RATIO
        ok_bw = r["fraction_of_read_bandwidth"] >= TARGET_BANDWIDTH
        tt = r["two_threads"]
        md.append(
            f"\nFused (`{KERNEL_BUILD}`) vs numpy two-pass: "
            f"**{r['speedup_vs_numpy_two_pass']:.2f}x** "
            f"(target {TARGET_RATIO}x: {'met' if ok_ratio else 'not met'}); "
            f"share of the read bandwidth: **{r['fraction_of_read_bandwidth']:.0%}** "
            f"(target {TARGET_BANDWIDTH:.0%}: {'met' if ok_bw else 'not met'}).\n\n"
            f"Two blocks on two threads: {tt['parallel_s'] * 1e3:.1f} ms against "
            f"{tt['sequential_s'] * 1e3:.1f} ms one after the other, "
            f"**{tt['speedup']:.2f}x** (2x is the ceiling on two free cores; "
            f"a kernel holding the GIL would stay at or below 1x).\n\n"
        )
    write_results("kernels", {"results": results}, "".join(md))


if __name__ == "__main__":
    main()
