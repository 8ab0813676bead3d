"""daskgd: distributed gradient descent for linear models on Dask."""

from typing import TYPE_CHECKING

from daskgd._version import __version__

# Every name loads on first access: the scheduler unpickles daskgd's plugin and needs only
# daskgd.parameter_server (and daskgd.objective); workers need the worker part; scikit-learn
# (about a second to import) only the estimators.
_LAZY = {
    "Dataset": "daskgd.data",
    "FeatureBlocks": "daskgd.data",
    "concat_features": "daskgd.data",
    "as_dataset": "daskgd.data",
    "load_chunk": "daskgd.data",
    "open_zarr": "daskgd.data",
    "write_zarr": "daskgd.data",
    "FeatureHashing": "daskgd.data",
    "hash_features": "daskgd.data",
    "hash_frame": "daskgd.data",
    "make_classification": "daskgd.data.synthetic",
    "make_regression": "daskgd.data.synthetic",
    "make_sparse_classification": "daskgd.data.sparse_synthetic",
    "make_sparse_regression": "daskgd.data.sparse_synthetic",
    "FitResult": "daskgd.driver",
    "FitSettings": "daskgd.driver",
    "fit": "daskgd.driver",
    "fit_async": "daskgd.driver",
    "history_from_json": "daskgd.history",
    "history_to_dict": "daskgd.history",
    "history_to_json": "daskgd.history",
    "load_model": "daskgd.io",
    "save_model": "daskgd.io",
    "plot_history": "daskgd.plot",
    "GammaRegressor": "daskgd.sklearn",
    "LinearRegression": "daskgd.sklearn",
    "LogisticRegression": "daskgd.sklearn",
    "ElasticNetCV": "daskgd.sklearn",
    "LogisticRegressionCV": "daskgd.sklearn",
    "RidgeCV": "daskgd.sklearn",
    "PoissonRegressor": "daskgd.sklearn",
    "SGDClassifier": "daskgd.sklearn",
    "SGDRegressor": "daskgd.sklearn",
    "TweedieRegressor": "daskgd.sklearn",
}

if TYPE_CHECKING:  # the names as type checkers and editors see them
    from daskgd.data import (
        Dataset,
        FeatureBlocks,
        FeatureHashing,
        as_dataset,
        concat_features,
        hash_features,
        hash_frame,
        load_chunk,
        open_zarr,
        write_zarr,
    )
    from daskgd.data.sparse_synthetic import make_sparse_classification, make_sparse_regression
    from daskgd.data.synthetic import make_classification, make_regression
    from daskgd.driver import FitResult, FitSettings, fit, fit_async
    from daskgd.history import history_from_json, history_to_dict, history_to_json
    from daskgd.io import load_model, save_model
    from daskgd.plot import plot_history
    from daskgd.sklearn import (
        ElasticNetCV,
        GammaRegressor,
        LinearRegression,
        LogisticRegression,
        LogisticRegressionCV,
        PoissonRegressor,
        RidgeCV,
        SGDClassifier,
        SGDRegressor,
        TweedieRegressor,
    )


#: the parts, loaded on first access too (``import daskgd; daskgd.data.open_zarr``)
_PARTS = (
    "checkpoint", "cli", "cluster", "data", "driver", "errors", "history", "io", "kernels",
    "objective", "parameter_server", "plot", "progress", "sklearn", "worker",
)  # fmt: skip


def __getattr__(name: str) -> object:
    if name in _PARTS:
        import importlib

        return importlib.import_module(f"daskgd.{name}")
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later accesses skip this function
        return value
    raise AttributeError(f"module 'daskgd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_PARTS))


__all__ = [
    "Dataset",
    "ElasticNetCV",
    "FeatureBlocks",
    "FeatureHashing",
    "FitResult",
    "FitSettings",
    "GammaRegressor",
    "LinearRegression",
    "LogisticRegression",
    "LogisticRegressionCV",
    "PoissonRegressor",
    "RidgeCV",
    "SGDClassifier",
    "SGDRegressor",
    "TweedieRegressor",
    "__version__",
    "as_dataset",
    "concat_features",
    "fit",
    "fit_async",
    "hash_features",
    "hash_frame",
    "history_from_json",
    "history_to_dict",
    "history_to_json",
    "load_chunk",
    "load_model",
    "make_classification",
    "make_regression",
    "make_sparse_classification",
    "make_sparse_regression",
    "open_zarr",
    "plot_history",
    "save_model",
    "write_zarr",
]
