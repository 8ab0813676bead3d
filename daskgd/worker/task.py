"""The training task: one long-running task per Dask worker.

:func:`train_partition` loads its rank's row-chunks once (from Zarr with
:func:`daskgd.data.chunkio.read_row_chunks`, or as blocks the cluster computed; a full-batch
rank holds them one piece per chunk, mapped from uncompressed chunk files:
:mod:`daskgd.worker.chunk_batches`), joins the job on the parameter server, then loops: take
a mini-batch, compute the summed loss and gradient with the compiled kernel (which releases
the GIL, so the worker's heartbeats go on), push them, continue from the parameters in the
reply, until the reply says ``stopped``.

The task secedes from the worker's thread pool at once: Dask has no gang
scheduling, and a sync round needs every member running together. Seceding
frees the slot, so a task rerun after a worker died can start on a worker that
already runs another member instead of queueing behind it.

Mini-batches are drawn without replacement per epoch: the rank's rows are
permuted with ``numpy.random.default_rng([seed, rank, epoch])`` into a
preallocated buffer and cut into ``batches_per_epoch`` contiguous slices, so a
batch is a C-contiguous view and sync mode is bitwise reproducible.

Out of core (``spec["out_of_core"]``), nothing is loaded up front: a batch is a
range of rows in the epoch's order of the rank's chunks, read from Zarr chunk by
chunk when it is needed (one chunk in memory at a time), and its gradient is the
sum of the kernel's results over the pieces. The order shuffles the chunks, and
the rows within each chunk, per epoch.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from distributed import get_worker, secede

from daskgd._version import __version__
from daskgd.allocator import FreedMemory
from daskgd.errors import (
    DataValidationError,
    ParameterServerError,
    SupersededError,
    TrainingError,
    UnknownJobError,
)
from daskgd.objective import check_targets, get_loss
from daskgd.objective.losses import encode_labels
from daskgd.parameter_server import ParameterServerClient
from daskgd.worker.batches import MEASURE_ROWS, column_squares, head
from daskgd.worker.chunk_batches import ChunkBatches, open_batches
from daskgd.worker.moves import assigned_chunks, take_chunks

__all__ = ["probe", "train_partition"]


def probe() -> str:
    """Return the daskgd version; run on every worker to check daskgd is importable there."""
    return __version__


def _one_vs_rest(
    X: np.ndarray, y: np.ndarray, sw: np.ndarray | None, params: np.ndarray, spec: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """The k binary one-vs-rest problems on one piece of rows: (gradient, per-class loss).

    ``y`` holds class indices; column ``j`` of ``params`` (``d + 1`` rows, the intercept
    last) is the model of class ``j`` against the rest. Returns the float64 gradient of
    shape ``params.shape`` and the k summed losses.
    """
    from daskgd.kernels import grad_loss

    d, k = params.shape[0] - 1, params.shape[1]
    cols = np.ascontiguousarray(params.T)  # row j: class j's weights, then its intercept
    out = np.empty(d + 1, dtype=X.dtype)
    grad = np.empty(params.shape, dtype=np.float64)
    losses = np.empty(k, dtype=np.float64)
    for j in range(k):
        yj = np.where(y == j, 1.0, -1.0).astype(y.dtype, copy=False)
        losses[j], _, _ = grad_loss(X, yj, cols[j, :d], cols[j, d], loss=spec["loss"],
                                    sample_weight=sw, out=out, epsilon=spec["epsilon"],
                                    check_input=False)  # fmt: skip
        grad[:, j] = out
    return grad, losses


def train_partition(job: str, rank: int, source: tuple, spec: dict[str, Any]) -> dict[str, Any]:
    """Train on one partition until the parameter server says stop.

    BLAS uses at most the worker's threads meanwhile: one training task runs on a worker,
    with all its threads, and the only BLAS call, the Newton Hessian's ``syrk``, must not
    start more threads than that (a BLAS left on its own, or told by an inherited
    ``OPENBLAS_NUM_THREADS``, takes every core, and two workers on two cores then fight
    over them: measured 3x-7x slower Newton passes).

    Parameters
    ----------
    job : str
        The job id on the parameter server.
    rank : int
        This member's index; it names the partition, not the worker, so a rerun
        on another worker takes the same rows.
    source : tuple
        Where the rows come from (see :func:`daskgd.worker.batches.load_rows`).
    spec : dict
        ``loss``, ``epsilon``, ``batches_per_epoch``, ``seed``, ``mode``, ``out_of_core``,
        ``one_vs_rest`` (optional: the k columns of the parameters are k binary
        problems, one per class, and the targets class indices), ``hessian``
        (optional: optimizer ``newton``; a push carries the rows' summed Hessian too,
        from :func:`daskgd.kernels.grad_hess`, when the server's last reply asked for it
        with ``hessian=True``), ``fit_intercept`` (optional, default
        True: with False the kernel may skip the intercept's row of the Hessian),
        ``power`` (optional, default 1.5: the Tweedie power), and ``delay``
        (optional; a testing hook: rank -> seconds this rank sleeps before each push, to
        play a straggler), ``keyed`` (optional: ``{"shape": ...}``, the parameters' shape
        of a key-value job, trained by :func:`daskgd.worker.keyed_loop.train_keyed`).

    Returns
    -------
    dict
        ``rank``, ``worker``, ``pushes`` (gradients this task sent), ``push_bytes`` (their
        bytes: float32 data pushes float32 gradients) and ``seconds``: the
        task's time split into ``load`` (joining and reading its rows), ``kernel``
        (gradients, including reads out of core) and ``push`` (sending a gradient until
        the reply: communication, the parameter server's step and, in sync mode, waiting for
        the round's other members).

    Raises
    ------
    TrainingError
        When the parameter server rejects a message (the job vanished, a bug).
    """
    from threadpoolctl import threadpool_limits

    with (
        threadpool_limits(limits=max(1, int(get_worker().state.nthreads)), user_api="blas"),
        FreedMemory() as memory,
    ):
        return _train(job, rank, source, spec, memory)


def _train(
    job: str, rank: int, source: tuple, spec: dict[str, Any], memory: FreedMemory
) -> dict[str, Any]:
    """The loop of :func:`train_partition`; ``memory`` keeps the freed buffers of the
    model's size for reuse (:mod:`daskgd.allocator`)."""
    from daskgd.kernels import grad_loss

    worker = get_worker()
    secede()
    address = worker.address
    ps = ParameterServerClient.from_worker(job, worker)
    keyed = spec.get("keyed") or {}
    if keyed.get("shards"):  # a key-value model in key-hashed shards on workers
        ps.use_kshards(keyed["shards"], tuple(keyed["shape"]), spec["mode"], worker)

    def call(op: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return ps.call_sync(op, **kwargs)
        except UnknownJobError:
            if op == "join":
                raise
            # the job existed when this task joined: the driver closed it (the fit ended)
            # while this push was on its way
            return {"status": "stopped"}
        except SupersededError:
            # a newer run of this rank joined (this worker was thought lost and the task
            # rerun elsewhere): this run ends quietly, its result unused
            return {"status": "stopped"}
        except ParameterServerError as exc:
            raise TrainingError(
                f"the parameter server rejected {op} from rank {rank} on {address}: {exc}"
            ) from exc

    clock = time.perf_counter
    started = clock()
    reply = call("join", rank=rank, worker=address)
    params, version, position = reply["params"], reply["version"], reply["position"]
    # a key-value job's parameters stay on the server: its shape comes with the spec
    shape = tuple(spec["keyed"]["shape"]) if spec.get("keyed") else params.shape
    if not spec.get("keyed"):  # every reply carries the parameters
        memory.keep(8 * math.prod(shape))
    d = shape[0] - 1
    multinomial = len(shape) == 2
    loss_info = get_loss(spec["loss"])

    classes = None if spec.get("classes") is None else np.asarray(spec["classes"])

    def check(y: np.ndarray, sw: np.ndarray | None, where: str) -> np.ndarray:
        # labels are encoded for the kernel (-1/+1 or 0..k-1) and, with the weights,
        # checked once per block read; the kernel then skips the check
        if classes is not None:
            y = encode_labels(y, classes, multinomial, f"y (rank {rank}{where})")
        try:
            check_targets(loss_info, y, multinomial=multinomial,
                          n_classes=shape[1] if multinomial else 0,
                          name=f"y (rank {rank}{where})",
                          power=spec.get("power", 1.5))  # fmt: skip
        except ValueError as exc:  # the data, not the training: raised as it is
            raise DataValidationError(str(exc)) from None
        if sw is not None and np.any(sw < 0):
            raise ValueError(f"sample_weight of rank {rank}{where} has negative entries")
        return y

    # one-vs-rest: params is (d + 1, k), the targets are class indices, and column j is the
    # binary problem "class j (+1) against the rest (-1)"; one pass of the binary kernel per
    # column, all k columns pushed together (one round trip per batch for the k problems)
    ovr = multinomial and bool(spec.get("one_vs_rest"))
    nb = int(spec["batches_per_epoch"])
    chunk_rows: list[int] = spec.get("chunk_rows") or []  # placement="latency": chunks move
    assigned = assigned_chunks(reply, rank)
    if assigned is not None:  # a rerun task takes the rank's chunks as they are now
        source = (*source[:2], assigned[1], source[3], [chunk_rows[c] for c in assigned[1]])
    loading = clock()
    batches = open_batches(source, nb, int(spec["seed"]), rank, check,
                           out_of_core=bool(spec.get("out_of_core")))  # fmt: skip
    read = [clock() - loading, batches.n]  # seconds and rows read since the last push
    if batches.n < nb:
        raise TrainingError(f"rank {rank} has {batches.n} rows, fewer than {nb} batches per epoch")
    if spec.get("keyed"):  # sparse rows, keys pushed and pulled: its own loop
        from daskgd.worker.keyed_loop import train_keyed

        return train_keyed(call, reply, batches, spec, rank=rank, worker=address, shape=shape,
                           started=started)  # fmt: skip
    buffers: dict[Any, np.ndarray] = {}  # kernel output buffers by dtype, reused
    power = float(spec.get("power", 1.5))  # the Tweedie power (the other losses ignore it)

    def gradient(pieces, P: np.ndarray) -> tuple[float, int, float, np.ndarray | None, Any]:
        """Summed loss, rows, weight, summed gradient (and, one-vs-rest, each class's
        summed loss) at ``P`` over a batch's pieces."""
        loss, rows, weight, grad = 0.0, 0, 0.0, None
        class_loss = None
        dtypes: set[np.dtype] = set()
        for Xp, yp, swp, offp in pieces:
            if ovr:
                piece_grad, piece_losses = _one_vs_rest(Xp, yp, swp, P, spec)
                loss += math.fsum(piece_losses)
                class_loss = piece_losses if class_loss is None else class_loss + piece_losses
                rows += len(yp)
                weight += float(len(yp)) if swp is None else float(swp.sum(dtype=np.float64))
                grad = piece_grad if grad is None else grad + piece_grad
                continue
            out = buffers.pop(Xp.dtype, None)
            if out is None:
                out = np.empty(P.shape, dtype=Xp.dtype)
            piece_loss, _, _ = grad_loss(Xp, yp, P[:d], P[d], loss=spec["loss"],
                                         sample_weight=swp, out=out, epsilon=spec["epsilon"],
                                         check_input=False, offset=offp,
                                         power=power)  # fmt: skip
            loss += piece_loss
            rows += len(yp)
            weight += float(len(yp)) if swp is None else float(swp.sum(dtype=np.float64))
            dtypes.add(Xp.dtype)
            if grad is None:
                # the first piece's buffer is the gradient (no copy): a pushed gradient is
                # never written again, and the next batch gets a new buffer
                grad = out
            else:  # pieces are summed in float64; ``out`` is reused for the next piece
                grad = np.add(grad, out, dtype=np.float64)
                buffers[Xp.dtype] = out
        if grad is not None:
            # the gradient travels in the data's precision (each piece's is float32
            # already): half the bytes of a push; the server sums in float64
            f32 = not ovr and dtypes == {np.dtype(np.float32)}
            grad = grad.astype(np.float32 if f32 else np.float64, copy=False)
        return loss, rows, weight, grad, class_loss

    def gradient_hessian(pieces, P: np.ndarray) -> tuple[float, int, float, np.ndarray, Any]:
        """Newton: summed loss, rows, weight, summed gradient and Hessian at ``P`` over a
        batch's pieces, in one pass of the kernel per piece (float64 sums)."""
        loss, rows, weight = 0.0, 0, 0.0
        grad = hess = None
        for Xp, yp, swp, off in pieces:
            piece_loss, g, h = grad_hess(Xp, yp, P[:d], P[d], loss=spec["loss"],
                                         sample_weight=swp, offset=off,
                                         epsilon=spec["epsilon"], power=power,
                                         fit_intercept=fit_intercept,
                                         check_input=False)  # fmt: skip
            loss += piece_loss
            rows += len(yp)
            weight += float(len(yp)) if swp is None else float(swp.sum(dtype=np.float64))
            if grad is None:
                grad, hess = np.array(g, dtype=np.float64), np.array(h, dtype=np.float64)
            else:
                grad += g
                hess += h
        assert grad is not None and hess is not None  # a batch has at least one piece
        return loss, rows, weight, grad, hess

    newton = bool(spec.get("hessian"))
    fit_intercept = bool(spec.get("fit_intercept", True))
    if newton:
        from daskgd.kernels import grad_hess

    if reply.get("initial") is not None and reply["status"] != "stopped":
        # before any step: the loss and gradient at the job's starting parameters and the
        # loss at zero on this rank's first batch (the references of the divergence and
        # gtol_rel tests), and, for learning_rate="auto", the curvature of its rows
        first = head(batches.pieces(*divmod(position, nb)), MEASURE_ROWS)
        initial = np.asarray(reply["initial"])
        loss0, _, weight0, grad0, _ = gradient(first, initial)
        zero = not np.any(initial)
        loss_zero = loss0 if zero else gradient(first, np.zeros_like(initial))[0]
        curvature = gram = None
        if spec.get("curvature") is not None:
            *curvature, gram = batches.curvature(bool(spec["curvature"]["intercept"]),
                                                 int(spec["seed"]))  # fmt: skip
            curvature = tuple(curvature)
        # full-batch L-BFGS's preconditioner: one pass over the rank's rows
        colsq = column_squares(batches.pieces(0, 0), d) if spec.get("column_squares") else None
        if colsq is not None and not np.all(np.isfinite(colsq)):
            colsq = None  # values beyond 1e154: the fit runs without the preconditioner
        if colsq is not None and ps.shards:  # sharded: the shards take their rows' part
            call("shard_colsq", rank=rank, colsq=colsq, curvature=float(spec["loss_curvature"]))
            colsq = None
        reply = call("ready", rank=rank, worker=address, loss0=loss0, loss_zero=loss_zero,
                     grad0=grad0, weight=weight0, curvature=curvature, gram=gram,
                     colsq=colsq)  # fmt: skip
        if reply["status"] != "stopped":
            params, version = reply["params"], reply["version"]
            if spec["mode"] == "sync":
                position = version
    pushes = pushed = 0
    seconds = {"load": clock() - started, "kernel": 0.0, "push": 0.0}
    sync_mode = spec["mode"] == "sync"
    pause = float((spec.get("delay") or {}).get(rank, 0.0))
    while reply["status"] != "stopped":
        epoch, b = divmod(position, nb)
        t0 = clock()
        hess: np.ndarray | None = None
        grad: np.ndarray | None
        if newton and reply.get("hessian", True):
            loss, rows, weight, grad, hess = gradient_hessian(batches.pieces(epoch, b), params)
            class_loss = None
        else:
            loss, rows, weight, grad, class_loss = gradient(batches.pieces(epoch, b), params)
        if pause:
            time.sleep(pause)  # a straggler on purpose (tests); the task has seceded
        t1 = clock()
        timing = None
        if assigned is not None:  # measured on the rows of assignment ``assigned[0]``
            timing, read = [t1 - t0 - pause, *read, assigned[0]], [0.0, 0]
        reply = call(
            "push",
            rank=rank,
            version=version,
            grad=grad,
            n=rows,
            weight=weight,
            loss=loss,
            worker=address,
            class_loss=class_loss if ovr else None,
            hess=hess,
            timing=timing,
        )
        pushes += 1
        pushed += 0 if grad is None else grad.nbytes
        seconds["kernel"] += t1 - t0
        seconds["push"] += clock() - t1
        if reply["status"] == "stopped":
            break
        params, version = reply["params"], reply["version"]
        if sync_mode:
            position = version
        elif reply["status"] == "OK":
            position += 1
        now = assigned_chunks(reply, rank)
        # sync: the server moves chunks only between epochs; async/ssp: the task takes a
        # new assignment where its own epoch ends, so each epoch passes over its rows once
        boundary = sync_mode or position % nb == 0
        if assigned is not None and now is not None and now[0] != assigned[0] and boundary:
            assigned = now
            if sorted(now[1]) != sorted(source[2]):  # between epochs: this rank's rows move
                batches, source, seconds_read, rows_read = take_chunks(
                    batches, source, now[1], chunk_rows, rank, check)  # fmt: skip
                read = [seconds_read, rows_read]
                seconds["load"] += seconds_read
    if isinstance(batches, ChunkBatches):
        batches.verify()  # mapped chunk files: the rows trained on are still the dataset's
    return {
        "rank": rank,
        "worker": address,
        "pushes": pushes,
        "push_bytes": pushed,
        "seconds": seconds,
        "chunks": list(source[2]) if source[0] == "zarr" else None,
    }
