"""L-BFGS with sharded parameters (``optimizer="lbfgs", n_servers=K``): the shards hold the
vectors, the coordinator decides from summed dot products (vector-free L-BFGS).

Oracles: the whole-model server's L-BFGS (the same iterates to rounding: only the order of
the dot products' sums differs) and scipy's L-BFGS-B on the same objective; a kernel-free
numpy run of the two state machines side by side for the algebra.
"""

import shutil

import numpy as np
import pytest
from _kills import first_worker, fit_and_kill
from distributed import Client, LocalCluster
from scipy.optimize import minimize
from scipy.special import log_expit

from daskgd.checkpoint import load_checkpoint
from daskgd.driver import fit
from daskgd.driver.settings import FitSettings
from daskgd.errors import InvalidSettingError
from daskgd.objective.lbfgs import LBFGS
from daskgd.objective.lbfgs_sharded import (
    LBFGSCoordinator,
    LBFGSSlice,
    rows_first,
    two_loop,
    whole_state,
)

#: L-BFGS without its column preconditioner (sharded and whole-model alike)
NO_PRECONDITION = {"precondition": False}


def _logistic(n=1500, d=9, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.logspace(-1, 1, d)  # scales 0.1 .. 10
    y = (X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n) > 0).astype(float)
    return X, y


def _params(res):
    return np.concatenate([np.ravel(res.coef_), np.ravel(res.intercept_)])


def _scipy_logistic(X, y, alpha):
    A = np.column_stack([X, np.ones(len(y))])
    s = 2 * y - 1

    def f(w):
        z = s * (A @ w)
        g = A.T @ (-s * np.exp(log_expit(-z))) / len(y)
        g[:-1] += alpha * w[:-1]
        return -log_expit(z).mean() + 0.5 * alpha * w[:-1] @ w[:-1], g

    opt = minimize(f, np.zeros(A.shape[1]), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10_000})  # fmt: skip
    return opt.x


def _quadratic(n=30, seed=1):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((60, n)) * np.logspace(-1, 1, n)
    b = rng.standard_normal(60)

    def fg(x):
        r = A @ x - b
        return 0.5 * r @ r / 60 + 0.005 * x @ x, A.T @ r / 60 + 0.01 * x

    return fg


@pytest.mark.parametrize("cuts", [1, 3])
def test_the_vector_free_state_machines_walk_the_whole_model_iterates(cuts):
    """Numpy only: the coordinator and K slices, fed the slices' dot products, propose the
    points LBFGS proposes with whole vectors (to rounding), backtracks and pair drops
    included (memory 3 < the iterations)."""
    fg = _quadratic()
    ref, x_ref = LBFGS(memory=3), np.zeros(30)
    co = LBFGSCoordinator(memory=3)
    parts = np.array_split(np.arange(30), cuts)
    slices = [LBFGSSlice(memory=3) for _ in parts]
    x = np.zeros(30)
    actions = set()
    for _ in range(40):
        f, g = fg(x_ref)
        x_ref = ref.tell(x_ref, f, g)
        f, g = fg(x)
        dots = [s.evaluate(x[i], g[i]) for s, i in zip(slices, parts, strict=True)]
        summed = {k: np.sum([np.asarray(d[k]) for d in dots], axis=0) for k in dots[0]}
        msg = co.tell(f, summed)
        actions.add(msg["action"])
        x = np.concatenate([s.decide(msg) for s in slices])
        np.testing.assert_allclose(x, x_ref, rtol=1e-9, atol=1e-12)
    assert {"accept", "backtrack"} <= actions
    assert co.m == 3 and co.iterations == ref.iterations


def test_two_loop_on_dot_products_is_the_two_loop_on_vectors():
    rng = np.random.default_rng(0)
    S = [rng.standard_normal(7) for _ in range(4)]
    Y = [s + 0.1 * rng.standard_normal(7) for s in S]
    g = rng.standard_normal(7)
    ref = LBFGS(memory=4)
    ref._s.extend(S), ref._y.extend(Y)
    B = np.array([*S, *Y, g])
    coef = two_loop(B @ B.T, 4)
    np.testing.assert_allclose(coef @ B, ref._two_loop(g), rtol=1e-12)


def test_a_state_cut_into_rows_and_stacked_back_is_unchanged():
    shape = (5, 3)
    rng = np.random.default_rng(0)
    state = {"lbfgs_s": rng.standard_normal((2, 15)), "lbfgs_y": rng.standard_normal((2, 15)),
             "lbfgs_x": rng.standard_normal(15), "lbfgs_g": rng.standard_normal(15),
             "lbfgs_p": rng.standard_normal(15)}  # fmt: skip
    rows = rows_first(state, shape)
    assert all(v.shape[0] == 5 for v in rows.values())
    parts = [{k: v[lo:hi] for k, v in rows.items()} for lo, hi in ((0, 2), (2, 5))]
    stacked = {k: np.concatenate([p[k] for p in parts]) for k in rows}
    co = LBFGSCoordinator(memory=3, f=1.5, t=0.25, backtracks=1, iterations=7, started=True)
    back = whole_state(stacked, shape, co)
    for k, v in state.items():
        np.testing.assert_array_equal(back[k], v)
    assert float(back["lbfgs_f"]) == 1.5 and int(back["lbfgs_iterations"]) == 7


def test_sharded_lbfgs_reaches_the_optimum_of_the_whole_model_server(client):
    X, y = _logistic()
    alpha = 1e-3
    # shards run without the column preconditioner: compared with a whole-model fit without
    kw = {"optimizer": "lbfgs", "loss": "log_loss", "alpha": alpha, "gtol": 1e-9,
          "max_epochs": 500, "tol": None, "optimizer_options": NO_PRECONDITION}  # fmt: skip
    ref = fit((X, y), client=client, n_servers=0, **kw)
    sol = _scipy_logistic(X, y, alpha)
    assert ref.converged_
    np.testing.assert_allclose(_params(ref), sol, atol=1e-6)
    for k in (1, 2):
        res = fit((X, y), client=client, n_servers=k, **kw)
        assert res.converged_
        np.testing.assert_allclose(_params(res), sol, atol=1e-6)
        # the same iterates to rounding: the first epochs' objectives agree closely, and
        # the passes taken by a few at most (a decision at the rounding level may differ)
        n = min(10, len(ref.history))
        np.testing.assert_allclose([h["loss"] for h in res.history[:n]],
                                   [h["loss"] for h in ref.history[:n]], rtol=1e-10)  # fmt: skip
        assert abs(res.n_iter_ - ref.n_iter_) <= 3


def test_sharded_lbfgs_fits_multinomial_and_no_intercept_models(client):
    X, y = _logistic(d=7)
    rng = np.random.default_rng(2)
    labels = np.digitize(X @ rng.standard_normal(7), [-1.0, 1.0]).astype(float)
    for kw in ({"loss": "log_loss", "n_classes": 3, "alpha": 1e-2},
               {"loss": "squared_error", "fit_intercept": False, "alpha": 1e-2}):  # fmt: skip
        target = labels if "n_classes" in kw else y
        ref = fit((X, target), client=client, n_servers=0, optimizer="lbfgs", gtol=1e-9,
                  tol=None, max_epochs=500, optimizer_options=NO_PRECONDITION, **kw)  # fmt: skip
        res = fit((X, target), client=client, n_servers=2, optimizer="lbfgs", gtol=1e-9,
                  tol=None, max_epochs=500, **kw)  # fmt: skip
        assert ref.converged_ and res.converged_
        np.testing.assert_allclose(res.coef_, ref.coef_, atol=1e-7)
        np.testing.assert_allclose(res.intercept_, ref.intercept_, atol=1e-7)
        if not kw.get("fit_intercept", True):
            assert np.all(np.asarray(res.intercept_) == 0)


def test_an_lbfgs_checkpoint_resumes_across_shard_counts(client, tmp_path):
    """Written with 2 shards, resumed with 0 and 1 (and the whole-model one with 2): every
    run goes on from the same L-BFGS state and ends where an uninterrupted fit does."""
    X, y = _logistic()
    kw = {"optimizer": "lbfgs", "loss": "log_loss", "alpha": 1e-3, "tol": None, "gtol": 0.0,
          "optimizer_options": NO_PRECONDITION}  # fmt: skip
    ref = fit((X, y), client=client, n_servers=0, max_epochs=14, **kw)
    for first, thens in ((2, (0, 1)), (0, (2,))):
        path = str(tmp_path / f"ck{first}.zarr")
        fit((X, y), client=client, n_servers=first, max_epochs=7, checkpoint=path,
            checkpoint_every=7, **kw)  # fmt: skip
        ck = load_checkpoint(path)
        assert ck.epoch == 7 and {"lbfgs_s", "lbfgs_y", "lbfgs_f"} <= set(ck.state)
        assert ck.state["lbfgs_s"].shape[1] == X.shape[1] + 1
        for k in thens:
            again = str(tmp_path / f"ck{first}-{k}.zarr")
            shutil.copytree(path, again)
            res = fit((X, y), client=client, n_servers=k, max_epochs=14, checkpoint=again,
                      resume=True, **kw)  # fmt: skip
            assert res.history[-1]["epoch"] == 14
            np.testing.assert_allclose(_params(res), _params(ref), rtol=1e-8, atol=1e-10)


def test_newton_still_needs_the_whole_model():
    with pytest.raises(InvalidSettingError, match="newton"):
        FitSettings(n_servers=1, optimizer="newton")


def test_sharded_lbfgs_rebuilds_the_shard_of_a_killed_worker(reliability):
    """kill -9 of a shard's worker mid-fit: the shards and the coordinator's L-BFGS numbers
    roll back to the last backup, and the fit reaches the optimum."""
    X, y = _logistic(n=3000, d=12)
    alpha = 1e-4
    sol = _scipy_logistic(X, y, alpha)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        outcome = fit_and_kill(c, (X, y), dict(n_servers=2, optimizer="lbfgs",
                               loss="log_loss", alpha=alpha, max_epochs=2000, tol=None,
                               gtol=1e-9, max_time=150, delay={0: 0.05, 1: 0.05}),
                               12, first_worker)  # fmt: skip
    assert "error" not in outcome, outcome.get("error")
    res = outcome["res"]
    reliability.add("shard holders killed (sharded L-BFGS fit rebuilt)")
    assert [r["shard"] for r in res.recoveries_] == [0]
    assert res.converged_
    np.testing.assert_allclose(_params(res), sol, atol=1e-5)


def test_sharded_lbfgs_is_preconditioned_as_the_whole_model(client, tmp_path):
    """Columns over four orders of magnitude: with the column-squares preconditioner (the
    default) the shards take the whole-model server's iterates (to rounding) and few
    passes; a checkpoint written with shards resumes on the whole-model server."""
    rng = np.random.default_rng(5)
    scale = np.logspace(-2, 2, 9)
    X = rng.normal(size=(1500, 9)) * scale
    y = (X @ (rng.normal(size=9) / scale) + rng.normal(size=1500) > 0).astype(float)
    kw = {"optimizer": "lbfgs", "loss": "log_loss", "alpha": 1e-3, "gtol": 1e-9,
          "max_epochs": 300, "tol": None}  # fmt: skip
    ref = fit((X, y), client=client, n_servers=0, **kw)
    plain = fit((X, y), client=client, n_servers=2, optimizer_options=NO_PRECONDITION, **kw)
    sol = _scipy_logistic(X, y, 1e-3)
    for k in (1, 2):
        res = fit((X, y), client=client, n_servers=k, **kw)
        assert res.converged_ and res.n_iter_ < 60 and 2 * res.n_iter_ < plain.n_iter_
        # a gradient of 1e-9 leaves up to 1e-6 / alpha on the columns of scale 1e-2
        np.testing.assert_allclose(_params(res), _params(ref), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(_params(res), sol, rtol=1e-5, atol=1e-6)
        n = min(8, len(ref.history))
        np.testing.assert_allclose([h["loss"] for h in res.history[:n]],
                                   [h["loss"] for h in ref.history[:n]], rtol=1e-9)  # fmt: skip
    path = str(tmp_path / "pre.zarr")
    fit((X, y), client=client, n_servers=2, checkpoint=path, checkpoint_every=5,
        **{**kw, "max_epochs": 10})  # fmt: skip
    for k in (0, 2):  # with shards the L-BFGS memory restarts at the checkpoint's point
        again = str(tmp_path / f"pre-{k}.zarr")
        shutil.copytree(path, again)
        res = fit((X, y), client=client, n_servers=k, checkpoint=again, resume=True, **kw)
        assert res.converged_ and res.history[-1]["epoch"] > 10
        np.testing.assert_allclose(_params(res), sol, rtol=1e-5, atol=1e-6)
