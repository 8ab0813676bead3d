"""One owner per job: how the parameter server runs a job's changes and wakes its waiters.

:class:`JobRunner` is the base of the plugin (:class:`daskgd.parameter_server.plugin.
ParameterServer`): it holds the jobs and the thread pool, and :meth:`JobRunner.exclusive`
is the only way a handler changes a job.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from distributed.protocol import ToPickle

from daskgd.parameter_server.checks import error
from daskgd.parameter_server.job import Job

__all__ = ["JobRunner"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: Threads that step large models: one job's steps run one at a time (its lock), so more
#: threads only let different jobs step at once.
STEP_THREADS = 4
#: Seconds a sharded job waits, after a shard call failed, for the scheduler to see the
#: shard's worker leave (and the shard rebuilt) before it fails.
SHARD_LOSS_WAIT = 30.0
#: Seconds between re-checks of a waiting member's condition (a lease may run out, a
#: worker may be dropped silently).
RECHECK = 1.0


class JobRunner:
    """The jobs of a scheduler, and who runs their changes (see the module docstring)."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.scheduler: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Future] = set()

    # -- who runs a job's changes ----------------------------------------------
    async def exclusive(self, j: Job, fn: Callable[..., T], *args: Any, heavy: bool = False) -> T:
        """Run ``fn(*args)``, a change of job ``j``, as its only owner.

        A small model's changes run here on the event loop, each in one piece (nothing
        else runs on the loop meanwhile). A large model's run under the job's lock, in
        the thread pool when ``heavy`` (O(d) work), so its steps are serial and in order
        while the loop, and other jobs, go on.
        """
        if j.inline:
            return fn(*args)
        async with j.lock:
            if not heavy:
                return fn(*args)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, fn, *args)

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop_job(self, j: Job, reason: str, message: str) -> None:
        await self.exclusive(j, functools.partial(j.stop, reason, error=message, kind="training"))
        self.wake(j)

    async def fail(self, j: Job, exc: BaseException) -> None:
        """A step raised (a bug): stop the job loudly, as its owner, rather than hang its
        members."""
        stop = functools.partial(
            j.stop,
            "parameter server error",
            error=f"the parameter server failed: {exc!r}",
            kind="training",
        )
        await self.exclusive(j, stop)

    def wake(self, job: Job) -> None:
        job.tick.set()
        job.tick = asyncio.Event()
        if job.epochs != job.reported_epochs or job.stopped:
            job.reported_epochs = job.epochs
            job.progress.set()
            job.progress = asyncio.Event()

    def get_job(self, job: Any) -> Job | dict:
        if not isinstance(job, str) or job not in self.jobs:
            return error(
                f"unknown job {job!r} (finished, closed, or never created)", kind="unknown_job"
            )
        return self.jobs[job]

    def workers(self):
        return self.scheduler.workers

    @staticmethod
    def params_reply(job: Job, status: str = "OK") -> dict[str, Any]:
        version, params = job.published
        if job.stopped:
            status = "stopped"
        out = {"status": status, "params": ToPickle(params), "version": version}
        if job.optimizer.needs_hessian:
            out["hessian"] = job.wants_hessian
        if job.shards is not None:  # the layout may change (a rebuilt shard)
            out["shards"] = job.shards.layout()
        if job.rebalancer is not None:  # placement="latency": each rank's row-chunks
            out["assign"] = job.rebalancer.message()
        if job.stopped:
            out.update(reason=job.reason, error=job.error, error_kind=job.error_kind)
        return out

    async def wait_member(
        self, j: Job, rank: int, done: Callable[[], bool],
        recheck: Callable[[], Awaitable[None]] | None = None,
    ) -> None:  # fmt: skip
        """Wait (a member's call held by design) until ``done()`` or the job stops; the
        member's lease is renewed meanwhile (it is waiting on us, not silent)."""
        while not (j.stopped or done()):
            tick = j.tick
            try:
                await asyncio.wait_for(tick.wait(), RECHECK)
            except TimeoutError:
                if recheck is not None:
                    await recheck()
            j.touch(rank)

    async def maybe_finish(self, j: Job) -> None:
        """Sync mode: close the open round if it is complete (a member left, a lease ran
        out); a failure of the step fails the job loudly rather than hanging its members.
        A shard whose calls failed but whose worker has not left within
        :data:`SHARD_LOSS_WAIT` seconds fails the job too."""
        failed = j.shard_failure
        if failed is not None and not j.stopped and time.monotonic() - failed[0] > SHARD_LOSS_WAIT:
            j.shard_failure = None
            j.recovering = False
            await self.stop_job(j, "a parameter shard failed", f"{failed[1]} (its worker "
                                f"did not leave within {SHARD_LOSS_WAIT:g} s)")  # fmt: skip
            return
        missing = j.missing_member()
        if missing is not None:
            limit = j.config.member_timeout
            await self.stop_job(j, "a partition stopped pushing", (
                f"rank {missing} (last on worker {j.ranks[missing].address}) has not pushed "
                f"for {limit:g} s while the other ranks wait in round {j.version}: optimizer "
                f"{j.optimizer.name!r} needs every partition's rows in every round. Its task "
                "may be hung, or slow to load its rows after a restart: raise member_timeout "
                f"(now {limit:g} s) if its rows take longer than that"))  # fmt: skip
            return
        try:
            await self.exclusive(j, j.try_close_round, self.workers(), heavy=True)
        except Exception as exc:
            logger.exception("daskgd: closing a round of job %s failed", j.id)
            await self.fail(j, exc)
        self.wake(j)
