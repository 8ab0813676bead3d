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
``daskgd_shard_round``          ``job, version, ranks, closing, mean_w, lr, t, weight`` ->
                                ``finite`` (and the epoch's ``penalty, grad_sq,
                                class_penalty`` when ``closing``)
``daskgd_shard_apply``          ``job, rank, incarnation, grad, lr, t, weight, epoch`` ->
                                ``finite, params, version`` (async/ssp: applied now)
``daskgd_shard_epoch``          ``job, epoch, count, mean_w, wait`` -> ``got`` and the
                                epoch's pieces (async/ssp)
``daskgd_shard_backup``         ``job, shard, replica``: keep a copy here, send one there
``daskgd_shard_keep``           ``job, shard, version, params, state, padded, optimizer``
``daskgd_shard_promote``        ``job, shard, version``: rebuild the shard from its replica
``daskgd_shard_restore``        ``job, shard, version``: roll back to the kept copy
``daskgd_shard_rollback``       ``job, version``: undo the step that published ``version``
``daskgd_shard_pull``           ``job, version, wait`` -> ``params, version``
``daskgd_shard_export``         ``job`` -> ``params, state, version``
``daskgd_shard_close``          ``job``
==============================  ==============================================================

The handlers run on the worker's event loop; sums and steps of more than
:data:`INLINE_ROWS` numbers run in a thread, one at a time per job.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.protocol import ToPickle

from daskgd.objective import Optimizer, soft_threshold
from daskgd.parameter_server.checks import error

__all__ = ["INLINE_ROWS", "SHARD_PLUGIN_NAME", "ShardServer", "ShardState"]

logger = logging.getLogger(__name__)

SHARD_PLUGIN_NAME = "daskgd-shards"
#: Numbers a shard sums and steps on the event loop; more go to a thread.
INLINE_ROWS = 1 << 16

_OPS = (
    "create", "push", "round", "apply", "epoch", "rollback", "pull", "export",
    "backup", "keep", "promote", "restore", "close",
)  # fmt: skip
#: Seconds a round waits for a slice whose rank's scalars reached the coordinator.
SLICE_WAIT = 60.0


class ShardState:
    """One job's shard on one worker: its rows, optimizer state and the open round."""

    def __init__(
        self, params: np.ndarray, optimizer: Optimizer, padded: bool, version: int,
        state: dict[str, np.ndarray] | None,
    ) -> None:  # fmt: skip
        self.padded = padded
        P = np.asarray(params, dtype=np.float64)
        if padded:  # the stand-in intercept row (see the module docstring)
            P = np.concatenate([P, np.zeros((1, *P.shape[1:]))])
        self.optimizer = optimizer
        self.opt_state = (
            optimizer.init_state(P)
            if state is None
            else optimizer.import_state(P, self._pad(state))
        )
        self.published = (int(version), P)
        self.previous = self.published
        self.pending: dict[int, dict[int, tuple[str | None, np.ndarray]]] = {}
        self.round_sum: np.ndarray | None = None
        self.epoch_sum: np.ndarray | None = None
        # async/ssp: each open epoch's gradient sum and pushes applied
        self.epoch_sums: dict[int, np.ndarray] = {}
        self.epoch_counts: dict[int, int] = {}
        self.backup: dict[str, Any] | None = None  # see keep_backup
        self.lock = asyncio.Lock()
        self.changed = asyncio.Event()  # set (and replaced) when a version is published
        self.arrived = asyncio.Event()  # set (and replaced) when a slice is stored
        self.closed = False

    def _pad(self, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.padded:
            return state
        return {k: np.concatenate([v, np.zeros((1, *v.shape[1:]))]) for k, v in state.items()}

    @property
    def rows(self) -> np.ndarray:
        """The shard's real rows (published; never mutated)."""
        P = self.published[1]
        return P[:-1] if self.padded else P

    def publish(self, version: int, P: np.ndarray) -> None:
        """Publish ``(version, P)``, keeping the pair before for a rollback (the waiters
        are woken by :meth:`notify`, on the event loop: this may run in a thread)."""
        self.previous, self.published = self.published, (version, P)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def store(self, version: int, rank: int, incarnation: str | None, grad: np.ndarray) -> None:
        self.pending.setdefault(version, {})[rank] = (incarnation, grad)
        self.arrived.set()
        self.arrived = asyncio.Event()

    async def wait_for_slices(self, version: int, ranks: list, timeout: float) -> list[int]:
        """Wait until the slices of ``ranks`` for ``version`` arrived (a rank sends its
        slices and its scalars at once, so the coordinator may close a round before a
        slice landed); returns the ranks still missing after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            got = self.pending.get(version, {})
            missing = [
                r for r, inc in ranks if r not in got or (inc is not None and got[r][0] != inc)
            ]
            left = deadline - loop.time()
            if not missing or left <= 0 or self.closed:
                return missing
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                pass

    def round(
        self, version: int, ranks: list, close: bool, mean_w: float, lr: float, t: int,
        weight: float,
    ) -> dict[str, Any]:  # fmt: skip
        """One sync round: :meth:`reduce`, then :meth:`step`; the reply has the epoch's
        pieces (when it closes) and ``finite``."""
        out = self.reduce(version, ranks, close, mean_w)
        if out["status"] == "OK":
            out["finite"] = self.step(version, lr, t, weight)
        return out

    def reduce(self, version: int, ranks: list, close: bool, mean_w: float) -> dict[str, Any]:
        """Sum the round's slices in the coordinator's (rank) order; add them to the epoch;
        when the epoch closes, its pieces of the penalty and the gradient norm."""
        got = self.pending.pop(version, {})
        for v in [v for v in self.pending if v < version]:
            del self.pending[v]  # gradients of rounds that closed without them
        total = None
        for rank, incarnation in ranks:
            entry = got.get(rank)
            if entry is None or (incarnation is not None and entry[0] != incarnation):
                return error(f"shard has no gradient of rank {rank} for version {version}")
            g = self._padded_grad(entry[1])
            total = g.astype(np.float64, copy=True) if total is None else total + g
        if total is None:
            return error(f"round {version} has no ranks")
        self.round_sum = total
        self.epoch_sum = total.copy() if self.epoch_sum is None else self.epoch_sum + total
        out: dict[str, Any] = {"status": "OK"}
        if close:
            out.update(self._epoch_pieces(mean_w))
        return out

    def _padded_grad(self, g: np.ndarray) -> np.ndarray:
        if not self.padded:
            return g
        return np.concatenate([g, np.zeros((1, *g.shape[1:]), dtype=g.dtype)])

    def _epoch_pieces(self, mean_w: float) -> dict[str, Any]:
        """This shard's share of the epoch's penalty and (proximal) gradient norm, as the
        whole-model server computes them (``EpochRules.close_epoch``)."""
        assert self.epoch_sum is not None
        P, opt = self.published[1], self.optimizer
        reg = opt.regularizer
        g = self.epoch_sum / mean_w
        self.epoch_sum = None
        reg.add_gradient(P, g)
        if not opt.fit_intercept:
            g[-1] = 0.0
        if reg.l1:
            z = P - g
            z[:-1] = soft_threshold(z[:-1], reg.l1)
            g = P - z
        if self.padded:
            g = g[:-1]
        W = P[:-1]
        out: dict[str, Any] = {
            "penalty": reg.penalty(P),
            "grad_sq": float(np.sum(g * g)),
        }
        if P.ndim == 2:
            pen = 0.5 * reg.l2 * np.sum(W * W, axis=0) + reg.l1 * np.sum(np.abs(W), axis=0)
            out["class_penalty"] = pen.tolist()
        return out

    def step(self, version: int, lr: float, t: int, weight: float) -> bool:
        """Step with the round's mean gradient; publish ``version + 1``. False (nothing
        published) when the rows became non-finite."""
        P = self.published[1]
        if weight > 0 and self.round_sum is not None:
            new = self.optimizer.apply(P, self.round_sum / weight, self.opt_state, t, lr)
            if not np.all(np.isfinite(new)):
                return False
            if self.padded:
                new[-1] = 0.0
        else:
            new = P
        self.round_sum = None
        self.publish(version + 1, new)
        return True

    # -- async/ssp: each push applied on arrival --------------------------------------
    def apply_push(self, grad: np.ndarray, lr: float, t: int, weight: float, epoch: int) -> bool:
        """Step this shard's rows with one push's slice now (async/ssp) and count it in its
        epoch; False (nothing published) when the rows became non-finite."""
        g = self._padded_grad(np.asarray(grad, dtype=np.float64))
        self.epoch_sums[epoch] = g.copy() if epoch not in self.epoch_sums else (
            self.epoch_sums[epoch] + g)  # fmt: skip
        self.epoch_counts[epoch] = self.epoch_counts.get(epoch, 0) + 1
        v, P = self.published
        new = P
        if weight > 0:
            new = self.optimizer.apply(P, g / weight, self.opt_state, t, lr)
            if not np.all(np.isfinite(new)):
                return False
            if self.padded:
                new[-1] = 0.0
        self.publish(v + 1, new)
        return True

    def epoch_pieces(self, epoch: int, mean_w: float) -> dict[str, Any]:
        """Async/ssp: the closed epoch's pieces (its gradient sum, at the rows now)."""
        self.epoch_sum = self.epoch_sums.pop(epoch, None)
        got = self.epoch_counts.pop(epoch, 0)
        if self.epoch_sum is None:
            self.epoch_sum = np.zeros_like(self.published[1])
        return {"status": "OK", "got": got, **self._epoch_pieces(mean_w)}

    # -- recovery: a copy of the rows and state at a version, here and on a replica ----
    def keep_backup(self) -> dict[str, Any]:
        """Keep this shard's rows and state as they are now (their copy is what a
        rollback after a lost shard restores); returns them to send to the replica."""
        out = self.export()
        self.backup = out
        return out

    def restore_backup(self, version: int) -> None:
        """Roll back to the backup, published as ``version`` (the coordinator's count goes
        on); the open round's slices and the open epoch's sums are dropped."""
        b = self.backup
        assert b is not None
        P = np.asarray(b["params"], dtype=np.float64)
        state = {k: np.array(v) for k, v in b["state"].items()}
        if self.padded:
            P = np.concatenate([P, np.zeros((1, *P.shape[1:]))])
        self.opt_state = self.optimizer.import_state(P, self._pad(state))
        self.pending.clear()
        self.round_sum = self.epoch_sum = None
        self.epoch_sums.clear()
        self.epoch_counts.clear()
        self.published = self.previous = (int(version), P)

    def export(self) -> dict[str, Any]:
        state = self.optimizer.export_state(self.opt_state)
        if self.padded:
            state = {k: v[:-1] for k, v in state.items()}
        return {"params": self.rows.copy(), "state": state, "version": self.published[0]}


class ShardServer(WorkerPlugin):
    """The worker half of sharded parameter servers (see the module docstring).

    Registered on every worker by the driver of a fit with ``n_servers >= 1``
    (``Client.register_plugin``, idempotent by name); workers that join later get it too.
    """

    name = SHARD_PLUGIN_NAME
    idempotent = True

    def __init__(self) -> None:
        self.worker: Any = None
        self.jobs: dict[tuple[str, int], ShardState] = {}
        #: backups of shards held by other workers: (job, shard) -> what ``keep`` got
        self.replicas: dict[tuple[str, int], dict[str, Any]] = {}

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()  # type: ignore[misc]

    def setup(self, worker) -> None:
        self.worker = worker
        worker.handlers.update({f"daskgd_shard_{op}": getattr(self, op) for op in _OPS})

    def teardown(self, worker) -> None:
        for op in _OPS:
            worker.handlers.pop(f"daskgd_shard_{op}", None)
        self.jobs.clear()

    def _get(self, job: Any, shard: Any) -> ShardState | dict:
        if (job, shard) not in self.jobs:
            return error(f"no shard {shard!r} of job {job!r} on this worker", kind="unknown_shard")
        return self.jobs[(job, shard)]

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
        self.jobs[(job, shard)] = s
        return {"status": "OK"}

    async def push(self, job, shard, version, rank, incarnation, grad, wait=0.0):
        """Store a rank's slice for round ``version``; with ``wait`` > 0, reply once the
        round closed, with the new rows (a pull in the same round trip)."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        if version >= s.published[0]:
            want = s.rows.shape
            if not isinstance(grad, np.ndarray) or grad.shape != want or grad.dtype.kind != "f":
                got = getattr(grad, "shape", type(grad).__name__)
                return error(f"grad slice must be a float array of shape {want}, got {got}")
            s.store(int(version), int(rank), incarnation, grad)
        if not wait:
            return {"status": "OK"}
        return await self.pull(job, shard, version + 1, wait)

    async def round(self, job, shard, version, ranks, closing, mean_w, lr, t, weight):
        """Close round ``version``: sum the ranks' slices (rank order), step, publish."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        if s.published[0] != version:
            return error(f"shard is at version {s.published[0]}, asked to close {version}")
        ranks = [(int(r), inc) for r, inc in ranks]
        missing = await s.wait_for_slices(int(version), ranks, SLICE_WAIT)
        if missing:
            return error(f"the slices of rank(s) {missing} for version {version} did not "
                         f"arrive within {SLICE_WAIT:g} s")  # fmt: skip
        out = await self._run(s, s.round, int(version), ranks, bool(closing), float(mean_w),
                              float(lr), int(t), float(weight))  # fmt: skip
        s.notify()
        return out

    async def apply(self, job, shard, rank, incarnation, grad, lr, t, weight, epoch):
        """Async/ssp: apply one push's slice now; reply with the new rows."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        want = s.rows.shape
        if not isinstance(grad, np.ndarray) or grad.shape != want or grad.dtype.kind != "f":
            got = getattr(grad, "shape", type(grad).__name__)
            return error(f"grad slice must be a float array of shape {want}, got {got}")
        finite = await self._run(s, s.apply_push, grad, float(lr), int(t), float(weight),
                                 int(epoch))  # fmt: skip
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
        deadline = loop.time() + float(wait)
        while s.epoch_counts.get(epoch, 0) < count and not s.closed:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(s.changed.wait(), left)
            except TimeoutError:
                pass
        return await self._run(s, s.epoch_pieces, int(epoch), float(mean_w))

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

    async def backup(self, job, shard, replica):
        """Keep a copy of the shard here and send one to the worker ``replica``."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        async with s.lock:
            out = s.keep_backup()
        msg = {k: ToPickle(v) for k, v in out.items() if k != "version"}
        reply = await self.worker.rpc(replica).daskgd_shard_keep(
            job=job, shard=shard, version=out["version"], padded=s.padded,
            optimizer=ToPickle(s.optimizer), **msg,
        )  # fmt: skip
        if not (isinstance(reply, dict) and reply.get("status") == "OK"):
            return error(f"the replica on {replica} refused the backup: {reply!r}")
        return {"status": "OK", "version": out["version"]}

    async def keep(self, job, shard, version, params, state, padded, optimizer):
        """Hold another worker's backup of shard ``shard`` of ``job``."""
        if not isinstance(params, np.ndarray) or not isinstance(optimizer, Optimizer):
            return error("keep: params must be an ndarray and optimizer an Optimizer")
        self.replicas[(job, shard)] = {"version": version, "params": params, "state": state,
                                       "padded": padded, "optimizer": optimizer}  # fmt: skip
        return {"status": "OK"}

    async def promote(self, job, shard, version):
        """Rebuild shard ``shard`` here from the backup this worker holds, as ``version``."""
        b = self.replicas.get((job, shard))
        if b is None:
            return error(f"no backup of shard {shard} of job {job!r} on this worker")
        s = await asyncio.to_thread(ShardState, b["params"], b["optimizer"], bool(b["padded"]),
                                    version, b["state"])  # fmt: skip
        s.backup = {k: b[k] for k in ("params", "state", "version")}
        self.jobs[(job, shard)] = s
        return {"status": "OK"}

    async def restore(self, job, shard, version):
        """Roll the shard back to its backup, published as ``version``."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        if s.backup is None:
            return error(f"shard {shard} of job {job!r} has no backup")
        async with s.lock:
            s.restore_backup(int(version))
        s.notify()
        return {"status": "OK"}

    async def close(self, job, shard):
        s = self.jobs.pop((job, shard), None)
        self.replicas.pop((job, shard), None)
        if s is not None:
            s.closed = True
            s.notify()
            s.arrived.set()
        return {"status": "OK"}
