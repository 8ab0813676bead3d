"""The driver's side of checkpoints: set up the writer (or resume), and the ticks that
write the parameter server's snapshots while the fit runs and when it ends.

The parameter server takes the snapshots (off its event loop's hot path); the driver writes
them (:class:`daskgd.checkpoint.CheckpointWriter`, in a thread), so the scheduler never
touches the filesystem.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from distributed import Client

from daskgd._version import __version__
from daskgd.checkpoint import Checkpoint, CheckpointWriter, load_checkpoint
from daskgd.data import Dataset
from daskgd.driver.connection import call
from daskgd.driver.settings import FitSettings
from daskgd.errors import CheckpointError
from daskgd.parameter_server import ParameterServerClient

__all__ = ["checkpoint_tick", "final_checkpoint", "setup_checkpoint"]


async def setup_checkpoint(
    ds: Dataset, s: FitSettings, config: dict[str, Any]
) -> tuple[CheckpointWriter | None, dict[str, Any] | None]:
    """(writer or None, the snapshot to resume from or None) for this fit."""
    if s.checkpoint is None:
        return None, None
    path = str(s.checkpoint)
    cfg = s.checkpoint_record(ds.n_features, ds.n_samples, config, ds.path, __version__)
    ck = None
    if s.resume:
        try:
            ck = await asyncio.to_thread(load_checkpoint, path)
        except FileNotFoundError:
            ck = None  # nothing to resume from: start fresh
    if ck is None:
        return CheckpointWriter(path, cfg), None
    _check_compatible(ck, cfg)
    writer = CheckpointWriter(path, cfg, prior_history=ck.history)
    writer.epoch = ck.epoch
    shape = s.params_shape(ds.n_features)
    if ck.params.shape != shape:
        raise CheckpointError(
            f"the checkpoint {ck.path} has parameters of shape {ck.params.shape}; this fit "
            f"needs {shape}"
        )
    resume = {
        "params": ck.params,
        "state": ck.state,
        "version": ck.version,
        "epochs": ck.epoch,
        "progress": ck.progress,
    }
    return writer, resume


def _check_compatible(ck: Checkpoint, cfg: dict[str, Any]) -> None:
    old = ck.config
    for key, what in (
        ("n_features", "features (d)"),
        ("loss", "loss"),
        ("n_classes", "classes"),
    ):
        if old.get(key) != cfg[key]:
            raise CheckpointError(
                f"the checkpoint {ck.path} is from a fit with {what} {old.get(key)!r}; this "
                f"fit has {cfg[key]!r}. Resume with the same data and settings, or use "
                "another checkpoint path (or resume=False to overwrite it)"
            )
    old_opt = (old.get("optimizer") or {}).get("name")
    if old_opt != cfg["optimizer"]["name"]:
        raise CheckpointError(
            f"the checkpoint {ck.path} holds the state of optimizer {old_opt!r}; this fit "
            f"uses {cfg['optimizer']['name']!r}. Resume with the same optimizer"
        )


async def checkpoint_tick(
    client: Client,
    ps: ParameterServerClient,
    st: dict[str, Any],
    s: FitSettings,
    writer: CheckpointWriter,
) -> None:
    """Start writing the job's newest snapshot, unless a write is still in flight."""
    if writer.busy:
        return
    fresh = (
        s.checkpoint_interval is not None
        and time.monotonic() - writer.written_at >= s.checkpoint_interval
    )
    if not fresh and st.get("snapshot_seq", 0) <= writer.seq:
        return
    reply = await call(client, writer, ps.snapshot, fresh=fresh, since=len(writer.rows))
    if reply["status"] == "OK" and reply["snapshot"] is not None and reply["seq"] > writer.seq:
        writer.start(reply)


async def final_checkpoint(
    client: Client, ps: ParameterServerClient, writer: CheckpointWriter
) -> None:
    """When the fit ends: wait for the write in flight, then write the final state.

    A failed (diverged) job has no final state worth resuming: its last periodic
    checkpoint stays the newest.
    """
    await writer.flush()  # first: its rows are in writer.rows
    reply = await call(client, writer, ps.snapshot, fresh=True, since=len(writer.rows))
    await writer.flush(reply if reply["status"] == "OK" else None)
