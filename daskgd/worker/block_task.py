"""The training task of a feature-partitioned fit: one column block per task.

:func:`train_block` loads every row of its rank's columns (from Zarr with
:func:`daskgd.data.read_columns`, or a block the cluster computed), and the targets, joins
the job on the coordinator (:mod:`daskgd.parameter_server.blocks`), then runs its block's
solver (:func:`daskgd.objective.block_solvers.run_block_solver`) in lockstep with the other
ranks, each shared quantity an all-reduce through the coordinator. When another rank's task
is rerun (its worker died), the coordinator answers ``restart``: the solver starts again
from this rank's block of the last iterate every rank backed up. Like the row-partitioned
task it secedes from the worker's thread pool at once (every rank must run together).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
from distributed import get_worker, secede

from daskgd.errors import (
    DataValidationError,
    ParameterServerError,
    SupersededError,
    TrainingError,
    UnknownJobError,
)
from daskgd.objective import check_targets, get_loss
from daskgd.objective.block_solvers import BlockData, BlockExchange, run_block_solver
from daskgd.objective.losses import encode_labels
from daskgd.objective.optimizers import make_optimizer
from daskgd.parameter_server.block_job import group_members
from daskgd.parameter_server.block_tree import TreeLink
from daskgd.parameter_server.blocks import BlockClient

__all__ = ["train_block"]


class _Restart(Exception):
    """The coordinator started a new generation: restart from ``position``."""

    def __init__(self, position: dict[str, Any]) -> None:
        super().__init__("restart")
        self.position = position


class _Stopped(Exception):
    """The job stopped (an error on another rank, the driver closed it)."""


def train_block(job: str, rank: int, source: dict[str, Any], spec: dict[str, Any]) -> dict:
    """Train one column block of a feature-partitioned job until the coordinator says stop.

    Parameters
    ----------
    job : str
        The job id on the coordinator.
    rank : int
        The column block's index (a rerun on another worker takes the same columns).
    source : dict
        ``{"pieces": [(path, storage_options, c0, c1), ...], "targets": (path,
        storage_options, n_chunks)}`` (Zarr) or ``{"X": array, "targets": {"y": ...,
        "sample_weight": ..., "offset": ...}}`` (blocks the cluster computed).
    spec : dict
        ``loss``, ``epsilon``, ``power``, ``classes``, ``fit_intercept``, ``optimizer``
        (:func:`~daskgd.objective.optimizers.make_optimizer`'s arguments), ``auto_lr``,
        ``curvature``, ``init`` (this block's starting parameters, the intercept last),
        ``batch_rows``, ``seed``, ``precondition``, ``memory``, ``delay`` (optional; a
        testing hook: rank -> seconds this rank sleeps before each iterate's report, or
        with the tree and full batches before each sum of its margins),
        ``reduction`` (optional: ``"tree"`` sums the margins worker to worker,
        :mod:`daskgd.parameter_server.block_tree`; else every sum goes to the coordinator).

    Returns
    -------
    dict
        ``rank``, ``worker``, ``block`` (its parameters, the intercept's slot last),
        ``seconds`` (``load``, ``solve``), ``reductions`` and ``reduce_bytes`` (what this
        rank sent to the coordinator), ``scheduler_bytes`` (what it sent to and got from
        the coordinator), ``peer_bytes`` and ``tree_reductions`` (what it sent to other
        ranks, in how many tree reductions), ``restarts``.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, int(get_worker().state.nthreads)), user_api="blas"):
        return _train_block(job, rank, source, spec)


def _load(source: dict[str, Any], rank: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The block's columns and the targets, as numpy arrays."""
    if "pieces" in source:
        from daskgd.data import read_columns, read_row_arrays

        rows = source.get("row_chunks")  # a grid's row block; None: every row
        parts = [
            read_columns(p, c0, c1, storage_options=so, row_chunks=rows)
            for p, so, c0, c1 in source["pieces"]
        ]
        X = parts[0] if len(parts) == 1 else np.hstack(parts)
        path, so, chunks = source["targets"]
        targets = read_row_arrays(path, chunks, storage_options=so,
                                  names=("y", "sample_weight", "offset"))  # fmt: skip
        return X, targets
    return np.ascontiguousarray(source["X"]), dict(source["targets"])


def _encode(y: np.ndarray, sw: np.ndarray | None, spec: dict[str, Any], rank: int) -> np.ndarray:
    """Labels in the loss's encoding (-1/+1), checked with the weights."""
    loss = get_loss(spec["loss"])
    classes = spec.get("classes")
    name = f"y (column block {rank})"
    try:
        if classes is not None:
            y = encode_labels(y, np.asarray(classes), False, name)
        check_targets(loss, y, name=name, power=spec.get("power", 1.5))
    except ValueError as exc:
        raise DataValidationError(str(exc)) from None
    if sw is not None and np.any(sw < 0):
        raise DataValidationError("sample_weight has negative entries")
    return np.asarray(y, dtype=np.float64)


def _train_block(job: str, rank: int, source: dict[str, Any], spec: dict[str, Any]) -> dict:
    worker = get_worker()
    secede()
    bc = BlockClient.from_worker(job, worker)
    started = time.perf_counter()

    def call(op: str, **kw: Any) -> dict[str, Any]:
        try:
            return bc.call_sync("blocks", op, **kw)
        except (UnknownJobError, SupersededError) as exc:
            # the job ended while the call was on its way, or a newer run of this rank took over
            raise _Stopped(str(exc)) from None
        except ParameterServerError as exc:
            raise TrainingError(
                f"the coordinator rejected {op} from column block {rank} on {worker.address}: {exc}"
            ) from exc

    try:
        joined = call("join", rank=rank, worker=worker.address)
    except _Stopped:
        return {"rank": rank, "worker": worker.address, "block": None}
    if joined.get("final"):  # the fit ended; this rerun hands in the rank's last block
        return {"rank": rank, "worker": worker.address, "block": joined["block"],
                "seconds": {}, "reductions": 0, "reduce_bytes": 0, "restarts": 0}  # fmt: skip
    X, targets = _load(source, rank)
    y = np.asarray(targets["y"])
    sw = targets.get("sample_weight")
    y = _encode(y, sw, spec, rank)
    weight = np.ones(len(y)) if sw is None else np.asarray(sw, dtype=np.float64)
    total = float(weight.sum())
    R, C = (int(k) for k in spec.get("grid") or (1, 1))
    i, j = divmod(rank, C)  # a grid's block (i, j); else (0, rank)
    if not total > 0 and R == 1:
        raise DataValidationError("sample_weight sums to 0: no row counts")
    offset = targets.get("offset")
    offset = None if offset is None else np.asarray(offset, dtype=np.float64)
    loss = get_loss(spec["loss"])
    data = BlockData(
        X, y, weight / total, offset, loss, float(spec["epsilon"]), float(spec["power"])
    )
    loaded = time.perf_counter()
    owner = j == 0  # the intercept's block, which reports the loss of its rows
    optimizer = make_optimizer(**spec["optimizer"],
                               fit_intercept=bool(spec["fit_intercept"]) and owner)  # fmt: skip
    init = np.asarray(spec["init"], dtype=np.float64)
    incarnation = joined["incarnation"]
    position = joined
    seq = 0
    restarts = 0
    xchg: BlockExchange | None = None
    lam: float | None = None  # this block's top curvature (auto_lr), kept across restarts

    pause = float((spec.get("delay") or {}).get(rank, 0.0))
    sent = {"scheduler": 0, "tree": 0}  # bytes of the reductions, by the way they went

    def ask(silent: list[int], waited: float, unreachable: bool) -> list[Any]:
        reply = call("tree", rank=rank, incarnation=incarnation, silent=silent, waited=waited,
                     unreachable=unreachable, generation=position["generation"])  # fmt: skip
        if reply["status"] == "restart":
            raise _Restart(reply)
        if reply["status"] == "stopped":
            raise _Stopped(reply.get("error") or reply.get("reason"))
        return list(reply["workers"])

    tree = TreeLink(worker, job, rank, ask) if spec.get("reduction") == "tree" else None

    def reduce(value, kind="sum", epoch=None, backup=None, group="row"):
        nonlocal seq
        # a grid's row ("r<i>") or column ("c<j>") of blocks; otherwise every rank
        label = "all" if R == 1 or group == "all" else (f"r{i}" if group == "row" else f"c{j}")
        if label[0] == "r" and C == 1:  # a row of one block: its own sum
            return value, None
        seq += 1
        if tree is not None and kind == "sum" and group == "row" and value.size >= len(y):
            # the margins of every row (the big sums): worker to worker
            sent["tree"] += value.nbytes
            if pause:  # the straggler lags in the tree, where the margins go
                time.sleep(pause)
            members = group_members(label, R * C, (R, C) if R > 1 else None)
            return tree.reduce(value, position["generation"], seq, label, members), None
        if pause and kind == "stats" and (tree is None or spec.get("batch_rows")):
            time.sleep(pause)  # a straggler on purpose (tests); the task has seceded
        msg: dict[str, Any] = {"value": value, "kind": kind, "epoch": epoch, "backup": backup}
        sent["scheduler"] += value.nbytes + (0 if backup is None else backup.nbytes)
        while True:
            reply = call("reduce", rank=rank, incarnation=incarnation, group=label,
                         generation=position["generation"], seq=seq, **msg)  # fmt: skip
            if reply["status"] == "ok":
                sent["scheduler"] += reply["value"].nbytes
                return reply["value"], reply["stop"]
            if reply["status"] == "restart":
                raise _Restart(reply)
            if reply["status"] == "stopped":
                raise _Stopped(reply.get("error") or reply.get("reason"))
            msg = {"value": None, "kind": kind, "epoch": epoch, "backup": None}  # "wait"

    v = init
    stop: dict[str, Any] | None = None
    while stop is None:
        seq = 0
        xchg = BlockExchange(reduce) if xchg is None else xchg
        epoch = position.get("epoch")
        v = init if epoch is None else np.asarray(position["block"], dtype=np.float64)
        start = 0 if epoch is None else epoch  # steps (full batch) or epochs done
        try:
            if R > 1:  # the weights are normalised by their sum over every row block
                everywhere = float(xchg(np.array([total]), group="col")[0][0])
                if not everywhere > 0:
                    raise DataValidationError("sample_weight sums to 0: no row counts")
                data.weight = weight / everywhere
            local_steps = spec.get("local_steps")
            if (spec["auto_lr"] or local_steps) and lam is None:
                lam = data.top_curvature(owner and bool(spec["fit_intercept"]))
            if spec["auto_lr"] and not local_steps:
                # a bound: the blocks' top eigenvalues summed
                lam_sum = float(xchg(np.array([lam]), group="all")[0][0])
                l2 = optimizer.regularizer.l2
                eta = 1.0 / max(float(spec["curvature"]) * lam_sum + l2, 1e-300)
                optimizer.schedule = replace(optimizer.schedule, eta0=eta)
            v, stop = run_block_solver(
                data,
                v,
                xchg,
                optimizer=optimizer,
                epoch=start,
                memory=int(spec.get("memory", 10)),
                precondition=bool(spec.get("precondition", True)),
                curvature=float(spec["curvature"]),
                batch_rows=spec.get("batch_rows"),
                seed=int(spec["seed"]),
                lead=owner,
                local_steps=local_steps,
                n_blocks=int(spec.get("n_blocks", 1)),
                block_curvature=lam or 1.0,
                row_blocks=R,
                counts_block=i == 0,
            )
        except _Restart as r:
            position = r.position
            restarts += 1
        except _Stopped:  # an error elsewhere, or the job closed: no block to hand in
            if tree is not None:
                tree.close()
            return {"rank": rank, "worker": worker.address, "block": None}
    done = time.perf_counter()
    return {
        "rank": rank,
        "worker": worker.address,
        "block": v,
        # the block method's step is its own (the surrogate's curvature), not the schedule's
        "learning_rate": (
            1.0
            / (
                int(spec.get("n_blocks", 1)) * float(spec["curvature"]) * (lam or 1.0)
                + optimizer.regularizer.l2
            )
            if spec.get("local_steps")
            else float(optimizer.schedule.eta0)
        ),
        "seconds": {"load": loaded - started, "solve": done - loaded},
        "reductions": 0 if xchg is None else xchg.calls,
        "reduce_bytes": 0 if xchg is None else xchg.bytes - sent["tree"],
        "scheduler_bytes": sent["scheduler"],
        "peer_bytes": 0 if tree is None else tree.bytes,
        "tree_reductions": 0 if tree is None else tree.calls,
        "restarts": restarts,
    }
