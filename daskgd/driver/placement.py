"""Which row-chunks each worker trains on, and where each training task reads them from.

The plan comes from :meth:`daskgd.data.Dataset.partition`, by ``fit``'s ``placement``:

- ``"locality"`` (what ``"auto"`` means): a chunk of dask input already in a worker's
  memory (``client.who_has``) stays with that worker, so it is trained where it lives
  instead of being moved; the other chunks (all of a Zarr dataset's) are balanced in
  contiguous runs (sequential reads);
- ``"balanced"``: equal rows in contiguous runs, wherever the chunks are;
- ``"resources"``: rows in proportion to each worker's capacity, in contiguous runs: the
  amount of the worker resource ``"daskgd"`` it declares (distributed's
  ``dask worker --resources "daskgd=2"``, ``Worker(resources=...)``) when any worker
  declares it, else its threads; no worker gets more rows than fit
  :data:`MEMORY_SHARE` of its memory limit while others have room (the rest goes to
  them, in proportion to their capacity).

The plan is returned with the result (``FitResult.plan_``).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import dask
import dask.array as da
import numpy as np
from distributed import Client

from daskgd.data import Dataset, is_sparse_array
from daskgd.driver.settings import PLACEMENTS, FitSettings
from daskgd.errors import DataValidationError, InvalidSettingError
from daskgd.objective import get_loss
from daskgd.worker import contiguous_block

__all__ = [
    "CAPACITY_RESOURCE",
    "PLACEMENTS",
    "capacity_shares",
    "check_latency",
    "check_memory",
    "chunk_rows_for",
    "final_plan",
    "initial_params",
    "label_encoding",
    "plan_placement",
    "sources",
]


#: The worker resource that declares a worker's capacity to ``placement="resources"``.
CAPACITY_RESOURCE = "daskgd"


async def plan_placement(
    client: Client,
    ds: Dataset,
    workers: list[str],
    placement: str = "auto",
    info: dict[str, dict[str, Any]] | None = None,
    *,
    streamed: bool = False,
    mini_batch: bool = False,
) -> dict[str, list[int]]:
    """Per worker, the row-chunks it trains on by ``placement`` (workers without any left
    out).

    ``info`` is the scheduler's identity of the workers (their ``nthreads``,
    ``resources`` and ``memory_limit``), needed by ``"resources"``; ``streamed`` and
    ``mini_batch`` as for :func:`check_memory`. ``"locality"`` runs in a thread: finding
    where the chunks of ``ds.X`` live asks the scheduler (``who_has``) through the
    client's blocking API.
    """
    if placement in ("resources", "latency"):  # latency starts from the capacities
        shares = capacity_shares(ds, workers, info or {}, streamed=streamed,
                                 copies=_copies(streamed, mini_batch))  # fmt: skip
        plan = ds.partition(workers, shares=shares)
    elif placement == "balanced":
        plan = ds.partition(workers)
    else:
        plan = await asyncio.to_thread(ds.partition, workers, client)
    return {w: c for w, c in plan.items() if c}


def check_latency(ds: Dataset, s: FitSettings, keyed: bool) -> None:
    """Refuse ``placement="latency"`` where chunks cannot move: it reads moved chunks from
    a Zarr store, and its moves must line up with whole epochs.

    Raises
    ------
    InvalidSettingError
        Naming what to change.
    """
    why = None
    if ds.path is None:
        why = ("reads the row-chunks it moves from a Zarr store: write the data with "
               "daskgd.write_zarr and pass its path")  # fmt: skip
    elif keyed:
        why = "is not offered for key-value fits (sparse mini-batches)"
    elif s.sync_quorum is not None:
        why = ("moves rows between epochs, which rounds closed without some ranks "
               "(sync_quorum) would not line up with; use sync_quorum=None")  # fmt: skip
    if why:
        raise InvalidSettingError(
            f"placement='latency' {why}. Use placement='resources' (rows by declared "
            "capacity) or 'balanced'"
        )


def final_plan(plan: dict[str, list[int]], tasks: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Where the rows were at the end of a ``placement="latency"`` fit: each task's last
    chunks on the worker it ran on (the start's ``plan`` for a task that did not say)."""
    out: dict[str, list[int]] = {}
    for t in sorted(tasks, key=lambda t: t["rank"]):
        chunks = t.get("chunks")
        if chunks is None:
            return plan
        out.setdefault(t["worker"], []).extend(chunks)
    return {w: sorted(c) for w, c in out.items()}


def capacity_shares(
    ds: Dataset,
    workers: list[str],
    info: dict[str, dict[str, Any]],
    *,
    copies: int = 1,
    streamed: bool = False,
) -> dict[str, float]:
    """The rows each worker should train on for ``placement="resources"``.

    Capacity is the worker's amount of :data:`CAPACITY_RESOURCE` when any worker declares
    it (a worker that does not gets no rows in the plan; a training task rerun after its
    worker died may still run there), else its threads. Rows go in proportion to capacity,
    except that a worker whose share would not fit :data:`MEMORY_SHARE` of its memory limit
    keeps what fits (less one chunk: the plan's whole chunks may overshoot a share by that
    much) and the others share the rest (water-filling). Data that fits nowhere keeps the
    proportional shares: :func:`check_memory` then refuses the plan, naming the worker.

    Raises
    ------
    InvalidSettingError
        When no worker has any capacity (all declare zero of the resource).
    """
    declared = any(CAPACITY_RESOURCE in (info.get(w, {}).get("resources") or {}) for w in workers)
    if declared:
        cap = {w: float((info.get(w, {}).get("resources") or {}).get(CAPACITY_RESOURCE, 0))
               for w in workers}  # fmt: skip
    else:
        cap = {w: float(info.get(w, {}).get("nthreads") or 1) for w in workers}
    if not any(v > 0 for v in cap.values()):
        raise InvalidSettingError(
            f"placement='resources' found no capacity: every worker declares "
            f"{CAPACITY_RESOURCE}=0. Declare a positive amount (dask worker --resources "
            f"'{CAPACITY_RESOURCE}=1'), or use placement='balanced'"
        )
    n = float(ds.n_samples)
    room = dict.fromkeys(workers, math.inf)
    if not streamed and ds.nnz_known:
        per_row = partition_bytes(ds, 1, copies)
        for w in workers:
            limit = info.get(w, {}).get("memory_limit") or 0
            if limit:  # the plan hands out whole chunks: keep one chunk's room spare
                room[w] = max(0.0, MEMORY_SHARE * limit / per_row - max(ds.chunks))
    rows: dict[str, float] = {}
    free = [w for w in workers if cap[w] > 0]
    left = n
    while free:  # water-filling: the workers that would overflow keep what fits
        total = sum(cap[w] for w in free)
        full = [w for w in free if left * cap[w] / total > room[w]]
        if not full:
            rows.update({w: left * cap[w] / total for w in free})
            break
        for w in full:
            rows[w] = room[w]
            left -= room[w]
        free = [w for w in free if w not in full]
    if left > 0 and not free and sum(rows.values()) < n:
        # fits nowhere: proportional, for check_memory to name the worker that overflows
        total = sum(cap.values())
        rows = {w: n * cap[w] / total for w in workers}
    return {w: rows.get(w, 0.0) for w in workers}


def sources(client: Client, ds: Dataset, plan: dict[str, list[int]]) -> dict[str, tuple]:
    """Per worker, what its training task reads: ``("zarr", path, chunks, options, sizes)``
    (read there) or ``("blocks", futures)`` (dask input, computed there)."""
    if ds.path is not None:
        return {
            w: ("zarr", ds.path, c, ds.storage_options, [ds.chunks[i] for i in c])
            for w, c in plan.items()
        }
    Xs = ds.X.to_delayed().ravel()
    ys = ds.y.to_delayed().ravel()
    ws = None if ds.sample_weight is None else ds.sample_weight.to_delayed().ravel()
    os_ = None if ds.offset is None else ds.offset.to_delayed().ravel()
    out = {}
    for w, chunks in plan.items():
        blocks = [
            dask.delayed(contiguous_block, pure=True)(
                Xs[i], ys[i], None if ws is None else ws[i], None if os_ is None else os_[i]
            )
            for i in chunks
        ]
        out[w] = ("blocks", client.compute(blocks, workers=[w], allow_other_workers=True))
    return out


#: Share of a worker's memory limit a training task's rows may take: distributed pauses a
#: worker at 80% of its limit, and the task needs room for its batches and the model too.
MEMORY_SHARE = 0.6


def _copies(streamed: bool, mini_batch: bool) -> int:
    """Copies of its rows a training task holds (a permuted one for in-memory mini-batches)."""
    return 2 if mini_batch and not streamed else 1


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


def partition_bytes(ds: Dataset, rows: int, copies: int) -> float:
    """Bytes a training task holds for ``rows`` rows of ``ds`` (``copies`` of ``X``: the
    loaded rows, and a permuted copy for mini-batches)."""
    item = ds.dtype.itemsize
    if ds.is_sparse:
        index = 4 if ds.n_features < 2**31 else 8
        x = ds.nnz / max(1, ds.n_samples) * rows * (item + index) + 8 * (rows + 1)
    else:
        x = float(rows) * ds.n_features * item
    vectors = 1 + (ds.sample_weight is not None) + (ds.offset is not None)
    return copies * x + 8.0 * rows * vectors


def check_memory(
    ds: Dataset, plan: dict[str, list[int]], limits: dict[str, Any], *, streamed: bool,
    mini_batch: bool,
) -> None:  # fmt: skip
    """Refuse, before training, a plan whose rows would not fit a worker's memory limit.

    A task holds its whole partition (``streamed``: one row-chunk at a time), and a second,
    permuted copy of it for mini-batches. Workers without a limit are not checked. Sparse
    partitions are estimated from the dataset's mean non-zeros per row, when the count is
    known (a Zarr dataset, scipy input); a dask array of CSR blocks is not checked.
    """
    if not ds.nnz_known:
        # a sparse dask array whose non-zeros are not counted yet: counting them would
        # cost a pass over X (and this runs on the client's event loop)
        return
    copies = _copies(streamed, mini_batch)
    for w, chunks in plan.items():
        limit = limits.get(w) or 0
        if not limit or not chunks:
            continue
        rows = max(ds.chunks[i] for i in chunks) if streamed else sum(ds.chunks[i] for i in chunks)
        need = partition_bytes(ds, rows, copies)
        if need <= MEMORY_SHARE * limit:
            continue
        what = (
            f"row-chunk of {rows:,} rows"
            if streamed
            else (f"partition (row-chunks {chunks[0]}..{chunks[-1]}, {rows:,} rows)")
        )
        fixes = "more workers, or workers with more memory"
        if not streamed and ds.path is not None:
            fixes += ", out_of_core=True (one row-chunk in memory at a time)"
        if streamed or ds.path is None:
            fixes += ", smaller row-chunks (write_zarr(..., chunk_rows=...))"
        if ds.dtype.itemsize == 8:
            fixes += ", float32 data"
        raise DataValidationError(
            f"worker {w} cannot hold its {what}: about {_gib(need)} in memory"
            f"{' (with the permuted copy of mini-batches)' if copies == 2 else ''}, more than "
            f"{MEMORY_SHARE:.0%} of its memory limit of {_gib(limit)}. Use {fixes}"
        )


#: Row-chunks per worker that in-memory input is cut into for ``placement="resources"``:
#: a plan hands out whole chunks, so unequal shares need several per worker.
RESOURCE_CHUNKS = 8


def chunks_per_worker(placement: str) -> int:
    """How many row-chunks per worker in-memory input is cut into for ``placement``."""
    return RESOURCE_CHUNKS if placement == "resources" else 1


def chunk_rows_for(data: Any, n_workers: int, per_worker: int = 1) -> int | None:
    """For in-memory numpy or scipy.sparse input: ``per_worker`` chunks per worker (one by
    default), so every worker gets rows."""
    if not isinstance(data, tuple | list) or not data:
        return None
    X = data[0]
    if not (isinstance(X, np.ndarray) or is_sparse_array(X)) or X.ndim != 2 or X.shape[0] == 0:
        return None
    if isinstance(X, da.Array):
        return None
    return max(1, -(-X.shape[0] // max(1, n_workers * per_worker)))


def label_encoding(ds: Dataset, s: FitSettings) -> list | None:
    """The dataset's sorted class labels when the workers must encode them, else None.

    Binary classification losses take -1/+1 and the multinomial (and one-vs-rest) loss
    takes 0..k-1; a dataset that records other labels (0/1, strings of numbers) is
    encoded as it is read.
    """
    if not get_loss(s.loss).classification or ds.classes_ is None:
        return None
    classes = np.sort(np.asarray(ds.classes_))
    k = len(classes)
    n = s.n_columns
    if n is None and k > 2:
        raise DataValidationError(
            f"loss={s.loss!r} is binary but the data has {k} classes; pass n_classes={k} "
            "with loss='log_loss' (multinomial), or use SGDClassifier (one-vs-rest)"
        )
    if n is not None and k != n:
        raise DataValidationError(f"n_classes={n} but the data has {k} classes")
    expected = np.arange(k) if n is not None else np.array([-1, 1][-k:])
    if k == len(expected) and np.array_equal(classes, expected):
        return None  # already in the kernel's encoding
    return classes.tolist()


def initial_params(ds: Dataset, s: FitSettings) -> np.ndarray:
    """The starting parameters: ``coef_init``/``intercept_init``, else zeros."""
    d = ds.n_features
    shape = s.params_shape(d)
    P = np.zeros(shape)
    if s.coef_init is not None:
        coef = np.asarray(s.coef_init, dtype=np.float64)
        if coef.shape != (d, *shape[1:]):
            raise ValueError(f"coef_init has shape {coef.shape}; expected {(d, *shape[1:])}")
        P[:d] = coef
    if s.intercept_init is not None:
        P[d] = np.asarray(s.intercept_init, dtype=np.float64)
    if not np.all(np.isfinite(P)):
        raise ValueError("coef_init and intercept_init must be finite")
    return P
