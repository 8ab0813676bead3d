"""Benchmark: a full-batch training task's load, its rows read into new arrays or mapped.

Run ``python bench/bench_load.py [--quick] [--repeats R] [--data DIR]``. It writes
``n x 100`` float64 data with :func:`daskgd.make_regression`, uncompressed, in 8 row-chunks
(1,000,000 rows: 800 MB; ``--quick`` 200,000), then times what one rank of two does with
its half (4 chunks), each run in a new process as a training task is (its memory new to
it):

* **read**: :class:`~daskgd.worker.batches.InMemoryBatches`, the rows read into one new
  array per field (what a full-batch rank did before, and what mini-batch ranks and
  compressed data still do);
* **mapped**: :func:`~daskgd.worker.chunk_batches.open_batches`, the chunk files mapped
  (:mod:`daskgd.data.mapped`);

each with its digests checked, then two passes ``X @ w`` over the rows (the kernels' speed
on them) and, mapped, the end-of-task check of every chunk (``verify``). The two kinds
alternate; medians and minima of ``--repeats`` (default 7). The files were just written,
so they come from the page cache. Results: ``bench/results/load.md`` and ``load.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import table, write_results

ROWS = {"full": 1_000_000, "quick": 200_000}
CHILD = r"""
import json, sys, time
import numpy as np
from daskgd.worker.batches import InMemoryBatches
from daskgd.worker.chunk_batches import open_batches
kind, path, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
src = ("zarr", path, [0, 1, 2, 3], None, [rows] * 4)
keep = lambda y, sw, where: y
t0 = time.perf_counter()
if kind == "read":
    b = InMemoryBatches(src, 1, 0, 0, keep)
else:
    b = open_batches(src, 1, 0, 0, keep, out_of_core=False)
load = time.perf_counter() - t0
w = np.ones(100)
passes = []
for _ in range(2):
    t0 = time.perf_counter()
    for X, *_ in b.pieces(0, 0):
        X @ w
    passes.append(time.perf_counter() - t0)
t0 = time.perf_counter()
if kind == "mapped":
    b.verify()
print(json.dumps({"type": type(b).__name__, "load": load, "pass1": passes[0],
                  "pass2": passes[1], "verify": time.perf_counter() - t0}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--data", default=None, help="folder for the dataset (kept and reused)")
    args = ap.parse_args()
    import daskgd

    n = ROWS["quick" if args.quick else "full"]
    root = Path(args.data or tempfile.mkdtemp(prefix="daskgd-bench-load-"))
    path = root / f"load-{n}.zarr"
    if not path.exists():
        daskgd.make_regression(str(path), n, 100, chunk_rows=n // 8, compressor=None,
                               random_state=0)  # fmt: skip
    runs: dict[str, list[dict]] = {"read": [], "mapped": []}
    for _ in range(args.repeats):
        for kind in runs:
            out = subprocess.run([sys.executable, "-c", CHILD, kind, str(path), str(n // 8)],
                                 check=True, capture_output=True, text=True)  # fmt: skip
            runs[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    fields = ["load", "pass1", "pass2", "verify"]
    summary = {
        kind: {f: {"median": statistics.median(r[f] for r in rs), "min": min(r[f] for r in rs)}
               for f in fields}
        for kind, rs in runs.items()
    }  # fmt: skip
    rows = [
        [kind] + [f"{s[f]['median'] * 1e3:.0f} ({s[f]['min'] * 1e3:.0f})" for f in fields]
        for kind, s in summary.items()
    ]
    ratio = summary["read"]["load"]["median"] / summary["mapped"]["load"]["median"]
    gb = n // 2 * 100 * 8 / 1e9
    md = (
        "# A full-batch rank's load: rows read into new arrays or chunk files mapped\n\n"
        "{header}"
        f"One rank's half of {n:,} x 100 float64 rows ({gb:.1f} GB, 4 uncompressed row-chunks "
        "from the page cache), each run in a new process, the kinds alternating; ms, median "
        f"(min) of {args.repeats}. `load`: the rows ready, digests checked; `pass`: `X @ w` "
        "over them; `verify`: the mapped chunks checked again, as a task does at its end.\n\n"
        + table(rows, ["rows", "load", "pass 1", "pass 2", "verify"])
        + f"\nMapped loads are **{ratio:.1f}x** faster (medians); the passes over the rows "
        "run at the same speed.\n"
    )
    write_results("load", {"n": n, "d": 100, "repeats": args.repeats, "runs": runs,
                           "summary": summary}, md)  # fmt: skip


if __name__ == "__main__":
    main()
