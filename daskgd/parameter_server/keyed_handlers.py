"""The handlers of key-value (sparse) jobs: ``kcreate``, ``kpull`` and ``kpush``.

==========================  ====================================================
handler                     arguments -> reply (besides ``status``)
==========================  ====================================================
``daskgd_kcreate``          ``job, n_features, n_columns, config, optimizer, ranks,
                            client=None, params=None, shards=None`` -> ``version``: a
                            :class:`~daskgd.parameter_server.keyed_job.KeyedJob` of
                            ``n_features`` coefficients (``n_columns`` per feature
                            for a multinomial model, else None), zero or ``params``
                            (a warm start, ``(d + 1,)`` or ``(d + 1, k)``); with
                            ``shards`` (worker addresses) the model is held in
                            key-hashed shards there (:mod:`~daskgd.parameter_server.
                            kshard_handlers`), and pushes carry scalars only
``daskgd_kready``           ``job, rank, worker, loss0, loss_zero, weight,
                            curvature=None, gram=None, incarnation=None`` ->
                            ``version``: a rank's mean losses on its first batch at
                            the start and at zero (the divergence reference) and,
                            with ``auto_lr`` (optimizer ``sgd``), its curvature
                            figures; the reply then waits for the step size
``daskgd_kpull``            ``job, rank, keys=None, dense=False, incarnation=None``
                            -> ``version, w, b``: the coefficients at ``keys``
                            (sorted, unique), or all of them when ``dense``
``daskgd_kpush``            ``job, rank, version, keys, grad, grad_b, n, weight,
                            loss, worker=None, next_keys=None, dense=False,
                            incarnation=None`` -> ``version, w, b``: the summed
                            gradient of a batch at its ``keys`` (``grad`` one row a
                            key, float32 or float64) and at the intercept; the reply
                            has the weights at ``next_keys`` (the member's next
                            batch: one round trip a batch), or all of them when
                            ``dense``, at the version after the step
==========================  ====================================================

Members join (``daskgd_join``) and the driver watches, stops and closes
(``daskgd_status``, ``daskgd_stop``, ``daskgd_close``) as for dense jobs; the replies of
those carry no parameters while the job runs (``params`` None), and the close reply the
whole model, formed once from the state. Members report with ``daskgd_kready`` instead of
``daskgd_ready`` (whose report holds a dense gradient). A non-finite loss or gradient in
a push stops the job at once (divergence).

Whole-model replies: a member asks for the whole model (``dense=True``, no keys sent)
when its batch touches more than :data:`DENSE_PULL_FRACTION` of the columns; the int64
keys and float64 weights of a keyed exchange then cost more bytes than the d float64
weights of a dense one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from daskgd.objective.keyed_base import check_keys
from daskgd.parameter_server.checks import check_incarnation, check_rank, error
from daskgd.parameter_server.config import is_index
from daskgd.parameter_server.keyed_job import (
    KeyedJob,
    check_keyed_push,
    check_keyed_ready,
    keyed_settings,
)
from daskgd.parameter_server.kshard_handlers import KeyedShardHandlers, keyed_reply
from daskgd.parameter_server.kshard_job import ShardedKeyedJob

__all__ = ["DENSE_PULL_FRACTION", "KeyedHandlers"]

logger = logging.getLogger(__name__)

#: A member asks for the whole model instead of the weights at its next keys when those
#: are more than this share of the columns (16 bytes a key against 8 a column).
DENSE_PULL_FRACTION = 0.5

_SUPERSEDED = object()


def _current(j: KeyedJob, incarnation: str | None, step: Any, rank: int, *args: Any) -> Any:
    """``step(rank, *args)`` unless a newer run of ``rank`` joined since the message was
    checked (run by the job's owner: a zombie's push cannot land after the new run's
    join)."""
    if incarnation is not None and j.ranks[rank].incarnation not in (None, incarnation):
        return _SUPERSEDED
    return step(rank, *args)


class KeyedHandlers(KeyedShardHandlers):
    """The key-value jobs' handlers (a base of the plugin); see the module docstring."""

    def _keyed(self, job: Any) -> KeyedJob | dict:
        j = self.get_job(job)
        if isinstance(j, dict):
            return j
        if not isinstance(j, KeyedJob):
            return error(f"job {job!r} is a dense job: use daskgd_push/daskgd_pull")
        return j

    async def keyed_create(
        self, job, n_features, n_columns, config, optimizer, ranks, client=None, params=None,
        shards=None,
    ):  # fmt: skip
        """Create a key-value job; see the module docstring."""
        if not isinstance(job, str) or not job:
            return error(f"job must be a non-empty string, got {job!r}")
        if job in self.jobs:
            return error(f"job {job!r} exists already")
        if not (is_index(n_features) and n_features >= 1):
            return error(f"n_features must be an integer >= 1, got {n_features!r}")
        if n_columns is not None and not (is_index(n_columns) and n_columns >= 2):
            return error(f"n_columns must be None or an integer >= 2, got {n_columns!r}")
        shape = (n_features + 1,) if n_columns is None else (n_features + 1, n_columns)
        if params is not None and not (
            isinstance(params, np.ndarray) and params.shape == shape and params.dtype.kind == "f"
        ):
            return error(f"params must be None or a float array of shape {shape}")
        if not (isinstance(ranks, list | tuple) and ranks
                and all(isinstance(a, str) for a in ranks)):  # fmt: skip
            return error("ranks must be a non-empty list of worker address strings")
        if client is not None and not isinstance(client, str):
            return error(f"client must be None or a client id string, got {client!r}")
        for name, value in (("config", config), ("optimizer", optimizer)):
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                return error(f"{name} must be a dict with string keys")
        try:
            cfg, rule, facts = keyed_settings(config, optimizer, len(ranks))
        except (TypeError, ValueError, ArithmeticError) as exc:
            return error(f"bad job settings: {exc}")
        if shards is not None:
            return await self.kcreate_sharded(job, shape, cfg, optimizer, rule, facts,
                                              list(ranks), client, params, shards)  # fmt: skip

        def allocate():  # O(d): off the loop
            if params is not None and not np.all(np.isfinite(params)):
                return "params must be finite"
            try:
                state = rule.init_state(n_features, n_columns, params=params)
                return state, (0.0 if params is None else facts.regularizer.penalty(params))
            except (ValueError, MemoryError, OverflowError) as exc:
                return (f"cannot hold the state of a model of {n_features} features on "
                        f"the scheduler ({exc!r})")  # fmt: skip

        made = await asyncio.get_running_loop().run_in_executor(self._executor, allocate)
        if isinstance(made, str):
            return error(made)
        if job in self.jobs:  # created meanwhile by another call
            return error(f"job {job!r} exists already")
        state, pen = made
        self.jobs[job] = KeyedJob(job, shape, state, cfg, rule, facts, list(ranks), client, pen)
        return {"status": "OK", "version": 0}

    async def keyed_ready(
        self, job, rank, worker, loss0, loss_zero, weight, curvature=None, gram=None,
        incarnation=None,
    ):  # fmt: skip
        """A rank's losses on its first batch before any step, and (``auto_lr``) its
        curvature figures; with ``auto_lr`` the reply waits until the step size is set."""
        j = self._keyed(job)
        if isinstance(j, dict):
            return j
        bad = check_rank(j, rank)
        if bad:
            return error(bad)
        refused = check_incarnation(j, rank, incarnation)
        if refused:
            return refused
        bad = check_keyed_ready(j, worker, loss0, loss_zero, weight, curvature, gram)
        if bad:
            return error(bad)
        j.touch(rank)
        await self.exclusive(j, j.take_kreport, rank, worker, float(loss0), float(loss_zero),
                             float(weight), curvature, gram, self.workers())  # fmt: skip
        self.wake(j)
        if j.config.auto_lr:

            async def retry() -> None:  # a rank that died or went silent leaves the live set
                await self.exclusive(j, j.auto_step, j.live(self.workers()))

            await self.wait_member(j, rank, lambda: j.eta is not None, retry)
        return keyed_reply(j)

    async def keyed_pull(self, job, rank, keys=None, dense=False, incarnation=None):
        """The weights at ``keys`` (or all of them) and the intercept, now."""
        j = self._keyed(job)
        if isinstance(j, dict):
            return j
        bad = check_rank(j, rank)
        if bad:
            return error(bad)
        refused = check_incarnation(j, rank, incarnation)
        if refused:
            return refused
        if not isinstance(dense, bool):
            return error(f"dense must be True or False, got {dense!r}")
        if isinstance(j, ShardedKeyedJob):
            return error(f"job {job!r} keeps its model in key-hashed shards: pull from them")
        if keys is not None or not dense:
            try:
                keys = check_keys(keys, j.shape[0] - 1)
            except (TypeError, ValueError) as exc:
                return error(f"keys: {exc}")
        j.touch(rank)
        read = await self.exclusive(j, j.read, keys, dense, heavy=dense)
        return keyed_reply(j, read)

    async def keyed_push(
        self, job, rank, version, keys, grad, grad_b, n, weight, loss, worker=None,
        next_keys=None, dense=False, incarnation=None, shard_error=None,
    ):  # fmt: skip
        """Take a batch's gradient at its keys; reply with the next keys' weights."""
        j = self._keyed(job)
        if isinstance(j, dict):
            return j
        bad = check_rank(j, rank)
        if bad:
            return error(bad)
        refused = check_incarnation(j, rank, incarnation)
        if refused:
            return refused
        if j.stopped:
            return keyed_reply(j)
        if isinstance(j, ShardedKeyedJob):
            return await self.kpush_sharded(j, rank, version, n, weight, loss, worker,
                                            incarnation, shard_error)  # fmt: skip
        bad = check_keyed_push(j, version, keys, grad, grad_b, n, weight, loss, worker,
                               next_keys, dense)  # fmt: skip
        if bad is None:  # O(keys): the batch's size, not the model's
            d = j.shape[0] - 1
            try:
                keys = check_keys(keys, d)
                next_keys = None if next_keys is None else check_keys(next_keys, d)
            except (TypeError, ValueError) as exc:
                bad = f"keys: {exc}"
        if bad:
            return error(bad)
        grad_b = grad_b if np.ndim(grad_b) else float(grad_b)
        r = j.ranks[rank]
        j.touch(rank)
        if worker is not None:
            r.address = worker
        r.active = True
        if await self.exclusive(j, j.over_time):
            self.wake(j)
            return keyed_reply(j)
        if j.config.auto_lr and j.eta is None:  # a task that skipped kready
            if not j.reports:
                return error("auto_lr: a push came before any rank reported kready")
            await self.exclusive(j, lambda: j.auto_step(list(j.reports)))
        args = (rank, version, keys, grad, grad_b, n, float(weight), float(loss))
        heavy = not j.inline
        if j.config.mode == "async":
            try:
                out = await self.exclusive(j, _current, j, incarnation, j.kapply_async, *args,
                                           next_keys, dense, heavy=heavy)  # fmt: skip
            except Exception as exc:  # a bug must fail the job loudly
                logger.exception("daskgd: an async keyed step of job %s failed", j.id)
                await self.fail(j, exc)
                out = None
            self.wake(j)
            if out is _SUPERSEDED:
                return check_incarnation(j, rank, incarnation)
            return keyed_reply(j, out)
        try:
            outcome = await self.exclusive(j, _current, j, incarnation, j.karrive_sync, *args,
                                           self.workers(), heavy=heavy)  # fmt: skip
        except Exception as exc:  # a bug must fail the job loudly, not hang its members
            logger.exception("daskgd: a sync keyed step of job %s failed", j.id)
            await self.fail(j, exc)
            outcome = "stopped"
        self.wake(j)
        if outcome is _SUPERSEDED:
            return check_incarnation(j, rank, incarnation)
        if outcome == "twice":
            return error(f"rank {rank} pushed twice for version {version}")
        if outcome == "OK":
            await self.wait_member(j, rank, lambda: j.version > version,
                                   lambda: self.maybe_finish(j))  # fmt: skip
        if j.stopped and j.error is not None:
            return keyed_reply(j)
        read = await self.exclusive(j, j.read, next_keys, dense, heavy=heavy and dense)
        return keyed_reply(j, read, "stale" if outcome == "stale" else "OK")
