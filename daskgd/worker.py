"""The training task: one long-running task per Dask worker.

:func:`train_partition` loads its rank's row-chunks once (from Zarr with
:func:`daskgd.data.load_chunk`, or as blocks the cluster computed), joins the
job on the parameter server, then loops: take a mini-batch, compute the summed
loss and gradient with the compiled kernel (which releases the GIL, so the
worker's heartbeats go on), push them, continue from the parameters in the
reply, until the reply says ``stopped``.

The task secedes from the worker's thread pool at once: Dask has no gang
scheduling, and a sync round needs every member running together. Seceding
frees the slot, so a task rerun after a worker died can start on a worker that
already runs another member instead of queueing behind it.

Mini-batches are drawn without replacement per epoch: the rank's rows are
permuted with ``numpy.random.default_rng([seed, rank, epoch])`` into a
preallocated buffer and cut into ``batches_per_epoch`` contiguous slices, so a
batch is a C-contiguous view and sync mode is bitwise reproducible.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from distributed import get_worker, secede
from distributed.protocol import ToPickle
from distributed.utils import sync

from daskgd._version import __version__
from daskgd.errors import TrainingError
from daskgd.losses import check_targets, get_loss

__all__ = ["probe", "train_partition"]


def probe() -> str:
    """Return the daskgd version; run on every worker to check daskgd is importable there."""
    return __version__


def _block(X: np.ndarray, y: np.ndarray, w: np.ndarray | None):
    """One row-chunk as C-contiguous arrays (runs on the worker that will train on it)."""
    return (
        np.ascontiguousarray(X),
        np.ascontiguousarray(y),
        None if w is None else np.ascontiguousarray(w),
    )


def _load(source: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Concatenate the rank's chunks: ``("zarr", path, chunks, options)`` or ``("blocks", ...)``."""
    if source[0] == "zarr":
        from daskgd.data import load_chunk

        _, path, chunks, options = source
        blocks = [load_chunk(path, i, storage_options=options) for i in chunks]
    elif source[0] == "blocks":
        blocks = source[1]
    else:
        raise ValueError(f"unknown data source kind {source[0]!r}")
    if len(blocks) == 1:
        return blocks[0]
    X = np.concatenate([b[0] for b in blocks])
    y = np.concatenate([b[1] for b in blocks])
    w = None if blocks[0][2] is None else np.concatenate([b[2] for b in blocks])
    return X, y, w


def train_partition(job: str, rank: int, source: tuple, spec: dict[str, Any]) -> dict[str, Any]:
    """Train on one partition until the parameter server says stop.

    Parameters
    ----------
    job : str
        The job id on the parameter server.
    rank : int
        This member's index; it names the partition, not the worker, so a rerun
        on another worker takes the same rows.
    source : tuple
        Where the rows come from (see :func:`_load`).
    spec : dict
        ``loss``, ``epsilon``, ``batches_per_epoch``, ``seed``, ``mode``.

    Returns
    -------
    dict
        ``rank``, ``worker`` and ``pushes`` (gradients this task sent).

    Raises
    ------
    TrainingError
        When the parameter server rejects a message (the job vanished, a bug).
    """
    from daskgd.kernels import grad_loss

    worker = get_worker()
    secede()
    address = worker.address

    def call(op: str, **kwargs: Any) -> dict[str, Any]:
        reply = sync(worker.loop, getattr(worker.scheduler, op), job=job, **kwargs)
        if reply.get("status") == "error":
            raise TrainingError(
                f"the parameter server rejected {op} from rank {rank} on {address}: "
                f"{reply.get('message')}"
            )
        return reply

    X, y, sw = _load(source)
    n, d = X.shape
    nb = int(spec["batches_per_epoch"])
    if n < nb:
        raise TrainingError(f"rank {rank} has {n} rows, fewer than {nb} batches per epoch")
    bounds = np.linspace(0, n, nb + 1).round().astype(np.intp)
    if nb > 1:  # buffers the per-epoch permutation is written into
        Xb, yb = np.empty_like(X), np.empty_like(y)
        swb = None if sw is None else np.empty_like(sw)
    else:
        Xb, yb, swb = X, y, sw
    reply = call("daskgd_join", rank=rank, worker=address)
    params, version, position = reply["params"], reply["version"], reply["position"]
    out = np.empty(params.shape, dtype=X.dtype)
    # check labels and weights once for the whole partition; the kernel then skips it
    multinomial = params.ndim == 2
    check_targets(
        get_loss(spec["loss"]),
        y,
        multinomial=multinomial,
        n_classes=params.shape[1] if multinomial else 0,
        name=f"y (rank {rank})",
    )
    if sw is not None and np.any(sw < 0):
        raise ValueError(f"sample_weight of rank {rank} has negative entries")
    loaded_epoch = -1
    pushes = 0
    sync_mode = spec["mode"] == "sync"
    while reply["status"] != "stopped":
        epoch, b = divmod(position, nb)
        if nb > 1 and epoch != loaded_epoch:
            perm = np.random.default_rng([spec["seed"], rank, epoch]).permutation(n)
            np.take(X, perm, axis=0, out=Xb)
            np.take(y, perm, out=yb)
            if sw is not None:
                np.take(sw, perm, out=swb)
            loaded_epoch = epoch
        lo, hi = int(bounds[b]), int(bounds[b + 1])
        swi = None if swb is None else swb[lo:hi]
        loss, _, _ = grad_loss(
            Xb[lo:hi],
            yb[lo:hi],
            params[:d],
            params[d],
            loss=spec["loss"],
            sample_weight=swi,
            out=out,
            epsilon=spec["epsilon"],
            check_input=False,
        )
        weight = float(hi - lo) if swi is None else float(swi.sum(dtype=np.float64))
        reply = call(
            "daskgd_push",
            rank=rank,
            version=version,
            grad=ToPickle(out.astype(np.float64)),  # a copy: ``out`` is reused
            n=hi - lo,
            weight=weight,
            loss=loss,
            worker=address,
        )
        pushes += 1
        params, version = reply["params"], reply["version"]
        if sync_mode:
            position = version
        elif reply["status"] == "OK":
            position += 1
    return {"rank": rank, "worker": address, "pushes": pushes}
