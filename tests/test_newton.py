"""Newton's method: the state machine against numpy, scipy and scikit-learn oracles, then
``fit(optimizer="newton")`` and ``optimizer="auto"`` on a real cluster (worker processes)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.linear_model import ElasticNet, LogisticRegression

import daskgd
from daskgd.checkpoint import load_checkpoint
from daskgd.driver import FitSettings, fit
from daskgd.errors import InvalidSettingError
from daskgd.objective import NEWTON_MAX_FEATURES, Newton, choose_optimizer, make_optimizer


# -- numpy oracles ---------------------------------------------------------------------------
def _logistic(X, y, sw=None):
    """Mean (weighted) logistic loss of ``y in {-1, 1}``, its gradient and Hessian in
    ``[w, b]``."""
    A = np.hstack([X, np.ones((len(X), 1))])
    s = np.ones(len(y)) if sw is None else sw

    def fgh(x):
        m = y * (A @ x)
        p = np.exp(-np.logaddexp(0.0, m))  # sigmoid(-m)
        f = float(s @ np.logaddexp(0.0, -m)) / s.sum()
        return f, A.T @ (-s * y * p) / s.sum(), (A * (s * p * (1 - p))[:, None]).T @ A / s.sum()

    return fgh


def _squares(X, y):
    A = np.hstack([X, np.ones((len(X), 1))])

    def fgh(x):
        r = A @ x - y
        return 0.5 * float(r @ r) / len(y), A.T @ r / len(y), A.T @ A / len(y)

    return fgh


def _ill_conditioned(n=2000, d=12, seed=0):
    """Columns on scales 1e-2..1e2, two of them correlated: a Hessian condition number
    far beyond 1e6."""
    rng = np.random.default_rng(seed)
    scales = np.logspace(-2, 2, d)
    Z = rng.standard_normal((n, d))
    Z[:, 1] = 0.95 * Z[:, 0] + 0.05 * Z[:, 1]
    X = Z * scales
    y = np.where(Z @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n) > 0, 1.0, -1.0)
    return X, y


def _run(opt, fgh, x, rounds=60, stop=1e-30):
    for k in range(1, rounds + 1):
        x = opt.tell(x, *fgh(x))
        if opt.decrement is not None and opt.decrement <= stop:
            return x, k
    return x, rounds


# -- the state machine -------------------------------------------------------------------------
def test_logistic_matches_sklearn_newton_cholesky_in_few_evaluations():
    X, y = _ill_conditioned()
    C = 10.0
    sw = np.random.default_rng(3).uniform(0.5, 2.0, len(y))
    opt = Newton(l2=1.0 / (C * sw.sum()))
    x, evaluations = _run(opt, _logistic(X, y, sw), np.zeros(X.shape[1] + 1))
    sk = LogisticRegression(C=C, solver="newton-cholesky", tol=1e-12, max_iter=1000)
    sk.fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(x[:-1], sk.coef_[0], rtol=1e-6, atol=1e-8)
    assert abs(x[-1] - sk.intercept_[0]) < 1e-7
    assert evaluations <= 15 and opt.fallbacks == 0


def test_least_squares_is_one_newton_step():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 6)) * np.logspace(-2, 2, 6)
    y = X @ rng.standard_normal(6) + 0.1 * rng.standard_normal(300)
    fgh = _squares(X, y)
    opt = Newton()
    x1 = opt.tell(np.zeros(7), *fgh(np.zeros(7)))
    sol = np.linalg.lstsq(np.hstack([X, np.ones((300, 1))]), y, rcond=None)[0]
    np.testing.assert_allclose(x1, sol, rtol=1e-8)
    opt.tell(x1, *fgh(x1))
    assert opt.iterations == 1 and opt.decrement is not None and opt.decrement < 1e-20


@pytest.mark.parametrize("l1_ratio", [1.0, 0.5])
def test_elastic_net_matches_sklearn_with_exact_zeros(l1_ratio):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((400, 15)) * np.logspace(-1, 1, 15)
    y = X[:, :4] @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.5 * rng.standard_normal(400) + 1.0
    alpha = 0.1
    opt = Newton(l2=alpha * (1 - l1_ratio), l1=alpha * l1_ratio)
    x, evaluations = _run(opt, _squares(X, y), np.zeros(16))
    en = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, tol=1e-14, max_iter=100_000).fit(X, y)
    np.testing.assert_allclose(x[:-1], en.coef_, atol=1e-8)
    assert abs(x[-1] - en.intercept_) < 1e-8
    assert np.array_equal(x[:-1] == 0, en.coef_ == 0) and np.sum(x[:-1] == 0) >= 5
    assert evaluations <= 4


def test_l1_logistic_matches_a_scipy_solve_with_exact_zeros():
    from scipy.optimize import minimize

    rng = np.random.default_rng(4)
    X = rng.standard_normal((500, 10))
    y = np.where(X[:, :3] @ np.array([2.0, -1.0, 1.5]) + rng.standard_normal(500) > 0, 1.0, -1.0)
    l1, l2 = 0.02, 0.01
    fgh = _logistic(X, y)
    opt = Newton(l2=l2, l1=l1)
    x, evaluations = _run(opt, fgh, np.zeros(11))
    # the oracle: split w = u - v with u, v >= 0 (a smooth bound-constrained problem)

    def split(z):
        u, v, b = z[:10], z[10:20], z[20]
        f, g, _ = fgh(np.append(u - v, b))
        w = u - v
        F = f + 0.5 * l2 * w @ w + l1 * (u.sum() + v.sum())
        gw = g[:10] + l2 * w
        return F, np.concatenate([gw + l1, -gw + l1, g[10:]])

    bounds = [(0, None)] * 20 + [(None, None)]
    z = minimize(split, np.zeros(21), jac=True, method="L-BFGS-B", bounds=bounds,
                 options={"ftol": 0, "gtol": 1e-12, "maxiter": 20_000}).x  # fmt: skip
    w_ref = z[:10] - z[10:20]
    np.testing.assert_allclose(x[:-1], w_ref, atol=1e-5)
    assert np.all(x[:-1][np.abs(w_ref) < 1e-8] == 0.0)  # exact zeros where the optimum has them
    assert np.abs(opt.optimality(x, fgh(x)[1] + np.append(l2 * x[:-1], 0))).max() < 1e-9
    assert evaluations <= 12


def test_a_singular_hessian_is_damped_and_converges():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 5))
    X = np.hstack([X, X[:, :1], np.zeros((40, 1))])  # a duplicated and a constant column
    y = X[:, 0] - X[:, 2] + 0.1 * rng.standard_normal(40)
    fgh = _squares(X, y)
    opt = Newton()
    x, _ = _run(opt, fgh, np.zeros(8), stop=1e-25)
    assert np.all(np.isfinite(x)) and np.abs(x).max() < 10
    assert np.linalg.norm(fgh(x)[1]) < 1e-10  # a least-squares solution
    assert opt.singular  # the minimum-norm step: rounding not amplified along the null space
    # more columns than rows, logistic with a little L2: a unique optimum
    Xw = rng.standard_normal((20, 60))
    yw = np.where(rng.standard_normal(20) > 0, 1.0, -1.0)
    fgh = _logistic(Xw, yw)
    opt = Newton(l2=1e-3)
    x, evaluations = _run(opt, fgh, np.zeros(61), stop=1e-24)
    g = fgh(x)[1] + np.append(1e-3 * x[:-1], 0.0)
    assert np.linalg.norm(g) < 1e-9 and evaluations < 40


def test_an_indefinite_hessian_falls_back_to_damping_and_still_descends():
    A = np.diag([1.0, 4.0, 9.0])
    b = np.array([1.0, 1.0, 1.0])

    def fgh(x):  # the wrong sign of curvature: Cholesky fails until the damping wins
        return 0.5 * x @ A @ x - b @ x, A @ x - b, -A

    opt = Newton()
    x = np.zeros(3)
    values = [fgh(x)[0]]
    for _ in range(200):
        x = opt.tell(x, *fgh(x))
        if opt.decrement is not None:
            values.append(fgh(x)[0])
    assert opt.damping > 0
    assert all(b_ <= a_ + 1e-15 for a_, b_ in itertools.pairwise(values))
    assert values[-1] < values[0]


def test_backs_off_from_an_overflowing_trial_point():
    X, y = _ill_conditioned(n=300, d=4)
    fgh = _logistic(X, y)
    opt = Newton(l2=1e-3)
    x0 = np.zeros(5)
    x1 = opt.tell(x0, *fgh(x0))
    x2 = opt.tell(x1, np.inf, np.full(5, np.nan), np.full((5, 5), np.nan))
    np.testing.assert_allclose(x2 - x0, 0.1 * (x1 - x0))
    with pytest.raises(ValueError, match="non-finite"):
        Newton().tell(x0, np.inf, np.zeros(5), np.eye(5))


def test_state_round_trips_mid_line_search():
    X, y = _ill_conditioned(n=500, d=6)
    fgh = _logistic(X, y)
    a = Newton(l2=1e-4, l1=1e-3)
    x = np.zeros(7)
    for _ in range(3):
        x = a.tell(x, *fgh(x))
    b = Newton(l2=1e-4, l1=1e-3)
    b.load_state({k: (None if v is None else np.asarray(v)) for k, v in a.state().items()}, 7)
    xa, xb = x, x.copy()
    for _ in range(4):
        xa, xb = a.tell(xa, *fgh(xa)), b.tell(xb, *fgh(xb))
    np.testing.assert_array_equal(xa, xb)
    with pytest.raises(ValueError, match="expected 7"):
        b.load_state({"x": np.zeros(3), "p": np.zeros(3)}, 7)


def test_fixed_intercept_stays():
    X, y = _ill_conditioned(n=400, d=5)
    opt = make_optimizer("newton", learning_rate=1.0, alpha=1e-3, fit_intercept=False)
    P = np.append(np.zeros(5), 0.25)
    state = opt.init_state(P)
    f, g, H = _logistic(X, y)(P)
    new = opt.step(P, g, state, 0, 0, loss=f, hess=H)
    assert new[-1] == 0.25 and np.any(new[:-1] != 0)


def test_choose_optimizer_rule():
    assert choose_optimizer(NEWTON_MAX_FEATURES, True, True, False) == "newton"
    assert choose_optimizer(NEWTON_MAX_FEATURES + 1, True, True, False) == "lbfgs"
    assert choose_optimizer(NEWTON_MAX_FEATURES + 1, False, True, False) == "sgd"
    assert choose_optimizer(10, False, True, False) == "newton"  # L1: coordinate descent
    assert choose_optimizer(10, True, True, True) == "lbfgs"  # multinomial
    assert choose_optimizer(10, True, False, False) == "sgd"
    assert choose_optimizer(10, False, True, False, twice_differentiable=False) == "sgd"


def test_auto_resolves_by_the_data_width():
    assert FitSettings(optimizer="auto").resolved(5).optimizer == "newton"
    assert FitSettings(optimizer="auto").resolved(NEWTON_MAX_FEATURES).optimizer == "lbfgs"
    wide = FitSettings(optimizer="auto", alpha=0.1, l1_ratio=0.5).resolved(10**6)
    assert wide.optimizer == "sgd"
    assert FitSettings(optimizer="auto", batch_size=10).resolved(5).optimizer == "sgd"
    multi = FitSettings(optimizer="auto", loss="log_loss", n_classes=3)
    assert multi.resolved(5).optimizer == "lbfgs"
    assert FitSettings(optimizer="auto", loss="hinge").resolved(5).optimizer == "sgd"
    s = FitSettings(optimizer="auto", random_state=None)
    assert (
        s.resolved(5).seed == s.seed
        and s.resolved(5).worker_spec(classes=None, batches_per_epoch=1)["hessian"]
    )
    assert not FitSettings(optimizer="newton").auto_lr


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "async"}, "needs mode='sync'"),
        ({"batch_size": 16}, "full batches"),
        ({"sync_quorum": 1}, "sync_quorum=None"),
        ({"loss": "log_loss", "n_classes": 3}, "use optimizer='lbfgs'"),
        ({"loss": "hinge"}, "second derivative"),
    ],
)
def test_newton_refuses_what_it_cannot_do(kwargs, match):
    with pytest.raises(InvalidSettingError, match=match):
        FitSettings(optimizer="newton", **kwargs)


# -- on the cluster ------------------------------------------------------------------------------
def test_fit_matches_sklearn_on_an_ill_conditioned_logistic_problem(client):
    X, y = _ill_conditioned()
    sw = np.random.default_rng(3).uniform(0.5, 2.0, len(y))
    C = 10.0
    sk = LogisticRegression(C=C, solver="newton-cholesky", tol=1e-12, max_iter=1000)
    sk.fit(X, y, sample_weight=sw)
    kw = {"loss": "log_loss", "alpha": 1.0 / (C * sw.sum()), "gtol": 1e-9, "tol": None}
    res = fit((X, y, sw), client=client, optimizer="newton", max_epochs=30, **kw)
    assert res.converged_ and res.n_iter_ <= 15 and res.learning_rate_ is None
    np.testing.assert_allclose(res.coef_, sk.coef_[0], rtol=1e-6, atol=1e-8)
    assert abs(res.intercept_ - sk.intercept_[0]) < 1e-6
    # L-BFGS, given twice Newton's passes, is still far away
    slow = fit((X, y, sw), client=client, optimizer="lbfgs", max_epochs=2 * res.n_iter_, **kw)
    assert not slow.converged_
    assert np.abs(slow.coef_ - sk.coef_[0]).max() > 1e3 * np.abs(res.coef_ - sk.coef_[0]).max()


def test_ridge_and_elastic_net_on_a_zarr_dataset(client, tmp_path):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((600, 8)) * np.logspace(-1, 1, 8)
    y = X[:, :3] @ np.array([1.0, -1.0, 2.0]) + 0.3 * rng.standard_normal(600) + 2.0
    path = str(tmp_path / "r.zarr")
    daskgd.write_zarr(path, X, y, chunk_rows=150)
    alpha = 0.05
    ridge = fit(path, client=client, optimizer="newton", alpha=alpha)
    A = np.hstack([X, np.ones((600, 1))])
    R = np.diag([alpha] * 8 + [0.0])
    sol = np.linalg.solve(A.T @ A / 600 + R, A.T @ y / 600)
    assert ridge.converged_ and ridge.n_iter_ == 2  # tol: a second pass confirms the step
    one = fit(path, client=client, optimizer="newton", alpha=alpha, tol=None, gtol_rel=1e-9)
    assert one.converged_ and one.n_iter_ == 1 and "least-squares" in one.reason
    np.testing.assert_allclose(np.append(one.coef_, one.intercept_), sol, rtol=1e-9)
    np.testing.assert_allclose(np.append(ridge.coef_, ridge.intercept_), sol, rtol=1e-9)
    en = fit(path, client=client, optimizer="newton", alpha=alpha, l1_ratio=0.7, tol=1e-12)
    ref = ElasticNet(alpha=alpha, l1_ratio=0.7, tol=1e-14, max_iter=100_000).fit(X, y)
    assert en.converged_ and en.n_iter_ <= 6
    np.testing.assert_allclose(en.coef_, ref.coef_, atol=1e-7)
    assert np.array_equal(en.coef_ == 0, ref.coef_ == 0) and np.any(en.coef_ == 0)


def test_singular_data_converges_on_the_cluster(client):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((30, 40))  # more columns than rows
    X[:, 1] = X[:, 0]
    y = X[:, 0] + 0.1 * rng.standard_normal(30)
    res = fit((X, y), client=client, optimizer="newton", gtol=1e-8, tol=None, max_epochs=40)
    A = np.hstack([X, np.ones((30, 1))])
    g = A.T @ (A @ np.append(res.coef_, res.intercept_) - y) / 30
    assert res.converged_ and np.linalg.norm(g) <= 1e-8 and np.all(np.isfinite(res.coef_))


def test_newton_refusals_from_fit(client):
    X, y = _ill_conditioned(n=100, d=3)
    with pytest.raises(InvalidSettingError, match="needs mode='sync'"):
        fit((X, y), client=client, optimizer="newton", mode="async")
    with pytest.raises(InvalidSettingError, match="second derivative"):
        fit((X, y), client=client, optimizer="newton", loss="hinge")


def test_checkpoint_and_resume_of_a_newton_fit(client, tmp_path):
    X, y = _ill_conditioned(n=1500, d=8, seed=2)
    kw = {"loss": "log_loss", "alpha": 1e-4, "optimizer": "newton", "gtol": 1e-10, "tol": None}
    ref = fit((X, y), client=client, **kw)
    assert ref.converged_ and ref.n_iter_ > 4
    path = str(tmp_path / "ck.zarr")
    first = fit((X, y), client=client, **kw, max_epochs=3, checkpoint=path, checkpoint_every=1)
    assert first.n_iter_ == 3 and not first.converged_
    res = fit((X, y), client=client, **kw, checkpoint=path, checkpoint_every=1, resume=True)
    assert res.converged_ and res.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(
        [h["loss"] for h in res.history], [h["loss"] for h in ref.history], rtol=1e-12
    )
    np.testing.assert_allclose(res.coef_, ref.coef_, rtol=1e-10, atol=1e-12)
    assert load_checkpoint(path).config["optimizer"]["name"] == "newton"


def test_the_estimators_on_defaults_use_newton_for_small_d(client):
    X, y = _ill_conditioned(n=1500, d=6, seed=4)
    lin_y = X @ np.arange(1.0, 7.0) + 1.0
    lin = daskgd.LinearRegression(client=client, verbose=0).fit(X, lin_y)
    # one Newton step solves least squares, one pass (its tol is a gradient test, applied to
    # the exact quadratic model at the new point); L-BFGS needs more
    assert lin.converged_ and lin.n_iter_ == 1
    np.testing.assert_allclose(lin.coef_, np.arange(1.0, 7.0), rtol=1e-8)
    log = daskgd.LogisticRegression(client=client, verbose=0).fit(X, y)
    sk = LogisticRegression(solver="newton-cholesky", tol=1e-10).fit(X, y)
    assert log.converged_ and log.n_iter_ <= 15
    np.testing.assert_allclose(log.coef_, sk.coef_, rtol=1e-4, atol=1e-6)
    auto = fit((X, lin_y), client=client, optimizer="auto")
    assert auto.converged_ and auto.n_iter_ <= 2 and auto.learning_rate_ is None


def test_the_parameter_server_checks_and_sums_the_hessians():
    """A Newton job: pushes without a Hessian, or with a wrong one, are refused; a round
    sums the ranks' Hessians in rank order and steps to the numpy Newton point; an
    overflowing trial round is backed off from rather than failing the job."""
    from daskgd.parameter_server import Job, JobConfig
    from daskgd.parameter_server.checks import check_hess

    X, y = _ill_conditioned(n=200, d=3)
    fgh = _logistic(X, y)
    cfg = JobConfig(mode="sync", n_samples=200, max_epochs=50, tol=None, gtol=1e-12)
    job = Job("j", np.zeros(4), cfg, make_optimizer("newton", learning_rate=1.0), ["a", "b"], None)
    assert not job.inline  # a Hessian solve never runs on the scheduler's event loop
    assert "needs hess" in check_hess(job, None)
    assert "shape (4, 4)" in check_hess(job, np.zeros((3, 3)))
    assert "shape (4, 4)" in check_hess(job, np.zeros((4, 4), dtype=np.float32))
    assert check_hess(job, np.zeros((4, 4))) is None
    sgd = Job("k", np.zeros(4), cfg, make_optimizer("sgd", learning_rate=1.0), ["a"], None)
    assert "is for optimizer 'newton'" in check_hess(sgd, np.zeros((4, 4)))

    def push_halves(P, scale_loss=1.0):
        for rank, rows in enumerate((slice(0, 120), slice(120, 200))):
            f, g, H = _logistic(X[rows], y[rows])(P)
            n = rows.stop - rows.start
            job.arrive_sync(rank, job.version, g * n, n, float(n), f * n * scale_loss, None,
                            ["a", "b"], H * n)  # fmt: skip

    push_halves(job.params)
    expected = Newton().tell(np.zeros(4), *fgh(np.zeros(4)))
    np.testing.assert_allclose(job.params, expected, rtol=1e-12)
    assert job.version == 1 and not job.stopped
    trial = job.params
    push_halves(job.params, scale_loss=np.inf)  # the trial's loss overflowed
    assert not job.stopped and job.history[-1]["loss"] == np.inf
    np.testing.assert_allclose(job.params, 0.1 * trial)  # backed off along the same line


def test_poisson_with_large_counts_backs_off_from_an_overflow(client):
    """From zero, the first Newton step of a Poisson fit with counts near e^5 overflows the
    loss: the line search backs off from it (a history row with an infinite loss) instead
    of failing, and the fit reaches scikit-learn's optimum."""
    from sklearn.linear_model import PoissonRegressor

    rng = np.random.default_rng(8)
    X = rng.standard_normal((2000, 5))
    y = rng.poisson(np.exp(X @ (0.3 * rng.standard_normal(5)) + 5.0)).astype(float)
    res = fit((X, y), client=client, loss="poisson", optimizer="newton", alpha=1e-3,
              gtol=1e-10, tol=None, max_epochs=40)  # fmt: skip
    sk = PoissonRegressor(alpha=1e-3, solver="newton-cholesky", tol=1e-12, max_iter=1000)
    sk.fit(X, y)
    assert res.converged_ and any(not np.isfinite(h["loss"]) for h in res.history)
    np.testing.assert_allclose(res.coef_, sk.coef_, atol=1e-9)
    assert abs(res.intercept_ - sk.intercept_) < 1e-9


# -- the Hessian carried forward between fresh ones ------------------------------------------
def _lazy_run(opt, fgh, x, rounds=80, stop=1e-30):
    """Evaluate as the workers do: the Hessian only where the method asks for it."""
    asked = []
    for k in range(1, rounds + 1):
        f, g, H = fgh(x)
        asked.append(opt.want_hessian)
        x = opt.tell(x, f, g, H if opt.want_hessian else None)
        if opt.decrement is not None and opt.decrement <= stop:
            return x, k, asked
    return x, rounds, asked


@pytest.mark.parametrize("d", [6, 60, 200])
def test_carried_forward_hessians_reach_the_plain_newton_optimum(d):
    """With the Hessian asked for only when the last step shows it is needed, the method
    reaches the optimum plain Newton reaches (same gradients: the same fixed point), with
    fewer Hessians, on a badly scaled problem, for less work in the cost model that sets
    the rule."""
    from daskgd.objective.curvature import reuse_contraction

    X, y = _ill_conditioned(n=3000, d=d, seed=d)
    fgh = _logistic(X, y)
    x0 = np.zeros(d + 1)
    exact, k_exact = _run(Newton(l2=1e-3, reuse_hessian=False), fgh, x0, stop=1e-20)
    lazy = Newton(l2=1e-3)
    x, k, asked = _lazy_run(lazy, fgh, x0, stop=1e-20)
    np.testing.assert_allclose(x, exact, rtol=1e-9, atol=1e-9)
    assert asked[0] and lazy.hessians == sum(asked) < k
    cost = np.log(0.1) / np.log(reuse_contraction(d + 1))  # the model's Hessian pass
    if d >= 60:  # at d = 6 a Hessian pass costs about a gradient pass: a tie either way
        assert lazy.hessians * cost + (k - lazy.hessians) <= k_exact * cost


def test_reuse_contraction_follows_the_cost_of_a_hessian_pass():
    from daskgd.objective.curvature import reuse_contraction

    q = [reuse_contraction(n) for n in (2, 7, 101, 513, 10_000)]
    assert q == sorted(q) and 0 < q[0] < 0.2 and 0.6 < q[2] < 0.7 and q[-1] < 1
    # with few rows a worker the round trip dominates: the Hessian is nearly free
    assert reuse_contraction(101, 500) < 0.11 < reuse_contraction(101, 500_000) < q[2]


def test_a_missing_hessian_that_was_asked_for_is_refused():
    X, y = _ill_conditioned(n=300, d=4)
    fgh = _logistic(X, y)
    opt = Newton()
    f, g, _ = fgh(np.zeros(5))
    with pytest.raises(ValueError, match="asked for and not given"):
        opt.tell(np.zeros(5), f, g, None)


def test_the_carried_forward_matrix_survives_a_checkpoint():
    """state()/load_state() keep the BFGS-updated matrix and whether the next point needs
    a fresh Hessian: a restored method proposes exactly the same points."""
    X, y = _ill_conditioned(n=2000, d=8, seed=5)
    fgh = _logistic(X, y)
    a = Newton(l2=1e-3)
    x = np.zeros(9)
    for _ in range(3):
        f, g, H = fgh(x)
        x = a.tell(x, f, g, H if a.want_hessian else None)
    while a.want_hessian:  # on to a point where a matrix is carried forward
        f, g, H = fgh(x)
        x = a.tell(x, f, g, H)
    assert a.hessians < a.iterations + 1
    b = Newton(l2=1e-3)
    b.load_state(a.state(), 9)
    for _ in range(3):
        f, g, H = fgh(x)
        Ha = H if a.want_hessian else None
        assert a.want_hessian == b.want_hessian
        x, xb = a.tell(x, f, g, Ha), b.tell(x, f, g, Ha)
        np.testing.assert_array_equal(x, xb)
    with pytest.raises(ValueError, match="'B' has shape"):
        Newton().load_state({**a.state(), "B": np.eye(3)}, 9)


def test_a_newton_fit_asks_the_workers_for_few_hessians_and_stops_at_the_resolution(client):
    from daskgd.objective.curvature import reuse_contraction

    """Through the workers: the history says which passes carried a Hessian (the first,
    and few others); with a loss tolerance (the estimators pass tol=0) the fit stops once
    the model predicts less than the loss's resolution, at scikit-learn's optimum; with
    tol=None only the gradient tolerance stops it."""
    from sklearn.linear_model import LogisticRegression

    # 20,000 rows x 150 a worker: a Hessian pass costs enough more than a gradient pass for
    # the rule to carry it forward (on small data the round trip dominates: plain Newton)
    X, y = _ill_conditioned(n=40_000, d=150, seed=11)
    kw = {"loss": "log_loss", "alpha": 1e-3, "optimizer": "newton"}
    res = fit((X, y), client=client, tol=0.0, gtol=1e-14, max_epochs=60, **kw)
    marks = [h["hessian"] for h in res.history]
    assert reuse_contraction(151, 20_000) > 0.2  # not plain Newton at this size
    assert marks[0] and sum(marks) < len(marks)
    assert res.converged_ and "resolution" in res.reason
    sk = LogisticRegression(C=1.0 / (1e-3 * len(y)), tol=1e-12, max_iter=1000,
                            solver="newton-cholesky").fit(X, y)  # fmt: skip

    def objective(w, b):
        return np.logaddexp(0, -y * (X @ w + b)).mean() + 0.5e-3 * float(w @ w)

    ours, theirs = objective(res.coef_, res.intercept_), objective(sk.coef_.ravel(), sk.intercept_)
    assert ours <= theirs * (1 + 1e-12)  # at the optimum to the loss's resolution
    strict = fit((X, y), client=client, tol=None, gtol=1e-11, max_epochs=60, **kw)
    assert strict.converged_ and "gtol" in strict.reason
