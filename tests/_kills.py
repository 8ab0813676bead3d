"""Kill -9 a worker in the middle of a fit: the harness of the shard-recovery tests."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import cloudpickle
from distributed import Client

from daskgd.driver import fit_with_settings
from daskgd.driver.settings import FitSettings

# the workers cannot import this module (tests/ is not on their path): its functions that
# run there travel by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def exit_now() -> None:
    """Run on a worker: its process dies at once (as kill -9 does)."""
    __import__("os")._exit(1)


def exit_after_next_push() -> None:
    """Run on a worker: its training task's next sharded push sends its scalars to the
    coordinator but none of its slices to the shards, and the process dies two seconds
    later (the widest form of a worker dying mid-push)."""

    def patch() -> None:
        import asyncio
        import os

        from daskgd.parameter_server import shard_client

        send = shard_client.ShardCalls._shard

        async def _shard(self: Any, k: int, op: str, **msg: Any) -> Any:
            if op == "push":
                asyncio.get_running_loop().call_later(2.0, os._exit, 1)
                await asyncio.sleep(3600)
            return await send(self, k, op, **msg)

        shard_client.ShardCalls._shard = _shard  # type: ignore[method-assign]

    patch()


def fit_and_kill(
    client: Client, data: Any, settings: dict[str, Any], after_epoch: int,
    victim: Callable[[Client], str], kill: Callable[[], None] = exit_now,
) -> dict[str, Any]:  # fmt: skip
    """Run ``fit_with_settings(data, FitSettings(**settings))`` in a thread; once epoch
    ``after_epoch`` closed, run ``kill`` on the worker ``victim(client)`` names (no nanny
    call; by default the process dies at once). Returns ``{"res": result}`` or
    ``{"error": exception}``, and the worker killed as ``"killed"``."""
    outcome: dict[str, Any] = {}
    going = threading.Event()

    def watch(row: dict) -> None:
        if row["epoch"] >= after_epoch:
            going.set()

    def run() -> None:
        try:
            outcome["res"] = fit_with_settings(
                data, FitSettings(**settings, callback=watch), client=client
            )
        except Exception as exc:
            outcome["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    assert going.wait(120), "the fit did not reach the epoch to kill at"
    outcome["killed"] = victim(client)
    client.run(kill, workers=[outcome["killed"]], nanny=False, on_error="ignore")
    t.join(180)
    assert not t.is_alive(), "the fit did not end after the kill"
    return outcome


def first_worker(client: Client) -> str:
    """The first worker by address: the driver puts shard 0 there."""
    return sorted(client.scheduler_info()["workers"])[0]


def runs_rank(client: Client, rank: int, kind: str = "train") -> str | None:
    """The worker that runs training task ``rank`` of the fit in progress (``kind``
    "block": a feature-partitioned fit's)."""

    def where(dask_scheduler=None):
        prefix = f"daskgd-{kind}-{rank}-"
        for ts in dask_scheduler.tasks.values():
            if str(ts.key).startswith(prefix) and ts.processing_on is not None:
                return ts.processing_on.address
        return None

    return client.run_on_scheduler(where)
