"""daskgd: distributed gradient descent for linear models on Dask."""

from daskgd._version import __version__
from daskgd.data import Dataset, as_dataset, load_chunk, open_zarr, write_zarr
from daskgd.synthetic import make_classification, make_regression

__all__ = [
    "Dataset",
    "__version__",
    "as_dataset",
    "load_chunk",
    "make_classification",
    "make_regression",
    "open_zarr",
    "write_zarr",
]
