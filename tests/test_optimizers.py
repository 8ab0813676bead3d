"""Update rules, schedules and the elastic-net proximal step, against closed forms."""

import numpy as np
import pytest

from daskgd.objective.optimizers import (
    OPTIMIZERS,
    Regularizer,
    Schedule,
    make_optimizer,
    soft_threshold,
)


def _quadratic_min(name, **options):
    # minimise 0.5 * ||P - c||^2 (intercept row included): gradient P - c
    c = np.array([1.0, -2.0, 3.0, 0.5])
    lr = {"adagrad": 1.0, "adam": 0.05}.get(name, 0.1)
    opt = make_optimizer(name, learning_rate=lr, options=options)
    P = np.zeros(4)
    state = opt.init_state(P)
    # the Hessian of the quadratic, for the rules that take one (newton)
    extra = {"hess": np.eye(4)} if opt.needs_hessian else {}
    for t in range(3000):
        # the loss is what a full-batch sync round reports (the line search of lbfgs uses it)
        P = opt.step(P, P - c, state, t, 0, loss=0.5 * float((P - c) @ (P - c)), **extra)
    return P, c


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_minimises_a_quadratic(name):
    P, c = _quadratic_min(name)
    np.testing.assert_allclose(P, c, atol=1e-6)


def test_step_does_not_mutate_its_inputs():
    opt = make_optimizer("adam", learning_rate=0.1, alpha=0.1, l1_ratio=0.5)
    P, g = np.ones(3), np.full(3, 0.5)
    P0, g0 = P.copy(), g.copy()
    new = opt.step(P, g, opt.init_state(P), 0, 0)
    assert new is not P
    np.testing.assert_array_equal(P, P0)
    np.testing.assert_array_equal(g, g0)


def test_l1_prox_gives_lasso_solution_and_spares_intercept():
    # min 0.5||w - c||^2 + l1 ||w||_1 has the closed form soft_threshold(c, l1)
    c = np.array([2.0, 0.3, -0.1, -1.5, 0.05])
    opt = make_optimizer("sgd", learning_rate=0.5, alpha=0.5, l1_ratio=1.0)
    P = np.zeros(5)
    for t in range(200):
        P = opt.step(P, P - c, {}, t, 0)
    np.testing.assert_allclose(P[:-1], soft_threshold(c[:-1], 0.5), atol=1e-12)
    assert P[1] == 0.0 and P[2] == 0.0  # exact zeros
    assert P[-1] == pytest.approx(0.05)  # intercept unpenalised


def test_l2_matches_ridge_closed_form():
    c = np.array([2.0, -1.0, 4.0])
    opt = make_optimizer("sgd", learning_rate=0.5, alpha=1.0)
    P = np.zeros(3)
    for t in range(200):
        P = opt.step(P, P - c, {}, t, 0)
    np.testing.assert_allclose(P, [1.0, -0.5, 4.0], atol=1e-12)


def test_fit_intercept_false_keeps_intercept():
    opt = make_optimizer("momentum", learning_rate=0.1, fit_intercept=False)
    P = np.array([0.0, 0.0, 7.0])
    new = opt.step(P, np.ones(3), opt.init_state(P), 0, 0)
    assert new[-1] == 7.0 and new[0] != 0.0


def test_two_dimensional_parameters():
    opt = make_optimizer("adagrad", learning_rate=0.5, alpha=0.1, l1_ratio=0.5)
    P = np.zeros((4, 3))
    new = opt.step(P, np.ones((4, 3)), opt.init_state(P), 0, 0)
    assert new.shape == (4, 3)


def test_schedules():
    assert Schedule("constant", 0.3)(100, 7) == 0.3
    assert Schedule("invscaling", 1.0, power_t=0.5)(3, 0) == pytest.approx(0.5)
    assert Schedule("step", 1.0, step_size=3, gamma=0.1)(0, 7) == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "bfgs"}, "unknown optimizer"),  # ("newton" is one now)
        ({"name": "sgd", "lr_schedule": "cosine"}, "unknown lr_schedule"),
        ({"name": "sgd", "learning_rate": -1.0}, "learning_rate"),
        ({"name": "sgd", "alpha": -1.0}, "alpha"),
        ({"name": "sgd", "l1_ratio": 2.0}, "l1_ratio"),
        ({"name": "sgd", "options": {"momentum": 0.9}}, "takes no option"),
        ({"name": "momentum", "options": {"momentum": 1.0}}, "momentum"),
        ({"name": "adam", "options": {"beta2": 1.0}}, "beta2"),
    ],
)
def test_bad_settings_are_rejected(kwargs, match):
    kwargs = {"learning_rate": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_optimizer(**kwargs)


def test_penalty_value():
    reg = Regularizer(alpha=2.0, l1_ratio=0.25)
    P = np.array([1.0, -2.0, 100.0])
    assert reg.penalty(P) == pytest.approx(0.5 * 1.5 * 5 + 0.5 * 3)


def test_newton_solves_the_lasso_quadratic_in_one_step_and_keeps_its_state():
    # min 0.5||P - c||^2 + l1 ||w||_1: one Newton step (coordinate descent on the exact
    # model) lands on soft_threshold(c, l1), the intercept unpenalised
    c = np.array([2.0, 0.3, -0.1, -1.5, 0.05])
    opt = make_optimizer("newton", learning_rate=1.0, alpha=0.5, l1_ratio=1.0)
    P = np.zeros(5)
    state = opt.init_state(P)
    P1 = opt.step(P, P - c, state, 0, 0, loss=0.5 * float(c @ c), hess=np.eye(5))
    np.testing.assert_allclose(P1[:-1], soft_threshold(c[:-1], 0.5), atol=1e-14)
    assert P1[-1] == c[-1] and np.sum(P1[:-1] == 0) == 2
    arrays = opt.export_state(state)
    assert all(k.startswith("newton_") for k in arrays)
    again = opt.import_state(P1, arrays)
    np.testing.assert_array_equal(again["newton"].pending(), P1)
    with pytest.raises(ValueError, match="keeps no state"):
        opt.import_state(P1, {"lbfgs_x": np.zeros(5)})
    with pytest.raises(ValueError, match="use optimizer='lbfgs'"):
        opt.init_state(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="Hessian at this point was asked for"):
        opt.step(P, P - c, opt.init_state(P), 0, 0, loss=1.0)
    with pytest.raises(ValueError, match="needs the round's loss"):
        opt.step(P, P - c, opt.init_state(P), 0, 0, hess=np.eye(P.size))


def test_model_sized_dot_products_match_numpy():
    # the servers' dot products and norms (daskgd.objective.finite) avoid BLAS's threads,
    # whose helpers spin after each call; the values are numpy's, to rounding
    from daskgd.objective.finite import dot, norm

    rng = np.random.default_rng(5)
    for n in (0, 1, 3, 17, 100_003):
        a, b = rng.normal(size=n), rng.normal(size=n)
        assert dot(a, b) == pytest.approx(float(np.dot(a, b)), rel=1e-12, abs=1e-12 * n)
        assert norm(a) == pytest.approx(float(np.linalg.norm(a)), rel=1e-12)
    M = rng.normal(size=(40, 3))  # any shape (flattened); a strided view; float32 widened
    assert dot(M, M) == pytest.approx(float(np.sum(M * M)), rel=1e-12)
    assert dot(M[:, 1], M[:, 2]) == pytest.approx(float(M[:, 1] @ M[:, 2]), rel=1e-12)
    f = M.astype(np.float32)
    assert dot(f, f) == pytest.approx(float(np.sum(f.astype(np.float64) ** 2)), rel=1e-12)
    with pytest.raises(ValueError, match="3 and 4"):
        dot(np.ones(3), np.ones(4))
