"""Where datasets live: paths and URLs, opening Zarr groups, their arrays, running on a cluster.

The lowest layer of :mod:`daskgd.data`: every other module reads and writes stores through
these helpers. Local paths are made absolute where they are opened, since the workers that
read them run in other working directories.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import dask
import zarr

from daskgd.cluster import check_scheduler
from daskgd.errors import DataChangedError, DataNotFoundError, DataValidationError

__all__ = [
    "ARRAY_NAMES",
    "CSR_PARTS",
    "DENSE_FORMAT_VERSION",
    "FORMAT_VERSION",
    "OPTIONAL_ARRAYS",
    "WRITE_ATTRS",
    "X_FORMAT_ATTR",
    "array_member",
    "auto_chunk_rows",
    "check_opened",
    "check_storage_options",
    "cluster_client",
    "compute_on_cluster",
    "group_arrays",
    "is_csr_group",
    "is_url",
    "local_dir",
    "open_group",
    "opened_attrs",
    "remove_store",
    "rows_per_chunk",
    "sibling_path",
    "store_exists",
    "store_path",
    "worker_suffix",
    "writable_array",
]

#: The newest version of the on-disk layout this daskgd reads; a group with a larger one is
#: refused. Version 2 added sparse ``X`` (a CSR subgroup, :mod:`~daskgd.data.sparse_store`),
#: and sparse groups are written with it.
FORMAT_VERSION = 2

#: The version dense groups are still written with: their layout did not change in version 2,
#: so a daskgd that reads only version 1 still reads them.
DENSE_FORMAT_VERSION = 1

#: The group attribute that says how ``X`` is stored: ``"csr"`` (a subgroup), else dense.
X_FORMAT_ATTR = "x_format"

#: The arrays of a CSR ``X``, by their paths in the group (the names of their digests).
CSR_PARTS = ("X/indptr", "X/indices", "X/data")


#: Aim of the automatic row-chunk size: big enough to amortise task overhead, small enough
#: that a worker holds a few at once.
TARGET_CHUNK_BYTES = 64 * 2**20


#: The arrays of a dataset: ``X`` and ``y``, then the optional per-row ``sample_weight`` and
#: ``offset`` (added to each row's margin: ``log(exposure)`` for the log-link families).
ARRAY_NAMES = ("X", "y", "sample_weight", "offset")
#: The optional ones.
OPTIONAL_ARRAYS = ("sample_weight", "offset")


def is_url(path: str) -> bool:
    return "://" in path


def store_path(path: str | os.PathLike[str]) -> str:
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
    if is_url(p):
        return p
    return os.path.abspath(os.path.expanduser(p))


def local_dir(path: str) -> str | None:
    """The local folder that a resolved path or ``file://``/``local://`` URL names, else None."""
    for prefix in ("file://", "local://"):
        if path.startswith(prefix):
            return path[len(prefix) :]
    return None if is_url(path) else path


def sibling_path(path: str, tag: str) -> str | None:
    """A new hidden name beside ``path`` (same folder, same URL scheme); None at a root."""
    head, _, tail = path.rstrip("/").rpartition("/")
    if not tail or not head or head.endswith(":/"):
        return None
    return f"{head}/.{tail}.{uuid.uuid4().hex[:16]}.{tag}"


def check_storage_options(path: str, storage_options: dict[str, Any] | None) -> None:
    if storage_options and not is_url(path):
        raise ValueError(
            f"storage_options were given but {path!r} is a local path; they apply only to "
            "fsspec URLs such as 'file:///data/train.zarr' or 's3://bucket/train.zarr'"
        )


def open_group(path: str, mode: str, storage_options: dict[str, Any] | None) -> zarr.Group:
    """Open a Zarr group; ``storage_options`` only reach fsspec URLs (Zarr refuses them else)."""
    check_storage_options(path, storage_options)
    kwargs: dict[str, Any] = {"mode": mode, "zarr_format": 3}
    if path.startswith("file://"):
        # A file:// URL names a local folder: open it as one. Zarr >= 3.2 does so itself
        # and refuses storage_options there; fsspec's local options (auto_mkdir, ...) have
        # no use for a local store, which creates its folders.
        return zarr.open_group(path[len("file://") :], **kwargs)
    if is_url(path):
        options = dict(storage_options or {})
        if path.startswith("local://"):
            # fsspec's local filesystem does not create parent folders unless asked.
            options.setdefault("auto_mkdir", True)
        if options:  # zarr >= 3.2 refuses even empty ones for memory:// URLs
            kwargs["storage_options"] = options
    return zarr.open_group(path, **kwargs)


def store_exists(path: str, storage_options: dict[str, Any] | None) -> bool:
    if is_url(path):
        import fsspec

        fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
        return bool(fs.exists(root))
    return os.path.exists(path)


def remove_store(path: str, storage_options: dict[str, Any] | None) -> None:
    """Delete a partly written group (best effort: its ``complete`` flag already says so)."""
    try:
        local = local_dir(path)
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


_CONFIG_LOCK = threading.Lock()


def writable_array(g: zarr.Group, name: str) -> zarr.Array:
    """Array ``name`` of ``g``, opened to write every chunk, even one equal to the fill value.

    Zarr leaves such chunks out by default, and reads a missing chunk as the fill value;
    a daskgd dataset has every chunk, so that a missing one is known to be damage.
    """
    z = array_member(g, name)
    with_config = getattr(z, "with_config", None)
    if with_config is not None:
        return with_config({"write_empty_chunks": True})
    # zarr < 3.1: an array takes its runtime config from the global one when it is opened.
    # Setting that is not thread-safe (two writers' restores interleave), hence the lock.
    with _CONFIG_LOCK, zarr.config.set({"array.write_empty_chunks": True}):
        return array_member(g, name)


def array_member(g: zarr.Group, name: str) -> zarr.Array:
    """Member ``name`` of ``g``, which must be an array."""
    z = g[name]
    if not isinstance(z, zarr.Array):
        raise DataValidationError(f"{name!r} in the group is a {type(z).__name__}, not an array")
    return z


def rows_per_chunk(z: zarr.Array) -> int:
    """Rows per daskgd row-chunk of a Zarr array: a whole shard when sharded."""
    shards = z.shards
    return int((shards if shards is not None else z.chunks)[0])


def worker_suffix() -> str:
    """`` on worker ADDRESS`` when this runs on a Dask worker, else nothing."""
    try:
        from distributed import get_worker

        return f" on worker {get_worker().address}"
    except (ImportError, ValueError):
        return ""


def open_for_reading(p: str, storage_options: dict[str, Any] | None) -> zarr.Group:
    """The dataset's group at ``p``, opened to read its chunks (on a worker, usually).

    Raises
    ------
    DataNotFoundError
        The group is not there in this process, named with the worker it runs on.
    """
    try:
        return open_group(p, "r", storage_options)
    except FileNotFoundError as exc:
        raise DataNotFoundError(
            f"the dataset {p} does not exist{worker_suffix()} ({exc}): it was opened where it "
            "exists, but this process cannot see it (or it was moved or deleted since). Keep the "
            "dataset on a filesystem that every worker mounts at the same path, or use a URL "
            "every worker can read (s3://..., gs://...)"
        ) from exc


#: the attributes that tell one writing of a dataset from another
WRITE_ATTRS = ("write_id", "digests")


def opened_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`check_opened` compares, taken from a dataset's attributes when it is
    opened."""
    return {k: attrs[k] for k in WRITE_ATTRS if k in attrs}


def check_opened(path: str, attrs: Mapping[str, Any], opened: Mapping[str, Any] | None) -> None:
    """Raise :class:`~daskgd.errors.DataChangedError` if a dataset's attributes now,
    ``attrs``, are not those it had when it was opened (its ``write_id`` or recorded
    ``digests`` in ``opened``; None or neither attribute: nothing to compare)."""
    if not opened or all(attrs.get(k) == v for k, v in opened.items() if k in WRITE_ATTRS):
        return
    raise DataChangedError(
        f"the dataset {path} was written again, or removed, after the fit opened it: the "
        "model could mix two datasets, so it is not returned. Do not write a dataset while a "
        "fit trains on it (open it again after writing it); fit again from the start (a "
        "checkpoint written by this fit may hold mixed parameters: do not resume from it)"
    )


def is_csr_group(attrs: Mapping[str, Any]) -> bool:
    """Whether a group's attributes say that its ``X`` is stored as CSR (format version 2)."""
    return attrs.get(X_FORMAT_ATTR) == "csr"


def group_arrays(g: zarr.Group, path: str) -> dict[str, zarr.Array]:
    """The dataset's arrays by name; a CSR ``X`` as its three parts (:data:`CSR_PARTS`).

    Raises
    ------
    DataValidationError
        ``X`` or ``y`` is missing, or an optional array that was written is gone.
    """
    members = set(g.array_keys())
    csr = is_csr_group(g.attrs)
    for name in ("X", "y"):
        if name == "X" and csr:
            continue  # a subgroup, checked with its parts below
        if name not in members:
            raise DataValidationError(
                f"{path} has no array {name!r} (found: {sorted(members) or 'none'}); a daskgd "
                "dataset needs arrays 'X' and 'y' (and optionally 'sample_weight' and 'offset')"
            )
    digests = g.attrs.get("digests")
    for name in OPTIONAL_ARRAYS:
        if isinstance(digests, Mapping) and name in digests and name not in members:
            # written with weights (or offsets), which are gone: reading on without them is
            # a silent change
            raise DataValidationError(
                f"{path} has no array {name!r}{worker_suffix()}, but it was written with one "
                "(its chunks' digests are recorded): the array was deleted. Write the dataset "
                "again"
            )
    found = {name: array_member(g, name) for name in ARRAY_NAMES if name in members}
    if csr:
        for name in CSR_PARTS:
            try:
                found[name] = array_member(g, name)
            except KeyError:
                raise DataValidationError(
                    f"{path} has no array {name!r}: its X is stored as CSR (attribute "
                    f"{X_FORMAT_ATTR} = 'csr'), in the arrays {', '.join(CSR_PARTS)} of the "
                    "subgroup X. The dataset is damaged: write it again"
                ) from None
    return found


def auto_chunk_rows(n: int, d: int, itemsize: int) -> int:
    return max(1, min(n, TARGET_CHUNK_BYTES // max(1, d * itemsize)))


def cluster_client(client: Any = None) -> Any:
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


def compute_on_cluster(tasks: Sequence[Any], client: Any = None) -> list[Any]:
    """Compute dask collections on ``client``, else the default client, else dask's scheduler.

    On a cluster every task has ended, written or failed, before a failure is raised: a
    caller that then removes a half-written store must not race with writes still running.
    """
    if not tasks:
        return []
    client = cluster_client(client)
    if client is None:
        return list(dask.compute(*tasks))
    futures = client.compute(list(tasks))
    # wait for every task on *this* client (distributed.wait would use the default client,
    # which may be another one or none), then raise the first failure, if any
    client.gather(futures, errors="skip")
    return list(client.gather(futures))
