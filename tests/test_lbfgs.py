"""L-BFGS state machine against scipy's optimum on smooth convex problems."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from daskgd.objective.lbfgs import LBFGS


def _least_squares(seed=0, n=500, d=20, cond=100.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.logspace(0, np.log10(cond), d) ** 0.5
    y = X @ rng.normal(size=d) + rng.normal(size=n)

    def fg(w):
        r = X @ w - y
        return 0.5 * float(r @ r) / n, X.T @ r / n

    return fg, np.linalg.lstsq(X, y, rcond=None)[0], d


def _logistic(seed=1, n=800, d=15, alpha=1e-3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.where(X @ rng.normal(size=d) + rng.normal(size=n) > 0, 1.0, -1.0)

    def fg(w):
        z = y * (X @ w)
        f = float(np.mean(np.logaddexp(0.0, -z))) + 0.5 * alpha * float(w @ w)
        return f, X.T @ (-y * np.exp(-np.logaddexp(0.0, z))) / n + alpha * w

    w_star = minimize(
        fg,
        np.zeros(d),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 10_000},
    ).x
    return fg, w_star, d


@pytest.mark.parametrize("problem", [_least_squares, _logistic])
def test_reaches_the_optimum(problem):
    fg, w_star, d = problem()
    f_star = fg(w_star)[0]
    opt = LBFGS()
    x = np.zeros(d)
    for evaluations in range(1, 300):  # noqa: B007 - counted for the assertion
        f, g = fg(x)
        if (f - f_star) / abs(f_star) < 1e-12:
            break
        x = opt.tell(x, f, g)
    assert (fg(x)[0] - f_star) / abs(f_star) < 1e-12
    assert evaluations < 200  # far fewer than gradient descent's thousands


def test_backtracks_on_non_finite_loss():
    fg, _, d = _least_squares()
    opt = LBFGS()
    x = opt.tell(np.zeros(d), *fg(np.zeros(d)))
    x_bad = opt.tell(x, float("inf"), np.full(d, np.nan))  # as after an overflow
    assert np.all(np.isfinite(x_bad))
    assert np.linalg.norm(x_bad) < np.linalg.norm(x)  # a shorter step along the same line


def test_state_is_plain_data():
    opt = LBFGS(memory=3)
    fg, _, d = _least_squares(d=5)
    x = np.zeros(d)
    for _ in range(8):
        x = opt.tell(x, *fg(x))
    st = opt.state()
    assert st["s"].shape[0] <= 3 and st["iterations"] > 0


def test_gradient_decides_where_the_loss_is_at_its_rounding_level():
    # A large constant puts the last digits of the loss below its rounding error: the
    # Armijo test alone stalls with a gradient far above 1e-10; the gradient test goes on.
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((8, 8))
    A = Q @ np.diag(np.logspace(0, 3, 8)) @ Q.T
    b = rng.standard_normal(8)
    opt = LBFGS()
    x = np.zeros(8)
    for _ in range(300):
        g = A @ x - b
        if np.linalg.norm(g) < 1e-10:
            break
        x = opt.tell(x, 1e6 + 0.5 * x @ A @ x - b @ x, g)
    assert np.linalg.norm(A @ x - b) < 1e-10


def _scaled_logistic(seed=2, n=600, d=12, alpha=1e-4):
    """A logistic problem whose columns range over four orders of magnitude."""
    rng = np.random.default_rng(seed)
    scale = np.logspace(-2, 2, d)
    X = rng.normal(size=(n, d)) * scale
    y = np.where(X @ (rng.normal(size=d) / scale) + rng.normal(size=n) > 0, 1.0, -1.0)

    def fg(w):
        z = y * (X @ w)
        f = float(np.mean(np.logaddexp(0.0, -z))) + 0.5 * alpha * float(w @ w)
        return f, X.T @ (-y * np.exp(-np.logaddexp(0.0, z))) / n + alpha * w

    return fg, 0.25 * np.mean(X * X, axis=0) + alpha, d


def test_h0_gives_the_iterates_of_lbfgs_on_the_scaled_variables():
    fg, h, d = _scaled_logistic()
    D = np.sqrt(h)
    # on the scaled variables the preconditioner is the identity; given, so that the first
    # step is tried at length 1 there too (without one it is min(1, 1 / |g|_1))
    pre, plain = LBFGS(h0=h), LBFGS(h0=np.ones(d))
    x, v = np.zeros(d), np.zeros(d)
    for _ in range(15):  # to a gradient of 1e-12 (past it, rounding decides)
        f, g = fg(x)
        fv, gv = fg(v / D)  # f(v / D): its gradient in v is g / D
        x = pre.tell(x, f, g)
        v = plain.tell(v, fv, gv / D)
        np.testing.assert_allclose(x, v / D, rtol=1e-8, atol=1e-12)


def test_h0_needs_far_fewer_evaluations_on_badly_scaled_columns():
    fg, h, d = _scaled_logistic()
    w_star = minimize(fg, np.zeros(d), jac=True, method="L-BFGS-B",
                      options={"gtol": 1e-13, "ftol": 0.0, "maxiter": 100_000}).x  # fmt: skip
    f_star = fg(w_star)[0]

    def evaluations(opt: LBFGS) -> int:
        x = np.zeros(d)
        for k in range(1, 3000):
            f, g = fg(x)
            if (f - f_star) / f_star < 1e-8:
                return k
            x = opt.tell(x, f, g)
        return 3000

    pre, plain = evaluations(LBFGS(h0=h)), evaluations(LBFGS())
    assert pre < 60 and 3 * pre < plain, (pre, plain)


def test_the_pairs_reuse_the_arrays_the_memory_dropped():
    """Past ``memory`` pairs, a new pair is computed into the arrays of the one it drops
    (and gradients into those of the ones done with): at millions of parameters a new array
    costs its page faults every iteration. The arrays that ever held a pair are a fixed
    set: the pairs', the kept gradient's and the three spares'."""
    fg, w_star, d = _least_squares(cond=1e3)
    opt, w = LBFGS(memory=3), np.zeros(d)
    seen: dict[int, np.ndarray] = {}  # held, so that no id is reused
    for _ in range(300):
        f, g = fg(w)
        w = opt.tell(w, f, g)
        seen.update({id(a): a for a in (*opt._s, *opt._y)})
    assert opt.iterations > 10
    assert len(seen) <= 2 * opt.memory + 4
    np.testing.assert_allclose(w, w_star, rtol=1e-6)


def test_float32_pairs_reach_the_same_optimum(monkeypatch):
    """From FLOAT32_PAIRS parameters on the pairs are kept in float32 (lowered here to
    this problem's size): the same optimum to the same tolerance, in about as many
    evaluations, with the preconditioner too."""
    import daskgd.objective.lbfgs as lbfgs

    fg, h, d = _scaled_logistic()
    w_star = minimize(fg, np.zeros(d), jac=True, method="L-BFGS-B",
                      options={"gtol": 1e-13, "ftol": 0.0, "maxiter": 100_000}).x  # fmt: skip
    f_star = fg(w_star)[0]

    def evaluations(opt: LBFGS) -> tuple[int, np.ndarray]:
        x = np.zeros(d)
        for k in range(1, 3000):
            f, g = fg(x)
            if (f - f_star) / f_star < 1e-10:
                return k, x
            x = opt.tell(x, f, g)
        return 3000, x

    wide, _ = evaluations(LBFGS(h0=h))
    monkeypatch.setattr(lbfgs, "FLOAT32_PAIRS", d)
    opt = LBFGS(h0=h)
    narrow, x32 = evaluations(opt)
    assert opt._s and opt._s[0].dtype == np.float32
    assert narrow <= wide + 5, (narrow, wide)
    np.testing.assert_allclose(x32, w_star, rtol=1e-4, atol=1e-6)
    state = opt.state()  # exported in float64, restored in float32
    again = LBFGS(h0=h)
    again.load_state(state, d)
    assert again._s[0].dtype == np.float32 and len(again._s) == len(opt._s)


def test_float32_pairs_recursion_is_the_float64_one_on_the_same_pairs(monkeypatch):
    """The recursion's products of float32 pairs are summed in float64: its direction
    is the float64 recursion's on the pairs converted to float64, to rounding."""
    import daskgd.objective.lbfgs as lbfgs

    monkeypatch.setattr(lbfgs, "FLOAT32_PAIRS", 10)
    fg, h, d = _scaled_logistic()
    opt, x = LBFGS(h0=h), np.zeros(d)
    for _ in range(6):
        x = opt.tell(x, *fg(x))
    assert opt._s[0].dtype == np.float32 and len(opt._s) >= 3
    g = fg(x)[1]
    wide = LBFGS(h0=h)
    wide._s = type(opt._s)(s.astype(np.float64) for s in opt._s)
    wide._y = type(opt._y)(y.astype(np.float64) for y in opt._y)
    np.testing.assert_allclose(opt._two_loop(g), wide._two_loop(g), rtol=1e-12, atol=1e-15)
