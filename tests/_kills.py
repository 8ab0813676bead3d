"""Kill -9 a worker in the middle of a fit: the harness of the shard-recovery tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from distributed import Client

from daskgd.driver import fit_with_settings
from daskgd.driver.settings import FitSettings


def fit_and_kill(
    client: Client, data: Any, settings: dict[str, Any], after_epoch: int,
    victim: Callable[[Client], str],
) -> dict[str, Any]:  # fmt: skip
    """Run ``fit_with_settings(data, FitSettings(**settings))`` in a thread; once epoch
    ``after_epoch`` closed, kill -9 the worker ``victim(client)`` names (no nanny call:
    the process dies at once). Returns ``{"res": result}`` or ``{"error": exception}``,
    and the worker killed as ``"killed"``."""
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
    client.run(lambda: __import__("os")._exit(1), workers=[outcome["killed"]], nanny=False,
               on_error="ignore")  # fmt: skip
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
