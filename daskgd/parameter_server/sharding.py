"""The coordinator's view of a sharded job: where its shards live and how it calls them.

A :class:`ShardSet` is the layout (contiguous ranges of parameter rows, one per shard,
:func:`split_rows`) and the calls the scheduler plugin makes to the shard servers
(:mod:`daskgd.parameter_server.shard`) through the scheduler's connection pool. Only
scalars and lists of ranks travel in the per-round call (``round``); whole
slices travel only when a job is created, checkpointed, or finishes.

The job's changes run in the plugin's thread pool (a sharded job never steps on the event
loop), so the blocking forms (:meth:`ShardSet.call`) hand each call to the loop and wait.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from distributed.protocol import ToPickle

from daskgd.objective import LBFGSOptimizer
from daskgd.objective.lbfgs_sharded import rows_first

__all__ = ["ShardError", "ShardFanOut", "ShardSet", "split_rows", "without"]

#: Seconds a shard has to answer a coordinator's call.
SHARD_TIMEOUT = 120.0
#: Seconds a shard waits for the pushes of a closing epoch (async/ssp) before it reports
#: what arrived: a task that died after its admission never sends its slices.
EPOCH_WAIT = 30.0
#: Seconds at least between two periodic backups: each copies the model to another
#: worker, and epochs of a few milliseconds would otherwise pay for one every few rounds.
BACKUP_SPACING = 1.0


class ShardError(RuntimeError):
    """A shard server could not be reached or refused a call: the job cannot go on."""


def split_rows(n_rows: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous ranges ``[lo, hi)`` cutting ``n_rows`` rows into ``n_shards`` parts that
    differ by at most one row (the first ones get the extra rows).

    Examples
    --------
    >>> split_rows(7, 3)
    [(0, 3), (3, 5), (5, 7)]
    """
    if not 1 <= n_shards <= n_rows:
        raise ValueError(f"cannot cut {n_rows} parameter rows into {n_shards} shards")
    q, r = divmod(n_rows, n_shards)
    out, lo = [], 0
    for k in range(n_shards):
        hi = lo + q + (1 if k < r else 0)
        out.append((lo, hi))
        lo = hi
    return out


class ShardFanOut:
    """The calls a coordinator makes to every shard of one job at once, through the
    scheduler's connection pool: the part the dense (:class:`ShardSet`) and the
    key-hashed (:class:`~daskgd.parameter_server.kshard_set.KeyedShardSet`) layouts share.
    A subclass says how one shard is called (:meth:`_one`).

    Parameters
    ----------
    job : str
    addresses : sequence of str
        The worker holding each shard.
    rpc : callable
        ``rpc(address)``: the scheduler's connection pool.
    loop : asyncio event loop
        The loop ``rpc`` runs on.
    """

    def __init__(self, job: str, addresses: Sequence[str], rpc: Any, loop: Any) -> None:
        self.job = job
        self.addresses = list(addresses)
        self.rpc = rpc
        self.loop = loop
        #: why the shards can no longer be used (a holder left, or the job closed), else None
        self.broken: str | None = None
        self._inflight: set[asyncio.Task] = set()

    def cancel_calls(self) -> None:
        """Cancel the calls in flight (a call to a dead worker would otherwise wait for the
        connect timeout, holding the job's lock)."""
        for task in list(self._inflight):
            task.cancel()

    async def _one(self, k: int, op: str, msg: dict[str, Any]) -> dict[str, Any]:
        """Call ``op`` on shard ``k`` with ``msg``; its reply, or :class:`ShardError`."""
        raise NotImplementedError

    async def call_async(
        self, op: str, per_shard: Sequence[dict[str, Any]] | None = None, **msg: Any
    ) -> list[dict[str, Any]]:
        """Call ``op`` on every shard at once (``per_shard[k]`` added to shard k's message)."""
        extra = per_shard or [{}] * len(self.addresses)
        tasks = [
            asyncio.ensure_future(self._one(k, op, {**msg, **extra[k]}))
            for k in range(len(self.addresses))
        ]
        self._inflight.update(tasks)
        try:
            return list(await asyncio.gather(*tasks))
        except asyncio.CancelledError:
            if self.broken is None:
                raise
            raise ShardError(self.broken) from None
        finally:
            self._inflight.difference_update(tasks)
            for task in tasks:
                task.cancel()

    async def call_each(self, op: str, **msg: Any) -> None:
        """Call ``op`` on every shard at once, each on its own: one that fails does not
        cancel the calls to the others (a notice every live shard must get)."""
        await asyncio.gather(*(self._one(k, op, dict(msg)) for k in range(len(self.addresses))),
                             return_exceptions=True)  # fmt: skip

    def call(self, op: str, per_shard=None, **msg: Any) -> list[dict[str, Any]]:
        """:meth:`call_async` from a thread of the plugin's pool, waiting for the replies."""
        return self._wait(self.call_async(op, per_shard, **msg))

    def _wait(self, coro: Any) -> Any:
        """Run ``coro`` on the plugin's loop from a thread of its pool and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


class ShardSet(ShardFanOut):
    """The shards of one job (see the module docstring).

    Parameters
    ----------
    job : str
    addresses : sequence of str
        The worker holding each shard.
    ranges : sequence of (int, int)
        Each shard's rows of the parameters.
    rpc : callable
        ``rpc(address)`` gives an object whose ``daskgd_shard_<op>(**msg)`` calls the
        handler (the scheduler's connection pool).
    loop : asyncio event loop
        The loop ``rpc`` runs on.
    """

    def __init__(
        self, job: str, addresses: Sequence[str], ranges: Sequence[tuple[int, int]], rpc: Any,
        loop: Any,
    ) -> None:  # fmt: skip
        super().__init__(job, addresses, rpc, loop)
        self.ranges = [(int(lo), int(hi)) for lo, hi in ranges]
        #: the worker holding each shard's backup (None: none yet, or it left)
        self.replicas: list[str | None] = [None] * len(self.addresses)
        #: the version every shard's backup holds (None: no backup)
        self.backup_version: int | None = None
        #: when (time.monotonic) the last backup was complete
        self.backup_time = -math.inf
        #: True once a backup found no other worker to hold a copy
        self.no_replica = False
        #: the cluster's worker addresses now (set by the plugin; read on the loop)
        self.cluster: Any = lambda: self.addresses

    def lose(self, address: str) -> str:
        """The worker at ``address`` left: its shard is gone. Calls in flight are cancelled
        (a call to a dead worker would otherwise wait for the connect timeout, holding the
        job's lock) and later calls fail at once. Returns the reason."""
        k = self.addresses.index(address)
        self.broken = (
            f"worker {address}, which held shard {k} of the parameters, left the cluster: its "
            "part of the model is lost. Rerun the fit, or resume it from its checkpoint "
            "(checkpoint=..., resume=True)"
        )
        self.cancel_calls()
        return self.broken

    @property
    def n_rows(self) -> int:
        return self.ranges[-1][1]

    def layout(self) -> list[tuple[str, int, int]]:
        """``(address, lo, hi)`` of each shard: what the training tasks are told."""
        return [(a, lo, hi) for a, (lo, hi) in zip(self.addresses, self.ranges, strict=True)]

    async def _one(
        self, k: int, op: str, msg: dict[str, Any], address: str | None = None
    ) -> dict[str, Any]:
        addr = self.addresses[k] if address is None else address
        if self.broken is not None:
            raise ShardError(self.broken)
        try:
            async with asyncio.timeout(SHARD_TIMEOUT):
                handler = getattr(self.rpc(addr), f"daskgd_shard_{op}")
                reply = await handler(job=self.job, **{"shard": k, **msg})
        except (OSError, TimeoutError) as exc:
            raise ShardError(
                f"shard {k} of the parameters (worker {addr}) did not answer {op!r}: {exc!r}. "
                "A worker holding a parameter shard was lost; rerun the fit, or resume it "
                "from its checkpoint (checkpoint=..., resume=True)"
            ) from exc
        if not isinstance(reply, dict) or reply.get("status") != "OK":
            message = reply.get("message") if isinstance(reply, dict) else reply
            raise ShardError(f"shard {k} of the parameters (worker {addr}) refused {op!r}: "
                             f"{message}")  # fmt: skip
        return reply

    # -- the operations ------------------------------------------------------------
    async def create(
        self, params: np.ndarray, optimizer: Any, version: int,
        state: dict[str, np.ndarray] | None = None,
    ) -> None:  # fmt: skip
        """Send each shard its rows (and its rows of the optimizer state, resuming)."""
        last = len(self.ranges) - 1
        if state is not None and isinstance(optimizer, LBFGSOptimizer):
            state = rows_first(state, params.shape)  # its numbers stay with the coordinator
        per = []
        for k, (lo, hi) in enumerate(self.ranges):
            msg: dict[str, Any] = {
                "shard": k,
                "params": ToPickle(np.ascontiguousarray(params[lo:hi])),
                "padded": k != last,
            }
            if state is not None:
                msg["state"] = ToPickle(
                    {n: np.ascontiguousarray(a[lo:hi]) for n, a in state.items()}
                )
            per.append(msg)
        await self.call_async("create", per, optimizer=ToPickle(optimizer), version=version)

    def round(
        self, version: int, ranks: list, close: bool, mean_w: float, lr: float, t: int,
        weight: float, weights: list[float] | None = None,
    ) -> tuple[dict[str, Any], bool, list[int]]:  # fmt: skip
        """Close sync round ``version`` on every shard: sum the ranks' slices in rank order,
        step with learning rate ``lr``, publish ``version + 1``. Returns, when the epoch
        closes (``close``), its penalty, gradient norm and per-column penalties summed over
        the shards (shard order), taken at the parameters before the step; whether every
        shard stayed finite (if not, every shard is put back at ``version``); and the
        ranks whose slice some shard stepped without (:func:`without`; ``weights``, each
        rank's, give that shard the present ranks' mean)."""
        replies = self.call(
            "round", version=version, ranks=ranks, closing=close, mean_w=mean_w, lr=lr, t=t,
            weight=weight, weights=weights,
        )  # fmt: skip
        finite = all(r["finite"] for r in replies)
        if not finite:
            self.rollback(version + 1)
        return (_sum_pieces(replies) if close else {}), finite, without(replies)

    def evaluate(
        self, version: int, ranks: list, mean_w: float, weight: float,
        weights: list[float] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], list[int]]:  # fmt: skip
        """L-BFGS (full batch: every round closes an epoch): close sync round ``version``
        without stepping. Returns the epoch's figures and the dot products of
        :meth:`daskgd.objective.lbfgs_sharded.LBFGSSlice.evaluate`, summed over the shards
        (shard order), and the ranks whose slice a shard went without (:func:`without`);
        :meth:`direction` then steps."""
        replies = self.call("round", version=version, ranks=ranks, closing=True, mean_w=mean_w,
                            lr=0.0, t=version, weight=weight, weights=weights)  # fmt: skip
        dots = {k: np.sum([np.asarray(r["dots"][k], dtype=np.float64) for r in replies], axis=0)
                for k in replies[0]["dots"]}  # fmt: skip
        return _sum_pieces(replies), dots, without(replies)

    def direction(self, version: int, decision: dict[str, Any]) -> bool:
        """L-BFGS: every shard steps to the point ``decision`` gives and publishes it as
        ``version + 1``. False when a shard's rows became non-finite (every shard is then
        put back at ``version``)."""
        finite = all(r["finite"] for r in self.call("direction", version=version,
                                                    decision=decision))  # fmt: skip
        if not finite:
            self.rollback(version + 1)
        return finite

    async def epoch_async(
        self, epoch: int, count: int, mean_w: float, wait: float = EPOCH_WAIT
    ) -> tuple[dict[str, Any], int]:
        """Async/ssp: the closed ``epoch``'s figures summed over the shards, once each
        applied its ``count`` pushes (or ``wait`` seconds passed), and how many pushes
        did not reach every shard."""
        replies = await self.call_async("epoch", epoch=epoch, count=count, mean_w=mean_w,
                                        wait=wait)  # fmt: skip
        return _sum_pieces(replies), max(0, count - min(int(r["got"]) for r in replies))

    def rollback(self, version: int) -> None:
        """Undo the step that published ``version`` on every shard that took it."""
        self.call("rollback", version=version)

    # -- recovery ------------------------------------------------------------------
    def choose_replicas(self, workers: Sequence[str]) -> bool:
        """Give each shard a replica holder: the next worker (in address order) after its
        holder. False when there is no other worker."""
        ring = sorted(workers)
        if len(ring) < 2:
            self.replicas = [None] * len(self.addresses)
            return False
        for k, a in enumerate(self.addresses):
            i = ring.index(a) if a in ring else -1
            self.replicas[k] = ring[(i + 1) % len(ring)]
        return True

    async def backup_async(self, version: int) -> bool:
        """Every shard keeps a copy of its rows and state and sends one to its replica
        holder (all at ``version``). False when no replica can be had (one worker)."""
        if not self.choose_replicas(list(self.cluster())):
            self.backup_version = None
            self.no_replica = True  # one worker: nowhere to keep a copy (see rounds)
            return False
        await self.call_async("backup", [{"replica": r} for r in self.replicas], version=version)
        self.backup_version = int(version)
        self.backup_time = time.monotonic()
        return True

    def spaced(self) -> bool:
        """Whether :data:`BACKUP_SPACING` seconds passed since the last backup."""
        return time.monotonic() - self.backup_time >= BACKUP_SPACING

    def backup(self, version: int) -> bool:
        """:meth:`backup_async` from a thread of the plugin's pool."""
        return self._wait(self.backup_async(version))

    def can_recover(self, lost: str, workers: Sequence[str]) -> bool:
        """Whether every shard ``lost`` held has a backup on a worker still there."""
        if self.backup_version is None:
            return False
        for k, a in enumerate(self.addresses):
            if a == lost and (self.replicas[k] in (None, lost) or self.replicas[k] not in workers):
                return False
        return True

    async def recover_async(
        self, lost: str, version: int, source: int, generation: int = 0
    ) -> list[dict[str, Any]]:
        """Rebuild the shards ``lost`` held on their replica holders from the backups of
        version ``source`` and roll every other shard back to its own, all published as
        ``version``, taking pushes of ``generation`` only from then on. Returns what
        moved."""
        self.broken = None
        moved = []
        for k, a in enumerate(self.addresses):
            if a == lost:
                target = self.replicas[k]
                if target is None:
                    raise ShardError(f"shard {k} has no backup on a live worker")
                await self._one(k, "promote", {"version": version, "source": source,
                                               "gen": generation}, address=target)  # fmt: skip
                moved.append({"shard": k, "from": lost, "to": target})
                self.addresses[k] = target
        # the rebuilt shards too: a no-op on a fresh copy of the same backup
        await self.call_async("restore", version=version, source=source, gen=generation)
        return moved

    def gather(self) -> tuple[np.ndarray, dict[str, np.ndarray], list[int]]:
        """The whole parameters and optimizer state, stacked from the shards."""
        return _stack(self.call("export"))

    async def gather_async(self) -> tuple[np.ndarray, dict[str, np.ndarray], list[int]]:
        return _stack(await self.call_async("export"))

    async def close(self) -> None:
        """Free the shards and their backups on every worker that may hold some (a worker
        that cannot be reached is gone already, and its memory with it)."""
        self.broken = "closed"
        workers = set(self.cluster())  # a worker that left took its shards' memory with it

        async def drop(addr: str) -> None:
            async with asyncio.timeout(SHARD_TIMEOUT):
                await self.rpc(addr).daskgd_shard_drop(job=self.job)

        await asyncio.gather(*(drop(a) for a in workers), return_exceptions=True)


def without(replies: list[dict[str, Any]]) -> list[int]:
    """The ranks whose slice at least one shard closed a sync round without: their worker
    died after their scalars reached the coordinator and before that slice reached the
    shard (``daskgd_shard_gone``). Their push is counted lost."""
    return sorted({int(r) for reply in replies for r in reply.get("without") or ()})


def _sum_pieces(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch's penalty, gradient norm and per-column penalties from the shards' parts
    (summed in shard order)."""
    out: dict[str, Any] = {
        "penalty": sum(r["penalty"] for r in replies),
        "grad_norm": float(np.sqrt(sum(r["grad_sq"] for r in replies))),
    }
    if "class_penalty" in replies[0]:
        out["class_penalty"] = np.sum([r["class_penalty"] for r in replies], axis=0)
    return out


def _stack(replies: list[dict[str, Any]]) -> tuple[np.ndarray, dict[str, np.ndarray], list[int]]:
    params = np.concatenate([r["params"] for r in replies])
    state = {k: np.concatenate([r["state"][k] for r in replies]) for k in replies[0]["state"]}
    return params, state, [int(r["version"]) for r in replies]
