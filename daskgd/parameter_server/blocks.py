"""The coordinator of feature-partitioned fits on the scheduler, and its client.

:class:`BlockCoordinator` is a scheduler plugin (name ``daskgd-blocks``) whose handlers run
the jobs of :mod:`daskgd.parameter_server.block_job`; :class:`BlockClient` calls them, from
the driver and from the training tasks, through distributed's RPC. Every reply is a dict
with a ``status`` (``"ok"``, ``"wait"``, ``"restart"``, ``"stopped"`` or ``"error"``);
arrays travel wrapped in :class:`distributed.protocol.ToPickle`.

==========================  ====================================================
handler                     arguments -> reply (besides ``status``)
==========================  ====================================================
``daskgd_blocks_create``    ``job, n_ranks, rules, member_timeout, client, grid``
``daskgd_blocks_join``      ``job, rank, worker`` -> ``incarnation, generation,
                            epoch, block`` (where a rerun task restarts)
``daskgd_blocks_reduce``    ``job, rank, incarnation, generation, seq, value, kind,
                            epoch, backup, wait, group`` -> ``value, stop`` (the sum
                            over ``group``: every rank, or a grid's ``r<i>``/``c<j>``), or
                            ``wait`` (call again with ``value=None``), or ``restart``
                            with the rank's ``generation, epoch, block``
``daskgd_blocks_tree``      ``job, rank, incarnation, generation, silent, waited,
                            unreachable`` -> ``workers`` (every rank's worker), or
                            ``restart`` or ``stopped``: a rank of a tree reduction
                            (:mod:`~daskgd.parameter_server.block_tree`) that waited
                            for ``silent`` asks whether to go on
``daskgd_blocks_status``    ``job, since, wait`` -> the job's stop state and history
``daskgd_blocks_stop``      ``job, reason``
``daskgd_blocks_close``     ``job, since`` -> the final status; the job is freed
==========================  ====================================================
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import fields
from typing import Any

import numpy as np
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol import ToPickle

from daskgd.parameter_server.block_job import BlockJob, BlockRules
from daskgd.parameter_server.checks import error
from daskgd.parameter_server.client import ParameterServerClient

__all__ = ["BlockClient", "BlockCoordinator"]

logger = logging.getLogger(__name__)

#: Seconds a reduction call waits on the scheduler before answering ``wait``.
REDUCE_WAIT = 5.0
_RULE_FIELDS = {f.name for f in fields(BlockRules)} - {"g0", "first_loss", "best_loss",
                                                      "no_improve"}  # fmt: skip


def _wrap(reply: dict[str, Any]) -> dict[str, Any]:
    """Arrays (and lists of arrays) of a reply wrapped for the wire (no pickle fallback)."""
    return {k: ToPickle(v) if isinstance(v, np.ndarray | list) and _arrays(v) else v
            for k, v in reply.items()}  # fmt: skip


def _arrays(v: Any) -> bool:
    return isinstance(v, np.ndarray) or all(isinstance(x, np.ndarray) for x in v)


class BlockCoordinator(SchedulerPlugin):
    """The coordinator of feature-partitioned jobs, installed on the scheduler.

    Register it once per scheduler (idempotent, by name); the driver does.
    """

    name = "daskgd-blocks"
    idempotent = True
    ops = ("create", "join", "reduce", "tree", "status", "stop", "close")

    def __init__(self) -> None:
        self.scheduler: Any = None
        self.jobs: dict[str, BlockJob] = {}

    def __getstate__(self) -> dict:
        return {}  # the state is created where the plugin runs

    def __setstate__(self, state: dict) -> None:
        self.__init__()  # type: ignore[misc]

    async def start(self, scheduler) -> None:
        """Install the ``daskgd_blocks_*`` handlers on ``scheduler``."""
        self.scheduler = scheduler
        for op in self.ops:
            scheduler.handlers[f"daskgd_blocks_{op}"] = self._guarded(op)

    async def close(self) -> None:
        """Remove the handlers; jobs still running stop with an error."""
        if self.scheduler is not None:
            for op in self.ops:
                self.scheduler.handlers.pop(f"daskgd_blocks_{op}", None)
        for j in self.jobs.values():
            j.fail("the scheduler closed", "internal")
        self.jobs.clear()

    def remove_client(self, scheduler, client: str) -> None:
        """Free the jobs of a driver that disconnected without closing them."""
        for job_id in [k for k, j in self.jobs.items() if j.client == client]:
            self.jobs.pop(job_id).fail("the driver disconnected", "internal")

    def _guarded(self, op: str) -> Any:
        method = getattr(self, f"op_{op}")

        async def handler(comm: Any = None, **msg: Any) -> Any:
            try:
                return _wrap(await method(**msg))
            except TypeError as exc:  # a message with missing or unknown keys
                return error(f"daskgd_blocks_{op}: {exc}")
            except Exception as exc:
                logger.exception("daskgd_blocks_%s failed", op)
                return error(f"daskgd_blocks_{op} failed on the scheduler: {exc!r}", "internal")

        return handler

    def _job(self, job: Any) -> BlockJob | dict:
        j = self.jobs.get(job) if isinstance(job, str) else None
        if j is None:
            return error(f"no feature-partitioned job {job!r} on this scheduler", "unknown_job")
        return j

    # -- handlers -------------------------------------------------------------------------
    async def op_create(self, job, n_ranks, rules, member_timeout=600.0, client=None, grid=None):
        if not isinstance(job, str) or job in self.jobs:
            return error(f"job must be a new string id, got {job!r}")
        if not isinstance(n_ranks, int) or n_ranks < 1:
            return error(f"n_ranks must be an integer >= 1, got {n_ranks!r}")
        if not isinstance(rules, dict) or not set(rules) <= _RULE_FIELDS:
            return error(f"rules must be a dict with keys among {sorted(_RULE_FIELDS)}")
        if grid is not None:
            grid = tuple(grid)
            if len(grid) != 2 or grid[0] * grid[1] != n_ranks:
                return error(f"grid must be (row blocks, column blocks) of {n_ranks} ranks")
        self.jobs[job] = BlockJob(job, n_ranks, BlockRules(**rules), float(member_timeout),
                                  client, grid)  # fmt: skip
        return {"status": "ok"}

    async def op_join(self, job, rank, worker):
        j = self._job(job)
        if isinstance(j, dict):
            return j
        if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < j.n_ranks:
            return error(f"rank must be an integer in [0, {j.n_ranks}), got {rank!r}")
        if j.incarnations[rank] is not None:
            logger.warning("daskgd: job %s: rank %d restarts on %s", job, rank, worker)
        return j.join(rank, str(worker))

    async def op_reduce(self, job, rank, incarnation, generation, seq, value=None, kind="sum",
                        epoch=None, backup=None, wait=REDUCE_WAIT, group="all"):  # fmt: skip
        j = self._member(job, rank, incarnation)
        if isinstance(j, dict):
            return j
        if value is not None and not (isinstance(value, np.ndarray) and value.ndim == 1):
            return error(f"value must be a 1-d numpy array, got {type(value).__name__}")
        if kind not in ("sum", "stats"):
            return error(f"kind must be 'sum' or 'stats', got {kind!r}")
        ok = group == "all" or (
            j.grid is not None and isinstance(group, str) and group[:1] in ("r", "c")
            and group[1:].isdigit() and int(group[1:]) < j.grid[group[0] == "c"]
        )  # fmt: skip
        if not ok or rank not in j.members(group):
            return error(f"group must be 'all', or the 'r<i>'/'c<j>' of a grid job that holds "
                         f"rank {rank}; got {group!r}")  # fmt: skip
        wait = min(max(float(wait), 0.0), 30.0)
        return await j.add(rank, generation, seq, value, kind, epoch, backup, wait, group,
                           len(j.members(group)))  # fmt: skip

    async def op_tree(self, job, rank, incarnation, generation, silent=(), waited=0.0,
                      unreachable=False):  # fmt: skip
        j = self._member(job, rank, incarnation)
        if isinstance(j, dict):
            return j
        silent = list(silent) if isinstance(silent, list | tuple) else None
        if silent is None or not all(
            isinstance(r, int) and not isinstance(r, bool) and 0 <= r < j.n_ranks for r in silent
        ):
            return error(f"silent must be a list of ranks in [0, {j.n_ranks})")
        if not isinstance(waited, int | float) or not waited >= 0:
            return error(f"waited must be a number of seconds >= 0, got {waited!r}")
        return j.tree_check(rank, generation, silent, float(waited), bool(unreachable))

    def _member(self, job: Any, rank: Any, incarnation: Any) -> BlockJob | dict:
        """The job, if ``rank``'s run ``incarnation`` is its current member; else the error."""
        j = self._job(job)
        if isinstance(j, dict):
            return j
        bad = j.check_member(rank, incarnation)
        if bad == "superseded":
            return error(
                f"rank {rank}: a newer run of this training task joined the job; this run "
                "(its worker was thought lost) must end",
                "superseded",
            )
        return error(bad) if bad else j

    async def op_status(self, job, since=0, wait=0.0):
        j = self._job(job)
        if isinstance(j, dict):
            return j
        if not j.stopped and len(j.history) <= since and wait > 0:
            try:
                await asyncio.wait_for(j.progress.wait(), min(float(wait), 30.0))
            except TimeoutError:
                pass
        return j.summary(int(since))

    async def op_stop(self, job, reason="stopped by the user"):
        j = self._job(job)
        if isinstance(j, dict):
            return j
        j.stop(str(reason))
        return {"status": "ok"}

    async def op_close(self, job, since=0):
        j = self._job(job)
        if isinstance(j, dict):
            return j
        if not j.stopped:
            j.fail("the driver closed the job", "closed")
        del self.jobs[job]
        return j.summary(int(since))


class BlockClient(ParameterServerClient):
    """Calls to the :class:`BlockCoordinator`'s handlers for one job (the driver's and the
    training tasks'); build it with :meth:`from_client` or :meth:`from_worker`."""

    async def blocks(self, op: str, *, extra: float = 0.0, **msg: Any) -> dict[str, Any]:
        """Call ``daskgd_blocks_<op>`` with ``msg`` (arrays wrapped for the wire)."""
        wrapped: dict[str, Any] = {
            k: ToPickle(v) if isinstance(v, np.ndarray) else v for k, v in msg.items()
        }
        return await self._call(f"blocks_{op}", extra=extra, **wrapped)
