"""The training task: one long-running task per Dask worker.

:func:`train_partition` loads its rank's row-chunks once (from Zarr with
:func:`daskgd.data.chunkio.read_row_chunks`, or as blocks the cluster computed), joins the
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
from distributed.protocol import ToPickle
from distributed.utils import sync

from daskgd._version import __version__
from daskgd.errors import TrainingError
from daskgd.objective.losses import check_targets, get_loss

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
    """Concatenate the rank's chunks: ``("zarr", path, chunks, options, sizes)`` or
    ``("blocks", blocks)``."""
    if source[0] == "zarr":
        from daskgd.data.chunkio import read_row_chunks

        _, path, chunks, options, _ = source
        return read_row_chunks(path, chunks, storage_options=options)
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


Piece = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]

#: Rows of its first batch on which a rank measures the loss before any step (an estimate
#: of the whole batch's for larger batches; sync full-batch fits take the exact value from
#: their first round).
_MEASURE_ROWS = 8192


def _head(pieces, rows: int) -> list[Piece]:
    """The first ``rows`` rows of a batch's pieces."""
    out: list[Piece] = []
    for X, y, sw in pieces:
        if rows <= 0:
            break
        out.append((X[:rows], y[:rows], None if sw is None else sw[:rows]))
        rows -= len(y)
    return out


#: Up to this many parameters (features plus the intercept) the curvature of a rank's rows
#: is the largest eigenvalue of their Gram matrix, computed exactly; above, it is estimated
#: by power iteration.
GRAM_MAX = 1024
#: Up to this many parameters a rank sends its Gram matrix itself, so that the parameter
#: server takes the exact top eigenvalue of the whole data's (at most 512 KiB a rank).
GRAM_SEND_MAX = 256
_POWER_ITERATIONS = 40
_POWER_MARGIN = 1.5
_BLOCK_ROWS = 8192


class _Gram:
    """``A^T W A`` of the rows fed to it, ``A`` the rows with a column of ones for the
    intercept, and the weighted sum of their squared norms."""

    def __init__(self, d: int, intercept: bool) -> None:
        self.intercept = intercept
        self.G = np.zeros((d + intercept, d + intercept)) if d + intercept <= GRAM_MAX else None
        self.sq = 0.0
        self.weight = 0.0

    def add(self, X: np.ndarray, sw: np.ndarray | None) -> None:
        for lo in range(0, X.shape[0], _BLOCK_ROWS):
            Xb = np.asarray(X[lo : lo + _BLOCK_ROWS], dtype=np.float64)
            w = None if sw is None else np.asarray(sw[lo : lo + _BLOCK_ROWS], dtype=np.float64)
            WX = Xb if w is None else Xb * w[:, None]
            wsum = float(Xb.shape[0]) if w is None else float(w.sum())
            self.weight += wsum
            self.sq += float(np.einsum("ij,ij->", WX, Xb)) + (wsum if self.intercept else 0.0)
            if self.G is None:
                continue
            d = Xb.shape[1]
            self.G[:d, :d] += WX.T @ Xb
            if self.intercept:
                col = WX.sum(axis=0)
                self.G[:d, d] += col
                self.G[d, :d] += col
                self.G[d, d] += wsum

    def sendable(self) -> np.ndarray | None:
        """The Gram matrix when it is small enough to send (see :data:`GRAM_SEND_MAX`)."""
        if self.G is None or self.G.shape[0] > GRAM_SEND_MAX:
            return None
        return self.G

    def top(self) -> float | None:
        """The largest eigenvalue of the Gram matrix (None when it was too large to form)."""
        if self.G is None:
            return None
        return float(np.linalg.eigvalsh(self.G)[-1]) if self.G.size else 0.0


def _power_top(X: np.ndarray, sw: np.ndarray | None, intercept: bool, seed: int) -> float:
    """An estimate of the largest eigenvalue of ``A^T W A`` by power iteration.

    The Rayleigh quotient approaches the top eigenvalue from below; the caller scales it
    by a margin, so that a step ``1 / L`` stays below the ``2 / lambda_max`` where full-batch
    descent on a quadratic would diverge even when the estimate is off by a third.
    """
    d = X.shape[1]
    v = np.random.default_rng([seed, 7]).standard_normal(d + intercept)
    v /= np.linalg.norm(v)
    theta = 0.0
    for _ in range(_POWER_ITERATIONS):
        u = X @ v[:d].astype(X.dtype) + (v[d] if intercept else 0.0)
        wu = u if sw is None else u * sw
        z = np.empty_like(v)
        z[:d] = X.T @ wu.astype(X.dtype)
        if intercept:
            z[d] = float(wu.sum())
        theta = float(v @ z)
        nz = float(np.linalg.norm(z))
        if nz == 0.0:
            break
        v = z / nz
    return theta


class _InMemory:
    """The rank's rows, loaded once; batches cut from a per-epoch permutation of them."""

    def __init__(self, source: tuple, nb: int, seed: int, rank: int, check) -> None:
        self.X, self.y, self.sw = _load(source)
        self.y = check(self.y, self.sw, "")
        self.n, self.nb, self.key = self.X.shape[0], nb, (seed, rank)
        self.bounds = np.linspace(0, self.n, nb + 1).round().astype(np.intp)
        if nb > 1:  # buffers the per-epoch permutation is written into
            self.Xb, self.yb = np.empty_like(self.X), np.empty_like(self.y)
            self.swb = None if self.sw is None else np.empty_like(self.sw)
        else:
            self.Xb, self.yb, self.swb = self.X, self.y, self.sw
        self.epoch = -1

    def curvature(self, intercept: bool, seed: int):
        """(top eigenvalue of ``A^T W A``, weighted sum of squared row norms, weight, and
        ``A^T W A`` itself when small enough to send, else None)."""
        g = _Gram(self.X.shape[1], intercept)
        g.add(self.X, self.sw)
        top = g.top()
        if top is None:
            top = min(g.sq, _POWER_MARGIN * _power_top(self.X, self.sw, intercept, seed))
        return top, g.sq, g.weight, g.sendable()

    def pieces(self, epoch: int, b: int) -> list[Piece]:
        if self.nb > 1 and epoch != self.epoch:
            perm = np.random.default_rng([*self.key, epoch]).permutation(self.n)
            np.take(self.X, perm, axis=0, out=self.Xb)
            np.take(self.y, perm, out=self.yb)
            if self.sw is not None:
                np.take(self.sw, perm, out=self.swb)
            self.epoch = epoch
        lo, hi = int(self.bounds[b]), int(self.bounds[b + 1])
        return [(self.Xb[lo:hi], self.yb[lo:hi], None if self.swb is None else self.swb[lo:hi])]


class _Streaming:
    """The rank's row-chunks read from Zarr as batches need them, one at a time."""

    def __init__(self, source: tuple, nb: int, seed: int, rank: int, check) -> None:
        _, self.path, self.chunks, self.options, self.sizes = source
        self.n, self.nb, self.key, self.check = int(sum(self.sizes)), nb, (seed, rank), check
        self.bounds = np.linspace(0, self.n, nb + 1).round().astype(np.intp)
        self.held: tuple[Any, Piece | None] = (None, None)  # ((epoch, chunk), arrays)
        self.layout: tuple[int, list[tuple[int, int, int]]] = (-1, [])

    def _order(self, epoch: int) -> list[tuple[int, int, int]]:
        """(chunk, first row in the epoch's order, rows) for each chunk, in order."""
        if self.layout[0] != epoch:
            idx = list(range(len(self.chunks)))
            if self.nb > 1:
                idx = list(np.random.default_rng([*self.key, epoch]).permutation(idx))
            starts = np.concatenate([[0], np.cumsum([self.sizes[i] for i in idx])])
            order = [(self.chunks[i], int(starts[k]), self.sizes[i]) for k, i in enumerate(idx)]
            self.layout = (epoch, order)
        return self.layout[1]

    def _chunk(self, epoch: int, chunk: int) -> Piece:
        key, arrays = self.held
        if key == (epoch, chunk) and arrays is not None:
            return arrays
        from daskgd.data import load_chunk

        self.held = (None, None)  # let the previous chunk go before reading the next
        X, y, sw = load_chunk(self.path, chunk, storage_options=self.options)
        y = self.check(y, sw, f", chunk {chunk}")
        if self.nb > 1:
            perm = np.random.default_rng([*self.key, epoch, chunk + 1]).permutation(len(y))
            X, y = X[perm], y[perm]
            sw = None if sw is None else sw[perm]
        self.held = ((epoch, chunk), (X, y, sw))
        return X, y, sw

    def curvature(self, intercept: bool, seed: int):
        """As :meth:`_InMemory.curvature`, in one pass over the chunks; above
        :data:`GRAM_MAX` parameters the bound is the trace (the weighted sum of squared
        row norms), which needs no second pass."""
        from daskgd.data import load_chunk

        g: _Gram | None = None
        for chunk in self.chunks:
            X, _, sw = load_chunk(self.path, chunk, storage_options=self.options)
            g = g or _Gram(X.shape[1], intercept)
            g.add(X, sw)
        assert g is not None  # a rank has at least one chunk
        top = g.top()
        return (g.sq if top is None else top), g.sq, g.weight, g.sendable()

    def pieces(self, epoch: int, b: int):
        lo, hi = int(self.bounds[b]), int(self.bounds[b + 1])
        for chunk, start, rows in self._order(epoch):
            if start + rows <= lo or start >= hi:
                continue
            X, y, sw = self._chunk(epoch, chunk)
            a, z = max(lo, start) - start, min(hi, start + rows) - start
            yield X[a:z], y[a:z], None if sw is None else sw[a:z]


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
        ``loss``, ``epsilon``, ``batches_per_epoch``, ``seed``, ``mode``, ``out_of_core``,
        ``one_vs_rest`` (optional: the k columns of the parameters are k binary
        problems, one per class, and the targets class indices), and ``delay``
        (optional; a testing hook: rank -> seconds this rank sleeps before each push, to
        play a straggler).

    Returns
    -------
    dict
        ``rank``, ``worker``, ``pushes`` (gradients this task sent) and ``seconds``: the
        task's time split into ``load`` (joining and reading its rows), ``kernel``
        (gradients, including reads out of core) and ``push`` (sending a gradient until
        the reply: communication, the aggregator's step and, in sync mode, waiting for
        the round's other members).

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
        if op != "daskgd_join" and reply.get("kind") == "unknown_job":
            # the job existed when this task joined: the driver closed it (the fit ended)
            # while this push was on its way
            return {"status": "stopped"}
        if reply.get("status") == "error":
            raise TrainingError(
                f"the parameter server rejected {op} from rank {rank} on {address}: "
                f"{reply.get('message')}"
            )
        return reply

    clock = time.perf_counter
    started = clock()
    reply = call("daskgd_join", rank=rank, worker=address)
    params, version, position = reply["params"], reply["version"], reply["position"]
    d = params.shape[0] - 1
    multinomial = params.ndim == 2
    loss_info = get_loss(spec["loss"])

    classes = None if spec.get("classes") is None else np.asarray(spec["classes"])

    def check(y: np.ndarray, sw: np.ndarray | None, where: str) -> np.ndarray:
        # labels are encoded for the kernel (-1/+1 or 0..k-1) and, with the weights,
        # checked once per block read; the kernel then skips the check
        if classes is not None:
            idx = np.searchsorted(classes, y)
            known = (idx < len(classes)) & (classes[np.minimum(idx, len(classes) - 1)] == y)
            if not np.all(known):
                first = int(np.flatnonzero(~known)[0])
                raise ValueError(
                    f"y (rank {rank}{where}) holds the label {y[first]!r}, which is not among "
                    f"the dataset's classes {classes.tolist()}"
                )
            y = (idx if multinomial else 2 * idx - 1).astype(y.dtype if y.dtype.kind == "f"
                                                              else np.float64)  # fmt: skip
        check_targets(loss_info, y, multinomial=multinomial,
                      n_classes=params.shape[1] if multinomial else 0,
                      name=f"y (rank {rank}{where})")  # fmt: skip
        if sw is not None and np.any(sw < 0):
            raise ValueError(f"sample_weight of rank {rank}{where} has negative entries")
        return y

    # one-vs-rest: params is (d + 1, k), the targets are class indices, and column j is the
    # binary problem "class j (+1) against the rest (-1)"; one pass of the binary kernel per
    # column, all k columns pushed together (one round trip per batch for the k problems)
    ovr = multinomial and bool(spec.get("one_vs_rest"))
    nb = int(spec["batches_per_epoch"])
    kind = _Streaming if spec.get("out_of_core") else _InMemory
    batches = kind(source, nb, int(spec["seed"]), rank, check)
    if batches.n < nb:
        raise TrainingError(f"rank {rank} has {batches.n} rows, fewer than {nb} batches per epoch")
    buffers: dict[Any, np.ndarray] = {}  # kernel output buffers by dtype, reused

    def gradient(pieces, P: np.ndarray) -> tuple[float, int, float, np.ndarray | None, Any]:
        """Summed loss, rows, weight, summed gradient (and, one-vs-rest, each class's
        summed loss) at ``P`` over a batch's pieces."""
        loss, rows, weight, grad = 0.0, 0, 0.0, None
        class_loss = None
        for Xp, yp, swp in pieces:
            if ovr:
                piece_grad, piece_losses = _one_vs_rest(Xp, yp, swp, P, spec)
                loss += math.fsum(piece_losses)
                class_loss = piece_losses if class_loss is None else class_loss + piece_losses
                rows += len(yp)
                weight += float(len(yp)) if swp is None else float(swp.sum(dtype=np.float64))
                grad = piece_grad if grad is None else grad + piece_grad
                continue
            out = buffers.get(Xp.dtype)
            if out is None:
                out = buffers[Xp.dtype] = np.empty(P.shape, dtype=Xp.dtype)
            piece_loss, _, _ = grad_loss(Xp, yp, P[:d], P[d], loss=spec["loss"],
                                         sample_weight=swp, out=out, epsilon=spec["epsilon"],
                                         check_input=False)  # fmt: skip
            loss += piece_loss
            rows += len(yp)
            weight += float(len(yp)) if swp is None else float(swp.sum(dtype=np.float64))
            # a float64 copy: ``out`` is reused for the next piece and the next batch
            grad = out.astype(np.float64) if grad is None else grad + out
        return loss, rows, weight, grad, class_loss

    if reply.get("initial") is not None and reply["status"] != "stopped":
        # before any step: the loss and gradient at the job's starting parameters and the
        # loss at zero on this rank's first batch (the references of the divergence and
        # gtol_rel tests), and, for learning_rate="auto", the curvature of its rows
        first = _head(batches.pieces(*divmod(position, nb)), _MEASURE_ROWS)
        initial = np.asarray(reply["initial"])
        loss0, _, weight0, grad0, _ = gradient(first, initial)
        zero = not np.any(initial)
        loss_zero = loss0 if zero else gradient(first, np.zeros_like(initial))[0]
        curvature = gram = None
        if spec.get("curvature") is not None:
            *curvature, gram = batches.curvature(bool(spec["curvature"]["intercept"]),
                                                 int(spec["seed"]))  # fmt: skip
            curvature = tuple(curvature)
        reply = call("daskgd_ready", rank=rank, worker=address, loss0=loss0,
                     loss_zero=loss_zero, grad0=ToPickle(grad0), weight=weight0,
                     curvature=curvature,
                     gram=None if gram is None else ToPickle(gram))  # fmt: skip
        if reply["status"] != "stopped":
            params, version = reply["params"], reply["version"]
            if spec["mode"] == "sync":
                position = version
    pushes = 0
    seconds = {"load": clock() - started, "kernel": 0.0, "push": 0.0}
    sync_mode = spec["mode"] == "sync"
    pause = float((spec.get("delay") or {}).get(rank, 0.0))
    while reply["status"] != "stopped":
        epoch, b = divmod(position, nb)
        t0 = clock()
        loss, rows, weight, grad, class_loss = gradient(batches.pieces(epoch, b), params)
        if pause:
            time.sleep(pause)  # a straggler on purpose (tests); the task has seceded
        t1 = clock()
        reply = call(
            "daskgd_push",
            rank=rank,
            version=version,
            grad=ToPickle(grad),
            n=rows,
            weight=weight,
            loss=loss,
            worker=address,
            **({"class_loss": ToPickle(class_loss)} if ovr else {}),
        )
        pushes += 1
        seconds["kernel"] += t1 - t0
        seconds["push"] += clock() - t1
        if reply["status"] == "stopped":
            break
        params, version = reply["params"], reply["version"]
        if sync_mode:
            position = version
        elif reply["status"] == "OK":
            position += 1
    return {"rank": rank, "worker": address, "pushes": pushes, "seconds": seconds}
