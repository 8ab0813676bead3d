"""daskgd.fit on a real LocalCluster (2 worker processes x 1 thread), against numpy/scipy optima.

Every oracle minimises exactly daskgd's objective:
``(1/sum s) sum_i s_i loss_i + alpha*((1-l1_ratio)/2 ||w||^2 + l1_ratio ||w||_1)``.
"""

import asyncio
import itertools
import threading

import numpy as np
import pytest
from distributed import Client
from scipy.optimize import minimize

import daskgd
from daskgd.data import write_zarr
from daskgd.driver import fit, fit_async
from daskgd.errors import DivergenceError


def _regression(n=400, d=5, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    y = X @ w + 0.7 + noise * rng.standard_normal(n)
    return X, y


def _lsq_objective(X, y, coef, intercept):
    r = X @ coef + intercept - y
    return 0.5 * np.mean(r * r)


def _lsq_optimum(X, y):
    A = np.column_stack([X, np.ones(len(X))])
    sol = np.linalg.lstsq(A, y, rcond=None)[0]
    return _lsq_objective(X, y, sol[:-1], sol[-1])


def _rel(f, fstar):
    return (f - fstar) / abs(fstar)


def test_sync_full_batch_reaches_lstsq(client):
    X, y = _regression()
    res = fit((X, y), client=client, learning_rate=0.5, max_epochs=400, tol=None, gtol=1e-11)
    assert _rel(_lsq_objective(X, y, res.coef_, res.intercept_), _lsq_optimum(X, y)) <= 1e-8
    assert res.converged_ and "gtol" in res.reason
    h = res.history
    assert h[0]["epoch"] == 1 and all(r["complete"] for r in h)
    assert all(sum(r["worker_updates"].values()) == 2 for r in h)  # two members per round
    # full batch: the history's loss is exact at the round's parameters and decreases
    assert all(a["loss"] >= b["loss"] * (1 - 1e-12) for a, b in itertools.pairwise(h))
    assert res.n_iter_ == len(h) and res.n_updates_ >= res.n_iter_


@pytest.mark.parametrize("mode", ["sync", "async", "ssp"])
def test_mini_batch_modes_reach_lstsq(client, mode):
    X, y = _regression(n=600)
    res = fit(
        (X, y),
        client=client,
        mode=mode,
        batch_size=20,
        learning_rate=0.1,
        lr_schedule="step",
        step_size=6,
        gamma=0.5,
        max_epochs=40,
        tol=None,
        random_state=1,
        max_staleness=2 if mode == "ssp" else None,
    )
    assert _rel(_lsq_objective(X, y, res.coef_, res.intercept_), _lsq_optimum(X, y)) <= 1e-3
    assert res.n_iter_ == 40
    if mode != "sync":
        assert max(r["staleness_max"] for r in res.history) >= 0
        assert sum(r["updates"] for r in res.history) <= res.n_updates_


def test_l2_logistic_matches_scipy_lbfgs(client):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 4))
    y = np.where(
        X @ np.array([1.5, -2.0, 0.5, 0.0]) + 0.3 + rng.standard_normal(400) > 0, 1.0, -1.0
    )
    alpha = 0.05

    def objective(p):
        z = y * (X @ p[:-1] + p[-1])
        f = np.mean(np.logaddexp(0, -z)) + 0.5 * alpha * p[:-1] @ p[:-1]
        s = -y / (1 + np.exp(z)) / len(y)
        g = np.append(X.T @ s + alpha * p[:-1], s.sum())
        return f, g

    ref = minimize(
        objective,
        np.zeros(5),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 1000},
    )
    res = fit(
        (X, y),
        client=client,
        loss="log_loss",
        alpha=alpha,
        learning_rate=2.0,
        max_epochs=500,
        tol=None,
        gtol=1e-9,
    )
    f = objective(np.append(res.coef_, res.intercept_))[0]
    assert _rel(f, ref.fun) <= 1e-6
    np.testing.assert_allclose(res.coef_, ref.x[:-1], atol=1e-5)


@pytest.mark.parametrize(
    ("optimizer", "lr", "options"),
    [
        ("sgd", 0.5, None),
        ("momentum", 0.1, {"momentum": 0.8}),
        ("nesterov", 0.1, None),
        ("adagrad", 1.0, None),
        ("adam", 0.1, None),
    ],
)
def test_each_optimizer_converges(client, optimizer, lr, options):
    X, y = _regression(n=200, d=3, seed=5)
    res = fit(
        (X, y),
        client=client,
        optimizer=optimizer,
        learning_rate=lr,
        optimizer_options=options,
        max_epochs=300,
        tol=None,
    )
    assert _rel(_lsq_objective(X, y, res.coef_, res.intercept_), _lsq_optimum(X, y)) <= 1e-3


def test_l1_gives_exact_zeros_and_matches_lasso(client):
    from sklearn.linear_model import Lasso

    rng = np.random.default_rng(7)
    X = rng.standard_normal((300, 6))
    y = X @ np.array([2.0, 0.0, -1.5, 0.0, 0.0, 1.0]) + 0.1 * rng.standard_normal(300)
    ref = Lasso(alpha=0.1, tol=1e-12, max_iter=100_000).fit(X, y)  # same objective, l1_ratio=1
    res = fit(
        (X, y),
        client=client,
        alpha=0.1,
        l1_ratio=1.0,
        learning_rate=0.5,
        max_epochs=500,
        tol=None,
        gtol=1e-10,
    )
    np.testing.assert_allclose(res.coef_, ref.coef_, atol=1e-6)
    assert np.array_equal(res.coef_ == 0, ref.coef_ == 0) and (res.coef_ == 0).sum() >= 2


def test_sync_is_deterministic_and_concurrent_fits_do_not_interfere(client):
    Xa, ya = _regression(n=300, seed=11)
    Xb, yb = _regression(n=300, seed=12)
    kw = {
        "client": client,
        "batch_size": 16,
        "learning_rate": 0.05,
        "max_epochs": 4,
        "tol": None,
        "random_state": 42,
    }
    ref_a, ref_b = fit((Xa, ya), **kw), fit((Xb, yb), **kw)
    again = fit((Xa, ya), **kw)
    assert np.array_equal(ref_a.coef_, again.coef_) and ref_a.intercept_ == again.intercept_
    results = {}
    threads = [
        threading.Thread(target=lambda k=k, d=d: results.__setitem__(k, fit(d, **kw)))
        for k, d in (("a", (Xa, ya)), ("b", (Xb, yb)))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.array_equal(results["a"].coef_, ref_a.coef_)
    assert np.array_equal(results["b"].coef_, ref_b.coef_)
    assert (
        list(
            client.run_on_scheduler(
                lambda dask_scheduler: sorted(
                    dask_scheduler.plugins["daskgd-parameter-server"].jobs
                )
            )
        )
        == []
    )  # finished jobs are freed


def test_fit_from_zarr_path(client, tmp_path):
    X, y = _regression(n=500)
    path = tmp_path / "reg.zarr"
    write_zarr(path, X, y, chunk_rows=100)
    res = fit(str(path), client=client, learning_rate=0.5, max_epochs=400, tol=None, gtol=1e-11)
    assert _rel(_lsq_objective(X, y, res.coef_, res.intercept_), _lsq_optimum(X, y)) <= 1e-8


def test_sample_weight_matches_weighted_lstsq(client):
    X, y = _regression(n=300)
    sw = np.random.default_rng(2).uniform(0.1, 2.0, 300)
    res = fit((X, y, sw), client=client, learning_rate=0.5, max_epochs=400, tol=None, gtol=1e-11)
    A = np.column_stack([X, np.ones(300)]) * np.sqrt(sw)[:, None]
    sol = np.linalg.lstsq(A, y * np.sqrt(sw), rcond=None)[0]
    np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=1e-7)


def test_divergence_raises_clear_error(client):
    X, y = _regression(n=200)
    with pytest.raises(DivergenceError, match="smaller learning_rate"):
        fit((X, y), client=client, learning_rate=50.0, max_epochs=2000, tol=None)


def test_time_budget_and_callback_stop(client):
    X, y = _regression(n=200)
    res = fit((X, y), client=client, learning_rate=1e-4, max_epochs=10**6, tol=None, max_time=1.0)
    assert not res.converged_ and "max_time" in res.reason
    seen = []
    res = fit(
        (X, y),
        client=client,
        learning_rate=0.1,
        max_epochs=100,
        tol=None,
        callback=lambda row: seen.append(row["epoch"]) or row["epoch"] < 3,
    )
    assert "callback" in res.reason and seen[:3] == [1, 2, 3]


def test_fit_async_with_asynchronous_client(cluster):
    X, y = _regression(n=200)

    async def main():
        async with Client(cluster.scheduler_address, asynchronous=True) as c:
            return await fit_async(
                (X, y), client=c, learning_rate=0.5, max_epochs=300, tol=None, gtol=1e-10
            )

    res = asyncio.run(main())
    assert _rel(_lsq_objective(X, y, res.coef_, res.intercept_), _lsq_optimum(X, y)) <= 1e-8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "bsp"}, "mode"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"mode": "ssp"}, "max_staleness"),
        ({"batch_size": 0}, "batch_size"),
        ({"loss": "nope"}, "unknown loss"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"poll_interval": -1.0}, "poll_interval"),
        ({"poll_interval": float("nan")}, "poll_interval"),
    ],
)
def test_bad_settings(client, kwargs, match):
    X, y = _regression(n=50)
    with pytest.raises(ValueError, match=match):
        fit((X, y), client=client, **kwargs)


def test_exports():
    assert daskgd.fit is fit and daskgd.FitResult.__name__ == "FitResult"


def test_signature_names_every_setting():
    import inspect

    from daskgd import fit_async

    for fn in (daskgd.fit, fit_async):
        params = inspect.signature(fn).parameters
        for name in ("loss", "mode", "optimizer", "learning_rate", "batch_size", "max_staleness",
                     "client", "random_state"):  # fmt: skip
            assert name in params, (fn.__name__, name)
    assert inspect.signature(daskgd.fit).parameters["mode"].default == "sync"


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_lbfgs_reaches_the_least_squares_optimum_in_few_epochs(client, fit_intercept):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((600, 8)) * np.logspace(0, 1, 8)  # condition number ~100
    y = X @ rng.standard_normal(8) + 2.0 + 0.1 * rng.standard_normal(600)
    res = fit((X, y), client=client, optimizer="lbfgs", max_epochs=60, tol=None, gtol=1e-9,
              fit_intercept=fit_intercept)  # fmt: skip
    A = np.column_stack([X, np.ones(600)]) if fit_intercept else X
    sol = np.linalg.lstsq(A, y, rcond=None)[0]
    pred = X @ res.coef_ + res.intercept_
    f = 0.5 * np.mean((pred - y) ** 2)
    f_star = 0.5 * np.mean((A @ sol - y) ** 2)
    assert (f - f_star) / f_star < 1e-10
    assert res.converged_ and res.n_iter_ < 60  # gradient descent needs thousands here


def test_lbfgs_l2_logistic_matches_scipy(client):
    from scipy.optimize import minimize

    rng = np.random.default_rng(6)
    X = rng.standard_normal((500, 6))
    y = np.where(X @ rng.standard_normal(6) + 0.3 * rng.standard_normal(500) > 0, 1.0, -1.0)
    alpha = 1e-2

    def f(wb):
        z = y * (X @ wb[:-1] + wb[-1])
        return np.mean(np.logaddexp(0, -z)) + 0.5 * alpha * wb[:-1] @ wb[:-1]

    ref = minimize(f, np.zeros(7), method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 0})
    res = fit((X, y), client=client, loss="log_loss", optimizer="lbfgs", alpha=alpha,
              max_epochs=100, tol=None, gtol=1e-10)  # fmt: skip
    got = f(np.append(res.coef_, res.intercept_))
    assert (got - ref.fun) / ref.fun < 1e-9


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "async"}, "mode='sync' and full batches"),
        ({"batch_size": 10}, "mode='sync' and full batches"),
        ({"alpha": 0.1, "l1_ratio": 0.5}, "smooth objective"),
    ],
)
def test_lbfgs_refuses_what_it_cannot_do(client, kwargs, match):
    X = np.random.default_rng(0).standard_normal((40, 2))
    with pytest.raises(ValueError, match=match):
        fit((X, X[:, 0]), client=client, optimizer="lbfgs", **kwargs)


@pytest.mark.parametrize("optimizer", ["sgd", "lbfgs"])
def test_out_of_core_full_batch_reaches_the_optimum(client, tmp_path, optimizer):
    # 5 chunks of 100 rows over 2 workers: every batch is summed over several chunk reads
    X, y = _regression(n=500)
    path = tmp_path / "reg.zarr"
    write_zarr(path, X, y, chunk_rows=100)
    res = fit(str(path), client=client, out_of_core=True, optimizer=optimizer,
              learning_rate=0.5, max_epochs=400, tol=None, gtol=1e-10)  # fmt: skip
    assert _rel(_lsq_objective(X, y, res.coef_, res.intercept_), _lsq_optimum(X, y)) <= 1e-8


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_out_of_core_mini_batches_converge(client, tmp_path, mode):
    X, y = _regression(n=600)
    path = tmp_path / "reg.zarr"
    # batches of about 20 rows cross the 70-row chunk boundaries
    write_zarr(path, X, y, chunk_rows=70)
    res = fit(str(path), client=client, out_of_core=True, mode=mode, batch_size=20,
              learning_rate=0.1, lr_schedule="step", step_size=6, gamma=0.5, max_epochs=40,
              tol=None, random_state=1)  # fmt: skip
    assert _rel(_lsq_objective(X, y, res.coef_, res.intercept_), _lsq_optimum(X, y)) <= 1e-3


def test_out_of_core_needs_a_zarr_store(client):
    X, y = _regression(n=50)
    with pytest.raises(ValueError, match="out_of_core=True streams row-chunks from a Zarr"):
        fit((X, y), client=client, out_of_core=True)


def test_callback_can_receive_each_epochs_parameters(client):
    X, y = _regression(n=300)
    rows = []
    res = fit((X, y), client=client, learning_rate=0.5, max_epochs=6, tol=None,
              callback=rows.append, callback_params=True)  # fmt: skip
    assert len(rows) == 6 and all("params" not in h for h in res.history)
    # the last epoch's row holds the parameters of its round (one step before the result)
    last = rows[-1]
    assert last["coef"].shape == (5,) and np.ndim(last["intercept"]) == 0
    assert _lsq_objective(X, y, last["coef"], last["intercept"]) == pytest.approx(
        last["loss"], rel=1e-12
    )


def test_binary_labels_of_a_dataset_are_encoded_for_the_kernel(client, tmp_path):
    from scipy.optimize import minimize

    path = str(tmp_path / "clf.zarr")
    ds = daskgd.make_classification(path, 400, 4, chunk_rows=100, random_state=0, client=client)
    assert sorted(ds.classes_.tolist()) == [0, 1]
    X, y01 = ds.X.compute(), ds.y.compute()
    y = np.where(y01 == 1, 1.0, -1.0)
    alpha = 1e-2

    def f(wb):
        z = y * (X @ wb[:-1] + wb[-1])
        return np.mean(np.logaddexp(0, -z)) + 0.5 * alpha * wb[:-1] @ wb[:-1]

    ref = minimize(f, np.zeros(5), method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 0})
    for out_of_core in (False, True):
        res = fit(path, client=client, loss="log_loss", optimizer="lbfgs", alpha=alpha,
                  max_epochs=100, tol=None, gtol=1e-10, out_of_core=out_of_core)  # fmt: skip
        assert (f(np.append(res.coef_, res.intercept_)) - ref.fun) / ref.fun < 1e-9


def test_binary_loss_on_multiclass_data_is_refused(client, tmp_path):
    path = str(tmp_path / "three.zarr")
    daskgd.make_classification(path, 90, 3, n_classes=3, chunk_rows=30, random_state=0,
                               client=client)  # fmt: skip
    with pytest.raises(ValueError, match="binary but the data has 3 classes"):
        fit(path, client=client, loss="hinge")
    res = fit(path, client=client, loss="log_loss", n_classes=3, max_epochs=5, tol=None)
    assert res.coef_.shape == (3, 3)


def test_timings_account_for_the_fit(client, tmp_path):
    """``timings_`` splits the fit: every rank's load, kernel and push time within the wall."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((4000, 6))
    y = X @ rng.standard_normal(6)
    path = str(tmp_path / "t.zarr")
    write_zarr(path, X, y, chunk_rows=500)
    res = fit(path, client=client, max_epochs=5, tol=None, mode="sync")
    t = res.timings_
    assert set(t) == {"wall", "open", "setup", "ranks", "push_bytes"}
    assert t["push_bytes"] == [5 * 7 * 8] * 2  # 5 full-batch float64 pushes a rank
    assert len(t["ranks"]) == 2
    for rank in t["ranks"]:
        assert set(rank) == {"load", "kernel", "push"}
        assert all(v >= 0 for v in rank.values())
        assert sum(rank.values()) <= t["wall"]
    assert t["open"] + t["setup"] <= t["wall"]


def _incoming_keys(client):
    """Per worker, the keys it has received from other workers so far."""

    def keys(dask_worker):
        return [str(k) for entry in dask_worker.transfer_incoming_log for k in entry["keys"]]

    return client.run(keys)


def test_dask_chunks_are_trained_where_they_live(client):
    """Chunks persisted on a worker are trained by that worker, with no transfer of them:
    the plan (``plan_``) follows ``who_has``, not a contiguous split."""
    import dask.array as da
    from distributed import wait

    client.wait_for_workers(2, timeout=60)
    a, b = sorted(client.scheduler_info()["workers"])
    rng = np.random.default_rng(11)
    X = rng.standard_normal((400, 4))
    y = X @ np.array([1.0, -1.0, 2.0, 0.5]) + 0.3 + 0.2 * rng.standard_normal(400)
    # chunks 0 and 2 on a, 1 and 3 on b: a contiguous plan would give a chunks 0 and 1
    home = [a, b, a, b]
    Xs = [client.persist(da.from_array(X[i * 100:(i + 1) * 100], chunks=(100, 4)),
                         workers=[w]) for i, w in enumerate(home)]  # fmt: skip
    ys = [client.persist(da.from_array(y[i * 100:(i + 1) * 100], chunks=100), workers=[w])
          for i, w in enumerate(home)]  # fmt: skip
    Xd, yd = client.persist([da.concatenate(Xs), da.concatenate(ys)])
    wait([Xd, yd])
    who = client.who_has(Xd)
    held = {w: [i for i, (k,) in enumerate(Xd.__dask_keys__()) if w in who[k]] for w in (a, b)}
    assert held == {a: [0, 2], b: [1, 3]}  # the setup: each chunk computed where its piece is
    before = _incoming_keys(client)
    res = fit((Xd, yd), client=client, learning_rate=0.5, max_epochs=200, tol=None, gtol=1e-9)
    assert res.plan_ == held
    after = _incoming_keys(client)
    chunk_keys = {str(k) for k in Xd.__dask_keys__()} | {str(k) for k in yd.__dask_keys__()}
    moved = [k for w in after for k in after[w][len(before[w]):]
             if k in chunk_keys or k.startswith("contiguous_block")]  # fmt: skip
    assert moved == []
    assert _rel(_lsq_objective(X, y, res.coef_, res.intercept_), _lsq_optimum(X, y)) <= 1e-8


def test_zarr_plan_is_in_the_result(client, tmp_path):
    X, y = _regression(n=400)
    path = str(tmp_path / "plan.zarr")
    write_zarr(path, X, y, chunk_rows=100)
    res = fit(path, client=client, max_epochs=2, tol=None)
    assert sorted(i for c in res.plan_.values() for i in c) == [0, 1, 2, 3]
    assert len(res.plan_) == 2 and all(len(c) == 2 for c in res.plan_.values())


def test_float32_zarr_fit_end_to_end_matches_the_closed_form(client, tmp_path):
    rng = np.random.default_rng(8)
    X = rng.standard_normal((600, 5)).astype(np.float32)
    y = (X @ rng.standard_normal(5) + 1.5 + 0.1 * rng.standard_normal(600)).astype(np.float32)
    path = str(tmp_path / "f32.zarr")
    ds = write_zarr(path, X, y, chunk_rows=150)
    assert ds.dtype == np.float32
    res = fit(path, client=client, max_epochs=500, tol=None, gtol_rel=1e-5)
    X64, y64 = X.astype(np.float64), y.astype(np.float64)
    A = np.column_stack([X64, np.ones(len(X64))])
    sol = np.linalg.lstsq(A, y64, rcond=None)[0]
    assert res.coef_.dtype == np.float64
    np.testing.assert_allclose(res.coef_, sol[:-1], rtol=0, atol=1e-3)
    assert res.intercept_ == pytest.approx(sol[-1], abs=1e-3)
    assert _rel(_lsq_objective(X64, y64, res.coef_, res.intercept_),
                _lsq_optimum(X64, y64)) <= 1e-6  # fmt: skip


def test_auto_learning_rate_on_a_path_and_on_arrays(client, tmp_path):
    """``learning_rate="auto"`` (the default): the workers bound the curvature while they
    load, for Zarr input and for arrays alike; full-batch descent then converges."""
    X, y = _regression(n=500)
    path = str(tmp_path / "auto.zarr")
    write_zarr(path, X, y, chunk_rows=125)
    rates = []
    for data in (path, (X, y)):
        res = fit(data, client=client, max_epochs=2000, tol=None, gtol=1e-9)
        assert res.converged_, res.reason
        assert _rel(_lsq_objective(X, y, res.coef_, res.intercept_), _lsq_optimum(X, y)) <= 1e-8
        assert res.learning_rate_ is not None and 0 < res.learning_rate_ < np.inf
        rates.append(res.learning_rate_)
    # 1 / L with L the largest eigenvalue of A^T A / n (exact at this size): the same data
    A = np.column_stack([X, np.ones(len(X))])
    L = np.linalg.eigvalsh(A.T @ A / len(X))[-1]
    assert rates == pytest.approx([1 / L, 1 / L], rel=1e-6)
