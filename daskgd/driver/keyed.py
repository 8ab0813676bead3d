"""Which fits are key-value fits, and the settings they run with.

A fit is *keyed* when its data is sparse (``scipy.sparse`` CSR blocks), it trains on
mini-batches (``batch_size`` set) and its optimizer is a per-coordinate rule (``sgd``,
``adagrad``, ``adam`` or ``ftrl``, :data:`daskgd.objective.KEYED_OPTIMIZERS`), one
coefficient vector or a multinomial model (one-vs-rest fits push dense gradients): its
parameters then live in a keyed optimizer's state on the scheduler, a push carries the
gradient at the keys its batch touched and a reply the weights at the next batch's keys
(:mod:`daskgd.parameter_server.keyed_handlers`). Other sparse fits (full batches, L-BFGS,
momentum) push dense gradients.

Key by key only where it is the same fit as dense pushes: ``sgd`` (its lazy L2 and L1 are
exact, :class:`daskgd.objective.keyed.KeyedSGD`), ``ftrl`` (key by key by definition),
and ``adagrad``/``adam`` without a penalty (``alpha=0``). With ``alpha > 0`` lazy AdaGrad
and Adam would penalise a coefficient only on the steps that touch it, which is another
objective (rare columns barely regularised): those fits push dense gradients, as do fits
with what the keyed slice does not run yet: ``mode="ssp"``, checkpoints, and
``gtol``/``gtol_rel`` (no gradient norm is computed). ``ftrl``, which has no dense form,
refuses those, naming the alternative. ``n_servers >= 1`` holds the keyed state in
key-hashed shards on workers (:mod:`daskgd.parameter_server.kshard`).
``callback_params`` forms the whole model once an epoch (O(d)). ``learning_rate="auto"``
is ``1 / L`` for ``sgd``, measured on the rows as for dense data; for ``adagrad``,
``adam`` and ``ftrl`` it stands for the constant :data:`KEYED_DEFAULT_LR` (their
per-coordinate steps adapt to the data; the usual values of AdaGrad, Adam and McMahan et
al.'s FTRL).

A keyed fit's ``FitResult.timings_`` has ``pull_bytes`` besides ``push_bytes``: per
training task, the bytes of the weights it received (its pushes' bytes count the keys,
the gradient values and the next batch's keys); both follow the batches' keys, not d.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from daskgd.driver.settings import FitSettings
from daskgd.errors import InvalidSettingError, TrainingError
from daskgd.objective import KEYED_OPTIMIZERS

__all__ = [
    "KEYED_DEFAULT_LR",
    "drop_shards",
    "gather_shards",
    "is_keyed",
    "is_sparse_data",
    "keyed_fit_settings",
]

#: ``learning_rate="auto"`` of a keyed fit, by optimizer (``sgd``'s is measured: ``1 / L``).
KEYED_DEFAULT_LR = {"adagrad": 0.1, "adam": 0.01, "ftrl": 0.1}


def is_sparse_data(ds: Any) -> bool:
    """Whether the dataset's ``X`` is made of ``scipy.sparse`` blocks."""
    flag = getattr(ds, "is_sparse", None)
    if flag is not None:
        return bool(flag)
    meta = getattr(ds.X, "_meta", None)
    return (type(meta).__module__ or "").startswith("scipy.sparse")


def is_keyed(ds: Any, s: FitSettings) -> bool:
    """Whether the fit of ``ds`` with ``s`` runs key-value (see the module docstring).

    Raises
    ------
    InvalidSettingError
        ``optimizer="ftrl"`` on a fit that is not keyed (dense data or full batches).
    """
    keyed = (is_sparse_data(ds) and s.batch_size is not None and not s.one_vs_rest
             and s.optimizer in KEYED_OPTIMIZERS)  # fmt: skip
    if keyed and s.optimizer != "ftrl":
        # dense pushes where key by key would not be the same fit: lazy AdaGrad and Adam
        # penalise a coefficient only on the steps that touch it (a different objective
        # once alpha > 0; sgd's lazy penalty is exact), and what the keyed slice lacks
        keyed = (s.optimizer == "sgd" or not s.alpha) and _unsupported(s) is None
    if s.optimizer == "ftrl" and not keyed:
        raise InvalidSettingError(
            "optimizer='ftrl' (FTRL-Proximal) trains sparse data on mini-batches, key by "
            "key, one coefficient vector or a multinomial model (not one-vs-rest): pass X "
            "as scipy.sparse CSR (or a dask array of CSR blocks) with batch_size set, or "
            "use optimizer='adagrad' for dense data"
        )
    return keyed


def keyed_fit_settings(s: FitSettings) -> FitSettings:
    """The settings a keyed fit runs with (``learning_rate="auto"`` resolved).

    Raises
    ------
    InvalidSettingError
        On a setting the key-value slice does not support yet, naming the alternative.
    """
    why = _unsupported(s)
    if why is not None:
        raise InvalidSettingError(
            f"sparse X with batch_size and optimizer={s.optimizer!r} runs key-value "
            f"(pushes and pulls by key), which does not support {why}"
        )
    if not isinstance(s.learning_rate, str) or s.optimizer not in KEYED_DEFAULT_LR:
        return s  # sgd: "auto" is 1 / L, measured on the rows as for dense data
    out = replace(s, learning_rate=KEYED_DEFAULT_LR[s.optimizer])
    object.__setattr__(out, "seed", s.seed)  # the seed drawn for this fit stays
    return out


def _unsupported(s: FitSettings) -> str | None:
    """What of ``s`` the key-value slice does not run, with the alternative; None: all."""
    why = None
    if s.mode == "ssp":
        why = "mode='ssp': use mode='async' or 'sync'"
    elif s.checkpoint is not None:
        why = "checkpoint=...: checkpoints of key-value models are not written yet; drop it"
    elif s.gtol is not None or s.gtol_rel is not None:
        why = ("gtol/gtol_rel: no gradient norm is computed for a stochastic sparse fit; "
               "use tol (the epoch loss)")  # fmt: skip
    return why


async def gather_shards(client: Any, job: str, addresses: list[str], shape: tuple) -> np.ndarray:
    """A sharded key-value job's final model, read from its shards by one task on each
    holder (which frees them) and gathered from the workers directly: the scheduler never
    holds the ``d``-long model. A driver that cannot reach the workers (only the
    scheduler: a gateway, a port-forward) gets the results through the scheduler instead.

    Raises
    ------
    TrainingError
        When a shard cannot be read (its worker left after the job closed).
    """
    from distributed import wait

    from daskgd.parameter_server.kshard import export_shards
    from daskgd.parameter_server.kshard_state import assemble_keyed

    held: dict[str, list[int]] = {}
    for shard, address in enumerate(addresses):
        held.setdefault(address, []).append(shard)
    futures = [client.submit(export_shards, job, shards, workers=[address], pure=False,
                             allow_other_workers=False, key=f"daskgd-export-{address}-{job}")
               for address, shards in held.items()]  # fmt: skip
    try:
        await wait(futures)
        failed = next((f for f in futures if f.status != "finished"), None)
        if failed is not None:
            raise (await failed.exception()) or RuntimeError(f"{failed.key}: {failed.status}")
        try:
            replies = await client.gather(futures, direct=True)
        except OSError:
            replies = await client.gather(futures, direct=False)
    except BaseException as exc:
        await client.cancel(futures)
        await drop_shards(client, job, list(held))
        if not isinstance(exc, Exception):
            raise
        raise TrainingError(
            f"the trained model could not be read from its parameter shards ({exc}); rerun "
            "the fit, with n_servers=0 or on workers that stay up"
        ) from exc
    # shard 0, which holds the intercept, is the first worker's first
    return assemble_keyed([r for per_worker in replies for r in per_worker], shape)


async def drop_shards(client: Any, job: str, addresses: list[str]) -> None:
    """Free a closed job's key-value shards on ``addresses``, best effort (a worker that
    left took them with it): for a fit that ends before its model was read."""
    from daskgd.parameter_server.kshard import KSHARD_PLUGIN_NAME

    async def drop(dask_worker: Any = None) -> None:
        plugin = dask_worker.plugins.get(KSHARD_PLUGIN_NAME)
        if plugin is not None:
            await plugin.drop(job)

    try:
        await client.run(drop, workers=sorted(set(addresses)), on_error="ignore")
    except Exception:
        pass  # the fit's own error is the one to report
