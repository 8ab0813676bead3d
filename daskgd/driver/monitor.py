"""Watching a running job: long-poll its status, feed the callback, the progress bar and the
checkpoint writer, notice failed tasks and a cluster without workers; then drain the tasks
(or abort the job on an error)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from distributed import Client, Future

from daskgd.checkpoint import CheckpointWriter
from daskgd.driver.checkpointing import checkpoint_tick
from daskgd.driver.connection import RPC_TIMEOUT, call, no_workers_error
from daskgd.driver.settings import FitSettings
from daskgd.errors import DataChangedError, DataNotFoundError, DataValidationError, TrainingError
from daskgd.parameter_server import ParameterServerClient

__all__ = ["abort", "check_unchanged_data", "drain", "watch"]


async def watch(
    client: Client,
    ps: ParameterServerClient,
    futures: list[Future],
    s: FitSettings,
    writer: CheckpointWriter | None = None,
) -> list[dict[str, Any]]:
    """Poll the job until it stops; surface failed tasks as a TrainingError.

    With a checkpoint ``writer``, start writing each new snapshot of the job (and a
    fresh one every ``checkpoint_interval`` seconds); a scheduler that stops answering
    raises :class:`~daskgd.errors.SchedulerLostError`.
    """
    history: list[dict[str, Any]] = []
    bar = None
    gone_since: float | None = None  # when the job was last seen without a live member
    # waits on the scheduler up to poll_interval for the next epoch or the stop
    wait = min(s.poll_interval, RPC_TIMEOUT / 2)
    if s.progress:
        from tqdm.auto import tqdm  # an optional dependency

        bar = tqdm(total=s.max_epochs, unit="epoch", desc="daskgd")
    try:
        while True:
            st = await call(client, writer, ps.status, since=len(history), wait=wait)
            if writer is not None and not st["stopped"]:
                await checkpoint_tick(client, ps, st, s, writer)
            for h in st["history"]:
                params = h.pop("params", None)
                history.append(dict(h))
                if params is not None:
                    h = dict(h, coef=params[:-1], intercept=params[-1])
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{h['loss']:.6g}")
                if s.callback is not None and s.callback(dict(h)) is False:
                    await call(client, writer, ps.stop, reason="stopped by the callback")
            if st["stopped"]:
                return history
            # every worker gone: no member alive and none to rerun a task on (a rerun
            # that is still loading its rows on a new worker does not count)
            if st["live"] or st.get("n_workers", 0):
                gone_since = None
            elif gone_since is None:
                gone_since = time.monotonic()
            elif time.monotonic() - gone_since > s.worker_timeout:
                raise no_workers_error(time.monotonic() - gone_since, s.worker_timeout)
            await _check_tasks(futures)
            if all(f.status == "finished" for f in futures):
                # the job may have stopped between our poll and the tasks' exit
                st = await call(client, writer, ps.status, since=len(history))
                if not st.get("stopped"):
                    raise TrainingError("every training task ended before the job stopped")
    finally:
        if bar is not None:
            bar.close()


async def _check_tasks(futures: list[Future]) -> None:
    for f in futures:
        if f.status == "error":
            exc = await f.exception()
            if isinstance(exc, DataValidationError | DataNotFoundError):
                raise exc  # the data, not the training: its message names the chunk
            raise TrainingError(f"training task {f.key} failed: {exc!r}") from exc
        if f.status == "cancelled":
            raise TrainingError(f"training task {f.key} was cancelled")


async def drain(client: Client, futures: list[Future], timeout: float = 30.0) -> list[dict]:
    """Let the tasks see ``stopped`` and end; cancel what is left (e.g. a queued rerun).

    Returns what the tasks that ended normally returned. A task that found the chunk files
    it mapped changed as it ended (:class:`~daskgd.errors.DataChangedError`, see
    :meth:`daskgd.data.mapped.MappedRows.verify`) fails the fit: that error is raised.
    """
    results: list[dict] = []
    try:
        results = await asyncio.wait_for(client.gather(futures, errors="skip"), timeout)
    except TimeoutError:
        pass
    errors = [await f.exception() for f in futures if f.status == "error"]
    await client.cancel(futures)
    for exc in errors:
        if isinstance(exc, DataChangedError):
            raise exc
    return results


async def check_unchanged_data(datasets: list[Any]) -> None:
    """After the tasks: each dataset read by path is still the one the fit opened (a task
    rerun after a worker died read the files as they were then;
    :func:`~daskgd.data.trust.check_unchanged`)."""
    from daskgd.data.trust import check_unchanged

    seen = set()
    for ds in datasets:
        if ds.path is not None and ds.path not in seen:
            seen.add(ds.path)
            await asyncio.to_thread(check_unchanged, ds.path, ds.storage_options, ds.attrs)


async def abort(client: Client, ps: ParameterServerClient, futures: list[Future]) -> None:
    """Free the job and cancel its tasks, best effort: the error that got us here wins."""
    try:
        await asyncio.wait_for(ps.close(), 5.0)
    except Exception:
        pass
    try:
        if futures:
            await asyncio.wait_for(client.cancel(futures), 5.0)
    except Exception:
        pass
