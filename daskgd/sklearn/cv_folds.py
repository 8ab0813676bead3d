"""Cross-validation folds made of whole row-chunks, and the per-chunk passes they share.

The cross-validated estimators (:mod:`~daskgd.sklearn.cv_ridge`,
:mod:`~daskgd.sklearn.cv_logistic`) never move rows between folds: a fold is a set of whole
row-chunks of the dataset, so every chunk's task computes statistics that serve every fold at
once (the chunk counts for its own fold's validation and for the other folds' training).

The data as chunk *sources*
    :func:`cv_data` turns any input the estimators take into one source per row-chunk: a
    ``dask.delayed`` of that chunk's ``(X, y, sample_weight)`` (dask arrays, frames, a Dataset
    or a Zarr path: the chunk is read on the worker that runs its task, from the store for a
    path, its files mapped where they allow: :func:`~daskgd.sklearn.cv_tasks.open_chunk`) or
    a future of the chunk scattered from numpy input. :func:`map_chunks` runs one task per
    chunk on those sources; :func:`persist_chunks` reads each chunk once into its worker's
    memory, for the estimators that make many passes.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import KFold
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from daskgd.data.csr import is_sparse_array
from daskgd.data.store import opened_attrs
from daskgd.sklearn.base import n_workers
from daskgd.sklearn.cv_tasks import ChunkTask, mapped_records, open_chunk, prepare_chunk
from daskgd.sklearn.inputs import is_lazy, lazy_inputs, sample_weight_array
from daskgd.sklearn.labels import find_classes

__all__ = [
    "CVData",
    "check_cv",
    "check_grid",
    "chunk_folds",
    "cv_data",
    "fold_sums",
    "map_chunks",
    "persist_chunks",
    "prepare_chunk",
]


def check_cv(cv: Any) -> int:
    """The number of folds: an integer >= 2 (scikit-learn's splitters are not taken, as a
    fold here is a set of whole row-chunks)."""
    if isinstance(cv, bool) or not isinstance(cv, numbers.Integral) or int(cv) < 2:
        raise ValueError(
            f"cv must be an integer >= 2 (the number of folds, each a set of whole row-chunks); "
            f"got {cv!r}. scikit-learn splitters and lists of folds are not accepted"
        )
    return int(cv)


def check_grid(name: str, values: Any, *, allow_zero: bool = False) -> np.ndarray:
    """A penalty grid as a 1-D float array: not empty, finite, positive (or >= 0)."""
    grid = np.atleast_1d(np.asarray(values, dtype=np.float64)) if values is not None else None
    if grid is None or grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"{name} must be a non-empty list of penalties, got {values!r}")
    bad = ~np.isfinite(grid) | (grid < 0 if allow_zero else grid <= 0)
    if np.any(bad):
        need = "finite and >= 0" if allow_zero else "finite and > 0"
        raise ValueError(
            f"{name} must all be {need}; {name}[{int(np.argmax(bad))}] is {float(grid[bad][0])!r}"
        )
    return grid


def chunk_folds(
    n_chunks: int, cv: int, *, shuffle: bool = False, random_state: Any = None, rows: int = 0
) -> np.ndarray:
    """The fold of each row-chunk: scikit-learn's ``KFold(cv)`` over the chunk indices
    (contiguous runs of chunks, or shuffled chunks with ``shuffle=True``).

    Raises
    ------
    ValueError
        More folds than row-chunks, saying how to rechunk.
    """
    if cv > n_chunks:
        per = max(1, rows // cv) if rows else None
        hint = f"chunk_rows={per}" if per else "chunk_rows=<rows / cv or fewer>"
        raise ValueError(
            f"cv={cv} folds need at least {cv} row-chunks (a fold is a set of whole "
            f"row-chunks), but the data has {n_chunks}. Rechunk it: a dask array with "
            f"X.rechunk({{0: {per or 'rows_per_chunk'}}}) (and y, sample_weight alike), a Zarr "
            f"dataset by writing it again with daskgd.write_zarr(..., {hint}); or use fewer folds"
        )
    fold_of = np.empty(n_chunks, dtype=np.int64)
    seed = random_state if shuffle else None
    for k, (_, test) in enumerate(
        KFold(cv, shuffle=shuffle, random_state=seed).split(np.arange(n_chunks))
    ):
        fold_of[test] = k
    return fold_of


@dataclass
class CVData:
    """The data of a cross-validated fit: one source per row-chunk and what is known of it.

    ``sources[i]`` is a ``dask.delayed`` or a ``distributed.Future`` of row-chunk ``i``'s
    ``(X, y, sample_weight)`` (raw: labels as given, not yet checked unless ``checked``), or,
    with ``mapped``, of its :func:`~daskgd.sklearn.cv_tasks.open_chunk` rows, which must be
    verified once used.
    """

    sources: list[Any]
    sizes: tuple[int, ...]
    n_features: int
    dtype: np.dtype[Any]
    fold_of: np.ndarray
    classes: np.ndarray | None = None
    checked: bool = False
    weighted: bool = False
    mapped: bool = False

    @property
    def n_folds(self) -> int:
        return int(self.fold_of.max()) + 1


def _numpy_chunks(
    n: int, cv: int, workers: int, shuffle: bool, random_state: Any
) -> tuple[list[np.ndarray], np.ndarray]:
    """Row indices of each chunk of numpy input, and its fold: scikit-learn's
    ``KFold(cv, shuffle=shuffle, random_state=random_state)`` test sets, each cut into pieces
    so that every worker gets rows even with few folds."""
    pieces = max(1, -(-workers // cv))
    rows: list[np.ndarray] = []
    folds: list[int] = []
    seed = random_state if shuffle else None
    for k, (_, test) in enumerate(
        KFold(cv, shuffle=shuffle, random_state=seed).split(np.empty((n, 0)))
    ):
        for part in np.array_split(np.sort(test), min(pieces, len(test))):
            rows.append(part)
            folds.append(k)
    return rows, np.asarray(folds, dtype=np.int64)


def cv_data(
    est: Any,
    X: Any,
    y: Any,
    sample_weight: Any,
    client: Any,
    *,
    classification: bool,
    shuffle: bool = False,
    random_state: Any = None,
) -> CVData:
    """Any input of the estimators as row-chunk sources on ``client``, with the folds.

    numpy input is validated here (as scikit-learn does) and scattered in chunks whose folds
    are scikit-learn's ``KFold(cv)`` blocks; lazy input keeps its own row-chunks.
    """
    name = type(est).__name__
    cv = check_cv(est.cv)
    if not is_lazy(X):
        X, y = validate_data(
            est,
            X,
            y,
            reset=True,
            dtype=[np.float64, np.float32],
            order="C",
            y_numeric=not classification,
        )
        if classification:
            check_classification_targets(y)
        sw = sample_weight_array(sample_weight, X.shape[0], X.dtype)
        if X.shape[0] < cv:
            raise ValueError(f"cv={cv} folds need at least {cv} samples, got {X.shape[0]}")
        rows, fold_of = _numpy_chunks(X.shape[0], cv, n_workers(client), shuffle, random_state)
        contiguous = not shuffle  # KFold's test blocks: slices, no copies
        parts = [
            (X[r[0] : r[-1] + 1], y[r[0] : r[-1] + 1], None if sw is None else sw[r[0] : r[-1] + 1])
            if contiguous
            else (X[r], y[r], None if sw is None else sw[r])
            for r in rows
        ]
        sources = client.scatter(parts)
        classes = find_classes(name, y, None, False, None, client) if classification else None
        sizes = tuple(len(r) for r in rows)
        return CVData(
            list(sources),
            sizes,
            X.shape[1],
            np.dtype(X.dtype),
            fold_of,
            classes,
            checked=True,
            weighted=sw is not None,
        )
    est._check_frame_names(X, reset=True)
    Xd, yd, swd, ds = lazy_inputs(X, y, sample_weight, client)
    if is_sparse_array(Xd):
        # the folds' Gram matrices and Newton paths are dense in the features
        raise TypeError(
            f"{name} takes dense data only, and X is sparse (CSR). Fit "
            f"{'LogisticRegression(C=...)' if classification else 'SGDRegressor(alpha=...)'} "
            "once per candidate penalty (they take sparse X), or pass dense X"
        )
    if yd is None:
        raise ValueError(
            f"{name} requires y to be passed, but the target y is None (and the dataset has none)"
        )
    est._check_n_features(Xd.shape[1], reset=True)
    classes = None
    if classification:
        recorded = None if ds is None else ds.classes_
        classes = find_classes(name, yd, None, False, recorded, client)
    sizes = tuple(int(c) for c in Xd.chunks[0])
    fold_of = chunk_folds(
        len(sizes), cv, shuffle=shuffle, random_state=random_state, rows=int(Xd.shape[0])
    )
    import dask

    mapped = ds is not None and ds.path is not None
    if mapped:  # read as the training tasks read it: by path, mapped where the files allow
        assert ds is not None
        opened = opened_attrs(ds.attrs)
        sources = [
            dask.delayed(open_chunk, pure=False)(ds.path, i, ds.storage_options, opened, rows)
            for i, rows in enumerate(sizes)
        ]
    else:
        xs = Xd.to_delayed()[:, 0]
        ys = yd.to_delayed()
        ws = swd.to_delayed() if swd is not None else [None] * len(sizes)
        sources = [dask.delayed(tuple)([a, b, c]) for a, b, c in zip(xs, ys, ws, strict=True)]
    checked = ds is not None and ds.values_checked
    return CVData(
        sources,
        sizes,
        int(Xd.shape[1]),
        np.dtype(Xd.dtype),
        fold_of,
        classes,
        checked=checked,
        weighted=swd is not None,
        mapped=mapped,
    )


def map_chunks(
    client: Any, data: CVData, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]] | None = None
) -> list[Any]:
    """``fn(chunk, *args[i])`` for every row-chunk ``i``, one task each on the workers (the
    chunk read there); returns the results in chunk order."""
    import dask

    task = ChunkTask(fn)
    jobs = [
        dask.delayed(task, pure=False)(
            src, i, data.dtype, data.classes, not data.checked, *(args[i] if args else ())
        )
        for i, src in enumerate(data.sources)
    ]
    futures = client.compute(jobs)
    try:
        return list(client.gather(futures))
    finally:
        del futures


def persist_chunks(client: Any, data: CVData) -> tuple[list[Any], list[Any]]:
    """Each row-chunk read once (checked, labels encoded) into its worker's memory: one future
    per chunk, which later tasks (:meth:`distributed.Client.submit`) read from memory; and,
    for ``data.mapped``, one future per chunk of its mapped files' records
    (:func:`~daskgd.sklearn.cv_tasks.mapped_records`, empty for a chunk that was read), to
    verify when the estimator is done with the rows (else none)."""
    import dask

    jobs = [
        dask.delayed(prepare_chunk, pure=False)(
            src, i, data.dtype, classes=data.classes, check=not data.checked
        )
        for i, src in enumerate(data.sources)
    ]
    if not data.mapped:
        return list(client.compute(jobs)), []
    records = [dask.delayed(mapped_records, pure=False)(src) for src in data.sources]
    futures = list(client.compute(jobs + records))  # each source read once
    return futures[: len(jobs)], futures[len(jobs) :]


def fold_sums(per_chunk: Sequence[Any], fold_of: np.ndarray) -> tuple[Any, list[Any]]:
    """The total over all chunks and the sum over each fold's chunks (tuples of arrays)."""
    n_folds = int(fold_of.max()) + 1
    total = [np.zeros_like(np.asarray(a, dtype=np.float64)) for a in per_chunk[0]]
    folds = [[np.zeros_like(t) for t in total] for _ in range(n_folds)]
    for stats, k in zip(per_chunk, fold_of, strict=True):
        for j, a in enumerate(stats):
            total[j] = total[j] + a
            folds[k][j] = folds[k][j] + a
    return total, folds
