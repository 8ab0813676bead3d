"""Placement policies (``fit(..., placement=...)``): which row-chunks each worker trains on,
and, with ``placement="latency"``, how chunks move between them during a fit.

The plans are checked on their own (``Dataset.partition`` with shares,
``capacity_shares`` with the scheduler's view of the workers), then end to end on real
heterogeneous clusters: worker processes with their own declared ``daskgd`` resource and
threads, a Zarr dataset on disk, the compiled kernels. Every placement trains on every row
exactly once, so the model is the closed-form least-squares solution whichever it is.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from distributed import Client

import daskgd
from daskgd.data import open_zarr
from daskgd.driver.placement import CAPACITY_RESOURCE, MEMORY_SHARE, capacity_shares
from daskgd.errors import InvalidSettingError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _heterogeneous import Throttle, heterogeneous_cluster
from _kills import fit_and_kill, runs_rank


def _problem(n: int = 4000, d: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.5 + 0.1 * rng.standard_normal(n)
    return X, y


def _exact(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    A = np.hstack([X, np.ones((len(X), 1))])
    return np.linalg.lstsq(A, y, rcond=None)[0]


def _rows(plan: dict[str, list[int]], ds, names: dict[str, str]) -> dict[str, int]:
    return {names[w]: sum(ds.chunks[i] for i in c) for w, c in plan.items()}


def _names(client: Client) -> dict[str, str]:
    return {a: str(w["name"]) for a, w in client.scheduler_info()["workers"].items()}


@pytest.fixture
def dataset(tmp_path):
    X, y = _problem()
    path = str(tmp_path / "d.zarr")
    daskgd.write_zarr(path, X, y, chunk_rows=500)  # 8 row-chunks
    return path, X, y


# -- the plans on their own ---------------------------------------------------------------


def test_partition_follows_shares_in_contiguous_runs(dataset):
    ds = open_zarr(dataset[0])
    plan = ds.partition(["a", "b"], shares={"a": 1, "b": 3})
    assert plan == {"a": [0, 1], "b": [2, 3, 4, 5, 6, 7]}
    assert ds.partition(["a", "b", "c"], shares={"b": 1}) == {"a": [], "b": list(range(8)), "c": []}
    # equal shares are the default plan
    assert ds.partition(["a", "b"], shares={"a": 2, "b": 2}) == ds.partition(["a", "b"])


@pytest.mark.parametrize(
    "shares, match",
    [
        ({"a": 0, "b": 0}, "not all zero"),
        ({"a": -1, "b": 2}, "non-negative"),
        ({"a": float("nan"), "b": 1}, "finite"),
        ({"a": 1, "z": 1}, "not in the plan"),
    ],
)
def test_partition_refuses_bad_shares(dataset, shares, match):
    with pytest.raises(ValueError, match=match):
        open_zarr(dataset[0]).partition(["a", "b"], shares=shares)


def _info(**workers):
    return {w: {"nthreads": 1, "resources": {}, "memory_limit": 0, **o} for w, o in workers.items()}


def test_capacity_is_the_declared_resource_else_the_threads(dataset):
    ds = open_zarr(dataset[0])
    n = ds.n_samples
    by_threads = capacity_shares(ds, ["a", "b"], _info(a={"nthreads": 1}, b={"nthreads": 3}))
    assert by_threads == pytest.approx({"a": n / 4, "b": 3 * n / 4})
    declared = _info(a={"nthreads": 4, "resources": {CAPACITY_RESOURCE: 2}},
                     b={"nthreads": 1, "resources": {CAPACITY_RESOURCE: 1}},
                     c={"nthreads": 8})  # fmt: skip
    # once any worker declares the resource, one that does not has none of it
    assert capacity_shares(ds, ["a", "b", "c"], declared) == pytest.approx(
        {"a": 2 * n / 3, "b": n / 3, "c": 0.0}
    )
    zero = _info(a={"resources": {CAPACITY_RESOURCE: 0}}, b={"resources": {CAPACITY_RESOURCE: 0}})
    with pytest.raises(InvalidSettingError, match="no capacity"):
        capacity_shares(ds, ["a", "b"], zero)


def test_capacity_shares_keep_each_worker_within_its_memory(dataset):
    ds = open_zarr(dataset[0])
    n, per_row = ds.n_samples, ds.n_features * 8 + 8
    # a can hold a tenth of the rows and a chunk (the plan hands out whole chunks): it keeps
    # the tenth, b and c share the rest by capacity
    small = (n / 10 + max(ds.chunks)) * per_row / MEMORY_SHARE
    info = _info(a={"nthreads": 2, "memory_limit": small}, b={"nthreads": 1}, c={"nthreads": 3})
    got = capacity_shares(ds, ["a", "b", "c"], info)
    assert got["a"] == pytest.approx(n / 10)
    assert got["b"] == pytest.approx(0.9 * n / 4)
    assert got["c"] == pytest.approx(0.9 * n * 3 / 4)
    # nowhere to put the data: the proportional shares, which check_memory then refuses
    tiny = _info(a={"memory_limit": small}, b={"memory_limit": small})
    assert capacity_shares(ds, ["a", "b"], tiny) == pytest.approx({"a": n / 2, "b": n / 2})
    # out of core holds one chunk at a time: memory does not bound the rows
    assert capacity_shares(ds, ["a", "b", "c"], info, streamed=True)["a"] == pytest.approx(n / 3)


# -- end to end ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uneven():
    """Two worker processes: "small" declares 1 unit of capacity, "big" 3."""
    workers = {
        "small": {"resources": {CAPACITY_RESOURCE: 1}},
        "big": {"resources": {CAPACITY_RESOURCE: 3}},
    }
    with heterogeneous_cluster(workers) as cluster, Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2)
        yield c


@pytest.mark.parametrize("optimizer", ["newton", "lbfgs"])
def test_resources_placement_trains_on_every_row_once(uneven, dataset, optimizer):
    path, X, y = dataset
    ds = open_zarr(path)
    kw = {"optimizer": optimizer, "client": uneven, "gtol": 1e-10, "tol": None}
    res = daskgd.fit(path, placement="resources", **kw)
    assert _rows(res.plan_, ds, _names(uneven)) == {"small": 1000, "big": 3000}
    balanced = daskgd.fit(path, placement="balanced", **kw)
    assert _rows(balanced.plan_, ds, _names(uneven)) == {"small": 2000, "big": 2000}
    exact = _exact(X, y)
    for r in (res, balanced):
        assert r.converged_
        np.testing.assert_allclose(np.append(r.coef_, r.intercept_), exact, rtol=0, atol=1e-8)


def test_resources_placement_in_the_estimators_and_mini_batches(uneven, dataset):
    path, X, y = dataset
    ds = open_zarr(path)
    est = daskgd.SGDRegressor(placement="resources", batch_size=50, max_iter=3, tol=None,
                              client=uneven, random_state=0).fit(path)  # fmt: skip
    assert est.get_params()["placement"] == "resources"
    assert _rows(est.plan_, ds, _names(uneven)) == {"small": 1000, "big": 3000}
    # an epoch is one pass over every row: 4000 rows / (2 x 50) per round of both workers
    assert est.n_iter_ == 3
    lin = daskgd.LinearRegression(placement="resources", client=uneven).fit(path)
    np.testing.assert_allclose(np.append(lin.coef_, lin.intercept_), _exact(X, y), atol=1e-8)


def test_resources_placement_of_in_memory_input(uneven):
    """numpy input is cut into several chunks per worker for "resources" (a plan hands out
    whole chunks), so the shares hold for it too."""
    X, y = _problem()
    res = daskgd.fit((X, y), client=uneven, placement="resources", optimizer="newton")
    names = _names(uneven)
    rows = {names[w]: len(c) for w, c in res.plan_.items()}  # equal chunks of 250 rows
    assert rows == {"small": 4, "big": 12}
    np.testing.assert_allclose(np.append(res.coef_, res.intercept_), _exact(X, y), atol=1e-8)
    est = daskgd.LinearRegression(placement="resources", client=uneven).fit(X, y)
    assert {names[w]: len(c) for w, c in est.plan_.items()} == {"small": 4, "big": 12}


def test_balanced_placement_ignores_where_dask_chunks_are(uneven):
    X, y = _problem()
    small = next(a for a, n in _names(uneven).items() if n == "small")
    Xd, yd = uneven.persist([da.from_array(X, chunks=(500, 5)), da.from_array(y, chunks=500)],
                            workers=[small])  # fmt: skip
    kw = {"optimizer": "newton", "client": uneven}
    held = daskgd.fit((Xd, yd), placement="locality", **kw).plan_
    assert sum(len(c) for c in held.values()) == 8
    balanced = daskgd.fit((Xd, yd), placement="balanced", **kw).plan_
    assert sorted(len(c) for c in balanced.values()) == [4, 4]
    for c in balanced.values():  # contiguous runs
        assert c == list(range(c[0], c[0] + len(c)))


def test_unknown_placement_is_refused_with_the_choices(uneven, dataset):
    # refused before any connection is tried
    with pytest.raises(InvalidSettingError, match=r"balanced.*locality.*resources"):
        daskgd.fit(dataset[0], placement="fastest", client="tcp://127.0.0.1:1")
    est = daskgd.LinearRegression(placement="latest", client=uneven)
    with pytest.raises(InvalidSettingError, match="placement"):
        est.fit(dataset[0])


def test_throttled_worker_is_slower_at_the_kernels(dataset):
    """The benchmark's slow worker: a plugin sleeps after each kernel call on it only."""
    workers = {"slow": {}, "fast": {}}
    with heterogeneous_cluster(workers) as cluster, Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2)
        c.register_plugin(Throttle({"slow": 3.0}))
        res = daskgd.fit(dataset[0], optimizer="lbfgs", client=c, max_epochs=5, tol=None,
                         placement="balanced")  # fmt: skip
        names = _names(c)
        kernel = {names[w]: t for w, t in zip(res.plan_, res.timings_["ranks"], strict=True)}
        assert kernel["slow"]["kernel"] > 2.0 * kernel["fast"]["kernel"]


def test_worker_killed_mid_fit_with_resources_placement(dataset, reliability):
    path, X, y = dataset
    workers = {
        "small": {"resources": {CAPACITY_RESOURCE: 1}},
        "big": {"resources": {CAPACITY_RESOURCE: 3}},
    }
    with heterogeneous_cluster(workers) as cluster, Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2)
        big = next(a for a, n in _names(c).items() if n == "big")
        # the big worker's rank pushes late: the kill lands mid-round
        settings = {"optimizer": "lbfgs", "placement": "resources", "gtol": 1e-10, "tol": None,
                    "max_epochs": 150, "delay": {1: 0.3}}  # fmt: skip
        out = fit_and_kill(c, path, settings, after_epoch=3, victim=lambda _: big)
        reliability.add("worker kills (kill -9)")
    assert "error" not in out, out.get("error")
    res = out["res"]
    assert res.converged_, (res.reason, res.history[-3:])
    np.testing.assert_allclose(np.append(res.coef_, res.intercept_), _exact(X, y), atol=1e-8)


# -- latency: chunks move at epoch boundaries ---------------------------------------------


@pytest.fixture(scope="module")
def throttled():
    """Three worker processes; "slow" computes its gradients ten times slower (on data this
    small a gradient pass costs less than reading the rows: a move pays only when the
    worker is much slower)."""
    workers = {"slow": {}, "a": {}, "b": {}}
    with heterogeneous_cluster(workers) as cluster, Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(3)
        c.register_plugin(Throttle({"slow": 10.0}))
        yield c


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    X, y = _problem(n=120_000, d=20, seed=1)
    path = str(tmp_path_factory.mktemp("latency") / "d.zarr")
    daskgd.write_zarr(path, X, y, chunk_rows=5_000)  # 24 row-chunks
    return path, X, y


def _moves(res) -> list[dict]:
    return [m for h in res.history for m in h.get("moves", ())]


def test_latency_moves_rows_off_the_slow_worker_and_trains_on_every_row(throttled, wide):
    """Full-batch gradient descent takes the same steps whichever worker holds which rows:
    the latency fit's iterates are the balanced fit's, up to the order of the sums. (A
    move must repay reading its chunk: on data this small, that takes a few epochs.)"""
    path, _, _ = wide
    ds = open_zarr(path)
    kw = {"client": throttled, "max_epochs": 40, "tol": None}
    res = daskgd.fit(path, placement="latency", **kw)
    moves = _moves(res)
    assert moves, "no chunk moved off a worker ten times slower"
    rows = _rows(res.plan_, ds, _names(throttled))  # where the rows were at the end
    assert sum(rows.values()) == ds.n_samples
    assert rows["slow"] < rows["a"] and rows["slow"] < rows["b"]
    assert all(m["gain_s"] > 0 and m["cost_s"] >= 0 for m in moves)
    ref = daskgd.fit(path, placement="balanced", **kw)
    np.testing.assert_allclose(
        np.append(res.coef_, res.intercept_),
        np.append(ref.coef_, ref.intercept_),
        rtol=1e-10,
        atol=1e-12,
    )
    assert res.history[-1]["loss"] == pytest.approx(ref.history[-1]["loss"], rel=1e-12)


def test_latency_mini_batches_keep_whole_epochs(throttled, wide):
    path, _, _ = wide
    ds = open_zarr(path)
    res = daskgd.fit(path, client=throttled, placement="latency", batch_size=2_000,
                     max_epochs=4, tol=None, learning_rate=0.01,
                     random_state=0)  # fmt: skip
    assert res.n_iter_ == 4 and all(h["complete"] for h in res.history)
    assert _moves(res), "no chunk moved off a worker ten times slower"
    rows = _rows(res.plan_, ds, _names(throttled))
    assert sum(rows.values()) == ds.n_samples and rows["slow"] < rows["a"]
    assert np.isfinite(res.history[-1]["loss"]) and res.history[-1]["loss"] < res.history[0]["loss"]


def test_latency_refuses_what_it_cannot_move(throttled, wide):
    X, y = _problem()
    with pytest.raises(InvalidSettingError, match="Zarr store"):
        daskgd.fit((X, y), client=throttled, placement="latency")
    with pytest.raises(InvalidSettingError, match="sync_quorum"):
        daskgd.fit(wide[0], client=throttled, placement="latency", sync_quorum=2)


@pytest.mark.parametrize("mode", ["async", "ssp"])
def test_latency_in_async_modes_moves_rows_off_the_slow_worker(throttled, wide, mode):
    """Async/ssp: chunks move off the slow worker where the server's epochs close, each
    task takes its new chunks where its own epoch ends, and mini-batch epochs still pass
    over every row once (the server counts rows); the fit goes on to a finite loss."""
    path, _, _ = wide
    ds = open_zarr(path)
    extra = {"max_staleness": 2} if mode == "ssp" else {}
    # a decision waits for two passes of every rank over its rows (the slow one's take as
    # long as about seven server epochs), after a first such window that decides nothing
    res = daskgd.fit(path, client=throttled, placement="latency", mode=mode, batch_size=2_000,
                     max_epochs=40, tol=None, learning_rate=0.01, random_state=0,
                     **extra)  # fmt: skip
    moves = _moves(res)
    assert moves, "no chunk moved off a worker ten times slower"
    rows = _rows(res.plan_, ds, _names(throttled))
    assert sum(rows.values()) == ds.n_samples
    assert rows["slow"] < rows["a"] and rows["slow"] < rows["b"]
    assert all(m["from"] != m["to"] and m["rows"] == 5_000 for m in moves)
    assert res.n_iter_ == 40 and np.isfinite(res.history[-1]["loss"])
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_worker_killed_mid_fit_with_latency_placement(wide, reliability):
    """The rerun task of a killed worker loads its rank's chunks as they are then."""
    path, X, y = wide
    ds = open_zarr(path)
    workers = {"slow": {}, "a": {}, "b": {}}
    with heterogeneous_cluster(workers) as cluster, Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(3)
        c.register_plugin(Throttle({"slow": 10.0}))
        # rank 1 pushes late: the kill lands mid-round, after the first moves
        settings = {"optimizer": "lbfgs", "placement": "latency", "gtol": 1e-10, "tol": None,
                    "max_epochs": 200, "delay": {1: 0.2}}  # fmt: skip
        out = fit_and_kill(c, path, settings, after_epoch=3, victim=lambda c: runs_rank(c, 1))
        reliability.add("worker kills (kill -9), latency placement")
    assert "error" not in out, out.get("error")
    res = out["res"]
    assert res.converged_, res.reason
    assert sorted(i for chunks in res.plan_.values() for i in chunks) == list(range(ds.n_chunks))
    np.testing.assert_allclose(np.append(res.coef_, res.intercept_), _exact(X, y), atol=1e-8)
