"""Datasets: Zarr groups of ``X``, ``y``, ``sample_weight`` and ``offset`` chunked by rows;
``X`` dense, or sparse (CSR, :mod:`~daskgd.data.sparse_store`).

Opening, checking, reading, converting and writing them, and synthetic data. The modules,
lowest first: :mod:`~daskgd.data.store` (paths, groups, running on a cluster),
:mod:`~daskgd.data.chunkfiles` (one chunk file, checked), :mod:`~daskgd.data.csr` (CSR
blocks in memory), :mod:`~daskgd.data.sparse_store` (the CSR layout in Zarr),
:mod:`~daskgd.data.chunkio` (checked chunk reads), :mod:`~daskgd.data.checks` (structure
and values), :mod:`~daskgd.data.trust` (the record of a check), :mod:`~daskgd.data.dataset`
(:class:`Dataset`), :mod:`~daskgd.data.opening` (:func:`open_zarr`),
:mod:`~daskgd.data.convert` (:func:`as_dataset`), :mod:`~daskgd.data.write`
(:func:`write_zarr`; :mod:`~daskgd.data.staging`, the atomic write of a group;
:mod:`~daskgd.data.sparse_write`, its CSR part), :mod:`~daskgd.data.synthetic` and
:mod:`~daskgd.data.sparse_synthetic`; :mod:`~daskgd.data.hashing` (:func:`hash_features`:
DataFrames hashed into sparse datasets, by :mod:`~daskgd.data.feature_hashing`);
:mod:`~daskgd.data.columns` (feature partitioning: column ranges of a dense ``X`` stored
with ``chunk_cols``, and :func:`concat_features`, datasets side by side).
"""

from daskgd.data.checks import MAX_CLASSES, check_dense, no_classes_reason
from daskgd.data.chunkio import load_chunk, read_row_arrays, read_row_chunks
from daskgd.data.columns import FeatureBlocks, column_blocks, concat_features, read_columns
from daskgd.data.convert import as_dataset
from daskgd.data.csr import canonical_csr, is_sparse_array
from daskgd.data.dataset import Dataset
from daskgd.data.feature_hashing import FeatureHashing
from daskgd.data.hashing import hash_features, hash_frame
from daskgd.data.opening import open_zarr
from daskgd.data.staging import DEFAULT_COMPRESSOR, DatasetWrite
from daskgd.data.store import (
    DENSE_FORMAT_VERSION,
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
    "DENSE_FORMAT_VERSION",
    "FORMAT_VERSION",
    "MAX_CLASSES",
    "Dataset",
    "DatasetWrite",
    "FeatureBlocks",
    "FeatureHashing",
    "as_dataset",
    "auto_chunk_rows",
    "canonical_csr",
    "check_dense",
    "cluster_client",
    "column_blocks",
    "compute_on_cluster",
    "concat_features",
    "group_arrays",
    "hash_features",
    "hash_frame",
    "is_sparse_array",
    "load_chunk",
    "no_classes_reason",
    "open_group",
    "open_zarr",
    "read_columns",
    "read_row_arrays",
    "read_row_chunks",
    "rows_per_chunk",
    "store_path",
    "write_zarr",
]
