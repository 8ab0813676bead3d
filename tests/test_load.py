"""Load: eight training loops push to one parameter server at once; no update lost or doubled.

Eight threads each play one rank, pushing over a TCP comm to an in-process scheduler (so its
log can be read) for a bounded time (async, ssp) or number of rounds (sync). Every
acknowledged push must have been applied exactly once: the job's version and its per-rank
update counts equal what the clients counted. Each mode runs on both paths of the server:
steps on the event loop (small models) and in its threads (``inline_max_params=0``, the
path of large models).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
import pytest
from distributed import Client, LocalCluster
from distributed.protocol import ToPickle

from daskgd.parameter_server import PLUGIN_NAME, ParameterServer

N_TASKS = 8
TARGET = np.array([1.0, -2.0, 3.0, 0.5])


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@pytest.fixture(scope="module")
def loaded():
    errors = _Errors()
    loggers = [
        logging.getLogger(n) for n in ("distributed.scheduler", "distributed.core", "daskgd")
    ]
    for lg in loggers:
        lg.addHandler(errors)
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            protocol="tcp://",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        client.register_plugin(ParameterServer())
        yield client, cluster, errors
    for lg in loggers:
        lg.removeHandler(errors)


SYNC_ROUNDS = 150


def _run_load(
    client: Client, cluster: LocalCluster, mode: str, seconds: float, inline: int = 16384
) -> dict[str, Any]:
    job = f"load-{mode}-{inline}"
    worker = next(iter(cluster.scheduler.workers))  # every rank live: ssp really waits
    config = {"mode": mode, "n_samples": 50, "max_epochs": 10**9, "tol": None}
    config["inline_max_params"] = inline
    if mode == "ssp":
        config.update(max_staleness=2, ssp_timeout=2.0)
    reply = client.sync(
        client.scheduler.daskgd_create,
        job=job,
        params=ToPickle(np.zeros(4)),
        config=config,
        # sync: one step per round, so a larger step reaches the target in SYNC_ROUNDS
        optimizer={"name": "sgd", "learning_rate": 0.1 if mode == "sync" else 0.01},
        ranks=[worker] * N_TASKS,
    )
    assert reply["status"] == "OK", reply
    sent = [0] * N_TASKS
    acked = [0] * N_TASKS
    other: list[dict] = []
    deadline = time.monotonic() + seconds

    def loop(rank: int) -> None:
        w, version = np.zeros(4), 0
        # sync: a member that stopped pushing would hold up the round, so sync runs a
        # number of rounds rather than a time
        while version < SYNC_ROUNDS if mode == "sync" else time.monotonic() < deadline:
            sent[rank] += 1
            r = client.sync(
                client.scheduler.daskgd_push,
                job=job,
                rank=rank,
                version=version,
                grad=ToPickle(w - TARGET),
                n=1,
                weight=1.0,
                loss=float(np.sum((w - TARGET) ** 2) / 2),
                worker=worker,
            )
            if r["status"] != "OK":
                other.append(r)
                return
            acked[rank] += 1
            w, version = r["params"], r["version"]

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(N_TASKS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    final = client.sync(client.scheduler.daskgd_close, job=job)
    return {"sent": sent, "acked": acked, "other": other, "final": final}


def _check(out: dict[str, Any], errors: _Errors, client: Client, mode: str) -> None:
    final = out["final"]
    assert out["other"] == [], out["other"][:3]
    assert out["sent"] == out["acked"]
    assert min(out["acked"]) > 0
    assert list(final["rank_updates"]) == out["acked"]
    if mode == "sync":  # every rank in every round, one step per round
        assert out["acked"] == [SYNC_ROUNDS] * N_TASKS
        assert final["version"] == SYNC_ROUNDS
        assert sum(h["updates"] for h in final["history"]) <= N_TASKS * SYNC_ROUNDS
    else:  # each acknowledged push was applied once: one version step each
        assert final["version"] == sum(out["acked"])
        assert sum(h["updates"] for h in final["history"]) <= sum(out["acked"])
    assert not final["stopped"] or final["reason"] == "closed by the driver"
    np.testing.assert_allclose(final["params"], TARGET, atol=1e-3)
    assert errors.records == []
    logs = client.get_scheduler_logs(n=1000)
    assert not [m for level, m in logs if level in ("ERROR", "CRITICAL")]
    assert PLUGIN_NAME in client.run_on_scheduler(
        lambda dask_scheduler: list(dask_scheduler.plugins)
    )


@pytest.mark.parametrize("inline", [16384, 0], ids=["on-loop", "threads"])
@pytest.mark.parametrize("mode", ["sync", "async", "ssp"])
def test_eight_tasks_push_without_loss(loaded, mode, inline, reliability):
    client, cluster, errors = loaded
    out = _run_load(client, cluster, mode, 3.0, inline)
    _check(out, errors, client, mode)
    reliability.add("load-test pushes acknowledged", sum(out["acked"]))


@pytest.mark.stress
@pytest.mark.parametrize("inline", [16384, 0], ids=["on-loop", "threads"])
@pytest.mark.parametrize("mode", ["sync", "async", "ssp"])
def test_eight_tasks_push_without_loss_stress(loaded, mode, inline, reliability):
    client, cluster, errors = loaded
    out = _run_load(client, cluster, mode, 60.0, inline)
    _check(out, errors, client, mode)
    reliability.add("load-test pushes acknowledged", sum(out["acked"]))
