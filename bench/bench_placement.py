"""Placement on a cluster with a slow worker: time per epoch for each ``placement``.

``python bench/bench_placement.py [--quick] [--epochs N] [--data DIR]``

Three worker processes (1 thread each), one of them computing its gradients at half the
speed of the others. ``_heterogeneous.Throttle`` makes each worker sleep after each kernel
call and each batch's preparation, the fast ones as long as the call took and the slow one
three times as long: so the three hardly compete for this machine's two cores (each
computes half the time at most), as three machines would not. Full-batch sync gradient
descent (12 epochs) and mini-batch sync SGD (6 epochs of 20 rounds) on 2,000,000 x 100
(``--quick``: 400,000 x 100, 8 and 4 epochs) least squares, in 48 row-chunks, for:

- ``balanced``: equal rows (what every worker gets without declarations);
- ``resources``: rows by declared capacity; here the slow worker declares ``daskgd=1`` and
  the others ``daskgd=2``, so the declaration is right: the best a static plan can do;
- ``latency``: starts balanced (nothing declared) and moves row-chunks by measured speed.

Time per epoch is the median gap between the history's epochs after the first (a move's
epoch included, as the user waits for it); ``ideal`` is the dataset's rows over the total
measured throughput of the three workers (rows per second of kernel time, from the balanced
run), the compute alone: a sync round adds its messages on top. The machine's two cores
run three workers and the scheduler: measured side by side in one run, the ratios hold,
the absolute times are this machine's.

Writes ``bench/results/placement.md`` and ``placement.json``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
from pathlib import Path

from _common import table, write_results
from _heterogeneous import Throttle, heterogeneous_cluster
from distributed import Client

import daskgd

PLACEMENTS = ("balanced", "resources", "latency")
#: Every worker sleeps after its kernel calls, the slow one three times as long: three
#: workers on two cores then hardly compete for a core (each computes half the time at
#: most), as three machines would not, and the slow one is half as fast
THROTTLE = {"slow": 4.0, "fast-1": 2.0, "fast-2": 2.0}
TARGET = 1.15  # latency's time per epoch over the ideal


def _one(client: Client, path: str, placement: str, batch_size: int | None, epochs: int):
    res = daskgd.fit(path, client=client, placement=placement, batch_size=batch_size,
                     max_epochs=epochs, tol=None, learning_rate=0.01 if batch_size else "auto",
                     random_state=0)  # fmt: skip
    times = [h["time"] for h in res.history]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
    chunks = {names[w]: len(c) for w, c in res.plan_.items()}
    ranks = res.timings_["ranks"]
    return {
        "epoch_s": statistics.median(gaps[1:] if len(gaps) > 1 else gaps),
        "mean_epoch_s": sum(gaps) / len(gaps),
        "fit_s": res.timings_["wall"],
        "chunks_at_end": chunks,
        "moves": sum(len(h.get("moves", ())) for h in res.history),
        "kernel_s": [r["kernel"] for r in ranks],
        "rows": {names[w]: c for w, c in res.plan_.items()},
        "loss": res.history[-1]["loss"],
    }


def _ideal(run: dict, ds, epochs: int) -> float:
    """Rows over the summed throughput of the ranks of a run (its own plan's rows)."""
    rows = [sum(ds.chunks[i] for i in c) for c in run["rows"].values()]
    speed = sum(r * epochs / k for r, k in zip(rows, run["kernel_s"], strict=True) if k > 0)
    return ds.n_samples / speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--data", default=None, help="folder for the Zarr dataset")
    args = parser.parse_args()
    n, d = (400_000, 100) if args.quick else (2_000_000, 100)
    epochs = args.epochs or (8 if args.quick else 12)
    # a mini-batch epoch is 20 rounds and a permuted copy of the rows: fewer of them
    mini_epochs = max(3, epochs // 2)
    root = Path(args.data or tempfile.mkdtemp(prefix="daskgd-bench-placement-"))
    path = str(root / f"placement-{n}.zarr")
    declared = {"slow": {"daskgd": 1}, "fast-1": {"daskgd": 2}, "fast-2": {"daskgd": 2}}
    modes = {"full batch": None, "mini-batch": n // 3 // 20}  # 20 batches a rank an epoch
    results: dict[str, dict] = {mode: {} for mode in modes}
    # resources on workers that declare their capacity; balanced and latency on workers
    # that declare nothing (latency would start from a declaration)
    for placements, resources in ((("balanced", "latency"), False), (("resources",), True)):
        workers = {w: {"resources": r} if resources else {} for w, r in declared.items()}
        with heterogeneous_cluster(workers) as cluster, Client(cluster) as client:
            client.wait_for_workers(3)
            if not Path(path).exists():
                daskgd.make_regression(path, n, d, noise=1.0, chunk_rows=-(-n // 48),
                                       random_state=0, client=client, compressor=None)  # fmt: skip
            ds = daskgd.open_zarr(path)
            client.register_plugin(Throttle(THROTTLE))
            daskgd.fit(path, client=client, max_epochs=1, tol=None)  # imports, page cache
            for mode, batch in modes.items():
                for placement in placements:
                    run = _one(client, path, placement, batch, mini_epochs if batch else epochs)
                    results[mode][placement] = run
                    print(mode, placement, run, flush=True)
    for mode, batch in modes.items():
        done = mini_epochs if batch else epochs
        results[mode]["ideal"] = {"epoch_s": _ideal(results[mode]["balanced"], ds, done)}
    md = ["# Placement with a slow worker: time per epoch\n\n{header}", __doc__.split("\n\n", 2)[2]]
    rows = []
    for mode, runs in results.items():
        ideal = runs["ideal"]["epoch_s"]
        for placement in (*PLACEMENTS, "ideal"):
            r = runs[placement]
            mean = r.get("mean_epoch_s")
            rows.append([
                mode, placement, f"{r['epoch_s']:.3f}", f"{r['epoch_s'] / ideal:.2f}",
                "" if mean is None else f"{mean:.3f}", str(r.get("moves", "")),
                ", ".join(f"{k} {v}" for k, v in sorted(r.get("chunks_at_end", {}).items())),
            ])  # fmt: skip
    header = ["mode", "placement", "s per epoch (median)", "vs ideal",
              "s per epoch (mean, the first and the moves' included)", "chunks moved",
              "chunks at the end"]  # fmt: skip
    md.append("\n## Summary\n\n" + table(rows, header))
    lat = {m: r["latency"]["epoch_s"] / r["ideal"]["epoch_s"] for m, r in results.items()}
    bal = {m: r["balanced"]["epoch_s"] / r["ideal"]["epoch_s"] for m, r in results.items()}
    md.append(
        "\nTarget: latency placement within "
        f"{TARGET}x of the ideal (balanced: about 1.5x). Measured: "
        + "; ".join(
            f"{m}: latency {lat[m]:.2f}x, balanced {bal[m]:.2f}x "
            f"({'met' if lat[m] <= TARGET else 'missed'})"
            for m in results
        )
        + ".\n"
    )
    sizes = {"n": n, "d": d, "epochs": epochs, "mini_batch_epochs": mini_epochs}
    write_results("placement", {**sizes, "results": results},
                  "".join(md))  # fmt: skip


if __name__ == "__main__":
    main()
