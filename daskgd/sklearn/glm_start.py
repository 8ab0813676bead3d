"""Where a log-link GLM's fit starts: the intercept of the model with an intercept alone.

Far from it, the first steps of the log link overflow; scikit-learn starts there too. The
intercept is ``log(sum_i s_i y_i / sum_i s_i exp(o_i))``: two sums over the targets, the
weights and the offsets, never over ``X``. A dataset stored at a path is summed by one task
per worker straight from its chunk files (:func:`_path_sums`: the training tasks' read, of
those three columns); other lazy input through its dask arrays. Workers unpickling
:func:`_path_sums` import numpy and daskgd's data modules only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["log_mean_intercept"]

#: row-chunks a worker reads at once for the sums (each read opens the group once)
SUM_CHUNKS = 8


def log_mean_intercept(data: Any, client: Any) -> float | None:
    """``log`` of the weighted mean target over the weighted mean exposure of ``data`` (a
    :class:`~daskgd.data.Dataset`, or the in-memory ``(X, y[, sample_weight[, offset]])``);
    None where it is not defined (zero or bad targets: the training tasks' checks then say
    what is wrong)."""
    from daskgd.data import Dataset

    if isinstance(data, Dataset):
        if data.path is not None and client is not None:
            num, den = _sums_on_workers(data, client)
        else:
            num, den = _lazy_sums(data, client)
    else:
        y = data[1]
        w = data[2] if len(data) > 2 else None
        off = data[3] if len(data) > 3 else None
        ones = np.ones(len(y)) if w is None else np.asarray(w, dtype=np.float64)
        num = float(ones @ np.asarray(y, dtype=np.float64))
        den = float(ones.sum() if off is None else ones @ np.exp(off))
    if not (num > 0 and den > 0 and math.isfinite(num) and math.isfinite(den)):
        return None
    return math.log(num / den)


def _sums_on_workers(data: Any, client: Any) -> tuple[float, float]:
    """The two sums of a stored dataset: its row-chunks cut into one contiguous group per
    worker, each group summed by a task that reads it from the store."""
    n_chunks = data.n_chunks
    groups = np.array_split(np.arange(n_chunks), max(1, min(len(client.nthreads()), n_chunks)))
    futures = [
        client.submit(_path_sums, data.path, g.tolist(), data.storage_options, pure=False)
        for g in groups
        if len(g)
    ]
    parts = client.gather(futures)
    return float(sum(p[0] for p in parts)), float(sum(p[1] for p in parts))


def _path_sums(
    path: str, chunks: Sequence[int], storage_options: dict[str, Any] | None
) -> tuple[float, float]:
    """Runs on a worker: ``sum s_i y_i`` and ``sum s_i exp(o_i)`` over row-chunks ``chunks``
    of the dataset at ``path`` (checked as the training tasks' read is)."""
    from daskgd.data.chunkio import read_row_arrays

    num = den = 0.0
    # a few row-chunks at a time: an out-of-core fit's worker never holds its rows at once
    for k in range(0, len(chunks), SUM_CHUNKS):
        a = read_row_arrays(path, chunks[k : k + SUM_CHUNKS], storage_options=storage_options,
                            names=("y", "sample_weight", "offset"))  # fmt: skip
        y = a["y"].astype(np.float64, copy=False)
        w, off = a.get("sample_weight"), a.get("offset")
        w = np.ones(len(y)) if w is None else w.astype(np.float64, copy=False)
        num += float(w @ y)
        den += float(w.sum() if off is None else w @ np.exp(off.astype(np.float64, copy=False)))
    return num, den


def _lazy_sums(data: Any, client: Any) -> tuple[float, float]:
    import dask.array as da

    from daskgd.sklearn.inputs import compute

    w = data.sample_weight
    y = data.y.astype(np.float64)
    ones = da.ones_like(y) if w is None else w.astype(np.float64)
    expo = ones if data.offset is None else ones * da.exp(data.offset)
    num, den = compute([(ones * y).sum(), expo.sum()], client)
    return float(num), float(den)
