"""A training task's calls to a key-value job's key-hashed shards (a base of
:class:`~daskgd.parameter_server.client.ParameterServerClient`).

The task splits each push by shard (:func:`~daskgd.parameter_server.kshard_state.
key_shards`: the hash every shard uses), sends every shard its slice (the gradient at the
shard's keys, the intercept's to shard 0) with the keys of its next batch that the shard
holds, and the scalars (rows, weight, loss) to the coordinator, all at once; the reply is
put together from the shards' weights. A whole-model pull (``dense``) asks each shard
for all of its weights.

A shard's worker that does not answer was lost (key-hashed shards are not rebuilt): the
task waits for the coordinator to stop the job, which says what happened, and ends
(``stopped``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from distributed.protocol import ToPickle

from daskgd.errors import ParameterServerError
from daskgd.parameter_server.kshard import KSHARD_PLUGIN_NAME
from daskgd.parameter_server.kshard_state import key_shards
from daskgd.parameter_server.shard_client import ShardRPC

__all__ = ["KeyedShardCalls"]

#: Seconds a task whose shard did not answer waits for the coordinator to stop the job.
LOSS_WAIT = 30.0
#: Seconds between checks of the job while shard calls are slow: a call to a dead
#: worker's address is retried by distributed for its whole connect timeout, while the
#: coordinator has stopped the job already.
LOSS_PROBE = 5.0


class KeyedShardLostError(ParameterServerError):
    """A key-hashed shard's worker did not answer."""


class KeyedShardCalls(ShardRPC):
    """The key-shard half of a parameter-server client (see the module docstring)."""

    incarnation: str
    _call: Callable[..., Awaitable[dict[str, Any]]]

    #: the worker holding each key-hashed shard of a sharded key-value job, else None
    kshards: list[str] | None = None
    #: the parameters' shape, ``(d + 1,)`` or ``(d + 1, k)``
    kshape: tuple[int, ...] = ()
    #: the job's mode ("sync" or "async")
    kmode: str = "sync"
    #: the key shard server of this task's worker (called in process)
    klocal: Any = None
    _kpos: list[np.ndarray] | None = None  # each shard's columns, for whole-model pulls

    def use_kshards(
        self, addresses: list[str], shape: tuple[int, ...], mode: str, worker: Any = None
    ) -> None:
        """Talk to the key-hashed shards at ``addresses`` (from the driver's task spec)."""
        self.kshards = list(addresses)
        self.kshape = tuple(shape)
        self.kmode = mode
        if worker is not None:
            self.klocal = getattr(worker, "plugins", {}).get(KSHARD_PLUGIN_NAME)

    async def _kshard(self, k: int, op: str, **msg: Any) -> dict[str, Any]:
        assert self.kshards is not None
        address = self.kshards[k]
        return await self._call_shard(
            "kshard", op, address, self.klocal, {**msg, "shard": k}, KeyedShardLostError,
            f"key-hashed shard {k} on worker {address}",
        )  # fmt: skip

    def _ksplit(self, keys: np.ndarray) -> list[np.ndarray]:
        """The positions in ``keys`` of each shard's keys (in order: sorted slices)."""
        assert self.kshards is not None
        owner = key_shards(keys, len(self.kshards))
        return [np.flatnonzero(owner == k) for k in range(len(self.kshards))]

    def _kcombine(self, parts: list[dict[str, Any]], keys: np.ndarray | None,
                  split: list[np.ndarray] | None, dense: bool) -> dict[str, Any]:  # fmt: skip
        """The weights at ``keys`` (all of them, ``dense``) and the intercept from the
        shards' replies."""
        tail = self.kshape[1:]
        out: dict[str, Any] = {"b": parts[0]["b"]}
        if dense:
            if self._kpos is None:  # once a task: the columns of each shard
                self._kpos = self._ksplit(np.arange(self.kshape[0] - 1))
            w = np.empty((self.kshape[0] - 1, *tail))
            for pos, p in zip(self._kpos, parts, strict=True):
                w[pos] = p["w"]
            out["w"] = w
        elif keys is not None and split is not None:
            w = np.empty((keys.size, *tail))
            for pos, p in zip(split, parts, strict=True):
                w[pos] = p["w"]
            out["w"] = w
        return out

    async def _kpull_sharded(
        self, keys: np.ndarray | None, dense: bool, version: int = 0
    ) -> dict[str, Any]:
        """The weights at ``keys`` (or all of them) once every shard reached ``version``."""
        assert self.kshards is not None
        split = None if keys is None or dense else self._ksplit(keys)
        mine: list[Any] = [None] * len(self.kshards)
        if split is not None and keys is not None:
            mine = [ToPickle(keys[pos]) for pos in split]
        try:
            parts = await self._kgather([
                self._kshard(k, "pull", keys=mine[k], dense=dense, version=version,
                             wait=self.timeout)
                for k in range(len(self.kshards))
            ])  # fmt: skip
        except KeyedShardLostError:
            return await self._klost()
        if parts is None:
            return {"status": "stopped"}
        v = max(int(p["version"]) for p in parts)
        return {"status": "OK", "version": v, **self._kcombine(parts, keys, split, dense)}

    async def _kgather(self, calls: list[Any]) -> list[dict[str, Any]] | None:
        """The shards' replies to ``calls`` (coroutines or tasks); None when the job
        stopped while they were slow (a lost shard: see :data:`LOSS_PROBE`).

        Raises
        ------
        KeyedShardLostError
            A shard's worker did not answer.
        """
        tasks = [asyncio.ensure_future(c) for c in calls]
        try:
            while True:
                _, pending = await asyncio.wait(tasks, timeout=LOSS_PROBE,
                                                return_when=asyncio.FIRST_EXCEPTION)  # fmt: skip
                failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
                if failed or not pending:
                    return [t.result() for t in (failed or tasks)]
                if (await self._call("status", retry=True)).get("stopped"):
                    return None
        finally:
            for task in tasks:
                task.cancel()

    async def _klost(self) -> dict[str, Any]:
        """A shard's worker did not answer: wait for the coordinator to stop the job (it
        names the lost worker), then end; raise if it does not within :data:`LOSS_WAIT`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOSS_WAIT
        while loop.time() < deadline:
            status = await self._call("status", retry=True)
            if status.get("stopped"):
                return {"status": "stopped"}
            await asyncio.sleep(0.5)
        raise ParameterServerError("a key-hashed shard's worker did not answer, and the job "
                                   "did not stop", op="kshard_push")  # fmt: skip

    async def _kpush_sharded(
        self, rank: int, version: int, keys: np.ndarray, grad: np.ndarray, grad_b: Any,
        next_keys: np.ndarray | None, dense: bool, **scalars: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """A sharded key-value job's push (see the module docstring)."""
        assert self.kshards is not None
        if not (np.all(np.isfinite(grad)) and np.all(np.isfinite(grad_b))):
            # no slice is sent: the coordinator stops the job for the non-finite push, as
            # the whole-model server does for a non-finite gradient
            return await self._call("kpush", rank=rank, version=version, keys=None, grad=None,
                                    grad_b=None, incarnation=self.incarnation,
                                    **{**scalars, "loss": math.nan})  # fmt: skip
        split = self._ksplit(keys)
        nsplit = None if next_keys is None or dense else self._ksplit(next_keys)
        gb = ToPickle(grad_b) if isinstance(grad_b, np.ndarray) else float(grad_b)

        def part(k: int) -> dict[str, Any]:
            pos = split[k]
            nxt = None
            if nsplit is not None and next_keys is not None:
                nxt = ToPickle(next_keys[nsplit[k]])
            return {"keys": ToPickle(keys[pos]), "grad": ToPickle(np.ascontiguousarray(grad[pos])),
                    "grad_b": gb if k == 0 else None, "dense": dense, "next_keys": nxt}  # fmt: skip

        coordinator = self._call("kpush", extra=self.wait_bound, rank=rank, version=version,
                                 keys=None, grad=None, grad_b=None, incarnation=self.incarnation,
                                 **scalars)  # fmt: skip
        if self.kmode != "sync":
            reply = await coordinator
            if reply.get("status") != "OK" or "step" not in reply:
                return reply
            step = {n: reply["step"][n] for n in ("weight", "t", "epoch", "lr_scale", "eta")}
            try:
                parts = await self._kgather([self._kshard(k, "apply", **part(k), **step)
                                             for k in range(len(self.kshards))])  # fmt: skip
            except KeyedShardLostError:
                return await self._klost()
            if parts is None:
                return {"status": "stopped"}
            if not all(p["finite"] for p in parts):
                bad = [a for a, p in zip(self.kshards, parts, strict=True) if not p["finite"]]
                return await self._call(
                    "kpush", rank=rank, version=version, keys=None, grad=None, grad_b=None,
                    incarnation=self.incarnation, **scalars,
                    shard_error=f"the parameters became non-finite on the key shard(s) at {bad}",
                )  # fmt: skip
            return {**reply, **self._kcombine(parts, next_keys, nsplit, dense)}
        wait = self.timeout + self.wait_bound
        slices = [asyncio.ensure_future(self._kshard(
            k, "push", version=version, rank=rank, incarnation=self.incarnation, wait=wait,
            **part(k))) for k in range(len(self.kshards))]  # fmt: skip
        try:
            reply = await coordinator
            if reply.get("status") == "stopped":
                return reply
            if reply.get("status") == "OK" and int(reply["version"]) == version + 1:
                try:
                    got = await self._kgather(slices)
                except KeyedShardLostError:
                    return await self._klost()
                if got is None:
                    return {"status": "stopped"}
                if {int(p["version"]) for p in got} == {version + 1}:
                    return {**reply, **self._kcombine(got, next_keys, nsplit, dense)}
        finally:
            for task in slices:
                task.cancel()
        # stale (its round closed without it), or a later round closed meanwhile: the
        # weights of the version the coordinator gave
        read = await self._kpull_sharded(next_keys, dense, int(reply["version"]))
        return read if read["status"] == "stopped" else {**reply, **read}
