"""The key-value handlers (``kcreate``, ``kpull``, ``kpush``) against an in-process
scheduler, with the keyed rule itself (:func:`daskgd.objective.make_keyed_optimizer`)
as the oracle of every step.

Every test runs on both paths of the server: steps on the event loop (small models) and
in its threads (``inline_max_params=0``).
"""

import asyncio

import numpy as np
import pytest
from distributed.protocol import ToPickle
from distributed.utils_test import gen_cluster

from daskgd.objective import make_keyed_optimizer
from daskgd.parameter_server import PLUGIN_NAME, ParameterServer

D = 1000
OPT = {"name": "adagrad", "learning_rate": 0.5, "alpha": 0.01}
CLEAN = {"processes": False, "threads": False}
SETTINGS = {"inline_max_params": 16_384}


@pytest.fixture(autouse=True, params=[16_384, 0], ids=["on-loop", "threads"])
def path(request, monkeypatch):
    monkeypatch.setitem(SETTINGS, "inline_max_params", request.param)


async def _create(c, s, job="k", mode="sync", n_columns=None, optimizer=OPT, **config):
    await c.register_plugin(ParameterServer())
    ranks = [w.address for w in sorted(s.workers.values(), key=lambda ws: ws.name)]
    cfg = {"mode": mode, "n_samples": 20, "max_epochs": 1000, "tol": None, **SETTINGS,
           **config}  # fmt: skip
    return await c.scheduler.daskgd_kcreate(job=job, n_features=D, n_columns=n_columns,
                                            config=cfg, optimizer=optimizer,
                                            ranks=ranks)  # fmt: skip


def _kpush(c, rank, version, keys, grad, grad_b=0.0, next_keys=None, job="k", **kw):
    keys = np.asarray(keys)
    return c.scheduler.daskgd_kpush(
        job=job, rank=rank, version=version, keys=ToPickle(keys),
        grad=ToPickle(np.asarray(grad, dtype=float)),
        grad_b=ToPickle(np.asarray(grad_b)) if np.ndim(grad_b) else grad_b,
        n=10, weight=10.0, loss=kw.pop("loss", 5.0),
        next_keys=None if next_keys is None else ToPickle(np.asarray(next_keys)), **kw,
    )  # fmt: skip


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_sync_round_sums_by_key_and_replies_next_keys(c, s, a, b):
    assert (await _create(c, s))["status"] == "OK"
    first = asyncio.ensure_future(_kpush(c, 0, 0, [3, 70], [1.0, 2.0], 0.5, next_keys=[3, 9]))
    while 0 not in s.plugins[PLUGIN_NAME].jobs["k"].pending:
        await asyncio.sleep(0.005)
    assert not first.done()  # waits for rank 1
    r1 = await _kpush(c, 1, 0, [70, 900], [4.0, -1.0], 1.5, next_keys=[900])
    r0 = await first
    assert r0["status"] == r1["status"] == "OK" and r0["version"] == r1["version"] == 1
    rule = make_keyed_optimizer(**{k: v for k, v in OPT.items() if k != "name"}, name="adagrad")
    state = rule.init_state(D)
    # the round's mean: keys 3, 70, 900 with (1, 2 + 4, -1) / 20, the intercept 2 / 20
    rule.apply(state, [3, 70, 900], np.array([1.0, 6.0, -1.0]) / 20, 2.0 / 20, t=0)
    np.testing.assert_array_equal(r0["w"], rule.weights(state, [3, 9]))
    np.testing.assert_array_equal(r1["w"], rule.weights(state, [900]))
    assert r0["b"] == r1["b"] == rule.intercept(state)
    job = s.plugins[PLUGIN_NAME].jobs["k"]
    assert job.epochs == 1 and np.isnan(job.history[0]["grad_norm"])
    # no whole parameter array is published while the job runs
    assert job.published[1] is None
    pulled = await c.scheduler.daskgd_kpull(job="k", rank=0, keys=None, dense=True)
    np.testing.assert_array_equal(pulled["w"], rule.dense(state)[:-1])
    closed = await c.scheduler.daskgd_close(job="k")
    np.testing.assert_array_equal(closed["params"], rule.dense(state))


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_async_push_applied_on_arrival_with_staleness(c, s, a, b):
    await _create(c, s, mode="async", n_columns=3, n_samples=20)
    g = np.ones((2, 3))
    r = await _kpush(c, 0, 0, [1, 2], g, np.zeros(3), next_keys=[2])
    assert r["status"] == "OK" and r["version"] == 1 and r["w"].shape == (1, 3)
    r = await _kpush(c, 1, 0, [2, 5], g, np.zeros(3))  # computed at 0, applied at 1
    assert r["version"] == 2 and "w" not in r
    h = (await c.scheduler.daskgd_status(job="k"))["history"]
    assert len(h) == 1 and h[0]["staleness_max"] == 1 and h[0]["staleness_min"] == 0


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_bad_messages_change_nothing(c, s, a, b):
    await _create(c, s, mode="async")
    bad = [
        dict(keys=[5, 3], grad=[1.0, 1.0]),  # unsorted
        dict(keys=[3, D], grad=[1.0, 1.0]),  # out of range
        dict(keys=[3, 4], grad=[1.0]),  # one value short
        dict(keys=[3], grad=[[1.0, 1.0]]),  # 2-D for a 1-D model
        dict(keys=[3], grad=[1.0], next_keys=[9, 9]),  # repeated next keys
    ]
    for msg in bad:
        reply = await _kpush(c, 0, 0, **msg)
        assert reply["status"] == "error" and reply["kind"] == "bad_message", msg
    job = s.plugins[PLUGIN_NAME].jobs["k"]
    assert job.version == 0 and not job.stopped
    # a dense push to a key-value job, and a key-value push to a dense job, are refused
    dense = await c.scheduler.daskgd_push(job="k", rank=0, version=0,
                                          grad=ToPickle(np.zeros(D + 1)), n=1, weight=1.0,
                                          loss=1.0)  # fmt: skip
    assert dense["status"] == "error" and "key-value" in dense["message"]
    await c.scheduler.daskgd_create(job="d", params=ToPickle(np.zeros(4)),
                                    config={"mode": "async"}, optimizer={"name": "sgd",
                                    "learning_rate": 0.1}, ranks=[a.address])  # fmt: skip
    reply = await _kpush(c, 0, 0, [1], [1.0], job="d")
    assert reply["status"] == "error" and "dense job" in reply["message"]


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_settings_a_keyed_job_cannot_run_are_refused(c, s, a, b):
    for kw, match in [
        ({"mode": "ssp", "max_staleness": 1}, "ssp"),
        ({"gtol": 1e-3}, "gtol"),
        ({"checkpoint_every": 2}, "checkpoint_every"),
        ({"optimizer": {"name": "lbfgs", "learning_rate": 1.0}}, "lbfgs"),
    ]:
        reply = await _create(c, s, job=f"x{len(match)}", **kw)
        assert reply["status"] == "error" and match in reply["message"]


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_non_finite_gradient_stops_the_job(c, s, a, b):
    await _create(c, s, mode="async")
    r = await _kpush(c, 1, 0, [4], [np.nan])
    assert r["status"] == "stopped" and r["error_kind"] == "divergence"
    assert "rank 1" in r["error"] and "non-finite" in r["error"]


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_kready_sets_auto_step_once_every_rank_reported(c, s, a, b):
    sgd = {"name": "sgd", "learning_rate": 1.0, "alpha": 0.1}
    reply = await _create(c, s, optimizer=sgd, auto_lr=True, loss_curvature=0.25,
                          batches_per_epoch=2)  # fmt: skip
    assert reply["status"] == "OK"
    ready = [
        c.scheduler.daskgd_kready(job="k", rank=r, worker=w.address, loss0=7.0 * (r + 1),
                                  loss_zero=6.0, weight=10.0, curvature=(4.0, 8.0, 10.0))
        for r, w in enumerate((a, b))
    ]  # fmt: skip
    first = asyncio.ensure_future(ready[0])
    await asyncio.sleep(0.2)
    assert not first.done()  # the step size waits for rank 1's report
    assert (await ready[1])["status"] == "OK" and (await first)["status"] == "OK"
    job = s.plugins[PLUGIN_NAME].jobs["k"]
    # L = c * (lam + msq / rows) + l2: lam = (4 + 4) / 20, msq = 16 / 20, and a round's
    # rows 20 * 2 members / (2 members * 2 batches)
    L = 0.25 * (8 / 20 + (16 / 20) / 10) + 0.1
    assert job.eta == pytest.approx(1 / L) and job.rule.schedule.eta0 == job.eta
    assert job.ref_loss == pytest.approx(21 / 20)  # at the start (zero: no penalty)
    bad = await c.scheduler.daskgd_kready(job="k", rank=0, worker=a.address, loss0=-1.0,
                                          loss_zero=1.0, weight=1.0)  # fmt: skip
    assert bad["status"] == "error" and "loss0" in bad["message"]


JUNK = [None, "x", -1, ToPickle(2**70), 1.5, float("nan"), True, [1, 2], {"a": 1},
        ToPickle(np.array(["a"])), ToPickle(np.zeros((2, 2, 2))), ToPickle(object())]  # fmt: skip


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_junk_in_any_argument_is_an_error_reply(c, s, a, b):
    """Every argument of the key-value handlers replaced by junk: an error reply (or a
    valid call: a NaN loss is divergence), never an internal failure."""
    await _create(c, s, mode="async")
    good = {
        "kpush": dict(job="k", rank=0, version=0, keys=ToPickle(np.array([1, 2])),
                      grad=ToPickle(np.ones(2)), grad_b=0.5, n=10, weight=10.0, loss=1.0,
                      worker=a.address, next_keys=ToPickle(np.array([3])), dense=False),
        "kpull": dict(job="k", rank=0, keys=ToPickle(np.array([1, 2])), dense=False),
        "kready": dict(job="k", rank=0, worker=a.address, loss0=1.0, loss_zero=1.0,
                       weight=1.0, curvature=None, gram=None),
        "kcreate": dict(job="new", n_features=10, n_columns=None, ranks=[a.address],
                        config={"mode": "sync"}, optimizer=OPT, params=None),
    }  # fmt: skip
    for op, msg in good.items():
        for name in msg:
            for junk in JUNK:
                reply = await getattr(c.scheduler, f"daskgd_{op}")(**{**msg, name: junk})
                assert reply["status"] in ("OK", "error", "stopped"), (op, name, junk, reply)
                assert reply.get("kind") != "internal", (op, name, junk, reply)
                if op == "kcreate" and reply["status"] == "OK":
                    await c.scheduler.daskgd_close(job="new")
                if s.plugins[PLUGIN_NAME].jobs["k"].stopped:  # a NaN loss: divergence
                    assert s.plugins[PLUGIN_NAME].jobs["k"].error_kind == "divergence"
                    await c.scheduler.daskgd_close(job="k")
                    await _create(c, s, mode="async")


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_warm_start_state_and_its_penalty(c, s, a, b):
    await c.register_plugin(ParameterServer())
    params = np.zeros(D + 1)
    params[[3, 7]], params[D] = [2.0, -1.0], 0.5
    reply = await c.scheduler.daskgd_kcreate(
        job="w", n_features=D, n_columns=None, config={"mode": "async", **SETTINGS},
        optimizer=OPT, ranks=[a.address], params=ToPickle(params),
    )  # fmt: skip
    assert reply["status"] == "OK"
    pulled = await c.scheduler.daskgd_kpull(job="w", rank=0, keys=ToPickle(np.array([3, 7, 8])))
    np.testing.assert_array_equal(pulled["w"], [2.0, -1.0, 0.0])
    assert pulled["b"] == 0.5
    await c.scheduler.daskgd_kready(job="w", rank=0, worker=a.address, loss0=3.0,
                                    loss_zero=1.0, weight=2.0)  # fmt: skip
    # the reference: the mean loss at the start plus the start's penalty, alpha / 2 * 5
    assert s.plugins[PLUGIN_NAME].jobs["w"].ref_loss == pytest.approx(1.5 + 0.005 * 5)
