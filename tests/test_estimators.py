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
    # Mini-batch SGD draws its batches from the rows each worker holds: duplicating rows or
    # zero-weighting them changes the batches, so the fits differ (scikit-learn's own
    # SGDRegressor/SGDClassifier carry the same expected failure).
    ("SGDRegressor", "check_sample_weight_equivalence_on_dense_data"): "mini-batches differ",
    ("SGDClassifier", "check_sample_weight_equivalence_on_dense_data"): "mini-batches differ",
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
