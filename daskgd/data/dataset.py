"""Zarr datasets: open, write, convert, validate and plan partitions.

A daskgd dataset is a Zarr v3 group holding

* ``X`` -- an ``n x d`` float32/float64 array,
* ``y`` -- an ``n`` array (float targets, or integer class labels),
* ``sample_weight`` -- optional, ``n`` non-negative floats,

all three cut into the same *row-chunks* (one chunk spans every column). When the arrays
are sharded, a row-chunk is one shard: dask reads whole shards, never the inner chunks
(``da.from_zarr`` would chunk by the inner chunks, dask/dask#12586, and writes that are not
aligned to whole shards can corrupt them).

The group attributes record ``format`` (``"daskgd"``), ``format_version``, ``complete``,
``n_samples``, ``n_features``, ``dtype``, ``task``, ``feature_names`` and ``classes``.
:func:`write_zarr` writes ``complete = False`` first and sets it to ``True`` only after
every chunk is on disk, so a write that dies half way never looks like a dataset:
:func:`open_zarr` refuses it with :class:`~daskgd.errors.IncompleteDatasetError`. The group
is built beside its path and renamed into place (:class:`DatasetWrite`), so a failed
overwrite leaves the old dataset as it was.

Every chunk is written (even one equal to the fill value) with its CRC-32C digest recorded
in the attribute ``digests``, and every chunk is read through :mod:`daskgd.data.chunkio`, which
refuses a missing, damaged or altered chunk: zarr alone reads a missing chunk as its fill
value. Local paths are made absolute where they are opened, since the workers that read
them run in other working directories.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from daskgd.cluster import check_scheduler
from daskgd.errors import DataValidationError, IncompleteDatasetError

__all__ = [
    "FORMAT_VERSION",
    "Dataset",
    "as_dataset",
    "load_chunk",
    "open_zarr",
    "write_zarr",
]

#: Version of the on-disk layout this daskgd writes; a group with a larger one is refused.
FORMAT_VERSION = 1
#: Aim of the automatic row-chunk size: big enough to amortise task overhead, small enough
#: that a worker holds a few at once.
_TARGET_CHUNK_BYTES = 64 * 2**20
_ARRAY_NAMES = ("X", "y", "sample_weight")
_TASKS = ("regression", "classification")
#: Float ``y`` with more distinct integer values than this is a regression target, not labels.
MAX_CLASSES = 1000

Task = Literal["regression", "classification"]


class _Default:
    """Sentinel type for "use daskgd's default compressor"."""

    def __repr__(self) -> str:
        return "DEFAULT"


#: The default value of ``compressor=``: Zstandard at level 1 (fast, and the Zarr v3 standard).
DEFAULT_COMPRESSOR: Any = _Default()


# --------------------------------------------------------------------------------------------
# Store helpers
# --------------------------------------------------------------------------------------------


def _is_url(path: str) -> bool:
    return "://" in path


def _store_path(path: str | os.PathLike[str]) -> str:
    """``path`` as every process of a cluster must read it: local paths made absolute.

    The workers run in other working directories (and possibly as other users), so a
    relative path or ``~`` would name another folder there, where zarr would read every
    chunk as its fill value. ``file://`` and ``local://`` URLs are resolved the same way;
    other URLs are kept as they are.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = os.fspath(path)
    for prefix in ("file://", "local://"):
        if p.startswith(prefix):
            return prefix + os.path.abspath(os.path.expanduser(p[len(prefix) :]))
    if _is_url(p):
        return p
    return os.path.abspath(os.path.expanduser(p))


def _local_dir(path: str) -> str | None:
    """The local folder that a resolved path or ``file://``/``local://`` URL names, else None."""
    for prefix in ("file://", "local://"):
        if path.startswith(prefix):
            return path[len(prefix) :]
    return None if _is_url(path) else path


def _sibling(path: str, tag: str) -> str | None:
    """A new hidden name beside ``path`` (same folder, same URL scheme); None at a root."""
    head, _, tail = path.rstrip("/").rpartition("/")
    if not tail or not head or head.endswith(":/"):
        return None
    return f"{head}/.{tail}.{uuid.uuid4().hex[:16]}.{tag}"


def _check_storage_options(path: str, storage_options: dict[str, Any] | None) -> None:
    if storage_options and not _is_url(path):
        raise ValueError(
            f"storage_options were given but {path!r} is a local path; they apply only to "
            "fsspec URLs such as 'file:///data/train.zarr' or 's3://bucket/train.zarr'"
        )


def _open_group(path: str, mode: str, storage_options: dict[str, Any] | None) -> zarr.Group:
    """Open a Zarr group; ``storage_options`` only reach fsspec URLs (Zarr refuses them else)."""
    _check_storage_options(path, storage_options)
    kwargs: dict[str, Any] = {"mode": mode, "zarr_format": 3}
    if path.startswith("file://"):
        # A file:// URL names a local folder: open it as one. Zarr >= 3.2 does so itself
        # and refuses storage_options there; fsspec's local options (auto_mkdir, ...) have
        # no use for a local store, which creates its folders.
        return zarr.open_group(path[len("file://") :], **kwargs)
    if _is_url(path):
        options = dict(storage_options or {})
        if path.startswith("local://"):
            # fsspec's local filesystem does not create parent folders unless asked.
            options.setdefault("auto_mkdir", True)
        if options:  # zarr >= 3.2 refuses even empty ones for memory:// URLs
            kwargs["storage_options"] = options
    return zarr.open_group(path, **kwargs)


def _exists(path: str, storage_options: dict[str, Any] | None) -> bool:
    if _is_url(path):
        import fsspec

        fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
        return bool(fs.exists(root))
    return os.path.exists(path)


def _remove(path: str, storage_options: dict[str, Any] | None) -> None:
    """Delete a partly written group (best effort: its ``complete`` flag already says so)."""
    try:
        local = _local_dir(path)
        if local is None:
            import fsspec

            fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
            fs.rm(root, recursive=True)
        elif os.path.isdir(local) and not os.path.islink(local):
            shutil.rmtree(local)
        else:
            os.remove(local)
    except OSError:
        pass


def _writable(g: zarr.Group, name: str) -> zarr.Array:
    """Array ``name`` of ``g``, opened to write every chunk, even one equal to the fill value.

    Zarr leaves such chunks out by default, and reads a missing chunk as the fill value;
    a daskgd dataset has every chunk, so that a missing one is known to be damage.
    """
    z = _array(g, name)
    with_config = getattr(z, "with_config", None)
    if with_config is not None:
        return with_config({"write_empty_chunks": True})
    # zarr < 3.1: an array takes its runtime config from the global one when it is opened.
    # Setting that is not thread-safe (two writers' restores interleave), hence the lock.
    with _CONFIG_LOCK, zarr.config.set({"array.write_empty_chunks": True}):
        return _array(g, name)


_CONFIG_LOCK = threading.Lock()


def _compressors(compressor: Any) -> Any:
    if compressor is DEFAULT_COMPRESSOR:
        return (ZstdCodec(level=1),)
    if compressor is None:
        return None
    if isinstance(compressor, list | tuple):
        return tuple(compressor)
    return (compressor,)


def _array(g: zarr.Group, name: str) -> zarr.Array:
    """Member ``name`` of ``g``, which must be an array."""
    z = g[name]
    if not isinstance(z, zarr.Array):
        raise DataValidationError(f"{name!r} in the group is a {type(z).__name__}, not an array")
    return z


def _row_block(z: zarr.Array) -> int:
    """Rows per daskgd row-chunk of a Zarr array: a whole shard when sharded."""
    shards = z.shards
    return int((shards if shards is not None else z.chunks)[0])


def _cluster_client(client: Any = None) -> Any:
    """``client``, else the default distributed client, else None (dask's own scheduler).

    A client's scheduler is checked first: a graph naming daskgd's functions fails on a
    scheduler without daskgd with an error that does not say so.
    """
    if client is None:
        from distributed import default_client

        try:
            client = default_client()
        except ValueError:
            return None
    check_scheduler(client)
    return client


def _compute(tasks: Sequence[Any], client: Any = None) -> list[Any]:
    """Compute dask collections on ``client``, else the default client, else dask's scheduler.

    On a cluster every task has ended, written or failed, before a failure is raised: a
    caller that then removes a half-written store must not race with writes still running.
    """
    if not tasks:
        return []
    client = _cluster_client(client)
    if client is None:
        return list(dask.compute(*tasks))
    futures = client.compute(list(tasks))
    # wait for every task on *this* client (distributed.wait would use the default client,
    # which may be another one or none), then raise the first failure, if any
    client.gather(futures, errors="skip")
    return list(client.gather(futures))


# --------------------------------------------------------------------------------------------
# Structural checks (metadata only: cheap, always run)
# --------------------------------------------------------------------------------------------


def _check_dtype_X(dtype: np.dtype[Any]) -> None:
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


def _check_dtype_1d(name: str, dtype: np.dtype[Any]) -> None:
    if dtype.kind not in "biuf":
        raise DataValidationError(
            f"{name} has non-numeric dtype {dtype}; it must hold numbers "
            f"(integers or floats), e.g. {name}.astype('float64')"
        )


def _check_shapes(
    X_shape: tuple[int, ...],
    y_shape: tuple[int, ...],
    w_shape: tuple[int, ...] | None,
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
    if n == 0:
        raise DataValidationError("the dataset is empty: X has 0 rows")
    if d == 0:
        raise DataValidationError("X has 0 features (shape (n, 0)); a model needs d >= 1")


def _check_format_attrs(attrs: Mapping[str, Any], path: str) -> None:
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
    if attrs.get("complete") is not True:
        raise IncompleteDatasetError(
            f"{path} is not a complete daskgd dataset: its write failed or is still running "
            "(attribute complete is not true); write it again with overwrite=True"
        )


# --------------------------------------------------------------------------------------------
# Data checks (a pass over the data, chunk-parallel on the cluster)
# --------------------------------------------------------------------------------------------


def _block_stats(block: np.ndarray, kind: str) -> tuple[int, int, float]:
    """Per-chunk check: (number of bad values, first bad row within the chunk, sum)."""
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


def _scan(arrays: Mapping[str, Any], client: Any = None) -> dict[str, list[tuple[int, int, float]]]:
    """Run :func:`_block_stats` on every row-chunk of every array in one compute."""
    out: dict[str, list[tuple[int, int, float]]] = {}
    tasks: list[Any] = []
    names: list[tuple[str, int]] = []
    for name, a in arrays.items():
        # integer arrays too: their values are always finite, but reading them checks
        # that every chunk is there and matches its digest
        kind = "weight" if name == "sample_weight" else "value"
        blocks = a.to_delayed().ravel()
        stat = dask.delayed(_block_stats, pure=True)
        for i, b in enumerate(blocks):
            tasks.append(stat(b, kind, dask_key_name=f"daskgd-check-{a.name}-{i}"))
            names.append((name, i))
    results = _compute(tasks, client)
    for (name, _i), r in zip(names, results, strict=True):
        out.setdefault(name, []).append(r)
    return out


def _report_bad(name: str, stats: list[tuple[int, int, float]], chunks: Sequence[int]) -> None:
    offsets = np.concatenate([[0], np.cumsum(chunks)])
    for i, (n_bad, first, _total) in enumerate(stats):
        if n_bad:
            what = "negative, NaN or inf" if name == "sample_weight" else "NaN or inf"
            n_total = sum(s[0] for s in stats)
            raise DataValidationError(
                f"{name} contains {what} values in chunk {i} (rows {offsets[i]}-"
                f"{offsets[i + 1] - 1}; first bad row {offsets[i] + first}); {n_total} bad "
                f"row(s) in all. Clean the data, or pass validate=False to skip this check"
            )


def _validate_values(X: da.Array, y: da.Array, w: da.Array | None, client: Any = None) -> None:
    arrays: dict[str, da.Array] = {"X": X, "y": y}
    if w is not None:
        arrays["sample_weight"] = w
    stats = _scan(arrays, client)
    for name in arrays:
        if name in stats:
            _report_bad(name, stats[name], arrays[name].chunks[0])
    if w is not None:
        total = sum(s[2] for s in stats["sample_weight"])
        if total <= 0:
            raise DataValidationError(
                "sample_weight sums to zero: at least one row needs a positive weight"
            )


def no_classes_reason(y: Any, client: Any = None) -> str:
    """Why float ``y`` gave no class labels: non-integer values, or more than MAX_CLASSES.

    Called on the error path only (a pass over a dask ``y``).
    """
    if isinstance(y, da.Array):
        finite = y[da.isfinite(y)]
        (integral,) = _compute([da.all(finite == da.round(finite))], client)
        n = None
        if bool(integral):
            (uniq,) = _compute([da.unique(finite)], client)
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
    return (
        f"y holds {n} distinct integer values, more than the {MAX_CLASSES} classes daskgd "
        "accepts in float labels: this looks like a regression target (use "
        "task='regression' / a regression loss); for real class labels store y as integers"
    )


def _check_labels(
    task: Task,
    y_dtype: np.dtype[Any],
    classes: np.ndarray | None,
    attrs: Mapping[str, Any],
    y: Any = None,
    client: Any = None,
) -> None:
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
    stored = attrs.get("task")
    if stored in _TASKS and stored != task:
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


def _find_classes(y: da.Array, client: Any = None) -> np.ndarray | None:
    """Sorted unique labels when y holds integer-valued labels, else None (regression)."""
    if y.dtype.kind in "biu":
        (uniq,) = _compute([da.unique(y)], client)
        return np.asarray(uniq)
    # Float y: class labels only if every value is an integer; decided per chunk.
    (flags,) = _compute([da.all((y == da.round(y)) | ~da.isfinite(y))], client)
    if not bool(flags):
        return None
    (uniq,) = _compute([da.unique(y[da.isfinite(y)])], client)
    uniq = np.asarray(uniq)
    # Too many distinct integer values to be classes: treat as a regression target.
    return uniq if len(uniq) <= MAX_CLASSES else None


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


class Dataset:
    """Training data as dask arrays cut into row-chunks, with its metadata.

    Parameters
    ----------
    X : dask.array.Array
        Features, ``(n_samples, n_features)``, float32 or float64, one chunk along axis 1.
    y : dask.array.Array
        Targets or class labels, ``(n_samples,)``, same row chunks as ``X``.
    sample_weight : dask.array.Array or None
        Non-negative row weights, same row chunks as ``X``.
    classes : array-like or None
        Sorted class labels for classification data, None for regression.
    path : str or None
        The Zarr group backing the arrays, if any.
    storage_options : dict or None
        fsspec options used to open ``path``.
    attrs : dict or None
        The group attributes (or metadata of an in-memory dataset).

    Attributes
    ----------
    X, y, sample_weight, path, storage_options, attrs
        As given.
    classes_ : numpy.ndarray or None
        Sorted class labels, None for regression data.

    Examples
    --------
    >>> import numpy as np
    >>> ds = as_dataset((np.ones((10, 2)), np.arange(10.0)), validate=False)
    >>> ds.n_samples, ds.n_features, ds.n_chunks
    (10, 2, 1)
    """

    def __init__(
        self,
        X: da.Array,
        y: da.Array,
        sample_weight: da.Array | None = None,
        *,
        classes: Any = None,
        path: str | None = None,
        storage_options: dict[str, Any] | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        _check_shapes(X.shape, y.shape, None if sample_weight is None else sample_weight.shape)
        _check_dtype_X(X.dtype)
        _check_dtype_1d("y", y.dtype)
        if sample_weight is not None:
            _check_dtype_1d("sample_weight", sample_weight.dtype)
        if len(X.chunks[1]) != 1:
            raise DataValidationError(
                f"X must be chunked by rows only (one chunk along axis 1), got column chunks "
                f"{X.chunks[1]}; rechunk with X.rechunk({{1: -1}})"
            )
        for name, a in (("y", y), ("sample_weight", sample_weight)):
            if a is not None and a.chunks[0] != X.chunks[0]:
                raise DataValidationError(
                    f"{name} and X have different row chunks ({name}: {a.chunks[0][:5]}..., "
                    f"X: {X.chunks[0][:5]}...); rechunk with {name}.rechunk(X.chunks[0]) or "
                    "rewrite the data with write_zarr(..., chunk_rows=...)"
                )
        self.X = X
        self.y = y
        self.sample_weight = sample_weight
        self.classes_ = None if classes is None else np.asarray(classes)
        self.path = path
        self.storage_options = storage_options
        self.attrs: dict[str, Any] = dict(attrs or {})

    @property
    def n_samples(self) -> int:
        """Number of rows."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of columns of ``X``."""
        return int(self.X.shape[1])

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
            f"{' weighted' if self.sample_weight is not None else ''}{where}>"
        )

    def validate(self, client: Any = None) -> None:
        """Scan the data for NaN/inf (X, y) and negative or non-finite weights.

        The scan runs one task per row-chunk, on ``client`` if given, else on dask's
        current scheduler (a ``distributed.Client`` made default in this process).

        Raises
        ------
        DataValidationError
            Naming the array, the chunk and its rows.
        """
        _validate_values(self.X, self.y, self.sample_weight, client)

    def check_task(self, task: Task) -> None:
        """Check that ``y`` fits ``task`` (``"regression"`` or ``"classification"``).

        Raises
        ------
        DataValidationError
            Continuous targets for classification, a single class, class labels (per the
            stored ``task`` attribute or a boolean ``y``) for regression.
        """
        _check_labels(task, np.dtype(self.y.dtype), self.classes_, self.attrs, self.y)

    def chunk_bounds(self, i: int) -> tuple[int, int]:
        """Row range ``[start, stop)`` of row-chunk ``i``."""
        if not 0 <= i < self.n_chunks:
            raise IndexError(f"chunk {i} out of range: the dataset has {self.n_chunks} chunks")
        start = sum(self.chunks[:i])
        return start, start + self.chunks[i]

    def partition(self, workers: Sequence[str], client: Any = None) -> dict[str, list[int]]:
        """Plan which row-chunks each worker trains on.

        Rows are balanced across ``workers``. With ``client``, a chunk of ``X`` that is
        already in a worker's memory (``client.who_has``, e.g. after ``client.persist``)
        stays on that worker while the worker is below its fair share of rows; the
        other chunks go, largest first, to the worker with the fewest rows. Without
        ``client`` each worker gets a contiguous run of chunks (sequential reads).

        Parameters
        ----------
        workers : sequence of str
            Worker addresses (distinct, at least one).
        client : distributed.Client, optional
            Used to find where chunks of ``self.X`` live.

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
        if not holders:
            # Contiguous, balanced: chunk i goes to the worker whose share holds its midpoint.
            total = sum(sizes)
            start = 0
            for i, s in enumerate(sizes):
                mid = start + s / 2
                plan[workers[min(int(mid * len(workers) / total), len(workers) - 1)]].append(i)
                start += s
            return plan
        fair = sum(sizes) / len(workers)
        unplaced: list[int] = []
        for i in sorted(holders, key=lambda j: (-sizes[j], j)):
            w = min(holders[i], key=lambda a: (load[a], workers.index(a)))
            if load[w] + sizes[i] <= math.ceil(fair) or load[w] == 0:
                plan[w].append(i)
                load[w] += sizes[i]
            else:
                unplaced.append(i)
        unplaced += [i for i in range(len(sizes)) if i not in holders]
        for i in sorted(unplaced, key=lambda j: (-sizes[j], j)):
            w = min(workers, key=lambda a: (load[a], workers.index(a)))
            plan[w].append(i)
            load[w] += sizes[i]
        return {w: sorted(c) for w, c in plan.items()}


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _group_arrays(g: zarr.Group, path: str) -> dict[str, zarr.Array]:
    members = set(g.array_keys())
    for name in ("X", "y"):
        if name not in members:
            raise DataValidationError(
                f"{path} has no array {name!r} (found: {sorted(members) or 'none'}); a daskgd "
                "dataset needs arrays 'X' and 'y' (and optionally 'sample_weight')"
            )
    digests = g.attrs.get("digests")
    if (
        isinstance(digests, Mapping)
        and "sample_weight" in digests
        and ("sample_weight" not in members)
    ):
        from daskgd.data.chunkio import _where

        # written with weights, which are gone: reading on without them is a silent change
        raise DataValidationError(
            f"{path} has no array 'sample_weight'{_where()}, but it was written with one "
            "(its chunks' digests are recorded): the array was deleted. Write the dataset again"
        )
    return {name: _array(g, name) for name in _ARRAY_NAMES if name in members}


def open_zarr(
    path: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    validate: bool = True,
    task: Task | None = None,
    client: Any = None,
) -> Dataset:
    """Open a daskgd dataset stored as a Zarr group.

    Parameters
    ----------
    path : str or os.PathLike
        A local path or an fsspec URL (``file://``, ``s3://``, ...).
    storage_options : dict, optional
        fsspec options for a URL (not allowed with a local path).
    validate : bool, default True
        Scan the data for NaN/inf and bad weights, one task per chunk. Shapes,
        dtypes, chunks, completeness and the format version are always checked.
    task : {"regression", "classification"}, optional
        Also check that ``y`` fits this task.
    client : distributed.Client, optional
        Where the scan runs; default: dask's current scheduler.

    Returns
    -------
    Dataset
        Lazy dask arrays over whole row-chunks (whole shards for sharded arrays).

    Raises
    ------
    IncompleteDatasetError
        The group's write did not finish.
    DataValidationError
        Missing arrays, a newer format version, bad shapes/dtypes/chunks or values; with
        ``validate``, a missing, damaged or altered chunk (every chunk is read, on the
        cluster, and the dataset's arrays refuse such a chunk whenever they are read).
    FileNotFoundError
        Nothing at ``path``. A relative path, ``~`` or ``file://`` URL is made absolute
        here: the workers read the same folder whatever their working directory.
    DataNotFoundError
        With ``validate``: a worker cannot see the dataset at that path.
    """
    p = _store_path(path)
    _check_storage_options(p, storage_options)
    if not _exists(p, storage_options):
        raise FileNotFoundError(f"no Zarr dataset at {p!r}")
    try:
        g = _open_group(p, "r", storage_options)
    except (FileNotFoundError, ValueError) as exc:  # zarr: GroupNotFound, ContainsArray
        raise DataValidationError(f"{p!r} is not a Zarr v3 group: {exc}") from exc
    attrs = dict(g.attrs)
    _check_format_attrs(attrs, p)
    arrays = _group_arrays(g, p)
    zX, zy, zw = arrays["X"], arrays["y"], arrays.get("sample_weight")
    _check_shapes(zX.shape, zy.shape, None if zw is None else zw.shape)
    _check_dtype_X(np.dtype(zX.dtype))
    _check_dtype_1d("y", np.dtype(zy.dtype))
    rows = _row_block(zX)
    for name, z in (("y", zy), ("sample_weight", zw)):
        if z is not None and _row_block(z) != rows:
            raise DataValidationError(
                f"{p}: {name} is stored in row-chunks of {_row_block(z)} rows but X in "
                f"chunks of {rows}; rewrite the dataset with write_zarr(..., chunk_rows=...) "
                "so all arrays share one row-chunking"
            )
    n, d = zX.shape
    # from_array over whole shards/chunks (not da.from_zarr: dask/dask#12586). The names
    # come from the write id; a group from another tool has none, so it gets fresh names.
    # Each chunk is read checked (chunkio.CheckedRows): zarr alone reads a missing chunk,
    # or a store a worker cannot see, as fill values.
    from daskgd.data.chunkio import CheckedRows, _digests

    n_chunks = -(-int(n) // rows)

    def checked(z: zarr.Array, name: str) -> CheckedRows:
        return CheckedRows(z, name, p, rows, _digests(attrs, name, n_chunks))

    token = dask.base.tokenize(p, attrs.get("write_id") or uuid.uuid4().hex)
    X = da.from_array(checked(zX, "X"), chunks=(rows, d), name=f"daskgd-X-{token}")
    y = da.from_array(checked(zy, "y"), chunks=(rows,), name=f"daskgd-y-{token}")
    w = None
    if zw is not None:
        _check_dtype_1d("sample_weight", np.dtype(zw.dtype))
        w = da.from_array(checked(zw, "sample_weight"), chunks=(rows,), name=f"daskgd-w-{token}")
    if "classes" in attrs:
        classes = None if attrs["classes"] is None else np.asarray(attrs["classes"])
    else:
        classes = _find_classes(y, client)
    ds = Dataset(X, y, w, classes=classes, path=p, storage_options=storage_options, attrs=attrs)
    if validate:
        ds.validate(client)
    if task is not None:
        ds.check_task(task)
    return ds


def load_chunk(
    path: str | os.PathLike[str],
    i: int,
    *,
    storage_options: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read row-chunk ``i`` of a dataset straight from Zarr (for out-of-core training).

    Parameters
    ----------
    path : str or os.PathLike
        The dataset, as for :func:`open_zarr`.
    i : int
        Row-chunk index, ``0 <= i < n_chunks``.
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    X, y, sample_weight : numpy.ndarray
        C-contiguous arrays of the chunk's rows; ``sample_weight`` is None when the
        dataset has none.

    Raises
    ------
    DataValidationError
        The chunk is missing in an array, its raw file has the wrong size, it cannot be
        decoded or does not match its recorded digest (naming array, chunk and file).
    DataNotFoundError
        The dataset or one of its arrays is not at ``path`` in this process (on a worker:
        the message names it).
    """
    from daskgd.data.chunkio import read_row_chunks

    return read_row_chunks(path, [i], storage_options=storage_options)


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def _auto_chunk_rows(n: int, d: int, itemsize: int) -> int:
    return max(1, min(n, _TARGET_CHUNK_BYTES // max(1, d * itemsize)))


def _to_dask(a: Any, name: str, rows: int | tuple[int, ...]) -> da.Array:
    if isinstance(a, da.Array):
        return a
    arr = np.asarray(a)
    if arr.ndim == 0:
        raise DataValidationError(f"{name} must be an array, got a scalar")
    chunks = (rows, *tuple(arr.shape[1:]))
    return da.from_array(arr, chunks=chunks)


def _is_sparse(a: Any) -> bool:
    """A scipy.sparse matrix/array, a pydata ``sparse`` array, or a dask array of either."""
    if isinstance(a, da.Array):
        a = getattr(a, "_meta", None)
    module = type(a).__module__ or ""
    return module.startswith(("scipy.sparse", "sparse"))


def _check_dense(X: Any, y: Any, sample_weight: Any) -> None:
    for name, a in (("X", X), ("y", y), ("sample_weight", sample_weight)):
        if a is not None and _is_sparse(a):
            raise DataValidationError(
                f"{name} is a sparse {type(a).__name__}; daskgd does not support sparse input "
                f"yet. Pass a dense array ({name}.toarray() for scipy.sparse, when it fits in "
                "memory), or write it to Zarr in dense row-chunks with write_zarr"
            )


def _from_arrays(
    X: Any, y: Any, sample_weight: Any, chunk_rows: int | None
) -> tuple[da.Array, da.Array, da.Array | None]:
    """Numpy or dask arrays -> dask arrays with common row chunks, after structural checks."""
    _check_dense(X, y, sample_weight)
    shapes = [np.shape(X), np.shape(y), None if sample_weight is None else np.shape(sample_weight)]
    _check_shapes(*shapes)
    Xdt = np.dtype(X.dtype) if hasattr(X, "dtype") else np.asarray(X).dtype
    if Xdt.kind in "biu":
        X = X.astype(np.float64)  # integer features: promote, a lossless and common case
    else:
        _check_dtype_X(Xdt)
    _check_dtype_1d("y", np.dtype(y.dtype) if hasattr(y, "dtype") else np.asarray(y).dtype)
    if sample_weight is not None:
        wdt = getattr(sample_weight, "dtype", None) or np.asarray(sample_weight).dtype
        _check_dtype_1d("sample_weight", np.dtype(wdt))
    n, d = shapes[0]
    if chunk_rows is not None:
        if int(chunk_rows) < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        rows: int | tuple[int, ...] = int(chunk_rows)
    elif isinstance(X, da.Array):
        rows = X.chunks[0]
    else:
        rows = _auto_chunk_rows(n, d, np.dtype(getattr(X, "dtype", np.float64)).itemsize)
    Xd = _to_dask(X, "X", rows).rechunk({0: rows, 1: -1})
    yd = _to_dask(y, "y", rows).rechunk({0: Xd.chunks[0]})
    wd = None
    if sample_weight is not None:
        wd = _to_dask(sample_weight, "sample_weight", rows).rechunk({0: Xd.chunks[0]})
    return Xd, yd, wd


def as_dataset(
    data: Any,
    *,
    validate: bool = True,
    task: Task | None = None,
    chunk_rows: int | None = None,
    storage_options: dict[str, Any] | None = None,
    client: Any = None,
) -> Dataset:
    """Turn what a user passes to ``fit`` into a :class:`Dataset`.

    Parameters
    ----------
    data : Dataset, str, os.PathLike or tuple
        A Dataset (returned as is, or checked when ``validate``), a Zarr path/URL, or
        ``(X, y)`` / ``(X, y, sample_weight)`` of numpy or dask arrays. Numpy input is
        cut into row-chunks of ``chunk_rows`` rows (default: about 64 MiB of ``X``);
        dask input keeps its row chunks, ``y`` and weights are rechunked to match ``X``.
        Integer ``X`` is promoted to float64.
    validate : bool, default True
        Scan for NaN/inf and bad weights (one task per chunk).
    task : {"regression", "classification"}, optional
        Also check that ``y`` fits this task.
    chunk_rows : int, optional
        Rows per chunk for in-memory input.
    storage_options : dict, optional
        fsspec options when ``data`` is a URL.
    client : distributed.Client, optional
        Where the scan runs; default: dask's current scheduler.

    Returns
    -------
    Dataset
    """
    if isinstance(data, Dataset):
        if validate:
            data.validate(client)
        if task is not None:
            data.check_task(task)
        return data
    if isinstance(data, str | os.PathLike):
        return open_zarr(
            data, storage_options=storage_options, validate=validate, task=task, client=client
        )
    if not isinstance(data, tuple | list) or len(data) not in (2, 3):
        raise TypeError(
            "data must be a Dataset, a Zarr path or URL, or a tuple (X, y) or "
            f"(X, y, sample_weight); got {type(data).__name__}"
        )
    X, y, w = (*data, None)[:3]
    Xd, yd, wd = _from_arrays(X, y, w, chunk_rows)
    classes = _classes_in_memory(y) if not isinstance(y, da.Array) else _find_classes(yd, client)
    ds = Dataset(Xd, yd, wd, classes=classes)
    if validate:
        if isinstance(X, da.Array) or isinstance(y, da.Array):
            ds.validate(client)
        else:  # data already in this process: check it here, do not ship it to workers
            _validate_local(
                np.asarray(X), np.asarray(y), None if w is None else np.asarray(w), ds.chunks
            )
    if task is not None:
        ds.check_task(task)
    return ds


def _classes_in_memory(y: Any) -> np.ndarray | None:
    y = np.asarray(y)
    if y.dtype.kind in "biu":
        return np.unique(y)
    finite = y[np.isfinite(y)]
    if not np.array_equal(finite, np.round(finite)):
        return None
    uniq = np.unique(finite)
    return uniq if len(uniq) <= MAX_CLASSES else None


def _validate_local(
    X: np.ndarray, y: np.ndarray, w: np.ndarray | None, chunks: Sequence[int]
) -> None:
    """The same checks as :meth:`Dataset.validate`, on numpy arrays in this process."""
    offsets = np.concatenate([[0], np.cumsum(chunks)])
    total = 0.0
    for name, a in (("X", X), ("y", y), ("sample_weight", w)):
        if a is None or (a.dtype.kind in "biu" and name != "sample_weight"):
            continue
        kind = "weight" if name == "sample_weight" else "value"
        stats = [_block_stats(a[offsets[i] : offsets[i + 1]], kind) for i in range(len(chunks))]
        _report_bad(name, stats, chunks)
        if name == "sample_weight":
            total = sum(s[2] for s in stats)
    if w is not None and total <= 0:
        raise DataValidationError(
            "sample_weight sums to zero: at least one row needs a positive weight"
        )


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _check_block(block: np.ndarray, name: str, kind: str, i: int, start: int) -> None:
    """Refuse NaN/inf (and negative weights) in chunk ``i`` of ``name``, rows from ``start``."""
    n_bad, first, _ = _block_stats(block, kind)
    if n_bad:
        what = "negative, NaN or inf" if kind == "weight" else "NaN or inf"
        raise DataValidationError(
            f"{name} contains {what} values in chunk {i} (first bad row {start + first}); "
            "clean the data, or pass validate=False to skip this check"
        )


def _write_block(
    target: Any, block: np.ndarray, name: str, kind: str | None, i: int, start: int
) -> tuple[Exception | None, int | None]:
    """Write one row-chunk to Zarr (checked first when ``kind`` is given).

    Returns ``(failure, digest)``: the failure instead of raising it, so that the caller
    can wait for every chunk task to end before it removes a half-written group (a raised
    failure would end the computation while sibling chunks may still be writing), and the
    chunk's :func:`~daskgd.data.chunkio.chunk_digest` as stored.
    """
    from daskgd.data.chunkio import chunk_digest

    try:
        if kind is not None:
            _check_block(block, name, kind, i, start)
        values = np.ascontiguousarray(block, dtype=target.dtype)
        target[start : start + values.shape[0]] = values
    except Exception as exc:
        return exc, None
    return None, chunk_digest(values)


class DatasetWrite:
    """A dataset being written: beside its path, then moved into place when complete.

    The group is built in a hidden sibling (``.NAME.HEX.tmp``), marked ``complete`` last,
    and renamed into place (as checkpoints are), so a failed write (bad values, a dead
    worker) removes only the sibling and whatever was at the path, such as the dataset
    that ``overwrite=True`` replaces, stays as it was. On an object store a fresh dataset
    is written in place (a move there is a copy of every chunk); one that replaces an old
    one is written beside it, and the old one is deleted only after the new one is complete.

    Attributes
    ----------
    final : str
        The dataset's path.
    path : str
        Where it is being written (``final`` or the sibling).
    group : zarr.Group
        The group at ``path``, marked ``complete = False``.
    """

    def __init__(
        self,
        final: str,
        *,
        n_samples: int,
        n_features: int,
        dtype: Any,
        y_dtype: Any,
        weighted: bool,
        chunk_rows: int,
        inner_chunk_rows: int | None,
        compressor: Any,
        overwrite: bool,
        storage_options: dict[str, Any] | None,
        attrs: dict[str, Any],
    ) -> None:
        _check_storage_options(final, storage_options)  # before anything is written
        self.final, self.options = final, storage_options
        self.existed = _exists(final, storage_options)
        if self.existed and not overwrite:
            raise FileExistsError(f"{final!r} already exists; pass overwrite=True to replace it")
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        if inner_chunk_rows is not None and (inner_chunk_rows < 1 or chunk_rows % inner_chunk_rows):
            raise ValueError(
                f"inner_chunk_rows ({inner_chunk_rows}) must divide chunk_rows ({chunk_rows}): "
                "a row-chunk is stored as one shard made of whole inner chunks"
            )
        beside = _sibling(final, "tmp") if _local_dir(final) is not None or self.existed else None
        if beside is None and self.existed:
            self.existed = False
            _remove(final, storage_options)  # the root of a bucket: nowhere beside it
        self.path = beside or final
        try:
            self.group = self._create(
                n_samples, n_features, dtype, y_dtype, weighted, chunk_rows, inner_chunk_rows,
                compressor, attrs,
            )  # fmt: skip
        except BaseException:
            self.abort()
            raise

    def _create(
        self,
        n_samples: int,
        n_features: int,
        dtype: Any,
        y_dtype: Any,
        weighted: bool,
        chunk_rows: int,
        inner_chunk_rows: int | None,
        compressor: Any,
        attrs: dict[str, Any],
    ) -> zarr.Group:
        g = _open_group(self.path, "w", self.options)
        g.attrs.update(
            {
                "format": "daskgd",
                "format_version": FORMAT_VERSION,
                "complete": False,
                "n_samples": int(n_samples),
                "n_features": int(n_features),
                "dtype": np.dtype(dtype).name,
                # Unique per write: names the dask arrays, so a rewrite at the same path never
                # reuses chunks of the old data still held in a cluster's memory.
                "write_id": uuid.uuid4().hex,
                **attrs,
            }
        )
        codecs = _compressors(compressor)
        specs = [("X", (n_samples, n_features), dtype), ("y", (n_samples,), y_dtype)]
        if weighted:
            specs.append(("sample_weight", (n_samples,), np.float64))
        for name, shape, dt in specs:
            outer = (chunk_rows, *shape[1:])
            if inner_chunk_rows is None:
                chunks, shards = outer, None
            else:
                chunks, shards = (inner_chunk_rows, *shape[1:]), outer
            g.create_array(
                name,
                shape=shape,
                dtype=dt,
                chunks=chunks,
                shards=shards,
                compressors=codecs,
                fill_value=0,
            )
        return g

    def finish(
        self, digests: Mapping[str, Sequence[int]], attrs: dict[str, Any] | None = None
    ) -> None:
        """Record the chunks' digests and final attributes, mark complete, move into place."""
        from daskgd.data.chunkio import DIGEST_ALGORITHM

        recorded: dict[str, Any] = {"algorithm": DIGEST_ALGORITHM}
        recorded.update({name: [int(v) for v in d] for name, d in digests.items()})
        self.group.attrs.update({**(attrs or {}), "digests": recorded, "complete": True})
        if self.path == self.final:
            return
        local = _local_dir(self.final)
        if local is None:
            import fsspec

            fs, root = fsspec.core.url_to_fs(self.final, **(self.options or {}))
            _, staged = fsspec.core.url_to_fs(self.path, **(self.options or {}))
            if fs.exists(root):
                fs.rm(root, recursive=True)
            fs.mv(staged, root, recursive=True)
            return
        staged = _local_dir(self.path)
        assert staged is not None
        old = None
        if os.path.lexists(local):
            old = _local_dir(_sibling(self.final, "old") or "")
            os.rename(local, old)  # type: ignore[arg-type]
        try:
            os.rename(staged, local)
        except BaseException:
            if old is not None:
                os.rename(old, local)
            raise
        if old is not None:
            _remove(old, None)

    def abort(self) -> None:
        """Remove what this write left (never what was at the path before it)."""
        _remove(self.path, self.options)


def write_zarr(
    path: str | os.PathLike[str],
    X: Any,
    y: Any,
    sample_weight: Any = None,
    *,
    chunk_rows: int | None = None,
    compressor: Any = DEFAULT_COMPRESSOR,
    overwrite: bool = False,
    client: Any = None,
    inner_chunk_rows: int | None = None,
    feature_names: Sequence[str] | None = None,
    task: Task | None = None,
    validate: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> Dataset:
    """Write ``X``, ``y`` (and ``sample_weight``) as a daskgd Zarr dataset.

    Dask input is written in parallel by the workers (each writes its own row-chunks;
    nothing is gathered on the client). Numpy input is written from this process.

    Parameters
    ----------
    path : str or os.PathLike
        Local path or fsspec URL of the new group.
    X : array-like or dask.array.Array
        ``(n_samples, n_features)`` float32/float64 (integers are promoted to float64).
    y : array-like or dask.array.Array
        ``(n_samples,)`` targets or class labels.
    sample_weight : array-like or dask.array.Array, optional
        ``(n_samples,)`` non-negative weights, stored as float64.
    chunk_rows : int, optional
        Rows per row-chunk; default: the row chunks of dask ``X`` when regular, else about
        64 MiB of ``X`` per chunk.
    compressor : zarr codec, list of codecs, or None
        Default Zstandard level 1; None stores uncompressed.
    overwrite : bool, default False
        Replace whatever is at ``path``; otherwise a :class:`FileExistsError`.
    client : distributed.Client, optional
        Runs the write; default: dask's current scheduler.
    inner_chunk_rows : int, optional
        Shard the arrays: each row-chunk becomes one shard of inner chunks of this many
        rows (must divide ``chunk_rows``).
    feature_names : sequence of str, optional
        Stored in the attributes; length ``n_features``.
    task : {"regression", "classification"}, optional
        Stored in the attributes and checked against ``y``; default: classification
        when ``y`` has an integer dtype, else regression.
    validate : bool, default True
        Refuse NaN/inf in X or y and negative/non-finite weights (checked per chunk as it
        is written; the partial group is removed).
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    Dataset
        The written dataset, opened with :func:`open_zarr` (``validate=False``).

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    DataValidationError
        Bad shapes, dtypes or values; nothing that looks complete is left behind.
    """
    p = _store_path(path)
    Xd, yd, wd = _from_arrays(X, y, sample_weight, None)
    n, d = Xd.shape
    if chunk_rows is None:
        c = Xd.chunks[0]
        regular = all(s == c[0] for s in c[:-1]) and c[-1] <= c[0]
        chunk_rows = c[0] if regular else _auto_chunk_rows(n, d, Xd.dtype.itemsize)
    chunk_rows = min(int(chunk_rows), n)
    if feature_names is not None:
        feature_names = [str(f) for f in feature_names]
        if len(feature_names) != d:
            raise DataValidationError(
                f"feature_names has {len(feature_names)} names but X has {d} features"
            )
    # Zarr writes must be aligned to whole (outer) chunks: rechunk the sources to match.
    Xd = Xd.rechunk({0: chunk_rows, 1: -1})
    yd = yd.rechunk({0: chunk_rows})
    if wd is not None:
        wd = wd.rechunk({0: chunk_rows}).astype(np.float64)
    in_memory = not any(isinstance(a, da.Array) for a in (X, y, sample_weight))
    if not in_memory:
        client = _cluster_client(client)  # checked before anything is removed or written
    if in_memory:
        classes = _classes_in_memory(y)
        if validate:
            _validate_local(
                np.asarray(X),
                np.asarray(y),
                None if sample_weight is None else np.asarray(sample_weight),
                Xd.chunks[0],
            )
    elif task == "regression" and yd.dtype.kind != "b":
        classes = None  # no pass over y needed
    else:
        classes = _find_classes(yd, client)
    if task is None:
        # Integer y means class labels, unless there are too many to be classes.
        is_labels = yd.dtype.kind in "biu" and classes is not None and len(classes) <= MAX_CLASSES
        task = "classification" if is_labels else "regression"
    if task == "regression" and yd.dtype.kind not in "b":
        classes = None  # integer-valued floats are still regression targets unless asked
    _check_labels(task, np.dtype(yd.dtype), classes, {}, y if in_memory else yd, client)
    attrs: dict[str, Any] = {
        "task": task,
        "feature_names": feature_names,
        "classes": None if classes is None else classes.tolist(),
    }
    writer = DatasetWrite(
        p,
        n_samples=n,
        n_features=d,
        dtype=Xd.dtype,
        y_dtype=yd.dtype,
        weighted=wd is not None,
        chunk_rows=chunk_rows,
        inner_chunk_rows=inner_chunk_rows,
        compressor=compressor,
        overwrite=overwrite,
        storage_options=storage_options,
        attrs=attrs,
    )
    from daskgd.data.chunkio import chunk_digest

    g = writer.group
    digests: dict[str, list[int]] = {}
    try:
        if in_memory:
            offsets = np.cumsum((0, *Xd.chunks[0]))
            for name, a, dt in (("X", X, Xd.dtype), ("y", y, yd.dtype),
                                ("sample_weight", sample_weight, np.float64)):  # fmt: skip
                if a is None:
                    continue
                values = np.ascontiguousarray(a, dtype=dt)
                _writable(g, name)[:] = values
                digests[name] = [
                    chunk_digest(values[offsets[i] : offsets[i + 1]])
                    for i in range(len(offsets) - 1)
                ]
        else:
            # one task per row-chunk, all awaited before a failure is raised (see _write_block)
            write = dask.delayed(_write_block, pure=True)
            tasks, names = [], []
            for name, a in (("X", Xd), ("y", yd), ("sample_weight", wd)):
                if a is None:
                    continue
                check = validate and a.dtype.kind == "f"
                kind = ("weight" if name == "sample_weight" else "value") if check else None
                target = dask.delayed(_writable(g, name), traverse=False)
                starts = np.cumsum((0, *a.chunks[0][:-1]))
                for i, block in enumerate(a.to_delayed().ravel()):
                    tasks.append(write(target, block, name, kind, i, int(starts[i])))
                    names.append(name)
            results = _compute(tasks, client)
            failures = [f for f, _ in results if f is not None]
            if failures:
                raise failures[0]
            for name, (_, digest) in zip(names, results, strict=True):
                digests.setdefault(name, []).append(digest)
        writer.finish(digests)
    except BaseException:
        writer.abort()
        raise
    return open_zarr(p, storage_options=storage_options, validate=False, client=client)
