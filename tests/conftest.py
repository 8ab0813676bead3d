"""Shared fixtures: one real LocalCluster (worker processes with nannies) per test session,
and the three- and four-worker clusters (``trio``, ``quad``) of the modules that ask for them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# scikit-learn runs its array-API estimator check (numpy namespace) only with this set; it
# must be set before scipy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import distributed.utils_test
import pytest
from _subprocess import stop_processes
from distributed import Client, LocalCluster

_check_process_leak = distributed.utils_test.check_process_leak


@contextlib.contextmanager
def _check_process_leak_if_asked(check: bool = True, **kwargs: Any) -> Iterator[None]:
    """distributed's ``gen_cluster`` check for leaked processes, only when it is asked for.

    ``gen_cluster`` terminates every child process of the test process before and after
    each test, even with ``clean_kwargs={"processes": False}``: that killed the session
    cluster's worker processes whenever a ``gen_cluster`` test ran after a test that had
    started it; their nannies restarted them, the second sweep then found the restarted
    ones ("Leaked unkillable children processes") and failed the test, and the tests that
    followed ran on restarted workers. With ``processes=False`` the test's processes are
    left alone, as the setting says.
    """
    if check:
        with _check_process_leak(check=check, **kwargs):
            yield
    else:
        yield


distributed.utils_test.check_process_leak = _check_process_leak_if_asked


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


def _local_client(n_workers: int) -> Iterator[Client]:
    """A client of a LocalCluster of ``n_workers`` worker processes x 1 thread, its own."""
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def trio() -> Iterator[Client]:
    """Three worker processes: three column blocks."""
    yield from _local_client(3)


@pytest.fixture(scope="module")
def quad() -> Iterator[Client]:
    """Four worker processes: four column blocks, or a 2 x 2 grid."""
    yield from _local_client(4)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Subprocesses a test starts (``dask scheduler``, ``dask worker``), stopped after it."""
    procs: list[subprocess.Popen] = []
    yield procs
    stop_processes(procs)


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[Client]:
    """A client of the session cluster, set as dask's default scheduler for the test."""
    with Client(cluster, set_as_default=True) as c:
        yield c


class ReliabilityTally:
    """Counts of what the reliability tests tried and survived (kills, resumes, fuzz cases...).

    Tests call ``reliability.add("worker kills (kill -9)", 1)``; with
    ``--reliability-report=PATH`` the session writes the counts as Markdown and JSON.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] += n


_TALLY = ReliabilityTally()


@pytest.fixture(scope="session")
def reliability() -> ReliabilityTally:
    """The session's :class:`ReliabilityTally`."""
    return _TALLY


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-report",
        default=None,
        help="write the reliability tests' counts to PATH.md and PATH.json",
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = session.config.getoption("--reliability-report")
    if not target or not _TALLY.counts:
        return
    base = Path(target)
    base.parent.mkdir(parents=True, exist_ok=True)
    counts = dict(sorted(_TALLY.counts.items()))
    base.with_suffix(".json").write_text(
        json.dumps({"exit_status": int(exitstatus), "counts": counts}, indent=2) + "\n"
    )
    rows = "\n".join(f"| {what} | {n:,} |" for what, n in counts.items())
    outcome = "all passed" if exitstatus == 0 else f"pytest exit status {int(exitstatus)}"
    base.with_suffix(".md").write_text(
        "# Reliability: what the tests tried and survived\n\n"
        "Command: `tox -e stress` (the reliability test files with their soak variants, "
        '`pytest -m "stress or not stress"`) '
        f"({outcome}).\n\n| tried | count |\n|---|---|\n{rows}\n"
    )
