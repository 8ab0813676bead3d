"""Key-hashed shards of a key-value (sparse) model: which shard holds a key, and one
shard's state on one worker (the data half of :mod:`daskgd.parameter_server.kshard`).

**The hash.** Coefficient ``j`` (a column of the data) lives on shard
``splitmix64(j) mod K`` (:func:`key_shards`): the finaliser of Steele et al.'s SplitMix64
mixes every bit of the index into every bit of the hash, so neighbouring columns, and the
few popular columns of power-law data (often the low indices that a hashing trick or a
frequency-ranked vocabulary gives them), spread evenly over the shards instead of landing
on one, as contiguous ranges would put them. The hash is a pure function of ``(j, K)``:
every training task and every shard computes the same layout with no table sent. The
intercept (one number, or one per class) is held by shard 0.

**One shard.** Shard ``k`` holds the keys ``owned`` (sorted global columns) and the keyed
rule's state of a model of ``len(owned)`` coefficients, in that order: global key
``owned[i]`` is its local key ``i``. Each step of the whole model is applied to every
shard with the same ``t``, epoch and learning-rate factor, and with the mean gradient at
the shard's keys (no keys: the call still comes, as the rules' global scalars, such as
``sgd``'s weight scale and L1 total, must follow every step); the shards that do not hold
the intercept run the rule with ``fit_intercept=False`` and an intercept of zero. The
keyed rules act coordinate by coordinate (:mod:`daskgd.objective.keyed`), so every
coefficient is stepped exactly as the whole-model state on the scheduler steps it: the
same float64 operations in the same order, bitwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from daskgd.objective.keyed import make_keyed_optimizer
from daskgd.objective.keyed_base import check_keys, row_blocks
from daskgd.objective.schedules import Schedule
from daskgd.parameter_server.shard_state import RoundSlices

__all__ = ["KeyedShardState", "assemble_keyed", "key_shards", "owned_keys"]

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def key_shards(keys: np.ndarray, n_shards: int) -> np.ndarray:
    """The shard of each key: ``splitmix64(key) mod n_shards`` (see the module docstring).

    Examples
    --------
    >>> key_shards(np.arange(8), 3).tolist()
    [1, 2, 1, 0, 1, 2, 2, 0]
    """
    x = np.asarray(keys).astype(np.uint64) + _GAMMA  # wraps modulo 2**64, as intended
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(n_shards)).astype(np.intp)


def owned_keys(d: int, shard: int, n_shards: int) -> np.ndarray:
    """The sorted columns of a model of ``d`` coefficients that shard ``shard`` holds."""
    out = [rows.start + np.flatnonzero(key_shards(np.arange(rows.start, rows.stop), n_shards)
                                       == shard) for rows in row_blocks(d)]  # fmt: skip
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def assemble_keyed(replies: Sequence[dict[str, Any]], shape: tuple[int, ...]) -> np.ndarray:
    """The whole parameter array, ``(d + 1,)`` or ``(d + 1, k)``, from the shards' exports
    (each its ``keys`` and their weights ``w``), shard 0's first (its ``b``: the
    intercept)."""
    out = np.zeros(shape)
    for r in replies:
        out[np.asarray(r["keys"])] = np.asarray(r["w"])
    out[-1] = replies[0]["b"]
    return out


class KeyedShardState(RoundSlices):
    """Shard ``shard`` of ``n_shards`` of a key-value job (see the module docstring).

    Raises
    ------
    ValueError
        On settings the keyed rule refuses, or a shard that would hold no key.
    """

    def __init__(
        self, d: int, n_columns: int | None, shard: int, n_shards: int,
        optimizer: dict[str, Any], params: np.ndarray | None,
    ) -> None:  # fmt: skip
        self.shard, self.n_shards, self.d = int(shard), int(n_shards), int(d)
        self.owned = owned_keys(self.d, self.shard, self.n_shards)
        if self.owned.size == 0:
            raise ValueError(f"shard {shard} of {n_shards} holds none of the {d} coefficients: "
                             "use fewer servers (n_servers) for so small a model")  # fmt: skip
        rule = make_keyed_optimizer(**optimizer)
        self.holds_intercept = self.shard == 0
        if not self.holds_intercept:  # its stand-in intercept stays zero
            rule = replace(rule, fit_intercept=False)  # type: ignore[type-var]
        self.rule = rule
        mine = None
        if params is not None:
            P = np.asarray(params, dtype=np.float64)
            mine = np.concatenate([P[self.owned], P[-1:] if self.holds_intercept
                                   else np.zeros((1, *P.shape[1:]))])  # fmt: skip
        self.state = rule.init_state(self.owned.size, n_columns, params=mine)
        self.tail: tuple[int, ...] = () if n_columns is None else (int(n_columns),)
        self.version = 0
        #: sync: the slices of each open round, by (rank, incarnation)
        self.pending: dict[int, dict[tuple[int, str | None], tuple]] = {}
        self.lock = asyncio.Lock()
        self.changed = asyncio.Event()  # set (and replaced) when a version is published
        self.arrived = asyncio.Event()  # set (and replaced) when a slice is stored
        self.closed = False
        self.gone = {}

    @property
    def size(self) -> int:
        return int(self.owned.size)

    def local(self, keys: Any) -> np.ndarray:
        """The local keys of global ``keys`` (strictly increasing, all held here).

        Raises
        ------
        ValueError
            On keys that are not sorted and unique, or not held by this shard.
        """
        keys = check_keys(keys, self.d)
        idx = np.searchsorted(self.owned, keys)
        bad = (idx >= self.owned.size) | (self.owned[np.minimum(idx, self.owned.size - 1)] != keys)
        if np.any(bad):
            key = int(keys[np.flatnonzero(bad)[0]])
            home = int(key_shards(np.array([key]), self.n_shards)[0])
            raise ValueError(f"key {key} belongs to shard {home}, not to shard {self.shard} "
                             f"of {self.n_shards}")  # fmt: skip
        return idx.astype(np.int64)

    def set_eta(self, eta: float | None) -> None:
        """``auto_lr``: the step size the coordinator measured (``sgd``'s schedule)."""
        schedule = getattr(self.rule, "schedule", None)
        if eta is not None and isinstance(schedule, Schedule) and schedule.eta0 != eta:
            self.rule.schedule = replace(schedule, eta0=float(eta))  # type: ignore[attr-defined]

    # -- sync: a round's slices summed by key in rank order, one step --------------------
    def store(self, version: int, rank: int, incarnation: str | None, local: np.ndarray,
              grad: np.ndarray, grad_b: Any) -> None:  # fmt: skip
        # copies in float64, as the whole-model server keeps them (a local sender may
        # reuse its buffers); by run: a superseded run's slice never replaces the new one's
        g = np.array(grad, dtype=np.float64)
        gb = np.zeros(self.tail) if grad_b is None else np.array(grad_b, dtype=np.float64)
        self.pending.setdefault(version, {})[(rank, incarnation)] = (local, g, gb)
        self.gone.pop((rank, incarnation), None)  # it came: no more hurry for that run
        self.arrived.set()
        self.arrived = asyncio.Event()

    def round(self, version: int, ranks: list, got: dict, weight: float, t: int, epoch: int,
              eta: float | None) -> bool:  # fmt: skip
        """Sum the round's slices by key (the union of the ranks' keys, in rank order, as
        :meth:`~daskgd.parameter_server.keyed_job.KeyedJob.finish_round`) and step with the
        row-weighted mean (``weight``: that of the ranks whose slices came, see
        ``RoundSlices.collect``); publish ``version + 1``. False when the weights became
        non-finite (nothing published)."""
        parts = [got[(r, inc)] for r, inc in ranks]  # those whose slices came (kshard.round)
        if weight > 0 and parts:
            keys = np.unique(np.concatenate([p[0] for p in parts]))
            grad = np.zeros((keys.size, *self.tail))
            grad_b = np.zeros(self.tail)
            for local, g, gb in parts:  # each rank's keys are distinct: one add per key
                grad[np.searchsorted(keys, local)] += g
                grad_b += gb
            if not self._step(keys, grad / weight, grad_b / weight, t, epoch, 1.0, eta):
                return False
        self.version = version + 1
        return True

    def _step(self, keys, grad, grad_b, t, epoch, lr_scale, eta) -> bool:
        self.set_eta(eta)
        self.rule.apply(self.state, keys, grad, grad_b, t, epoch, lr_scale)
        return bool(np.all(np.isfinite(self.rule.weights(self.state, keys)))) and bool(
            np.all(np.isfinite(self.rule.intercept(self.state))))  # fmt: skip

    # -- async: each push's slice applied on arrival -------------------------------------
    def apply_push(self, local: np.ndarray, grad: np.ndarray, grad_b: Any, weight: float,
                   t: int, epoch: int, lr_scale: float, eta: float | None) -> bool:  # fmt: skip
        """Step with one push's slice now (as ``KeyedJob.kapply_async``); False when the
        weights became non-finite."""
        self.version += 1
        if weight <= 0:
            return True
        g = np.asarray(grad, dtype=np.float64)
        gb = np.zeros(self.tail) if grad_b is None else np.asarray(grad_b, dtype=np.float64)
        return self._step(local, g / weight, gb / weight, t, epoch, lr_scale, eta)

    # -- reads ---------------------------------------------------------------------------
    def read(self, local: np.ndarray | None, dense: bool) -> dict[str, Any]:
        """The weights at ``local`` keys (or all of this shard's, in ``owned`` order, when
        ``dense``), the intercept when this shard holds it, and the version."""
        out: dict[str, Any] = {"version": self.version}
        if dense:
            out["w"] = self.rule.dense(self.state)[:-1]
        elif local is not None:
            out["w"] = self.rule.weights(self.state, local)
        if self.holds_intercept:
            out["b"] = self.rule.intercept(self.state)
        return out

    def penalty_sums(self) -> tuple[float, float]:
        """``(sum |w|, sum w^2)`` over this shard's coefficients (O(d / K), in blocks)."""
        l1 = l2 = 0.0
        for rows in row_blocks(self.size):
            w = self.rule.weights(self.state, np.arange(rows.start, rows.stop))
            l1 += float(np.abs(w).sum())
            l2 += float(np.square(w).sum())
        return l1, l2
