"""Checkpoints: atomic writes on real Zarr, and fits that stop and resume on a LocalCluster."""

import json
import os
import shutil

import numpy as np
import pytest
from distributed.utils_test import gen_cluster

from daskgd.checkpoint import load_checkpoint, save_checkpoint
from daskgd.driver import fit
from daskgd.errors import CheckpointError
from daskgd.objective.optimizers import make_optimizer


def _problem(n=600, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.5 + 0.3 * rng.standard_normal(n)
    A = np.column_stack([X, np.ones(n)])
    return X, y, np.linalg.lstsq(A, y, rcond=None)[0]


def _save(path, epoch, params=None, **kw):
    return save_checkpoint(
        path,
        params=np.full(4, float(epoch)) if params is None else params,
        state={"v": np.arange(4.0)},
        version=epoch * 2,
        epoch=epoch,
        history=[{"epoch": e, "loss": 1.0 / e} for e in range(1, epoch + 1)],
        config={"n_features": 3},
        **kw,
    )


def test_save_load_roundtrip_keeps_the_newest(tmp_path):
    path = tmp_path / "c.zarr"
    with pytest.raises(FileNotFoundError):
        load_checkpoint(path)
    for epoch in (1, 2, 3):
        _save(path, epoch)
    ck = load_checkpoint(path)
    assert (ck.epoch, ck.version) == (3, 6)
    np.testing.assert_array_equal(ck.params, np.full(4, 3.0))
    np.testing.assert_array_equal(ck.state["v"], np.arange(4.0))
    assert [h["epoch"] for h in ck.history] == [1, 2, 3]
    assert ck.config == {"n_features": 3}
    # keep=2: the previous checkpoint survives, the one before is removed
    names = sorted(os.listdir(path))
    logs = [n for n in names if n.startswith("history-")]
    assert [n for n in names if n not in logs] == ["v00000002", "v00000003", "zarr.json"]
    assert len(logs) == 1 and logs[0].endswith(".jsonl")  # one history log, appended to
    root = json.loads((path / "zarr.json").read_text())
    assert root["zarr_format"] == 3 and root["attributes"]["format"] == "daskgd-checkpoint"


def test_history_is_appended_not_rewritten(tmp_path):
    """Checkpoints of one fit write each history row once (O(epochs) bytes in all); a
    crashed append is cut; a history that does not continue the log starts a new log,
    and the older checkpoint keeps its own."""
    path = tmp_path / "c.zarr"
    for epoch in range(1, 21):
        _save(path, epoch)
    (log,) = [p for p in path.iterdir() if p.name.startswith("history-")]
    rows = [{"epoch": e, "loss": 1.0 / e} for e in range(1, 21)]
    assert [json.loads(line) for line in log.read_bytes().splitlines()] == rows  # once each
    with open(log, "ab") as f:
        f.write(b'{"epoch": 99, "lo')  # a write that crashed mid-append
    _save(path, 21)
    assert load_checkpoint(path).history == [*rows, {"epoch": 21, "loss": 1.0 / 21}]
    assert log.read_bytes().count(b"\n") == 21 and b"99" not in log.read_bytes()
    # another fit on the same path: a new log; the previous checkpoint still loads its own
    save_checkpoint(path, params=np.zeros(4), state={}, version=1, epoch=1,
                    history=[{"epoch": 1, "loss": 7.0}], config={})  # fmt: skip
    assert load_checkpoint(path).history == [{"epoch": 1, "loss": 7.0}]
    assert len([p for p in path.iterdir() if p.name.startswith("history-")]) == 2
    shutil.rmtree(sorted(path.glob("v*"))[-1])  # the new fit's checkpoint is gone
    assert len(load_checkpoint(path).history) == 21


def test_format_1_checkpoints_still_load(tmp_path):
    """A checkpoint of format 1 (the history in its attributes) loads, and a newer
    checkpoint can follow it on the same path."""
    path = tmp_path / "c.zarr"
    entry = _save(path, 2)
    meta = os.path.join(entry, "zarr.json")
    doc = json.loads(open(meta).read())
    doc["attributes"].pop("history_log")
    doc["attributes"]["history"] = [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}]
    open(meta, "w").write(json.dumps(doc))
    root = path / "zarr.json"
    top = json.loads(root.read_text())
    top["attributes"]["format_version"] = 1
    root.write_text(json.dumps(top))
    assert [h["epoch"] for h in load_checkpoint(path).history] == [1, 2]
    _save(path, 3)
    assert [h["epoch"] for h in load_checkpoint(path).history] == [1, 2, 3]
    top["attributes"]["format_version"] = 3  # from a newer daskgd: refused, clearly
    root.write_text(json.dumps(top))
    with pytest.raises(CheckpointError, match="newer daskgd"):
        load_checkpoint(path)


def test_incomplete_or_damaged_newest_falls_back(tmp_path, reliability):
    path = tmp_path / "c.zarr"
    _save(path, 1)
    newest = _save(path, 2)
    # a write that never set ``complete`` (crash before its last step)
    meta = os.path.join(newest, "zarr.json")
    attrs = json.loads(open(meta).read())
    attrs["attributes"].pop("complete")
    open(meta, "w").write(json.dumps(attrs))
    assert load_checkpoint(path).epoch == 1
    # a chunk file lost (a write torn on a filesystem without atomic rename)
    _save(path, 3)
    os.remove(os.path.join(path, "v00000003", "params", "c", "0"))
    assert load_checkpoint(path).epoch == 1
    # a leftover temporary group is ignored, then removed by the next write
    (path / ".tmp-00000009-dead").mkdir()
    assert load_checkpoint(path).epoch == 1
    _save(path, 4)
    assert load_checkpoint(path).epoch == 4
    assert not any(n.startswith(".tmp-") for n in os.listdir(path))
    reliability.add("interrupted checkpoint writes", 3)


def test_refuses_a_folder_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "x.zarr").mkdir()
    (tmp_path / "x.zarr" / "data.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not a daskgd checkpoint"):
        _save(tmp_path / "x.zarr", 1)
    with pytest.raises(ValueError, match="local"):
        _save("s3://bucket/c.zarr", 1)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adagrad", "adam", "lbfgs"])
def test_optimizer_state_roundtrip(name):
    opt = make_optimizer(name, learning_rate=0.1)
    rng = np.random.default_rng(1)
    P = rng.standard_normal(6)
    state = opt.init_state(P)
    for t in range(4):
        P = opt.step(P, P - 1.0, state, t, 0, loss=float(0.5 * (P - 1.0) @ (P - 1.0)))
    copy = opt.import_state(P, opt.export_state(state))
    a = opt.step(P, P - 1.0, state, 4, 0, loss=float(0.5 * (P - 1.0) @ (P - 1.0)))
    b = opt.step(P, P - 1.0, copy, 4, 0, loss=float(0.5 * (P - 1.0) @ (P - 1.0)))
    np.testing.assert_array_equal(a, b)


_FULL = {"learning_rate": 0.3, "tol": None, "gtol": 1e-9, "max_epochs": 3000, "random_state": 0}


@pytest.mark.parametrize(
    ("optimizer", "extra"),
    [
        ("sgd", {}),
        ("momentum", {"learning_rate": 0.05}),
        ("adam", {"learning_rate": 0.05, "gtol": 1e-7}),
        ("lbfgs", {}),
        ("momentum", {"batch_size": 50, "learning_rate": 0.01, "gtol": None, "max_epochs": 60}),
    ],
)
def test_resume_matches_an_uninterrupted_fit(client, tmp_path, reliability, optimizer, extra):
    X, y, sol = _problem()
    kw = {**_FULL, **extra, "optimizer": optimizer}
    ref = fit((X, y), client=client, **kw)
    path = str(tmp_path / "ck.zarr")
    first = fit((X, y), client=client, **{**kw, "max_epochs": 7}, checkpoint=path,
                checkpoint_every=3)  # fmt: skip
    assert first.n_iter_ == 7
    assert load_checkpoint(path).epoch == 7  # the final checkpoint
    res = fit((X, y), client=client, **kw, checkpoint=path, checkpoint_every=3, resume=True)
    reliability.add("checkpoint resumes")
    assert res.n_iter_ == ref.n_iter_
    assert [h["epoch"] for h in res.history] == list(range(1, ref.n_iter_ + 1))
    np.testing.assert_allclose(
        [h["loss"] for h in res.history], [h["loss"] for h in ref.history], rtol=1e-10
    )
    got = np.append(res.coef_, res.intercept_)
    np.testing.assert_allclose(got, np.append(ref.coef_, ref.intercept_), rtol=1e-9, atol=1e-12)
    if "batch_size" not in kw:
        np.testing.assert_allclose(got, sol, atol=1e-6)  # the lstsq oracle
    ck = load_checkpoint(path)
    assert ck.epoch == res.n_iter_ and ck.history == res.history
    np.testing.assert_array_equal(ck.params, np.append(res.coef_, res.intercept_))
    assert ck.config["optimizer"]["name"] == optimizer


def test_resume_without_checkpoint_starts_fresh(client, tmp_path):
    X, y, sol = _problem()
    path = tmp_path / "none.zarr"
    res = fit((X, y), client=client, **_FULL, checkpoint=path, resume=True)
    np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=1e-6)
    assert res.history[0]["epoch"] == 1
    ck = load_checkpoint(path)
    assert ck.epoch == res.n_iter_
    assert ck.config["n_features"] == X.shape[1] and ck.config["loss"] == "squared_error"


def test_checkpoint_every_and_interval(client, tmp_path):
    X, y, _ = _problem()
    path = tmp_path / "every.zarr"
    seen = []

    def watch(row):
        if row["epoch"] % 5 == 0:
            try:
                seen.append(load_checkpoint(path).epoch)
            except FileNotFoundError:
                pass

    fit((X, y), client=client, **{**_FULL, "max_epochs": 400, "gtol": None}, checkpoint=path,
        checkpoint_every=5, callback=watch)  # fmt: skip
    ck = load_checkpoint(path)
    assert ck.epoch == 400
    assert int(os.path.basename(ck.path)[1:]) >= 2  # written during the fit, then the final
    assert all(e % 5 == 0 for e in seen) and seen == sorted(seen)
    path2 = tmp_path / "interval.zarr"
    res = fit((X, y), client=client, **{**_FULL, "max_epochs": 300, "gtol": None},
              checkpoint=path2, checkpoint_every=1000, checkpoint_interval=0.01)  # fmt: skip
    ck = load_checkpoint(path2)
    assert ck.epoch == res.n_iter_
    assert int(os.path.basename(ck.path)[1:]) >= 2


def test_incompatible_checkpoint_is_refused(client, tmp_path):
    X, y, _ = _problem()
    path = tmp_path / "ck.zarr"
    fit((X, y), client=client, **{**_FULL, "max_epochs": 3}, checkpoint=path)
    with pytest.raises(CheckpointError, match=r"features \(d\) 5"):
        fit((X[:, :4], y), client=client, **_FULL, checkpoint=path, resume=True)
    with pytest.raises(CheckpointError, match="loss"):
        fit((X, np.sign(y - y.mean())), client=client, **_FULL, loss="hinge",
            checkpoint=path, resume=True)  # fmt: skip
    with pytest.raises(CheckpointError, match="optimizer 'sgd'"):
        fit((X, y), client=client, **_FULL, optimizer="adam", checkpoint=path, resume=True)
    with pytest.raises(ValueError, match="resume=True needs checkpoint"):
        fit((X, y), client=client, resume=True)
    assert isinstance(CheckpointError("x"), ValueError)


def test_estimator_warm_start_resumes_from_checkpoint(client, tmp_path, reliability):
    from daskgd import LinearRegression, SGDRegressor

    X, y, sol = _problem()
    path = str(tmp_path / "est.zarr")
    est = SGDRegressor(batch_size=None, penalty=None, learning_rate="constant", eta0=0.3,
                       tol=None, max_iter=5, verbose=0, checkpoint=path, client=client)  # fmt: skip
    est.fit(X, y)
    assert load_checkpoint(path).epoch == 5
    more = SGDRegressor(**{**est.get_params(), "max_iter": 400, "warm_start": True})
    assert more.get_params()["checkpoint"] == path
    more.fit(X, y)
    reliability.add("checkpoint resumes")
    assert more.history_["epoch"][0] == 1 and more.n_iter_ == 400
    np.testing.assert_allclose(np.append(more.coef_, more.intercept_), sol, atol=1e-6)
    lin = LinearRegression(max_iter=3, verbose=0, tol=None, checkpoint=str(tmp_path / "l.zarr"),
                           checkpoint_every=1, client=client)  # fmt: skip
    lin.fit(X, y)
    lin.set_params(warm_start=True, max_iter=200, tol=1e-12)
    lin.fit(X, y)
    np.testing.assert_allclose(np.append(lin.coef_, lin.intercept_), sol, atol=1e-6)


def test_fit_async_checkpoint_and_async_mode_resume(cluster, tmp_path, reliability):
    import asyncio

    from distributed import Client

    from daskgd.driver import fit_async

    X, y, sol = _problem()
    path = str(tmp_path / "a.zarr")
    kw = {"mode": "async", "batch_size": 100, "learning_rate": 0.02, "tol": None,
          "random_state": 0, "checkpoint": path, "checkpoint_every": 2}  # fmt: skip

    async def main():
        async with Client(cluster.scheduler_address, asynchronous=True) as c:
            first = await fit_async((X, y), client=c, max_epochs=4, **kw)
            second = await fit_async((X, y), client=c, max_epochs=150, resume=True, **kw)
            return first, second

    first, res = asyncio.run(main())
    reliability.add("checkpoint resumes")
    assert first.n_iter_ == 4 and res.n_iter_ == 150
    assert [h["epoch"] for h in res.history] == list(range(1, 151))
    assert res.history[3] == first.history[3]
    A = np.column_stack([X, np.ones(len(X))])
    f = 0.5 * np.mean((A @ np.append(res.coef_, res.intercept_) - y) ** 2)
    fstar = 0.5 * np.mean((A @ sol - y) ** 2)
    assert (f - fstar) / fstar <= 1e-3  # async SGD at a constant rate: near the optimum
    assert load_checkpoint(path).epoch == 150


def test_one_vs_rest_refuses_a_checkpoint(client, tmp_path):
    from daskgd import SGDClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, 3))
    y = np.repeat([0, 1, 2], 30)
    clf = SGDClassifier(max_iter=2, verbose=0, checkpoint=str(tmp_path / "c.zarr"), client=client)
    with pytest.raises(ValueError, match="one-vs-rest"):
        clf.fit(X, y)
    clf.set_params(checkpoint=None).fit(X, y)  # and without one it fits


def test_signature_names_the_checkpoint_settings():
    import inspect

    from daskgd.driver import fit_async

    for fn in (fit, fit_async):
        params = inspect.signature(fn).parameters
        assert params["checkpoint"].default is None and params["resume"].default is False
        assert params["checkpoint_every"].default == 10
        assert params["checkpoint_interval"].default is None


_CLEAN = {"processes": False, "threads": False}


@gen_cluster(client=True, clean_kwargs=_CLEAN)
async def test_snapshots_on_the_scheduler_and_bad_resume_messages(c, s, a, b):
    from distributed.protocol import ToPickle

    from daskgd.parameter_server import PLUGIN_NAME, ParameterServer

    await c.register_plugin(ParameterServer())
    opt = {"name": "momentum", "learning_rate": 0.5}
    ranks = [a.address]
    cfg = {"mode": "async", "n_samples": 10, "max_epochs": 100, "tol": None, "checkpoint_every": 2}
    P = ToPickle(np.zeros(4))
    assert (await c.scheduler.daskgd_create(job="j", params=P, config=cfg, optimizer=opt,
                                            ranks=ranks))["status"] == "OK"  # fmt: skip
    reply = await c.scheduler.daskgd_snapshot(job="j")
    assert reply["snapshot"] is None and reply["seq"] == 0
    for v in range(3):  # three epochs of one push each: a snapshot after the second
        await c.scheduler.daskgd_push(job="j", rank=0, version=v, grad=ToPickle(np.ones(4)),
                                      n=10, weight=10.0, loss=1.0)  # fmt: skip
    st = await c.scheduler.daskgd_status(job="j")
    assert st["snapshot_seq"] == 1 and st["epochs"] == 3
    reply = await c.scheduler.daskgd_snapshot(job="j", since=1)
    snap = reply["snapshot"]
    assert (snap["epochs"], snap["version"], snap["history_len"]) == (2, 2, 2)
    assert [h["epoch"] for h in reply["history"]] == [2]
    # mean gradient 0.1 (grad / weight), momentum 0.9: v = 0.1, then 0.09 + 0.1
    np.testing.assert_allclose(snap["state"]["v"], 0.19)
    job = s.plugins[PLUGIN_NAME].jobs["j"]
    assert snap["state"]["v"] is not job.opt_state["v"]  # a copy, not the live array
    good = {"state": snap["state"], "version": 2, "epochs": 2, "progress": snap["progress"]}
    bad = [
        {**good, "version": -1},
        {**good, "epochs": "2"},
        {**good, "state": {"v": np.zeros(7)}},
        {**good, "state": {"m": np.zeros(4)}},
        {k: v for k, v in good.items() if k != "state"},
    ]
    for i, resume in enumerate(bad):
        reply = await c.scheduler.daskgd_create(job=f"bad{i}", params=P, config=cfg,
                                                optimizer=opt, ranks=ranks,
                                                resume=ToPickle(resume))  # fmt: skip
        assert reply["status"] == "error" and "resume" in reply["message"], resume
    assert not any(k.startswith("bad") for k in s.plugins[PLUGIN_NAME].jobs)
    reply = await c.scheduler.daskgd_create(job="k", params=P, config=cfg, optimizer=opt,
                                            ranks=ranks, resume=ToPickle(good))  # fmt: skip
    assert reply == {"status": "OK", "version": 2}
    k = s.plugins[PLUGIN_NAME].jobs["k"]
    assert (k.epochs, k.version, k.first_loss) == (2, 2, job.history[0]["loss"])
    np.testing.assert_array_equal(k.opt_state["v"], snap["state"]["v"])
