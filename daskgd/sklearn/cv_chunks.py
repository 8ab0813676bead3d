"""The row-chunks of a cross-validated path, held on their workers between rounds.

A path's rounds are short (tens of milliseconds of work per worker) and there are a few
dozen of them, so the way a round reaches the workers matters: a task per worker and
round costs two trips through the scheduler (measured 21-31 ms per round on two workers),
a call to a Dask actor (:doc:`distributed:actors`) one direct trip (6-9 ms). Each worker
gets one :class:`ChunkEvaluator` actor built on the chunks it holds in memory (the
persisted futures: no copy); every round then calls its methods. Chunks mapped from their
files (:func:`~daskgd.sklearn.cv_tasks.open_chunk`) are held with their files' records, and
:meth:`EvaluatorPool.verify` checks, once the rounds are done, that no file changed under
them.

When a worker dies the actors on it are gone: :func:`call_all` then waits for Dask to
recompute the lost chunks elsewhere, builds new evaluators and repeats the round (the calls
have no side effects), a few times at most before it raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from daskgd.sklearn.cv_newton import chunk_scores, logistic_stats

__all__ = ["ChunkEvaluator", "EvaluatorPool", "by_worker"]

#: rebuilds of the evaluators after lost workers before a round gives up
MAX_REBUILDS = 3
#: seconds a rebuild waits for the lost chunks to be recomputed on the workers left
REBUILD_TIMEOUT = 300.0
#: seconds a call that could not reach its worker waits for the scheduler to remove it
LOSS_WAIT = 30.0


class ChunkEvaluator:
    """A Dask actor holding one worker's row-chunks ``(X, t, sample_weight)`` (and, for
    mapped chunks, their files' records: ``held``, lists of
    :class:`~daskgd.data.mapped.MappedChunk`)."""

    def __init__(
        self, *chunks: tuple[np.ndarray, np.ndarray, np.ndarray | None], held: Sequence[Any] = ()
    ) -> None:
        self.chunks = chunks
        self.held = held

    def verify(self) -> None:
        """Raise :class:`~daskgd.errors.DataChangedError` if a mapped chunk's file changed."""
        from daskgd.data.mapped import verify_chunk

        for records in self.held:
            for m in records:
                verify_chunk(m)

    def stats(
        self, fit_intercept: bool, wanted: list[dict[int, np.ndarray]]
    ) -> list[tuple[dict[int, tuple[float, np.ndarray]], np.ndarray] | None]:
        """:func:`~daskgd.sklearn.cv_newton.logistic_stats` of each chunk for the models it
        is asked for (None where none)."""
        return [
            logistic_stats(c, w, fit_intercept) if w else None
            for c, w in zip(self.chunks, wanted, strict=True)
        ]

    def scores(
        self, fit_intercept: bool, scoring: str | None, coefs: list[np.ndarray]
    ) -> list[tuple[float, np.ndarray]]:
        """:func:`~daskgd.sklearn.cv_newton.chunk_scores` of each chunk for its fold's models."""
        return [
            chunk_scores(c, m, fit_intercept, scoring)
            for c, m in zip(self.chunks, coefs, strict=True)
        ]


def by_worker(
    client: Any, chunks: Sequence[Any], timeout: float | None = None
) -> dict[str, list[int]]:
    """The chunks (indices) each worker holds in memory, once all are computed; "" for
    chunks no worker holds. Raises :class:`~daskgd.errors.NoWorkersError` after ``timeout``,
    and the error of a chunk that could not be read (a damaged or changed file)."""
    from distributed import wait

    from daskgd.errors import NoWorkersError

    try:
        with client.as_current():  # wait() looks for the default client
            wait(list(chunks), timeout=timeout)
    except TimeoutError:
        raise NoWorkersError(
            f"the cross-validation lost workers and its row-chunks were not read again on the "
            f"workers left within {timeout:g} s ({len(client.nthreads())} workers now); "
            "start workers or find out why they die (memory limits, killed processes)"
        ) from None
    for f in chunks:
        if f.status == "error":  # a chunk that could not be read: its own error, raised here
            f.result()
    who = client.who_has(list(chunks))
    groups: dict[str, list[int]] = {}
    for i, f in enumerate(chunks):
        holders = sorted(who.get(f.key, ()))
        groups.setdefault(holders[0] if holders else "", []).append(i)
    return groups


class EvaluatorPool:
    """One :class:`ChunkEvaluator` per worker over the persisted ``chunks`` (and ``held``:
    each chunk's mapped files, or none; see :func:`~daskgd.sklearn.cv_folds.persist_chunks`).

    Use as a context manager: the actors are released on exit.
    """

    def __init__(self, client: Any, chunks: Sequence[Any], held: Sequence[Any] = ()) -> None:
        self.client = client
        self.chunks = list(chunks)
        self.held = list(held)
        self.groups: list[tuple[Any, list[int]]] = []
        self._futures: list[Any] = []
        self._workers: list[str] = []
        self._build()

    def _build(self, timeout: float | None = None) -> None:
        self._futures = []
        groups = by_worker(self.client, self.chunks, timeout)
        for worker, idx in groups.items():
            self._futures.append(
                self.client.submit(
                    ChunkEvaluator,
                    *[self.chunks[c] for c in idx],
                    held=[self.held[c] for c in idx] if self.held else [],
                    # a preference: a worker that leaves before the actor starts must not
                    # leave it waiting for that worker forever
                    workers=[worker] if worker else None,
                    allow_other_workers=bool(worker),
                    actor=True,
                    pure=False,
                )
            )
        with self.client.as_current():  # an actor's proxy binds to the current client
            actors = self.client.gather(self._futures)
        self._workers = list(groups)
        self.groups = list(zip(actors, groups.values(), strict=True))

    def call_all(self, call: Callable[[Any, list[int]], Any]) -> list[tuple[list[int], Any]]:
        """``call(actor, chunk indices)`` on every worker's evaluator (it returns the actor
        call's future); their results, each with its chunk indices, once all are in."""
        for attempt in range(MAX_REBUILDS + 1):
            try:
                with self.client.as_current():
                    pending = [(idx, call(actor, idx)) for actor, idx in self.groups]
                    return [(idx, fut.result()) for idx, fut in pending]
            except Exception as exc:
                if attempt == MAX_REBUILDS or not self._lost_a_worker(exc):
                    raise
                self._build(REBUILD_TIMEOUT)  # the lost chunks are recomputed on the workers left
        raise AssertionError("unreachable")  # pragma: no cover

    def verify(self) -> None:
        """Check, on the workers, that no mapped chunk's file changed since it was mapped
        (:class:`~daskgd.errors.DataChangedError` if one did); nothing to do without."""
        if self.held:
            self.call_all(lambda actor, idx: actor.verify())

    def _lost_a_worker(self, exc: BaseException) -> bool:
        """Whether the call failed because a worker that held an evaluator is gone: it left
        the cluster, or the call could not reach it (then the scheduler is given up to
        ``LOSS_WAIT`` seconds to notice), or its actor was lost (a restart at the same
        address)."""
        import time

        from distributed.comm.core import CommClosedError

        def gone() -> bool:
            alive = set(self.client.nthreads())
            return any(worker and worker not in alive for worker in self._workers)

        if gone() or (isinstance(exc, RuntimeError) and "Actor was lost" in str(exc)):
            return True
        if not isinstance(exc, OSError | CommClosedError):
            return False  # an error of the computation itself: the caller's to see
        deadline = time.monotonic() + LOSS_WAIT
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if gone():
                return True
        return True  # unreachable for LOSS_WAIT s: rebuilding finds where the chunks are

    def close(self) -> None:
        self.groups = []
        self._futures = []
        self.chunks, self.held = [], []  # a pool kept by a traceback holds no worker memory

    def __enter__(self) -> EvaluatorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
