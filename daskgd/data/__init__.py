"""Datasets: Zarr groups of ``X``, ``y``, ``sample_weight`` and ``offset`` chunked by rows.

Opening, checking, reading, converting and writing them, and synthetic data. The modules,
lowest first: :mod:`~daskgd.data.store` (paths, groups, running on a cluster),
:mod:`~daskgd.data.chunkio` (checked chunk reads), :mod:`~daskgd.data.checks` (structure
and values), :mod:`~daskgd.data.trust` (the record of a check), :mod:`~daskgd.data.dataset`
(:class:`Dataset`), :mod:`~daskgd.data.opening` (:func:`open_zarr`),
:mod:`~daskgd.data.convert` (:func:`as_dataset`), :mod:`~daskgd.data.write`
(:func:`write_zarr`; :mod:`~daskgd.data.staging`, the atomic write of a group),
:mod:`~daskgd.data.synthetic`.
"""

from daskgd.data.checks import MAX_CLASSES, check_dense, no_classes_reason
from daskgd.data.chunkio import load_chunk, read_row_arrays, read_row_chunks
from daskgd.data.convert import as_dataset
from daskgd.data.dataset import Dataset
from daskgd.data.opening import open_zarr
from daskgd.data.staging import DEFAULT_COMPRESSOR, DatasetWrite
from daskgd.data.store import (
    FORMAT_VERSION,
    auto_chunk_rows,
    cluster_client,
    compute_on_cluster,
    group_arrays,
    open_group,
    rows_per_chunk,
    store_path,
)
from daskgd.data.write import write_zarr

__all__ = [
    "DEFAULT_COMPRESSOR",
    "FORMAT_VERSION",
    "MAX_CLASSES",
    "Dataset",
    "DatasetWrite",
    "as_dataset",
    "auto_chunk_rows",
    "check_dense",
    "cluster_client",
    "compute_on_cluster",
    "group_arrays",
    "load_chunk",
    "no_classes_reason",
    "open_group",
    "open_zarr",
    "read_row_arrays",
    "read_row_chunks",
    "rows_per_chunk",
    "store_path",
    "write_zarr",
]
