"""The parameter server's handlers, driven from a client against an in-process scheduler.

Every test runs on both paths of the server: steps on the event loop (small models) and
in its threads (``inline_max_params=0``, the path of models above the threshold).
"""

import asyncio
import time

import numpy as np
import pytest
from distributed.protocol import ToPickle
from distributed.utils_test import gen_cluster

from daskgd.parameter_server import PLUGIN_NAME, ParameterServer

OPT = {"name": "sgd", "learning_rate": 0.5}
# the session's LocalCluster (tests/conftest.py) may already be running: its worker
# processes and threads are not this test's leak
CLEAN = {"processes": False, "threads": False}
# the jobs' inline_max_params, set per test by the ``path`` fixture
SETTINGS = {"inline_max_params": 16_384}


@pytest.fixture(autouse=True, params=[16_384, 0], ids=["on-loop", "threads"])
def path(request, monkeypatch):
    """Run the test with the jobs' steps on the event loop, then in the server's threads."""
    monkeypatch.setitem(SETTINGS, "inline_max_params", request.param)


async def _create(c, s, job="j", mode="sync", d=3, ranks=None, **config):
    await c.register_plugin(ParameterServer())
    # rank i runs on gen_cluster's worker named i (a, b): registration order varies under load
    ranks = ranks or [w.address for w in sorted(s.workers.values(), key=lambda ws: ws.name)]
    cfg = {"mode": mode, "n_samples": 10 * len(ranks), "max_epochs": 1000, "tol": None,
           **SETTINGS, **config}  # fmt: skip
    reply = await c.scheduler.daskgd_create(
        job=job, params=ToPickle(np.zeros(d + 1)), config=cfg, optimizer=OPT, ranks=ranks
    )
    assert reply["status"] == "OK", reply
    return ranks


def _push(c, job, rank, version, grad, n=10, weight=10.0, loss=1.0):
    return c.scheduler.daskgd_push(
        job=job,
        rank=rank,
        version=version,
        grad=ToPickle(np.asarray(grad, dtype=float)),
        n=n,
        weight=weight,
        loss=loss,
    )


async def _arrived(s, job, rank):
    """Wait until ``rank``'s gradient is in the open sync round of ``job`` (an event the
    test needs before it goes on; no fixed sleep)."""
    j = s.plugins[PLUGIN_NAME].jobs[job]
    while rank not in j.pending:
        await asyncio.sleep(0.005)


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_plugin_installs_and_removes_handlers(c, s, a, b):
    await c.register_plugin(ParameterServer())
    await c.register_plugin(ParameterServer())  # idempotent
    assert "daskgd_push" in s.handlers
    assert list((await c.scheduler.daskgd_info())["jobs"]) == []
    await s.plugins[PLUGIN_NAME].close()
    assert not any(k.startswith("daskgd_") for k in s.handlers)


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_sync_round_is_row_weighted_mean(c, s, a, b):
    await _create(c, s)
    first = asyncio.ensure_future(_push(c, "j", 0, 0, [1, 2, 3, 4], weight=10.0))
    await _arrived(s, "j", 0)
    assert not first.done()  # waits for rank 1
    second = await _push(c, "j", 1, 0, [3, 6, 9, 12], weight=30.0)
    r0 = await first
    assert r0["status"] == second["status"] == "OK"
    assert r0["version"] == 1
    # mean gradient = (g0 + g1) / 40 = [0.1, 0.2, 0.3, 0.4]; lr 0.5
    np.testing.assert_allclose(second["params"], [-0.05, -0.1, -0.15, -0.2])
    job = s.plugins[PLUGIN_NAME].jobs["j"]
    assert job.epochs == 1 and job.history[0]["loss"] == pytest.approx(2 / 40)
    # a gradient for an old version is answered with the current params
    stale = await _push(c, "j", 0, 0, [1, 1, 1, 1])
    assert stale["status"] == "stale" and stale["version"] == 1


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_sync_round_does_not_wait_for_a_removed_worker(c, s, a, b):
    await _create(c, s)
    pending = asyncio.ensure_future(_push(c, "j", 0, 0, [1, 1, 1, 1]))
    await _arrived(s, "j", 0)
    await s.remove_worker(b.address, stimulus_id="test")  # rank 1 leaves: no waiting for it
    reply = await asyncio.wait_for(pending, 20)
    assert reply["status"] == "OK" and reply["version"] == 1
    # the rerun task joins from another worker and gets the current state
    joined = await c.scheduler.daskgd_join(job="j", rank=1, worker=a.address)
    assert joined["version"] == 1 and joined["position"] == 1


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_async_applies_each_push_and_records_staleness(c, s, a, b):
    await _create(c, s, mode="async", n_samples=20)
    r1 = await _push(c, "j", 0, 0, [10, 0, 0, 0])
    assert r1["version"] == 1
    r2 = await _push(c, "j", 1, 0, [10, 0, 0, 0])  # computed at 0, applied at 1
    assert r2["version"] == 2
    np.testing.assert_allclose(r2["params"][0], -1.0)
    h = (await c.scheduler.daskgd_status(job="j"))["history"]
    assert len(h) == 1 and h[0]["staleness_max"] == 1 and h[0]["staleness_min"] == 0
    assert sum(h[0]["worker_updates"].values()) == 2


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_ssp_fast_worker_waits_for_the_slow_one(c, s, a, b):
    await _create(c, s, mode="ssp", max_staleness=1, n_samples=1000)
    await _push(c, "j", 0, 0, [0, 0, 0, 0])  # clock 1 vs 0: within the bound
    blocked = asyncio.ensure_future(_push(c, "j", 0, 1, [0, 0, 0, 0]))  # clock 2 vs 0
    await asyncio.sleep(0.3)
    assert not blocked.done()
    await _push(c, "j", 1, 2, [0, 0, 0, 0])  # the slow member catches up to clock 1
    reply = await asyncio.wait_for(blocked, 5)
    assert reply["status"] == "OK"


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_bad_messages_change_nothing(c, s, a, b):
    await _create(c, s, mode="async")
    job = s.plugins[PLUGIN_NAME].jobs["j"]
    before = job.params
    bad = [
        {"job": "nope"},
        {"rank": 7},
        {"rank": "0"},
        {"version": 5},
        {"version": -1},
        {"grad": ToPickle(np.zeros(9))},
        {"grad": ToPickle(np.zeros(4, dtype=np.int64))},
        {"grad": [0.0, 0.0, 0.0, 0.0]},
        {"n": 0},
        {"weight": float("nan")},
    ]
    for change in bad:
        msg = {
            "job": "j",
            "rank": 0,
            "version": 0,
            "grad": ToPickle(np.zeros(4)),
            "n": 10,
            "weight": 10.0,
            "loss": 1.0,
            **change,
        }
        reply = await c.scheduler.daskgd_push(**msg)
        assert reply["status"] == "error", change
        assert reply["message"]
    assert job.params is before and job.version == 0 and not job.stopped
    assert (
        await c.scheduler.daskgd_create(
            job="j", params=ToPickle(np.zeros(4)), config={}, optimizer=OPT, ranks=["x"]
        )
    )["status"] == "error"
    reply = await c.scheduler.daskgd_create(
        job="k", params=ToPickle(np.zeros(4)), config={"mode": "bsp"}, optimizer=OPT, ranks=["x"]
    )
    assert reply["status"] == "error" and "mode" in reply["message"]


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_non_finite_gradient_stops_with_divergence(c, s, a, b):
    await _create(c, s, mode="async")
    reply = await _push(c, "j", 0, 0, [np.inf, 0, 0, 0])
    assert reply["status"] == "stopped" and reply["error_kind"] == "divergence"
    assert "learning_rate" in reply["error"]
    np.testing.assert_array_equal(reply["params"], 0.0)


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_jobs_are_isolated_and_freed(c, s, a, b):
    await _create(c, s, job="one", mode="async")
    await _create(c, s, job="two", mode="async")
    await _push(c, "one", 0, 0, [1, 1, 1, 1])
    two = await c.scheduler.daskgd_pull(job="two")
    assert two["version"] == 0
    np.testing.assert_array_equal(two["params"], 0.0)
    final = await c.scheduler.daskgd_close(job="one")
    assert final["version"] == 1
    assert list((await c.scheduler.daskgd_info())["jobs"]) == ["two"]
    assert (await c.scheduler.daskgd_pull(job="one"))["status"] == "error"


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_stop_rules(c, s, a, b):
    await _create(c, s, job="e", mode="async", n_samples=10, max_epochs=3)
    for v in range(3):
        reply = await _push(c, "e", 0, v, [0, 0, 0, 0])
    assert reply["status"] == "stopped" and "max_epochs" in reply["reason"]
    await _create(c, s, job="g", mode="async", n_samples=20, gtol=1e-3)
    for rank in range(2):  # an epoch only counts once every rank contributed
        reply = await _push(c, "g", rank, rank, [0, 0, 0, 0])
    # async full batch: the test, met on gradients taken at different parameters, is
    # checked at one point (confirm.py): each rank's gradient at the current version
    st = await c.scheduler.daskgd_status(job="g")
    assert not st["stopped"]
    v = reply["version"]
    stale = await _push(c, "g", 0, v - 1, [9, 9, 9, 9])  # not at the check's version: dropped
    assert stale["status"] == "OK" and stale["version"] == v
    replies = await asyncio.gather(*(_push(c, "g", r, v, [0, 0, 0, 0]) for r in range(2)))
    assert all(r["status"] == "stopped" for r in replies)
    st = await c.scheduler.daskgd_status(job="g")
    assert st["stopped"] and st["converged"] and "gtol" in st["reason"]
    assert "confirmed at version" in st["reason"]
    await _create(c, s, job="u", mode="sync")
    st = await c.scheduler.daskgd_stop(job="u", reason="enough")
    assert st["stopped"] and st["reason"] == "enough"


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_unknown_job_is_told_apart_from_a_bad_message(c, s, a, b):
    await _create(c, s)
    reply = await _push(c, "gone", 0, 0, [0, 0, 0, 0])
    assert reply["status"] == "error" and reply["kind"] == "unknown_job"
    reply = await _push(c, "j", 7, 0, [0, 0, 0, 0])  # no rank 7
    assert reply["status"] == "error" and reply["kind"] == "bad_message"


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_status_waits_for_the_next_epoch(c, s, a, b):
    """``status(wait=...)`` answers when an epoch closes, and at once when there is news."""
    await _create(c, s, mode="async", ranks=[a.address])  # an epoch: 10 rows, one push
    t0 = time.monotonic()
    st = await c.scheduler.daskgd_status(job="j", since=0, wait=0.2)
    assert len(st["history"]) == 0 and time.monotonic() - t0 >= 0.15  # nothing new: it waited
    waiting = asyncio.ensure_future(c.scheduler.daskgd_status(job="j", since=0, wait=30))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    assert (await _push(c, "j", 0, 0, [1, 1, 1, 1]))["status"] == "OK"
    st = await asyncio.wait_for(waiting, 5)  # woken by the epoch, long before 30 s
    assert len(st["history"]) == 1
    t0 = time.monotonic()
    await c.scheduler.daskgd_status(job="j", since=0, wait=30)  # news: no wait
    assert time.monotonic() - t0 < 5
    for bad in ({"wait": -1}, {"wait": "x"}, {"since": -2}, {"since": "0"}):
        assert (await c.scheduler.daskgd_status(job="j", **bad))["status"] == "error"


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_quorum_round_closes_on_k_gradients_and_counts_the_late_ones(c, s, a, b):
    await _create(c, s, sync_quorum=1)
    # rank 1 alone makes the quorum: the step is its gradient, weighted by its rows only
    first = await asyncio.wait_for(_push(c, "j", 1, 0, [3, 6, 9, 12], n=30, weight=30.0), 5)
    assert first["status"] == "OK" and first["version"] == 1
    np.testing.assert_allclose(first["params"], [-0.05, -0.1, -0.15, -0.2])  # 0.5 * g / 30
    late = await _push(c, "j", 0, 0, [100, 100, 100, 100])  # rank 0's round has closed
    assert late["status"] == "stale" and late["version"] == 1
    np.testing.assert_array_equal(late["params"], first["params"])  # dropped, not applied
    st = await c.scheduler.daskgd_status(job="j")
    assert st["dropped_gradients"] == 1
    # with 2 of 2 the round waits for both again (the quorum is only a lower bound)
    await _create(c, s, job="k", sync_quorum=2)
    pending = asyncio.ensure_future(_push(c, "k", 0, 0, [1, 1, 1, 1]))
    await _arrived(s, "k", 0)
    assert not pending.done()
    await _push(c, "k", 1, 0, [1, 1, 1, 1])
    assert (await asyncio.wait_for(pending, 5))["version"] == 1


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_quorum_is_checked_against_members_and_lbfgs(c, s, a, b):
    await c.register_plugin(ParameterServer())
    ranks = [a.address, b.address]

    async def create(job, quorum, optimizer=OPT, mode="sync"):
        cfg = {"mode": mode, "n_samples": 20, "sync_quorum": quorum, **SETTINGS}
        return await c.scheduler.daskgd_create(
            job=job, params=ToPickle(np.zeros(4)), config=cfg, optimizer=optimizer, ranks=ranks
        )

    reply = await create("a", 3)
    assert reply["status"] == "error" and "2 member" in reply["message"]
    reply = await create("b", 0)
    assert reply["status"] == "error" and "sync_quorum" in reply["message"]
    reply = await create("c", 1, mode="async")
    assert reply["status"] == "error" and "mode='sync'" in reply["message"]
    lbfgs = {"name": "lbfgs", "learning_rate": 1.0}
    reply = await create("d", 1, optimizer=lbfgs)
    assert reply["status"] == "error" and "lbfgs" in reply["message"]
    assert (await create("e", 2, optimizer=lbfgs))["status"] == "OK"


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_one_vs_rest_class_losses_in_the_history(c, s, a, b):
    """A job with one column per class takes each push's per-class losses; the epoch's row
    has each class's objective (its mean loss plus its column's penalty), summing to the
    row's loss. A bad ``class_loss`` is refused and changes nothing."""
    await c.register_plugin(ParameterServer())
    ranks = [w.address for w in sorted(s.workers.values(), key=lambda ws: ws.name)]
    P0 = np.ones((3, 2))  # d = 2, k = 2 classes
    opt = {**OPT, "alpha": 0.5}  # L2 penalty 0.25 * ||column||^2 (intercept excluded)
    cfg = {"mode": "async", "n_samples": 20, "max_epochs": 1000, "tol": None, **SETTINGS}
    reply = await c.scheduler.daskgd_create(
        job="o", params=ToPickle(P0), config=cfg, optimizer=opt, ranks=ranks
    )
    assert reply["status"] == "OK", reply

    def push(rank, version, class_loss):
        return c.scheduler.daskgd_push(
            job="o", rank=rank, version=version, grad=ToPickle(np.zeros((3, 2))), n=10,
            weight=10.0, loss=float(np.sum(class_loss)), class_loss=ToPickle(class_loss),
        )  # fmt: skip

    for bad in (np.ones(3), np.ones((2, 1)), np.array([1, 2])):
        r = await push(0, 0, bad)
        assert r["status"] == "error" and "class_loss" in r["message"], r
    assert (await push(0, 0, np.array([1.0, 3.0])))["status"] == "OK"
    assert (await push(1, 1, np.array([2.0, 4.0])))["status"] == "OK"
    row = (await c.scheduler.daskgd_status(job="o"))["history"][0]
    # mean losses [3, 7] / 20, plus each column's penalty 0.25 * ||w||^2 at the epoch's
    # close, after the first push's step: the weight decay made each weight 1 - 0.5 * 0.5
    penalty = 0.25 * 2 * 0.75**2
    np.testing.assert_allclose(row["class_loss"], [3 / 20 + penalty, 7 / 20 + penalty])
    assert row["loss"] == pytest.approx(sum(row["class_loss"]))
    # a job with one column has no classes
    await _create(c, s, job="j1")
    r = await _push_with_classes(c, "j1", np.ones(1))
    assert r["status"] == "error" and "one-vs-rest" in r["message"]


def _push_with_classes(c, job, class_loss):
    return c.scheduler.daskgd_push(
        job=job, rank=0, version=0, grad=ToPickle(np.zeros(4)), n=10, weight=10.0, loss=1.0,
        class_loss=ToPickle(class_loss),
    )  # fmt: skip


def test_gen_cluster_tests_leave_the_session_cluster_alone(cluster):
    """A ``gen_cluster`` test (``processes=False``) run while the session cluster is up
    leaves its worker processes alone (distributed's sweep would kill them; see
    tests/conftest.py), so the tests after it keep their workers."""
    import os

    from distributed import Client

    with Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=60)
        pids = c.run(os.getpid)

    @gen_cluster(client=True, clean_kwargs=CLEAN)
    async def in_process_cluster(c, s, a, b):
        await _create(c, s)

    in_process_cluster()
    with Client(cluster, set_as_default=False) as c:
        assert c.run(os.getpid) == pids
