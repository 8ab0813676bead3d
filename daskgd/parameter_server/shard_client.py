"""A training task's calls to a sharded job's shard servers (a base of
:class:`~daskgd.parameter_server.client.ParameterServerClient`).

A sharded job's parameters live in shards on workers
(:mod:`daskgd.parameter_server.shard`); the scheduler's replies carry the layout, never the
rows, and a task pushes its gradient's slices to the shards and reads the new rows from
them, through its worker's connection pool (its own worker's shard in process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from distributed.protocol import ToPickle

from daskgd.errors import ParameterServerError, SupersededError, UnknownJobError
from daskgd.parameter_server.replies import RETRIES, RETRY_DELAY, raise_for_reply

__all__ = ["ShardCalls", "ShardRPC"]


class ShardUnreachableError(ParameterServerError):
    """A shard's worker did not answer (it left, or is leaving)."""


#: Seconds a task tries to read the rows after a shard's worker was lost before it asks
#: the coordinator for the layout again.
LOSS_PROBE = 5.0


class ShardRPC:
    """A training task's call to one shard server's handler: the part the dense
    (:class:`ShardCalls`) and the key-hashed
    (:class:`~daskgd.parameter_server.kshard_client.KeyedShardCalls`) shard calls share."""

    job: str
    timeout: float
    wait_bound: float
    address: str | None
    #: the worker's connection pool (``worker.rpc``), through which a task calls shards
    pool: Any = None

    async def _call_shard(
        self, kind: str, op: str, address: str, local: Any, msg: dict[str, Any],
        lost: type[ParameterServerError], what: str,
    ) -> dict[str, Any]:  # fmt: skip
        """Call handler ``daskgd_<kind>_<op>`` at ``address`` with ``msg``, or ``op`` of
        ``local`` (the shard server of this task's worker, called in process: no copy
        through the worker's own TCP server) when the shard is here. That one gets the
        task's arrays themselves, not copies: a task's gradient is a new array every push,
        never written again once pushed, and a shard only reads what it is sent (a slice
        it keeps for a round that closes without it stays until a later round's take).
        Returns the reply.

        Raises
        ------
        ParameterServerError
            ``lost`` (saying ``what`` did not answer) when the call failed or timed out;
            :class:`~daskgd.errors.UnknownJobError` when the shard is not there; the
            reply's own error otherwise (:func:`~daskgd.parameter_server.replies.
            raise_for_reply`).
        """
        try:
            async with asyncio.timeout(self.timeout + self.wait_bound):
                if address == self.address and local is not None:
                    msg = {n: v.data if isinstance(v, ToPickle) else v for n, v in msg.items()}
                    reply = await getattr(local, op)(job=self.job, **msg)
                    reply = {n: v.data if isinstance(v, ToPickle) else v for n, v in reply.items()}
                else:
                    handler = getattr(self.pool(address), f"daskgd_{kind}_{op}")
                    reply = await handler(job=self.job, **msg)
        except (OSError, TimeoutError) as exc:
            raise lost(f"{what} did not answer {op}: {exc!r}", op=f"{kind}_{op}") from exc
        if isinstance(reply, dict) and reply.get("kind") == "unknown_shard":
            raise UnknownJobError(str(reply.get("message")), op=f"{kind}_{op}", kind="unknown_job")
        return raise_for_reply(f"{kind}_{op}", reply)  # a "stale" reply is returned


class ShardCalls(ShardRPC):
    """The shard half of a parameter-server client (see the module docstring)."""

    incarnation: str

    #: the client's scheduler call (:meth:`ParameterServerClient._call`)
    _call: Callable[..., Awaitable[dict[str, Any]]]

    #: ``(address, lo, hi)`` of each shard of a sharded job (from ``join``), else None
    shards: list[tuple[str, int, int]] | None = None
    #: the job's mode, told to a sharded job's tasks with the layout
    mode: str | None = None

    #: the shard server of the worker this task runs on (its own shard is called in
    #: process: no copy through the worker's own TCP server)
    local: Any = None

    async def _shard(self, k: int, op: str, **msg: Any) -> dict[str, Any]:
        """Call ``op`` on shard ``k`` of the current layout."""
        assert self.shards is not None
        address = self.shards[k][0]
        return await self._call_shard(
            "shard", op, address, self.local, {**msg, "shard": k}, ShardUnreachableError,
            f"the parameter shard on worker {address}",
        )  # fmt: skip

    async def shard_colsq(self, rank: int, colsq: np.ndarray, curvature: float) -> dict:
        """Send each shard its rows' part of the rank's column squares (L-BFGS's
        preconditioner, which the whole-model server takes with ``ready``)."""
        assert self.shards is not None
        await asyncio.gather(*(
            self._shard(k, "colsq", rank=rank, curvature=float(curvature),
                        colsq=ToPickle(np.ascontiguousarray(colsq[lo:hi])))
            for k, (_, lo, hi) in enumerate(self.shards)
        ))  # fmt: skip
        return {"status": "OK"}

    async def _push_sharded(
        self, rank: int, version: int, grad: np.ndarray, **scalars: Any
    ) -> dict[str, Any]:
        """A sharded job's push, in one round trip: the slices to every shard (each call
        answered with the shard's new rows once the round closed) and the scalars to the
        coordinator (answered when the round closed, or the job stopped), all at once."""
        assert self.shards is not None
        wait = self.timeout + self.wait_bound
        slices = [
            asyncio.ensure_future(self._shard(
                k, "push", version=version, rank=rank, incarnation=self.incarnation,
                grad=ToPickle(np.ascontiguousarray(grad[lo:hi])), wait=wait,
            ))
            for k, (_, lo, hi) in enumerate(self.shards)
        ]  # fmt: skip
        try:
            reply = await self._call(
                "push", extra=self.wait_bound, rank=rank, version=version, grad=None,
                incarnation=self.incarnation, **scalars,
            )  # fmt: skip
            sent_to = self.shards
            if reply.get("shards"):
                self.shards = reply["shards"]
            moved = [tuple(x) for x in self.shards] != [tuple(x) for x in sent_to]
            if moved or reply.get("status") != "OK" or int(reply["version"]) != version + 1:
                # stopped, stale, or a rebuilt shard (the job went on from its backup): the
                # shards' rows for this round may not come
                for task in slices:
                    task.cancel()
                return await self._with_params(reply)
            try:
                parts = await asyncio.gather(*slices)
            except ParameterServerError:  # a shard moved meanwhile: fetch from the new layout
                return await self._after_loss()
        finally:
            for task in slices:
                task.cancel()
        versions = {int(p["version"]) for p in parts}
        if versions != {int(reply["version"])}:  # a later round closed meanwhile (quorum)
            return await self._with_params({**reply, "version": max(versions)})
        return {**reply, "params": np.concatenate([p["params"] for p in parts])}

    async def _push_async_sharded(
        self, rank: int, version: int, grad: np.ndarray, **scalars: Any
    ) -> dict[str, Any]:
        """Async/ssp with shards: the coordinator admits the push (the scalars), then every
        shard applies its slice at once and answers with its new rows. The version sent
        with the next push is the fewest pushes a shard had applied: its staleness is
        counted from there."""
        assert self.shards is not None
        reply = await self._call("push", extra=self.wait_bound, rank=rank, version=version,
                                 grad=None, incarnation=self.incarnation, **scalars)  # fmt: skip
        if reply.get("status") != "OK":
            return reply
        if reply.get("shards"):
            self.shards = reply["shards"]
        step = {k: reply[k] for k in ("lr", "t", "weight", "epoch", "gen")}
        try:
            parts = await asyncio.gather(*(
                self._shard(k, "apply", rank=rank, incarnation=self.incarnation,
                            grad=ToPickle(np.ascontiguousarray(grad[lo:hi])), **step)
                for k, (_, lo, hi) in enumerate(self.shards)
            ))  # fmt: skip
        except (ShardUnreachableError, UnknownJobError):
            # a shard's worker left (or the layout moved): the shards are rebuilt; a shard
            # that refuses the push for another reason fails the task loudly
            parts = [{"status": "stale"}]
        if any(p.get("status") == "stale" for p in parts):
            # the shards were rebuilt from a backup after this push's admission: it is one
            # of the steps the rebuild counts as lost; go on from the rebuilt rows
            return await self._after_loss()
        if not all(p["finite"] for p in parts):
            bad = [a for (a, _, _), p in zip(self.shards, parts, strict=True) if not p["finite"]]
            return await self._call(
                "push", rank=rank, version=version, grad=None, incarnation=self.incarnation,
                shard_error=f"the parameters became non-finite on the shard(s) at {bad}",
                **scalars,
            )  # fmt: skip
        version = min(int(p["version"]) for p in parts)
        return {**reply, "version": version,
                "params": np.concatenate([p["params"] for p in parts])}  # fmt: skip

    async def _after_loss(self) -> dict[str, Any]:
        """The rows after a shard's worker was lost: the coordinator's layout and version,
        then the rows from every shard, tried again until the shards are rebuilt (or the
        job stops), for as long as a call may take."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout + self.wait_bound
        while True:
            try:
                # a bounded try: distributed retries a dead worker's refused connection for
                # its whole connect timeout, and the coordinator's layout may still name it
                async with asyncio.timeout(LOSS_PROBE):
                    return await self._with_params(await self._call("pull", retry=True))
            except (UnknownJobError, SupersededError):
                raise  # the job ended, or a newer run of this rank took over
            except (ParameterServerError, TimeoutError):
                if loop.time() > deadline:
                    raise ParameterServerError("the parameter shards were not rebuilt in "
                                               "time", op="shard_pull") from None  # fmt: skip
                await asyncio.sleep(RETRY_DELAY)

    async def _with_params(self, reply: dict[str, Any]) -> dict[str, Any]:
        """A sharded job's reply carries no parameters: fetch its version's rows from
        every shard at once and put them together."""
        for attempt in range(RETRIES):
            if reply.get("shards"):
                self.shards = reply["shards"]
            if self.shards is None or reply.get("status") == "stopped":
                return reply
            # async/ssp: each shard's rows as they are (the shards apply pushes on arrival,
            # and a push admitted but lost with its task never lands on them)
            version = int(reply["version"]) if self.mode == "sync" else 0
            try:
                parts = await asyncio.gather(*(
                    self._shard(k, "pull", version=version, wait=self.timeout)
                    for k in range(len(self.shards))
                ))  # fmt: skip
            except ParameterServerError:
                if attempt + 1 == RETRIES:
                    raise
                # a shard's worker left: its shard is rebuilt elsewhere (or the job stops)
                await asyncio.sleep(RETRY_DELAY * (attempt + 1))
                fresh = await self._call("pull", retry=True)
                reply = {**reply, **{k: fresh[k] for k in ("status", "version", "shards")
                                     if k in fresh}}  # fmt: skip
                continue
            versions = {int(p["version"]) for p in parts}
            if len(versions) > 1 and self.mode == "sync":  # a rollback meanwhile: read again
                reply = {**reply, "version": max(versions)}
                continue
            return {**reply, "version": min(versions),
                    "params": np.concatenate([p["params"] for p in parts])}  # fmt: skip
        raise ParameterServerError("the parameter shards did not settle on one version",
                                   op="shard_pull")  # fmt: skip
