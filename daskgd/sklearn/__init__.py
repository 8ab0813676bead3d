"""scikit-learn estimators trained by daskgd."""

from daskgd.sklearn.estimators import (
    LinearRegression,
    LogisticRegression,
    SGDClassifier,
    SGDRegressor,
)

__all__ = ["LinearRegression", "LogisticRegression", "SGDClassifier", "SGDRegressor"]
