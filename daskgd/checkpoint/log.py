"""The history log of a checkpoint path: one JSON row a line, appended to by the
checkpoints of one fit (see :mod:`daskgd.checkpoint`, which owns the layout)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from daskgd.errors import CheckpointError

__all__ = [
    "LOG_PREFIX",
    "append_history",
    "drop_unused_logs",
    "entries",
    "json_safe",
    "read_history",
    "row_line",
]

LOG_PREFIX = "history-"
_ENTRY = re.compile(r"^v(\d{8})$")


def json_safe(obj: Any) -> Any:
    """Plain JSON: non-finite floats become None, numpy scalars Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def entries(root: Path) -> list[tuple[int, Path]]:
    """The numbered checkpoints under ``root``, newest first."""
    if not root.is_dir():
        return []
    out = []
    for name in os.listdir(root):
        m = _ENTRY.match(name)
        if m:
            out.append((int(m.group(1)), root / name))
    return sorted(out, reverse=True)


def row_line(row: dict[str, Any]) -> bytes:
    return (json.dumps(json_safe(row), sort_keys=True) + "\n").encode()


def row_digest(line: bytes) -> str:
    return hashlib.blake2b(line, digest_size=16).hexdigest()


def entry_attrs(entry: Path) -> dict[str, Any]:
    return json.loads((entry / "zarr.json").read_text()).get("attributes", {})


def newest_log(root: Path) -> dict[str, Any] | None:
    """The history log of the newest complete checkpoint (None: none, or format 1)."""
    for _, entry in entries(root):
        try:
            attrs = entry_attrs(entry)
        except (OSError, ValueError):
            continue
        if attrs.get("complete") is True:
            log = attrs.get("history_log")
            return log if isinstance(log, dict) else None
    return None


def append_history(root: Path, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Append the rows of ``history`` that the newest checkpoint's log lacks (or start a
    new log when ``history`` does not continue it); returns the new checkpoint's
    ``history_log`` attribute."""
    prev = newest_log(root)
    n0 = int(prev["rows"]) if prev else 0
    path = root / prev["file"] if prev else None
    extend = (
        prev is not None
        and path is not None
        and len(history) >= n0
        and path.is_file()
        and path.stat().st_size >= int(prev["bytes"])
        and (n0 == 0 or row_digest(row_line(history[n0 - 1])) == prev.get("tail"))
    )
    if extend:
        assert prev is not None and path is not None
        new, start = path, n0
        with open(new, "r+b") as f:
            f.truncate(int(prev["bytes"]))  # cut what a crashed write appended
    else:
        new, start = root / f"{LOG_PREFIX}{uuid.uuid4().hex}.jsonl", 0
    last = None
    with open(new, "ab") as f:
        for row in history[start:]:
            last = row_line(row)
            f.write(last)
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
    tail = None
    if last is not None:
        tail = row_digest(last)
    elif extend and prev is not None:
        tail = prev.get("tail")
    return {"file": new.name, "rows": len(history), "bytes": size, "tail": tail}


def read_history(root: Path, log: dict[str, Any]) -> list[dict[str, Any]]:
    with open(root / log["file"], "rb") as f:
        data = f.read(int(log["bytes"]))
    lines = data.splitlines()
    if len(data) != int(log["bytes"]) or len(lines) != int(log["rows"]):
        raise CheckpointError(f"the history log {log['file']} is shorter than recorded")
    return [json.loads(line) for line in lines]


def drop_unused_logs(root: Path) -> None:
    used = set()
    for _, entry in entries(root):
        try:
            log = entry_attrs(entry).get("history_log")
        except (OSError, ValueError):
            continue
        if isinstance(log, dict):
            used.add(log.get("file"))
    for name in os.listdir(root):
        if name.startswith(LOG_PREFIX) and name not in used:
            (root / name).unlink(missing_ok=True)
