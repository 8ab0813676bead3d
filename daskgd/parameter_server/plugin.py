"""The parameter server's scheduler plugin: its handlers, and who runs a job's changes.

The protocol (handlers, replies, modes, leases, incarnations, the threading model) is
described in :mod:`daskgd.parameter_server`; key-value (sparse) jobs' handlers in
:mod:`daskgd.parameter_server.keyed_handlers`. This module must stay importable without
the compiled kernels: the scheduler imports only this package, the objective and numpy.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol import ToPickle

from daskgd._version import __version__
from daskgd.parameter_server.checks import check_create, check_shards, check_status, error
from daskgd.parameter_server.config import (
    INLINE_MAX_PARAMS,
    PLUGIN_NAME,
    check_quorum,
    is_index,
    make_settings,
)
from daskgd.parameter_server.job import Job
from daskgd.parameter_server.keyed_handlers import KeyedHandlers
from daskgd.parameter_server.kshard_job import ShardedKeyedJob
from daskgd.parameter_server.members import MemberHandlers
from daskgd.parameter_server.rebalance import check_rebalance
from daskgd.parameter_server.runner import STEP_THREADS
from daskgd.parameter_server.sharding import ShardError, ShardSet, split_rows
from daskgd.parameter_server.stats import EpochStats

__all__ = ["ParameterServer"]

logger = logging.getLogger(__name__)

# handler name suffix -> method name (``close`` is taken by the plugin hook)
_OPS = {
    "create": "create",
    "join": "join",
    "ready": "ready",
    "push": "push",
    "pull": "pull",
    "status": "status",
    "stop": "stop",
    "close": "close_job",
    "info": "info",
    "snapshot": "snapshot",
    "kcreate": "keyed_create",
    "kready": "keyed_ready",
    "kpull": "keyed_pull",
    "kpush": "keyed_push",
}


def _guard(op: str, method: Any) -> Any:
    """Wrap a handler: bad argument sets and unexpected failures become error replies.

    A message with a missing or unknown key would otherwise raise ``TypeError`` in the
    scheduler's comm loop; a bug in a handler is logged here (with its traceback) and
    answered with an error of kind ``"internal"`` instead of an uncaught exception.
    """
    sig = inspect.signature(method)

    @functools.wraps(method)
    async def handler(**msg: Any) -> Any:
        try:
            sig.bind(**msg)
        except TypeError as exc:
            return error(f"daskgd_{op}: {exc}")
        try:
            return await method(**msg)
        except Exception as exc:
            logger.exception("daskgd_%s failed", op)
            return error(f"daskgd_{op} failed on the scheduler: {exc!r}", kind="internal")

    return handler


class ParameterServer(KeyedHandlers, MemberHandlers, SchedulerPlugin):
    """The daskgd parameter server, installed on the scheduler as a plugin.

    Register it once per scheduler (registration is idempotent, by name)::

        client.register_plugin(ParameterServer())

    The driver does this; the handlers are listed in :mod:`daskgd.parameter_server`.
    """

    name = PLUGIN_NAME
    idempotent = True

    def __getstate__(self) -> dict:
        # only the class travels to the scheduler; state is created by ``start``
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()  # type: ignore[misc]

    # -- plugin hooks ----------------------------------------------------------
    async def start(self, scheduler) -> None:
        """Install the ``daskgd_*`` handlers on ``scheduler``."""
        self.scheduler = scheduler
        self._executor = ThreadPoolExecutor(STEP_THREADS, thread_name_prefix="daskgd-ps")
        scheduler.handlers.update(
            {f"daskgd_{op}": _guard(op, getattr(self, m)) for op, m in _OPS.items()}
        )

    async def close(self) -> None:
        """Remove the handlers, stop every job and release the threads."""
        if self.scheduler is not None:
            for op in _OPS:
                self.scheduler.handlers.pop(f"daskgd_{op}", None)
        jobs, self.jobs = list(self.jobs.values()), {}
        for job in jobs:
            await self.stop_job(job, "the parameter server closed", "the scheduler closed")
            self.kshards_close(job)
            if job.shards is not None:
                await job.shards.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def remove_worker(self, scheduler, worker: str, **kwargs: Any) -> None:
        """Deactivate the ranks that ran on ``worker`` and re-check open rounds."""
        self.kshards_lost(worker)
        for job in self.jobs.values():
            if job.shards is not None:  # backups it held are gone (a holder keeps its own)
                job.shards.replicas = [None if r == worker else r for r in job.shards.replicas]
            if job.shards is not None and worker in job.shards.addresses and not job.stopped:
                live = [w for w in self.workers() if w != worker]
                recover = job.shards.can_recover(worker, live)
                why = job.shards.lose(worker)
                if recover:
                    job.recovering = True
                    self.spawn(self.recover(job, worker))
                else:
                    self.spawn(self.stop_job(job, "a parameter shard was lost", why))
            hit = False
            for r in job.ranks:
                if r.address == worker and r.active:
                    r.active, hit = False, True
            fan = job.shards if job.shards is not None else getattr(job, "kshards", None)
            dead = [(i, r.incarnation) for i, r in enumerate(job.ranks) if r.address == worker]
            if fan is not None and dead and job.config.mode == "sync" and not job.stopped:
                self.spawn(self._gone(fan, dead))
            if hit:
                if job.shards is not None and job.config.mode != "sync" and not job.stopped:
                    self.spawn(self._hurry(job))
                self.spawn(self.maybe_finish(job))
                self.wake(job)

    async def _gone(self, fan: Any, dead: list[tuple[int, str | None]]) -> None:
        """Sync with shards: the runs ``dead`` died; a slice of theirs that is not on a
        shard yet never comes, and the round closing (which holds the job's lock, and so
        its status) must not wait :data:`~daskgd.parameter_server.shard.SLICE_WAIT` for
        it: the shards close it without that slice once it is late
        (``daskgd_shard_gone``), and the push is counted lost."""
        # each shard on its own: one that left (its job is rebuilt or stopped) or refuses
        # must not cancel the notice to the others
        await fan.call_each("gone", ranks=[[r, inc] for r, inc in dead])

    async def _hurry(self, j: Job) -> None:
        """Async/ssp with shards: a member died, perhaps with a push admitted that will
        never reach the shards; the open epoch's close does not wait long for it."""
        assert j.shards is not None
        try:
            await j.shards.call_async("hurry", epoch=j.epochs)
        except ShardError:  # a shard's worker left too: its rebuild starts the epoch again
            pass

    async def recover(self, j: Job, lost: str) -> None:
        """Rebuild the shards ``lost`` held from their backups on the replica holders and
        roll the others back to theirs; the job goes on from there (the steps since the
        backup are counted as lost and redone). Any mode: in async/ssp, pushes admitted before
        the rebuild are refused by the rebuilt shards (``generation``)."""
        assert j.shards is not None
        try:
            async with j.lock:  # after the round in flight gave up (its calls were cancelled)
                v, s = j.version, j.shards.backup_version
                j.shard_failure = None
                if s is None:  # a backup in flight was cut short: no recovery point left
                    raise ShardError("no complete backup to rebuild from")
                # async/ssp: pushes admitted before now are refused by the rebuilt shards
                j.generation += 1
                moved = await j.shards.recover_async(lost, v + 1, s, j.generation)
                if j.lbfgs is not None:  # its numbers as they were at the backup
                    j.lbfgs = j.lbfgs_backups[s].copy()
                j.pending.clear()
                j.stats = EpochStats()
                j.epoch_due = False  # async/ssp: the open epoch starts again
                j.recoveries += [{**m, "version": v, "restored": s, "steps_lost": v - s}
                                 for m in moved]  # fmt: skip
                j.published = (v + 1, None)
                j.recovering = False
                logger.warning("daskgd: job %s rebuilt shard(s) %s from version %d "
                               "(%d steps lost)", j.id, moved, s, v - s)  # fmt: skip
                try:
                    if await j.shards.backup_async(v + 1):
                        j.keep_lbfgs(v + 1)
                except ShardError:  # another worker left meanwhile: none until the next
                    j.shards.backup_version = None
        except Exception as exc:
            logger.exception("daskgd: recovering job %s failed", j.id)
            j.recovering = False
            await self.stop_job(j, "a parameter shard was lost", (
                f"worker {lost}, which held a shard of the parameters, left, and its shard "
                f"could not be rebuilt ({exc!r}). Rerun the fit, or resume it from its "
                "checkpoint (checkpoint=..., resume=True)"))  # fmt: skip
        self.wake(j)
        self.spawn(self.maybe_finish(j))

    def remove_client(self, scheduler, client: str) -> None:
        """Free the jobs of a driver that disconnected without closing them."""
        for job_id in [k for k, j in self.jobs.items() if j.client == client]:
            job = self.jobs.pop(job_id)
            self.spawn(self.stop_job(job, "the driver disconnected", "the driver disconnected"))
            self.kshards_close(job)
            if job.shards is not None:
                self.spawn(job.shards.close())

    # -- handlers --------------------------------------------------------------
    async def create(
        self, job, params, config, optimizer, ranks, client=None, resume=None, shards=None
    ):
        """Create a job; see :mod:`daskgd.parameter_server`. ``shards``, a list of worker
        addresses, puts the parameters and the optimizer state in that many shards on
        those workers (:mod:`daskgd.parameter_server.shard`); this plugin coordinates."""
        if not isinstance(job, str) or not job:
            return error(f"job must be a non-empty string, got {job!r}")
        if job in self.jobs:
            return error(f"job {job!r} exists already")
        bad = check_create(params, config, optimizer, ranks, client)
        if bad is None and shards is not None:
            bad = check_shards(shards, params, config, optimizer, self.workers())
        if bad:
            return error(bad)
        limit = config.get("inline_max_params", INLINE_MAX_PARAMS)

        def settings():  # O(d): off the loop for a large model
            if not np.all(np.isfinite(params)):
                return "params must be finite"
            try:
                cfg, opt = make_settings(params, config, optimizer)
                check_quorum(cfg, opt, len(ranks))
                if cfg.rebalance is not None:
                    bad = check_rebalance(cfg.rebalance, len(ranks))
                    if bad:
                        return bad
            except (TypeError, ValueError, ArithmeticError) as exc:
                return f"bad job settings: {exc}"
            return cfg, opt, params.astype(np.float64)

        if is_index(limit) and params.size <= limit:
            made = settings()
        else:
            made = await asyncio.get_running_loop().run_in_executor(self._executor, settings)
        if isinstance(made, str):
            return error(made)
        if job in self.jobs:  # created meanwhile by another call
            return error(f"job {job!r} exists already")
        cfg, opt, p = made
        if resume is not None and shards is not None and getattr(opt, "precondition", False):
            # preconditioned shards keep their L-BFGS vectors scaled, and the coordinator's
            # dot products would be those of the checkpoint's unscaled pairs: the memory
            # restarts at the checkpoint's point
            kept = {
                k: v for k, v in dict(resume["state"]).items() if k not in ("lbfgs_s", "lbfgs_y")
            }
            resume = {**resume, "state": kept}
        layout = None
        if shards is not None:
            ranges = split_rows(p.shape[0], len(shards))
            layout = ShardSet(job, shards, ranges, self.scheduler.rpc, asyncio.get_running_loop())
        j = Job(job, p, cfg, opt, list(ranks), client, layout)
        if resume is not None:
            try:
                j.restore(resume)
            except (TypeError, ValueError, KeyError, ArithmeticError) as exc:
                return error(f"cannot resume from this checkpoint: {exc}", kind="bad_resume")
        if layout is not None:
            state = None if resume is None else dict(resume["state"])
            layout.cluster = lambda: list(self.scheduler.workers)
            try:
                await layout.create(p, opt, j.version, state)
                # the first recovery point (see rounds.RECOVERY_EVERY)
                if await layout.backup_async(j.version):
                    j.keep_lbfgs(j.version)
            except ShardError as exc:
                await layout.close()
                return error(f"cannot place the parameter shards: {exc}")
        self.jobs[job] = j
        out: dict[str, Any] = {"status": "OK", "version": j.version}
        if layout is not None:
            out["shards"] = layout.layout()
        return out

    async def pull(self, job):
        """Current parameters and version."""
        j = self.get_job(job)
        return j if isinstance(j, dict) else self.params_reply(j)

    async def status(self, job, since=0, params=False, wait=0.0):
        """Progress: stop state, history from epoch ``since``, optionally the parameters.

        With ``wait`` > 0 (seconds, at most 60), a call that has nothing new to report
        waits up to that long for the next epoch or the stop, so that a driver hears of
        them at once instead of at its next poll. The rows before ``since`` drop their
        parameter vectors here: the caller has them.
        """
        j = self.get_job(job)
        if isinstance(j, dict):
            return j
        bad = check_status(since, params)
        if bad:
            return error(bad)
        if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= 60:
            return error(f"wait must be a number of seconds in [0, 60], got {wait!r}")
        if wait > 0 and not j.stopped and len(j.history) <= since:
            try:
                await asyncio.wait_for(j.progress.wait(), wait)
            except TimeoutError:
                pass
            j = self.get_job(job)  # closed meanwhile?
            if isinstance(j, dict):
                return j
        out = await self.exclusive(j, j.report_status, since, params, self.workers())
        if params and (j.shards is not None or isinstance(j, ShardedKeyedJob)):
            try:
                out["params"] = ToPickle(await self._gather(j))
            except ShardError as exc:
                return error(str(exc))
        if j.stopped:
            self.wake(j)
        out["n_workers"] = len(self.workers())  # the driver's "every worker is gone" check
        return out

    async def stop(self, job, reason="stopped by the user"):
        """Stop a job; its members get ``stopped`` at their next push."""
        j = self.get_job(job)
        if isinstance(j, dict):
            return j
        if not isinstance(reason, str):
            return error(f"reason must be a string, got {type(reason).__name__}")
        await self.exclusive(j, j.stop, reason)
        self.wake(j)
        # the state, not the history: the caller polls ``status`` for the rows it lacks
        workers = self.workers()
        return await self.exclusive(j, lambda: j.summary(len(j.history), False, j.live(workers)))

    async def close_job(self, job, since=0, gather=True):
        """Stop a job, free its state and return its final status with the parameters and
        the history rows from ``since`` (the driver holds the earlier ones). Steps queued
        behind the job's lock run first and, finding the job stopped, change nothing.
        ``gather=False``: a sharded key-value job's model is left on its shards, whose
        addresses the reply gives (``kshards``), for the driver to read directly
        (:func:`daskgd.parameter_server.kshard.export_shards`, which frees them)."""
        j = self.get_job(job)
        if isinstance(j, dict):
            return j
        bad = check_status(since, False)
        if bad or not isinstance(gather, bool):
            return error(bad or f"gather must be True or False, got {gather!r}")
        out = await self.exclusive(j, j.close, since, self.workers())
        self.wake(j)
        self.jobs.pop(job, None)
        if isinstance(j, ShardedKeyedJob) and not gather and not j.kshards.broken:
            out["params"], out["kshards"] = None, list(j.kshards.addresses)
        elif isinstance(j, ShardedKeyedJob):
            try:
                out["params"] = ToPickle(await self._gather(j))
            except ShardError as exc:
                out["params"] = None
                if j.error is None:
                    out.update(error=str(exc), error_kind="training")
            self.kshards_close(j)
        if j.shards is not None:
            try:
                out["params"] = ToPickle(await self._gather(j))
            except ShardError as exc:
                out["params"] = None
                if j.error is None:
                    out.update(error=str(exc), error_kind="training")
            self.spawn(j.shards.close())  # the reply does not wait for the memory to go
        return out

    async def _gather(self, j: Job) -> np.ndarray:
        """A sharded job's parameters, whole, read between steps (under the job's lock).
        In sync mode every shard must be at the job's version; in async/ssp the shards
        may have applied different numbers of pushes (a push admitted but lost with its
        task never lands), and the rows are what each holds."""
        if isinstance(j, ShardedKeyedJob):
            return await self.kshard_params(j)
        assert j.shards is not None
        async with j.lock:
            params, _, versions = await j.shards.gather_async()
        if j.config.mode == "sync" and any(v != j.version for v in versions):
            raise ShardError(f"the shards are at versions {versions}, the job at {j.version}")
        return params.reshape(j.shape)

    async def snapshot(self, job, fresh=False, since=0):
        """The latest checkpoint snapshot of ``job`` (None before the first), or a new one.

        A fresh snapshot is taken where steps run, so it never sees half a step; a failed
        job gives none.
        """
        j = self.get_job(job)
        if isinstance(j, dict):
            return j
        if not isinstance(fresh, bool):
            return error(f"fresh must be True or False, got {fresh!r}")
        bad = check_status(since, False)
        if bad:
            return error(bad)
        if fresh:
            await self.exclusive(j, j.fresh_snapshot, heavy=True)
        seq, snap = j.snapshot_seq, j.snapshot
        if snap is None or (fresh and j.error is not None):
            return {"status": "OK", "seq": seq, "snapshot": None, "history": []}
        rows = j.history[since : snap["history_len"]]
        return {
            "status": "OK",
            "seq": seq,
            "snapshot": ToPickle(snap),
            "history": [{k: v for k, v in h.items() if k != "params"} for h in rows],
        }

    async def info(self):
        """Jobs on this scheduler and the daskgd version running it."""
        return {"status": "OK", "jobs": sorted(self.jobs), "version": __version__}
