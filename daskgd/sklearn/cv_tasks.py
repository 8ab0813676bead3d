"""What a cross-validation runs on its workers to read a row-chunk: :func:`prepare_chunk`.

Kept apart from :mod:`~daskgd.sklearn.cv_folds` (the driver's side, which imports
scikit-learn): a worker unpickling these imports numpy and daskgd's errors only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from daskgd.errors import DataValidationError

__all__ = ["ChunkTask", "prepare_chunk", "weight_sum"]


def prepare_chunk(
    chunk: tuple[Any, Any, Any],
    index: int,
    dtype: Any,
    *,
    classes: np.ndarray | None = None,
    check: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Runs on a worker: a chunk as the kernels take it (C-contiguous, ``dtype``), its
    values checked (unless a scan or its record did already) and, with ``classes`` (two),
    its labels encoded as -1/+1."""
    X, y, sw = chunk
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
        return self.fn(prepare_chunk(chunk, index, dtype, classes=classes, check=check), *args)


def weight_sum(chunk: tuple[np.ndarray, np.ndarray, np.ndarray | None]) -> tuple[np.ndarray]:
    """Runs on a worker: a prepared chunk's total sample weight."""
    _, t, sw = chunk
    return (np.array([float(len(t)) if sw is None else float(np.sum(sw, dtype=np.float64))]),)
