"""The training loop of a key-value (sparse) job: push the touched keys, pull the next ones.

A batch of CSR rows touches few of the model's columns. For each batch the task lists them
and renumbers the batch to them (:func:`daskgd.kernels.compact_columns`), computes the
summed loss and gradient with the weights at those keys only, and pushes the gradient at
the keys (in the data's precision) with the keys of its *next* batch: the reply carries
the weights there, so one round trip a batch moves data proportional to the batches'
keys, never to d. The first batch's weights come from a pull.

When a batch touches more than
:data:`~daskgd.parameter_server.keyed_handlers.DENSE_PULL_FRACTION` of the columns the
task asks for the whole model instead (no keys sent): then that costs fewer bytes.

In sync mode a reply's version is the task's next position (as in the dense loop); a
``stale`` reply (its round closed without it) or a reply for another batch than the one
prefetched is followed by a pull at the right batch's keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from daskgd.parameter_server.keyed_handlers import DENSE_PULL_FRACTION

__all__ = ["KeyedBatch", "keyed_batch", "train_keyed"]


class KeyedBatch(NamedTuple):
    """One batch renumbered to the columns it touches."""

    keys: np.ndarray  # sorted unique global columns, int64
    X: Any  # CSR rows with column j standing for keys[j]
    y: np.ndarray
    sample_weight: np.ndarray | None
    offset: np.ndarray | None


def keyed_batch(pieces: Any) -> KeyedBatch:
    """A batch's pieces ``(X, y, sample_weight, offset)`` (CSR rows) as one
    :class:`KeyedBatch`.

    Raises
    ------
    TypeError
        When the rows are not sparse (a key-value job trains on CSR rows only).
    """
    import scipy.sparse as sp

    from daskgd.kernels import compact_columns

    pieces = list(pieces)
    if not all(sp.issparse(p[0]) for p in pieces):
        raise TypeError(
            "a key-value (sparse) job got dense rows: its data must be scipy.sparse CSR blocks"
        )
    if len(pieces) == 1:
        X, y, sw, off = pieces[0]
    else:  # out of core: a batch may span chunks
        X = sp.vstack([p[0] for p in pieces], format="csr")
        y = np.concatenate([p[1] for p in pieces])
        sw = None if pieces[0][2] is None else np.concatenate([p[2] for p in pieces])
        off = None if pieces[0][3] is None else np.concatenate([p[3] for p in pieces])
    keys, X_local = compact_columns(sp.csr_matrix(X))
    return KeyedBatch(keys, X_local, y, sw, off)


def _weights(reply: dict[str, Any], batch: KeyedBatch, dense: bool) -> tuple[np.ndarray, Any]:
    w = np.asarray(reply["w"])
    return (w[batch.keys] if dense else w), reply["b"]


def train_keyed(
    call: Callable[..., dict[str, Any]],
    reply: dict[str, Any],
    batches: Any,
    spec: dict[str, Any],
    *,
    rank: int,
    worker: str,
    shape: tuple[int, ...],
    started: float,
) -> dict[str, Any]:
    """The loop of a key-value job's training task, from its ``join`` reply to the stop.

    Parameters
    ----------
    call : callable
        ``call(op, **kwargs)``: one parameter-server call (the training task's, which
        turns a closed job or a superseded run into a ``stopped`` reply).
    reply : dict
        The ``join`` reply (``version``, ``position``).
    batches : InMemoryBatches or StreamingBatches
        The rank's rows (CSR), cut into batches.
    spec : dict
        The training task's spec (see :func:`daskgd.worker.train_partition`).
    rank, worker : int, str
        This member and its worker's address.
    shape : tuple
        The parameters' shape, ``(d + 1,)`` or ``(d + 1, k)``.
    started : float
        ``time.perf_counter()`` when the task started (its load time).

    Returns
    -------
    dict
        As :func:`daskgd.worker.train_partition`'s, with ``pull_bytes``: the bytes of
        the weights the task received.
    """
    from daskgd.kernels import grad_loss

    clock = time.perf_counter
    d = shape[0] - 1
    nb = int(spec["batches_per_epoch"])
    sync = spec["mode"] == "sync"
    pause = float((spec.get("delay") or {}).get(rank, 0.0))
    power = float(spec.get("power", 1.5))
    version, position = reply["version"], reply["position"]

    def batch_at(pos: int) -> KeyedBatch:
        return keyed_batch(batches.pieces(*divmod(pos, nb)))

    def whole(batch: KeyedBatch) -> bool:  # the whole model costs fewer bytes
        return batch.keys.size > DENSE_PULL_FRACTION * d

    def pull(batch: KeyedBatch) -> dict[str, Any]:
        dense = whole(batch)
        return call("kpull", rank=rank, keys=None if dense else batch.keys, dense=dense)

    pushes = pushed = pulled = 0
    first = "initial" in reply  # this rank has not reported yet (not a rerun)
    cur = batch_at(position)
    if reply["status"] != "stopped":
        reply = pull(cur)
    w, b = (None, None) if reply["status"] == "stopped" else _weights(reply, cur, whole(cur))
    pulled += 0 if w is None else reply["w"].nbytes
    if first and reply["status"] != "stopped":
        # before any step: the losses of the first batch at the start and at zero (the
        # divergence reference) and, for learning_rate="auto", the rows' curvature
        kw = dict(loss=spec["loss"], sample_weight=cur.sample_weight, epsilon=spec["epsilon"],
                  check_input=False, offset=cur.offset, power=power)  # fmt: skip
        loss0 = grad_loss(cur.X, cur.y, w, b, **kw)[0]
        loss_zero = grad_loss(cur.X, cur.y, np.zeros_like(w), np.zeros_like(b), **kw)[0]
        sw = cur.sample_weight
        weight0 = float(len(cur.y)) if sw is None else float(sw.sum(dtype=np.float64))
        curvature = gram = None
        if spec.get("curvature") is not None:
            *figures, gram = batches.curvature(bool(spec["curvature"]["intercept"]),
                                               int(spec["seed"]))  # fmt: skip
            curvature = tuple(figures)
        ready = call("kready", rank=rank, worker=worker, loss0=loss0, loss_zero=loss_zero,
                     weight=weight0, curvature=curvature, gram=gram)  # fmt: skip
        if ready["status"] == "stopped":
            reply = ready
    seconds = {"load": clock() - started, "kernel": 0.0, "push": 0.0}
    while reply["status"] != "stopped":
        t0 = clock()
        loss, grad, grad_b = grad_loss(
            cur.X, cur.y, w, b, loss=spec["loss"], sample_weight=cur.sample_weight,
            epsilon=spec["epsilon"], check_input=False, offset=cur.offset, power=power,
        )  # fmt: skip
        rows = len(cur.y)
        sw = cur.sample_weight
        weight = float(rows) if sw is None else float(sw.sum(dtype=np.float64))
        nxt_pos = position + 1
        nxt = batch_at(nxt_pos)
        dense = whole(nxt)
        if pause:
            time.sleep(pause)  # a straggler on purpose (tests); the task has seceded
        t1 = clock()
        reply = call("kpush", rank=rank, version=version, keys=cur.keys, grad=grad,
                     grad_b=grad_b, n=rows, weight=weight, loss=loss, worker=worker,
                     next_keys=None if dense else nxt.keys, dense=dense)  # fmt: skip
        pushes += 1
        pushed += cur.keys.nbytes + grad.nbytes + np.asarray(grad_b).nbytes
        pushed += 0 if dense else nxt.keys.nbytes
        seconds["kernel"] += t1 - t0
        seconds["push"] += clock() - t1
        if reply["status"] == "stopped":
            break
        version = reply["version"]
        if sync:
            new_pos = version
        else:
            new_pos = position + 1 if reply["status"] == "OK" else position
        if new_pos == nxt_pos:
            cur = nxt
        else:  # the reply's weights are for another batch: fetch the right ones
            cur = batch_at(new_pos)
            dense = whole(cur)
            reply = pull(cur)
            if reply["status"] == "stopped":
                break
        position = new_pos
        w, b = _weights(reply, cur, dense)
        pulled += reply["w"].nbytes
    return {"rank": rank, "worker": worker, "pushes": pushes, "push_bytes": pushed,
            "pull_bytes": pulled, "seconds": seconds}  # fmt: skip
