"""The driver's line to the scheduler: calls that outlive a short outage, and the errors a
lost scheduler, a closed client or a cluster without workers raise.

A connection that fails (closed, refused) is retried for :data:`SCHEDULER_GRACE` seconds
before the scheduler counts as lost (:class:`~daskgd.errors.SchedulerLostError`, naming the
last checkpoint); a call that gets no answer at all (a hung scheduler or machine) gives up
after :data:`RPC_TIMEOUT`, so a slow scheduler is not "lost".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from distributed import Client

from daskgd.errors import (
    NoWorkersError,
    ParameterServerTimeoutError,
    SchedulerLostError,
    TrainingError,
)

__all__ = [
    "RPC_TIMEOUT",
    "SCHEDULER_GRACE",
    "CheckpointState",
    "call",
    "client_closed_error",
    "no_workers_error",
    "scheduler",
    "scheduler_lost_error",
    "some_workers",
]

#: Seconds the driver keeps retrying a scheduler whose connection failed.
SCHEDULER_GRACE = 10.0
#: Seconds a call may go unanswered.
RPC_TIMEOUT = 30.0


class CheckpointState(Protocol):
    """What a lost scheduler's message needs of the checkpoint writer."""

    path: str
    epoch: int | None

    async def flush(self, final: Any = None) -> None: ...


def scheduler(client: Client) -> Any:
    """The client's RPC handle on the scheduler (where the parameter server's handlers live)."""
    if client.scheduler is None:
        raise TrainingError("the Dask client is not connected to a scheduler")
    return client.scheduler


def scheduler_lost_error(
    client: Client, writer: CheckpointState | None, exc: BaseException
) -> SchedulerLostError:
    """The error of a fit whose scheduler died: what happened and how to resume."""
    address = getattr(client.scheduler, "address", "?")
    if writer is not None and writer.epoch is not None:
        where = (
            f"The last checkpoint is {writer.path} (epoch {writer.epoch}): resume with "
            f"fit(..., checkpoint={writer.path!r}, resume=True) on a new cluster."
        )
    elif writer is not None:
        where = (
            f"No checkpoint was written to {writer.path} yet; fit(..., checkpoint="
            f"{writer.path!r}, resume=True) on a new cluster starts afresh."
        )
    else:
        where = (
            "The fit had no checkpoint; pass checkpoint='path.zarr' to make a fit resumable "
            "with fit(..., checkpoint='path.zarr', resume=True) on a new cluster."
        )
    # a timeout has no text of its own: say what it means
    reason = str(exc).strip() or (
        "the scheduler did not answer in time"
        if isinstance(exc, TimeoutError)
        else "no further detail"
    )
    return SchedulerLostError(
        f"lost the Dask scheduler at {address} during the fit "
        f"({type(exc).__name__}: {reason}). {where}",
        checkpoint=None if writer is None else writer.path,
        epoch=None if writer is None else writer.epoch,
    )


def client_closed_error() -> TrainingError:
    """The error of a fit whose client was closed under it."""
    return TrainingError(
        "the Dask client was closed while fit was running; keep it open until fit "
        "returns (its job on the scheduler was freed)"
    )


def no_workers_error(gone_for: float, timeout: float) -> NoWorkersError:
    """The error of a fit whose every worker was gone for longer than ``timeout``."""
    return NoWorkersError(
        f"every worker of this fit was lost: the scheduler has had no worker for "
        f"{gone_for:.1f} s (worker_timeout={timeout:g} s). Start workers, find out why they "
        "died (memory limits, killed processes: see the workers' logs), or pass a larger "
        "worker_timeout to wait longer for them to come back"
    )


async def call(
    client: Client,
    writer: CheckpointState | None,
    request: Callable[..., Awaitable[dict[str, Any]]],
    **kwargs: Any,
) -> dict[str, Any]:
    """Make a :class:`~daskgd.parameter_server.ParameterServerClient` call, ``request``
    (a bound method: ``ps.status``...), that outlives a short outage.

    A connection that keeps failing for :data:`SCHEDULER_GRACE` seconds, or a call with no
    answer for :data:`RPC_TIMEOUT`, means the scheduler is lost: raise
    :class:`~daskgd.errors.SchedulerLostError`, naming the last checkpoint.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SCHEDULER_GRACE
    timeout = RPC_TIMEOUT
    while True:
        try:
            return await asyncio.wait_for(request(**kwargs), timeout)
        except (OSError, TimeoutError, ParameterServerTimeoutError) as exc:
            # (CommClosedError is an OSError.) After a failure, a reconnection may hang in
            # connect (distributed retries refused connections for its whole connect
            # timeout): bound it by the grace
            timeout = max(0.5, min(RPC_TIMEOUT, deadline - loop.time()))
            if "wait" in kwargs:  # a retried status must answer at once, within the grace
                kwargs["wait"] = 0.0
            if client.status in ("closing", "closed"):  # closed by its owner, not lost
                raise client_closed_error() from exc
            if loop.time() >= deadline:
                if writer is not None:
                    try:  # a write in flight finishes first, so the message is exact
                        await writer.flush()
                    except Exception:
                        pass
                raise scheduler_lost_error(client, writer, exc) from exc
            await asyncio.sleep(0.5)


async def some_workers(client: Client, timeout: float) -> list[str]:
    """The scheduler's workers, sorted; wait up to ``timeout`` seconds for a first one."""
    deadline = time.monotonic() + timeout
    while True:
        workers = sorted((await scheduler(client).identity())["workers"])
        if workers:
            return workers
        if time.monotonic() >= deadline:
            raise NoWorkersError(
                f"the cluster has no workers: none joined in worker_timeout={timeout:g} s. "
                "Start some (or let the cluster scale up), or pass a larger worker_timeout"
            )
        await asyncio.sleep(min(0.2, timeout))
