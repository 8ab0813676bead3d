"""Key-hashed parameter shards of key-value (sparse) jobs on the workers: the
:class:`KeyedShardServer` worker plugin and its ``daskgd_kshard_*`` handlers.

With ``n_servers=K`` a key-value job's coefficients are split by key hash
(:func:`~daskgd.parameter_server.kshard_state.key_shards`, shard 0 holding the intercept)
into K shards, each held, with its part of the keyed optimizer's state, by one worker
(:mod:`daskgd.parameter_server.kshard_state`). As the dense shards
(:mod:`daskgd.parameter_server.shard`) the plugin adds handlers to the worker's RPC server:
training tasks push their gradient's slice at the shard's keys and read the weights at
their next batch's keys through distributed's comm and connection pool, and the
coordinator (the scheduler plugin) tells each shard when to sum a sync round and step,
with scalars only.

==========================  ================================================================
handler                     arguments -> reply (besides ``status``)
==========================  ================================================================
``daskgd_kshard_create``    ``job, shard, n_shards, d, n_columns, optimizer, params=None``
``daskgd_kshard_push``      ``job, shard, version, rank, incarnation, keys, grad, grad_b,
                            next_keys=None, dense=False, wait=0`` (sync; global keys, the
                            shard's only) -> once round ``version`` closed (or at once
                            without ``wait``): ``version, w`` (at ``next_keys`` or, with
                            ``dense``, all of the shard's, in key order) and, on shard 0,
                            ``b``
``daskgd_kshard_round``     ``job, shard, version, ranks, weight, t, epoch, eta, weights``
                            -> ``finite, without``: sum round ``version``'s slices of ``ranks``
                            (rank order; ``without``: dead runs whose slices never came),
                            step, publish ``version + 1``
``daskgd_kshard_apply``     ``job, shard, keys, grad, grad_b, weight, t, epoch, lr_scale,
                            eta, next_keys=None, dense=False`` -> ``finite, version, w``
                            (``b``): async, applied on arrival
``daskgd_kshard_pull``      ``job, shard, keys=None, dense=False, version=0, wait=0`` ->
                            ``version, w`` (``b``)
``daskgd_kshard_penalty``   ``job, shard`` -> ``l1, l2``: the sums of ``|w|`` and ``w^2``
``daskgd_kshard_export``    ``job, shard`` -> ``keys, w`` (``b``): the whole shard
``daskgd_kshard_drop``      ``job``: free the job's shards on this worker
``daskgd_kshard_gone``      ``job, shard, ranks``: those runs died (see the dense shards')
==========================  ================================================================

A shard's steps and reads run one at a time (its lock); those of more than
:data:`~daskgd.parameter_server.shard.INLINE_ROWS` coefficients in a thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from distributed.protocol import ToPickle

from daskgd.parameter_server.checks import error
from daskgd.parameter_server.config import is_index, is_real
from daskgd.parameter_server.kshard_state import KeyedShardState
from daskgd.parameter_server.shard import INLINE_ROWS, SLICE_WAIT, HandlerPlugin

__all__ = ["KSHARD_PLUGIN_NAME", "KeyedShardServer", "export_shards"]

KSHARD_PLUGIN_NAME = "daskgd-kshards"

_OPS = ("create", "push", "round", "apply", "pull", "penalty", "export", "drop", "gone")


def _out(read: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "OK", "version": read["version"]}
    if "w" in read:
        out["w"] = ToPickle(read["w"])
    if "b" in read:
        b = read["b"]
        out["b"] = ToPickle(np.asarray(b)) if np.ndim(b) else float(b)
    return out


def _grad(s: KeyedShardState, local: np.ndarray, grad: Any, grad_b: Any) -> str | None:
    want = (local.size, *s.tail)
    if not (isinstance(grad, np.ndarray) and grad.shape == want and grad.dtype.kind == "f"):
        got = getattr(grad, "shape", type(grad).__name__)
        return f"grad slice must be a float array of shape {want}, got {got}"
    if grad_b is not None and np.shape(grad_b) != s.tail:
        return f"grad_b must be None or of shape {s.tail}, got {np.shape(grad_b)}"
    return None


class KeyedShardServer(HandlerPlugin[KeyedShardState]):
    """The worker half of key-hashed shards (see the module docstring).

    Registered on every worker by the driver of a key-value fit with ``n_servers >= 1``
    (``Client.register_plugin``, idempotent by name).
    """

    name = KSHARD_PLUGIN_NAME
    prefix = "kshard"
    ops = _OPS
    noun = "key shard"

    def teardown(self, worker) -> None:
        for s in self.jobs.values():  # wake the waiters: the shards are gone
            s.closed = True
            s.notify()
        super().teardown(worker)

    async def _run(self, s: KeyedShardState, heavy: bool, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` as the shard's only owner; in a thread when ``heavy`` (O(d/K)
        work) on a large shard."""
        async with s.lock:
            if heavy and s.size > INLINE_ROWS:
                return await asyncio.to_thread(fn, *args)
            return fn(*args)

    async def _wait_version(self, s: KeyedShardState, version: int, wait: float) -> bool:
        """Wait up to ``wait`` seconds for the shard to reach ``version``; whether it did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(wait)
        while s.version < version and not s.closed:
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(s.changed.wait(), left)
            except TimeoutError:
                pass
        return s.version >= version

    async def _read(self, s: KeyedShardState, next_keys: Any, dense: Any) -> dict[str, Any]:
        if not isinstance(dense, bool):
            return error(f"dense must be True or False, got {dense!r}")
        try:
            local = None if next_keys is None or dense else s.local(next_keys)
        except (TypeError, ValueError) as exc:
            return error(f"next_keys: {exc}")
        return _out(await self._run(s, dense, s.read, local, dense))

    # -- handlers ------------------------------------------------------------------
    async def create(self, job, shard, n_shards, d, n_columns, optimizer, params=None):
        if not (is_index(shard) and is_index(n_shards) and 0 <= shard < n_shards):
            return error(f"shard must be an integer in [0, n_shards), got {shard!r}")
        if not isinstance(optimizer, dict) or (
            params is not None and not isinstance(params, np.ndarray)
        ):
            return error("create: optimizer must be a dict and params None or an ndarray")
        try:
            s = await asyncio.to_thread(KeyedShardState, d, n_columns, shard, n_shards,
                                        optimizer, params)  # fmt: skip
        except (TypeError, ValueError, MemoryError) as exc:
            return error(f"key shard {shard} of job {job!r}: {exc}")
        self.jobs[(job, shard)] = s
        return {"status": "OK", "keys": s.size}

    async def push(self, job, shard, version, rank, incarnation, keys, grad, grad_b=None,
                   next_keys=None, dense=False, wait=0.0):  # fmt: skip
        """Sync: store a rank's slice for round ``version``; with ``wait`` > 0, reply once
        the round closed, with the weights at ``next_keys`` (a pull in the same trip)."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        if not (is_index(version) and is_index(rank) and is_real(wait)):
            return error("push: version and rank must be integers, wait a number")
        try:
            local = s.local(keys)
        except (TypeError, ValueError) as exc:
            return error(f"keys: {exc}")
        bad = _grad(s, local, grad, grad_b)
        if bad:
            return error(bad)
        if version >= s.version:  # older: its round closed without it
            s.store(int(version), int(rank), incarnation, local, grad, grad_b)
        if wait and not await self._wait_version(s, version + 1, wait):
            return error(f"key shard {shard} is at version {s.version}; round {version} did "
                         f"not close within {wait:g} s", kind="timeout")  # fmt: skip
        return await self._read(s, next_keys, dense)

    async def round(self, job, shard, version, ranks, weight, t, epoch, eta=None,
                    weights=None):  # fmt: skip
        """Close round ``version``: sum the ranks' slices by key (rank order), step
        (without a dead rank's slice: the present ranks' mean, as the dense shards)."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        if s.version != version:
            return error(f"key shard is at version {s.version}, asked to close {version}")
        ranks = [(int(r), inc) for r, inc in ranks]
        round_ = await s.collect(int(version), ranks, float(weight), weights, SLICE_WAIT)
        if isinstance(round_, str):
            return error(round_)
        present, got, weight, missing = round_
        finite = await self._run(s, True, s.round, int(version), present, got, weight,
                                 int(t), int(epoch), eta)  # fmt: skip
        s.notify()
        return {"status": "OK", "finite": finite, "without": missing}

    async def apply(self, job, shard, keys, grad, grad_b, weight, t, epoch, lr_scale,
                    eta=None, next_keys=None, dense=False):  # fmt: skip
        """Async: apply one push's slice now; reply with the weights at ``next_keys``."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        try:
            local = s.local(keys)
        except (TypeError, ValueError) as exc:
            return error(f"keys: {exc}")
        bad = _grad(s, local, grad, grad_b)
        if bad:
            return error(bad)
        finite = await self._run(s, False, s.apply_push, local, grad, grad_b, float(weight),
                                 int(t), int(epoch), float(lr_scale), eta)  # fmt: skip
        s.notify()
        return {**await self._read(s, next_keys, dense), "finite": finite}

    async def pull(self, job, shard, keys=None, dense=False, version=0, wait=0.0):
        """The weights at ``keys`` (all of the shard's with ``dense``) once the shard
        reached ``version`` (waiting up to ``wait`` seconds)."""
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        if not await self._wait_version(s, int(version), float(wait)):
            return error(f"key shard at version {s.version}, {version} asked", kind="timeout")
        return await self._read(s, keys, dense)

    async def penalty(self, job, shard):
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        l1, l2 = await self._run(s, True, s.penalty_sums)
        return {"status": "OK", "l1": l1, "l2": l2}

    async def export(self, job, shard):
        s = self._get(job, shard)
        if isinstance(s, dict):
            return s
        read = await self._run(s, True, s.read, None, True)
        return {**_out(read), "keys": ToPickle(s.owned)}


def _data(v: Any) -> Any:
    return v.data if isinstance(v, ToPickle) else v


def export_shards(job: str, shards: list[int]) -> list[dict[str, Any]]:
    """A task on the worker that holds ``shards`` of ``job`` (closed): their keys, weights
    and intercept, read from the plugin, then the job's shards on this worker freed. The
    driver gathers the tasks' results from the workers directly, so the whole model never
    passes through the scheduler (whose memory stays independent of d).

    Raises
    ------
    RuntimeError
        When this worker does not hold one of the shards (its worker was replaced).
    """
    from distributed import get_worker
    from distributed.utils import sync

    worker = get_worker()
    plugin = worker.plugins.get(KSHARD_PLUGIN_NAME)
    if not isinstance(plugin, KeyedShardServer):
        raise RuntimeError(f"worker {worker.address} holds no key-value shards of {job}")
    out = []
    for shard in shards:
        reply = sync(worker.loop, plugin.export, job, shard)
        if reply.get("status") != "OK":
            raise RuntimeError(
                f"shard {shard} of {job} on {worker.address}: {reply.get('message')}"
            )
        out.append({k: _data(reply[k]) for k in ("keys", "w", "b") if k in reply})
    sync(worker.loop, plugin.drop, job)
    return out
