"""The client half of the parameter server: the one place that speaks its wire protocol.

:class:`ParameterServerClient` is built on the driver from a :class:`distributed.Client`
(:meth:`ParameterServerClient.from_client`) or inside a training task on a worker
(:meth:`ParameterServerClient.from_worker`, through the worker's own connection to the
scheduler). Its methods are coroutines that run on the loop of that client or worker; a
training task, which runs in a worker thread, calls them through :meth:`call_sync`.

Every call has a timeout; the idempotent ones (``pull``, ``status``, ``snapshot``,
``info``) are retried a few times when the connection fails. A reply with
``status == "error"`` becomes an exception through one table, :data:`ERRORS`, keyed by
the reply's ``kind``: no caller looks at message text. Replies ``"OK"``, ``"stale"`` and
``"stopped"`` are returned as they are (a dict): they are the protocol's normal answers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from distributed.protocol import ToPickle

from daskgd.errors import (
    ParameterServerError,
    ParameterServerTimeoutError,
)
from daskgd.parameter_server.kshard_client import KeyedShardCalls
from daskgd.parameter_server.replies import ERRORS, RETRIES, RETRY_DELAY, raise_for_reply
from daskgd.parameter_server.shard_client import ShardCalls

__all__ = ["DEFAULT_TIMEOUT", "ERRORS", "RETRIES", "ParameterServerClient", "raise_for_reply"]

logger = logging.getLogger(__name__)

#: Seconds an ordinary call may take (a call that waits on the server by design, a sync
#: push or a ``status(wait=...)``, gets its documented wait on top).
DEFAULT_TIMEOUT = 60.0


class ParameterServerClient(ShardCalls, KeyedShardCalls):
    """Calls the parameter server's handlers for one job.

    Parameters
    ----------
    job : str
        The job id.
    rpc : object
        An RPC handle on the scheduler (``client.scheduler`` or ``worker.scheduler``):
        ``rpc.daskgd_push(**msg)`` and so on.
    loop : tornado IOLoop, optional
        The loop the handle runs on, for :meth:`call_sync` (a worker's ``loop``).
    timeout : float
        Seconds an ordinary call may take (see :data:`DEFAULT_TIMEOUT`).

    Examples
    --------
    On the driver::

        ps = ParameterServerClient.from_client(client, "my-job")
        await ps.create(params, config, optimizer, ranks)

    In a training task on a worker (a thread of the worker)::

        ps = ParameterServerClient.from_worker("my-job")
        reply = ps.call_sync("join", rank=0, worker=ps.address)
    """

    def __init__(
        self, job: str, rpc: Any, loop: Any = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        if not isinstance(job, str) or not job:
            raise ValueError(f"job must be a non-empty string, got {job!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.job = job
        self.rpc = rpc
        self.loop = loop
        self.timeout = float(timeout)
        #: Seconds the server may hold a push or a ready call by design (a sync round
        #: waiting for its members, an ssp member waiting for the slowest); the join
        #: reply says how long (``wait_bound``).
        self.wait_bound = 0.0
        #: This training-task run's id, sent with join, ready and push (see :meth:`join`).
        self.incarnation = uuid.uuid4().hex
        self.address: str | None = None

    def __repr__(self) -> str:
        return f"ParameterServerClient(job={self.job!r})"

    def __reduce__(self) -> tuple:
        # pickled by name: unpickled in a task it talks through the worker it runs on
        return (_rebuild, (self.job, self.timeout))

    # -- construction --------------------------------------------------------------
    @classmethod
    def from_client(
        cls, client: Any, job: str, timeout: float = DEFAULT_TIMEOUT
    ) -> ParameterServerClient:
        """A client for ``job`` through a :class:`distributed.Client` (the driver's).

        Raises
        ------
        ParameterServerError
            When the client is not connected to a scheduler.
        """
        if client.scheduler is None:
            raise ParameterServerError(
                "the Dask client is not connected to a scheduler", op="connect"
            )
        out = cls(job, client.scheduler, getattr(client, "loop", None), timeout)
        out.address = getattr(client, "id", None)
        return out

    @classmethod
    def from_worker(
        cls, job: str, worker: Any = None, timeout: float = DEFAULT_TIMEOUT
    ) -> ParameterServerClient:
        """A client for ``job`` inside a task, through its worker's scheduler connection.

        Parameters
        ----------
        job : str
        worker : distributed.Worker, optional
            Defaults to :func:`distributed.get_worker` (the worker running the task).
        timeout : float
        """
        if worker is None:
            from distributed import get_worker

            worker = get_worker()
        out = cls(job, worker.scheduler, worker.loop, timeout)
        out.address = worker.address
        out.pool = worker.rpc
        out.local = getattr(worker, "plugins", {}).get("daskgd-shards")
        return out

    # -- transport -----------------------------------------------------------------
    async def _call(
        self, op: str, *, extra: float = 0.0, retry: bool = False, **msg: Any
    ) -> dict[str, Any]:
        """One handler call with a timeout (``timeout + extra``), retried if ``retry``."""
        attempts = RETRIES if retry else 1
        handler: Callable[..., Awaitable[Any]] = getattr(self.rpc, f"daskgd_{op}")
        limit = self.timeout + extra
        for attempt in range(attempts):
            try:
                # a timeout scope, not wait_for: no extra task per call on the hot path
                async with asyncio.timeout(limit):
                    reply = await handler(job=self.job, **msg)
            except (OSError, TimeoutError) as exc:  # CommClosedError is an OSError
                if attempt + 1 < attempts:
                    logger.debug("daskgd_%s failed (%r); retrying", op, exc)
                    await asyncio.sleep(RETRY_DELAY * (attempt + 1))
                    continue
                if isinstance(exc, TimeoutError):
                    raise ParameterServerTimeoutError(
                        f"daskgd_{op} for job {self.job!r} got no reply within {limit:g} s",
                        op=op,
                        kind="timeout",
                    ) from exc
                raise
            return raise_for_reply(op, reply)
        raise AssertionError("unreachable")  # pragma: no cover

    def call_sync(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run the coroutine method ``method`` on this client's loop from another thread
        (a training task's), and return its result.

        Raises
        ------
        RuntimeError
            When the client has no loop (it was not built by a factory).
        """
        if self.loop is None:
            raise RuntimeError("this ParameterServerClient has no event loop to run on")
        from distributed.utils import sync

        return sync(self.loop, getattr(self, method), *args, **kwargs)

    # -- the operations --------------------------------------------------------------
    async def create(
        self,
        params: np.ndarray,
        config: dict[str, Any],
        optimizer: dict[str, Any],
        ranks: list[str],
        client: str | None = None,
        resume: dict[str, Any] | None = None,
        shards: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create the job (``daskgd_create``); returns ``{"status": "OK", "version": v}``
        (and ``shards``, their layout, when ``shards`` names the workers to hold them).

        Raises
        ------
        BadMessageError
            Bad settings or a job that exists already.
        ResumeRejectedError
            ``resume`` does not fit the job.
        """
        return await self._call(
            "create",
            params=ToPickle(params),
            config=config,
            optimizer=optimizer,
            ranks=list(ranks),
            client=client,
            resume=None if resume is None else ToPickle(resume),
            shards=shards,
        )

    async def join(self, rank: int, worker: str) -> dict[str, Any]:
        """A training task (new or rerun) joins as ``rank`` from ``worker``.

        The reply has ``params``, ``version``, ``position`` (and ``initial`` before the
        rank reported ``ready``). This run's :attr:`incarnation` goes with it: once it
        joined, pushes of any older run of the rank are refused.
        """
        reply = await self._call("join", rank=rank, worker=worker, incarnation=self.incarnation)
        bound = reply.get("wait_bound")
        if isinstance(bound, int | float) and bound >= 0:
            self.wait_bound = float(bound)
        self.shards = reply.get("shards")
        self.mode = reply.get("mode")
        return await self._with_params(reply)

    async def ready(
        self,
        rank: int,
        worker: str,
        loss0: float,
        loss_zero: float,
        grad0: np.ndarray,
        weight: float,
        curvature: tuple[float, float, float] | None = None,
        gram: np.ndarray | None = None,
        colsq: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Report what the rank measured before its first step (``daskgd_ready``)."""
        reply = await self._call(
            "ready",
            extra=self.wait_bound,
            rank=rank,
            worker=worker,
            loss0=loss0,
            loss_zero=loss_zero,
            grad0=ToPickle(grad0),
            weight=weight,
            curvature=curvature,
            gram=None if gram is None else ToPickle(gram),
            colsq=None if colsq is None else ToPickle(colsq),
            incarnation=self.incarnation,
        )
        return await self._with_params(reply)

    async def push(
        self,
        rank: int,
        version: int,
        grad: np.ndarray,
        n: int,
        weight: float,
        loss: float,
        worker: str | None = None,
        class_loss: np.ndarray | None = None,
        hess: np.ndarray | None = None,
        timing: list[float] | None = None,
    ) -> dict[str, Any]:
        """Push a gradient (``daskgd_push``); the reply has ``params`` and ``version``.

        ``hess`` (optimizer ``newton`` only): the summed Hessian of the loss over the
        rows, float64 ``(d + 1, d + 1)``. ``timing``: ``[kernel seconds, seconds reading
        rows, rows read]`` of the batch (``placement="latency"``).

        Raises
        ------
        SupersededError
            A newer run of this rank joined: this task must end.
        """
        msg: dict[str, Any] = {}
        if class_loss is not None:
            msg["class_loss"] = ToPickle(class_loss)
        if hess is not None:
            msg["hess"] = ToPickle(hess)
        if timing is not None:
            msg["timing"] = [float(v) for v in timing]
        if self.shards is not None and self.mode != "sync":
            return await self._push_async_sharded(rank, version, grad, n=n, weight=weight,
                                                  loss=loss, worker=worker, **msg)  # fmt: skip
        if self.shards is not None:
            return await self._push_sharded(rank, version, grad, n=n, weight=weight, loss=loss,
                                            worker=worker, **msg)  # fmt: skip
        return await self._call(
            "push",
            extra=self.wait_bound,
            rank=rank,
            version=version,
            grad=ToPickle(grad),
            n=n,
            weight=weight,
            loss=loss,
            worker=worker,
            incarnation=self.incarnation,
            **msg,
        )

    async def pull(self) -> dict[str, Any]:
        """The current ``params`` and ``version``."""
        return await self._call("pull", retry=True)

    # -- key-value (sparse) jobs: :mod:`daskgd.parameter_server.keyed_handlers` ----------
    async def kcreate(
        self,
        n_features: int,
        n_columns: int | None,
        config: dict[str, Any],
        optimizer: dict[str, Any],
        ranks: list[str],
        client: str | None = None,
        params: np.ndarray | None = None,
        shards: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create a key-value job (``daskgd_kcreate``): its parameters live in a keyed
        optimizer's state on the scheduler (or, with ``shards``, in key-hashed shards on
        those workers), zero or ``params`` at the start.

        Raises
        ------
        BadMessageError
            Settings a key-value job cannot run, or a job that exists already.
        """
        return await self._call(
            "kcreate",
            n_features=int(n_features),
            n_columns=n_columns,
            config=config,
            optimizer=optimizer,
            ranks=list(ranks),
            client=client,
            params=None if params is None else ToPickle(params),
            shards=shards,
        )

    async def kready(
        self,
        rank: int,
        worker: str,
        loss0: float,
        loss_zero: float,
        weight: float,
        curvature: tuple[float, float, float] | None = None,
        gram: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Report a key-value member's losses before its first step (``daskgd_kready``);
        with ``auto_lr`` its curvature figures, and the reply waits for the step size."""
        return await self._call(
            "kready",
            extra=self.wait_bound,
            rank=rank,
            worker=worker,
            loss0=loss0,
            loss_zero=loss_zero,
            weight=weight,
            curvature=curvature,
            gram=None if gram is None else ToPickle(gram),
            incarnation=self.incarnation,
        )

    async def kpull(
        self, rank: int, keys: np.ndarray | None = None, dense: bool = False
    ) -> dict[str, Any]:
        """The weights ``w`` at ``keys`` (all of them when ``dense``), the intercept ``b``
        and the ``version``."""
        if self.kshards is not None:
            return await self._kpull_sharded(keys, dense)
        return await self._call(
            "kpull",
            retry=True,
            rank=rank,
            keys=None if keys is None else ToPickle(keys),
            dense=dense,
            incarnation=self.incarnation,
        )

    async def kpush(
        self,
        rank: int,
        version: int,
        keys: np.ndarray,
        grad: np.ndarray,
        grad_b: float | np.ndarray,
        n: int,
        weight: float,
        loss: float,
        worker: str | None = None,
        next_keys: np.ndarray | None = None,
        dense: bool = False,
    ) -> dict[str, Any]:
        """Push a batch's summed gradient at its ``keys`` (``daskgd_kpush``); the reply has
        the weights ``w`` at ``next_keys`` (all of them when ``dense``), ``b`` and
        ``version``.

        Raises
        ------
        SupersededError
            A newer run of this rank joined: this task must end.
        """
        if self.kshards is not None:
            return await self._kpush_sharded(
                rank, version, keys, grad, grad_b, next_keys, dense, n=n, weight=weight,
                loss=loss, worker=worker,
            )  # fmt: skip
        return await self._call(
            "kpush",
            extra=self.wait_bound,
            rank=rank,
            version=version,
            keys=ToPickle(keys),
            grad=ToPickle(grad),
            grad_b=ToPickle(grad_b) if isinstance(grad_b, np.ndarray) else float(grad_b),
            n=n,
            weight=weight,
            loss=loss,
            worker=worker,
            next_keys=None if next_keys is None else ToPickle(next_keys),
            dense=dense,
            incarnation=self.incarnation,
        )

    async def status(
        self, since: int = 0, params: bool = False, wait: float = 0.0
    ) -> dict[str, Any]:
        """Progress from epoch ``since`` (see the server's ``daskgd_status``).

        ``since`` also tells the server that the caller holds the history rows before it,
        so their parameter vectors can be dropped there. With ``wait`` the call may wait
        that long for news; a retried call does not wait again.
        """
        try:
            return await self._call("status", extra=wait, since=since, params=params, wait=wait)
        except (OSError, ParameterServerTimeoutError):
            return await self._call("status", retry=True, since=since, params=params, wait=0.0)

    async def snapshot(self, fresh: bool = False, since: int = 0) -> dict[str, Any]:
        """The latest checkpoint snapshot (or a new one when ``fresh``) and its history
        rows from ``since``."""
        return await self._call("snapshot", retry=True, fresh=fresh, since=since)

    async def stop(self, reason: str = "stopped by the user") -> dict[str, Any]:
        """Stop the job; its members hear ``stopped`` at their next call."""
        return await self._call("stop", reason=reason)

    async def close(self, since: int = 0, gather: bool = True) -> dict[str, Any]:
        """Stop and free the job; the final status with ``params`` and the history rows
        from ``since`` (the caller holds the earlier ones); ``gather=False``: a sharded
        key-value job's shard addresses instead (``kshards``)."""
        return await self._call("close", since=since, gather=gather)

    async def info(self) -> dict[str, Any]:
        """The jobs on the scheduler and the daskgd version running there."""
        handler = self.rpc.daskgd_info
        last: Exception | None = None
        for attempt in range(RETRIES):
            try:
                return raise_for_reply("info", await asyncio.wait_for(handler(), self.timeout))
            except (OSError, TimeoutError) as exc:
                last = exc
                await asyncio.sleep(RETRY_DELAY * (attempt + 1))
        raise ParameterServerTimeoutError(
            f"daskgd_info got no reply after {RETRIES} attempts: {last!r}", op="info",
            kind="timeout",
        )  # fmt: skip


def _rebuild(job: str, timeout: float) -> ParameterServerClient:
    """Unpickle a :class:`ParameterServerClient`: through the worker running the task, else
    through the default :class:`distributed.Client`."""
    try:
        from distributed import get_worker

        return ParameterServerClient.from_worker(job, get_worker(), timeout)
    except ValueError:  # not in a task
        from distributed import default_client

        return ParameterServerClient.from_client(default_client(), job, timeout)
