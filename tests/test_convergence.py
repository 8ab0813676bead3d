"""Divergence, convergence claims and the automatic step, on a real LocalCluster.

- every mode, optimizer, penalty and loss raises ``DivergenceError`` within a few epochs of a
  blow-up, judged against the loss before the first step (never against an epoch that has
  diverged already);
- ``converged_`` means a gradient test held, and an estimator that stops short of its optimum
  says so with scikit-learn's ``ConvergenceWarning``;
- the defaults (``daskgd.fit``, ``daskgd fit``, the estimators) reach the least-squares
  optimum on ordinary data, with a step the workers compute from their rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import dask.array as da
import numpy as np
import pytest
from _subprocess import subprocess_env
from distributed import Client
from sklearn import datasets
from sklearn import linear_model as sk
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

import daskgd
from daskgd import LinearRegression, LogisticRegression, SGDClassifier, SGDRegressor
from daskgd.driver import fit
from daskgd.errors import DivergenceError


def _regression(n=2000, d=10, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.5 + noise * rng.standard_normal(n)
    return X, y


def _augmented(X):
    return np.column_stack([X, np.ones(len(X))])


def _lsq(X, y):
    """The least-squares solution (coefficients and intercept) and its objective."""
    A = _augmented(X)
    sol = np.linalg.lstsq(A, y, rcond=None)[0]
    return sol, 0.5 * np.mean((A @ sol - y) ** 2)


def _objective(X, y, coef, intercept):
    return 0.5 * np.mean((X @ np.ravel(coef) + np.ravel(intercept)[0] - y) ** 2)


def _classification(n=2000, d=6, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.where(X @ rng.standard_normal(d) + 0.3 + 0.5 * rng.standard_normal(n) > 0, 1.0, -1.0)
    return X, y


# -- divergence ----------------------------------------------------------------------------------


def _diverges_early(data, max_epochs=20, **kwargs):
    """Fit; assert DivergenceError within the first two epochs; return its message."""
    seen = []
    with pytest.raises(DivergenceError, match="smaller learning_rate") as info:
        fit(data, max_epochs=max_epochs, tol=None, random_state=0,
            callback=lambda row: seen.append(row["epoch"]), **kwargs)  # fmt: skip
    assert len(seen) <= 2, seen  # at once, not after max_epochs
    return str(info.value)


@pytest.mark.parametrize("mode", ["sync", "async", "ssp"])
def test_mini_batch_blow_up_raises_in_every_mode(client, mode):
    # the kernel clips the derivatives, so the values stay finite; the first epoch has
    # diverged already, so only the loss before the first step shows the blow-up
    ssp = {"max_staleness": 2} if mode == "ssp" else {}
    msg = _diverges_early(_regression(n=1000), client=client, mode=mode, batch_size=32,
                          learning_rate=1e6, **ssp)  # fmt: skip
    assert "before the first step" in msg


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adagrad", "adam"])
def test_blow_up_raises_with_every_optimizer(client, optimizer):
    _diverges_early(_regression(n=1000), client=client, optimizer=optimizer, batch_size=32,
                    mode="async", learning_rate=1e6)  # fmt: skip


def test_blow_up_raises_with_an_l1_penalty(client):
    _diverges_early(_regression(n=1000), client=client, alpha=0.1, l1_ratio=1.0, batch_size=32,
                    learning_rate=1e6)  # fmt: skip


@pytest.mark.parametrize("loss", ["huber", "hinge", "log_loss", "squared_hinge"])
@pytest.mark.parametrize("batch_size", [None, 32])
def test_blow_up_raises_with_clipped_losses(client, loss, batch_size):
    # huber, hinge and log loss have bounded derivatives: the parameters (and the loss)
    # grow linearly, never overflow, and never reach 1e10 times the first epoch's loss
    X, y = _classification(n=1000) if loss != "huber" else _regression(n=1000)
    _diverges_early((X, y), client=client, loss=loss, batch_size=batch_size, learning_rate=1e6)


def test_a_slowly_diverging_fit_is_caught(client):
    # full-batch descent with a step 2.3 / lambda_max: the error grows 1.3 times an epoch and
    # the loss stays finite; it must stop long before it has grown 1e10 times
    X, y = _regression(n=600, d=5)
    lam = np.linalg.eigvalsh(_augmented(X).T @ _augmented(X) / len(X))[-1]
    seen = []
    with pytest.raises(DivergenceError, match="before the first step"):
        fit((X, y), client=client, learning_rate=2.3 / lam, max_epochs=40, tol=None,
            callback=lambda row: seen.append(row["loss"]))  # fmt: skip
    assert np.isfinite(seen).all() and len(seen) < 40


def test_a_good_fit_from_near_the_optimum_is_not_called_divergent(client):
    # the loss at the start is tiny (noise-free data, warm start): mini-batch noise lifts it
    # by orders of magnitude, which is no divergence (the reference includes the loss at 0)
    X, y = _regression(n=1000, noise=0.0)
    sol, _ = _lsq(X, y)
    res = fit((X, y), client=client, mode="async", batch_size=16, learning_rate=0.05,
              max_epochs=3, tol=None, coef_init=sol[:-1] + 1e-6,
              intercept_init=sol[-1])  # fmt: skip
    assert res.n_iter_ == 3


# -- converged_ and ConvergenceWarning -----------------------------------------------------------


def test_a_stalled_loss_with_a_large_gradient_is_not_convergence(client):
    # a step far too small: the loss barely moves, so the tol rule stops the fit at once,
    # but the gradient is as large as at the start
    X, y = _regression(n=600, d=5)
    res = fit((X, y), client=client, learning_rate=1e-7, tol=1e-4, max_epochs=100)
    assert "tol" in res.reason and res.n_iter_ < 100
    assert not res.converged_ and "not converged" in res.reason
    # the same rule with a step that reaches the optimum: converged, with the gradient test
    res = fit((X, y), client=client, tol=1e-4, max_epochs=200)
    assert res.converged_ and "sqrt(tol)" in res.reason


def test_a_stalled_hinge_loss_is_convergence_as_in_scikit_learn(client):
    # the hinge loss has a kink: its gradient need not vanish at the optimum, so a
    # full-batch fit whose loss stalled has converged (scikit-learn's SGD rule), with no
    # ConvergenceWarning
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 4))
    y = np.where(X @ rng.normal(size=4) + 0.5 * rng.normal(size=400) > 0, 1, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = SGDClassifier(loss="hinge", batch_size=None, max_iter=500, tol=1e-4,
                            random_state=0, verbose=0).fit(X, y)  # fmt: skip
    assert clf.converged_ and clf.n_iter_ < 500


def test_gtol_rel_stops_on_the_gradient_relative_to_its_start(client):
    X, y = _regression(n=600, d=5)
    res = fit((X, y), client=client, tol=None, gtol_rel=1e-8, max_epochs=2000)
    assert res.converged_ and "gtol_rel" in res.reason
    g = [h["grad_norm"] for h in res.history]
    assert g[-1] <= 1e-8 * g[0] * 1.0001
    sol, _fstar = _lsq(X, y)
    np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=1e-7)


@pytest.mark.parametrize("column", [0, 1, 2])
def test_linear_regression_with_a_scaled_column_reaches_lstsq_or_says_not(client, column):
    rng = np.random.default_rng(1)
    for _ in range(column + 1):  # the same draws as the measurements in the README
        X = rng.normal(size=(500, 8))
        y = X @ rng.normal(size=8) + 1 + rng.normal(size=500)
    X[:, column] *= 1000
    ref = sk.LinearRegression().fit(X, y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = LinearRegression(verbose=0, client=client).fit(X, y)
    warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    err = np.max(np.abs(ours.coef_ - ref.coef_)) / np.max(np.abs(ref.coef_))
    if ours.converged_:
        assert err <= 1e-6 and not warned
    else:
        assert warned


def test_logistic_regression_that_stops_at_max_iter_warns(client):
    X, y = datasets.load_breast_cancer(return_X_y=True)  # unscaled: features up to 4,000
    with pytest.warns(ConvergenceWarning, match="LogisticRegression did not converge"):
        clf = LogisticRegression(verbose=0, max_iter=100, client=client, optimizer="lbfgs")
        clf.fit(X, y)
    assert not clf.converged_ and clf.n_iter_ == 100


def test_logistic_regression_default_solves_unscaled_data(client):
    # the default (optimizer="auto": Newton for 31 parameters) does not mind the scales
    # that stop L-BFGS above: the README's "Agreement" figure
    X, y = datasets.load_breast_cancer(return_X_y=True)
    clf = LogisticRegression(verbose=0, max_iter=100, client=client).fit(X, y)
    ref = sk.LogisticRegression(solver="newton-cholesky", tol=1e-12, max_iter=1000).fit(X, y)
    assert clf.converged_ and clf.n_iter_ <= 20
    assert np.max(np.abs(clf.coef_ - ref.coef_)) / np.max(np.abs(ref.coef_)) <= 1e-7


def test_readme_agreement_with_the_exact_optimum(client):
    # the README's "Agreement with scikit-learn" figures, with the default tolerances
    Xd, yd = datasets.load_diabetes(return_X_y=True)
    ours = LinearRegression(verbose=0, client=client).fit(Xd, yd)
    ref = sk.LinearRegression().fit(Xd, yd)
    assert ours.converged_
    assert np.max(np.abs(ours.coef_ - ref.coef_)) / np.max(np.abs(ref.coef_)) <= 1e-6
    Xb, yb = datasets.load_breast_cancer(return_X_y=True)
    Xs = StandardScaler().fit_transform(Xb)
    clf = LogisticRegression(verbose=0, client=client).fit(Xs, yb)
    assert clf.converged_
    # the exact optimum of the same objective (scikit-learn's own lbfgs stops about 1e-6
    # from it, so the reference is scipy's L-BFGS-B run to machine precision)
    from scipy.optimize import minimize

    s, n = np.where(yb > 0, 1.0, -1.0), len(yb)

    def objective(p):
        z = s * (Xs @ p[:-1] + p[-1])
        g = -s / (1 + np.exp(z)) / n
        f = np.mean(np.logaddexp(0, -z)) + 0.5 / n * p[:-1] @ p[:-1]
        return f, np.append(Xs.T @ g + p[:-1] / n, g.sum())

    exact = minimize(objective, np.zeros(31), jac=True, method="L-BFGS-B",
                     options={"gtol": 1e-14, "ftol": 1e-16, "maxiter": 100_000}).x  # fmt: skip
    ours_p = np.append(clf.coef_.ravel(), clf.intercept_)
    assert np.max(np.abs(ours_p - exact)) / np.max(np.abs(exact)) <= 1e-6


def test_sgd_estimators_warn_at_max_iter_like_scikit_learn(client):
    X, y = _regression(n=500, d=4)
    with pytest.warns(ConvergenceWarning, match="SGDRegressor did not converge"):
        reg = SGDRegressor(max_iter=2, tol=1e-3, verbose=0, random_state=0, client=client)
        reg.fit(X, y)
    assert not reg.converged_
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        SGDRegressor(max_iter=2, tol=None, verbose=0, random_state=0, client=client).fit(X, y)
        reg.partial_fit(X, y)  # one epoch on purpose: scikit-learn does not warn either
    Xc, yc = _classification(n=500)
    with pytest.warns(ConvergenceWarning, match="SGDClassifier did not converge"):
        SGDClassifier(max_iter=2, verbose=0, random_state=0, client=client).fit(Xc, yc)


def test_early_stopping_counts_as_converged(client):
    X, y = _regression(n=2000, d=10, noise=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        reg = SGDRegressor(early_stopping=True, n_iter_no_change=3, batch_size=64,
                           max_iter=300, tol=1e-3, random_state=0, verbose=0,
                           client=client).fit(X, y)  # fmt: skip
    assert reg.n_iter_ < 300 and reg.converged_


# -- the defaults and the automatic step -----------------------------------------------------------


def test_fit_defaults_reach_the_optimum(client):
    X, y = _regression(n=4000, d=20)
    _sol, fstar = _lsq(X, y)
    res = fit((X, y), client=client)
    assert res.converged_, res.reason
    assert (_objective(X, y, res.coef_, res.intercept_) - fstar) / fstar <= 1e-6
    # "auto" is 1 / lambda_max of the data's A^T A / n, exactly (the workers' Gram matrices)
    lam = np.linalg.eigvalsh(_augmented(X).T @ _augmented(X) / len(X))[-1]
    assert res.learning_rate_ == pytest.approx(1.0 / lam, rel=1e-9)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_estimator_defaults_reach_a_good_model(client, mode):
    X, y = _regression(n=4000, d=20)
    _sol, fstar = _lsq(X, y)
    r2 = 1 - 2 * fstar / np.var(y)
    reg = SGDRegressor(mode=mode, verbose=0, random_state=0, client=client).fit(X, y)
    assert reg.score(X, y) >= r2 - 1e-3
    lin = LinearRegression(mode=mode, verbose=0, client=client).fit(X, y)
    # async: each partition's gradient steps alone, which biases the fixed point slightly
    assert lin.score(X, y) >= r2 - (1e-6 if mode == "sync" else 1e-5)
    Xc, yc = _classification(n=4000)
    best = sk.LogisticRegression().fit(Xc, yc).score(Xc, yc)
    for est in (SGDClassifier(loss="log_loss", mode=mode, random_state=0),
                LogisticRegression(mode=mode)):  # fmt: skip
        est.set_params(verbose=0, client=client)
        assert est.fit(Xc, yc).score(Xc, yc) >= best - 0.01, est


def test_auto_step_is_computed_on_the_workers_not_the_driver(cluster):
    # blocks that refuse to be computed outside a Dask worker: the driver must not read X
    def guarded(block):
        from distributed import get_worker

        get_worker()  # raises ValueError on the driver
        return block

    X, y = _regression(n=2000, d=8)
    Xd = da.from_array(X, chunks=(500, 8)).map_blocks(guarded, dtype=X.dtype)
    yd = da.from_array(y, chunks=500)
    reg = SGDRegressor(batch_size=None, learning_rate="constant", penalty=None, tol=1e-6,
                       verbose=0, client=cluster.scheduler_address).fit(Xd, yd)  # fmt: skip
    _sol, fstar = _lsq(X, y)
    assert (_objective(X, y, reg.coef_, reg.intercept_) - fstar) / fstar <= 1e-4


def test_cli_fit_defaults_reach_the_optimum(tmp_path):
    env = subprocess_env()

    def daskgd_cli(*argv):
        return subprocess.run([sys.executable, "-m", "daskgd.cli", *argv], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=240)  # fmt: skip

    r = daskgd_cli("make-data", "r.zarr", "--n-samples", "20000", "--n-features", "50",
                   "--noise", "0.1", "--chunk-rows", "5000")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = daskgd_cli("fit", "r.zarr", "--n-workers", "2", "--output", "m.json")
    assert r.returncode == 0, r.stderr
    assert ", converged," in r.stdout
    model = json.loads((tmp_path / "m.json").read_text())
    ds = daskgd.open_zarr(tmp_path / "r.zarr")
    X, y = ds.X.compute(), ds.y.compute()
    _sol, fstar = _lsq(X, y)
    f = _objective(X, y, np.asarray(model["coef"]), np.asarray(model["intercept"]))
    assert (f - fstar) / fstar <= 1e-3


def test_partial_fit_keeps_working_with_the_automatic_step(client):
    X, y = _regression(n=600, d=4)
    reg = SGDRegressor(verbose=0, random_state=0, client=client)
    for _ in range(3):
        reg.partial_fit(X, y)
    assert reg.score(X, y) > 0.9
    assert isinstance(client, Client)


def test_auto_step_out_of_core_and_wide(client, tmp_path):
    # out of core: the Gram matrices come from one extra pass over the chunks
    X, y = _regression(n=3000, d=12)
    path = tmp_path / "d.zarr"
    daskgd.write_zarr(path, X, y, chunk_rows=500)
    res = fit(str(path), client=client, out_of_core=True, max_epochs=300)
    lam = np.linalg.eigvalsh(_augmented(X).T @ _augmented(X) / len(X))[-1]
    assert res.learning_rate_ == pytest.approx(1.0 / lam, rel=1e-9)
    _sol, fstar = _lsq(X, y)
    assert (_objective(X, y, res.coef_, res.intercept_) - fstar) / fstar <= 1e-6
    # wider than a Gram matrix is formed for: power iteration, within the stable range
    Xw, yw = _regression(n=1500, d=1100, seed=3)
    res = fit((Xw, yw), client=client, max_epochs=2, tol=None)
    lam = np.linalg.eigvalsh(_augmented(Xw).T @ _augmented(Xw) / len(Xw))[-1]
    assert 0.3 / lam <= res.learning_rate_ <= 1.0 / lam


def test_auto_step_survives_a_resume(client, tmp_path):
    X, y = _regression(n=1000, d=6)
    ckpt = str(tmp_path / "fit.zarr")
    first = fit((X, y), client=client, max_epochs=3, tol=None, checkpoint=ckpt)
    more = fit((X, y), client=client, max_epochs=6, tol=None, checkpoint=ckpt, resume=True)
    assert more.learning_rate_ == first.learning_rate_
    assert [h["epoch"] for h in more.history] == [1, 2, 3, 4, 5, 6]
    assert more.history[-1]["loss"] < first.history[-1]["loss"]


def test_auto_step_with_a_worker_killed_while_loading(client):
    # the live ranks wait for every live rank's report before the first step; a rank whose
    # worker dies is dropped from that wait, and its rerun rejoins at the current parameters
    import os
    import signal
    import threading

    X, y = _regression(n=4000, d=8)
    client.wait_for_workers(2, timeout=60)
    out = {}

    def run():
        try:
            out["res"] = fit((X, y), client=client, tol=None, gtol_rel=1e-8, max_epochs=2000)
        except BaseException as exc:  # surfaced below
            out["exc"] = exc

    t = threading.Thread(target=run)
    t.start()

    def submitted(dask_scheduler):
        return any(str(k).startswith("daskgd-train-") for k in dask_scheduler.tasks)

    while not client.run_on_scheduler(submitted) and t.is_alive():
        threading.Event().wait(0.01)
    victim = sorted(client.scheduler_info()["workers"])[-1]
    os.kill(client.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)
    t.join(180)
    assert not t.is_alive(), "fit hung after a worker died"
    assert "exc" not in out, out.get("exc")
    res = out["res"]
    assert res.converged_, res.reason
    sol, _ = _lsq(X, y)
    np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=1e-6)
    client.wait_for_workers(2, timeout=60)


@pytest.mark.parametrize("mode", ["async", "ssp"])
def test_async_full_batch_claims_convergence_only_at_the_optimum(client, mode):
    """Async/ssp full batch with a constant step: each push steps towards its own
    partition's optimum, and where the pushes come in a regular order the iterates settle
    on a cycle whose gradients sum to zero along it (test_job.py builds one). Whatever the
    order here, a fit that says it converged is at the optimum: its gradient test was
    checked at one point (a check's norm is recorded on the history)."""
    X, y = _regression(n=4000, d=5, seed=3)
    y = y + np.repeat([2.0, -2.0], 2000)  # the two partitions' optima far apart
    extra = {"max_staleness": 1} if mode == "ssp" else {}
    res = fit((X, y), mode=mode, learning_rate=0.5, gtol=1e-8, tol=None, max_epochs=200,
              client=client, **extra)  # fmt: skip
    w = np.append(res.coef_, res.intercept_)
    true = np.linalg.norm(_augmented(X).T @ (_augmented(X) @ w - y)) / len(y)
    if res.converged_:
        assert "confirmed at version" in res.reason and true <= 1e-7, (res.reason, true)
    checks = [h["check"] for h in res.history if "check" in h]
    failed = checks[:-1] if res.converged_ else checks  # the steps went on after these
    assert all(c["grad_norm"] > 1e-8 for c in failed), checks


def test_async_full_batch_on_one_worker_is_confirmed_at_one_point(client):
    """One rank: async full batch is gradient descent, the gradient test holds at one point
    too, and the fit is converged, its gradient checked there."""
    X, y = _regression(n=2000, d=5)
    sol, _ = _lsq(X, y)
    res = fit((X, y), mode="async", gtol=1e-9, tol=None, max_epochs=500, n_workers=1,
              client=client)  # fmt: skip
    assert res.converged_ and "confirmed at version" in res.reason, res.reason
    np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=1e-8)
