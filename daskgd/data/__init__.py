"""Datasets: Zarr groups of ``X``, ``y`` and ``sample_weight`` chunked by rows.

Opening, checking, reading, converting and writing them, and synthetic data.
"""

from daskgd.data.dataset import (
    DEFAULT_COMPRESSOR,
    FORMAT_VERSION,
    MAX_CLASSES,
    Dataset,
    DatasetWrite,
    as_dataset,
    load_chunk,
    no_classes_reason,
    open_zarr,
    write_zarr,
)

__all__ = [
    "DEFAULT_COMPRESSOR",
    "FORMAT_VERSION",
    "MAX_CLASSES",
    "Dataset",
    "DatasetWrite",
    "as_dataset",
    "load_chunk",
    "no_classes_reason",
    "open_zarr",
    "write_zarr",
]
