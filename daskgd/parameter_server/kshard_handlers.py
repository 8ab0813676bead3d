"""The coordinator's handlers for key-value jobs in key-hashed shards (a base of
:class:`~daskgd.parameter_server.keyed_handlers.KeyedHandlers`).

``daskgd_kcreate`` with ``shards`` (the workers to hold them, one shard each) creates the
shards (:mod:`daskgd.parameter_server.kshard`) and a
:class:`~daskgd.parameter_server.kshard_job.ShardedKeyedJob`; ``daskgd_kpush`` of such a
job carries scalars only (``keys``, ``grad``, ``grad_b`` None: the slices go to the
shards): sync, the reply comes when the round closed (``version``); async, it gives the
push's ``step`` (``t, epoch, lr_scale, weight, eta``), which the task sends to the shards
with its slices. ``shard_error`` (a message) reports a shard whose weights became
non-finite: the job stops (divergence). The coordinator's bytes per push do not grow
with d or with a batch's keys.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
from distributed.protocol import ToPickle

from daskgd.parameter_server.checks import check_incarnation, check_push_scalars, error
from daskgd.parameter_server.config import JobConfig, is_index
from daskgd.parameter_server.keyed_job import KeyedJob, RuleFacts
from daskgd.parameter_server.kshard_job import ShardedKeyedJob
from daskgd.parameter_server.kshard_set import KeyedShardSet
from daskgd.parameter_server.runner import JobRunner
from daskgd.parameter_server.sharding import ShardError

__all__ = ["KeyedShardHandlers", "keyed_reply"]

logger = logging.getLogger(__name__)

_SUPERSEDED = object()


def _if_current(j: ShardedKeyedJob, incarnation: Any, rank: int, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` unless a newer run of ``rank`` joined since the message was checked."""
    if incarnation is not None and j.ranks[rank].incarnation not in (None, incarnation):
        return _SUPERSEDED
    return fn(*args)


def keyed_reply(
    j: KeyedJob, read: dict[str, Any] | None = None, status: str = "OK"
) -> dict[str, Any]:
    """A key-value job's reply to a member: ``status`` (``stopped`` once the job stopped,
    with why), the job's version and, with ``read`` (:meth:`KeyedJob.read`), the weights
    and intercept read and their version; never the whole parameters (``params`` None)."""
    out: dict[str, Any] = {"status": "stopped" if j.stopped else status,
                           "version": j.version, "params": None}  # fmt: skip
    if read is not None:
        out["version"] = read["version"]
        out["b"] = ToPickle(np.asarray(read["b"])) if np.ndim(read["b"]) else read["b"]
        if "w" in read:
            out["w"] = ToPickle(read["w"])
    if j.stopped:
        out.update(reason=j.reason, error=j.error, error_kind=j.error_kind)
    return out


def _check(j: ShardedKeyedJob, version, n, weight, loss, worker, shard_error) -> str | None:
    if not is_index(version) or version < 0 or version > j.version:
        return f"version must be an integer in [0, {j.version}], got {version!r}"
    bad = check_push_scalars(n, weight, loss, worker)
    if bad:
        return bad
    if shard_error is not None and not isinstance(shard_error, str):
        return "shard_error must be None or a message string"
    return None


class KeyedShardHandlers(JobRunner):
    """Sharded key-value jobs' create, push and bookkeeping (see the module docstring)."""

    async def kcreate_sharded(
        self, job: str, shape: tuple[int, ...], cfg: JobConfig, optimizer: dict[str, Any],
        rule: Any, facts: RuleFacts, ranks: list[str], client: str | None,
        params: np.ndarray | None, shards: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """Create the key-hashed shards on the workers ``shards`` and the job."""
        workers = self.workers()
        if not (isinstance(shards, list | tuple) and shards
                and all(isinstance(a, str) and a in workers for a in shards)):  # fmt: skip
            return error("shards must be a non-empty list of addresses of this cluster's "
                         f"workers, got {shards!r}")  # fmt: skip
        if len(shards) > shape[0] - 1:
            return error(f"{len(shards)} key-hashed shards for a model of {shape[0] - 1} "
                         "features: use fewer servers")  # fmt: skip
        if cfg.record_params:
            return error("record_params (callback_params) with key-hashed shards would pass "
                         "every epoch's model through the scheduler: use n_servers=0")  # fmt: skip
        pen = 0.0
        if params is not None:
            if not np.all(np.isfinite(params)):
                return error("params must be finite")
            pen = facts.regularizer.penalty(params)
        kshards = KeyedShardSet(job, shards, self.scheduler.rpc, asyncio.get_running_loop())
        n_columns = shape[1] if len(shape) == 2 else None
        try:
            await kshards.create(shape[0] - 1, n_columns, optimizer, params)
        except ShardError as exc:
            await kshards.close(list(self.workers()))
            return error(f"cannot place the key-hashed shards: {exc}")
        if job in self.jobs:  # created meanwhile by another call
            await kshards.close(list(self.workers()))
            return error(f"job {job!r} exists already")
        self.jobs[job] = ShardedKeyedJob(job, shape, cfg, rule, facts, list(ranks), client,
                                         kshards, pen)  # fmt: skip
        return {"status": "OK", "version": 0, "shards": list(shards)}

    async def kpush_sharded(
        self, j: ShardedKeyedJob, rank: int, version, n, weight, loss, worker, incarnation,
        shard_error,
    ) -> dict[str, Any]:  # fmt: skip
        """A sharded key-value job's push: its scalars (see the module docstring)."""
        bad = _check(j, version, n, weight, loss, worker, shard_error)
        if bad:
            return error(bad)
        r = j.ranks[rank]
        j.touch(rank)
        if worker is not None:
            r.address = worker
        r.active = True
        if shard_error is not None:
            await self.exclusive(j, _if_current, j, incarnation, rank, j.diverged, shard_error)
            self.wake(j)
            return keyed_reply(j)
        if await self.exclusive(j, j.over_time):
            self.wake(j)
            return keyed_reply(j)
        if j.config.auto_lr and j.eta is None:  # a task that skipped kready
            if not j.reports:
                return error("auto_lr: a push came before any rank reported kready")
            await self.exclusive(j, lambda: j.auto_step(list(j.reports)))
        if j.config.mode == "async":
            try:
                out = await self.exclusive(j, _if_current, j, incarnation, rank, j.kadmit_async,
                                           rank, version, n, float(weight), float(loss),
                                           heavy=True)  # fmt: skip
            except Exception as exc:  # a bug must fail the job loudly
                logger.exception("daskgd: an async keyed admission of job %s failed", j.id)
                await self.fail(j, exc)
                out = None
            self.wake(j)
            if out is _SUPERSEDED:
                return check_incarnation(j, rank, incarnation)  # type: ignore[return-value]
            reply = keyed_reply(j)
            if out is not None and not j.stopped:
                reply.update(step=out, version=out["t"] + 1)
            return reply
        try:
            outcome = await self.exclusive(j, _if_current, j, incarnation, rank, j.karrive_scalars,
                                           rank, version, n, float(weight), float(loss),
                                           self.workers(), heavy=True)  # fmt: skip
        except Exception as exc:  # a bug must fail the job loudly, not hang its members
            logger.exception("daskgd: a sync keyed round of job %s failed", j.id)
            await self.fail(j, exc)
            outcome = "stopped"
        self.wake(j)
        if outcome is _SUPERSEDED:
            return check_incarnation(j, rank, incarnation)  # type: ignore[return-value]
        if outcome == "twice":
            return error(f"rank {rank} pushed twice for version {version}")
        if outcome == "OK":
            await self.wait_member(j, rank, lambda: j.version > version,
                                   lambda: self.maybe_finish(j))  # fmt: skip
        return keyed_reply(j, None, "stale" if outcome == "stale" else "OK")

    # -- the plugin's bookkeeping --------------------------------------------------------
    def kshards_lost(self, worker: str) -> None:
        """``remove_worker``: stop every sharded key-value job whose shard ``worker`` held,
        saying so (key-hashed shards are not rebuilt)."""
        for j in list(self.jobs.values()):
            if isinstance(j, ShardedKeyedJob) and worker in j.kshards.addresses:
                why = j.kshards.lose(worker)
                if not j.stopped:
                    self.spawn(self.stop_job(j, "a parameter shard was lost", why))

    async def kshard_params(self, j: ShardedKeyedJob) -> np.ndarray:
        """The whole model, gathered from the shards between steps (O(d), once)."""
        async with j.lock:
            return await j.kshards.gather_async(j.shape)

    def kshards_close(self, j: Any) -> None:
        """Free a sharded key-value job's shards (the reply does not wait for it)."""
        if isinstance(j, ShardedKeyedJob):
            self.spawn(j.kshards.close(list(self.workers())))
