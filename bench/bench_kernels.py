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

The Hessian kernel (``grad_hess``, Poisson loss: loss, gradient and ``X^T diag(l'') X``
with the intercept) on the same shapes, one thread, against numpy's two passes
``p = X @ w; g = X.T @ (exp(p) - y); H = X.T @ (X * exp(p)[:, None])`` (in ``X``'s
dtype, as numpy would do it), goes to ``bench/results/kernels_hessian.md`` and
``kernels_hessian.json``.

Wide, short batches (``--part wide``): 8 x 1,000,000, 64 x 100,000 and 13 x 300,000
(a block of 8 rows and 5 more), float32 and float64, one thread: the batch a training task
computes when the model is wide and its rows few (mini-batches, or the 8 rows a worker of
``bench_servers.py``), where the kernel's O(d) work per call (the float64 accumulator, the
conversion to the output's type), not its rows, can set the pace. The fused kernel against
numpy's two passes (the two taking turns, at least 21 times whatever ``--repeats``: a call
takes milliseconds), to ``bench/results/kernels_wide.md`` and ``kernels_wide.json``.
``--part hessian`` (or ``gradient``, ``wide``) runs one part only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import numpy as np
from _common import median_seconds, table, write_results
from threadpoolctl import threadpool_limits

from daskgd.kernels import KERNEL_BUILD, available_builds, grad_hess, grad_loss

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


def numpy_grad_hess(X, y, w):
    """Poisson loss, gradient and Hessian (with the intercept) the plain numpy way."""
    p = X @ w
    mu = np.exp(p)
    loss = float(np.sum(mu - y * p))
    g = X.T @ (mu - y)
    H = X.T @ (X * mu[:, None])
    Hb = X.T @ mu
    return loss, g, float(np.sum(mu - y)), H, Hb, float(mu.sum())


def interleaved_seconds(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Wall times of each function over ``repeats`` rounds, one call of each per round (after
    one warm-up round): on a shared machine a burst of load then falls on all of them."""
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats + 1):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r:
                runs[k].append(time.perf_counter() - t0)
    return runs


def measure_hessian(dtype, n: int, d: int, repeats: int) -> dict:
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, d)).astype(dtype)
    w = (rng.standard_normal(d) * 0.3 / np.sqrt(d)).astype(dtype)
    y = rng.poisson(np.exp(X @ w)).astype(dtype)
    w64 = w.astype(np.float64)
    fns = {
        f"grad_hess ({build})": (
            lambda b=build: grad_hess(X, y, w64, loss="poisson", check_input=False, _build=b)
        )
        for build in sorted(available_builds())
    }
    fns["numpy two-pass"] = lambda: numpy_grad_hess(X, y, w)
    fns["numpy X.T @ X alone (one BLAS call)"] = lambda: X.T @ X
    runs = interleaved_seconds(fns, repeats)
    times = {k: statistics.median(v) for k, v in runs.items()}
    best = {k: min(v) for k, v in runs.items()}
    fused = times[f"grad_hess ({KERNEL_BUILD})"]
    # the kernel (float64 sums) against numpy in float64 whatever X's dtype
    _, _, H = grad_hess(X, y, w64, loss="poisson")
    X64 = X.astype(np.float64)
    mu = np.exp(X64 @ w64)
    H_ref = X64.T @ (X64 * mu[:, None])
    return {
        "dtype": np.dtype(dtype).name,
        "n": n,
        "d": d,
        "bytes": X.nbytes,
        "default_build": KERNEL_BUILD,
        "seconds": times,
        "best_seconds": best,
        "speedup_vs_numpy_two_pass": times["numpy two-pass"] / fused,
        "best_speedup_vs_numpy_two_pass": best["numpy two-pass"]
        / best[f"grad_hess ({KERNEL_BUILD})"],
        "hessian_max_relative_error": float(np.abs(H[:d, :d] - H_ref).max() / np.abs(H_ref).max()),
        # the machine's 1-minute load average around the measurement (a shared machine)
        "load_average": [load_before, os.getloadavg()[0]],
    }


def hessian_markdown(results: list[dict], n: int, repeats: int) -> str:
    md = ["# Hessian kernel: grad_hess vs numpy, one thread\n\n{header}"]
    md.append(
        f"Poisson loss, its gradient and Hessian (intercept included) of {n:,} x 100 in "
        f"memory, BLAS pinned to one thread, median (and best) of {repeats} interleaved "
        "runs. numpy computes in "
        "X's dtype (float32 gemm for float32); grad_hess always sums in float64 (float32 "
        f"rows widened). Default build on this CPU: `{KERNEL_BUILD}`.\n\n"
    )
    for r in results:
        base, best = r["seconds"]["numpy two-pass"], r["best_seconds"]
        rows = [
            [k, f"{t * 1e3:.1f}", f"{best[k] * 1e3:.1f}", f"{base / t:.2f}"]
            for k, t in r["seconds"].items()
        ]
        md.append(f"## {r['dtype']} ({r['bytes'] / 1e6:.0f} MB)\n\n")
        md.append(table(rows, ["method", "ms (median)", "ms (best)", "speed-up vs numpy two-pass"]))
        err, load = r["hessian_max_relative_error"], r["load_average"]
        ratio, ratio_best = r["speedup_vs_numpy_two_pass"], r["best_speedup_vs_numpy_two_pass"]
        md.append(
            f"\ngrad_hess (`{KERNEL_BUILD}`) vs numpy two-pass: **{ratio:.2f}x** (medians; "
            f"{ratio_best:.2f}x best against best); largest Hessian difference from a float64 "
            f"numpy computation: {err:.1e} of its largest entry. Load average {load[0]:.1f} "
            f"before, {load[1]:.1f} after.\n\n"
        )
    return "".join(md)


WIDE_SHAPES = ((8, 1_000_000), (64, 100_000), (13, 300_000))


def _wide_case(dtype, n: int, d: int, repeats: int, rng) -> dict:
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.standard_normal(n).astype(dtype)
    w = (1e-3 * rng.standard_normal(d)).astype(dtype)
    buf = np.empty(d + 1, dtype=dtype)
    times = interleaved_seconds(
        {
            "fused": lambda: grad_loss(X, y, w, out=buf, check_input=False),
            "numpy two-pass": lambda: X.T @ (X @ w - y),
        },
        repeats,
    )
    fused = statistics.median(times["fused"])
    two_pass = statistics.median(times["numpy two-pass"])
    return {
        "dtype": np.dtype(dtype).name,
        "n": n,
        "d": d,
        "fused_ms": fused * 1e3,
        "numpy_two_pass_ms": two_pass * 1e3,
        "speedup_vs_numpy_two_pass": two_pass / fused,
    }


def measure_wide(repeats: int) -> list[dict]:
    """Wide, short batches (see the module docstring), the methods taking turns."""
    rng = np.random.default_rng(0)
    return [
        _wide_case(dtype, n, d, repeats, rng)
        for dtype in (np.float32, np.float64)
        for n, d in WIDE_SHAPES
    ]


def wide_markdown(results: list[dict], repeats: int) -> str:
    heads = ["dtype", "rows x columns", "fused ms", "numpy two-pass ms", "speed-up vs numpy"]
    rows = [
        [
            r["dtype"],
            f"{r['n']:,} x {r['d']:,}",
            f"{r['fused_ms']:.2f}",
            f"{r['numpy_two_pass_ms']:.2f}",
            f"{r['speedup_vs_numpy_two_pass']:.2f}",
        ]
        for r in results
    ]
    return (
        "# Gradient kernel on wide, short batches, one thread\n\n{header}"
        f"Squared-error gradient, BLAS pinned to one thread, the two methods taking turns, "
        f"median of {repeats} runs each. Default build: `{KERNEL_BUILD}`.\n\n" + table(rows, heads)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200,000 rows instead of 1,000,000")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--part", choices=("all", "gradient", "hessian", "wide"), default="all")
    args = parser.parse_args()
    n = 200_000 if args.quick else 1_000_000
    if args.part in ("all", "hessian"):
        # grad_hess loads scipy's BLAS at its first call: load it now, so that the limit
        # below (which applies to the libraries loaded when it is set) pins it too
        grad_hess(np.ones((1, 1)), np.ones(1), np.zeros(1))
        with threadpool_limits(limits=1):
            hess = [measure_hessian(dt, n, 100, args.repeats) for dt in (np.float64, np.float32)]
        write_results("kernels_hessian", {"results": hess}, hessian_markdown(hess, n, args.repeats))
    if args.part in ("all", "wide"):
        repeats = max(args.repeats, 21)  # a call takes milliseconds
        with threadpool_limits(limits=1):
            wide = measure_wide(repeats)
        write_results("kernels_wide", {"results": wide}, wide_markdown(wide, repeats))
    if args.part in ("hessian", "wide"):
        return
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
