"""The driver: ``fit`` and its async twin ``fit_async``.

One fit: connect to a cluster, install the parameter server on the scheduler
(:mod:`daskgd.parameter_server`, idempotent), create a job, plan which row-chunks
each worker trains on, submit one training task per worker
(:mod:`daskgd.worker.task`), watch the job until it stops, pull the final
parameters and free the job.

The objective (scikit-learn SGD's convention), with ``s_i`` the sample weights::

    F(w, b) = (1 / sum_i s_i) * sum_i s_i * loss(x_i @ w + b, y_i)
              + alpha * ((1 - l1_ratio) / 2 * ||w||_2^2 + l1_ratio * ||w||_1)

The implementation is async (:func:`fit_async`); :func:`fit` runs it on the
client's event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from distributed import Client, LocalCluster
from distributed.protocol import ToPickle

from daskgd.cluster import check_scheduler, check_scheduler_async, connect
from daskgd.errors import (
    CheckpointError,
    DataNotFoundError,
    DataValidationError,
    DivergenceError,
    NoWorkersError,
    SchedulerLostError,
    SchedulerSetupError,
    TrainingError,
)
from daskgd.objective.losses import curvature_bound, get_loss
from daskgd.objective.optimizers import make_optimizer
from daskgd.parameter_server import JobConfig, ParameterServer, check_quorum

__all__ = ["FitResult", "fit", "fit_async"]

_SETUP_TIMEOUT = 30.0
_OVR_LOSSES = ("hinge", "squared_hinge", "log_loss")


@dataclass
class FitResult:
    """What a fit returns.

    Attributes
    ----------
    coef_ : ndarray of shape (d,) or (d, k)
    intercept_ : float or ndarray of shape (k,)
    n_iter_ : int
        Epochs completed (passes over the data).
    n_updates_ : int
        Parameter updates the aggregator applied.
    converged_ : bool
        True when the fit stopped at an optimum: the gradient test (``gtol``,
        ``gtol_rel``) held; or, with exact gradients (sync, full batch), the loss stalled
        (``tol``) with the gradient norm below ``sqrt(tol)`` times its norm at the start;
        or, in stochastic fits (mini-batches, async, ssp, ``sync_quorum``), the loss
        stalled (scikit-learn SGD's rule). A stalled loss with a large gradient, and
        ``max_epochs``, ``max_time`` or a callback, stop the fit unconverged.
    history : list of dict
        Per epoch: ``epoch``, ``loss`` (the objective: for full batch, exact at the
        parameters of that round; for mini-batches, the mean of the batch losses over
        the epoch, as scikit-learn's SGD reports), ``grad_norm``, ``time`` (seconds
        since the start), ``updates``, ``version``, ``staleness_min/mean/max``,
        ``worker_updates`` (worker address -> updates) and ``complete`` (every
        partition contributed) and ``dropped_gradients`` (sync: gradients that arrived
        after their round had closed, in this epoch).
    reason : str
        Why the fit stopped.
    timings_ : dict
        Where the time went, in seconds: ``wall`` (the whole fit, from opening the data
        to the result), ``open`` (opening and, with ``validate``, checking the data),
        ``setup`` (installing the parameter server, creating the job,
        submitting the tasks) and, per training task that ended normally, ``ranks``: a
        list of dicts with ``load`` (joining and reading its rows), ``kernel``
        (gradients) and ``push`` (communication, the aggregator's steps and, in sync
        mode, waiting for the round's other members).
    dropped_gradients_ : int
        Sync mode: gradients dropped because their round had closed without them (with
        ``sync_quorum``, the stragglers' gradients; else a worker wrongly thought dead).
    learning_rate_ : float or None
        The initial step size the fit used: the one given, or the one
        ``learning_rate="auto"`` computed; None for ``optimizer="lbfgs"``.
    """

    coef_: np.ndarray
    intercept_: float | np.ndarray
    n_iter_: int
    n_updates_: int
    converged_: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    timings_: dict[str, Any] = field(default_factory=dict)
    dropped_gradients_: int = 0
    learning_rate_: float | None = None

    @property
    def loss_(self) -> float:
        """The objective in the last epoch (nan when no epoch completed)."""
        return self.history[-1]["loss"] if self.history else float("nan")


@dataclass(frozen=True)
class _Settings:
    loss: str
    epsilon: float
    mode: str
    optimizer: dict[str, Any]
    config: dict[str, Any]
    batch_size: int | None
    n_classes: int | None
    coef_init: Any
    intercept_init: Any
    n_workers: int | None
    seed: int
    progress: bool
    callback: Any
    poll_interval: float
    out_of_core: bool = False
    worker_timeout: float = 60.0
    # testing hook (the private ``_delay`` fit setting): rank -> seconds slept per step
    delay: dict[int, float] | None = None
    checkpoint: str | None = None
    checkpoint_every: int = 10
    checkpoint_interval: float | None = None
    resume: bool = False
    auto_lr: bool = False
    # one-vs-rest (the private ``_one_vs_rest`` fit setting): n_classes binary problems in
    # one job, one column of the parameters per class, the targets class indices
    one_vs_rest: bool = False
    # False for the estimators' fits: they checked the labels, and a one-vs-rest target of
    # a partial_fit batch may hold one class only
    check_labels: bool = True


def _scheduler(client: Client) -> Any:
    """The client's RPC handle on the scheduler (where the daskgd_* handlers live)."""
    if client.scheduler is None:
        raise TrainingError("the Dask client is not connected to a scheduler")
    return client.scheduler


async def _setup(client: Client) -> None:
    """Install the parameter server and check daskgd imports on every worker."""
    try:
        await asyncio.wait_for(client.register_plugin(ParameterServer()), _SETUP_TIMEOUT)
    except Exception as exc:
        raise SchedulerSetupError(
            f"the Dask scheduler at {_scheduler(client).address} cannot run daskgd's "
            f"parameter server ({type(exc).__name__}: {exc}). Install daskgd (the same "
            "version) in the scheduler's and every worker's Python environment."
        ) from exc
    from daskgd.worker.task import probe

    try:
        await asyncio.wait_for(client.run(probe), _SETUP_TIMEOUT)
    except Exception as exc:
        raise SchedulerSetupError(
            f"a Dask worker cannot import daskgd ({type(exc).__name__}: {exc}). Install "
            "daskgd in every worker's Python environment."
        ) from exc


def _sources(client: Client, ds, plan: dict[str, list[int]]) -> dict[str, tuple]:
    """Per worker: read chunks from Zarr there, or compute the blocks there."""
    if ds.path is not None:
        return {
            w: ("zarr", ds.path, c, ds.storage_options, [ds.chunks[i] for i in c])
            for w, c in plan.items()
        }
    import dask

    from daskgd.worker import contiguous_block

    Xs = ds.X.to_delayed().ravel()
    ys = ds.y.to_delayed().ravel()
    ws = None if ds.sample_weight is None else ds.sample_weight.to_delayed().ravel()
    out = {}
    for w, chunks in plan.items():
        blocks = [
            dask.delayed(contiguous_block, pure=True)(Xs[i], ys[i], None if ws is None else ws[i])
            for i in chunks
        ]
        out[w] = ("blocks", client.compute(blocks, workers=[w], allow_other_workers=True))
    return out


def _label_encoding(ds, s: _Settings) -> list | None:
    """The dataset's sorted class labels when the workers must encode them, else None.

    Binary classification losses take -1/+1 and the multinomial loss takes 0..k-1; a
    dataset that records other labels (0/1, strings of numbers) is encoded as it is read.
    """
    if not get_loss(s.loss).classification or ds.classes_ is None:
        return None
    classes = np.sort(np.asarray(ds.classes_))
    k = len(classes)
    if s.n_classes is None and k > 2:
        raise DataValidationError(
            f"loss={s.loss!r} is binary but the data has {k} classes; pass n_classes={k} "
            "with loss='log_loss' (multinomial), or use SGDClassifier (one-vs-rest)"
        )
    if s.n_classes is not None and k != s.n_classes:
        raise DataValidationError(f"n_classes={s.n_classes} but the data has {k} classes")
    expected = np.arange(k) if s.n_classes is not None else np.array([-1, 1][-k:])
    if k == len(expected) and np.array_equal(classes, expected):
        return None  # already in the kernel's encoding
    return classes.tolist()


def _check_classes(ds, s: _Settings, client: Any = None) -> None:
    """A classification loss needs class labels, of at least two classes (as the estimators).

    Runs before the job is created (on the error path it may take a pass over ``y``).
    """
    if not get_loss(s.loss).classification or not s.check_labels:
        return
    if ds.classes_ is None:
        from daskgd.data.dataset import _no_classes_reason

        raise DataValidationError(
            f"loss={s.loss!r} is a classification loss but {_no_classes_reason(ds.y, client)}; "
            "use loss='squared_error' or 'huber' for a regression target"
        )
    if len(ds.classes_) < 2:
        raise DataValidationError(
            f"loss={s.loss!r} needs samples of at least 2 classes, but y holds only one: "
            f"{np.asarray(ds.classes_).tolist()!r}; a classifier cannot learn from one class"
        )


def _chunk_rows(data, n_workers: int) -> int | None:
    """For in-memory numpy input: one chunk per worker, so every worker gets rows."""
    if not isinstance(data, tuple | list) or not data:
        return None
    X = data[0]
    if not isinstance(X, np.ndarray) or X.ndim != 2 or X.shape[0] == 0:
        return None
    return max(1, -(-X.shape[0] // max(1, n_workers)))


def _initial_params(ds, s: _Settings) -> np.ndarray:
    d = ds.n_features
    shape: tuple[int, ...] = (d + 1,) if not s.n_classes else (d + 1, s.n_classes)
    P = np.zeros(shape)
    if s.coef_init is not None:
        coef = np.asarray(s.coef_init, dtype=np.float64)
        if coef.shape != (d, *shape[1:]):
            raise ValueError(f"coef_init has shape {coef.shape}; expected {(d, *shape[1:])}")
        P[:d] = coef
    if s.intercept_init is not None:
        P[d] = np.asarray(s.intercept_init, dtype=np.float64)
    if not np.all(np.isfinite(P)):
        raise ValueError("coef_init and intercept_init must be finite")
    return P


async def _run_job(client: Client, ds, s: _Settings) -> FitResult:
    started = time.perf_counter()
    await _setup(client)
    workers = await _some_workers(client, s.worker_timeout)
    if s.n_workers is not None:
        workers = workers[: s.n_workers]
    if s.out_of_core and ds.path is None:
        raise ValueError(
            "out_of_core=True streams row-chunks from a Zarr store; pass a Zarr path, or "
            "write the arrays with daskgd.write_zarr first"
        )
    plan = {w: c for w, c in ds.partition(workers).items() if c}
    ranks = list(plan)
    rows = [sum(ds.chunks[i] for i in plan[w]) for w in ranks]
    if s.batch_size is None:
        nb = 1
    else:
        nb = max(1, round(ds.n_samples / (len(ranks) * s.batch_size)))
        nb = min(nb, min(rows))
    config = dict(s.config, n_samples=int(ds.n_samples), batches_per_epoch=int(nb))
    # raise here, not on the scheduler
    check_quorum(JobConfig(**config), make_optimizer(**s.optimizer), len(ranks))
    P0 = _initial_params(ds, s)
    writer, resume = await _checkpoint_setup(ds, s, config, len(ranks))
    if resume is not None:
        P0 = resume["params"]
    job = f"daskgd-{uuid.uuid4().hex}"
    reply = await _scheduler(client).daskgd_create(
        job=job,
        params=ToPickle(P0),
        config=config,
        optimizer=s.optimizer,
        ranks=ranks,
        client=client.id,
        resume=None if resume is None else ToPickle(resume),
    )
    if reply["status"] != "OK":
        if resume is not None and "resume" in str(reply.get("message")):
            raise CheckpointError(f"{s.checkpoint}: {reply['message']}")
        raise ValueError(reply["message"])
    spec = {
        "classes": _label_encoding(ds, s),
        "loss": s.loss,
        "epsilon": s.epsilon,
        "curvature": {"intercept": s.optimizer["fit_intercept"]} if s.auto_lr else None,
        "batches_per_epoch": nb,
        "seed": s.seed,
        "mode": s.mode,
        "out_of_core": s.out_of_core,
        "delay": dict(s.delay or {}),
        "one_vs_rest": s.one_vs_rest,
    }
    futures = []
    try:
        sources = _sources(client, ds, plan)
        for rank, w in enumerate(ranks):
            futures.append(
                client.submit(
                    _train_entry,
                    job,
                    rank,
                    sources[w],
                    spec,
                    workers=[w],
                    allow_other_workers=True,
                    pure=False,
                    key=f"daskgd-train-{rank}-{job}",
                )
            )
        setup = time.perf_counter() - started
        history = await _watch(client, job, futures, s, writer)
        if writer is not None:
            await _final_checkpoint(client, job, s, writer)
        final = await _rpc(client, writer, "daskgd_close", job=job)
        if final.get("status") != "OK":
            raise TrainingError(f"the job vanished from the scheduler: {final.get('message')}")
        tasks = await _drain(client, futures)
    except SchedulerLostError:
        raise  # nothing to clean up on a scheduler that is gone
    except BaseException:
        if writer is not None:  # a write in flight ends before the caller can resume
            try:
                await writer.flush()
            except Exception:
                pass
        await _abort(client, job, futures)
        raise
    history += list(final["history"][len(history) :])
    if writer is not None:
        history = writer.prior + history
    if final["error"]:
        cls = DivergenceError if final["error_kind"] == "divergence" else TrainingError
        raise cls(final["error"])
    P = np.asarray(final["params"])
    d = ds.n_features
    intercept = P[d].copy() if P.ndim == 2 else float(P[d])
    return FitResult(
        coef_=P[:d].copy(),
        intercept_=intercept,
        n_iter_=int(final["epochs"]),
        n_updates_=int(final["version"]),
        converged_=bool(final["converged"]),
        history=[dict(h) for h in history],
        reason=final["reason"],
        timings_={
            "setup": setup,
            "ranks": [t["seconds"] for t in sorted(tasks, key=lambda t: t["rank"])],
        },
        dropped_gradients_=int(final.get("dropped_gradients", 0)),
        learning_rate_=None if s.optimizer["name"] == "lbfgs" else final.get("learning_rate"),
    )


async def _some_workers(client: Client, timeout: float) -> list[str]:
    """The scheduler's workers, sorted; wait up to ``timeout`` seconds for a first one."""
    deadline = time.monotonic() + timeout
    while True:
        workers = sorted((await _scheduler(client).identity())["workers"])
        if workers:
            return workers
        if time.monotonic() >= deadline:
            raise NoWorkersError(
                f"the cluster has no workers: none joined in worker_timeout={timeout:g} s. "
                "Start some (or let the cluster scale up), or pass a larger worker_timeout"
            )
        await asyncio.sleep(min(0.2, timeout))


def _no_workers_error(gone_for: float, timeout: float) -> NoWorkersError:
    return NoWorkersError(
        f"every worker of this fit was lost: the scheduler has had no worker for "
        f"{gone_for:.1f} s (worker_timeout={timeout:g} s). Start workers, find out why they "
        "died (memory limits, killed processes: see the workers' logs), or pass a larger "
        "worker_timeout to wait longer for them to come back"
    )


# -- checkpoints and scheduler loss --------------------------------------------------------------

#: Seconds the driver keeps retrying a scheduler whose connection failed (closed, refused)
#: before it gives up with SchedulerLostError; a call that gets no answer at all (a hung
#: scheduler or machine) gives up after _RPC_TIMEOUT, so a slow scheduler is not "lost".
_SCHEDULER_GRACE = 10.0
_RPC_TIMEOUT = 30.0


def _lost(client: Client, writer: Any, exc: BaseException) -> SchedulerLostError:
    address = getattr(client.scheduler, "address", "?")
    if writer is not None and writer.epoch is not None:
        where = (
            f"The last checkpoint is {writer.path} (epoch {writer.epoch}): resume with "
            f"fit(..., checkpoint={writer.path!r}, resume=True) on a new cluster."
        )
    elif writer is not None:
        where = (
            f"No checkpoint was written to {writer.path} yet; fit(..., checkpoint="
            f"{writer.path!r}, resume=True) on a new cluster starts afresh."
        )
    else:
        where = (
            "The fit had no checkpoint; pass checkpoint='path.zarr' to make a fit resumable "
            "with fit(..., checkpoint='path.zarr', resume=True) on a new cluster."
        )
    # a timeout has no text of its own: say what it means
    reason = str(exc).strip() or (
        "the scheduler did not answer in time"
        if isinstance(exc, TimeoutError)
        else "no further detail"
    )
    return SchedulerLostError(
        f"lost the Dask scheduler at {address} during the fit "
        f"({type(exc).__name__}: {reason}). {where}",
        checkpoint=None if writer is None else writer.path,
        epoch=None if writer is None else writer.epoch,
    )


async def _rpc(client: Client, writer: Any, op: str, **kwargs: Any) -> Any:
    """Call a daskgd handler; a scheduler that does not answer for _SCHEDULER_GRACE s is lost."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _SCHEDULER_GRACE
    timeout = _RPC_TIMEOUT
    while True:
        try:
            return await asyncio.wait_for(getattr(_scheduler(client), op)(**kwargs), timeout)
        except (OSError, TimeoutError) as exc:  # CommClosedError is an OSError
            # after a failure, a reconnection may hang in connect (distributed retries
            # refused connections for its whole connect timeout): bound it by the grace
            timeout = max(0.5, min(_RPC_TIMEOUT, deadline - loop.time()))
            if "wait" in kwargs:  # a retried status must answer at once, within the grace
                kwargs["wait"] = 0.0
            if client.status in ("closing", "closed"):  # closed by its owner, not lost
                raise _client_closed() from exc
            if loop.time() >= deadline:
                if writer is not None:
                    try:  # a write in flight finishes first, so the message is exact
                        await writer.flush()
                    except Exception:
                        pass
                raise _lost(client, writer, exc) from exc
            await asyncio.sleep(0.5)


def _client_closed() -> TrainingError:
    return TrainingError(
        "the Dask client was closed while fit was running; keep it open until fit "
        "returns (its job on the scheduler was freed)"
    )


async def _status(client: Client, job: str, since: int, s: _Settings, writer: Any) -> dict:
    # waits on the scheduler up to poll_interval for the next epoch or the stop
    wait = min(s.poll_interval, _RPC_TIMEOUT / 2)
    return await _rpc(client, writer, "daskgd_status", job=job, since=since, wait=wait)


async def _checkpoint_tick(client: Client, job: str, st: dict, s: _Settings, writer) -> None:
    """Start writing the job's newest snapshot, unless a write is still in flight."""
    if writer.busy:
        return
    fresh = (
        s.checkpoint_interval is not None
        and time.monotonic() - writer.written_at >= s.checkpoint_interval
    )
    if not fresh and st.get("snapshot_seq", 0) <= writer.seq:
        return
    reply = await _rpc(
        client, writer, "daskgd_snapshot", job=job, fresh=fresh, since=len(writer.rows)
    )
    if reply["status"] == "OK" and reply["snapshot"] is not None and reply["seq"] > writer.seq:
        writer.start(reply)


async def _final_checkpoint(client: Client, job: str, s: _Settings, writer) -> None:
    """When the fit ends: wait for the write in flight, then write the final state.

    A failed (diverged) job has no final state worth resuming: its last periodic
    checkpoint stays the newest.
    """
    await writer.flush()  # first: its rows are in writer.rows
    reply = await _rpc(
        client, writer, "daskgd_snapshot", job=job, fresh=True, since=len(writer.rows)
    )
    await writer.flush(reply if reply["status"] == "OK" else None)


def _checkpoint_config(ds, s: _Settings, config: dict[str, Any]) -> dict[str, Any]:
    """The job's settings stored with each checkpoint (JSON)."""
    from daskgd._version import __version__

    return {
        "n_features": int(ds.n_features),
        "n_samples": int(ds.n_samples),
        "loss": s.loss,
        "n_classes": s.n_classes,
        "epsilon": s.epsilon,
        "mode": s.mode,
        "batch_size": s.batch_size,
        "seed": s.seed,
        "optimizer": s.optimizer,
        "job": {k: v for k, v in config.items()},
        "data": ds.path,
        "daskgd_version": __version__,
    }


def _check_compatible(ck, cfg: dict[str, Any]) -> None:
    old = ck.config
    for key, what in (
        ("n_features", "features (d)"),
        ("loss", "loss"),
        ("n_classes", "classes"),
    ):
        if old.get(key) != cfg[key]:
            raise CheckpointError(
                f"the checkpoint {ck.path} is from a fit with {what} {old.get(key)!r}; this "
                f"fit has {cfg[key]!r}. Resume with the same data and settings, or use "
                "another checkpoint path (or resume=False to overwrite it)"
            )
    old_opt = (old.get("optimizer") or {}).get("name")
    if old_opt != cfg["optimizer"]["name"]:
        raise CheckpointError(
            f"the checkpoint {ck.path} holds the state of optimizer {old_opt!r}; this fit "
            f"uses {cfg['optimizer']['name']!r}. Resume with the same optimizer"
        )


async def _checkpoint_setup(ds, s: _Settings, config: dict[str, Any], n_ranks: int):
    """(writer or None, the resume snapshot or None) for this fit."""
    if s.checkpoint is None:
        return None, None
    from daskgd.checkpoint import CheckpointWriter, load_checkpoint

    cfg = _checkpoint_config(ds, s, config)
    ck = None
    if s.resume:
        try:
            ck = await asyncio.to_thread(load_checkpoint, s.checkpoint)
        except FileNotFoundError:
            ck = None  # nothing to resume from: start fresh
    if ck is None:
        return CheckpointWriter(s.checkpoint, cfg), None
    _check_compatible(ck, cfg)
    writer = CheckpointWriter(s.checkpoint, cfg, prior_history=ck.history)
    writer.epoch = ck.epoch
    if ck.params.shape != _initial_params_shape(ds, s):
        raise CheckpointError(
            f"the checkpoint {ck.path} has parameters of shape {ck.params.shape}; this fit "
            f"needs {_initial_params_shape(ds, s)}"
        )
    resume = {
        "params": ck.params,
        "state": ck.state,
        "version": ck.version,
        "epochs": ck.epoch,
        "progress": ck.progress,
    }
    return writer, resume


def _initial_params_shape(ds, s: _Settings) -> tuple[int, ...]:
    d = ds.n_features
    return (d + 1,) if not s.n_classes else (d + 1, s.n_classes)


def _train_entry(job, rank, source, spec):
    from daskgd.worker.task import train_partition

    return train_partition(job, rank, source, spec)


async def _watch(
    client: Client, job: str, futures: list, s: _Settings, writer: Any = None
) -> list[dict]:
    """Poll the job until it stops; surface failed tasks as a TrainingError.

    With a checkpoint ``writer``, start writing each new snapshot of the job (and a
    fresh one every ``checkpoint_interval`` seconds); a scheduler that stops answering
    raises :class:`~daskgd.errors.SchedulerLostError`.
    """
    history: list[dict] = []
    bar = None
    gone_since: float | None = None  # when the job was last seen without a live member
    if s.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=s.config["max_epochs"], unit="epoch", desc="daskgd")
    try:
        while True:
            st = await _status(client, job, len(history), s, writer)
            if st["status"] != "OK":
                raise TrainingError(f"the job vanished from the scheduler: {st.get('message')}")
            if writer is not None and not st["stopped"]:
                await _checkpoint_tick(client, job, st, s, writer)
            for h in st["history"]:
                params = h.pop("params", None)
                history.append(dict(h))
                if params is not None:
                    h = dict(h, coef=params[:-1], intercept=params[-1])
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{h['loss']:.6g}")
                if s.callback is not None and s.callback(dict(h)) is False:
                    await _rpc(client, writer, "daskgd_stop", job=job,
                               reason="stopped by the callback")  # fmt: skip
            if st["stopped"]:
                return history
            # every worker gone: no member alive and none to rerun a task on (a rerun
            # that is still loading its rows on a new worker does not count)
            if st["live"] or st.get("n_workers", 0):
                gone_since = None
            elif gone_since is None:
                gone_since = time.monotonic()
            elif time.monotonic() - gone_since > s.worker_timeout:
                raise _no_workers_error(time.monotonic() - gone_since, s.worker_timeout)
            for f in futures:
                if f.status == "error":
                    exc = await f.exception()
                    if isinstance(exc, DataValidationError | DataNotFoundError):
                        raise exc  # the data, not the training: its message names the chunk
                    raise TrainingError(f"training task {f.key} failed: {exc!r}") from exc
                if f.status == "cancelled":
                    raise TrainingError(f"training task {f.key} was cancelled")
            if all(f.status == "finished" for f in futures):
                # the job may have stopped between our poll and the tasks' exit
                st = await _rpc(client, writer, "daskgd_status", job=job)
                if not st.get("stopped"):
                    raise TrainingError("every training task ended before the job stopped")
                continue
    finally:
        if bar is not None:
            bar.close()


async def _drain(client: Client, futures: list, timeout: float = 30.0) -> list[dict]:
    """Let the tasks see ``stopped`` and end; cancel what is left (e.g. a queued rerun).

    Returns what the tasks that ended normally returned.
    """
    results: list[dict] = []
    try:
        results = await asyncio.wait_for(client.gather(futures, errors="skip"), timeout)
    except TimeoutError:
        pass
    await client.cancel(futures)
    return results


async def _abort(client: Client, job: str, futures: list) -> None:
    """Free the job and cancel its tasks, best effort: the error that got us here wins."""
    try:
        await asyncio.wait_for(_scheduler(client).daskgd_close(job=job), 5.0)
    except Exception:
        pass
    try:
        if futures:
            await asyncio.wait_for(client.cancel(futures), 5.0)
    except Exception:
        pass


def _check_seconds(name: str, value: Any, alternatives: str = "") -> None:
    """Refuse anything but a finite number of seconds > 0 (bools included)."""
    if isinstance(value, bool) or not (
        isinstance(value, int | float) and math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be {alternatives}a number of seconds > 0, got {value!r}")


def _settings(
    *,
    loss,
    mode,
    optimizer,
    learning_rate,
    lr_schedule,
    power_t,
    step_size,
    gamma,
    optimizer_options,
    batch_size,
    max_epochs,
    tol,
    n_iter_no_change,
    gtol,
    gtol_rel,
    max_time,
    alpha,
    l1_ratio,
    fit_intercept,
    epsilon,
    n_classes,
    coef_init,
    intercept_init,
    max_staleness,
    staleness_lr,
    n_workers,
    random_state,
    progress,
    callback,
    poll_interval,
    out_of_core,
    callback_params,
    sync_quorum,
    worker_timeout,
    checkpoint,
    checkpoint_every,
    checkpoint_interval,
    resume,
) -> _Settings:
    info = get_loss(loss)
    if n_classes is not None:
        if not (isinstance(n_classes, int) and n_classes >= 2) or info.name != "log_loss":
            raise ValueError("n_classes (an integer >= 2) is for the multinomial log_loss only")
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(
            f"batch_size must be None (full batch) or an integer >= 1, got {batch_size!r}"
        )
    if not isinstance(callback_params, bool):
        raise TypeError(f"callback_params must be True or False, got {callback_params!r}")
    if not isinstance(out_of_core, bool):
        raise TypeError(f"out_of_core must be True or False, got {out_of_core!r}")
    if optimizer == "lbfgs" and (mode != "sync" or batch_size is not None):
        raise ValueError(
            "optimizer='lbfgs' needs mode='sync' and full batches (batch_size=None): its "
            "line search compares exact losses of the whole data"
        )
    if n_workers is not None and not (isinstance(n_workers, int) and n_workers >= 1):
        raise ValueError(f"n_workers must be None or an integer >= 1, got {n_workers!r}")
    if mode != "ssp" and max_staleness is not None:
        raise ValueError("max_staleness applies to mode='ssp' only")
    if sync_quorum is not None and mode != "sync":
        raise ValueError(f"sync_quorum applies to mode='sync' only, not mode={mode!r}")
    if sync_quorum is not None and not (
        isinstance(sync_quorum, int | np.integer)
        and not isinstance(sync_quorum, bool)
        and sync_quorum >= 1
    ):
        raise ValueError(
            f"sync_quorum must be None (every live worker) or an integer >= 1, got {sync_quorum!r}"
        )
    _check_seconds("worker_timeout", worker_timeout)
    if checkpoint is not None:
        if not isinstance(checkpoint, str | os.PathLike):
            raise TypeError(f"checkpoint must be None or a path, got {type(checkpoint).__name__}")
        from daskgd.checkpoint import local_path

        checkpoint = os.fspath(local_path(checkpoint))
    if isinstance(checkpoint_every, bool) or not (
        isinstance(checkpoint_every, int) and checkpoint_every >= 1
    ):
        raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
    if checkpoint_interval is not None:
        _check_seconds("checkpoint_interval", checkpoint_interval, "None or ")
    _check_seconds("poll_interval", poll_interval)
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be True or False, got {resume!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<the path the earlier fit wrote>")
    auto_lr = isinstance(learning_rate, str) and learning_rate == "auto"
    opt = {
        "name": optimizer,
        # "auto": the parameter server sets the step once the workers measured the data
        "learning_rate": 1.0 if auto_lr else learning_rate,
        "lr_schedule": lr_schedule,
        "power_t": power_t,
        "step_size": step_size,
        "gamma": gamma,
        "alpha": alpha,
        "l1_ratio": l1_ratio,
        "fit_intercept": bool(fit_intercept),
        "options": dict(optimizer_options or {}),
    }
    make_optimizer(**opt)  # raise bad settings here, with the user's argument names
    config = {
        "mode": mode,
        "max_epochs": max_epochs,
        "tol": tol,
        "n_iter_no_change": n_iter_no_change,
        "gtol": gtol,
        "gtol_rel": gtol_rel,
        "max_time": max_time,
        "max_staleness": max_staleness,
        "staleness_lr": bool(staleness_lr),
        "record_params": callback_params,
        "sync_quorum": None if sync_quorum is None else int(sync_quorum),
        "checkpoint_every": checkpoint_every if checkpoint is not None else None,
        "auto_lr": auto_lr and optimizer != "lbfgs",  # L-BFGS takes no step size
        "loss_curvature": curvature_bound(info.name, bool(n_classes and n_classes > 2)),
        "smooth": info.name != "hinge",
    }
    JobConfig(**config)
    if random_state is None:
        seed = int(np.random.default_rng().integers(2**63 - 1))
    elif isinstance(random_state, int | np.integer) and random_state >= 0:
        seed = int(random_state)
    else:
        raise ValueError(f"random_state must be None or an integer >= 0, got {random_state!r}")
    return _Settings(
        loss=info.name,
        epsilon=float(epsilon),
        mode=mode,
        optimizer=opt,
        config=config,
        batch_size=batch_size,
        n_classes=n_classes if n_classes and n_classes > 2 else None,
        coef_init=coef_init,
        intercept_init=intercept_init,
        n_workers=n_workers,
        seed=seed,
        progress=progress,
        callback=callback,
        poll_interval=float(poll_interval),
        out_of_core=out_of_core,
        worker_timeout=float(worker_timeout),
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        checkpoint_interval=None if checkpoint_interval is None else float(checkpoint_interval),
        resume=resume,
        auto_lr=bool(config["auto_lr"]),
    )


_DOC_PARAMS = """
    Parameters
    ----------
    data : Dataset, str, os.PathLike or tuple
        A :class:`daskgd.data.Dataset`, a Zarr path/URL, or ``(X, y)`` /
        ``(X, y, sample_weight)`` of numpy or dask arrays.
    loss : str, default="squared_error"
        ``squared_error``, ``huber``, ``log_loss``, ``hinge`` or ``squared_hinge``.
        Binary classification losses take ``y`` in ``{-1, +1}``.
    mode : {"sync", "async", "ssp"}, default="sync"
        ``sync``: every live worker's gradient at version v, their row-weighted
        mean, one step (deterministic for a fixed seed and worker count);
        ``async``: each gradient applied on arrival; ``ssp``: async, but a worker
        more than ``max_staleness`` pushes ahead of the slowest one waits.
    optimizer : {"sgd", "momentum", "nesterov", "adagrad", "adam", "lbfgs"}, default="sgd"
        ``lbfgs``: limited-memory BFGS with a line search on the exact loss, one pass
        over the data per round; sync mode, full batches and no L1 penalty only. It
        ignores ``learning_rate`` and converges in far fewer epochs than the others.
    learning_rate : float or "auto", default="auto"
        The initial step size. ``"auto"``: ``1 / L``, with ``L`` a bound on the
        curvature of the objective that the workers compute from their rows while they
        load them (the largest eigenvalue of their ``A^T W A``, ``A`` the rows with a
        column of ones for the intercept, exactly up to 1,024 parameters and by power
        iteration above; out of core, the trace above that size), times the loss's
        curvature bound, plus ``alpha * (1 - l1_ratio)``; mini-batches add the mean
        squared row norm over the rows behind one step, and async/ssp divide the step by
        the number of workers (the delay of a gradient). Full-batch gradient descent
        cannot diverge with it; ``FitResult.learning_rate_`` holds the value.
    lr_schedule : {"constant", "invscaling", "step"}, default="constant"
        ``invscaling``: ``lr / (1 + t) ** power_t`` (t = updates so far);
        ``step``: ``lr * gamma ** (epoch // step_size)``.
    power_t, step_size, gamma : schedule settings
    optimizer_options : dict, optional
        ``momentum`` (momentum, nesterov; 0.9), ``beta1``/``beta2``/``eps`` (adam),
        ``eps`` (adagrad), ``memory`` (lbfgs; 10).
    batch_size : int or None, default=None
        Rows per worker per gradient; None is full batch (gradient descent).
    max_epochs : int, default=100
    tol : float or None, default=1e-4
        Stop when the epoch loss improved by less than ``tol`` (relative to the best)
        for ``n_iter_no_change`` epochs in a row.
    n_iter_no_change : int, default=5
    gtol : float or None, default=None
        Stop when the (proximal) gradient norm of the objective is at most ``gtol``.
    gtol_rel : float or None, default=None
        Stop when that norm is at most ``gtol_rel`` times its norm at the starting
        parameters (measured by the workers on their first batch before any step).
    max_time : float or None, default=None
        Time budget in seconds; the fit stops (not converged) when it is used up.
    alpha : float, default=0.0
        Regularisation strength.
    l1_ratio : float, default=0.0
        Elastic-net mixing: 0 is L2, 1 is L1 (a proximal step: exact zeros).
    fit_intercept : bool, default=True
    epsilon : float, default=0.1
        Huber loss width.
    n_classes : int, optional
        With ``loss="log_loss"`` and ``n_classes > 2``: the multinomial loss, ``y``
        holding class indices.
    coef_init, intercept_init : array-like, optional
        Starting point (default zeros).
    max_staleness : int, optional
        The bound of ``ssp`` mode (required there).
    sync_quorum : int, optional
        Sync mode with backup workers: a round closes once this many workers pushed
        their gradient (1 <= sync_quorum <= workers; None waits for every live worker)
        and steps with the row-weighted mean of those gradients; the late ones are
        dropped and counted (``FitResult.dropped_gradients_``). Each round then sees a
        subset of the partitions: full batch becomes a stochastic method, whose fixed
        point favours the partitions of the faster workers (as in ``async``), so shuffle
        rows across chunks; ``tol``/``gtol`` only look at epochs where every partition
        contributed, so keep ``max_epochs`` or ``max_time`` as the stop. Refused with
        ``optimizer="lbfgs"`` below every worker (its line search needs the whole data).
    staleness_lr : bool, default=False
        Async/ssp: divide the learning rate by the staleness of each gradient.
    client : distributed.Client, str or None
        A client, a scheduler address (``"tcp://host:8786"``), or None: the current
        client, else an embedded LocalCluster (one single-threaded worker process per
        core) started and closed by this call.
    n_workers : int, optional
        Use at most this many workers.
    random_state : int, optional
        Seeds the mini-batch order.
    validate : bool, default=True
        Scan the data for non-finite values first.
    progress : bool, default=False
        Show a progress bar (needs tqdm).
    callback : callable, optional
        Called with each epoch's history row; returning False stops the fit.
    callback_params : bool, default=False
        Give ``callback`` each epoch's parameters too, as the row's ``coef`` and
        ``intercept`` (those of the round that closed the epoch); for scoring held-out
        data during the fit.
    worker_timeout : float, default=60.0
        Seconds to wait when the cluster has no worker left (every one died and none came
        back, or there is none at the start) before raising
        :class:`daskgd.errors.NoWorkersError`.
    out_of_core : bool, default=False
        Zarr data only: each training task reads its row-chunks from the store every
        epoch, one chunk in memory at a time, instead of loading them once; for data
        larger than the cluster's memory. Mini-batches then come from a per-epoch
        shuffle of the chunks and of the rows within each chunk.
    checkpoint : str or os.PathLike, optional
        A Zarr group on a local or shared filesystem (e.g. ``"fit.zarr"``) to write
        checkpoints to: parameters, optimizer state, version, epoch, history and the
        settings, written atomically (a crash mid-write leaves the previous one) by the
        driver, off the scheduler. A final checkpoint is written when the fit ends. See
        :mod:`daskgd.checkpoint`.
    checkpoint_every : int, default=10
        Write a checkpoint every this many epochs (passes over the data).
    checkpoint_interval : float, optional
        Also write one when this many seconds passed since the last (mid-epoch for
        mini-batch fits).
    resume : bool, default=False
        Continue from the newest checkpoint at ``checkpoint``: parameters, optimizer
        state, epoch and update counters, stop-rule counters; the history is appended
        to. ``max_epochs`` counts all epochs, before and after the resume. With no
        checkpoint there yet, the fit starts fresh. A checkpoint from a fit with other
        features, loss, classes or optimizer is refused (``CheckpointError``).

    Returns
    -------
    FitResult

    Raises
    ------
    ValueError
        On bad settings or data (:class:`daskgd.errors.DataValidationError`).
    DivergenceError
        When the loss or gradient became non-finite, or the loss of an epoch exceeded
        1,000 times its value before the first step (the larger of the loss at the
        starting parameters and at zero), in every mode.
    SchedulerSetupError
        When the scheduler or a worker cannot import daskgd (checked before the data is
        opened), or a ``tls://`` address comes without TLS credentials.
    TrainingError
        When a training task failed or the job vanished.
    NoWorkersError
        (a ``TrainingError``) When every worker was gone for ``worker_timeout`` seconds.
    SchedulerLostError
        When the scheduler died (noticed within about 10 s) or stopped answering (30 s);
        the message names the last checkpoint and its epoch.
    CheckpointError
        When ``resume=True`` meets a checkpoint from an incompatible fit.
"""


def _defaults():
    return {
        "loss": "squared_error",
        "mode": "sync",
        "optimizer": "sgd",
        "learning_rate": "auto",
        "lr_schedule": "constant",
        "power_t": 0.25,
        "step_size": 10,
        "gamma": 0.5,
        "optimizer_options": None,
        "batch_size": None,
        "max_epochs": 100,
        "tol": 1e-4,
        "n_iter_no_change": 5,
        "gtol": None,
        "gtol_rel": None,
        "max_time": None,
        "alpha": 0.0,
        "l1_ratio": 0.0,
        "fit_intercept": True,
        "epsilon": 0.1,
        "n_classes": None,
        "coef_init": None,
        "intercept_init": None,
        "max_staleness": None,
        "staleness_lr": False,
        "n_workers": None,
        "random_state": None,
        "progress": False,
        "callback": None,
        "poll_interval": 0.05,
        "out_of_core": False,
        "callback_params": False,
        "sync_quorum": None,
        "worker_timeout": 60.0,
        "checkpoint": None,
        "checkpoint_every": 10,
        "checkpoint_interval": None,
        "resume": False,
    }


def _make_settings(kwargs: dict[str, Any]) -> _Settings:
    """Settings from ``fit``'s keyword arguments, with the private hooks.

    ``_one_vs_rest=True`` with ``n_classes=k`` (private, for the estimators): k binary
    problems (hinge, squared_hinge or log_loss), "class j against the rest", trained as
    one job: ``y`` holds class indices, the parameters have one column per class, each
    round steps every column. The objective is the sum of the k binary objectives, which
    are separable, so each column follows its own binary problem; the history rows carry
    each class's objective as ``class_loss``.

    ``_delay={rank: seconds}`` (private, for tests of stragglers): the training task of
    each listed rank sleeps that long before every push, wherever it runs (a rerun task
    keeps its rank's delay). Not a public option: it only slows a fit down.
    """
    kwargs = dict(kwargs)
    delay = kwargs.pop("_delay", None)
    one_vs_rest = kwargs.pop("_one_vs_rest", False)
    k = kwargs.pop("n_classes", None) if one_vs_rest else None
    labels_checked = kwargs.pop("_labels_checked", False)
    s = _settings(**_split_kwargs(kwargs))
    if one_vs_rest:
        if not (isinstance(k, int) and k > 2) or s.loss not in _OVR_LOSSES:
            raise ValueError(
                f"one-vs-rest takes n_classes > 2 and a binary loss ({', '.join(_OVR_LOSSES)}); "
                f"got n_classes={k!r}, loss={s.loss!r}"
            )
        if s.checkpoint is not None:
            raise ValueError("checkpoint= is not available for one-vs-rest fits")
        s = replace(s, n_classes=k, one_vs_rest=True)
    if labels_checked:
        s = replace(s, check_labels=False)
    if delay is None:
        return s
    if not isinstance(delay, dict) or not all(
        isinstance(r, int) and isinstance(t, int | float) and math.isfinite(t) and t >= 0
        for r, t in delay.items()
    ):
        raise ValueError(f"_delay must be a dict rank -> seconds >= 0, got {delay!r}")
    return replace(s, delay={int(r): float(t) for r, t in delay.items()})


def _split_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    known = _defaults()
    unknown = set(kwargs) - set(known)
    if unknown:
        raise TypeError(f"fit() got unexpected keyword argument(s): {sorted(unknown)}")
    known.update(kwargs)
    return known


def _with_settings_signature(func):
    """Show every setting of :func:`_defaults` in ``func``'s signature (help(), IDEs).

    ``fit`` and ``fit_async`` take the settings as ``**kwargs`` so that one list,
    ``_defaults``, serves both; this writes that list into their signatures.
    """
    sig = inspect.signature(func)
    fixed = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    settings = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value)
        for name, value in _defaults().items()
    ]
    func.__signature__ = sig.replace(parameters=[fixed[0], *settings, *fixed[1:]])
    return func


@_with_settings_signature
def fit(data, *, client=None, validate: bool = True, **kwargs: Any) -> FitResult:
    """Fit a linear model by distributed gradient descent on a Dask cluster.

    The objective is ``(1/sum s_i) sum_i s_i loss_i + alpha*((1-l1_ratio)/2 ||w||^2
    + l1_ratio ||w||_1)``, the intercept unpenalised.
    """
    s = _make_settings(kwargs)
    own_cluster = own_client = None
    if isinstance(client, str | os.PathLike):
        client = own_client = connect(str(client), set_as_default=False)
    elif client is None:
        try:
            from distributed import get_client

            client = get_client()
        except ValueError:
            own_cluster = LocalCluster(
                n_workers=os.cpu_count() or 1,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
            )
            client = own_client = Client(own_cluster, set_as_default=False)
    elif not isinstance(client, Client):
        raise TypeError(
            f"client must be a distributed.Client, a scheduler address or None, got "
            f"{type(client).__name__}"
        )
    try:
        from daskgd.data.dataset import as_dataset

        started = time.perf_counter()
        if own_cluster is None:  # before the data is opened: its scan runs there too
            check_scheduler(client)
        n_avail = len(client.scheduler_info()["workers"])
        if s.n_workers:
            n_avail = min(n_avail, s.n_workers)
        ds = as_dataset(
            data, validate=validate, client=client, chunk_rows=_chunk_rows(data, n_avail)
        )
        _check_classes(ds, s, client)
        opened = time.perf_counter() - started
        return _timed(client.sync(_run_job, client, ds, s), started, opened)
    except Exception as exc:
        if client.status in ("closing", "closed") and not isinstance(
            exc, DataValidationError | SchedulerLostError
        ):
            raise _client_closed() from exc
        raise
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()


@_with_settings_signature
async def fit_async(data, *, client: Client, validate: bool = True, **kwargs: Any) -> FitResult:
    """The async twin of :func:`fit`: ``await fit_async(data, client=async_client, ...)``.

    ``client`` must be an asynchronous :class:`distributed.Client`. The data is
    opened and validated in a thread on the driver.
    """
    s = _make_settings(kwargs)
    if not isinstance(client, Client) or not getattr(client, "_asynchronous", False):
        raise TypeError("fit_async needs an asynchronous distributed.Client; use fit otherwise")
    from daskgd.data.dataset import as_dataset

    started = time.perf_counter()
    await check_scheduler_async(client)
    n_avail = len((await _scheduler(client).identity())["workers"])
    if s.n_workers:
        n_avail = min(n_avail, s.n_workers)

    def _open():
        import dask

        with dask.config.set(scheduler="threads"):
            ds = as_dataset(data, validate=validate, chunk_rows=_chunk_rows(data, n_avail))
            _check_classes(ds, s)
            return ds

    ds = await asyncio.to_thread(_open)
    opened = time.perf_counter() - started
    return _timed(await _run_job(client, ds, s), started, opened)


def _timed(result: FitResult, started: float, opened: float) -> FitResult:
    result.timings_.update(wall=time.perf_counter() - started, open=opened)
    return result


fit.__doc__ = (fit.__doc__ or "") + _DOC_PARAMS
fit_async.__doc__ = (fit_async.__doc__ or "") + _DOC_PARAMS
