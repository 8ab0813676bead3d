"""Tree reductions of a feature-partitioned fit's partial margins, worker to worker.

With ``reduction="tree"`` the big all-reduces of a feature-partitioned fit (the ``n``-long
sums of the blocks' partial margins ``X_k w_k``) do not go through the scheduler: the
ranks of the group form a binary tree in rank order (the ``i``-th member's children are
the ``2i + 1``-th and ``2i + 2``-th, its parent the ``(i - 1) // 2``-th). A rank waits for
its children's partial sums, adds them to its own part in that fixed order (so that the
total is the same, bit for bit, for a fixed number of ranks) and sends the sum to its
parent; the root sends the total to every member at once. The small reductions (the ``"stats"``
that carry the stop rules and the backups, the dot products, the line search's numbers)
stay on the coordinator (:mod:`daskgd.parameter_server.blocks`), which also answers the
tree's questions (``daskgd_blocks_tree``): where each rank runs, and whether a wait should
go on.

:class:`TreeReducer` is the worker plugin (name ``daskgd-tree``) whose handler
``daskgd_tree_part`` (``job, generation, seq, group, src, dst, value``) stores a part or a
total sent to a rank running on that worker; ``daskgd_tree_drop`` (``job, rank=None``)
frees a job's. :class:`TreeLink` is one rank's end, used by its training task (a thread
of the worker): it sends through the worker's connection pool (``worker.rpc``), arrays
wrapped in :class:`distributed.protocol.ToPickle`. Messages are keyed by ``(job,
generation, seq, group, dst, src)``: a part of an older generation (before a restart) is
dropped on arrival, and the parts a new generation finds are its own.

Faults: a rank waits for a part in slices of :data:`TREE_WAIT` seconds and, after each,
asks the coordinator (the ``ask`` callback): a new generation (a dead worker's task was
rerun and joined) raises the training task's restart, a stopped job its stop, and a wait
past the job's ``member_timeout`` fails the job naming the silent rank. A send that fails
(the peer's worker is gone: ``OSError``, distributed's ``CommClosedError``, or no reply in
time) is retried after the same question.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from distributed.protocol import ToPickle

from daskgd.parameter_server.checks import error
from daskgd.parameter_server.shard import HandlerPlugin

__all__ = [
    "TREE_MIN_ROWS",
    "TREE_PLUGIN_NAME",
    "TREE_WAIT",
    "TreeLink",
    "TreeReducer",
    "tree_neighbours",
]

TREE_PLUGIN_NAME = "daskgd-tree"
#: ``reduction="auto"`` sums the margins along the tree from this many rows: measured on 4
#: worker processes (bench/results/reduction.md), the coordinator took 7% less time per
#: iteration at 200,000 rows, the tree 9% and 7% less at 1,000,000 and 4,000,000 on a
#: quiet machine, and about 45% less where the scheduler's process was busy.
TREE_MIN_ROWS = 1_000_000
#: Seconds a rank waits for a part before it asks the coordinator whether to go on.
TREE_WAIT = 2.0
#: Seconds between two tries of a send that failed (the coordinator is asked between them).
SEND_RETRY = 0.5
#: Bytes per second a send is given at least, on top of :data:`TREE_WAIT`, before it
#: counts as failed (loopback moves a few GB/s; a slow network far more than this).
SEND_RATE = 10e6

#: ``ask(silent, waited, unreachable) -> workers``: the coordinator's answer to a wait (see
#: the module docstring); raises to restart or stop.
Ask = Callable[[list[int], float, bool], list[Any]]
#: what a message is stored under: ``(job, generation, seq, group, dst, src)``
Key = tuple[str, int, int, str, int, int]


def tree_neighbours(rank: int, members: list[int]) -> tuple[int | None, list[int]]:
    """``rank``'s parent (None at the root) and children in the binary tree of
    ``members`` (ranks in rank order: the ``i``-th member's children are the ``2i + 1``-th
    and ``2i + 2``-th).

    Examples
    --------
    >>> tree_neighbours(1, [0, 1, 2, 3])
    (0, [3])
    >>> tree_neighbours(0, [0, 1, 2, 3])
    (None, [1, 2])
    """
    i = members.index(rank)
    parent = members[(i - 1) // 2] if i else None
    return parent, [members[c] for c in (2 * i + 1, 2 * i + 2) if c < len(members)]


class TreeReducer(HandlerPlugin[Any]):
    """The worker half of tree reductions: an inbox of the parts sent to the ranks that
    run on this worker (see the module docstring).

    Registered on every worker by the driver of a fit with ``reduction="tree"``
    (``Client.register_plugin``, idempotent by name); workers that join later get it too.
    """

    name = TREE_PLUGIN_NAME
    prefix = "tree"
    ops = ("part", "drop")
    noun = "tree part"

    def __init__(self) -> None:
        super().__init__()
        self.inbox: dict[Key, np.ndarray] = {}
        self.latest: dict[str, int] = {}  # job -> the newest generation heard of
        self.arrived = asyncio.Event()  # set (and replaced) when a part is stored

    def teardown(self, worker) -> None:
        super().teardown(worker)
        self.inbox.clear()
        self.latest.clear()

    # -- handlers ------------------------------------------------------------------
    async def part(self, job, generation, seq, group, src, dst, value):
        """Store ``value``, rank ``src``'s message to rank ``dst`` (a partial sum going up,
        or the total coming down) in reduction ``seq`` of ``group`` in ``generation``."""
        ints = (generation, seq, src, dst)
        if not (isinstance(job, str) and isinstance(group, str)) or not all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in ints
        ):
            ids = (job, generation, seq, group, src, dst)
            return error("part: job and group must be strings; generation, seq, src and dst "
                         f"integers >= 0; got {ids!r}")  # fmt: skip
        if not (isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype == np.float64):
            got = getattr(value, "dtype", type(value).__name__)
            return error(f"part: value must be a 1-d float64 array, got {got}")
        if generation < self.latest.get(job, -1):
            return {"status": "OK"}  # a restart made it moot: dropped
        self.advance(job, generation)
        self.inbox[(job, generation, seq, group, dst, src)] = value
        self.arrived.set()
        self.arrived = asyncio.Event()
        return {"status": "OK"}

    async def drop(self, job, rank=None):
        """Free the parts of ``job`` (sent to ``rank`` only, when given) on this worker."""
        for key in [k for k in self.inbox if k[0] == job and rank in (None, k[4])]:
            del self.inbox[key]
        if rank is None:
            self.latest.pop(job, None)
        return {"status": "OK"}

    # -- what the ranks on this worker call (on its event loop) ------------------------
    def advance(self, job: str, generation: int) -> None:
        """``generation`` started: the parts of older ones will never be read."""
        if generation > self.latest.get(job, -1):
            self.latest[job] = generation
            for key in [k for k in self.inbox if k[0] == job and k[1] < generation]:
                del self.inbox[key]

    async def take(self, keys: list[Key], timeout: float) -> dict[Key, np.ndarray]:
        """The parts under ``keys``, removed from the inbox, once all arrived or after
        ``timeout`` seconds (then those that did)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not all(k in self.inbox for k in keys) and loop.time() < deadline:
            try:
                await asyncio.wait_for(self.arrived.wait(), deadline - loop.time())
            except TimeoutError:
                break
        return {k: self.inbox.pop(k) for k in keys if k in self.inbox}


class TreeLink:
    """One rank's end of the tree reductions of ``job``, for its training task (a thread
    of ``worker``; see the module docstring).

    Parameters
    ----------
    worker : distributed.Worker
        The worker the task runs on; it must have the :class:`TreeReducer` plugin.
    job : str
    rank : int
    ask : callable
        ``ask(silent, waited, unreachable) -> workers``: the coordinator's answer to a
        wait (every rank's worker address, by rank); it raises to restart or stop.

    Raises
    ------
    RuntimeError
        When the worker has no :class:`TreeReducer` (the driver registers it).
    """

    def __init__(self, worker: Any, job: str, rank: int, ask: Ask) -> None:
        plugin = getattr(worker, "plugins", {}).get(TREE_PLUGIN_NAME)
        if plugin is None:
            raise RuntimeError(
                f"worker {worker.address} has no {TREE_PLUGIN_NAME!r} plugin: register "
                "daskgd.parameter_server.block_tree.TreeReducer() on the workers "
                "(fit(..., reduction='tree') does)"
            )
        self.plugin: TreeReducer = plugin
        self.worker, self.job, self.rank, self.ask = worker, job, rank, ask
        self.generation = -1
        self.workers: list[Any] = []  # by rank, in the current generation
        #: bytes this rank sent to other ranks, and the reductions it took part in
        self.bytes = 0
        self.calls = 0

    def _sync(self, fn: Any, *args: Any) -> Any:
        from distributed.utils import sync

        return sync(self.worker.loop, fn, *args)

    def reduce(
        self, value: np.ndarray, generation: int, seq: int, group: str, members: list[int]
    ) -> np.ndarray:
        """The sum of ``value`` over the ranks ``members`` (this rank among them), for
        reduction ``seq`` of ``group`` in ``generation``: the same array on every rank."""
        if generation != self.generation:
            self.generation, self.workers = generation, []
            self._sync(self._advance, generation)
        self.calls += 1
        parent, children = tree_neighbours(self.rank, members)
        key = (self.job, generation, seq, group)
        total = np.array(value, dtype=np.float64)  # a copy: the caller's part stays as it is
        if children:
            parts = self._receive(key, children)
            for c in children:  # a fixed order: the same sum for the same ranks
                total += parts[c]
        if parent is not None:
            self._send(key, [parent], total)
            return self._receive(key, [members[0]])[members[0]]
        if len(members) > 1:
            # the total straight from the root to every member: one hop, not the tree's
            # depth (what the benchmark measured faster on 4 ranks)
            self._send(key, members[1:], total)
        return total

    def close(self) -> None:
        """Free what is left in the inbox for this rank (an error ended the fit)."""
        self._sync(self.plugin.drop, self.job, self.rank)

    async def _advance(self, generation: int) -> None:
        self.plugin.advance(self.job, generation)

    def _receive(self, key: tuple, sources: list[int]) -> dict[int, np.ndarray]:
        """The parts ``sources`` send this rank, waiting in slices (see the module)."""
        started = time.monotonic()
        got: dict[int, np.ndarray] = {}
        while True:
            want = [(*key, self.rank, s) for s in sources if s not in got]
            for k, v in self._sync(self.plugin.take, want, TREE_WAIT).items():
                got[k[-1]] = v
            if len(got) == len(sources):
                return got
            self.workers = self.ask([s for s in sources if s not in got],
                                    time.monotonic() - started, False)  # fmt: skip

    def _send(self, key: tuple, targets: list[int], value: np.ndarray) -> None:
        """Send ``value`` to the ranks ``targets`` (at once), retrying those that fail."""
        started = time.monotonic()
        left = list(targets)
        while True:
            if any(t >= len(self.workers) or self.workers[t] is None for t in left):
                self.workers = self.ask([], time.monotonic() - started, False)
            where = [(t, self.workers[t]) for t in left if self.workers[t] is not None]
            failed = [t for t in left if self.workers[t] is None]
            failed += self._sync(self._post, key, where, value)
            self.bytes += value.nbytes * (len(left) - len(failed))
            if not failed:
                return
            time.sleep(SEND_RETRY)
            self.workers = self.ask(failed, time.monotonic() - started, True)
            left = failed

    async def _post(self, key: tuple, where: list[tuple[int, str]], value: np.ndarray) -> list[int]:
        """Send ``value`` to each ``(rank, address)``; the ranks whose send failed."""
        job, generation, seq, group = key
        msg = {"job": job, "generation": generation, "seq": seq, "group": group,
               "src": self.rank, "value": ToPickle(value)}  # fmt: skip
        limit = TREE_WAIT + value.nbytes / SEND_RATE

        async def one(dst: int, address: str) -> bool:
            try:
                async with asyncio.timeout(limit):
                    reply = await self.worker.rpc(address).daskgd_tree_part(dst=dst, **msg)
            except (OSError, TimeoutError):  # CommClosedError is an OSError
                return False
            if reply.get("status") != "OK":
                raise RuntimeError(
                    f"the worker {address} of rank {dst} refused a tree part: {reply}"
                )
            return True

        done = await asyncio.gather(*(one(d, a) for d, a in where))
        return [d for (d, _), ok in zip(where, done, strict=True) if not ok]
