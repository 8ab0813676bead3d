"""``fit_async``, the one async core of a fit, and ``fit``, its synchronous facade.

Both take every setting as a keyword (checked once, into a
:class:`~daskgd.driver.settings.FitSettings`) and hand it, with the data, to the same core:
open the data (one route, :func:`~daskgd.driver.inputs.open_data`), then run the job
(:func:`~daskgd.driver.job.run_job`). The client is resolved in one place,
:func:`fit_with_settings` (``fit``'s): the one given, a scheduler address, the current
client, or an embedded LocalCluster.

The objective (scikit-learn SGD's convention), with ``s_i`` the sample weights and ``o_i``
the offsets (0 when there are none)::

    F(w, b) = (1 / sum_i s_i) * sum_i s_i * loss(x_i @ w + b + o_i, y_i)
              + alpha * ((1 - l1_ratio) / 2 * ||w||_2^2 + l1_ratio * ||w||_1)
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from distributed import Client, LocalCluster, get_client

from daskgd.cluster import check_scheduler_async, connect
from daskgd.data import Dataset, FeatureBlocks
from daskgd.driver.connection import client_closed_error, scheduler
from daskgd.driver.docs import FIT_PARAMETERS
from daskgd.driver.features import check_feature_settings, run_feature_job
from daskgd.driver.inputs import check_classes, open_data
from daskgd.driver.job import run_job
from daskgd.driver.result import FitResult
from daskgd.driver.settings import FitSettings
from daskgd.errors import DataValidationError, InvalidSettingError, SchedulerLostError

__all__ = ["fit", "fit_async", "fit_with_settings", "fit_with_settings_async"]

#: fit's arguments that are not settings
_NOT_SETTINGS = ("data", "offset", "client", "validate")


def _settings(arguments: dict[str, Any]) -> FitSettings:
    """The settings among a ``fit``/``fit_async`` call's arguments (its ``locals()``)."""
    return FitSettings(**{k: v for k, v in arguments.items() if k not in _NOT_SETTINGS})


def fit(
    data: Any,
    *,
    loss: str = "squared_error",
    mode: str = "sync",
    optimizer: str = "sgd",
    learning_rate: float | str = "auto",
    lr_schedule: str = "constant",
    power_t: float = 0.25,
    step_size: int = 10,
    gamma: float = 0.5,
    optimizer_options: Mapping[str, float] | None = None,
    batch_size: int | None = None,
    max_epochs: int = 100,
    tol: float | None = 1e-4,
    n_iter_no_change: int = 5,
    gtol: float | None = None,
    gtol_rel: float | None = None,
    max_time: float | None = None,
    alpha: float = 0.0,
    l1_ratio: float = 0.0,
    fit_intercept: bool = True,
    epsilon: float = 0.1,
    power: float = 1.5,
    n_classes: int | None = None,
    coef_init: Any = None,
    intercept_init: Any = None,
    max_staleness: int | None = None,
    staleness_lr: bool = False,
    n_workers: int | None = None,
    n_servers: int | str = "auto",
    placement: str = "auto",
    partition: str = "rows",
    reduction: str = "auto",
    random_state: int | None = None,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    poll_interval: float = 0.05,
    out_of_core: bool = False,
    callback_params: bool = False,
    sync_quorum: int | None = None,
    worker_timeout: float = 60.0,
    member_timeout: float = 600.0,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 10,
    checkpoint_interval: float | None = None,
    resume: bool = False,
    offset: Any = None,
    client: Client | str | os.PathLike[str] | None = None,
    validate: bool = True,
) -> FitResult:
    """Fit a linear model by distributed gradient descent on a Dask cluster.

    The objective is ``(1/sum s_i) sum_i s_i loss_i + alpha*((1-l1_ratio)/2 ||w||^2
    + l1_ratio ||w||_1)``, the intercept unpenalised. A synchronous facade over
    :func:`fit_async`'s core, run on the client's event loop.
    """
    return fit_with_settings(
        data, _settings(locals()), client=client, validate=validate, offset=offset
    )


async def fit_async(
    data: Any,
    *,
    loss: str = "squared_error",
    mode: str = "sync",
    optimizer: str = "sgd",
    learning_rate: float | str = "auto",
    lr_schedule: str = "constant",
    power_t: float = 0.25,
    step_size: int = 10,
    gamma: float = 0.5,
    optimizer_options: Mapping[str, float] | None = None,
    batch_size: int | None = None,
    max_epochs: int = 100,
    tol: float | None = 1e-4,
    n_iter_no_change: int = 5,
    gtol: float | None = None,
    gtol_rel: float | None = None,
    max_time: float | None = None,
    alpha: float = 0.0,
    l1_ratio: float = 0.0,
    fit_intercept: bool = True,
    epsilon: float = 0.1,
    power: float = 1.5,
    n_classes: int | None = None,
    coef_init: Any = None,
    intercept_init: Any = None,
    max_staleness: int | None = None,
    staleness_lr: bool = False,
    n_workers: int | None = None,
    n_servers: int | str = "auto",
    placement: str = "auto",
    partition: str = "rows",
    reduction: str = "auto",
    random_state: int | None = None,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    poll_interval: float = 0.05,
    out_of_core: bool = False,
    callback_params: bool = False,
    sync_quorum: int | None = None,
    worker_timeout: float = 60.0,
    member_timeout: float = 600.0,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 10,
    checkpoint_interval: float | None = None,
    resume: bool = False,
    offset: Any = None,
    client: Client,
    validate: bool = True,
) -> FitResult:
    """The async core of :func:`fit`: ``await fit_async(data, client=async_client, ...)``.

    ``client`` must be an asynchronous :class:`distributed.Client`. The data is opened
    and validated in a thread on the driver.
    """
    return await fit_with_settings_async(data, _settings(locals()), client=client,
                                         validate=validate, offset=offset)  # fmt: skip


fit.__doc__ = (fit.__doc__ or "") + FIT_PARAMETERS
fit_async.__doc__ = (fit_async.__doc__ or "") + FIT_PARAMETERS


async def fit_with_settings_async(
    data: Any,
    settings: FitSettings,
    *,
    client: Client,
    validate: bool = True,
    offset: Any = None,
) -> FitResult:
    """:func:`fit_async` with the settings as one :class:`FitSettings` (the estimators').

    Raises
    ------
    TypeError
        When ``client`` is not an asynchronous :class:`distributed.Client`.
    """
    if not isinstance(client, Client) or not getattr(client, "_asynchronous", False):
        raise TypeError("fit_async needs an asynchronous distributed.Client; use fit otherwise")
    if not isinstance(settings, FitSettings):
        raise TypeError(f"settings must be a FitSettings, got {type(settings).__name__}")
    return await _fit(data, settings, client, validate, check=True, offset=offset)


def fit_with_settings(
    data: Any,
    settings: FitSettings,
    *,
    client: Client | str | os.PathLike[str] | None = None,
    validate: bool = True,
    offset: Any = None,
) -> FitResult:
    """:func:`fit` with the settings as one :class:`FitSettings` (the estimators').

    Resolves the client (see ``client`` in :func:`fit`), runs the async core on its
    event loop and closes what it started.
    """
    if not isinstance(settings, FitSettings):
        raise TypeError(f"settings must be a FitSettings, got {type(settings).__name__}")
    own_cluster = own_client = None
    if isinstance(client, str | os.PathLike):
        resolved = own_client = connect(str(client), set_as_default=False)
    elif client is None:
        try:
            resolved = get_client()
        except ValueError:
            own_cluster = LocalCluster(
                n_workers=os.cpu_count() or 1,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
            )
            resolved = own_client = Client(own_cluster, set_as_default=False)
    elif isinstance(client, Client):
        resolved = client
    else:
        raise TypeError(
            f"client must be a distributed.Client, a scheduler address or None, got "
            f"{type(client).__name__}"
        )
    try:
        # an embedded cluster runs this Python: no need to check that it has daskgd
        result: FitResult = resolved.sync(
            _fit, data, settings, resolved, validate, check=own_cluster is None, offset=offset
        )
        return result
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()


async def _fit(
    data: Any, s: FitSettings, client: Client, validate: bool, *, check: bool, offset: Any = None
) -> FitResult:
    """The core: check the scheduler, open the data, run the job, time it."""
    started = time.perf_counter()
    try:
        if check:  # before the data is opened: its scan runs there too
            await check_scheduler_async(client)
        n_avail = len((await scheduler(client).identity())["workers"])
        if s.n_workers:
            n_avail = min(n_avail, s.n_workers)
        if s.partition != "rows":  # before the data is opened: refuse what it does not run
            s = check_feature_settings(s, data)
        if isinstance(data, FeatureBlocks):
            if s.partition == "rows":
                raise InvalidSettingError(
                    "concat_features() data is partitioned by columns: fit it with "
                    "partition='features' (or 'grid')"
                )
            if offset is not None:
                raise InvalidSettingError(
                    "offset with concat_features() data: store the offsets in the first group"
                )
            check_classes(data.targets, s, client)
            ds: Dataset | FeatureBlocks = data
        else:
            ds = await asyncio.to_thread(
                open_data, data, s, client, validate=validate, n_workers=n_avail, offset=offset
            )
        opened = time.perf_counter() - started
        if s.partition in ("features", "grid"):
            result = await run_feature_job(client, ds, s)
        else:
            assert isinstance(ds, Dataset)
            result = await run_job(client, ds, s)
    except Exception as exc:
        if client.status in ("closing", "closed") and not isinstance(
            exc, DataValidationError | SchedulerLostError
        ):
            raise client_closed_error() from exc
        raise
    result.timings_.update(wall=time.perf_counter() - started, open=opened)
    return result
