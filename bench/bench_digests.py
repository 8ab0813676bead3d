"""Benchmark: what checking per-chunk digests costs on a training task's load.

Run ``python bench/bench_digests.py [--quick]``. It writes ``n x 100`` float64 regression
data with :func:`daskgd.make_regression` (row-chunks of 50,000 rows), uncompressed and
Zstandard level 1, then in this process (one thread, as a training task reads its rows):

1. loads every row-chunk with :func:`daskgd.data.chunkio.read_row_chunks` as a training task
   does, which checks each chunk against its recorded CRC-32C digest;
2. the same load with the digests' check turned off (the dataset's ``digests`` attribute
   hidden from the reader), every other check (missing chunks, file sizes) kept;
3. for reference, the hash functions alone over the loaded ``X``: CRC-32C (google-crc32c,
   which zarr already depends on), ``zlib.crc32``, BLAKE2b-128 (what checkpoints use),
   and xxHash-64 when the ``xxhash`` package is installed.

Best of 5 runs (3 for Zstandard), the two loads alternating, and the CRC-32C of
every chunk of the loaded ``X`` alone: the direct cost of the check. The files were just
written, so reads come from the page cache: the load times are lower bounds and the
digests' share an upper bound. Results go to
``bench/results/digests.md`` and ``bench/results/digests.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import daskgd
from daskgd.data import chunkio


def _best(fn: Callable[[], Any], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _load(path: str, n_chunks: int, digests: bool) -> None:
    if digests:
        chunkio.read_row_chunks(path, list(range(n_chunks)))
        return
    original = chunkio.recorded_digests
    chunkio.recorded_digests = lambda *args: None  # type: ignore[assignment]
    try:
        chunkio.read_row_chunks(path, list(range(n_chunks)))
    finally:
        chunkio.recorded_digests = original  # type: ignore[assignment]


def _hashes(X: np.ndarray) -> dict[str, float]:
    import google_crc32c

    ro = X.reshape(-1).view(np.uint8)
    ro.flags.writeable = False
    mv = memoryview(ro)
    out = {
        "crc32c (google-crc32c)": _best(lambda: google_crc32c.value(ro)),
        "zlib.crc32": _best(lambda: zlib.crc32(mv)),
        "blake2b-128": _best(lambda: hashlib.blake2b(mv, digest_size=16).digest()),
    }
    try:
        import xxhash

        out["xxh64"] = _best(lambda: xxhash.xxh64(mv).intdigest())
    except ImportError:
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 rows instead of 2,000,000")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "digests"))
    args = parser.parse_args(argv)
    n, d, rows = (200_000 if args.quick else 2_000_000), 100, 50_000
    n_chunks = -(-n // rows)
    tmp = tempfile.mkdtemp(prefix="daskgd-bench-digests-")
    results: dict[str, Any] = {"n": n, "d": d, "chunk_rows": rows, "stores": {}}
    try:
        import dask

        with dask.config.set(scheduler="threads", num_workers=2):
            for name, compressor in (("none", None), ("zstd-1", daskgd.data.DEFAULT_COMPRESSOR)):
                path = f"{tmp}/{name}.zarr"
                daskgd.make_regression(path, n, d, chunk_rows=rows, random_state=0,
                                       compressor=compressor)  # fmt: skip
                # alternate the two, so that both see the same load of a shared machine
                with_digests = without = float("inf")
                for _ in range(5 if compressor is None else 3):
                    with_digests = min(
                        with_digests, _best(lambda p=path: _load(p, n_chunks, True), 1)
                    )
                    without = min(without, _best(lambda p=path: _load(p, n_chunks, False), 1))
                X, _, _ = chunkio.read_row_chunks(path, list(range(n_chunks)))
                digest_alone = _best(
                    lambda X=X: [chunkio.chunk_digest(X[i : i + rows]) for i in range(0, n, rows)],
                    5,
                )
                del X
                results["stores"][name] = {
                    "load_with_digests_s": with_digests,
                    "load_without_digests_s": without,
                    "overhead": with_digests / without - 1.0,
                    "digests_alone_s": digest_alone,
                }
                shutil.rmtree(path)
        X = np.random.default_rng(0).standard_normal((n, d))
        results["hash_seconds_over_X"] = _hashes(X)
        results["bytes_X"] = int(X.nbytes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["machine"] = f"{platform.machine()}, Python {platform.python_version()}"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    gb = (n * d * 8 + n * 8) / 1e9
    lines = [
        "# Per-chunk digests: cost on the load path",
        "",
        f"{n:,} x {d} float64 (+ y): {gb:.2f} GB; row-chunks of {rows:,} rows; one process, "
        f"one thread (a training task's load); {results['machine']}. Command: "
        f"`python bench/bench_digests.py{' --quick' if args.quick else ''}`. Best of 5 "
        "(Zstandard: 3), the two loads alternating; warm page cache.",
        "",
        "| store | load, digests checked (s) | load, not checked (s) | overhead | the digests "
        "alone (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results["stores"].items():
        lines.append(
            f"| Zarr {name} | {r['load_with_digests_s']:.3f} | "
            f"{r['load_without_digests_s']:.3f} | {100 * r['overhead']:+.0f}% | "
            f"{r['digests_alone_s']:.3f} |"
        )
    lines += ["", f"The hash functions alone over X ({X.nbytes / 1e9:.2f} GB):", "",
              "| function | seconds | GB/s |", "|---|---:|---:|"]  # fmt: skip
    for fn, sec in results["hash_seconds_over_X"].items():
        lines.append(f"| {fn} | {sec:.3f} | {X.nbytes / sec / 1e9:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
