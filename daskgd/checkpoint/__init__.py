"""Checkpoints: a fit's parameters, optimizer state, counters, history and settings in Zarr.

A checkpoint path names a Zarr v3 group on a local (or mounted shared) filesystem that
holds numbered checkpoints, each a complete group of its own::

    path.zarr/                 attrs: format="daskgd-checkpoint", format_version=2
    path.zarr/history-<id>.jsonl   the history, one JSON row a line, appended to
    path.zarr/v00000007/       arrays: params, state/<name> (the optimizer's state)
                               attrs: complete=true, epoch, version, history_log
                               (its log file, row count and byte length), config,
                               progress (stop-rule counters, worker clocks, elapsed time)

**History appended, not rewritten.** A checkpoint names the history log and how many
rows (and bytes) of it are its own; the next checkpoint of the same fit appends only the
rows since, so a fit's checkpoints write O(epochs) bytes of history in all, not
O(epochs^2). Bytes past the newest checkpoint's length (a write that crashed) are cut
before appending; a history that does not continue the log (another fit on the same
path) starts a new log file, so older checkpoints keep theirs. Checkpoints of format 1
(the history in each checkpoint's attributes) still load.

**Atomic writes.** :func:`save_checkpoint` writes a new checkpoint into a temporary
sibling group (``path.zarr/.tmp-...``), sets its ``complete`` attribute last, then
renames the folder into place as the next ``vNNNNNNNN`` (a rename within one folder is
atomic on POSIX filesystems). Only then are older checkpoints beyond ``keep`` removed.
:func:`load_checkpoint` reads the highest-numbered checkpoint that is complete and
readable and falls back to the one before, so a crash at any point of a write leaves
the previous checkpoint loadable; a leftover temporary group is ignored and removed by
the next save. Each array's digest (BLAKE2b) is stored with it and checked on load, so
a lost or torn chunk (which Zarr would read as fill values) is caught too.

**Where checkpoints are written: by the driver, off every event loop.** The parameter
server on the scheduler (:mod:`daskgd.parameter_server`) takes a *snapshot* every
``checkpoint_every`` epochs, right after the step that closed such an epoch, in the same
place the step runs (its one-thread executor for large models), so the snapshot is
consistent: parameters, optimizer state (copied), version and epoch all belong to the
same moment. The driver fetches the snapshot (one message, O(d)) and writes it with
:func:`save_checkpoint` in a thread (``asyncio.to_thread``). The driver rather than
the scheduler writes because:

* the checkpoint must outlive the scheduler: when the scheduler (or its machine) dies,
  the driver still holds the path and the epoch of its last checkpoint and says so
  (:class:`daskgd.errors.SchedulerLostError`);
* the path is the user's, in the driver's filesystem; the scheduler may run elsewhere
  without access to it;
* a scheduler handler that writes to a path it was sent would let any client of the
  scheduler's port write files on the scheduler's machine;
* the scheduler's event loop does no disk I/O at all, and the parameter server needs no Zarr.

A write in flight never holds up training: the driver starts the next write only after
the previous one finished, always with the newest snapshot.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from daskgd._version import __version__
from daskgd.checkpoint.log import (
    append_history,
    drop_unused_logs,
    entries,
    json_safe,
    read_history,
)
from daskgd.errors import CheckpointError

__all__ = ["Checkpoint", "CheckpointWriter", "load_checkpoint", "local_path", "save_checkpoint"]

FORMAT = "daskgd-checkpoint"
FORMAT_VERSION = 2
_TMP_PREFIX = ".tmp-"


@dataclass
class Checkpoint:
    """One checkpoint, as :func:`load_checkpoint` returns it.

    Attributes
    ----------
    path : str
        The folder of this checkpoint (``<checkpoint>/vNNNNNNNN``).
    params : ndarray of shape (d + 1,) or (d + 1, k)
        Coefficients then intercept, the parameter server's layout.
    state : dict of str to ndarray
        The optimizer's state (momentum velocity, Adam moments, L-BFGS memory...).
    version : int
        Parameter updates applied.
    epoch : int
        Epochs completed.
    history : list of dict
        The fit's history up to ``epoch``.
    config : dict
        The job's settings (loss, n_features, n_classes, optimizer, stop rules...).
    progress : dict
        Stop-rule counters (``best_loss``, ``no_improve``, ``first_loss``), worker
        ``clocks`` and ``elapsed`` seconds.
    """

    path: str
    params: np.ndarray
    state: dict[str, np.ndarray]
    version: int
    epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)


def local_path(path: str | os.PathLike) -> Path:
    """The local folder of a checkpoint path (``file://`` stripped).

    Raises
    ------
    ValueError
        For a URL of another filesystem (object stores lack the atomic rename).
    """
    p = os.fspath(path)
    if p.startswith("file://"):
        p = p[len("file://") :]
    if "://" in p:
        raise ValueError(
            f"checkpoint must be a local (or mounted shared) filesystem path, got {p!r}: "
            "its writes rely on an atomic folder rename, which object stores lack"
        )
    return Path(p)


def _digest(a: np.ndarray) -> str:
    return hashlib.blake2b(
        np.array(a, dtype=np.float64, order="C").tobytes(), digest_size=16
    ).hexdigest()


def _write_array(group: zarr.Group, name: str, value: np.ndarray) -> str:
    """Write ``value`` as float64; return its digest (checked on load)."""
    a = np.array(value, dtype=np.float64, order="C")
    chunks = tuple(max(1, n) for n in a.shape) if a.ndim else ()
    if a.ndim and a.size > 1 << 20:  # about 8 MB chunks along the first axis
        rows = max(1, (1 << 20) // max(1, a.size // a.shape[0]))
        chunks = (rows, *a.shape[1:])
    arr = group.create_array(name, shape=a.shape, dtype="f8", chunks=chunks)
    arr[...] = a
    return _digest(a)


def _publish(tmp: Path, final: Path) -> None:
    """Rename the written group into place: the moment the checkpoint starts to exist."""
    os.rename(tmp, final)


def _ensure_root(root: Path) -> None:
    meta = root / "zarr.json"
    if meta.exists():
        attrs = json.loads(meta.read_text()).get("attributes", {})
        if attrs.get("format") != FORMAT:
            raise CheckpointError(
                f"{root} exists and is not a daskgd checkpoint (no format={FORMAT!r} "
                "attribute); choose another checkpoint path"
            )
        return
    if root.exists() and any(root.iterdir()):
        raise CheckpointError(
            f"{root} exists and is not a daskgd checkpoint; choose another checkpoint path"
        )
    # built beside and renamed into place, so that a reader never sees the group without
    # its format attributes (zarr writes the group's metadata, then its attributes)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.{uuid.uuid4().hex}.tmp"
    g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    g.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION})
    if root.exists():
        root.rmdir()  # empty (checked above)
    try:
        os.rename(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (root / "zarr.json").exists():  # not another writer's root: a real failure
            raise


def save_checkpoint(
    path: str | os.PathLike,
    *,
    params: np.ndarray,
    state: dict[str, np.ndarray],
    version: int,
    epoch: int,
    history: list[dict[str, Any]],
    config: dict[str, Any],
    progress: dict[str, Any] | None = None,
    keep: int = 2,
) -> str:
    """Write a checkpoint atomically; the previous one survives a crash mid-write.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint group (a local folder, conventionally ``*.zarr``); created if absent.
    params : ndarray
        The parameters, coefficients then intercept.
    state : dict of str to ndarray
        The optimizer's state (:meth:`daskgd.objective.optimizers.Optimizer.export_state`).
    version, epoch : int
        Updates applied and epochs completed.
    history : list of dict
        History rows up to ``epoch`` (stored as JSON).
    config : dict
        The job's settings (stored as JSON); :func:`daskgd.fit` checks them on resume.
    progress : dict, optional
        Stop-rule counters and clocks (stored as JSON).
    keep : int, default=2
        Checkpoints to keep; older ones are removed once the new one is in place.

    Returns
    -------
    str
        The folder of the new checkpoint.

    Raises
    ------
    CheckpointError
        When ``path`` exists and is not a daskgd checkpoint.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> d = tempfile.mkdtemp()
    >>> _ = save_checkpoint(f"{d}/c.zarr", params=np.zeros(3), state={}, version=4, epoch=2,
    ...                     history=[], config={"n_features": 2})
    >>> load_checkpoint(f"{d}/c.zarr").epoch
    2
    """
    if not (isinstance(keep, int) and keep >= 1):
        raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
    root = local_path(path)
    _ensure_root(root)
    existing = entries(root)
    number = existing[0][0] + 1 if existing else 1
    final = root / f"v{number:08d}"
    tmp = root / f"{_TMP_PREFIX}{number:08d}-{uuid.uuid4().hex}"
    try:
        log = append_history(root, list(history))
        g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        digests = {"params": _write_array(g, "params", params)}
        sg = g.create_group("state")
        for name, value in state.items():
            digests[f"state/{name}"] = _write_array(sg, name, value)
        g.attrs.update(
            json_safe(
                {
                    "epoch": int(epoch),
                    "version": int(version),
                    "history_log": log,
                    "config": dict(config),
                    "progress": dict(progress or {}),
                    "state_names": sorted(state),
                    "digests": digests,
                    "daskgd_version": __version__,
                    "saved_at": time.time(),
                }
            )
        )
        g.attrs["complete"] = True  # last: a group without it is ignored
        _publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    complete = 1
    for _, old in entries(root)[1:]:  # keep the newest ``keep`` complete ones
        if complete < keep and _is_complete(old):
            complete += 1
        else:
            shutil.rmtree(old, ignore_errors=True)
    for name in os.listdir(root):
        if name.startswith(_TMP_PREFIX):
            shutil.rmtree(root / name, ignore_errors=True)  # left by a crashed write
    drop_unused_logs(root)
    return str(final)


def _is_complete(entry: Path) -> bool:
    try:
        attrs = json.loads((entry / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return attrs.get("complete") is True


def _array(g: zarr.Group, name: str, digest: str | None) -> np.ndarray:
    z = g[name]
    if not isinstance(z, zarr.Array):
        raise CheckpointError(f"{name} in {g.store} is not an array")
    a = np.asarray(z[...], dtype=np.float64)
    if digest is None or _digest(a) != digest:
        # a chunk lost or torn reads as fill values: only the digest tells
        raise CheckpointError(f"{name} does not match its digest (a damaged write)")
    return a


def _read(entry: Path) -> Checkpoint:
    g = zarr.open_group(str(entry), mode="r", zarr_format=3)
    attrs: dict[str, Any] = dict(g.attrs.asdict())
    if attrs.get("complete") is not True:
        raise CheckpointError(f"{entry} is incomplete")
    digests = dict(attrs.get("digests") or {})
    names = attrs["state_names"]
    state = {n: _array(g, f"state/{n}", digests.get(f"state/{n}")) for n in names}
    if isinstance(attrs.get("history_log"), dict):
        history = read_history(entry.parent, attrs["history_log"])
    else:  # format 1: the history in the attributes
        history = list(attrs.get("history") or [])
    return Checkpoint(
        path=str(entry),
        params=_array(g, "params", digests.get("params")),
        state=state,
        version=int(attrs["version"]),
        epoch=int(attrs["epoch"]),
        history=history,
        config=dict(attrs.get("config") or {}),
        progress=dict(attrs.get("progress") or {}),
    )


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read the newest complete checkpoint under ``path``.

    A checkpoint whose write was interrupted (no ``complete`` attribute, missing or
    unreadable arrays) is skipped in favour of the one before it.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint group given to ``fit(..., checkpoint=path)``.

    Returns
    -------
    Checkpoint

    Raises
    ------
    FileNotFoundError
        When ``path`` holds no complete checkpoint (``fit(..., resume=True)`` then
        starts fresh).
    CheckpointError
        When ``path`` exists but is not a daskgd checkpoint.
    """
    root = local_path(path)
    meta = root / "zarr.json"
    if meta.exists():
        try:
            attrs = json.loads(meta.read_text()).get("attributes", {})
        except ValueError as exc:
            raise CheckpointError(f"{root} is not a daskgd checkpoint: {exc}") from exc
        if attrs.get("format") != FORMAT:
            raise CheckpointError(f"{root} is not a daskgd checkpoint (format={FORMAT!r})")
        if int(attrs.get("format_version") or 1) > FORMAT_VERSION:
            raise CheckpointError(
                f"{root} was written by a newer daskgd (checkpoint format "
                f"{attrs.get('format_version')}, this one reads up to {FORMAT_VERSION}); "
                "upgrade daskgd to resume from it"
            )
    problems = []
    for _, entry in entries(root):
        try:
            return _read(entry)
        except Exception as exc:  # an interrupted or damaged write: try the one before
            problems.append(f"{entry.name}: {type(exc).__name__}: {exc}")
    detail = f" (skipped: {'; '.join(problems)})" if problems else ""
    raise FileNotFoundError(f"no complete daskgd checkpoint under {root}{detail}")


class CheckpointWriter:
    """The driver's side: write the parameter server's snapshots, one write at a time.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint group.
    config : dict
        The job's settings, stored with every checkpoint.
    prior_history : list of dict
        History of the epochs before a resume; snapshots carry only the rows since.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        config: dict[str, Any],
        prior_history: list[dict[str, Any]] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.config = config
        self.prior = list(prior_history or [])
        self.rows: list[dict[str, Any]] = []  # history rows since this fit started
        self.seq = 0  # the newest snapshot written or being written
        self.epoch: int | None = None  # epoch of the last checkpoint on disk
        self.written_at = time.monotonic()
        self._task: asyncio.Task | None = None

    @property
    def busy(self) -> bool:
        """True while a write is in flight."""
        return self._task is not None and not self._task.done()

    def _check(self) -> None:
        if self._task is not None and self._task.done():
            task, self._task = self._task, None
            exc = task.exception()
            if exc is not None:
                raise CheckpointError(
                    f"writing the checkpoint {self.path} failed: {type(exc).__name__}: {exc}"
                ) from exc

    def _take(self, reply: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(snapshot, its full history) from a ``daskgd_snapshot`` reply (event loop)."""
        snap = reply["snapshot"]
        self.rows.extend(reply["history"])
        del self.rows[snap["history_len"] :]  # rows newer than the snapshot, if any
        return snap, self.prior + self.rows[: snap["history_len"]]

    def _save(self, snap: dict[str, Any], history: list[dict[str, Any]]) -> None:
        save_checkpoint(
            self.path,
            params=snap["params"],
            state=snap["state"],
            version=snap["version"],
            epoch=snap["epochs"],
            history=history,
            config=self.config,
            progress=snap["progress"],
        )
        self.epoch = int(snap["epochs"])
        self.written_at = time.monotonic()

    def start(self, reply: dict[str, Any]) -> None:
        """Write the snapshot of a ``daskgd_snapshot`` reply in a thread.

        Raises :class:`~daskgd.errors.CheckpointError` if the previous write failed.
        """
        self._check()
        self.seq = int(reply["seq"])
        snap, history = self._take(reply)
        self._task = asyncio.ensure_future(asyncio.to_thread(self._save, snap, history))

    async def flush(self, reply: dict[str, Any] | None = None) -> None:
        """Wait for the write in flight, then write the reply's snapshot (the final state)."""
        if self._task is not None:
            await asyncio.wait([self._task])
            self._check()
        if reply is not None and reply.get("snapshot") is not None:
            snap, history = self._take(reply)
            await asyncio.to_thread(self._save, snap, history)


_local = local_path  # the old name, until its importers use the public one
