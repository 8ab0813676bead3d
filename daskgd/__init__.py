"""daskgd: distributed gradient descent for linear models on Dask."""

from daskgd._version import __version__
from daskgd.data import Dataset, as_dataset, load_chunk, open_zarr, write_zarr
from daskgd.data.synthetic import make_classification, make_regression
from daskgd.driver import FitResult, FitSettings, fit, fit_async
from daskgd.history import history_from_json, history_to_dict, history_to_json
from daskgd.io import load_model, save_model
from daskgd.plot import plot_history

# The estimators import scikit-learn (about a second); workers and the scheduler import
# daskgd too and never need them, so they load on first access.
_LAZY = {
    name: "daskgd.sklearn"
    for name in ("LinearRegression", "LogisticRegression", "SGDClassifier", "SGDRegressor")
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'daskgd' has no attribute {name!r}")


__all__ = [
    "Dataset",
    "FitResult",
    "FitSettings",
    "LinearRegression",
    "LogisticRegression",
    "SGDClassifier",
    "SGDRegressor",
    "__version__",
    "as_dataset",
    "fit",
    "fit_async",
    "history_from_json",
    "history_to_dict",
    "history_to_json",
    "load_chunk",
    "load_model",
    "make_classification",
    "make_regression",
    "open_zarr",
    "plot_history",
    "save_model",
    "write_zarr",
]
