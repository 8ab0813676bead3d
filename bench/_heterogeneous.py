"""Heterogeneous clusters for the placement tests and benchmarks: workers with their own
threads, declared resources and memory limits, and workers made slower at the kernels.

Not part of daskgd: a real cluster is heterogeneous by itself. Here all workers share one
machine, so a slow worker is played by :class:`Throttle`, a worker plugin that sleeps after
each gradient kernel call (and each batch's preparation) for ``factor - 1`` times the
call's own time. A throttled worker
computes at ``1 / factor`` of its speed without using more CPU (a sleep, not a busy loop),
which keeps the other workers' speed as it was on a machine with few cores.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import cloudpickle
from distributed import Nanny, Scheduler, SpecCluster, WorkerPlugin

__all__ = ["KERNELS", "Throttle", "heterogeneous_cluster"]

# the plugin travels to worker processes that cannot import this folder: by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: The kernels a training task calls for its gradients (looked up in ``daskgd.kernels`` on
#: every task, so patching the module's attributes reaches them).
KERNELS = ("grad_loss", "grad_hess")
#: A rank's batch preparation (each epoch's permutation of its rows, in mini-batch mode):
#: a slow machine is slow at that too
BATCHES = ("InMemoryBatches", "pieces")


class Throttle(WorkerPlugin):
    """Make the named workers slower at the gradient kernels.

    Parameters
    ----------
    factors : mapping of str to float
        Worker name (a :class:`SpecCluster`'s spec key) to how many times slower it
        computes (at least 1): each kernel call is followed by a sleep of ``factor - 1``
        times its duration. Workers not named are left as they are.
    """

    name = "daskgd-bench-throttle"

    def __init__(self, factors: dict[str, float]) -> None:
        bad = {n: f for n, f in factors.items() if not f >= 1}
        if bad:
            raise ValueError(f"factors must be at least 1, got {bad}")
        self.factors = {str(n): float(f) for n, f in factors.items()}
        self._saved: dict[str, Any] = {}

    def setup(self, worker: Any) -> None:
        factor = self.factors.get(str(worker.name))
        if factor is None:
            return
        import daskgd.kernels as kernels
        import daskgd.worker.batches as batches

        for attr in KERNELS:
            original = getattr(kernels, attr)
            self._saved[attr] = original
            setattr(kernels, attr, _slowed(original, factor - 1.0))
        cls = getattr(batches, BATCHES[0])
        self._saved["pieces"] = getattr(cls, BATCHES[1])
        setattr(cls, BATCHES[1], _slowed(self._saved["pieces"], factor - 1.0))

    def teardown(self, worker: Any) -> None:
        import daskgd.kernels as kernels
        import daskgd.worker.batches as batches

        pieces = self._saved.pop("pieces", None)
        if pieces is not None:
            setattr(getattr(batches, BATCHES[0]), BATCHES[1], pieces)
        for attr, original in self._saved.items():
            setattr(kernels, attr, original)
        self._saved.clear()


def _slowed(kernel: Any, extra: float) -> Any:
    """``kernel``, followed by a sleep of ``extra`` times its duration."""

    def slowed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        out = kernel(*args, **kwargs)
        time.sleep(extra * (time.perf_counter() - started))
        return out

    return slowed


def heterogeneous_cluster(workers: dict[str, dict[str, Any]], **kwargs: Any) -> SpecCluster:
    """A cluster of worker processes (with nannies), each with its own options.

    ``workers`` maps a worker's name to its ``Nanny`` options (``nthreads``, default 1;
    ``resources``; ``memory_limit``, default Nanny's ``"auto"``: the machine's memory times
    the worker's share of its cores).
    ``kwargs`` go to :class:`SpecCluster` (e.g. ``asynchronous=True``).
    """
    spec = {
        name: {"cls": Nanny, "options": {"nthreads": 1, "silence_logs": 40, **options}}
        for name, options in workers.items()
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    return SpecCluster(workers=spec, scheduler=scheduler, **kwargs)
