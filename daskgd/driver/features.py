"""A feature-partitioned fit (``partition="features"``): plan the column blocks, run the job
on the coordinator (:mod:`daskgd.parameter_server.blocks`), assemble the result.

Each training task (:func:`daskgd.worker.block_task.train_block`) holds every row of one
block of columns and that block of the parameters; the blocks are the store's column
chunks grouped into one contiguous block per worker (:func:`daskgd.data.column_blocks`),
or the groups of :func:`daskgd.concat_features`, or even column ranges of in-memory data.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import Any, cast

import numpy as np
from distributed import Client, Future

from daskgd.data import Dataset, FeatureBlocks, column_blocks
from daskgd.driver.connection import RPC_TIMEOUT, scheduler, some_workers
from daskgd.driver.monitor import check_unchanged_data, drain
from daskgd.driver.placement import initial_params, label_encoding
from daskgd.driver.result import FitResult
from daskgd.driver.settings import FitSettings
from daskgd.errors import (
    DataNotFoundError,
    DataValidationError,
    DivergenceError,
    InvalidSettingError,
    SchedulerSetupError,
    TrainingError,
)
from daskgd.objective.losses import curvature_bound
from daskgd.parameter_server.block_tree import TREE_MIN_ROWS, TreeReducer
from daskgd.parameter_server.blocks import BlockClient, BlockCoordinator
from daskgd.worker.block_task import train_block

__all__ = ["BLOCK_OPTIMIZERS", "check_feature_settings", "run_feature_job"]

#: The losses of the block method: smooth, with a bound on their curvature in the margin.
COCOA_LOSSES = ("squared_error", "huber", "log_loss", "squared_hinge")

#: The optimizers a feature-partitioned fit runs (coordinate-wise rules and L-BFGS).
BLOCK_OPTIMIZERS = ("lbfgs", "cocoa", "sgd", "momentum", "nesterov", "adagrad", "adam")


def check_feature_settings(s: FitSettings, data: Any) -> FitSettings:
    """The settings of a feature-partitioned fit, ``optimizer="auto"`` resolved (L-BFGS for
    full batch, SGD for mini-batches); what it does not run is refused, saying what to do.
    """
    if s.optimizer == "auto":
        from dataclasses import replace

        seed = s.seed
        s = replace(s, optimizer="sgd" if s.batch_size is not None else "lbfgs")
        object.__setattr__(s, "seed", seed)
    why = None
    if s.optimizer not in BLOCK_OPTIMIZERS:
        why = (f"optimizer={s.optimizer!r} (its steps need the whole model in one place); "
               f"use one of {', '.join(BLOCK_OPTIMIZERS)}")  # fmt: skip
    elif s.optimizer == "cocoa" and s.loss not in COCOA_LOSSES:
        why = (f"optimizer='cocoa' with loss={s.loss!r} (its step needs a bound on the loss's "
               f"curvature: {', '.join(COCOA_LOSSES)}); use optimizer='lbfgs'")  # fmt: skip
    elif s.optimizer == "lbfgs" and s.batch_size is not None:
        why = "optimizer='lbfgs' with batch_size (L-BFGS is full batch); drop batch_size"
    elif s.optimizer == "lbfgs" and s.l1_ratio > 0 and s.alpha > 0:
        why = "an L1 penalty with optimizer='lbfgs'; use optimizer='sgd' (proximal steps)"
    elif s.mode != "sync":
        why = (f"mode={s.mode!r}: the column blocks of one row are needed together for every "
               "margin, so the ranks step in lockstep; use mode='sync'")  # fmt: skip
    elif s.n_columns is not None:
        why = f"n_classes={s.n_classes} (one margin per class); fit partition='rows'"
    elif s.sync_quorum is not None:
        why = "sync_quorum (every column block is needed for every margin)"
    elif s.placement not in ("auto", "balanced"):
        why = f"placement={s.placement!r} (one column block per worker is placed evenly)"
    elif s.out_of_core:
        why = "out_of_core=True (each task holds its column block in memory)"
    elif s.checkpoint is not None:
        why = "checkpoints (the blocks stay on the workers); fit partition='rows'"
    if why is None and s.partition == "grid":
        if s.batch_size is not None or s.optimizer == "cocoa":
            why = ("mini-batches or optimizer='cocoa' in a grid (partition='grid' runs "
                   "full-batch lbfgs and gradient descent); use partition='features'")  # fmt: skip
        elif isinstance(data, FeatureBlocks):
            why = _grid_of_groups(data)
    if why is None and isinstance(data, Dataset) and data.is_sparse:
        why = "sparse X (column blocks of CSR data are not built); fit partition='rows'"
    if why:
        raise InvalidSettingError(f"partition={s.partition!r} does not support {why}")
    return s


def _grid_of_groups(data: FeatureBlocks) -> str | None:
    """Why ``concat_features`` data cannot be cut into a grid, or None: its row blocks are
    runs of row-chunks, the same in every group."""
    if len(data.parts) < 2:
        return "concat_features() of one group in a grid (its column blocks are the groups)"
    chunks = data.targets.chunks
    if any(tuple(p.chunks) != tuple(chunks) for p in data.parts):
        return ("concat_features() groups with different row-chunks in a grid (its row "
                "blocks are runs of row-chunks): write the groups with the same chunk_rows, "
                "or use partition='features'")  # fmt: skip
    return None


def _plan(ds: Dataset | FeatureBlocks, workers: list[str], grid: bool) -> tuple[list, int]:
    """Per rank, its pieces ``(part, c0, c1)`` (column ranges within part ``part``) and
    its row-chunks (None: every row); and the number of row blocks. A grid of ``W``
    workers has about ``sqrt(W)`` column blocks (on the column chunks, or the groups of
    ``concat_features`` data) and ``W // C`` row blocks of contiguous row-chunks; rank
    ``i * C + j`` holds block ``(i, j)``."""
    # a grid has at least 2 column blocks (one would send every margin through the
    # coordinator for nothing): with fewer than 4 workers it is a feature partition
    n_cols = max(2, round(math.sqrt(len(workers)))) if grid else len(workers)
    if isinstance(ds, FeatureBlocks):
        k = min(len(ds.parts), n_cols)
        groups = np.array_split(np.arange(len(ds.parts)), k)
        columns = [[(int(p), 0, ds.parts[p].n_features) for p in g] for g in groups]
        n_chunks = ds.targets.n_chunks
    else:
        bounds = column_blocks(ds.n_features, n_cols, ds.column_chunks)
        columns = [[(0, c0, c1)] for c0, c1 in bounds]
        n_chunks = ds.n_chunks
    if not grid:
        return [(pieces, None) for pieces in columns], 1
    R = max(1, min(len(workers) // len(columns), n_chunks))
    rows = [[int(i) for i in g] for g in np.array_split(np.arange(n_chunks), R)]
    return [(pieces, chunks) for chunks in rows for pieces in columns], R


def _sources(client: Client, ds: Dataset | FeatureBlocks, plan, workers: list[str]) -> list[dict]:
    """What each rank's task reads: Zarr column ranges (of some row-chunks in a grid), or
    blocks computed on its worker."""
    import dask.array as da

    parts = ds.parts if isinstance(ds, FeatureBlocks) else (ds,)
    t = ds.targets if isinstance(ds, FeatureBlocks) else ds
    out: list[dict[str, Any]] = []
    if all(p.path is not None for p in parts) and t.path is not None:
        for pieces, chunks in plan:
            zarr_pieces = [
                (parts[p].path, parts[p].storage_options, c0, c1) for p, c0, c1 in pieces
            ]
            every = list(range(t.n_chunks)) if chunks is None else chunks
            out.append({"pieces": zarr_pieces, "row_chunks": chunks,
                        "targets": (t.path, t.storage_options, every)})  # fmt: skip
        return out
    names = ("y", "sample_weight", "offset")
    for rank, (pieces, chunks) in enumerate(plan):
        w = workers[rank]
        lo, hi = (0, t.n_samples) if chunks is None else (
            t.chunk_bounds(chunks[0])[0], t.chunk_bounds(chunks[-1])[1])  # fmt: skip
        arrays = {n: getattr(t, n)[lo:hi] for n in names if getattr(t, n) is not None}
        cols = [parts[p].X[lo:hi, c0:c1] for p, c0, c1 in pieces]
        X = cols[0] if len(cols) == 1 else da.concatenate(cols, axis=1)
        # one computed array per rank on its worker; a rerun elsewhere recomputes it
        whole = [X.rechunk({0: -1, 1: -1}), *[a.rechunk(-1) for a in arrays.values()]]
        futs = client.compute(whole, workers=[w], allow_other_workers=True)
        out.append({"X": futs[0], "targets": dict(zip(arrays, futs[1:], strict=True))})
    return out


async def _install(client: Client, tree: bool) -> None:
    """The coordinator on the scheduler; with ``tree``, the tree reductions' worker plugin."""
    try:
        await asyncio.wait_for(client.register_plugin(BlockCoordinator()), 30.0)
    except Exception as exc:
        raise SchedulerSetupError(
            f"the Dask scheduler at {scheduler(client).address} cannot run daskgd's "
            f"coordinator ({type(exc).__name__}: {exc}). Install daskgd (the same version) "
            "in the scheduler's and every worker's Python environment."
        ) from exc
    if not tree:
        return
    try:
        await asyncio.wait_for(client.register_plugin(TreeReducer()), 30.0)
    except Exception as exc:
        raise SchedulerSetupError(
            f"the workers cannot run daskgd's tree reductions ({type(exc).__name__}: {exc}). "
            "Install daskgd (the same version) in every worker's Python environment, or use "
            "reduction='coordinator'"
        ) from exc


async def run_feature_job(client: Client, ds: Dataset | FeatureBlocks, s: FitSettings) -> FitResult:
    """Train on ``ds`` partitioned by columns with the settings ``s``."""
    started = time.perf_counter()
    s = check_feature_settings(s, ds)
    from daskgd.driver.job import install

    await install(client)  # daskgd on every worker, checked
    # "auto": the tree where it measured faster (bench/results/reduction.md)
    tree = s.reduction == "tree" or (s.reduction == "auto" and ds.n_samples >= TREE_MIN_ROWS)
    await _install(client, tree)
    workers = await some_workers(client, s.worker_timeout)
    if s.n_workers is not None:
        workers = workers[: s.n_workers]
    targets = ds.targets if isinstance(ds, FeatureBlocks) else ds
    classes = label_encoding(targets, s)
    plan, R = _plan(ds, workers, s.partition == "grid")
    C = len(plan) // R
    workers = workers[: len(plan)]
    n_features = ds.n_features
    P0 = initial_params(_Shape(n_features), s)  # type: ignore[arg-type]
    # the column blocks are contiguous: block j holds the columns offsets[j]:offsets[j + 1]
    widths = [sum(c1 - c0 for _, c0, c1 in pieces) for pieces, _ in plan[:C]]
    offsets = np.cumsum([0, *widths])
    batch_rows = s.batch_size
    spec: dict[str, Any] = {
        "loss": s.loss, "epsilon": float(s.epsilon), "power": float(s.power),
        "classes": classes, "fit_intercept": s.fit_intercept,
        "optimizer": _optimizer_spec(s),
        "local_steps": (
            int((s.optimizer_options or {}).get("local_steps", 10))
            if s.optimizer == "cocoa"
            else None
        ),
        "n_blocks": len(plan),
        "grid": [R, C],
        "auto_lr": s.auto_lr, "curvature": curvature_bound(s.loss),
        "batch_rows": batch_rows, "seed": int(s.seed),
        "precondition": bool((s.optimizer_options or {}).get("precondition", True)),
        "memory": int((s.optimizer_options or {}).get("memory", 10)),
        "delay": {int(r): float(t) for r, t in (s.delay or {}).items()},
        "reduction": "tree" if tree else "coordinator",
    }  # fmt: skip
    rules = {
        "max_epochs": s.max_epochs, "tol": s.tol, "n_iter_no_change": s.n_iter_no_change,
        "gtol": s.gtol, "gtol_rel": s.gtol_rel, "max_time": s.max_time,
        "smooth": s.loss != "hinge", "stochastic": batch_rows is not None,
        "line_search": s.optimizer == "lbfgs",
    }  # fmt: skip
    job = f"daskgd-blocks-{uuid.uuid4().hex}"
    bc = cast(BlockClient, BlockClient.from_client(client, job, timeout=RPC_TIMEOUT))
    await bc.blocks("create", n_ranks=len(plan), rules=rules, member_timeout=s.member_timeout,
                    client=client.id, grid=[R, C] if R > 1 else None)  # fmt: skip
    futures: list[Future] = []
    try:
        where = _sources(client, ds, plan, workers)
        for rank, w in enumerate(workers):
            j = rank % C
            init = np.append(P0[offsets[j] : offsets[j + 1]], P0[-1] if j == 0 else 0.0)
            futures.append(client.submit(
                train_block, job, rank, where[rank], {**spec, "init": init},
                workers=[w], allow_other_workers=True, pure=False,
                key=f"daskgd-block-{rank}-{job}",
            ))  # fmt: skip
        setup = time.perf_counter() - started
        history = await _watch(client, bc, futures, s)
        final = await bc.blocks("close", since=len(history))
        tasks = await drain(client, futures)
        await check_unchanged_data(list(ds.parts) if isinstance(ds, FeatureBlocks) else [ds])
    except BaseException:
        try:
            await asyncio.wait_for(bc.blocks("close"), 5.0)
        except Exception:
            pass
        await client.cancel(futures)
        raise
    history += final["history"]
    if final["error"]:
        cls = DivergenceError if final["error_kind"] == "divergence" else TrainingError
        raise cls(final["error"])
    final_blocks = final.get("blocks")
    if final_blocks is None:
        raise TrainingError(f"the fit stopped ({final['reason']}) before any iterate was complete")
    # every rank's block as it sent it with the last iterate (a task may have died since);
    # a grid's blocks (i, j) of one column block hold the same parameters: take row 0's
    coef = np.concatenate([np.asarray(final_blocks[j])[:-1] for j in range(C)])
    done = {t["rank"]: t for t in tasks}
    blocks = {r: done.get(r, {}) for r in range(len(plan))}
    rank0 = blocks[0]
    return FitResult(
        coef_=coef,
        intercept_=float(np.asarray(final_blocks[0])[-1]),
        n_iter_=int(final["epochs"]),
        n_updates_=int(final["epochs"]),
        converged_=bool(final["converged"]),
        history=history,
        reason=final["reason"],
        timings_={
            "setup": setup,
            "ranks": [blocks[r].get("seconds", {}) for r in range(len(plan))],
            "reduce_bytes": [blocks[r].get("reduce_bytes", 0) for r in range(len(plan))],
            "reductions": [blocks[r].get("reductions", 0) for r in range(len(plan))],
            # both ways through the scheduler, and worker to worker (reduction="tree")
            "scheduler_bytes": [blocks[r].get("scheduler_bytes", 0) for r in range(len(plan))],
            "peer_bytes": [blocks[r].get("peer_bytes", 0) for r in range(len(plan))],
        },
        learning_rate_=None if s.optimizer == "lbfgs" else rank0.get("learning_rate"),
        plan_={},
        recoveries_=[dict(r) for r in final["restarts"]],
        blocks_=[
            {
                "rank": r,
                "worker": blocks[r].get("worker"),
                "columns": (int(offsets[r % C]), int(offsets[r % C + 1])),
                **({"row_chunks": list(plan[r][1])} if R > 1 else {}),
            }
            for r in range(len(plan))
        ],
    )


def _optimizer_spec(s: FitSettings) -> dict[str, Any]:
    """``make_optimizer``'s arguments but ``fit_intercept`` (the block's); the block
    method's local steps are plain proximal gradient steps."""
    out = {k: v for k, v in s.optimizer_spec().items() if k != "fit_intercept"}
    if s.optimizer == "cocoa":
        out.update(name="sgd", options={})
    return out


class _Shape:
    """Stands for a dataset in :func:`initial_params`: only its ``n_features`` is read."""

    def __init__(self, n_features: int) -> None:
        self.n_features = n_features


async def _watch(client: Client, bc: BlockClient, futures: list[Future], s: FitSettings) -> list:
    """Poll the job until it stops, feeding the callback and the progress bar; a failed task
    (its data, or a bug) stops the fit with its error."""
    history: list[dict[str, Any]] = []
    bar = None
    if s.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=s.max_epochs, unit="epoch", desc="daskgd")
    try:
        while True:
            st = await bc.blocks("status", since=len(history), wait=min(s.poll_interval, 5.0))
            for h in st["history"]:
                history.append(dict(h))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{h['loss']:.6g}")
                if s.callback is not None and s.callback(dict(h)) is False:
                    await bc.blocks("stop", reason="stopped by the callback")
            if st["stopped"]:
                return history
            for f in futures:
                if f.status == "error":
                    exc = await f.exception()
                    if isinstance(exc, DataValidationError | DataNotFoundError | TrainingError):
                        raise exc
                    raise TrainingError(f"training task {f.key} failed: {exc!r}") from exc
                if f.status == "cancelled":
                    raise TrainingError(f"training task {f.key} was cancelled")
    finally:
        if bar is not None:
            bar.close()
