"""The parameter server under concurrent calls, on both of its paths (steps on the event
loop, and in its threads for large models): no step after the stop, leases, zombie tasks,
a driver that disconnects, snapshots. Against an in-process scheduler, so that a test can
look inside the plugin; waits are on events or conditions, never on timings."""

import asyncio
import itertools

import numpy as np
import pytest
from distributed import Client
from distributed.protocol import ToPickle
from distributed.utils_test import gen_cluster

from daskgd.errors import SupersededError
from daskgd.parameter_server import PLUGIN_NAME, ParameterServer, ParameterServerClient

OPT = {"name": "sgd", "learning_rate": 1e-3}
CLEAN = {"processes": False, "threads": False}
LARGE = 40_000  # parameters: above the default inline_max_params, steps run in threads


async def _until(condition, timeout=60.0):
    """Wait until ``condition()`` holds (checked as the loop runs), or fail."""

    async def poll():
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def _create(c, job, ranks, d=3, **config):
    await c.register_plugin(ParameterServer())
    cfg = {"n_samples": 10 * len(ranks), "max_epochs": 1000, "tol": None, **config}
    ps = ParameterServerClient.from_client(c, job)
    await ps.create(np.zeros(d + 1), cfg, OPT, ranks)
    return ps


@pytest.mark.parametrize("inline", [10**7, 0], ids=["on-loop", "threads"])
@gen_cluster(client=True, clean_kwargs=CLEAN, timeout=600)
async def test_no_step_after_the_stop_under_concurrent_pushes(c, s, a, b, inline):
    """Eight members push a 400,000-parameter model as fast as they can; the job stops at
    max_epochs=2. Every applied update is in the history: none after the stop, however
    the pushes were queued behind the step that stopped the job (before, about one job in
    five applied a push queued behind that step)."""
    d = 10 * LARGE
    for attempt in range(8):
        job = f"race-{attempt}"
        ranks = [a.address, b.address] * 4
        ps = await _create(c, job, ranks, d=d - 1, mode="async", max_epochs=2,
                           inline_max_params=inline)  # fmt: skip
        grad = np.ones(d)

        async def member(rank, ps=ps, grad=grad):
            version = 0
            while True:
                r = await ps.push(rank, version, grad, 10, 10.0, 1.0)
                if r["status"] == "stopped":
                    return
                version = r["version"]

        await asyncio.gather(*(member(k) for k in range(len(ranks))))
        final = await ps.close()
        assert len(final["history"]) == 2
        updates = sum(h["updates"] for h in final["history"])
        assert final["version"] == updates == sum(final["rank_updates"]), final["rank_updates"]


@pytest.mark.parametrize("inline", [16_384, 0], ids=["on-loop", "threads"])
@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_a_silent_member_leaves_the_sync_round(c, s, a, b, inline):
    """Rank 1's worker is alive but its task never pushes: after member_timeout the round
    closes without it (before, it waited forever)."""
    ps = await _create(c, "j", [a.address, b.address], mode="sync", member_timeout=0.5,
                       inline_max_params=inline)  # fmt: skip
    await ps.join(0, a.address)
    reply = await asyncio.wait_for(ps.push(0, 0, np.ones(4), 10, 10.0, 1.0), 60)
    assert reply["status"] == "OK" and reply["version"] == 1
    st = await ps.status()
    assert list(st["live"]) == [0]  # rank 1 is out until it calls again
    late = await ps.push(1, 0, np.ones(4), 10, 10.0, 1.0)
    assert late["status"] == "stale" and late["version"] == 1  # it rejoins at version 1
    assert list((await ps.status())["live"]) == [0, 1]


@pytest.mark.parametrize("inline", [16_384, 0], ids=["default", "threads"])
@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_a_zombie_task_cannot_push(c, s, a, b, inline):
    """A rank's task reruns on another worker (the old one was thought lost): once the rerun
    joined, the old run's ready and pushes are refused, and its gradient waiting in the
    open sync round is dropped so the rerun's takes its place."""
    ps = await _create(c, "j", [a.address, b.address], mode="sync", inline_max_params=inline)
    zombie = ParameterServerClient.from_client(c, "j")
    await zombie.join(1, b.address)
    waiting = asyncio.ensure_future(zombie.push(1, 0, 100 * np.ones(4), 10, 10.0, 1.0))
    job = s.plugins[PLUGIN_NAME].jobs["j"]
    await _until(lambda: 1 in job.pending)
    rerun = ParameterServerClient.from_client(c, "j")
    await rerun.join(1, a.address)
    assert 1 not in job.pending
    with pytest.raises(SupersededError):
        await zombie.push(1, 0, np.ones(4), 10, 10.0, 1.0)
    with pytest.raises(SupersededError):
        await zombie.ready(1, b.address, 1.0, 1.0, np.ones(4), 10.0)
    await ps.join(0, a.address)
    r0 = asyncio.ensure_future(ps.push(0, 0, np.ones(4), 10, 10.0, 1.0))
    r1 = await rerun.push(1, 0, 3 * np.ones(4), 10, 30.0, 1.0)
    assert (await r0)["version"] == r1["version"] == 1
    np.testing.assert_allclose(r1["params"], -1e-3 * 4 / 40)  # the zombie's 100s are not in
    assert (await waiting)["version"] == 1  # the zombie's call ends; its next push fails


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_a_driver_that_disconnects_frees_its_job(c, s, a, b):
    await c.register_plugin(ParameterServer())
    plugin = s.plugins[PLUGIN_NAME]
    async with Client(s.address, asynchronous=True, set_as_default=False) as other:
        ps = ParameterServerClient.from_client(other, "orphan")
        cfg = {"n_samples": 10, "mode": "sync", "inline_max_params": 0}
        await ps.create(np.zeros(4), cfg, OPT, [a.address], client=other.id)
        job = plugin.jobs["orphan"]
        assert "orphan" in plugin.jobs
    await _until(lambda: "orphan" not in plugin.jobs)  # remove_client freed it
    await _until(lambda: job.stopped)
    assert job.reason == "the driver disconnected" and job.error_kind == "training"


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_fresh_snapshots_keep_their_order_on_the_thread_path(c, s, a, b):
    """Snapshots taken at epoch closes and fresh ones asked for at once: the sequence number
    and the snapshot change together, so a higher number never carries an older state."""
    ps = await _create(c, "j", [a.address], mode="async", checkpoint_every=1,
                       inline_max_params=0, n_samples=10)  # fmt: skip

    async def member():
        version = 0
        for _ in range(30):
            version = (await ps.push(0, version, np.ones(4), 10, 10.0, 1.0))["version"]

    async def driver():
        seen = []
        for _ in range(30):
            r = await ps.snapshot(fresh=True)
            seen.append((r["seq"], r["snapshot"]["version"]))
        return seen

    _, seen = await asyncio.gather(member(), driver())
    for (s0, v0), (s1, v1) in itertools.pairwise(seen):
        assert s1 > s0 and v1 >= v0, seen


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_close_sends_only_the_rows_the_driver_lacks(c, s, a, b):
    ps = await _create(c, "j", [a.address], mode="async", n_samples=10, record_params=True)
    version = 0
    for _ in range(4):
        version = (await ps.push(0, version, np.ones(4), 10, 10.0, 1.0))["version"]
    st = await ps.status(since=0)
    assert len(st["history"]) == 4 and all("params" in h for h in st["history"])
    st = await ps.status(since=3)  # the driver holds rows 0..2: their vectors are dropped
    job = s.plugins[PLUGIN_NAME].jobs["j"]
    assert ["params" in h for h in job.history] == [False, False, False, True]
    final = await ps.close(since=3)
    assert [h["epoch"] for h in final["history"]] == [4]
    bad = await c.scheduler.daskgd_close(job="nope", since=ToPickle(-1))
    assert bad["status"] == "error"


@pytest.mark.parametrize("inline", [16_384, 0], ids=["on-loop", "threads"])
@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_a_failing_step_stops_the_job_loudly(c, s, a, b, inline):
    """A step that raises (a bug) stops the job with an error its members hear, instead of
    leaving them waiting for a round that never closes."""
    ps = await _create(c, "j", [a.address], mode="sync", inline_max_params=inline)
    job = s.plugins[PLUGIN_NAME].jobs["j"]

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in a step")

    job.optimizer.step = broken
    reply = await asyncio.wait_for(ps.push(0, 0, np.ones(4), 10, 10.0, 1.0), 60)
    assert reply["status"] == "stopped" and reply["error_kind"] == "training"
    assert "a bug in a step" in reply["error"]
