"""What a cross-validation runs on its workers to read a row-chunk: :func:`open_chunk` (a
dataset's chunk, by path) and :func:`prepare_chunk`.

Kept apart from :mod:`~daskgd.sklearn.cv_folds` (the driver's side, which imports
scikit-learn): a worker unpickling these imports numpy and daskgd's data modules only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from daskgd.data.mapped import MappedChunk, MappedRows
from daskgd.errors import DataChangedError, DataValidationError

__all__ = ["ChunkTask", "mapped_records", "open_chunk", "prepare_chunk", "weight_sum"]


def open_chunk(
    path: str,
    i: int,
    storage_options: dict[str, Any] | None,
    opened: dict[str, Any],
    rows: int,
) -> MappedRows:
    """Runs on a worker: row-chunk ``i`` of the dataset at ``path``, its files mapped where
    they allow (:func:`~daskgd.data.mapped.map_row_chunks`: no copy, checked as a read is)
    and read otherwise. Whoever uses the rows after the chunk's task calls
    :meth:`~daskgd.data.mapped.MappedRows.verify` once done with them: a mapping follows its
    file.

    ``opened`` holds the dataset's ``write_id`` and ``digests`` as the driver opened it
    (:func:`~daskgd.data.store.opened_attrs`, compared where the group is opened) and
    ``rows`` the chunk's row count then: a dataset written again since (before the fit, or
    during it: a chunk read again after a worker died) raises
    :class:`~daskgd.errors.DataChangedError` instead of giving other rows.
    """
    from daskgd.data.chunkio import read_row_arrays
    from daskgd.data.mapped import map_row_chunks

    held = map_row_chunks(path, [i], storage_options=storage_options, opened=opened)
    if held is None:
        out = read_row_arrays(path, [i], storage_options=storage_options,
                              names=("X", "y", "sample_weight"), opened=opened)  # fmt: skip
        held = MappedRows([(out["X"], out["y"], out.get("sample_weight"), None)], [])
    if len(held.pieces[0][1]) != rows:  # a dataset without a write id or digests
        raise DataChangedError(
            f"row-chunk {i} of the dataset {path} has {len(held.pieces[0][1])} rows, and had "
            f"{rows} when the fit opened it: it was written again. Open it again after "
            "writing it, and do not write a dataset while a fit reads it"
        )
    return held


def mapped_records(held: MappedRows) -> list[MappedChunk]:
    """Runs on a worker: what :meth:`~daskgd.data.mapped.MappedRows.verify` checks of
    :func:`open_chunk`'s rows (none for rows that were read), without the rows read."""
    return list(held.mapped)


def prepare_chunk(
    chunk: tuple[Any, Any, Any] | MappedRows,
    index: int,
    dtype: Any,
    *,
    classes: np.ndarray | None = None,
    check: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Runs on a worker: a chunk as the kernels take it (C-contiguous, ``dtype``), its
    values checked (unless a scan or its record did already) and, with ``classes`` (two),
    its labels encoded as -1/+1. ``chunk``: its ``(X, y, sample_weight)``, or
    :func:`open_chunk`'s rows (used as they are where their dtype is ``dtype``)."""
    X, y, sw = chunk.pieces[0][:3] if isinstance(chunk, MappedRows) else chunk
    X = np.ascontiguousarray(X, dtype=dtype)
    y = np.asarray(y)
    if check:
        if not np.all(np.isfinite(X)):
            raise DataValidationError(f"X has NaN or infinite values in row-chunk {index}")
        if sw is not None:
            sw = np.asarray(sw, dtype=dtype)
            if not np.all(np.isfinite(sw)) or np.any(sw < 0):
                raise DataValidationError(
                    f"sample_weight has negative or non-finite values in row-chunk {index}"
                )
    if classes is not None:
        idx = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
        bad = classes[idx] != y
        if np.any(bad):
            raise ValueError(
                f"y in row-chunk {index} has labels not in classes_ {classes!r}: "
                f"{np.unique(y[bad])!r}"
            )
        t = np.where(idx == 1, 1.0, -1.0).astype(dtype)
    else:
        t = np.ascontiguousarray(y, dtype=dtype)
        if check and not np.all(np.isfinite(t)):
            raise DataValidationError(f"y has NaN or infinite values in row-chunk {index}")
    return X, t, None if sw is None else np.ascontiguousarray(sw, dtype=dtype)


class ChunkTask:
    """A picklable ``fn(prepare_chunk(...), *args)`` (``fn`` a module-level function, which
    pickles by reference)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(
        self, chunk: Any, index: int, dtype: Any, classes: Any, check: bool, *args: Any
    ) -> Any:
        out = self.fn(prepare_chunk(chunk, index, dtype, classes=classes, check=check), *args)
        if isinstance(chunk, MappedRows):  # the rows did not change while fn read them
            chunk.verify()
        return out


def weight_sum(chunk: tuple[np.ndarray, np.ndarray, np.ndarray | None]) -> tuple[np.ndarray]:
    """Runs on a worker: a prepared chunk's total sample weight."""
    _, t, sw = chunk
    return (np.array([float(len(t)) if sw is None else float(np.sum(sw, dtype=np.float64))]),)
