"""Opening a dataset stored as a Zarr group: :func:`open_zarr`.

The group's structure (arrays, shapes, dtypes, row-chunks, format version, completeness)
is always checked; its values are checked once: a group that daskgd wrote and checked
carries a record of that check (:mod:`daskgd.data.trust`), trusted while the group is
unchanged; any other group is scanned.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import zarr

from daskgd.data.checks import (
    Task,
    check_dtype_1d,
    check_dtype_X,
    check_format_attrs,
    check_shapes,
)
from daskgd.data.chunkio import CheckedRows, recorded_digests
from daskgd.data.dataset import Dataset
from daskgd.data.sparse_store import CSRChunks
from daskgd.data.store import (
    check_storage_options,
    cluster_client,
    group_arrays,
    is_csr_group,
    open_group,
    rows_per_chunk,
    store_exists,
    store_path,
)
from daskgd.data.trust import trusted_record
from daskgd.errors import DataValidationError

__all__ = ["open_zarr"]


def open_zarr(
    path: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    validate: bool | Literal["full"] = True,
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
    validate : bool or "full", default True
        Check the values: NaN/inf in ``X``, ``y`` and ``offset``, negative, non-finite or
        all-zero weights. A group that daskgd wrote (:func:`~daskgd.data.write_zarr`, the synthetic
        generators) records the check it passed when written (attribute ``checked``), and
        that record is trusted while the group is unchanged (:mod:`daskgd.data.trust`):
        nothing is read. Any other group is scanned, one task per row-chunk. ``"full"``
        scans whatever the record says; False checks nothing. Shapes, dtypes, chunks,
        completeness and the format version are always checked.
    task : {"regression", "classification"}, optional
        Also check that ``y`` fits this task. With "classification" and a scan, the class
        labels are found in the same pass; with "regression" (or none) ``y`` is never
        scanned for labels (:attr:`Dataset.classes_` finds them when first read).
    client : distributed.Client, optional
        Where the scan runs; default: dask's current scheduler.

    Returns
    -------
    Dataset
        Lazy dask arrays over whole row-chunks (whole shards for sharded arrays), one chunk
        along the columns; when ``X``'s columns are stored in several chunks
        (``write_zarr(..., chunk_cols=...)``) their widths are :attr:`Dataset.column_chunks`
        and each row-chunk is read from all of them. A sparse
        group (format version 2, ``X`` stored as CSR: :mod:`~daskgd.data.sparse_store`)
        gives a sparse Dataset (:attr:`Dataset.is_sparse`): ``X``'s blocks are canonical
        ``scipy.sparse.csr_matrix``, one per row-chunk, each read and checked on its own.

    Raises
    ------
    IncompleteDatasetError
        The group's write did not finish.
    DataValidationError
        Missing arrays, a newer format version, bad shapes/dtypes/chunks or values; with
        a scan, a missing, damaged or altered chunk (every chunk is read, on the cluster;
        the dataset's arrays refuse such a chunk whenever they are read, trusted or not).
    FileNotFoundError
        Nothing at ``path``. A relative path, ``~`` or ``file://`` URL is made absolute
        here: the workers read the same folder whatever their working directory.
    DataNotFoundError
        With ``validate``: a worker cannot see the dataset at that path.
    """
    if validate not in (True, False, "full"):
        raise ValueError(f"validate must be True, False or 'full', got {validate!r}")
    p = store_path(path)
    check_storage_options(p, storage_options)
    if not store_exists(p, storage_options):
        raise FileNotFoundError(f"no Zarr dataset at {p!r}")
    try:
        g = open_group(p, "r", storage_options)
    except (FileNotFoundError, ValueError) as exc:  # zarr: GroupNotFound, ContainsArray
        raise DataValidationError(f"{p!r} is not a Zarr v3 group: {exc}") from exc
    attrs = dict(g.attrs)
    check_format_attrs(attrs, p)
    arrays = group_arrays(g, p)
    csr = CSRChunks(g, p, attrs) if is_csr_group(attrs) else None
    zX, zy, zw = arrays.get("X"), arrays["y"], arrays.get("sample_weight")
    zo = arrays.get("offset")
    if zX is not None:
        x_shape, x_dtype, rows = tuple(zX.shape), np.dtype(zX.dtype), rows_per_chunk(zX)
    else:
        assert csr is not None  # group_arrays: X is an array or a CSR subgroup
        x_shape, x_dtype, rows = csr.shape, csr.dtype, csr.chunk_rows
    check_shapes(x_shape, zy.shape, None if zw is None else zw.shape,
                 None if zo is None else zo.shape)  # fmt: skip
    check_dtype_X(x_dtype)
    check_dtype_1d("y", np.dtype(zy.dtype))
    for name, z in (("y", zy), ("sample_weight", zw), ("offset", zo)):
        if z is not None and rows_per_chunk(z) != rows:
            raise DataValidationError(
                f"{p}: {name} is stored in row-chunks of {rows_per_chunk(z)} rows but X in "
                f"chunks of {rows}; rewrite the dataset with write_zarr(..., chunk_rows=...) "
                "so all arrays share one row-chunking"
            )
    n, d = x_shape
    # from_array over whole shards/chunks (not da.from_zarr: dask/dask#12586). The names
    # come from the write id; a group from another tool has none, so it gets fresh names.
    # Each chunk is read checked (chunkio.CheckedRows): zarr alone reads a missing chunk,
    # or a store a worker cannot see, as fill values.
    n_chunks = -(-int(n) // rows)

    def checked(z: zarr.Array, name: str) -> CheckedRows:
        return CheckedRows(z, name, p, rows, recorded_digests(attrs, name, n_chunks))

    token = dask.base.tokenize(p, attrs.get("write_id") or uuid.uuid4().hex)
    if zX is not None:
        X = da.from_array(checked(zX, "X"), chunks=(rows, d), name=f"daskgd-X-{token}")
    else:
        assert csr is not None
        X = csr.dask_array(f"daskgd-X-{token}")
    y = da.from_array(checked(zy, "y"), chunks=(rows,), name=f"daskgd-y-{token}")
    w = None
    if zw is not None:
        check_dtype_1d("sample_weight", np.dtype(zw.dtype))
        w = da.from_array(checked(zw, "sample_weight"), chunks=(rows,), name=f"daskgd-w-{token}")
    o = None
    if zo is not None:
        check_dtype_1d("offset", np.dtype(zo.dtype))
        o = da.from_array(checked(zo, "offset"), chunks=(rows,), name=f"daskgd-o-{token}")
    extra: dict[str, Any] = {}
    if "classes" in attrs:
        extra["classes"] = None if attrs["classes"] is None else np.asarray(attrs["classes"])
    names = attrs.get("feature_names")
    if isinstance(names, list) and len(names) == d and all(isinstance(f, str) for f in names):
        extra["feature_names"] = names
    ds = Dataset(
        X, y, w, offset=o, path=p, storage_options=storage_options, attrs=attrs, client=client,
        nnz=None if csr is None else csr.nnz, column_chunks=_column_chunks(zX), **extra,
    )  # fmt: skip
    if validate == "full" or (validate and trusted_record(arrays, attrs) is None):
        # labels the attributes state are found again in the same pass: without a record
        # that holds, the attributes may have been edited
        stated = attrs.get("classes") is not None
        ds.validate(
            client, find_labels=stated or (task == "classification" and not ds.classes_known)
        )
    elif validate:
        ds.values_checked = True  # the record of the check at write time, still true
        if client is not None:
            # the scan would have run there, and the dataset's later passes will: a
            # scheduler without daskgd is refused here, clearly (one round trip)
            cluster_client(client)
    if task is not None:
        ds.check_task(task)
    return ds


def _column_chunks(z: zarr.Array | None) -> tuple[int, ...] | None:
    """The widths of ``X``'s column chunks (shards when sharded); None for one chunk."""
    if z is None or len(z.shape) != 2:
        return None
    d, width = int(z.shape[1]), int((z.shards or z.chunks)[1])
    if width >= d:
        return None
    return tuple(min(width, d - c) for c in range(0, d, width))
