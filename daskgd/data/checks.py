"""Checks of a dataset: structure (metadata only, always run) and values (a pass over the data).

Every check raises :class:`~daskgd.errors.DataValidationError` naming the array and, for
values, the chunk and rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np

from daskgd.data.csr import csr_block_stats, is_scipy_sparse
from daskgd.data.store import FORMAT_VERSION, compute_on_cluster, is_csr_group
from daskgd.errors import DataValidationError, IncompleteDatasetError

__all__ = [
    "MAX_CLASSES",
    "OFFSET_HINT",
    "TASKS",
    "Task",
    "block_stats",
    "check_dense",
    "check_dtype_1d",
    "check_dtype_X",
    "check_format_attrs",
    "check_labels",
    "check_offset_values",
    "check_shapes",
    "classes_in_memory",
    "find_classes",
    "no_classes_reason",
    "report_bad",
    "validate_local",
    "validate_values",
]

#: What a bad offset most likely is, said with the error.
OFFSET_HINT = (
    "An offset is added to each row's margin: for an exposure, pass offset=np.log(exposure) "
    "(not the exposure itself), and leave out rows of zero exposure (log(0) = -inf). "
)

#: Float ``y`` with more distinct integer values than this is a regression target, not labels.
MAX_CLASSES = 1000


TASKS = ("regression", "classification")


Task = Literal["regression", "classification"]


def check_dtype_X(dtype: np.dtype[Any]) -> None:
    if dtype.kind not in "biuf" or dtype.kind == "c":
        raise DataValidationError(
            f"X has non-numeric dtype {dtype}; daskgd needs float32 or float64 features "
            "(convert with X.astype('float64'))"
        )
    if dtype not in (np.float32, np.float64):
        raise DataValidationError(
            f"X has dtype {dtype}; daskgd needs float32 or float64 features "
            "(convert with X.astype('float64'))"
        )


def check_dtype_1d(name: str, dtype: np.dtype[Any]) -> None:
    if dtype.kind not in "biuf":
        raise DataValidationError(
            f"{name} has non-numeric dtype {dtype}; it must hold numbers "
            f"(integers or floats), e.g. {name}.astype('float64')"
        )


def check_shapes(
    X_shape: tuple[int, ...],
    y_shape: tuple[int, ...],
    w_shape: tuple[int, ...] | None,
    offset_shape: tuple[int, ...] | None = None,
) -> None:
    if len(X_shape) != 2:
        raise DataValidationError(
            f"X must be 2-D (n_samples, n_features), got {len(X_shape)}-D shape {X_shape}; "
            "reshape it, e.g. X.reshape(-1, 1) for a single feature"
        )
    if len(y_shape) != 1:
        raise DataValidationError(
            f"y must be 1-D (n_samples,), got {len(y_shape)}-D shape {y_shape}; "
            "flatten it with y.ravel() (multi-output targets are not supported)"
        )
    if w_shape is not None and len(w_shape) != 1:
        raise DataValidationError(f"sample_weight must be 1-D (n_samples,), got shape {w_shape}")
    n, d = X_shape
    if y_shape[0] != n:
        raise DataValidationError(
            f"X and y have different row counts: X has {n} rows, y has {y_shape[0]}"
        )
    if w_shape is not None and w_shape[0] != n:
        raise DataValidationError(
            f"X and sample_weight have different row counts: X has {n} rows, "
            f"sample_weight has {w_shape[0]}"
        )
    if offset_shape is not None and (len(offset_shape) != 1 or offset_shape[0] != n):
        raise DataValidationError(
            f"offset must be 1-D with one value per row of X ({n},), got shape "
            f"{tuple(offset_shape)}"
        )
    if n == 0:
        raise DataValidationError("the dataset is empty: X has 0 rows")
    if d == 0:
        raise DataValidationError("X has 0 features (shape (n, 0)); a model needs d >= 1")


def check_format_attrs(attrs: Mapping[str, Any], path: str) -> None:
    if attrs.get("format") != "daskgd":
        return  # a plain group with X and y written by another tool: accepted as is
    version = attrs.get("format_version")
    if not isinstance(version, int):
        raise DataValidationError(f"{path}: attribute format_version is missing or not an int")
    if version > FORMAT_VERSION:
        raise DataValidationError(
            f"{path} was written by a newer daskgd (format version {version}; this daskgd "
            f"reads up to {FORMAT_VERSION}): upgrade daskgd to read it"
        )
    if is_csr_group(attrs) and version < 2:
        raise DataValidationError(
            f"{path}: its X is stored as CSR (attribute x_format = 'csr') but its format "
            f"version is {version}; CSR data is format version 2 or later. The attributes were "
            "edited: write the dataset again"
        )
    if attrs.get("complete") is not True:
        raise IncompleteDatasetError(
            f"{path} is not a complete daskgd dataset: its write failed or is still running "
            "(attribute complete is not true); write it again with overwrite=True"
        )


def check_dense(X: Any, y: Any, sample_weight: Any, offset: Any = None) -> None:
    """Refuse the sparse input daskgd does not take.

    ``X`` may be a scipy.sparse CSR matrix or array, or a dask array of scipy.sparse blocks
    (made canonical CSR block by block where daskgd reads them). Refused, with the fix: a
    scipy.sparse ``X`` in another format (CSC, COO, ...: ``X.tocsr()``;
    :func:`~daskgd.data.write_zarr` and :func:`~daskgd.data.as_dataset` convert it
    themselves), pydata ``sparse`` arrays (and dask arrays of them), and a sparse ``y``,
    ``sample_weight`` or ``offset``.
    """
    for name, a in (("X", X), ("y", y), ("sample_weight", sample_weight), ("offset", offset)):
        if a is None:
            continue
        inner = getattr(a, "_meta", None) if isinstance(a, da.Array) else a
        module = type(inner).__module__ or ""
        if name == "X" and module.startswith("scipy.sparse"):
            if isinstance(a, da.Array) or getattr(a, "format", None) == "csr":
                continue
            raise DataValidationError(
                f"X is a scipy.sparse {type(a).__name__} in {a.format.upper()} form; daskgd "
                "reads sparse X by rows, in CSR form: convert it with X.tocsr()"
            )
        if module.startswith(("scipy.sparse", "sparse")):
            fix = (
                "X.tocsr() for a pydata sparse array (after X.to_scipy_sparse()), or "
                "map_blocks(lambda b: b.to_scipy_sparse().tocsr()) for a dask array of them"
                if name == "X"
                else f"{name}.toarray() (a dense 1-D array: one value per row)"
            )
            raise DataValidationError(
                f"{name} is a sparse {type(a).__name__}; daskgd takes sparse input only as "
                f"a scipy.sparse CSR X (or a dask array of scipy.sparse blocks). Use {fix}"
            )


def block_stats(block: Any, kind: str) -> tuple[int, int, float]:
    """Per-chunk check: (number of bad values, first bad row within the chunk, sum).

    A scipy.sparse block (a row-chunk of a CSR ``X``) is checked by its stored values.
    """
    if is_scipy_sparse(block):
        return csr_block_stats(block.tocsr())
    block = np.asarray(block)
    if kind == "weight":
        bad = ~np.isfinite(block) | (block < 0)
    else:
        bad = ~np.isfinite(block)
    if bad.ndim == 2:
        bad = bad.any(axis=1)
    n_bad = int(np.count_nonzero(bad))
    first = int(np.argmax(bad)) if n_bad else -1
    total = float(block.sum()) if kind == "weight" and n_bad == 0 else 0.0
    return n_bad, first, total


def report_bad(name: str, stats: list[tuple[int, int, float]], chunks: Sequence[int]) -> None:
    offsets = np.concatenate([[0], np.cumsum(chunks)])
    for i, (n_bad, first, _total) in enumerate(stats):
        if n_bad:
            what = "negative, NaN or inf" if name == "sample_weight" else "NaN or inf"
            n_total = sum(s[0] for s in stats)
            raise DataValidationError(
                f"{name} contains {what} values in chunk {i} (rows {offsets[i]}-"
                f"{offsets[i + 1] - 1}; first bad row {offsets[i] + first}); {n_total} bad "
                f"row(s) in all. {OFFSET_HINT if name == 'offset' else ''}Clean the data, or "
                "pass validate=False to skip this check"
            )


def _labels_of(y: np.ndarray) -> np.ndarray | None:
    """Sorted distinct labels of one block of ``y``; None when it holds non-integer values."""
    if y.dtype.kind in "biu":
        return np.unique(y)
    finite = y[np.isfinite(y)]
    if not np.array_equal(finite, np.round(finite)):
        return None
    return np.unique(finite)


def _chunk_check(
    X: np.ndarray, y: np.ndarray, w: np.ndarray | None, labels: bool, o: np.ndarray | None = None
) -> tuple[tuple[int, int, float], ...] | tuple[Any, ...]:
    """Check one row-chunk of every array at once (one task per chunk, on a worker).

    Returns the :func:`block_stats` of ``X``, ``y`` and ``w`` (None without weights),
    when ``labels`` the chunk's distinct labels (None: not class labels): the pass that
    finds the classes reads ``y`` while it is already in memory; and the stats of the
    offsets ``o`` (None without).
    """
    found = _labels_of(np.asarray(y)) if labels else None
    return (
        block_stats(X, "value"),
        block_stats(y, "value"),
        None if w is None else block_stats(w, "weight"),
        found,
        None if o is None else block_stats(o, "value"),
    )


def validate_values(
    X: da.Array,
    y: da.Array,
    w: da.Array | None,
    client: Any = None,
    *,
    find_labels: bool = False,
    offset: da.Array | None = None,
) -> np.ndarray | None:
    """Scan every row-chunk for NaN/inf (X, y, offset) and bad weights: one task per row-chunk.

    Parameters
    ----------
    X, y, w : dask.array.Array
        The dataset's arrays, with the same row-chunks (``w`` may be None).
    client : distributed.Client, optional
        Where the scan runs; default: the default client, else dask's scheduler.
    find_labels : bool, default False
        Also find the class labels of ``y`` in the same pass (only for classification:
        a regression target is never scanned for them).
    offset : dask.array.Array, optional
        Per-row offsets, with the same row-chunks; must be finite.

    Returns
    -------
    numpy.ndarray or None
        With ``find_labels``, the sorted class labels (None: ``y`` holds no labels, as
        :func:`find_classes`); else None.

    Raises
    ------
    DataValidationError
        Naming the array, the chunk and its rows.
    """
    check = dask.delayed(_chunk_check, pure=True)
    Xs, ys = X.to_delayed().ravel(), y.to_delayed().ravel()
    ws = [None] * len(Xs) if w is None else list(w.to_delayed().ravel())
    os_ = [None] * len(Xs) if offset is None else list(offset.to_delayed().ravel())
    # the offsets only when there are some: the task (and its key) as before otherwise
    more = [] if offset is None else [os_]
    tag = "" if offset is None else f"-{offset.name}"
    tasks = []
    for i in range(len(Xs)):
        key = f"daskgd-check-{X.name}{tag}-{i}"
        tasks.append(check(Xs[i], ys[i], ws[i], find_labels, *(m[i] for m in more),
                           dask_key_name=key))  # fmt: skip
    results = compute_on_cluster(tasks, client)
    arrays: dict[str, Any] = {"X": X, "y": y, "sample_weight": w}
    for j, name in enumerate(arrays):
        if arrays[name] is not None:
            report_bad(name, [r[j] for r in results], X.chunks[0])
    if offset is not None:
        report_bad("offset", [r[4] for r in results], X.chunks[0])
    if w is not None and sum(r[2][2] for r in results) <= 0:
        raise DataValidationError(
            "sample_weight sums to zero: at least one row needs a positive weight"
        )
    if not find_labels:
        return None
    parts = [r[3] for r in results]
    if any(p is None for p in parts):
        return None
    uniq = np.unique(np.concatenate(parts))
    if y.dtype.kind not in "biu" and len(uniq) > MAX_CLASSES:
        return None  # too many distinct integer values to be classes: a regression target
    return uniq


def check_offset_values(offset: da.Array, client: Any = None) -> None:
    """Scan dask offsets alone for NaN/inf (one task per row-chunk, on ``client``)."""
    stats = dask.delayed(block_stats, pure=True)
    tasks = [stats(b, "value") for b in offset.to_delayed().ravel()]
    report_bad("offset", compute_on_cluster(tasks, client), offset.chunks[0])


def validate_local(
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None,
    chunks: Sequence[int],
    offset: np.ndarray | None = None,
) -> None:
    """The same checks as :meth:`Dataset.validate`, on numpy arrays in this process."""
    offsets = np.concatenate([[0], np.cumsum(chunks)])
    total = 0.0
    for name, a in (("X", X), ("y", y), ("sample_weight", w), ("offset", offset)):
        if a is None or (a.dtype.kind in "biu" and name != "sample_weight"):
            continue
        kind = "weight" if name == "sample_weight" else "value"
        if is_scipy_sparse(a):  # a canonical csr_matrix: its rows' values, without a copy
            stats = [csr_block_stats(_RowsView(a, offsets[i], offsets[i + 1]))
                     for i in range(len(chunks))]  # fmt: skip
            report_bad(name, stats, chunks)
            continue
        stats = [block_stats(a[offsets[i] : offsets[i + 1]], kind) for i in range(len(chunks))]
        report_bad(name, stats, chunks)
        if name == "sample_weight":
            total = sum(s[2] for s in stats)
    if w is not None and total <= 0:
        raise DataValidationError(
            "sample_weight sums to zero: at least one row needs a positive weight"
        )


class _RowsView:
    """Rows ``[lo, hi)`` of a CSR matrix as :func:`~daskgd.data.csr.csr_block_stats` reads
    them: its ``data`` and ``indptr`` slices (views, not copies)."""

    def __init__(self, X: Any, lo: int, hi: int) -> None:
        self.indptr = X.indptr[int(lo) : int(hi) + 1]
        self.data = X.data[int(self.indptr[0]) : int(self.indptr[-1])]


def no_classes_reason(y: Any, client: Any = None) -> str:
    """Why float ``y`` gave no class labels: non-integer values, or more than MAX_CLASSES.

    Called on the error path only (a pass over a dask ``y``).
    """
    if isinstance(y, da.Array):
        finite = y[da.isfinite(y)]
        (integral,) = compute_on_cluster([da.all(finite == da.round(finite))], client)
        n = None
        if bool(integral):
            (uniq,) = compute_on_cluster([da.unique(finite)], client)
            n = len(uniq)
    else:
        a = np.asarray(y)
        finite = a[np.isfinite(a)]
        integral = np.array_equal(finite, np.round(finite))
        n = len(np.unique(finite)) if integral else None
    if n is None:
        return (
            "y holds continuous (non-integer) values; class labels must be integers or "
            "integer-valued floats"
        )
    if n <= MAX_CLASSES:
        # few enough to be labels: the dataset was written (or opened) as a regression target
        return (
            f"y holds {n} distinct integer-valued floats, and the dataset records it as a "
            "regression target (float y written without task='classification'); write it "
            "with write_zarr(..., task='classification'), or store y as integers"
        )
    return (
        f"y holds {n} distinct integer values, more than the {MAX_CLASSES} classes daskgd "
        "accepts in float labels: this looks like a regression target (use "
        "task='regression' / a regression loss); for real class labels store y as integers"
    )


def check_labels(
    task: Task,
    y_dtype: np.dtype[Any],
    classes: np.ndarray | None,
    attrs: Mapping[str, Any],
    y: Any = None,
    client: Any = None,
) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    stored = attrs.get("task")
    if stored in TASKS and stored != task:
        raise DataValidationError(
            f"y holds labels for {stored}, but {task} was requested; use a {task} dataset "
            "or the matching estimator"
        )
    if task == "regression":
        if y_dtype.kind == "b":
            raise DataValidationError(
                "y is boolean, which are class labels, but regression was requested; "
                "use a classifier or convert y to float"
            )
        return
    if classes is None:
        if y is not None:
            reason = no_classes_reason(y, client)
        else:
            reason = (
                "y holds continuous (non-integer) values, or more than "
                f"{MAX_CLASSES} distinct ones; class labels must be integers or "
                "integer-valued floats"
            )
        raise DataValidationError(f"classification was requested but {reason}")
    if len(classes) < 2:
        raise DataValidationError(
            f"classification needs at least 2 classes in y, found {len(classes)}: "
            f"{classes.tolist()}"
        )


def find_classes(y: da.Array, client: Any = None) -> np.ndarray | None:
    """Sorted unique labels when y holds integer-valued labels, else None (regression)."""
    if y.dtype.kind in "biu":
        (uniq,) = compute_on_cluster([da.unique(y)], client)
        return np.asarray(uniq)
    # Float y: class labels only if every value is an integer; decided per chunk.
    (flags,) = compute_on_cluster([da.all((y == da.round(y)) | ~da.isfinite(y))], client)
    if not bool(flags):
        return None
    (uniq,) = compute_on_cluster([da.unique(y[da.isfinite(y)])], client)
    uniq = np.asarray(uniq)
    # Too many distinct integer values to be classes: treat as a regression target.
    return uniq if len(uniq) <= MAX_CLASSES else None


def classes_in_memory(y: Any) -> np.ndarray | None:
    y = np.asarray(y)
    if y.dtype.kind in "biu":
        return np.unique(y)
    finite = y[np.isfinite(y)]
    if not np.array_equal(finite, np.round(finite)):
        return None
    uniq = np.unique(finite)
    return uniq if len(uniq) <= MAX_CLASSES else None
