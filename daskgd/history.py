"""Training histories as plain data: a dict of lists, and JSON.

A fit records one entry per epoch (a dict: ``epoch``, ``loss``, ``grad_norm``, ``time``,
``updates``, staleness statistics, per-worker update counts). These helpers turn the list of
entries into columns (``{"loss": [...], "epoch": [...], ...}``), which is what plotting and
tables want, without depending on pandas; and they write and read the same thing as JSON.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["history_from_json", "history_to_dict", "history_to_json"]


def history_to_dict(history: Any) -> dict[str, list[Any]]:
    """Columns of a training history: a dict of equal-length lists.

    Parameters
    ----------
    history : list of dict, dict of lists, FitResult or fitted estimator
        Per-epoch entries (``FitResult.history``), columns already (returned as a copy),
        or an object with a ``history`` / ``history_`` attribute.

    Returns
    -------
    dict of str to list
        One list per key, one element per epoch; an entry that lacks a key gets None.

    Raises
    ------
    TypeError
        If ``history`` is none of the above.

    Examples
    --------
    >>> history_to_dict([{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5}])
    {'epoch': [1, 2], 'loss': [2.0, 1.5]}
    """
    for attr in ("history_", "history"):
        if not isinstance(history, Mapping | Sequence) and hasattr(history, attr):
            history = getattr(history, attr)
            break
    if isinstance(history, Mapping):
        columns = {str(k): list(v) for k, v in history.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"history columns have different lengths: {sorted(lengths)}")
        return columns
    if isinstance(history, Sequence) and not isinstance(history, str | bytes):
        keys: list[str] = []
        for entry in history:
            if not isinstance(entry, Mapping):
                raise TypeError(f"history entries must be dicts, got {type(entry).__name__}")
            keys.extend(k for k in entry if k not in keys)
        return {k: [entry.get(k) for entry in history] for k in keys}
    raise TypeError(
        "history must be a list of per-epoch dicts, a dict of lists, a FitResult or a fitted "
        f"daskgd estimator; got {type(history).__name__}"
    )


def _jsonable(value: Any) -> Any:
    """numpy scalars -> Python; non-finite floats -> None (JSON has no NaN/inf)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def history_to_json(history: Any, path: str | os.PathLike[str] | None = None) -> str:
    """The history as JSON text (columns, as :func:`history_to_dict` makes them).

    Parameters
    ----------
    history : list of dict, dict of lists, FitResult or fitted estimator
    path : str or os.PathLike, optional
        Also write the text to this file.

    Returns
    -------
    str
        JSON; non-finite numbers become ``null``.

    Examples
    --------
    >>> history_to_json([{"epoch": 1, "loss": 0.5}])
    '{"epoch": [1], "loss": [0.5]}'
    """
    text = json.dumps(_jsonable(history_to_dict(history)))
    if path is not None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return text


def history_from_json(text_or_path: str | os.PathLike[str]) -> dict[str, list[Any]]:
    """Read a history written by :func:`history_to_json` (JSON text or a file path).

    Examples
    --------
    >>> history_from_json('{"epoch": [1], "loss": [0.5]}')
    {'epoch': [1], 'loss': [0.5]}
    """
    text = str(text_or_path)
    if not text.lstrip().startswith("{"):
        with open(text_or_path, encoding="utf-8") as f:
            text = f.read()
    return history_to_dict(json.loads(text))
