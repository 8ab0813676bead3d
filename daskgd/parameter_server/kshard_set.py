"""The coordinator's view of a key-value job's key-hashed shards: where they live and how
the scheduler plugin calls them (:mod:`daskgd.parameter_server.kshard`).

Only scalars and lists of ranks travel in the calls made while the job runs (``round``,
``penalty``); the whole model travels once, gathered at the end (:meth:`KeyedShardSet.
gather_async`). A shard whose worker left cannot be rebuilt (key-hashed shards keep no
replicas): :meth:`KeyedShardSet.lose` cancels the calls in flight and every later call
fails at once with :class:`~daskgd.parameter_server.sharding.ShardError`, which names
the worker and what to do.

The job's steps run in the plugin's thread pool, so the blocking form (:meth:`KeyedShardSet.
call`) hands each call to the scheduler's loop and waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from distributed.protocol import ToPickle

from daskgd.parameter_server.kshard_state import assemble_keyed
from daskgd.parameter_server.sharding import SHARD_TIMEOUT, ShardError, ShardFanOut, without

__all__ = ["KeyedShardSet"]


class KeyedShardSet(ShardFanOut):
    """The key-hashed shards of one job (see the module docstring).

    Parameters
    ----------
    job : str
    addresses : sequence of str
        The worker holding each shard (shard ``k`` holds the keys that hash to ``k``).
    rpc : callable
        ``rpc(address)``: the scheduler's connection pool.
    loop : asyncio event loop
        The loop ``rpc`` runs on.
    """

    def lose(self, address: str) -> str:
        """The worker at ``address`` left with its shard(s): cancel the calls in flight
        (a call to a dead worker would wait for the connect timeout, holding the job's
        lock), fail the later ones; returns the reason."""
        lost = [k for k, a in enumerate(self.addresses) if a == address]
        self.broken = (
            f"worker {address}, which held key-hashed shard(s) {lost} of the key-value "
            f"model's {len(self.addresses)}, left the cluster: that part of the model and "
            "its optimizer state is lost (key-hashed shards keep no replicas). Rerun the "
            "fit, with n_servers=0 to keep the model on the scheduler, or on workers that "
            "stay up"
        )
        self.cancel_calls()
        return self.broken

    async def _one(self, k: int, op: str, msg: dict[str, Any]) -> dict[str, Any]:
        addr = self.addresses[k]
        if self.broken is not None:
            raise ShardError(self.broken)
        try:
            async with asyncio.timeout(SHARD_TIMEOUT):
                handler = getattr(self.rpc(addr), f"daskgd_kshard_{op}")
                reply = await handler(job=self.job, **{"shard": k, **msg})
        except (OSError, TimeoutError) as exc:
            raise ShardError(
                f"key-hashed shard {k} of the model (worker {addr}) did not answer {op!r}: "
                f"{exc!r}. A worker holding a shard of a key-value model was lost: rerun "
                "the fit, with n_servers=0 to keep the model on the scheduler"
            ) from exc
        if not isinstance(reply, dict) or reply.get("status") != "OK":
            message = reply.get("message") if isinstance(reply, dict) else reply
            raise ShardError(f"key-hashed shard {k} (worker {addr}) refused {op!r}: {message}")
        return reply

    # -- the operations ------------------------------------------------------------
    async def create(
        self, d: int, n_columns: int | None, optimizer: dict[str, Any],
        params: np.ndarray | None,
    ) -> None:  # fmt: skip
        """Create every shard (each takes its keys of the warm start ``params``)."""
        await self.call_async("create", n_shards=len(self.addresses), d=int(d),
                              n_columns=n_columns, optimizer=optimizer,
                              params=None if params is None else ToPickle(params))  # fmt: skip

    def round(self, version: int, ranks: list, weight: float, t: int, epoch: int,
              eta: float | None, weights: list[float] | None = None,
              ) -> tuple[bool, list[int]]:  # fmt: skip
        """Close sync round ``version`` on every shard; whether every one stayed finite,
        and the ranks whose slice a shard went without (their worker died; ``weights``,
        each rank's, give that shard the present ranks' mean)."""
        replies = self.call("round", version=version, ranks=ranks, weight=weight, t=t,
                            epoch=epoch, eta=eta, weights=weights)  # fmt: skip
        return all(r["finite"] for r in replies), without(replies)

    def penalty_sums(self) -> tuple[float, float]:
        """``(sum |w|, sum w^2)`` over the whole model, summed in shard order."""
        replies = self.call("penalty")
        return sum(r["l1"] for r in replies), sum(r["l2"] for r in replies)

    async def gather_async(self, shape: tuple[int, ...]) -> np.ndarray:
        """The whole parameter array, ``(d + 1,)`` or ``(d + 1, k)``, from the shards."""
        return assemble_keyed(await self.call_async("export"), shape)

    async def close(self, workers: Sequence[str]) -> None:
        """Free the shards on every worker still there (a worker that left took its
        shards' memory with it)."""
        self.broken = self.broken or "closed"

        async def drop(addr: str) -> None:
            async with asyncio.timeout(SHARD_TIMEOUT):
                await self.rpc(addr).daskgd_kshard_drop(job=self.job)

        live = set(workers)
        await asyncio.gather(*(drop(a) for a in set(self.addresses) if a in live),
                             return_exceptions=True)  # fmt: skip
