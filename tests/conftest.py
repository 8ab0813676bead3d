"""Shared fixtures: one real LocalCluster (worker processes with nannies) per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

# scikit-learn runs its array-API estimator check (numpy namespace) only with this set; it
# must be set before scipy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import pytest
from distributed import Client, LocalCluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """A LocalCluster of 2 worker processes x 1 thread, shared by the whole session."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        memory_limit="2GiB",
    ) as c:
        yield c


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[Client]:
    """A client of the session cluster, set as dask's default scheduler for the test."""
    with Client(cluster, set_as_default=True) as c:
        yield c
