"""The parameter server's linear algebra runs on one BLAS thread.

The scheduler's process shares its machine with workers (a ``LocalCluster`` started in
the user's process always does), and OpenBLAS's helper threads spin on a core for about
0.1 s after each call they take part in: a 100 x 100 ``np.linalg.solve``, an
``eigvalsh`` or a dot of 10^6 values each used 0.10 s of CPU in the sleep that followed
with two threads, none with one. On two cores that took a worker's core after every
Newton step: with the scheduler in the user's process (a ``LocalCluster``) and two BLAS
threads there, a logistic fit (1,000,000 x 100, 8 passes) took 1.38-1.48 s and 0.7-0.9 s
of that process's CPU; on one thread for the steps, 1.06-1.16 s and 0.12-0.15 s, as with
one thread throughout (``bench/NOTES.md``). The server's steps are small or bound by
memory, so one thread loses them nothing.

:func:`one_blas_thread` limits the whole process (OpenBLAS has no per-call setting) while
any job change runs; the last one out restores what the process had.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["one_blas_thread"]

_lock = threading.Lock()
_depth = 0
_limiter: Any = None
_controller: Any = None


def _controller_of_this_process() -> Any:
    global _controller
    if _controller is None:
        import scipy.linalg.blas  # noqa: F401  scipy's own BLAS (the L-BFGS steps), loaded first
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """While any caller is inside, BLAS in this process runs on one thread."""
    global _depth, _limiter
    with _lock:
        if _depth == 0:
            _limiter = _controller_of_this_process().limit(limits=1, user_api="blas")
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _limiter.restore_original_limits()
                _limiter = None
