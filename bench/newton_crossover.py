"""Where Newton stops paying: time to the optimum of Newton and L-BFGS against the width d.

On an ill-conditioned L2 logistic problem (columns on scales 1e-1..1e1, pairs of correlated
columns), for each d: Newton's passes to ``gtol_rel`` and its time per pass (a full fit on
``--n`` rows), L-BFGS's time per pass (``--lbfgs-rounds`` rounds on the same data) and its
passes to ``gtol_rel`` (a fit on ``--lbfgs-n`` rows of the same distribution: the passes
depend on the conditioning, not on n, and a full L-BFGS run on ``--n`` rows would take
hours). Time to the optimum = passes x time per pass, both measured in this run on one
cluster, so the ratio holds on a busy machine. Writes ``newton_crossover.md`` and ``.json``
under ``--out`` (``newton_crossover_well.*`` with ``--well``: independent standard normal
columns, where L-BFGS needs a few dozen passes).

    python bench/newton_crossover.py --n 200000 --ds 50,100,200,400,800
    python bench/newton_crossover.py --n 200000 --ds 50,100,200,400,800 --well
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from distributed import Client, LocalCluster

import daskgd


def problem(n: int, d: int, seed: int = 0, well: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Ill-conditioned logistic data: scaled columns, every other one correlated with the
    one before it (``well``: independent standard normal columns)."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, d))
    if not well:
        Z[:, 1::2] = 0.9 * Z[:, 0:-1:2][:, : Z[:, 1::2].shape[1]] + 0.45 * Z[:, 1::2]
    w = rng.standard_normal(d) / np.sqrt(d)
    y = np.where(Z @ w + 0.5 * rng.standard_normal(n) > 0, 1.0, -1.0)
    return (Z if well else Z * np.logspace(-1, 1, d)), y


def per_pass(history: list[dict]) -> float:
    """Median seconds between consecutive epochs (the first, with the workers' start, left
    out)."""
    t = [h["time"] for h in history]
    return statistics.median(np.diff(t)) if len(t) > 2 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--lbfgs-n", type=int, default=10_000)
    ap.add_argument("--ds", default="50,100,200,400,800")
    ap.add_argument("--alpha", type=float, default=1e-5)
    ap.add_argument("--gtol-rel", type=float, default=1e-6)
    ap.add_argument("--lbfgs-rounds", type=int, default=8)
    ap.add_argument("--lbfgs-max", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--well", action="store_true", help="well-conditioned data instead")
    ap.add_argument("--out", default="bench/results")
    a = ap.parse_args()
    rows = []
    common = {"loss": "log_loss", "alpha": a.alpha, "tol": None, "gtol_rel": a.gtol_rel}
    with (
        LocalCluster(n_workers=a.workers, threads_per_worker=1, dashboard_address=":0") as c,
        Client(c) as client,
    ):
        for d in [int(v) for v in a.ds.split(",")]:
            X, y = problem(a.n, d, well=a.well)
            data = daskgd.as_dataset((X, y), chunk_rows=-(-a.n // (4 * a.workers)))
            t0 = time.perf_counter()
            nt = daskgd.fit(data, client=client, optimizer="newton", max_epochs=100, **common)
            newton_wall = time.perf_counter() - t0
            lb = daskgd.fit(data, client=client, optimizer="lbfgs", max_epochs=a.lbfgs_rounds,
                            **common)  # fmt: skip
            Xs, ys = problem(a.lbfgs_n, d, seed=1, well=a.well)
            small = daskgd.fit((Xs, ys), client=client, optimizer="lbfgs",
                               max_epochs=a.lbfgs_max, **common)  # fmt: skip
            row = {
                "d": d,
                "newton_passes": nt.n_iter_,
                "newton_converged": nt.converged_,
                "newton_s_per_pass": per_pass(nt.history),
                "newton_wall_s": newton_wall,
                "lbfgs_s_per_pass": per_pass(lb.history),
                "lbfgs_passes": small.n_iter_,
                "lbfgs_converged": small.converged_,
            }
            row["newton_s"] = row["newton_passes"] * row["newton_s_per_pass"]
            row["lbfgs_s"] = row["lbfgs_passes"] * row["lbfgs_s_per_pass"]
            row["ratio"] = row["newton_s"] / row["lbfgs_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)
            del X, y, data
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in vars(a).items() if k != "out"}
    name = "newton_crossover_well" if a.well else "newton_crossover"
    (out / f"{name}.json").write_text(json.dumps({"args": meta, "rows": rows}, indent=1))
    lines = [
        f"Newton vs L-BFGS, {'well' if a.well else 'ill'}-conditioned L2 logistic, "
        f"n={a.n}, alpha={a.alpha}, "
        f"gtol_rel={a.gtol_rel}, {a.workers} workers x 1 thread "
        f"(L-BFGS passes from n={a.lbfgs_n}; cap {a.lbfgs_max}).",
        "",
        "| d | Newton passes | s/pass | Newton s | L-BFGS passes | s/pass | L-BFGS s | "
        "Newton / L-BFGS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cap = "" if r["lbfgs_converged"] else " (cap)"
        lines.append(
            f"| {r['d']} | {r['newton_passes']} | {r['newton_s_per_pass']:.3f} | "
            f"{r['newton_s']:.1f} | {r['lbfgs_passes']}{cap} | {r['lbfgs_s_per_pass']:.3f} | "
            f"{r['lbfgs_s']:.1f} | {r['ratio']:.2f} |"
        )
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
