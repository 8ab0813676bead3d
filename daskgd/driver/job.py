"""One job on the parameter server: install it, create the job, submit one training task per
worker of the plan, watch it to the end and build the result; abort it on an error."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from distributed import Client, Future

from daskgd.data import Dataset
from daskgd.driver.checkpointing import final_checkpoint, setup_checkpoint
from daskgd.driver.connection import RPC_TIMEOUT, call, scheduler, some_workers
from daskgd.driver.keyed import drop_shards, gather_shards, is_keyed, keyed_fit_settings
from daskgd.driver.monitor import abort, check_unchanged_data, drain, watch
from daskgd.driver.placement import (
    check_latency,
    check_memory,
    final_plan,
    initial_params,
    label_encoding,
    plan_placement,
    sources,
)
from daskgd.driver.result import FitResult, build_result
from daskgd.driver.servers import resolve_servers
from daskgd.driver.settings import FitSettings
from daskgd.errors import (
    CheckpointError,
    InvalidSettingError,
    ResumeRejectedError,
    SchedulerLostError,
    SchedulerSetupError,
)
from daskgd.parameter_server import (
    ParameterServer,
    ParameterServerClient,
    check_quorum,
    make_settings,
)
from daskgd.parameter_server.keyed_job import keyed_settings
from daskgd.parameter_server.kshard import KeyedShardServer
from daskgd.parameter_server.shard import ShardServer
from daskgd.worker import probe, train_partition

__all__ = ["SETUP_TIMEOUT", "install", "run_job"]

#: Seconds the scheduler and the workers have to answer the setup.
SETUP_TIMEOUT = 30.0


async def install(client: Client) -> None:
    """Install the parameter server (idempotent) and check daskgd imports on every worker."""
    try:
        await asyncio.wait_for(client.register_plugin(ParameterServer()), SETUP_TIMEOUT)
    except Exception as exc:
        raise SchedulerSetupError(
            f"the Dask scheduler at {scheduler(client).address} cannot run daskgd's "
            f"parameter server ({type(exc).__name__}: {exc}). Install daskgd (the same "
            "version) in the scheduler's and every worker's Python environment."
        ) from exc
    try:
        await asyncio.wait_for(client.run(probe), SETUP_TIMEOUT)
    except Exception as exc:
        raise SchedulerSetupError(
            f"a Dask worker cannot import daskgd ({type(exc).__name__}: {exc}). Install "
            "daskgd in every worker's Python environment."
        ) from exc


async def place_shards(
    client: Client, s: FitSettings, n_params: int, workers: list[str], keyed: bool = False
):
    """The workers that hold the parameter shards (None: the model stays on the scheduler),
    with the shard servers (key-hashed ones for a key-value fit) installed on every worker."""
    k = resolve_servers(s, n_params, len(workers), keyed)
    if k == 0:
        return None
    try:
        plugin = KeyedShardServer() if keyed else ShardServer()
        await asyncio.wait_for(client.register_plugin(plugin), SETUP_TIMEOUT)
    except Exception as exc:
        raise SchedulerSetupError(
            f"the workers cannot run daskgd's parameter shards ({type(exc).__name__}: {exc}). "
            "Install daskgd (the same version) in every worker's Python environment, or use "
            "n_servers=0"
        ) from exc
    # spread over the workers, which also train: one shard per worker
    return [workers[round(i * len(workers) / k)] for i in range(k)]


async def run_job(client: Client, ds: Dataset, s: FitSettings) -> FitResult:
    """Train on ``ds`` with the settings ``s``; the parameter server's job is freed after."""
    started = time.perf_counter()
    s = s.resolved(ds.n_features, sparse=ds.is_sparse)  # optimizer="auto": the data decides
    if ds.is_sparse and s.optimizer == "newton":
        raise InvalidSettingError(
            "optimizer='newton' needs dense data (its Hessian is a dense d x d matrix); use "
            "optimizer='lbfgs' (or 'auto', which picks it) for sparse data"
        )
    await install(client)
    workers = await some_workers(client, s.worker_timeout)
    if s.n_workers is not None:
        workers = workers[: s.n_workers]
    if s.out_of_core and ds.path is None:
        raise InvalidSettingError(
            "out_of_core=True streams row-chunks from a Zarr store; pass a Zarr path, or "
            "write the arrays with daskgd.write_zarr first"
        )
    keyed = is_keyed(ds, s)  # sparse mini-batches: pushes and pulls by key
    if keyed:
        s = keyed_fit_settings(s)
    if s.placement == "latency":
        check_latency(ds, s, keyed)
    known = (await scheduler(client).identity())["workers"]
    mini_batch = s.batch_size is not None
    plan = await plan_placement(client, ds, workers, s.placement, known,
                                streamed=s.out_of_core, mini_batch=mini_batch)  # fmt: skip
    limits = {w: info.get("memory_limit") for w, info in known.items()}
    check_memory(ds, plan, limits, streamed=s.out_of_core, mini_batch=mini_batch)
    ranks = list(plan)
    nb = s.batches_per_epoch(ds.n_samples, [sum(ds.chunks[i] for i in plan[w]) for w in ranks])
    config = s.job_config(n_samples=ds.n_samples, batches_per_epoch=nb)
    if s.placement == "latency":  # the server moves chunks between the ranks
        config["rebalance"] = {"assignment": [list(plan[w]) for w in ranks],
                               "chunk_rows": [int(c) for c in ds.chunks]}  # fmt: skip
    P0 = initial_params(ds, s)
    # the parameter server's rules, raised here rather than on the scheduler
    try:
        if keyed:
            keyed_settings(config, s.optimizer_spec(), len(ranks))
        else:
            check_quorum(*make_settings(P0, config, s.optimizer_spec()), len(ranks))
    except ValueError as exc:
        raise InvalidSettingError(str(exc)) from None
    spec = s.worker_spec(classes=label_encoding(ds, s), batches_per_epoch=nb)
    writer, resume = await setup_checkpoint(ds, s, config)
    if resume is not None:
        P0 = resume["params"]
    shards = await place_shards(client, s, P0.size, ranks, keyed)  # workers that train
    # full-batch L-BFGS scales its steps by the data's column squares (its
    # ``precondition`` option), which the tasks measure as they load
    precondition = bool((s.optimizer_options or {}).get("precondition", True))
    spec["column_squares"] = s.optimizer == "lbfgs" and precondition
    spec["loss_curvature"] = config["loss_curvature"]
    if s.placement == "latency":
        spec["chunk_rows"] = [int(c) for c in ds.chunks]
    job = f"daskgd-{uuid.uuid4().hex}"
    ps = ParameterServerClient.from_client(client, job, timeout=RPC_TIMEOUT)
    try:
        if keyed:
            spec["keyed"] = {"shape": P0.shape, "shards": shards}
            warm = s.coef_init is not None or s.intercept_init is not None
            await ps.kcreate(ds.n_features, s.n_columns, config, s.optimizer_spec(), ranks,
                             client=client.id, params=P0 if warm else None,
                             shards=shards)  # fmt: skip
        else:
            await ps.create(P0, config, s.optimizer_spec(), ranks, client=client.id,
                            resume=resume, shards=shards)  # fmt: skip
    except ResumeRejectedError as exc:
        raise CheckpointError(f"{s.checkpoint}: {exc}") from exc
    futures: list[Future] = []
    final: dict[str, Any] = {}
    try:
        where = sources(client, ds, plan)
        for rank, w in enumerate(ranks):
            futures.append(
                client.submit(
                    train_partition,
                    job,
                    rank,
                    where[w],
                    spec,
                    workers=[w],
                    allow_other_workers=True,
                    pure=False,
                    key=f"daskgd-train-{rank}-{job}",
                )
            )
        setup = time.perf_counter() - started
        history = await watch(client, ps, futures, s, writer)
        if writer is not None:
            await final_checkpoint(client, ps, writer)
        # the rows after those the driver holds (the job may have stopped mid-poll)
        # a sharded key-value model is read from its shards directly, not via the scheduler
        final = await call(client, writer, ps.close, since=len(history),
                           gather=not (keyed and shards))  # fmt: skip
        tasks = await drain(client, futures)
        await check_unchanged_data([ds])
        if final.get("kshards"):
            final["params"] = await gather_shards(client, job, final["kshards"], P0.shape)
    except SchedulerLostError:
        raise  # nothing to clean up on a scheduler that is gone
    except BaseException:
        if writer is not None:  # a write in flight ends before the caller can resume
            try:
                await writer.flush()
            except Exception:
                pass
        await abort(client, ps, futures)
        if final.get("kshards") and final.get("params") is None:  # closed, not yet read
            await drop_shards(client, job, final["kshards"])
        raise
    history += list(final["history"])
    if writer is not None:
        history = writer.prior + history
    timings: dict[str, Any] = {
        "setup": setup,
        "ranks": [t["seconds"] for t in sorted(tasks, key=lambda t: t["rank"])],
        "push_bytes": [t["push_bytes"] for t in sorted(tasks, key=lambda t: t["rank"])],
    }
    if keyed:  # the bytes of the weights each task received
        timings["pull_bytes"] = [t["pull_bytes"] for t in sorted(tasks, key=lambda t: t["rank"])]
    return build_result(
        final,
        history,
        n_features=ds.n_features,
        lbfgs=s.optimizer in ("lbfgs", "newton"),  # no learning rate
        timings=timings,
        plan=final_plan(plan, tasks) if s.placement == "latency" else plan,
        servers=shards,
    )
