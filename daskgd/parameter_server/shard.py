"""Parameter shards on the workers: a :class:`ShardServer` worker plugin and its handlers.

With ``n_servers=K`` a job's parameters (rows ``0 .. d`` of ``(d + 1,)`` or ``(d + 1, k)``,
the last row the intercept) are cut into K contiguous ranges of rows, each held, with its
part of the optimizer state, by one worker. The plugin adds ``daskgd_shard_*`` handlers to
the worker's RPC server, as distributed's P2P shuffle adds its own
(``distributed/shuffle/_worker_plugin.py``): the training tasks push their gradients' slices
and pull fresh slices through distributed's comm and connection pool, and the coordinator
(the scheduler plugin) tells each shard when to sum a round and step.

A shard stores its rows with one extra last row when it does not hold the intercept: the
rules that act coordinate by coordinate (:meth:`daskgd.objective.Optimizer.apply`) treat
the last row as the unpenalised intercept, so the padding row (zero, with a zero
gradient) takes that part and every real row is stepped exactly as the whole-model server
steps it: the same float64 arithmetic in the same order, bitwise.

==============================  ==============================================================
handler                         arguments -> reply (besides ``status``)
==============================  ==============================================================
``daskgd_shard_create``         ``job, shard, params, optimizer, padded, version, state=None``
``daskgd_shard_push``           ``job, version, rank, incarnation, grad, wait=0`` (a slice)
                                -> (with ``wait``: once the round closed) ``params, version``
``daskgd_shard_round``          ``job, version, ranks, closing, mean_w, lr, t, weight,
                                weights`` ->
                                ``finite, without`` (and the epoch's ``penalty, grad_sq,
                                class_penalty`` when ``closing``)
``daskgd_shard_direction``      ``job, version, decision`` -> ``finite`` (L-BFGS: after a
                                ``round`` whose reply had the dot products, ``dots``)
``daskgd_shard_colsq``          ``job, shard, rank, colsq, curvature``: a rank's column
                                squares of the shard's rows (L-BFGS's preconditioner)
``daskgd_shard_apply``          ``job, rank, incarnation, grad, lr, t, weight, epoch, gen``
                                -> ``finite, params, version`` (async/ssp: applied now;
                                ``stale`` for a push of an older generation)
``daskgd_shard_epoch``          ``job, epoch, count, mean_w, wait`` -> ``got`` and the
                                epoch's pieces (async/ssp)
``daskgd_shard_hurry``          ``job, epoch``: a member died; closes of epochs up to
                                ``epoch`` wait :data:`HURRY_WAIT` s at most for pushes
``daskgd_shard_gone``           ``job, ranks``: sync; the runs ``[rank, incarnation]`` died:
                                a round waits :data:`HURRY_WAIT` s at most for their slices
                                and closes without them (its reply's ``without``)
``daskgd_shard_backup``         ``job, shard, replica``: keep a copy here, send one there
``daskgd_shard_keep``           ``job, shard, version, params, state, padded, optimizer``
``daskgd_shard_promote``        ``job, shard, version, source, gen``: rebuild the shard from
                                the replica of version ``source``
``daskgd_shard_restore``        ``job, shard, version, source, gen``: roll back to that copy
``daskgd_shard_drop``           ``job``: free the job's shards and backups on this worker
``daskgd_shard_rollback``       ``job, version``: undo the step that published ``version``
``daskgd_shard_pull``           ``job, version, wait`` -> ``params, version``
``daskgd_shard_export``         ``job`` -> ``params, state, version``
==============================  ==============================================================

The handlers run on the worker's event loop; sums and steps of more than
:data:`INLINE_ROWS` numbers run in a thread, one at a time per job.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Generic, TypeVar

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.protocol import ToPickle

from daskgd import allocator
from daskgd.objective import Optimizer
from daskgd.parameter_server.checks import error
from daskgd.parameter_server.shard_state import HURRY_WAIT, RoundSlices, ShardState, keep_version

__all__ = ["INLINE_ROWS", "SHARD_PLUGIN_NAME", "HandlerPlugin", "ShardServer"]

logger = logging.getLogger(__name__)

SHARD_PLUGIN_NAME = "daskgd-shards"
#: Numbers a shard sums and steps on the event loop; more go to a thread.
INLINE_ROWS = 1 << 16

_OPS = (
    "create", "push", "round", "apply", "epoch", "rollback", "pull", "export",
    "backup", "keep", "promote", "restore", "drop", "direction", "hurry", "colsq", "gone",
)  # fmt: skip
#: Seconds a round waits for a slice whose rank's scalars reached the coordinator.
SLICE_WAIT = 60.0


S = TypeVar("S", bound=RoundSlices)


def _bad_slice(s: ShardState, grad: Any) -> str:
    """What is wrong with ``grad`` as a slice of shard ``s`` (empty: nothing)."""
    want = s.rows.shape
    if not isinstance(grad, np.ndarray) or grad.shape != want or grad.dtype.kind != "f":
        got = getattr(grad, "shape", type(grad).__name__)
        return f"grad slice must be a float array of shape {want}, got {got}"
    return ""


class HandlerPlugin(WorkerPlugin, Generic[S]):
    """A worker plugin that holds its jobs' shards (``jobs``, by ``(job, shard)``) and
    serves them through handlers ``daskgd_<prefix>_<op>``, one method for each op in
    ``ops``, added to the worker's RPC server (the part the dense and the key-hashed
    shard servers share). It travels empty: what it holds stays on its worker."""

    idempotent = True
    #: the handlers' prefix after ``daskgd_``, and the methods they call
    prefix: str
    ops: tuple[str, ...]
    #: what a shard is called in the reply for one this worker does not hold
    noun: str

    def __init__(self) -> None:
        self.worker: Any = None
        self.jobs: dict[tuple[str, int], S] = {}

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()  # type: ignore[misc]

    def setup(self, worker) -> None:
        self.worker = worker
        worker.handlers.update({f"daskgd_{self.prefix}_{op}": getattr(self, op) for op in self.ops})

    def teardown(self, worker) -> None:
        for op in self.ops:
            worker.handlers.pop(f"daskgd_{self.prefix}_{op}", None)
        for s in self.jobs.values():
            allocator.release(s)
        self.jobs.clear()

    def _serve(self, key: tuple[str, int], s: S, nbytes: int = 0) -> None:
        """Hold ``s`` under ``key``; with ``nbytes`` (its rows' size) the worker keeps
        freed buffers of that size for reuse while it does (:mod:`daskgd.allocator`)."""
        old = self.jobs.get(key)
        if old is not None:
            allocator.release(old)
        self.jobs[key] = s
        if nbytes:
            allocator.hold(s, nbytes)

    def _get(self, job: Any, shard: Any) -> S | dict:
        if (job, shard) not in self.jobs:
            return error(f"no {self.noun} {shard!r} of job {job!r} on this worker",
                         kind="unknown_shard")  # fmt: skip
        return self.jobs[(job, shard)]

    async def gone(self, job, shard, ranks):
        """Sync: the runs ``ranks`` (``[rank, incarnation]`` pairs) died; a round waits for
        their slices only :data:`~daskgd.parameter_server.shard_state.HURRY_WAIT` seconds
        more, then closes without them (its reply names them: ``without``)."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        s.forget(ranks)
        return {"status": "OK"}

    async def drop(self, job):
        """Free every shard of ``job`` on this worker (the job ended)."""
        for key in [k for k in self.jobs if k[0] == job]:
            s = self.jobs.pop(key)
            allocator.release(s)
            s.closed = True
            s.notify()
            s.arrived.set()
        return {"status": "OK"}


class ShardServer(HandlerPlugin[ShardState]):
    """The worker half of sharded parameter servers (see the module docstring).

    Registered on every worker by the driver of a fit with ``n_servers >= 1``
    (``Client.register_plugin``, idempotent by name); workers that join later get it too.
    """

    name = SHARD_PLUGIN_NAME
    prefix = "shard"
    ops = _OPS
    noun = "shard"

    def __init__(self) -> None:
        super().__init__()
        #: backups of shards held by other workers: (job, shard) -> version -> what
        #: ``keep`` got
        self.replicas: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}

    async def _run(self, s: ShardState, fn: Any, *args: Any) -> Any:
        """Run a change of ``s`` as its only owner, in a thread for a large shard."""
        async with s.lock:
            if s.published[1].size <= INLINE_ROWS:
                return fn(*args)
            return await asyncio.to_thread(fn, *args)

    # -- handlers ------------------------------------------------------------------
    async def create(self, job, shard, params, optimizer, padded, version, state=None):
        if not isinstance(params, np.ndarray) or not isinstance(optimizer, Optimizer):
            return error("create: params must be an ndarray and optimizer an Optimizer")
        try:
            s = await asyncio.to_thread(ShardState, params, optimizer, bool(padded), version, state)
        except (TypeError, ValueError) as exc:
            return error(f"shard {shard} of job {job!r}: {exc}")
        self._serve((job, shard), s, s.published[1].nbytes)
        return {"status": "OK"}

    async def colsq(self, job, shard, rank, colsq, curvature):
        """L-BFGS's preconditioner: rank ``rank``'s column squares of this shard's rows
        (its first report stands) and the loss's curvature bound."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        n = s.rows.shape[0]
        ok = isinstance(colsq, np.ndarray) and colsq.shape == (n,) and colsq.dtype == np.float64
        if not (ok and bool(np.all(np.isfinite(colsq) & (colsq >= 0)))):
            return error(f"colsq must be a finite float64 array >= 0 of shape ({n},)")
        if not (isinstance(curvature, float) and 0 < curvature < np.inf):
            return error(f"curvature must be a finite number > 0, got {curvature!r}")
        s.colsq.setdefault(int(rank), colsq.copy())
        s.curvature = curvature
        return {"status": "OK"}

    async def push(self, job, shard, version, rank, incarnation, grad, wait=0.0):
        """Store a rank's slice for round ``version``; with ``wait`` > 0, reply once the
        round closed, with the new rows (a pull in the same round trip)."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        if version >= s.published[0]:
            bad = _bad_slice(s, grad)
            if bad:
                return error(bad)
            s.store(int(version), int(rank), incarnation, grad)
        if not wait:
            return {"status": "OK"}
        return await self.pull(job, shard, version + 1, wait)

    async def round(self, job, shard, version, ranks, closing, mean_w, lr, t, weight,
                    weights=None):  # fmt: skip
        """Close round ``version``: sum the ranks' slices (rank order), step, publish.
        ``weights``: each rank's; without a dead rank's slice, the step is the present
        ranks' mean (none present: the rows stay as they are)."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        if s.published[0] != version:
            return error(f"shard is at version {s.published[0]}, asked to close {version}")
        ranks = [(int(r), inc) for r, inc in ranks]
        # a dead run's slice that never came is left out (the coordinator counts it lost)
        round_ = await s.collect(int(version), ranks, float(weight), weights, SLICE_WAIT)
        if isinstance(round_, str):
            return error(round_)
        present, got, weight, missing = round_
        out = await self._run(s, s.round, int(version), present, got, bool(closing),
                              float(mean_w), float(lr), int(t), weight)  # fmt: skip
        s.notify()
        return {**out, "without": missing}

    async def direction(self, job, shard, version, decision):
        """L-BFGS: step to the point the coordinator's ``decision`` gives; publish it."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        if s.published[0] != version:
            return error(f"shard is at version {s.published[0]}, asked to step from {version}")
        finite = await self._run(s, s.direction, int(version), dict(decision))
        s.notify()
        return {"status": "OK", "finite": finite}

    async def apply(self, job, shard, rank, incarnation, grad, lr, t, weight, epoch, gen=0):
        """Async/ssp: apply one push's slice now; reply with the new rows (``stale``, and
        nothing applied, for a push admitted before the shards were last rebuilt)."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        bad = _bad_slice(s, grad)
        if bad:
            return error(bad)
        finite = await self._run(s, s.apply_push, grad, float(lr), int(t), float(weight),
                                 int(epoch), int(gen))  # fmt: skip
        if finite is None:
            return {"status": "stale", "version": s.published[0]}
        s.notify()
        v, P = s.published
        return {"status": "OK", "finite": finite, "version": v,
                "params": ToPickle(P[:-1] if s.padded else P)}  # fmt: skip

    async def epoch(self, job, shard, epoch, count, mean_w, wait):
        """Async/ssp: once ``count`` pushes of ``epoch`` were applied here (or after
        ``wait`` seconds: a task may have died between the coordinator and this shard),
        the epoch's pieces and how many pushes made it (``got``)."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        loop = asyncio.get_running_loop()
        start = loop.time()
        generation = s.generation
        while s.epoch_counts.get(epoch, 0) < count and not s.closed:
            hurried = epoch <= s.hurry_through
            left = start + (min(float(wait), HURRY_WAIT) if hurried else float(wait)) - loop.time()
            if left <= 0 or s.generation != generation:
                break
            try:
                await asyncio.wait_for(s.changed.wait(), left)
            except TimeoutError:
                pass
        if s.generation != generation:  # rebuilt meanwhile: that epoch starts again
            return error(f"shard {shard} was rolled back while epoch {epoch} closed")
        return await self._run(s, s.epoch_pieces, int(epoch), float(mean_w))

    async def hurry(self, job, shard, epoch):
        """Async/ssp: a member died; the closes of epochs up to ``epoch`` wait only
        :data:`HURRY_WAIT` seconds for pushes it may have had admitted."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        s.hurry_through = max(s.hurry_through, int(epoch))
        s.notify()
        return {"status": "OK"}

    async def rollback(self, job, shard, version):
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        if s.published[0] == version and s.previous[0] == version - 1:
            s.publish(*s.previous)  # undo the step to ``version``
            s.notify()
        return {"status": "OK"}

    async def pull(self, job, shard, version=0, wait=0.0):
        """The shard's rows once it reached ``version`` (waiting up to ``wait`` seconds)."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(wait)
        while s.published[0] < version and not s.closed:
            left = deadline - loop.time()
            if left <= 0:
                return error(f"shard at version {s.published[0]}, {version} asked", kind="timeout")
            try:
                await asyncio.wait_for(s.changed.wait(), left)
            except TimeoutError:
                pass
        v, P = s.published
        return {"status": "OK", "version": v, "params": ToPickle(P[:-1] if s.padded else P)}

    async def export(self, job, shard):
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        async with s.lock:
            out = s.export()
        return {"status": "OK", **{k: ToPickle(v) for k, v in out.items() if k != "version"},
                "version": out["version"]}  # fmt: skip

    async def backup(self, job, shard, replica, version=None):
        """Keep a copy of the shard here and send one to the worker ``replica``, filed
        under the coordinator's ``version``."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        async with s.lock:
            out = s.keep_backup(None if version is None else int(version))
        msg = {k: ToPickle(v) for k, v in out.items() if k != "version"}
        reply = await self.worker.rpc(replica).daskgd_shard_keep(
            job=job, shard=shard, version=out["version"], padded=s.padded,
            optimizer=ToPickle(s.optimizer), **msg,
        )  # fmt: skip
        if not (isinstance(reply, dict) and reply.get("status") == "OK"):
            return error(f"the replica on {replica} refused the backup: {reply!r}")
        return {"status": "OK", "version": out["version"]}

    async def keep(self, job, shard, version, params, state, padded, optimizer, scale=None):
        """Hold another worker's backup of shard ``shard`` of ``job`` (by version)."""
        if not isinstance(params, np.ndarray) or not isinstance(optimizer, Optimizer):
            return error("keep: params must be an ndarray and optimizer an Optimizer")
        kept = self.replicas.setdefault((job, shard), {})
        keep_version(kept, {"version": version, "params": params, "state": state,
                     "padded": padded, "optimizer": optimizer, "scale": scale})  # fmt: skip
        return {"status": "OK"}

    async def promote(self, job, shard, version, source, gen=0):
        """Rebuild shard ``shard`` here from the backup of version ``source`` this worker
        holds, published as ``version``."""
        b = self.replicas.get((job, shard), {}).get(source)
        if b is None:
            return error(f"no backup of shard {shard} of job {job!r} at {source} here")
        s = await asyncio.to_thread(ShardState, b["params"], b["optimizer"], bool(b["padded"]),
                                    version, b["state"])  # fmt: skip
        s.backups[source] = {k: b[k] for k in ("params", "state", "version")}
        s.scale = b.get("scale")  # L-BFGS goes on in the scaled variables it was in
        s.generation = int(gen)
        self._serve((job, shard), s, s.published[1].nbytes)
        return {"status": "OK"}

    async def restore(self, job, shard, version, source, gen=0):
        """Roll the shard back to its backup of version ``source``, published as
        ``version``; from now on it applies only pushes of generation ``gen``."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        if source not in s.backups:
            return error(f"shard {shard} of job {job!r} has no backup of version {source}")
        async with s.lock:
            s.restore_backup(int(version), int(source), int(gen))
        s.notify()
        return {"status": "OK"}

    async def drop(self, job):
        """Free every shard and backup of ``job`` on this worker (the job ended)."""
        for key in [k for k in self.replicas if k[0] == job]:
            del self.replicas[key]
        return await super().drop(job)
