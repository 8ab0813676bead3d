"""scikit-learn estimators trained by daskgd's distributed engine.

:class:`SGDRegressor`, :class:`SGDClassifier`, :class:`LinearRegression` and
:class:`LogisticRegression` (and the GLMs :class:`PoissonRegressor`, :class:`GammaRegressor`,
:class:`TweedieRegressor`) follow scikit-learn's API (they derive from its ``BaseEstimator``
and mixins, so ``clone``, ``Pipeline``, ``GridSearchCV`` and ``check_estimator`` work) and
delegate the optimisation to :func:`daskgd.driver.fit`: the data is cut into row-chunks, one
training task per Dask worker computes gradients with the compiled kernels, and the parameter
server on the scheduler applies the updates.

Input kinds
    ``fit`` takes numpy arrays and pandas DataFrames (validated like scikit-learn does),
    dask arrays and dask DataFrames, a :class:`daskgd.Dataset` or a Zarr path/URL (then
    ``y`` may be omitted: the stored targets and weights are used), and, with
    ``partition="features"``, groups holding the same rows joined by
    :func:`daskgd.concat_features` (trained on the first group's targets; predictions sum
    the groups' margins: :mod:`~daskgd.sklearn.feature_input`). ``feature_names_in_``
    comes from any frame. ``predict``, ``predict_proba``, ``decision_function`` and
    ``score`` return numpy for in-memory input and lazy dask arrays for dask/Dataset/Zarr
    input.

The modules
    :mod:`~daskgd.sklearn.base` (the cluster, the engine call, fitted attributes),
    :mod:`~daskgd.sklearn.params` (declared parameter constraints),
    :mod:`~daskgd.sklearn.inputs` (data intake), :mod:`~daskgd.sklearn.feature_input`
    (concat_features data), :mod:`~daskgd.sklearn.regression`,
    :mod:`~daskgd.sklearn.classification`, :mod:`~daskgd.sklearn.glm` (Poisson, Gamma and
    Tweedie regression with offsets; :mod:`~daskgd.sklearn.families`, their losses),
    :mod:`~daskgd.sklearn.labels`,
    :mod:`~daskgd.sklearn.early_stopping`.

Every estimator loads on first access: the workers of a cross-validation unpickle functions
of this package (:mod:`~daskgd.sklearn.cv_tasks`, :mod:`~daskgd.sklearn.cv_chunks`) that need
numpy and the kernels, not scikit-learn (about 1.5 s to import on a fresh worker).
"""

from typing import TYPE_CHECKING

_LAZY = {
    "ElasticNetCV": "daskgd.sklearn.cv_ridge",
    "GammaRegressor": "daskgd.sklearn.glm",
    "LinearRegression": "daskgd.sklearn.regression",
    "LogisticRegression": "daskgd.sklearn.classification",
    "LogisticRegressionCV": "daskgd.sklearn.cv_logistic",
    "PoissonRegressor": "daskgd.sklearn.glm",
    "RidgeCV": "daskgd.sklearn.cv_ridge",
    "SGDClassifier": "daskgd.sklearn.classification",
    "SGDRegressor": "daskgd.sklearn.regression",
    "TweedieRegressor": "daskgd.sklearn.glm",
}

if TYPE_CHECKING:  # the names as type checkers and editors see them
    from daskgd.sklearn.classification import LogisticRegression, SGDClassifier
    from daskgd.sklearn.cv_logistic import LogisticRegressionCV
    from daskgd.sklearn.cv_ridge import ElasticNetCV, RidgeCV
    from daskgd.sklearn.glm import GammaRegressor, PoissonRegressor, TweedieRegressor
    from daskgd.sklearn.regression import LinearRegression, SGDRegressor

__all__ = [
    "ElasticNetCV",
    "GammaRegressor",
    "LinearRegression",
    "LogisticRegression",
    "LogisticRegressionCV",
    "PoissonRegressor",
    "RidgeCV",
    "SGDClassifier",
    "SGDRegressor",
    "TweedieRegressor",
]


def __getattr__(name: str) -> object:
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later accesses skip this function
        return value
    try:  # a submodule, as after an eager import (``daskgd.sklearn.glm``)
        return importlib.import_module(f"daskgd.sklearn.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"daskgd.sklearn.{name}":
            raise  # a submodule's own missing dependency
        raise AttributeError(f"module 'daskgd.sklearn' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
