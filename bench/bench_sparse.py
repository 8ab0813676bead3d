"""Sparse click-log-like logistic regression: time from Zarr to a target loss, peak memory.

``python bench/bench_sparse.py [--quick | --tiny] [--budget S] [--only NAME ...] [--data DIR]``

One problem from ``daskgd.make_sparse_classification`` (float32 values, power-law column
popularity, 8 uncompressed row-chunks): 10,000,000 x 2^22, 40 non-zeros a row, alpha = 1e-6
(``--quick``: 1,000,000 rows, alpha = 1e-5; ``--tiny``, a smoke run: 20,000 x 2^16, its
results in a temporary folder): scikit-learn's ``C = 1 / (n alpha)`` is 0.1 at every size.
``--data DIR`` keeps the data and f* and reuses them. The objective is daskgd's (labels in
{-1, +1}): ``f(w, b) = 1/n sum log(1 + exp(-y_i (x_i @ w + b))) + alpha/2 ||w||^2``, the
intercept unpenalised; ``LogisticRegression`` and Vowpal Wabbit's ``--bfgs`` sum the losses
(``C``; ``--l2 n*alpha``, VW penalising its constant too: a difference far below the
target's margin); ``SGDClassifier`` and VW's online ``--l2`` take alpha.

f*: scipy's L-BFGS-B on that objective in float64, in the columns scaled by the square root
of the Hessian's diagonal at zero (the same problem; ``tests/test_bench_tools.py`` checks
it against scikit-learn), to the rounding level; ``||grad f||^2 / (2 alpha)`` bounds
``f - f*`` there. The target is ``f* (1 + 1e-3)``.

Each system is timed from the read of the Zarr data (cold: opening, reading, converting) to
the end of the first epoch, iteration or pass at or below the target, the loss evaluated
here on the full data in float64 (daskgd's full-batch history holds it exactly). Each Dask
run gets a fresh cluster (the scheduler and 2 worker processes x 1 thread, each a process),
started and warmed up (the workers' imports) outside the timing as in the other benchmarks.
Each peer run gets a fresh process (imports outside the timing); those without a callback
(LogisticRegression, VW) double ``max_iter`` (passes) within the budget until a run reaches
the target, then bisect to within 1/8: their time is the cheapest such run's. A run stops
at the budget (``--budget``: 1800 s, ``--quick`` 360 s); the best loss reached is shown.

``load s``: daskgd: opening and validating the data in the driver + the slowest worker's
read of its rows; the peers: reading the CSR matrix (VW: writing its text format, once,
counted in each run). ``best subopt``: (f - f*) / f* at the best point of any run. ``peak
RSS MB``: each process's largest resident memory, its start included (daskgd: the
scheduler's and each worker's; the peers: the timed run's). daskgd's mini-batch fits give
their parameters to a callback each epoch (``callback_params=True``) that evaluates the loss
in the driver while the workers go on, at daskgd's expense.

Full-batch fits and mini-batch fits with dense pushes (L-BFGS; AdaGrad, whose penalty
is not lazy) push all d + 1 coordinates in the data's precision (float32), so a push grows
with d. Key-value fits (sgd and ftrl on mini-batches of sparse rows) push the gradient at
the columns the batch touched (keys and values) and pull the weights at the next batch's
columns, so both grow with the batch's non-zeros, not with d. ``bytes per push``: the
pushed bytes (``FitResult.timings_["push_bytes"]``) over the pushes (sync: one a task a
round, one at the start or in flight at the stop aside; async: every push); ``bytes
pulled``: ``timings_["pull_bytes"]`` over them (key-value fits; a dense fit's reply is the
whole model, 8 (d + 1) bytes); ``rows``: one push's (L-BFGS: a worker's partition; the
mini-batch fits: ``batch_size`` rows), their non-zeros and distinct columns.

Writes ``bench/results/sparse.md`` and ``sparse.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NamedTuple

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # inherited by the Dask processes (see _common)

import _common  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from _common import peak_mb, table, use_peer_threads  # noqa: E402
from distributed import Client  # noqa: E402
from distributed.deploy.subprocess import SubprocessCluster  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

import daskgd  # noqa: E402
from daskgd.data.chunkio import read_row_chunks  # noqa: E402

REL, RATIO_TARGET = 1e-3, 0.5  # the target's relative suboptimality; the ratio
C = 0.1  # scikit-learn's C = 1 / (n alpha) at every size: alpha = 1e-6 at 10,000,000 rows
# rows, features, the time budget of a run (s)
SIZES = {"full": (10_000_000, 2**22, 1800.0), "quick": (1_000_000, 2**22, 360.0),
         "tiny": (20_000, 2**16, 20.0)}  # fmt: skip
NNZ, SEED, CHUNKS, WORKERS, BATCH = 40, 0, 8, 2, 10_000
# daskgd's configurations, one entry each: (name, daskgd.fit keyword arguments)
DASKGD: list[tuple[str, dict]] = [
    ("daskgd L-BFGS sync, n_servers=0", {"optimizer": "lbfgs", "n_servers": 0}),
    ("daskgd L-BFGS sync, n_servers=0, precondition=False",
     {"optimizer": "lbfgs", "n_servers": 0, "optimizer_options": {"precondition": False}}),
    ("daskgd L-BFGS sync, n_servers=1", {"optimizer": "lbfgs", "n_servers": 1}),
    ("daskgd L-BFGS sync, n_servers=2", {"optimizer": "lbfgs", "n_servers": 2}),
    (f"daskgd AdaGrad sync, batch_size={BATCH:,} a worker",
     {"optimizer": "adagrad", "batch_size": BATCH, "n_servers": 0, "random_state": SEED}),
    (f"daskgd SGD async key-value, batch_size={BATCH:,}",
     {"optimizer": "sgd", "mode": "async", "batch_size": BATCH, "n_servers": 0,
      "random_state": SEED}),
    (f"daskgd FTRL async key-value, batch_size={BATCH:,}",
     {"optimizer": "ftrl", "mode": "async", "batch_size": BATCH, "n_servers": 0,
      "random_state": SEED}),
]  # fmt: skip


@dataclass(frozen=True)
class Problem:
    n: int
    d: int
    alpha: float
    path: str
    nnz_per_row: int = NNZ
    seed: int = SEED


def load(path: str):
    """The stored CSR matrix (float32 values, as stored), the 0/1 labels, the seconds."""
    t0 = time.perf_counter()
    X, y, _ = read_row_chunks(path, range(daskgd.open_zarr(path).n_chunks))
    return X, y, time.perf_counter() - t0


class Oracle:
    """The objective on the whole data in float64, in this process, and f*."""

    def __init__(self, p: Problem):
        X, self.y01, _ = load(p.path)
        self.X, self.y = X.astype(np.float64), np.where(self.y01 > 0, 1.0, -1.0)
        self.alpha, self.n, self.f_star, self.facts = p.alpha, p.n, float("nan"), {}

    def objective(self, coef, b: float) -> float:
        w = np.asarray(coef, dtype=np.float64).ravel()
        z = self.X @ w + float(b)
        return float(np.mean(np.logaddexp(0.0, -self.y * z)) + 0.5 * self.alpha * (w @ w))

    def value_and_gradient(self, w: np.ndarray, b: float) -> tuple[float, np.ndarray]:
        """The objective and its gradient (the intercept's last)."""
        yz = self.y * (self.X @ w + b)
        f = float(np.mean(np.logaddexp(0.0, -yz)) + 0.5 * self.alpha * (w @ w))
        s = -self.y * np.exp(-np.logaddexp(0.0, yz))  # the loss's derivative in the margin
        return f, np.concatenate([self.X.T @ s / self.n + self.alpha * w, [s.mean()]])

    def solve(self) -> None:
        """f* by L-BFGS in columns scaled by the root of the Hessian's diagonal at zero (column
        frequencies span orders of magnitude: unscaled, it needs tenfold the iterations)."""
        t0, X, n = time.perf_counter(), self.X, self.n
        D = np.sqrt(np.append(0.25 * np.asarray(X.multiply(X).sum(axis=0)).ravel() / n
                              + self.alpha, 0.25))  # fmt: skip

        def f_and_grad(v: np.ndarray) -> tuple[float, np.ndarray]:
            f, g = self.value_and_gradient(v[:-1] / D[:-1], v[-1] / D[-1])
            return f, g / D

        res = minimize(f_and_grad, np.zeros(self.X.shape[1] + 1), jac=True, method="L-BFGS-B",
                       options={"gtol": 1e-14, "ftol": 0.0, "maxiter": 20_000})  # fmt: skip
        w, b = res.x[:-1] / D[:-1], res.x[-1] / D[-1]
        self.f_star, g = self.value_and_gradient(w, b)
        self.facts = {"f_star": self.f_star, "grad_norm": float(np.linalg.norm(g)),
                      "gap_bound": float(g @ g) / (2 * self.alpha), "iterations": int(res.nit),
                      "seconds": time.perf_counter() - t0}  # fmt: skip


@contextlib.contextmanager
def cluster():
    """(client, seconds to start): the scheduler and each worker in a process of its own."""
    t0 = time.perf_counter()
    with (
        SubprocessCluster(n_workers=WORKERS, threads_per_worker=1, dashboard_address=None,
                          silence_logs=logging.ERROR) as c,
        Client(c) as client,
    ):  # fmt: skip
        client.wait_for_workers(WORKERS)
        yield client, time.perf_counter() - t0


def run_daskgd(name: str, kw: dict, p: Problem, oracle: Oracle, target: float, budget: float):
    """One fit, stopped by its callback at the first epoch at or below the target."""
    given_params = kw["optimizer"] != "lbfgs"  # a mini-batch history's loss is an estimate
    points: list[dict] = []
    with cluster() as (client, start_s):
        client.run(lambda: bool(importlib.import_module("daskgd.worker.task")))  # imports
        t0 = time.perf_counter()

        def callback(h: dict):
            t = time.perf_counter() - t0
            f = oracle.objective(h["coef"], h["intercept"]) if given_params else h["loss"]
            points.append({"epoch": h["epoch"], "seconds": t, "loss": f})
            return False if f <= target else None

        res = daskgd.fit(p.path, loss="log_loss", alpha=p.alpha, client=client, tol=None,
                         max_epochs=100_000, max_time=budget, callback=callback,
                         callback_params=given_params, **kw)  # fmt: skip
        sched, workers = client.run_on_scheduler(peak_mb), client.run(peak_mb)
    print(f"{name}: {res.reason}, {points[-1] if points else '-'}", flush=True)
    t = res.timings_
    return {
        "system": name, "kind": "daskgd", "settings": kw, "points": points,
        "cluster_start_s": start_s, "open_s": t["open"], "reason": res.reason,
        "load_s": max([r["load"] for r in t["ranks"]], default=float("nan")),
        "final_loss": oracle.objective(res.coef_, np.ravel(res.intercept_)[0]),
        "epochs": res.n_iter_, "learning_rate": res.learning_rate_,
        "peak_MB": {"scheduler": sched, "workers": sorted(workers.values())},
        # sync: a round is one push a task; async: every push is an update
        "pushes": res.n_updates_ * (len(t["push_bytes"]) if kw.get("mode", "sync") == "sync"
                                    else 1),
        "push_bytes": sum(t["push_bytes"]), "pull_bytes": sum(t.get("pull_bytes") or [0]),
    }  # fmt: skip


def sk_logistic(solver: str, max_iter: int, p: Problem, emit: Callable) -> None:
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    X, y, loaded = load(p.path)
    m = LogisticRegression(C=1.0 / (p.n * p.alpha), solver=solver, tol=1e-12, max_iter=max_iter)
    m.fit(X, y)
    emit(time.perf_counter() - t0, m.coef_, m.intercept_[0], load_s=loaded,
         iterations=int(m.n_iter_[0]))  # fmt: skip


def sk_sgd(average: bool, _: int, p: Problem, emit: Callable) -> None:
    """Epochs of ``partial_fit`` until stopped; the clock paused while handing them over."""
    from sklearn.linear_model import SGDClassifier

    t0 = time.perf_counter()
    X, y, loaded = load(p.path)
    m = SGDClassifier(loss="log_loss", alpha=p.alpha, average=average, random_state=SEED)
    for epoch in range(1, 1_000_000):
        m.partial_fit(X, y, classes=np.array([0, 1]))
        t = time.perf_counter()
        emit(t - t0, m.coef_, m.intercept_[0], load_s=loaded, epochs=epoch)
        t0 += time.perf_counter() - t


def vw_bits(d: int) -> tuple[int, int]:
    """Hash bits that keep columns ``0..d-1`` as they are, and the constant's index: VW puts
    the intercept at 11650396 modulo 2^bits, which must fall outside the columns."""
    if d > 11650396:
        raise ValueError(f"{d:,} columns: one would share VW's weight with its constant")
    bits = next(b for b in range(max(d - 1, 1).bit_length(), 25) if 11650396 % 2**b >= d)
    return bits, 11650396 % 2**bits


@functools.cache
def vw_convert(p: Problem) -> float:
    """Zarr to VW's text format (``label | col[:value] ...``), row-chunk by row-chunk."""
    t0 = time.perf_counter()
    with open(p.path + ".vw", "w") as f:
        for i in range(daskgd.open_zarr(p.path).n_chunks):
            X, y, _ = daskgd.load_chunk(p.path, i)
            toks = X.indices.astype(str)
            if not np.all(X.data == 1.0):  # VW's default value is 1
                toks = np.char.add(np.char.add(toks, ":"), X.data.astype(str))
            rows = zip(np.where(y > 0, "1 |", "-1 |"), np.split(toks, X.indptr[1:-1]), strict=True)
            f.writelines(f"{label} {' '.join(cols)}\n" for label, cols in rows)
    return time.perf_counter() - t0


def vw_learn(how: tuple[float, str], passes: int, p: Problem, emit: Callable) -> None:
    from vowpalwabbit import pyvw

    convert_s, opts = how
    data, (bits, const) = p.path + ".vw", vw_bits(p.d)
    l2 = p.n * p.alpha if "--bfgs" in opts else p.alpha
    t0 = time.perf_counter()
    # --predict_only_model: get_weight gives the model's weights (else L2's decay is apart)
    vw = pyvw.Workspace(f"-d {data} --cache_file {data}.cache -k --passes {passes} {opts} "
                        f"--holdout_off --loss_function logistic --l2 {l2} -b {bits} "
                        "--predict_only_model --quiet")  # fmt: skip
    vw.run_parser()
    learn = time.perf_counter() - t0
    w = np.fromiter((vw.get_weight(j) for j in range(p.d)), dtype=np.float64, count=p.d)
    b = vw.get_weight(const)
    with open(data) as f:  # VW's own margins against these weights, on the first rows
        rows = [(r, [int(t.split(":")[0]) for t in r.split("|")[1].split()]) for r in f][:100]
    check = max(abs(vw.predict(r) - w[c].sum() - b) for r, c in rows)
    vw.finish()
    emit(convert_s + learn, w, b, load_s=convert_s, passes=passes, margin_check=float(check))


class Peer(NamedTuple):
    name: str
    fn: Callable  # fn(arg, setting, problem, emit)
    arg: object
    first: int | None  # the doubling's first max_iter (passes); None: one run, by epochs


PEERS = [
    Peer("scikit-learn LogisticRegression (lbfgs)", sk_logistic, "lbfgs", 8),
    Peer("scikit-learn LogisticRegression (saga)", sk_logistic, "saga", 1),
    Peer("scikit-learn SGDClassifier", sk_sgd, False, None),
    Peer("scikit-learn SGDClassifier (average=True)", sk_sgd, True, None),
    Peer("Vowpal Wabbit (online, --l2 alpha)", vw_learn, "", 1),
    Peer("Vowpal Wabbit (--bfgs --termination 0, --l2 n*alpha)", vw_learn,
         "--bfgs --termination 0", 8),
]  # fmt: skip


def _child(i: int, arg: object, setting: int, p: Problem, conn) -> None:
    warnings.simplefilter("ignore")  # ConvergenceWarning at a deliberately small max_iter
    _threads = use_peer_threads(2)

    def emit(seconds, coef, b, **info):
        conn.send((seconds, np.ravel(coef), float(np.ravel(b)[0]), peak_mb(), info))

    PEERS[i].fn(arg, setting, p, emit)
    conn.send(None)


def run_child(i, arg, setting, p, oracle, target, seconds) -> tuple[list, float, str]:
    """Peer ``i``'s run in a fresh process: its points (the loss evaluated here), peak memory
    (MB) and end: "reached", "not reached", "budget" (past ``seconds``) or "failed"."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(i, arg, setting, p, child), daemon=True)
    proc.start()
    child.close()
    watch, points, peak, end = psutil.Process(proc.pid), [], 0.0, None
    deadline = time.perf_counter() + seconds + 60
    while end is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, watch.memory_info().rss / 2**20)
        if time.perf_counter() > deadline:
            end = "budget"
        elif parent.poll(0.2):
            try:
                msg = parent.recv()
            except EOFError:  # the process died
                msg = "failed"
            if msg is None or isinstance(msg, str):
                end = msg or "not reached"
                continue
            t, w, b, rss, info = msg
            peak = max(peak, rss)
            points.append({"seconds": t, "loss": oracle.objective(w, b), **info})
            end = "reached" if points[-1]["loss"] <= target else "budget" if t > seconds else None
    proc.kill()
    proc.join()
    return points, peak, end


def run_peer(i: int, p: Problem, oracle: Oracle, target: float, budget: float) -> dict:
    """The peer's runs: one by epochs, or the doubling and bisection of its setting."""
    peer = PEERS[i]
    out: dict = {"system": peer.name, "kind": "peer", "runs": []}
    needs = "vowpalwabbit" if peer.fn is vw_learn else "sklearn"
    if importlib.util.find_spec(needs) is None:
        return {**out, "not_run": f"{needs} is not installed"}
    arg = (vw_convert(p), peer.arg) if peer.fn is vw_learn else peer.arg  # converted once
    lo, hi, k, prev = 0, None, peer.first or 0, np.inf
    while True:
        points, peak, end = run_child(i, arg, k, p, oracle, target, budget)
        out["runs"].append({"setting": k, "points": points, "peak_MB": peak, "end": end})
        print(f"  {peer.name} [{k}]: {end}, {points[-1] if points else '-'}", flush=True)
        if peer.first is None or end in ("budget", "failed"):
            break
        best = min((q["loss"] for q in points), default=np.inf)
        if hi is None and best >= prev:  # more iterations (passes) made it no better
            break
        lo, hi, prev = (lo, k, prev) if best <= target else (k, hi, best)
        if hi is not None and hi - lo <= max(1, hi // 8):
            break
        # doubled, but no further than the budget allows at this run's pace
        k = min(2 * k, int(k * budget / points[-1]["seconds"])) if hi is None else (lo + hi) // 2
        if k <= lo:
            break
    return out


def summarize(r: dict, f_star: float, target: float) -> tuple[dict, list[str]]:
    """Time to the target (None: not reached), the best loss; and the table's row."""
    runs = r.get("runs") or [r]
    points = [(q, run) for run in runs for q in run.get("points", [])]
    hits = [(q, run) for q, run in points if q["loss"] <= target]
    q, run = min(hits, key=lambda h: h[0]["seconds"]) if hits else ({}, runs[-1] if runs else {})
    best = min([x["loss"] for x, _ in points] + [r.get("final_loss", np.inf)])
    sub, t, m = (best - f_star) / abs(f_star), q.get("seconds"), run.get("peak_MB")
    at = next((f"{k} {q[k]}" for k in ("epoch", "iterations", "epochs", "passes") if k in q), "—")
    if r["kind"] == "daskgd":
        ws = ", ".join(f"{v:,.0f}" for v in m["workers"])
        load, mem = f"{r['open_s']:.1f} + {r['load_s']:.1f}", f"{m['scheduler']:,.0f}; {ws}"
        note = f"cluster start {r['cluster_start_s']:.1f} s (apart); stop: {r['reason']}"
    else:
        last = q or next((x["points"][-1] for x in runs[::-1] if x["points"]), {})
        load, mem = f"{last.get('load_s', np.nan):.1f}", f"{m:,.0f}" if m else "—"
        note = ", ".join(f"{x['setting'] or 'by epochs'}: {x['end']}" for x in runs)
    row = [r["system"], "—" if t is None else f"{t:.1f}", load, at,
           f"{sub:.1e}" if np.isfinite(sub) else "—", mem, note]  # fmt: skip
    return {"time_to_target_s": t, "at_target": q, "peak_MB": m, "best_loss": best,
            "best_subopt": sub}, row  # fmt: skip


def report(p: Problem, oracle: Oracle, results: list[dict], target: float, args, facts) -> None:
    rows, summary = [], {}
    for r in results:
        if "not_run" in r:
            rows.append([r["system"], "—", "—", "—", "—", "—", r["not_run"]])
            continue
        summary[r["system"]], row = summarize(r, oracle.f_star, target)
        rows.append(row)
    reached = [(s["time_to_target_s"], k) for k, s in summary.items() if s["time_to_target_s"]]
    ours = min((x for x in reached if x[1].startswith("daskgd")), default=None)
    peer = min((x for x in reached if not x[1].startswith("daskgd")), default=None)
    ratio = ours[0] / peer[0] if ours and peer else None
    at_least = args.budget / peer[0] if peer and not ours else None  # none within the budget
    pushes = []
    for r in (r for r in results if r["kind"] == "daskgd"):
        b = facts["batch" if "batch_size" in r["settings"] else "partition"]
        per = r["push_bytes"] / max(r["pushes"], 1)
        pull = r.get("pull_bytes", 0) / max(r["pushes"], 1)
        pushes.append([r["system"], f"{r['pushes']:,}", f"{per:,.0f}",
                       f"{pull:,.0f}" if pull else "—", f"{4 * (p.d + 1):,}",
                       f"{b['rows']:,}", f"{b['nnz']:,}", f"{b['columns']:,}",
                       f"{per / b['nnz']:.2f}"])  # fmt: skip
    m, o, doc = _common.machine(), oracle.facts, __doc__.split("\n\n")
    versions = {"daskgd": daskgd.__version__, **facts["versions"]}
    mem_gb = psutil.virtual_memory().total / 2**30
    fmt = lambda x: f"none within {args.budget:g} s" if x is None else f"{x[1]}: {x[0]:.1f} s"  # noqa: E731
    shown = f"> {at_least:.1f}" if at_least else "—" if ratio is None else f"{ratio:.2f}"
    met = "—" if shown == "—" else "yes" if (ratio or np.inf) <= RATIO_TARGET else "no"
    first = table([[fmt(ours), fmt(peer), shown, met]],
                  ["daskgd's fastest", "fastest peer", "ratio", "target met"])  # fmt: skip
    every = table(rows, ["system", "s to target", "load s", "at target", "best subopt",
                         "peak RSS MB (daskgd: scheduler; workers)", "notes"])  # fmt: skip
    pushed = table(pushes, ["configuration", "pushes", "bytes per push", "bytes pulled",
                            "4 (d + 1)", "rows", "rows' nnz", "rows' columns",
                            "bytes / nnz"])  # fmt: skip
    md = (
        f"# Sparse logistic regression: time from Zarr to f* (1 + {REL:g}), peak memory\n\n"
        "{header}"
        f"Machine: {m['cores']} cores, {mem_gb:.0f} GiB of memory; the load average (1 min) "
        f"was {facts['load_before']:.1f} before and {facts['load_after']:.1f} after (a shared "
        "machine). Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".\n\n"
        f"Problem: {p.n:,} x {p.d:,} (2^{p.d.bit_length() - 1}), {NNZ} non-zeros a row "
        f"({oracle.X.nnz:,}; {facts['columns_used']:,} columns used), alpha = {p.alpha:g} "
        f"(scikit-learn's C = {C:g}). f* = {oracle.f_star!r} ({o['iterations']} iterations, "
        f"{o['seconds']:.0f} s; ||grad f|| = {o['grad_norm']:.1e}, so f - f* <= "
        f"{o['gap_bound']:.1e}); "
        f"target {target!r}.\n\n" + "\n\n".join(doc[2:5]) + "\n\n## Summary\n\n"
        f"Target: daskgd's fastest at most {RATIO_TARGET}x the fastest peer's time to the "
        f"target.\n\n{first}\n## Every system\n\n{doc[5]}\n\n{every}\n"
        f"## What a push carries\n\n{doc[6]}\n\n{pushed}"
    )
    payload = {
        "quick": args.quick, "tiny": args.tiny, "problem": asdict(p), "target": target,
        "optimum": o, "budget_s": args.budget, "versions": versions, "memory_GiB": mem_gb,
        "facts": {k: v for k, v in facts.items() if k != "versions"}, "summary": summary,
        "ratio": ratio, "ratio_at_least": at_least, "results": results,
    }  # fmt: skip
    _common.write_results("sparse", payload, md)


def prepare(p: Problem, root: Path) -> Oracle:
    """Write the data and compute f* (both reused from ``--data`` when made for ``p``)."""
    saved = root / "optimum.json"
    known = json.loads(saved.read_text()) if saved.exists() else {}
    if known.get("problem") != asdict(p):
        with cluster() as (client, _):
            daskgd.make_sparse_classification(p.path, p.n, p.d, p.nnz_per_row, random_state=p.seed,
                                              chunk_rows=-(-p.n // CHUNKS), client=client,
                                              compressor=None, overwrite=True)  # fmt: skip
    oracle = Oracle(p)
    if known.get("problem") == asdict(p):
        oracle.facts, oracle.f_star = known["optimum"], known["optimum"]["f_star"]
    else:
        oracle.solve()
        saved.write_text(json.dumps({"problem": asdict(p), "optimum": oracle.facts}))
    return oracle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--tiny", action="store_true", help="a smoke run of the whole script")
    ap.add_argument("--budget", type=float, default=None, help="seconds a run may take")
    ap.add_argument("--only", nargs="*", default=None, help="systems whose names hold one")
    ap.add_argument("--data", default=None, help="folder for the data (kept, and reused)")
    args = ap.parse_args()
    n, d, budget = SIZES["tiny" if args.tiny else "quick" if args.quick else "full"]
    args.budget, alpha = args.budget or budget, 1.0 / (C * n)
    if args.tiny:  # never over the results
        _common.RESULTS = Path(tempfile.mkdtemp(prefix="daskgd-bench-sparse-"))
    root = Path(args.data or tempfile.mkdtemp(prefix="daskgd-bench-sparse-"))
    root.mkdir(parents=True, exist_ok=True)
    p = Problem(n, d, alpha, str(root / "sparse.zarr"))
    facts: dict = {"load_before": os.getloadavg()[0], "versions": {}}
    for name in ("scikit-learn", "scipy", "distributed", "zarr", "vowpalwabbit"):
        with contextlib.suppress(PackageNotFoundError):
            facts["versions"][name] = version(name)
    oracle = prepare(p, root)
    target = oracle.f_star * (1 + REL)
    facts["columns_used"] = int(np.unique(oracle.X.indices).size)
    for key, rows in (("batch", BATCH), ("partition", -(-n // WORKERS))):  # one push's rows
        nnz, cols = oracle.X[:rows].nnz, np.unique(oracle.X[:rows].indices).size
        facts[key] = {"rows": rows, "nnz": int(nnz), "columns": int(cols)}
    wanted = lambda name: not args.only or any(s in name for s in args.only)  # noqa: E731
    results = [run_daskgd(name, kw, p, oracle, target, args.budget)
               for name, kw in DASKGD if wanted(name)]  # fmt: skip
    results += [run_peer(i, p, oracle, target, args.budget)
                for i, peer in enumerate(PEERS) if wanted(peer.name)]  # fmt: skip
    facts["load_after"] = os.getloadavg()[0]
    report(p, oracle, results, target, args, facts)
    if args.data is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
