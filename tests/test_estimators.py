"""The scikit-learn estimators on a real LocalCluster: scikit-learn's checks, parity with
scikit-learn's own estimators, dask/Zarr input, pickling, partial_fit and warm starts."""

from __future__ import annotations

import pytest
from distributed import Client
from sklearn.utils.estimator_checks import parametrize_with_checks

from daskgd import (
    LinearRegression,
    LogisticRegression,
    SGDClassifier,
    SGDRegressor,
)


@pytest.fixture(scope="module", autouse=True)
def default_client(cluster):
    """Every estimator in this module fits on the session cluster (client=None)."""
    with Client(cluster, set_as_default=True) as c:
        yield c


# -- scikit-learn's estimator checks -----------------------------------------------------------

# Checks that cannot pass, with the reason (the estimators are otherwise checked in full).
_XFAIL = {
    # Class weights {0: 1000, others: 1e-4} with the hinge loss, one-vs-rest. daskgd minimises
    # the weight-normalised objective (scikit-learn SGD's), where rows of weight 1e-4 count
    # for less than the L2 penalty: the binary "class 1 vs rest" model only has to push the
    # class-0 rows below -1 and leaves the other margins free, so the argmax over the
    # one-vs-rest margins does not favour class 0 as the check demands (> 87 %). scikit-learn
    # passes through its per-sample step sizes that scale with the weight, not the optimum.
    ("SGDClassifier", "check_class_weight_classifiers"): "OvR margins under extreme weights",
}


def _expected_failed_checks(est):
    name = type(est).__name__
    return {check: why for (n, check), why in _XFAIL.items() if n == name}


@parametrize_with_checks(
    [
        SGDRegressor(verbose=0, max_iter=100, random_state=0),
        LinearRegression(verbose=0, max_iter=500),
        SGDClassifier(verbose=0, max_iter=100, random_state=0),
        LogisticRegression(verbose=0, max_iter=300),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
