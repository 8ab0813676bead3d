"""Benchmark of the data layer: generating a dataset to Zarr and loading it into worker memory.

Run ``python bench/bench_data.py [--quick]``. On a 2-worker LocalCluster (1 thread each) it

1. generates ``n x 100`` float64 regression data with :func:`daskgd.make_regression`,
   compressed (Zstandard level 1) and uncompressed;
2. loads each store into the workers' memory (``client.persist`` of ``X`` and ``y``);
3. for reference, saves the same bytes to a ``.npy`` file and reads it back with
   ``numpy.load`` in this process.

Rates are bytes of ``X`` and ``y`` over wall time. The files were just written, so reads
are mostly served from the page cache: these are upper bounds for a cold disk. Results go
to ``bench/results/data.md`` and ``bench/results/data.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from distributed import Client, LocalCluster, wait

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import daskgd


def _du(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _read_direct(path: str, chunks: list[int]) -> int:
    """What a training task does now: every chunk straight into one buffer."""
    from daskgd.data.chunkio import read_row_chunks

    X, y, _ = read_row_chunks(path, chunks)
    return X.nbytes + y.nbytes


def _read_zarr_concat(path: str, chunks: list[int]) -> int:
    """What it did before: zarr chunk by chunk, then one concatenation."""
    import zarr

    g = zarr.open_group(path, mode="r")
    rows = g["X"].chunks[0]
    parts = [[np.ascontiguousarray(g[k][i * rows : (i + 1) * rows]) for i in chunks] for k in "Xy"]
    X, y = np.concatenate(parts[0]), np.concatenate(parts[1])
    return X.nbytes + y.nbytes


def _task_load(client: Client, path: str, n_chunks: int, reader) -> float:
    """Seconds for each of the 2 workers to read its contiguous half of the chunks."""
    workers = sorted(client.scheduler_info()["workers"])
    half = -(-n_chunks // 2)
    parts = [list(range(n_chunks))[:half], list(range(n_chunks))[half:]]
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        futs = [
            client.submit(reader, path, part, workers=[w], pure=False)
            for w, part in zip(workers, parts, strict=True)
        ]
        client.gather(futs)
        best = min(best, time.perf_counter() - t0)
        del futs
    return best


def _write_foreign(path: str, n: int, d: int, rows: int) -> None:
    """A regression problem written by plain zarr (defaults: Zstandard), not by daskgd."""
    import zarr

    rng = np.random.default_rng(0)
    coef = rng.standard_normal(d)
    g = zarr.open_group(path, mode="w", zarr_format=3)
    X = g.create_array("X", shape=(n, d), chunks=(rows, d), dtype="f8")
    y = g.create_array("y", shape=(n,), chunks=(rows,), dtype="f8")
    for start in range(0, n, rows):
        block = rng.standard_normal((min(rows, n - start), d))
        X[start : start + len(block)] = block
        y[start : start + len(block)] = block @ coef + 0.1 * rng.standard_normal(len(block))


def _cpu_seconds() -> float:
    import resource

    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _cluster_cpu(client: Client) -> float:
    """CPU seconds used so far by this process and every worker: steady on a busy machine."""
    return _cpu_seconds() + sum(client.run(_cpu_seconds).values())


def _open_case(client: Client, tmp: str, n: int, repeat: int = 3) -> list[dict]:
    """Open with validate=True, and a whole L-BFGS fit, on a foreign and a daskgd group."""
    d, rows = 100, 100_000
    foreign = os.path.join(tmp, "foreign.zarr")
    _write_foreign(foreign, n, d, rows)
    ours = os.path.join(tmp, "daskgd.zarr")
    src = daskgd.open_zarr(foreign, validate=False)
    daskgd.write_zarr(ours, src.X, src.y, client=client)
    out = []
    for label, path in (("foreign group (plain zarr)", foreign), ("daskgd group", ours)):
        t_open, t_fit, t_fit_open, c_open, c_fit = [], [], [], [], []
        for _ in range(repeat):
            c0, t0 = _cluster_cpu(client), time.perf_counter()
            daskgd.open_zarr(path, validate=True, client=client)
            t_open.append(time.perf_counter() - t0)
            c_open.append(_cluster_cpu(client) - c0)
        for _ in range(repeat):
            c0, t0 = _cluster_cpu(client), time.perf_counter()
            r = daskgd.fit(path, optimizer="lbfgs", client=client)
            t_fit.append(time.perf_counter() - t0)
            c_fit.append(_cluster_cpu(client) - c0)
            t_fit_open.append(r.timings_.get("open", float("nan")))
        out.append(
            {
                "what": label,
                "open_validate_s": min(t_open),
                "fit_s": min(t_fit),
                "fit_open_s": min(t_fit_open),
                "open_validate_cpu_s": min(c_open),
                "fit_cpu_s": min(c_fit),
            }
        )
        print(out[-1], flush=True)
    return out


_OPEN_BEGIN = "<!-- open-validate: begin -->"
_OPEN_END = "<!-- open-validate: end -->"


def _open_section(n: int, rows: list[dict], before: list[dict] | None) -> str:
    lines = [
        _OPEN_BEGIN,
        "",
        "## Open + validate, and a whole fit",
        "",
        f"{n:,} x 100 float64 (+ y), row-chunks of 100,000 rows, Zstandard; "
        "LocalCluster, 2 worker processes x 1 thread. `open_zarr(path, validate=True)` "
        "and `daskgd.fit(path, optimizer='lbfgs')` (its `open` timing: opening and "
        "validating), best of 3; CPU: seconds of CPU used by the driver and both "
        "workers together (steadier than wall time on a shared machine). The foreign "
        "group is written by plain zarr; the daskgd group by `write_zarr`, which records "
        "its check (attribute `checked`, trusted while the group is unchanged).",
        "",
        "| group | open_zarr(validate=True) (s) | CPU (s) | fit total (s) | CPU (s) "
        "| of which open (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for tag, rs in (("before", before or []), ("now", rows)):
        for r in rs:
            lines.append(
                f"| {r['what']}, {tag} | {r['open_validate_s']:.2f} "
                f"| {r['open_validate_cpu_s']:.2f} | {r['fit_s']:.2f} | {r['fit_cpu_s']:.2f} "
                f"| {r['fit_open_s']:.2f} |"
            )
    lines += [
        "",
        "A daskgd group costs no pass at open: its record stands for the scan. A foreign "
        "group is scanned once, one task per row-chunk checking X and y together, and "
        "never for class labels in a regression; decoding its chunks is most of the "
        "scan's cost (Zstandard chunk files are now decompressed by numcodecs straight "
        "into place, without zarr's intermediate copy, in the scan and in the training "
        "tasks' load alike). The training tasks decode the chunks again when they load: "
        "checking the values in that load instead (one decode) would need the driver and "
        "the training task to carry the check, and is not done. Wall times on a shared "
        "2-core machine vary by tens of percent; the CPU seconds much less.",
        "",
        "Command: `python bench/bench_data.py --open-only --n-samples 1000000` "
        "(`--before FILE`: the JSON rows of the same command run on the previous code; "
        "`before` here: commit 4753afe, rows in `bench/results/data_open_before.json`).",
        "",
        _OPEN_END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 rows instead of 2,000,000")
    parser.add_argument("--n-samples", type=int, default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument(
        "--open-only",
        action="store_true",
        help="only the open + validate case (foreign group, daskgd group with its record)",
    )
    parser.add_argument("--before", default=None, help="JSON rows of --open-only on older code")
    args = parser.parse_args(argv)
    if args.open_only:
        return _main_open(args)
    n = args.n_samples or (200_000 if args.quick else 2_000_000)
    d = 100
    chunk_rows = 50_000
    nbytes = n * d * 8 + n * 8
    gb = nbytes / 1e9
    tmp = tempfile.mkdtemp(prefix="daskgd-bench-")
    rows = []
    try:
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            Client(cluster) as client,
        ):
            for label, comp in (("zstd-1", daskgd.data.DEFAULT_COMPRESSOR), ("none", None)):
                path = os.path.join(tmp, f"data-{label}.zarr")
                t0 = time.perf_counter()
                ds = daskgd.make_regression(
                    path,
                    n,
                    d,
                    chunk_rows=chunk_rows,
                    noise=0.1,
                    random_state=0,
                    compressor=comp,
                    client=client,
                )
                t_gen = time.perf_counter() - t0
                ds = daskgd.open_zarr(path, validate=False)
                t0 = time.perf_counter()
                X, y = client.persist([ds.X, ds.y])
                wait([X, y])
                t_load = time.perf_counter() - t0
                del X, y
                t0 = time.perf_counter()
                daskgd.open_zarr(path, validate="full", client=client)  # a scan, not the record
                t_val = time.perf_counter() - t0
                n_chunks = -(-n // chunk_rows)
                t_task = _task_load(client, path, n_chunks, _read_direct)
                t_concat = _task_load(client, path, n_chunks, _read_zarr_concat)
                rows.append(
                    {
                        "what": f"Zarr {label}",
                        "generate_s": t_gen,
                        "generate_GBps": gb / t_gen,
                        "load_s": t_load,
                        "load_GBps": gb / t_load,
                        "validate_s": t_val,
                        "validate_GBps": gb / t_val,
                        "task_load_s": t_task,
                        "task_load_GBps": gb / t_task,
                        "zarr_concat_load_s": t_concat,
                        "size_on_disk_GB": _du(path) / 1e9,
                    }
                )
                print(rows[-1], flush=True)
            # numpy reference: the same bytes through one process, from a .npy file.
            ds = daskgd.open_zarr(path, validate=False)
            X = ds.X.compute(scheduler="threads")
            y = ds.y.compute(scheduler="threads")
            npy = os.path.join(tmp, "X.npy")
            t0 = time.perf_counter()
            np.save(npy, X)
            np.save(npy[:-4] + "-y.npy", y)
            t_save = time.perf_counter() - t0
            del X, y
            t0 = time.perf_counter()
            X = np.load(npy)
            y = np.load(npy[:-4] + "-y.npy")
            t_npload = time.perf_counter() - t0
            del X, y
            rows.append(
                {
                    "what": "numpy .npy (one process)",
                    "generate_s": t_save,
                    "generate_GBps": gb / t_save,
                    "load_s": t_npload,
                    "load_GBps": gb / t_npload,
                    "validate_s": None,
                    "validate_GBps": None,
                    "task_load_s": None,
                    "task_load_GBps": None,
                    "zarr_concat_load_s": None,
                    "size_on_disk_GB": (os.path.getsize(npy) + os.path.getsize(npy[:-4] + "-y.npy"))
                    / 1e9,
                }
            )
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    meta = {
        "n_samples": n,
        "n_features": d,
        "dtype": "float64",
        "chunk_rows": chunk_rows,
        "bytes": nbytes,
        "cluster": "LocalCluster, 2 worker processes x 1 thread",
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        ),
        "versions": {
            "numpy": np.__version__,
            "zarr": __import__("zarr").__version__,
            "dask": __import__("dask").__version__,
        },
        "note": "files read right after writing: page cache warm; numpy row 'generate' is np.save",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")

    def f(v: float | None, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    lines = [
        "# Data layer benchmark",
        "",
        f"{n:,} x {d} float64 (+ y): {gb:.2f} GB; row-chunks of {chunk_rows:,} rows; "
        f"{meta['cluster']}; {meta['machine']}.",
        "",
        "| store | generate (s) | generate GB/s | persist to workers (s) | persist GB/s "
        "| training-task load (s) | task load GB/s | before: zarr + concatenate (s) "
        "| validate scan (s) | validate GB/s | on disk (GB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['what']} | {r['generate_s']:.2f} | {r['generate_GBps']:.2f} "
            f"| {r['load_s']:.2f} | {r['load_GBps']:.2f} | {f(r['task_load_s'], '.2f')} "
            f"| {f(r['task_load_GBps'], '.2f')} | {f(r['zarr_concat_load_s'], '.2f')} "
            f"| {f(r['validate_s'], '.2f')} "
            f"| {f(r['validate_GBps'], '.2f')} | {r['size_on_disk_GB']:.2f} |"
        )
    lines += [
        "",
        "Generate: `make_regression` on the cluster (numpy row: `np.save` of the same arrays). "
        "Persist: `client.persist` of X and y into worker memory as dask chunks (numpy row: "
        "`np.load` in one process). Training-task load: what a training task does, each "
        "worker reading its half of the chunks into one buffer (`daskgd.data.chunkio."
        "read_row_chunks`: raw chunk files by `readinto` when uncompressed, else zarr chunk by "
        "chunk), best of 3; before: zarr chunk by chunk and `np.concatenate`, the previous "
        "path. Validate: the chunk-parallel NaN/inf scan of `open_zarr(validate='full')`. "
        "Files are read just after being written (warm page cache).",
        "",
    ]
    (out / "data.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def _main_open(args: argparse.Namespace) -> int:
    n = args.n_samples or (200_000 if args.quick else 1_000_000)
    tmp = tempfile.mkdtemp(prefix="daskgd-bench-")
    try:
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            Client(cluster) as client,
        ):
            rows = _open_case(client, tmp, n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_open.json").write_text(json.dumps(rows, indent=2) + "\n")
    before = json.loads(Path(args.before).read_text()) if args.before else None
    section = _open_section(n, rows, before)
    md = out / "data.md"
    text = md.read_text() if md.exists() else "# Data layer benchmark\n"
    if _OPEN_BEGIN in text:
        head, _, rest = text.partition(_OPEN_BEGIN)
        text = head + section + rest.partition(_OPEN_END)[2]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    md.write_text(text)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
