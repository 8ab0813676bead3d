"""Connecting to a cluster and checking that daskgd can run there, before any work.

Every entry point that sends work to a Dask cluster (``fit``, the estimators, ``make_*``,
``write_zarr`` of dask arrays, ``open_zarr``'s scan, the command) calls
:func:`check_scheduler` first: a task graph that names a daskgd function fails on a scheduler
without daskgd with distributed's generic "Error during deserialization of the task graph",
which does not say what to do.
"""

from __future__ import annotations

import asyncio
from typing import Any

from daskgd.errors import SchedulerSetupError

#: Seconds to wait for the scheduler to answer the check.
_CHECK_TIMEOUT = 30.0


def _probe() -> str:
    """Runs on the scheduler: unpickling this function imports daskgd there."""
    from daskgd._version import __version__

    return __version__


def _setup_error(client: Any, exc: BaseException) -> SchedulerSetupError:
    address = getattr(getattr(client, "scheduler", None), "address", "?")
    return SchedulerSetupError(
        f"the Dask scheduler at {address} cannot run daskgd ({type(exc).__name__}: {exc}). "
        "Install daskgd (the same version) in the scheduler's and every worker's Python "
        "environment."
    )


def check_scheduler(client: Any) -> None:
    """Raise :class:`SchedulerSetupError` unless the client's scheduler can import daskgd.

    One round trip to the scheduler; ``client`` is a synchronous ``distributed.Client``
    (an asynchronous one uses :func:`check_scheduler_async`).
    """
    if getattr(client, "_asynchronous", False):
        return  # awaited by the async entry points instead
    try:
        client.run_on_scheduler(_probe)
    except (ImportError, AttributeError) as exc:  # a missing or older daskgd there
        raise _setup_error(client, exc) from exc


async def check_scheduler_async(client: Any) -> None:
    """The awaitable twin of :func:`check_scheduler`."""
    try:
        await asyncio.wait_for(client.run_on_scheduler(_probe), _CHECK_TIMEOUT)
    except (ImportError, AttributeError) as exc:
        raise _setup_error(client, exc) from exc


def check_tls_address(address: str) -> None:
    """Refuse a ``tls://`` address when dask's configuration holds no TLS credentials.

    distributed would raise a ``TypeError`` about an ``ssl_context`` and then wait a minute
    for the half-made client to close.
    """
    if not address.startswith("tls://"):
        return
    from distributed.security import Security

    sec = Security()  # from dask's configuration (distributed.comm.tls.*)
    if sec.get_connection_args("client").get("ssl_context") is None:
        raise SchedulerSetupError(
            f"cannot connect to {address}: a tls:// address needs TLS credentials, and dask's "
            "configuration has none. Pass client=Client(address, security=Security("
            "tls_ca_file=..., tls_client_cert=..., tls_client_key=...)), or set "
            "distributed.comm.tls.ca-file and distributed.comm.tls.client.cert/key in dask's "
            "configuration (or the DASK_DISTRIBUTED__COMM__TLS__... environment variables)"
        )


def connect(address: str, **kwargs: Any) -> Any:
    """A ``distributed.Client`` for a scheduler address, after :func:`check_tls_address`."""
    from distributed import Client

    check_tls_address(address)
    return Client(address, **kwargs)
