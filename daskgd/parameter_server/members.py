"""The handlers the training tasks call: ``join``, ``ready`` and ``push``."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import numpy as np
from distributed.protocol import ToPickle

from daskgd.objective.finite import all_finite
from daskgd.parameter_server.checks import (
    check_class_loss,
    check_hess,
    check_incarnation,
    check_push,
    check_rank,
    check_ready,
    error,
)
from daskgd.parameter_server.job import Job
from daskgd.parameter_server.keyed_job import KeyedJob
from daskgd.parameter_server.rounds import RECOVERY_EVERY
from daskgd.parameter_server.runner import JobRunner
from daskgd.parameter_server.sharding import ShardError

__all__ = ["MemberHandlers"]

logger = logging.getLogger(__name__)


class MemberHandlers(JobRunner):
    """The members' handlers (a base of the plugin); see :mod:`daskgd.parameter_server`."""

    async def join(self, job, rank, worker, incarnation=None):
        """A training task (new or rerun) joins: mark it live, send it the current state."""
        j = self.get_job(job)
        if isinstance(j, dict):
            return j
        bad = check_rank(j, rank)
        if bad is None and not isinstance(worker, str):
            bad = f"worker must be an address string, got {type(worker).__name__}"
        if bad is None and incarnation is not None and not isinstance(incarnation, str):
            bad = f"incarnation must be None or a string, got {incarnation!r}"
        if bad:
            return error(bad)
        # a rerun task of a lost shard's worker: the layout it gets must be the rebuilt one
        await self.wait_member(j, rank, lambda: not j.recovering)
        position = await self.exclusive(j, j.join, rank, worker, incarnation, self.workers())
        self.wake(j)
        out = self.params_reply(j)
        out["position"] = position
        out["wait_bound"] = j.config.member_timeout + j.config.ssp_timeout
        if j.shards is not None:
            out["shards"] = j.shards.layout()
            out["mode"] = j.config.mode
        if rank not in j.reports:
            out["initial"] = ToPickle(j.initial)
        return out

    async def ready(
        self, job, rank, worker, loss0, loss_zero, grad0, weight, curvature=None, gram=None,
        incarnation=None, colsq=None,
    ):  # fmt: skip
        """A rank loaded its rows: keep what it measured before its first step.

        With ``auto_lr`` the reply waits until every live rank reported and the step size
        is set (or the job stopped), so no step is taken before it is known.
        """
        j = self.get_job(job)
        if isinstance(j, dict):
            return j
        bad = check_rank(j, rank) or _not_keyed(j, "ready")
        if bad:
            return error(bad)
        refused = check_incarnation(j, rank, incarnation)
        if refused:
            return refused
        bad = check_ready(j, worker, loss0, loss_zero, grad0, weight, curvature, gram, colsq)
        if bad:
            return error(bad)
        j.touch(rank)
        await self.exclusive(j, j.take_report, rank, worker, loss0, loss_zero, grad0, weight,
                             curvature, gram, self.workers(), colsq, heavy=True)  # fmt: skip
        self.wake(j)
        if j.config.auto_lr:

            async def retry() -> None:  # a rank that died or went silent leaves the live set
                await self.exclusive(j, j.auto_step, j.live(self.workers()))

            await self.wait_member(j, rank, lambda: j.eta is not None, retry)
        return self.params_reply(j)

    async def push(
        self, job, rank, version, grad, n, weight, loss, worker=None, class_loss=None,
        incarnation=None, hess=None, shard_error=None, timing=None,
    ):  # fmt: skip
        """Take a gradient; see :mod:`daskgd.parameter_server`. ``shard_error``: a task
        of a sharded async job reports that a shard's rows became non-finite. ``timing``:
        ``[kernel seconds, seconds reading rows, rows read]`` of the batch, for a
        ``placement="latency"`` job (others ignore it)."""
        j = self.get_job(job)
        if isinstance(j, dict):
            return j
        bad = check_rank(j, rank) or _not_keyed(j, "push")
        if bad:
            return error(bad)
        refused = check_incarnation(j, rank, incarnation)
        if refused:
            return refused
        if isinstance(shard_error, str) and j.shards is not None:
            await self.exclusive(j, j.diverged, shard_error)
            self.wake(j)
        if j.stopped:
            return self.params_reply(j)
        bad = check_push(j, version, grad, n, weight, loss, worker)
        if bad is None and class_loss is not None:
            bad = check_class_loss(j, class_loss)
        if bad is None:
            bad = check_hess(j, hess)
        if bad:
            return error(bad)
        if class_loss is not None:
            class_loss = np.array(class_loss, dtype=np.float64)
        r = j.ranks[rank]
        j.touch(rank)
        if j.rebalancer is not None and timing is not None:
            # sync: a stale push's time is not counted (async pushes are all a little stale)
            if j.config.mode != "sync":
                j.rebalancer.observe(rank, int(n), timing, now=time.monotonic())
            elif version == j.version:
                j.rebalancer.observe(rank, int(n), timing)
        if worker is not None:
            r.address = worker
        r.active = True
        if await self.exclusive(j, j.over_time):
            self.wake(j)
            return self.params_reply(j)
        if j.config.auto_lr and j.eta is None:
            # a training task that skipped ``ready``: the step is not known yet; fix it
            # from the reports so far rather than stepping with the placeholder
            if not j.reports:
                return error("auto_lr: a push came before any rank reported ready")
            # the reports are read by the owner: a ready call may be adding one
            await self.exclusive(j, lambda: j.auto_step(list(j.reports)))
        if j.check is not None and j.config.mode != "sync":
            return await self._check_push(j, incarnation, rank, version, grad, weight, loss)
        args = (rank, version, grad, n, float(weight), float(loss), class_loss)
        if j.config.mode == "sync":
            return await self._push_sync(j, incarnation, *args, hess=hess)
        if j.shards is not None:
            return await self._admit(j, incarnation, rank, version, n, float(weight),
                                     float(loss), class_loss)  # fmt: skip
        try:
            outcome = await self.exclusive(
                j, _if_current, j, incarnation, j.apply_async, *args, heavy=True
            )
        except Exception as exc:  # a bug must fail the job loudly, as in sync mode
            logger.exception("daskgd: an async step of job %s failed", j.id)
            await self.fail(j, exc)
            outcome = None
        self.wake(j)
        if outcome is _SUPERSEDED:
            return check_incarnation(j, rank, incarnation)
        if j.config.mode == "ssp":
            held = time.monotonic()
            await self._ssp_wait(j, rank)
            if j.rebalancer is not None:
                j.rebalancer.held(rank, time.monotonic() - held)
        return self.params_reply(j)

    async def _check_push(self, j: Job, incarnation, rank, version, grad, weight, loss):
        """Async/ssp full batch while a gradient check is open (see
        :mod:`daskgd.parameter_server.confirm`): no step; a gradient at the check's version
        is kept and its rank waits for the others', any other is dropped and its rank
        answered with the check's parameters. A check that waits longer than
        ``member_timeout`` (a rank silent) is abandoned and the steps resume."""
        check = j.check
        assert check is not None
        if not (math.isfinite(loss) and all_finite(grad)):
            await self.exclusive(j, j._reject, rank, version)  # the job stops on it
            self.wake(j)
            return self.params_reply(j)
        kept = await self.exclusive(j, _if_current, j, incarnation, j.take_check_part, rank,
                                    check, version, grad, float(weight), float(loss),
                                    heavy=True)  # fmt: skip
        if kept is _SUPERSEDED:
            return check_incarnation(j, rank, incarnation)
        if not kept:
            j.dropped += 1
        self.wake(j)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + j.config.member_timeout

        def over() -> bool:
            return j.check is not check or loop.time() >= deadline

        if rank in check.parts:
            await self.wait_member(j, rank, over)
            if j.check is check:
                await self.exclusive(j, j.close_check, "a rank sent nothing for member_timeout")
                self.wake(j)
        return self.params_reply(j)

    async def _push_sync(self, j: Job, incarnation, rank, version, *rest, hess=None):
        try:
            outcome = await self.exclusive(
                j, _if_current, j, incarnation, j.arrive_sync, rank, version, *rest,
                self.workers(), hess, heavy=True,
            )  # fmt: skip
        except Exception as exc:  # a bug must fail the job loudly, not hang its members
            logger.exception("daskgd: a sync step of job %s failed", j.id)
            await self.fail(j, exc)
            outcome = "stopped"
        self.wake(j)
        if outcome is _SUPERSEDED:
            return check_incarnation(j, rank, incarnation)
        if outcome == "twice":
            return error(f"rank {rank} pushed twice for version {version}")
        if outcome == "stale":
            return self.params_reply(j, "stale")
        await self.wait_member(j, rank, lambda: j.version > version, lambda: self.maybe_finish(j))
        return self.params_reply(j)

    async def _admit(self, j: Job, incarnation, rank, *args) -> dict[str, Any]:
        """Async/ssp with shards: admit a push (the coordinator's part of applying it) and
        tell the task the step's number, learning rate and epoch; the task then has the
        shards apply its slices. While an epoch's close waits for the shards' figures no
        push is admitted, so that its stop rules act before any later step, as they do
        with the whole model here."""
        if j.config.mode == "ssp":
            # before the admission, not after (as the whole-model server does): an admitted
            # push must reach the shards at once, or an epoch's close would wait on it
            held = time.monotonic()
            await self._ssp_wait(j, rank, ahead=1)
            if j.rebalancer is not None:
                j.rebalancer.held(rank, time.monotonic() - held)
        while True:
            await self.wait_member(j, rank, lambda: not (j.epoch_due or j.recovering),
                                   lambda: self.maybe_finish(j))  # fmt: skip
            if j.stopped:
                return self.params_reply(j)
            out = await self.exclusive(j, _if_current, j, incarnation, j.admit_async, rank, *args)
            if not (isinstance(out, dict) and out.get("wait")):
                break
        self.wake(j)
        if out is _SUPERSEDED:
            return check_incarnation(j, rank, incarnation) or error("superseded")
        if out is None:
            return self.params_reply(j)
        if out["due"]:
            self.spawn(self._close_epoch(j, out["epoch"], out["count"], out["mean_w"]))
        # the layout the push's generation applies to (a rebuild moves shards)
        reply = {"status": "OK", "version": j.version, "params": None,
                 "shards": j.shards.layout() if j.shards is not None else None,
                 **{k: out[k] for k in ("t", "lr", "epoch", "weight", "gen")}}  # fmt: skip
        if j.rebalancer is not None:  # placement="latency": each rank's row-chunks
            reply["assign"] = j.rebalancer.message()
        return reply

    async def _close_epoch(self, j: Job, epoch: int, count: int, mean_w: float) -> None:
        """Async/ssp with shards: close ``epoch`` with the shards' figures once they applied
        its ``count`` pushes; every :data:`RECOVERY_EVERY` epochs (and at least
        ``BACKUP_SPACING`` seconds), while no push is admitted (every shard has applied
        the same pushes), each shard keeps a backup."""
        assert j.shards is not None
        generation = j.generation  # a rebuild meanwhile reopens the epoch: this close is void

        def close(stats: dict[str, Any], lost: int) -> None:
            if j.generation == generation:
                j.close_due_epoch(stats, lost)

        try:
            stats, lost = await j.shards.epoch_async(epoch, count, mean_w)
            if j.generation != generation:
                return
            due = (j.epochs + 1) % RECOVERY_EVERY == 0 and not j.shards.no_replica
            due = due and j.shards.spaced()
            if due and lost == 0 and not j.stopped:
                backup_at = j.version
                try:
                    if await j.shards.backup_async(backup_at):
                        j.keep_lbfgs(backup_at)
                except ShardError:  # a worker left meanwhile: no recovery point until the next
                    if j.generation == generation:
                        j.shards.backup_version = None
            await self.exclusive(j, close, stats, lost, heavy=True)
        except (ShardError, asyncio.CancelledError) as exc:
            if j.generation != generation:
                return  # rebuilt meanwhile: the epoch starts again
            if isinstance(exc, asyncio.CancelledError):
                raise
            if j.recovering or j.shards.backup_version is not None:
                # a shard's worker is lost: the rebuild reopens the epoch; if the worker does
                # not leave within SHARD_LOSS_WAIT the job fails (JobRunner.maybe_finish)
                j.recovering = True
                j.shard_failure = j.shard_failure or (time.monotonic(), str(exc))
            else:
                await self.fail(j, exc)
        except Exception as exc:
            logger.exception("daskgd: closing an epoch of job %s failed", j.id)
            await self.fail(j, exc)
        self.wake(j)

    async def _ssp_wait(self, j: Job, rank: int, ahead: int = 0) -> None:
        """Wait while ``rank``, ``ahead`` pushes on, would be more than the bound ahead of
        the slowest live member (or ``ssp_timeout`` passed)."""
        s = j.config.max_staleness
        assert s is not None  # JobConfig requires it in ssp mode
        me = j.ranks[rank]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + j.config.ssp_timeout

        def caught_up() -> bool:
            others = [j.ranks[i].clock for i in j.live(self.workers()) if i != rank]
            return not others or me.clock + ahead - min(others) <= s or loop.time() >= deadline

        await self.wait_member(j, rank, caught_up)


_SUPERSEDED = object()


def _not_keyed(j: Job, op: str) -> str | None:
    """A key-value job's members push keys (``daskgd_kpush``) and report no ``ready``."""
    if isinstance(j, KeyedJob):
        return f"job {j.id!r} is a key-value (sparse) job: daskgd_{op} is not for it (use kpush)"
    return None


def _if_current(j: Job, incarnation: str | None, step: Any, rank: int, *args: Any) -> Any:
    """``step(rank, *args)`` unless a newer run of ``rank`` joined since the push was
    checked: run by the job's owner, so that a zombie's push queued behind the new run's
    ``join`` cannot land in the round the new run pushes to."""
    if incarnation is not None and j.ranks[rank].incarnation not in (None, incarnation):
        return _SUPERSEDED
    return step(rank, *args)
