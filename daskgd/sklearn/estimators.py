"""The four estimators under their former module name (``daskgd.sklearn`` is the home)."""

from daskgd.sklearn.classification import LogisticRegression, SGDClassifier
from daskgd.sklearn.regression import LinearRegression, SGDRegressor

__all__ = ["LinearRegression", "LogisticRegression", "SGDClassifier", "SGDRegressor"]
