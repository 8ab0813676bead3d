"""How many parameter servers a fit uses: ``n_servers`` checked, and ``"auto"`` resolved.

``n_servers=0`` keeps the whole model on the scheduler (the parameter server of
:mod:`daskgd.parameter_server`); ``n_servers=K >= 1`` cuts the parameters and the
optimizer state into K shards held by K workers (:mod:`daskgd.parameter_server.shard`),
and the scheduler coordinates. ``"auto"`` shards a model of at least
:data:`AUTO_SHARD_PARAMS` parameters, when the settings allow it: measured on one 2-core
machine (``bench/results/servers.md``), shards took the scheduler's load off it but did
not raise throughput enough at any d up to 4 * 10^6 to pay for themselves, so that size is
not set and ``"auto"`` means 0 until a measured crossover gives it one.
"""

from __future__ import annotations

from typing import Any

from daskgd.errors import InvalidSettingError

__all__ = ["AUTO_SHARDS", "AUTO_SHARD_PARAMS", "check_servers", "resolve_servers"]

#: The model size (parameters) from which ``n_servers="auto"`` shards; None: never (no
#: crossover measured yet: ``bench/results/servers.md``).
AUTO_SHARD_PARAMS: int | None = None
#: Shards ``"auto"`` makes (at most the workers there are).
AUTO_SHARDS = 2


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


def resolve_servers(s: Any, n_params: int, n_workers: int) -> int:
    """The number of shards for a fit of ``n_params`` parameters on ``n_workers`` workers.

    Raises
    ------
    InvalidSettingError
        When more shards are asked for than there are workers (or parameter rows).
    """
    k = s.n_servers
    if k == "auto":
        if _why_not(s) is not None or AUTO_SHARD_PARAMS is None or n_params < AUTO_SHARD_PARAMS:
            return 0
        return min(AUTO_SHARDS, n_workers)
    if k > n_workers:
        raise InvalidSettingError(
            f"n_servers={k} needs {k} workers to hold the shards; the fit has {n_workers}. "
            f"Use n_servers <= {n_workers}, or add workers"
        )
    return int(k)
