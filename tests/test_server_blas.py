"""The parameter server's steps run on one BLAS thread (``daskgd.parameter_server.blas``).

Threaded OpenBLAS calls leave helper threads spinning on a core for about 0.1 s, which a
scheduler sharing its machine with workers takes from them; the server limits its process
to one BLAS thread while a job change runs and gives the process its setting back after.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from daskgd.parameter_server.blas import one_blas_thread


def _blas_threads() -> set[int]:
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


@pytest.fixture
def two_threads():
    with threadpool_limits(limits=2, user_api="blas"):
        if _blas_threads() != {2}:
            pytest.fail(f"BLAS would not take 2 threads here: {threadpool_info()}")
        yield


def test_one_thread_inside_and_the_setting_back_after(two_threads):
    with one_blas_thread():
        assert _blas_threads() == {1}
        with one_blas_thread():  # nested: still one, and not restored by the inner exit
            np.linalg.solve(np.eye(50) * 2.0, np.ones(50))
        assert _blas_threads() == {1}
    assert _blas_threads() == {2}


def test_overlapping_callers_restore_once_the_last_leaves(two_threads):
    """Two job changes overlap (one on the event loop, one in the thread pool) and the
    first to start ends first: the process keeps one thread until the second ends."""
    first, second = one_blas_thread(), one_blas_thread()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert _blas_threads() == {1}
    second.__exit__(None, None, None)
    assert _blas_threads() == {2}


def test_an_error_inside_restores_the_setting(two_threads):
    with pytest.raises(ZeroDivisionError), one_blas_thread():
        raise ZeroDivisionError
    assert _blas_threads() == {2}
