"""daskgd: distributed gradient descent for linear models on Dask."""

from daskgd._version import __version__

__all__ = ["__version__"]
