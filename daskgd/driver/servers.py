"""How many parameter servers a fit uses: ``n_servers`` checked, and ``"auto"`` resolved.

``n_servers=0`` keeps the whole model on the scheduler (the parameter server of
:mod:`daskgd.parameter_server`); ``n_servers=K >= 1`` cuts the parameters and the
optimizer state into K shards held by K workers (:mod:`daskgd.parameter_server.shard`),
and the scheduler coordinates. ``"auto"`` shards a model of at least
:data:`AUTO_SHARD_PARAMS` parameters (not a key-value one) trained by a first-order rule on
two workers or more: measured on one 2-core machine (``bench/results/servers.md``, 2
workers, sync and async, two runs), 2 shards gave 0.78-0.89x the scheduler-hosted
throughput at 10^5 parameters, 0.97-1.12x at 3 * 10^5 (no clear gain), 1.15-1.21x at 10^6
and 1.31-1.46x at 4 * 10^6. L-BFGS's rounds
are set by the pass over the data, not the traffic (the sparse benchmark: 10.5 s on the
scheduler, 10.8 s in 2 shards), and key-hashed shards keep no replicas, so ``"auto"``
keeps those on the scheduler.
"""

from __future__ import annotations

from typing import Any

from daskgd.errors import InvalidSettingError

__all__ = [
    "AUTO_SHARDS",
    "AUTO_SHARD_PARAMS",
    "AUTO_SHARD_RULES",
    "check_servers",
    "resolve_servers",
]

#: The model size (parameters) from which ``n_servers="auto"`` shards (the crossover
#: measured in ``bench/results/servers.md``); None: never.
AUTO_SHARD_PARAMS: int | None = 1_000_000
#: Shards ``"auto"`` makes (at most the workers there are).
AUTO_SHARDS = 2
#: The update rules ``"auto"`` shards: those whose rounds the parameter traffic paces.
AUTO_SHARD_RULES = ("sgd", "momentum", "nesterov", "adagrad", "adam")


def _why_not(s: Any) -> str | None:
    """Why settings ``s`` cannot shard the model, or None."""
    if s.optimizer in ("newton", "auto"):
        return (f"optimizer={s.optimizer!r} (Newton's Hessian needs the whole model in one "
                "place; shards run lbfgs, sgd, momentum, nesterov, adagrad and adam)")  # fmt: skip
    if s.callback_params:
        return "callback_params=True (every epoch's parameters would pass through the scheduler)"
    return None


def check_servers(s: Any) -> None:
    """Refuse ``n_servers >= 1`` with settings the shards cannot run.

    Raises
    ------
    InvalidSettingError
    """
    if isinstance(s.n_servers, int) and s.n_servers >= 1:
        why = _why_not(s)
        if why is not None:
            raise InvalidSettingError(
                f"n_servers={s.n_servers} shards the model, which cannot be done with {why}; "
                "use n_servers=0 (the whole model on the scheduler) or 'auto'"
            )


def resolve_servers(s: Any, n_params: int, n_workers: int, keyed: bool = False) -> int:
    """The number of shards for a fit of ``n_params`` parameters on ``n_workers`` workers
    (``keyed``: a key-value fit, whose shards are hashed by key).

    Raises
    ------
    InvalidSettingError
        When more shards are asked for than there are workers (or parameter rows).
    """
    k = s.n_servers
    if k == "auto":
        # one worker: no neighbour to keep a shard's backup (its loss would end the fit)
        if (
            _why_not(s) is not None
            or keyed
            or s.optimizer not in AUTO_SHARD_RULES
            or n_workers < 2
            or AUTO_SHARD_PARAMS is None
            or n_params < AUTO_SHARD_PARAMS
        ):
            return 0
        return min(AUTO_SHARDS, n_workers)
    if k > n_workers:
        raise InvalidSettingError(
            f"n_servers={k} needs {k} workers to hold the shards; the fit has {n_workers}. "
            f"Use n_servers <= {n_workers}, or add workers"
        )
    return int(k)
