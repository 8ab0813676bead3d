"""The :class:`Dataset`: training data as dask arrays cut into row-chunks, with its metadata.

A Dataset comes from :func:`~daskgd.data.open_zarr` (a Zarr group), from
:func:`~daskgd.data.as_dataset` (arrays or DataFrames in memory or on a cluster), or is
built directly from dask arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np

from daskgd.data.checks import (
    Task,
    check_dtype_1d,
    check_dtype_X,
    check_labels,
    check_shapes,
    find_classes,
    validate_values,
)
from daskgd.data.csr import is_sparse_array
from daskgd.data.store import compute_on_cluster
from daskgd.errors import DataValidationError

__all__ = ["Dataset"]


class _Unknown:
    """The type of ``_UNKNOWN``: one instance, kept by pickling (by its name)."""

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __reduce__(self) -> str:
        return "_UNKNOWN"


#: ``classes=`` of a Dataset whose labels are found when first asked for.
_UNKNOWN: Any = _Unknown()


class Dataset:
    """Training data as dask arrays cut into row-chunks, with its metadata.

    Parameters
    ----------
    X : dask.array.Array
        Features, ``(n_samples, n_features)``, float32 or float64, one chunk along axis 1:
        numpy blocks, or (sparse data) ``scipy.sparse.csr_matrix`` blocks in canonical form
        (each row's indices sorted and distinct), no row-chunk empty.
    y : dask.array.Array
        Targets or class labels, ``(n_samples,)``, same row chunks as ``X``.
    sample_weight : dask.array.Array or None
        Non-negative row weights, same row chunks as ``X``.
    offset : dask.array.Array or None, optional
        Per-row offsets added to the margin ``x @ w + b`` (for the log-link families,
        ``log(exposure)``), finite floats, same row chunks as ``X``.
    classes : array-like or None, optional
        Sorted class labels for classification data, None for regression. Not given: found
        from ``y`` (one pass over it) when :attr:`classes_` is first read, so a regression
        target is never scanned for labels.
    path : str or None
        The Zarr group backing the arrays, if any.
    storage_options : dict or None
        fsspec options used to open ``path``.
    attrs : dict or None
        The group attributes (or metadata of an in-memory dataset).
    feature_names : sequence of str, optional
        The names of the columns of ``X`` (from a DataFrame, or the group's
        ``feature_names`` attribute); length ``n_features``.
    values_checked : bool, default False
        Whether the values were checked already (a scan, or the trusted record of one):
        :func:`~daskgd.data.as_dataset` does not check them again.
    client : distributed.Client, optional
        Where the pass that finds the classes runs; default: dask's current scheduler.
    nnz : int, optional
        The number of stored values of a sparse ``X``, when known (else counted when
        :attr:`nnz` is first read).
    column_chunks : sequence of int, optional
        The widths of the column chunks ``X`` is stored in at ``path``, when its columns are
        cut into more than one (``write_zarr(..., chunk_cols=...)``); they sum to
        ``n_features``. The dask ``X`` still has one chunk along the columns.

    Attributes
    ----------
    X, y, sample_weight, offset, path, storage_options, attrs
        As given.
    classes_ : numpy.ndarray or None
        Sorted class labels, None for regression data.
    feature_names : list of str or None
        The names of the features, if known.
    values_checked : bool
        True once the values passed a check (:meth:`validate`).
    column_chunks : tuple of int or None
        As given: the stored column-chunk widths, None for one chunk along the columns or
        data not read from a store (feature partitioning reads column ranges on those
        boundaries: :func:`~daskgd.data.columns.column_blocks`).

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> ds = Dataset(da.ones((10, 2), chunks=(10, 2)), da.arange(10.0, chunks=10))
    >>> ds.n_samples, ds.n_features, ds.n_chunks
    (10, 2, 1)
    """

    #: None unless given (also for a Dataset pickled before offsets existed)
    offset: da.Array | None = None
    _nnz: int | None = None
    #: None unless given (also for a Dataset pickled before column chunks existed)
    column_chunks: tuple[int, ...] | None = None

    def __init__(
        self,
        X: da.Array,
        y: da.Array,
        sample_weight: da.Array | None = None,
        *,
        offset: da.Array | None = None,
        classes: Any = _UNKNOWN,
        path: str | None = None,
        storage_options: dict[str, Any] | None = None,
        attrs: dict[str, Any] | None = None,
        feature_names: Sequence[str] | None = None,
        values_checked: bool = False,
        client: Any = None,
        nnz: int | None = None,
        column_chunks: Sequence[int] | None = None,
    ) -> None:
        check_shapes(
            X.shape,
            y.shape,
            None if sample_weight is None else sample_weight.shape,
            None if offset is None else offset.shape,
        )
        check_dtype_X(X.dtype)
        check_dtype_1d("y", y.dtype)
        if sample_weight is not None:
            check_dtype_1d("sample_weight", sample_weight.dtype)
        if offset is not None:
            check_dtype_1d("offset", offset.dtype)
        if len(X.chunks[1]) != 1:
            raise DataValidationError(
                f"X must be chunked by rows only (one chunk along axis 1), got column chunks "
                f"{X.chunks[1]}; rechunk with X.rechunk({{1: -1}})"
            )
        for name, a in (("y", y), ("sample_weight", sample_weight), ("offset", offset)):
            if a is not None and a.chunks[0] != X.chunks[0]:
                raise DataValidationError(
                    f"{name} and X have different row chunks ({name}: {a.chunks[0][:5]}..., "
                    f"X: {X.chunks[0][:5]}...); rechunk with {name}.rechunk(X.chunks[0]) or "
                    "rewrite the data with write_zarr(..., chunk_rows=...)"
                )
        if is_sparse_array(X) and 0 in X.chunks[0]:
            i = X.chunks[0].index(0)
            raise DataValidationError(
                f"X's row-chunk {i} is empty (0 rows): sparse X is trained on row-chunk by "
                "row-chunk, each with rows. Drop the empty partitions or rechunk, e.g. "
                "X.rechunk({0: 100_000}) (and y, the weights and the offsets with it)"
            )
        self.X = X
        self.y = y
        self._nnz = None if nnz is None else int(nnz)
        self.sample_weight = sample_weight
        self.offset = offset
        self._classes: Any = _UNKNOWN
        if classes is not _UNKNOWN:
            self.classes_ = classes
        self._client = client
        self.path = path
        self.storage_options = storage_options
        self.attrs: dict[str, Any] = dict(attrs or {})
        if feature_names is not None:
            feature_names = [str(f) for f in feature_names]
            if len(feature_names) != X.shape[1]:
                raise DataValidationError(
                    f"feature_names has {len(feature_names)} names but X has {X.shape[1]} features"
                )
        self.feature_names: list[str] | None = feature_names
        self.values_checked = bool(values_checked)
        if column_chunks is not None:
            widths = tuple(int(c) for c in column_chunks)
            if min(widths, default=0) < 1 or sum(widths) != X.shape[1]:
                raise DataValidationError(
                    f"column_chunks {widths} must be positive widths summing to the "
                    f"{X.shape[1]} features of X"
                )
            self.column_chunks = widths

    @property
    def classes_(self) -> np.ndarray | None:
        """Sorted class labels, None when ``y`` holds no class labels (a regression target).

        Found from ``y`` the first time it is read, when not known (one pass over ``y``).
        """
        if self._classes is _UNKNOWN:
            self._classes = find_classes(self.y, self._client)
        return self._classes

    @classes_.setter
    def classes_(self, classes: Any) -> None:
        self._classes = None if classes is None else np.asarray(classes)

    @property
    def classes_known(self) -> bool:
        """Whether :attr:`classes_` is known without a pass over ``y``."""
        return self._classes is not _UNKNOWN

    def __getstate__(self) -> dict[str, Any]:
        # a client does not travel (it is only where the labels pass runs)
        return {**self.__dict__, "_client": None}

    def with_offset(self, offset: da.Array) -> Dataset:
        """A copy of this dataset whose ``offset`` is ``offset`` (same row-chunks as ``X``).

        The copy has no ``path``: the training tasks read a dataset with a path from its
        store, which holds other offsets (or none), so the copy is read through its dask
        arrays instead (whose chunk reads are checked as before). The values of ``X``, ``y``
        and the weights count as checked when they were; the caller checks ``offset``.
        """
        return Dataset(
            self.X,
            self.y,
            self.sample_weight,
            offset=offset,
            classes=self._classes,
            storage_options=None,
            attrs=self.attrs,
            feature_names=self.feature_names,
            values_checked=self.values_checked,
            client=self._client,
            nnz=self._nnz,
        )

    @property
    def n_samples(self) -> int:
        """Number of rows."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of columns of ``X``."""
        return int(self.X.shape[1])

    @property
    def is_sparse(self) -> bool:
        """Whether ``X`` is sparse: a dask array of ``scipy.sparse.csr_matrix`` blocks."""
        return is_sparse_array(self.X)

    @property
    def nnz_known(self) -> bool:
        """Whether :attr:`nnz` is known without a pass over ``X`` (always for dense data)."""
        return not self.is_sparse or self._nnz is not None

    @property
    def nnz(self) -> int:
        """The number of stored values of ``X``: ``n_samples * n_features`` for dense data.

        Known for a sparse dataset read from Zarr or converted from a scipy matrix; for
        other sparse dask arrays counted the first time it is read (one pass over ``X``,
        on the dataset's client).
        """
        if not self.is_sparse:
            return self.n_samples * self.n_features
        if self._nnz is None:
            counts = [b.nnz for b in self.X.to_delayed().ravel()]
            (total,) = compute_on_cluster([dask.delayed(sum)(counts)], self._client)
            self._nnz = int(total)
        return self._nnz

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy dtype of ``X``."""
        return np.dtype(self.X.dtype)

    @property
    def chunks(self) -> tuple[int, ...]:
        """Rows of each row-chunk."""
        return tuple(int(c) for c in self.X.chunks[0])

    @property
    def n_chunks(self) -> int:
        """Number of row-chunks."""
        return len(self.X.chunks[0])

    def __repr__(self) -> str:
        where = f" path={self.path!r}" if self.path else ""
        return (
            f"<daskgd.Dataset n_samples={self.n_samples} n_features={self.n_features} "
            f"dtype={self.dtype} n_chunks={self.n_chunks}"
            f"{self._sparse_repr()}"
            f"{' weighted' if self.sample_weight is not None else ''}"
            f"{' offset' if self.offset is not None else ''}{where}>"
        )

    def _sparse_repr(self) -> str:
        if not self.is_sparse:
            return ""
        return " sparse" if self._nnz is None else f" sparse nnz={self._nnz}"

    def validate(self, client: Any = None, *, find_labels: bool = False) -> None:
        """Scan the data for NaN/inf (X, y, offset) and negative or non-finite weights.

        The scan runs one task per row-chunk, on ``client`` if given, else on dask's
        current scheduler (a ``distributed.Client`` made default in this process).

        Raises
        ------
        DataValidationError
            Naming the array, the chunk and its rows.
        """
        found = validate_values(self.X, self.y, self.sample_weight, client,
                                find_labels=find_labels, offset=self.offset)  # fmt: skip
        if find_labels:
            self._classes = found
        self.values_checked = True

    def check_task(self, task: Task) -> None:
        """Check that ``y`` fits ``task`` (``"regression"`` or ``"classification"``).

        Raises
        ------
        DataValidationError
            Continuous targets for classification, a single class, class labels (per the
            stored ``task`` attribute or a boolean ``y``) for regression.
        """
        # a regression target is never scanned for class labels
        classes = self.classes_ if task == "classification" else None
        check_labels(task, np.dtype(self.y.dtype), classes, self.attrs, self.y)

    def chunk_bounds(self, i: int) -> tuple[int, int]:
        """Row range ``[start, stop)`` of row-chunk ``i``."""
        if not 0 <= i < self.n_chunks:
            raise IndexError(f"chunk {i} out of range: the dataset has {self.n_chunks} chunks")
        start = sum(self.chunks[:i])
        return start, start + self.chunks[i]

    def partition(
        self,
        workers: Sequence[str],
        client: Any = None,
        *,
        shares: Mapping[str, float] | None = None,
    ) -> dict[str, list[int]]:
        """Plan which row-chunks each worker trains on.

        Rows are balanced across ``workers`` (in proportion to ``shares`` when given). With
        ``client``, a chunk of ``X`` that is already in a worker's memory
        (``client.who_has``, e.g. after ``client.persist``) stays on that worker while the
        worker is below its fair share of rows; the other chunks go, largest first, to the
        worker furthest below its share. Without ``client`` each worker gets a contiguous
        run of chunks (sequential reads): chunk ``i`` goes to the worker whose part of the
        rows holds the chunk's middle row, so a share is met to within a chunk (half a
        chunk at each end of its run).

        Parameters
        ----------
        workers : sequence of str
            Worker addresses (distinct, at least one).
        client : distributed.Client, optional
            Used to find where chunks of ``self.X`` live.
        shares : mapping of str to float, optional
            Each worker's relative share of the rows (non-negative, not all zero; a worker
            missing from it gets none). Default: equal shares.

        Returns
        -------
        dict of str to list of int
            Every worker (possibly with an empty list), its sorted chunk indices. Every
            chunk appears exactly once.
        """
        workers = list(workers)
        if not workers:
            raise ValueError("partition needs at least one worker")
        if len(set(workers)) != len(workers):
            raise ValueError(f"workers has duplicates: {workers}")
        weight = _shares(workers, shares)
        sizes = self.chunks
        plan: dict[str, list[int]] = {w: [] for w in workers}
        load = dict.fromkeys(workers, 0)
        holders: dict[int, list[str]] = {}
        if client is not None:
            from distributed import futures_of

            keys = list(dask.core.flatten(self.X.__dask_keys__()))  # (name, i, 0)
            # who_has takes futures: only a persisted X has any; otherwise nothing is held.
            futures = futures_of(self.X)
            who = dict(client.who_has(futures)) if futures else {}
            for i, k in enumerate(keys):
                held = [w for w in who.get(k, ()) if w in load]
                if held:
                    holders[i] = held
        total = sum(sizes)
        if not holders:
            # contiguous: chunk i goes to the worker whose part of the rows holds its middle
            # (equal shares in exact arithmetic: no rounding moves a chunk on a boundary)
            ends = np.cumsum([weight[w] for w in workers]) * total
            start = 0
            for i, s in enumerate(sizes):
                mid = start + s / 2
                if shares is None:
                    k = int(mid * len(workers) / total)
                else:
                    k = int(np.searchsorted(ends, mid, side="right"))
                plan[workers[min(k, len(workers) - 1)]].append(i)
                start += s
            return plan
        fair = {w: weight[w] * total for w in workers}
        unplaced: list[int] = []
        for i in sorted(holders, key=lambda j: (-sizes[j], j)):
            held = [a for a in holders[i] if fair[a] > 0]
            if not held:
                unplaced.append(i)
                continue
            w = min(held, key=lambda a: (load[a] / fair[a], workers.index(a)))
            if load[w] + sizes[i] <= math.ceil(fair[w]) or load[w] == 0:
                plan[w].append(i)
                load[w] += sizes[i]
            else:
                unplaced.append(i)
        unplaced += [i for i in range(len(sizes)) if i not in holders]
        takers = [w for w in workers if fair[w] > 0]
        for i in sorted(unplaced, key=lambda j: (-sizes[j], j)):
            # the worker furthest below its share once it has the chunk
            w = min(takers, key=lambda a: ((load[a] + sizes[i]) / fair[a], workers.index(a)))
            plan[w].append(i)
            load[w] += sizes[i]
        return {w: sorted(c) for w, c in plan.items()}


def _shares(workers: Sequence[str], shares: Mapping[str, float] | None) -> dict[str, float]:
    """Each worker's fraction of the rows (summing to 1), checked."""
    if shares is None:
        return {w: 1.0 / len(workers) for w in workers}
    unknown = sorted(set(shares) - set(workers))
    if unknown:
        raise ValueError(f"shares names workers that are not in the plan: {unknown}")
    raw = {w: float(shares.get(w, 0.0)) for w in workers}
    if any(not (math.isfinite(v) and v >= 0) for v in raw.values()) or not sum(raw.values()):
        raise ValueError(
            f"shares must be finite, non-negative and not all zero, got {dict(shares)}"
        )
    total = sum(raw.values())
    return {w: v / total for w, v in raw.items()}
