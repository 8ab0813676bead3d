"""Keyed (per-coordinate) update rules for sparse gradients, each against an exact oracle:
daskgd's dense rules, per-coordinate transcriptions of the published algorithms, and
scikit-learn's optimum on a small sparse logistic regression."""

import math
import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from daskgd.objective import (
    KEYED_OPTIMIZERS,
    FTRLProximal,
    KeyedSGD,
    Regularizer,
    make_keyed_optimizer,
    make_optimizer,
)
from daskgd.objective.keyed import RESCALE_BELOW


def _steps(seed, d, n_steps, k=None):
    """A random sequence of sparse gradients ``(keys, grad at keys, grad of intercept)``;
    some steps touch no key at all."""
    rng = np.random.default_rng(seed)
    tail = () if k is None else (k,)
    out = []
    for _ in range(n_steps):
        m = int(rng.integers(0, d // 3 + 1))
        keys = np.sort(rng.choice(d, size=m, replace=False)).astype(np.int64)
        out.append((keys, rng.standard_normal((m, *tail)), rng.standard_normal(tail)))
    return out


def _full(d, keys, g, gb):
    """The dense gradient ``(d + 1, ...)`` of a sparse one: zero off the keys."""
    out = np.zeros((d + 1, *g.shape[1:]))
    out[keys] = g
    out[d] = gb
    return out


def _close(actual, desired, rtol=1e-12, scale=0.0):
    """Equal to ``rtol``, relative to each entry and to the largest entry or ``scale``, the
    size of the numbers an entry is a small difference of, whichever is larger."""
    atol = rtol * max(np.abs(desired).max(initial=0.0), scale)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol)


def _st(x, threshold):
    """Soft-threshold of one number."""
    return math.copysign(max(abs(x) - threshold, 0.0), x)


# -- sgd: lazy elastic net, exactly the dense rule ---------------------------------------


@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize(
    ("schedule", "eta0", "alpha", "l1_ratio"),
    [
        ("invscaling", 0.6, 1.0, 0.0),  # strong L2: the scale is folded in many times
        ("invscaling", 0.6, 1.0, 0.3),  # elastic net, folded in too
        ("step", 0.3, 0.4, 1.0),  # lasso under a step schedule (no scale)
        ("constant", 1.0, 1.0, 0.0),  # lr * l2 = 1: the shrink zeroes every coefficient
        ("constant", 1.5, 1.0, 0.2),  # lr * l2 > 1: the shrink flips signs
        ("constant", 0.05, 0.0, 0.0),  # no penalty
    ],
)
def test_lazy_sgd_equals_dense_sgd_step_by_step(k, schedule, eta0, alpha, l1_ratio):
    d, n_steps = 40, 400
    kwargs = dict(learning_rate=eta0, lr_schedule=schedule, step_size=2)
    kwargs.update(alpha=alpha, l1_ratio=l1_ratio)
    rule = make_keyed_optimizer("sgd", **kwargs)
    dense = make_optimizer("sgd", **kwargs)
    tail = () if k is None else (k,)
    # a warm start: the penalty then acts on coefficients no step touches
    P = np.random.default_rng(1).standard_normal((d + 1, *tail))
    state = rule.init_state(d, k, params=P)
    rescales = 0
    for t, (keys, g, gb) in enumerate(_steps(2, d, n_steps, k)):
        epoch = t // 50
        # what a worker pulls before its step is the dense rule's parameters there
        # (relative to 1, the size of the start and of the gradients: an L1 catch-up is a
        # difference of sums of thresholds of that size)
        _close(rule.weights(state, keys), P[keys], scale=1.0)
        before = float(state["scale"])
        rule.apply(state, keys, g, gb, t, epoch)
        rescales += abs(float(state["scale"])) > abs(before)
        assert abs(float(state["scale"])) >= RESCALE_BELOW
        P = dense.step(P, _full(d, keys, g, gb), {}, t, epoch)
        _close(rule.dense(state), P, scale=1.0)
    out = rule.dense(state)
    if l1_ratio:
        # exact zeros, at the same coefficients as the dense proximal step's
        np.testing.assert_array_equal(out[:d] == 0, P[:d] == 0)
        assert 0 < np.sum(out[:d] == 0) < out[:d].size
    if schedule == "invscaling":
        assert rescales >= 2


# -- adagrad and adam: lazy, against per-coordinate references and the dense rules -------


def _ref_adagrad(P, G, keys, g, gb, lr, reg, eps):
    """Lazy AdaGrad coordinate by coordinate: the touched rows and the intercept only."""
    d = P.shape[0] - 1
    P2, G2 = P.reshape(d + 1, -1), G.reshape(d + 1, -1)
    g2, gb2 = g.reshape(len(keys), P2.shape[1]), np.reshape(gb, -1)
    # (row, its gradient, 1 where penalised: all but the intercept)
    for j, gr, pen in [(j, g2[i], 1.0) for i, j in enumerate(keys)] + [(d, gb2, 0.0)]:
        for c in range(P2.shape[1]):
            gj = gr[c] + pen * reg.l2 * P2[j, c]
            G2[j, c] += gj * gj
            step = lr / (math.sqrt(G2[j, c]) + eps)
            P2[j, c] = _st(P2[j, c] - step * gj, pen * step * reg.l1)


def _ref_adam(P, M, V, keys, g, gb, lr, reg, t, b1, b2, eps):
    """Lazy Adam coordinate by coordinate, bias-corrected by the global step count."""
    d = P.shape[0] - 1
    P2, M2, V2 = P.reshape(d + 1, -1), M.reshape(d + 1, -1), V.reshape(d + 1, -1)
    g2, gb2 = g.reshape(len(keys), P2.shape[1]), np.reshape(gb, -1)
    for j, gr, pen in [(j, g2[i], 1.0) for i, j in enumerate(keys)] + [(d, gb2, 0.0)]:
        for c in range(P2.shape[1]):
            gj = gr[c] + pen * reg.l2 * P2[j, c]
            M2[j, c] = b1 * M2[j, c] + (1 - b1) * gj
            V2[j, c] = b2 * V2[j, c] + (1 - b2) * gj * gj
            mhat = M2[j, c] / (1 - b1 ** (t + 1))
            step = lr / (math.sqrt(V2[j, c] / (1 - b2 ** (t + 1))) + eps)
            P2[j, c] = _st(P2[j, c] - step * mhat, pen * step * reg.l1)


@pytest.mark.parametrize("k", [None, 2])
@pytest.mark.parametrize("name", ["adagrad", "adam"])
def test_lazy_adagrad_and_adam_equal_a_reference_that_updates_the_touched_rows(name, k):
    d, n_steps, lr = 30, 200, 0.05
    reg = Regularizer(alpha=0.3, l1_ratio=0.4)
    rule = make_keyed_optimizer(
        name, learning_rate=lr, alpha=reg.alpha, l1_ratio=reg.l1_ratio, options={"eps": 1e-3}
    )
    tail = () if k is None else (k,)
    P = np.random.default_rng(3).standard_normal((d + 1, *tail))
    state = rule.init_state(d, k, params=P)
    acc = [np.zeros_like(P), np.zeros_like(P)]
    zeros = 0
    for t, (keys, g, gb) in enumerate(_steps(4, d, n_steps, k)):
        untouched = np.setdiff1d(np.arange(d), keys)
        before = rule.dense(state)
        rule.apply(state, keys, g, gb, t)
        if name == "adagrad":
            _ref_adagrad(P, acc[0], keys, g, gb, lr, reg, 1e-3)
        else:
            _ref_adam(P, *acc, keys, g, gb, lr, reg, t, 0.9, 0.999, 1e-3)
        after = rule.dense(state)
        _close(after, P)
        # lazy: neither the gradient nor the penalty moves an untouched coefficient
        np.testing.assert_array_equal(after[untouched], before[untouched])
        zeros += int(np.sum(after[:d] == 0))
    assert zeros > 0  # the L1 step gives exact zeros


@pytest.mark.parametrize("k", [None, 2])
@pytest.mark.parametrize("name", ["adagrad", "adam"])
def test_with_every_key_touched_the_lazy_rule_is_the_dense_one(name, k):
    d, n_steps = 25, 150
    kwargs = dict(learning_rate=0.2, lr_schedule="invscaling", alpha=0.2, l1_ratio=0.5)
    rule = make_keyed_optimizer(name, **kwargs)
    dense = make_optimizer(name, **kwargs)
    tail = () if k is None else (k,)
    P = np.random.default_rng(5).standard_normal((d + 1, *tail))
    state = rule.init_state(d, k, params=P)
    dense_state = dense.init_state(P)
    rng = np.random.default_rng(6)
    keys = np.arange(d)
    for t in range(n_steps):
        g, gb = rng.standard_normal((d, *tail)), rng.standard_normal(tail)
        rule.apply(state, keys, g, gb, t, 0)
        P = dense.step(P, _full(d, keys, g, gb), dense_state, t, 0)
        _close(rule.dense(state), P)


# -- ftrl: McMahan et al.'s Algorithm 1 --------------------------------------------------


def _ref_ftrl_weight(z, n, alpha, beta, l1, l2):
    if abs(z) <= l1:
        return 0.0
    return -(z - math.copysign(l1, z)) / ((beta + math.sqrt(n)) / alpha + l2)


def _ref_ftrl(Z, N, keys, g, gb, t, alpha, beta, l1, l2, reg):
    """Algorithm 1 coordinate by coordinate; the penalty of ``t`` steps of ``reg`` added to
    the fixed one; the intercept unpenalised."""
    d = Z.shape[0] - 1
    Z2, N2 = Z.reshape(d + 1, -1), N.reshape(d + 1, -1)
    g2, gb2 = g.reshape(len(keys), Z2.shape[1]), np.reshape(gb, -1)
    lam1, lam2 = l1 + t * reg.l1, l2 + t * reg.l2
    rows = [(j, g2[i], lam1, lam2) for i, j in enumerate(keys)] + [(d, gb2, 0.0, 0.0)]
    for j, gr, a1, a2 in rows:
        for c in range(Z2.shape[1]):
            w = _ref_ftrl_weight(Z2[j, c], N2[j, c], alpha, beta, a1, a2)
            sigma = (math.sqrt(N2[j, c] + gr[c] ** 2) - math.sqrt(N2[j, c])) / alpha
            Z2[j, c] += gr[c] - sigma * w
            N2[j, c] += gr[c] ** 2


def _ref_ftrl_params(Z, N, alpha, beta, l1, l2):
    """The weights of every coordinate (the intercept's row unpenalised)."""
    out = np.vectorize(_ref_ftrl_weight)(Z, N, alpha, beta, l1, l2)
    out[-1] = np.vectorize(_ref_ftrl_weight)(Z[-1], N[-1], alpha, beta, 0.0, 0.0)
    return out


@pytest.mark.parametrize("k", [None, 2])
@pytest.mark.parametrize(
    ("l1", "l2", "alpha", "l1_ratio"),
    [(0.4, 0.2, 0.0, 0.0), (0.0, 0.0, 0.01, 0.5), (0.1, 0.0, 0.005, 1.0)],
)
def test_ftrl_equals_algorithm_1_coordinate_by_coordinate(k, l1, l2, alpha, l1_ratio):
    d, n_steps, a, beta = 30, 200, 0.3, 1.0
    options = {"beta": beta, "l1": l1, "l2": l2}
    rule = make_keyed_optimizer(
        "ftrl", learning_rate=a, alpha=alpha, l1_ratio=l1_ratio, options=options
    )
    reg = Regularizer(alpha, l1_ratio)
    tail = () if k is None else (k,)
    state = rule.init_state(d, k)
    Z, N = np.zeros((d + 1, *tail)), np.zeros((d + 1, *tail))
    for t, (keys, g, gb) in enumerate(_steps(7, d, n_steps, k)):
        rule.apply(state, keys, g, gb, t)
        _ref_ftrl(Z, N, keys, g, gb, t, a, beta, l1, l2, reg)
        lam1, lam2 = l1 + (t + 1) * reg.l1, l2 + (t + 1) * reg.l2
        _close(rule.dense(state), _ref_ftrl_params(Z, N, a, beta, lam1, lam2))
    out = rule.dense(state)
    assert 0 < np.sum(out[:d] == 0) < out[:d].size  # exact zeros where |z| <= l1


def test_ftrl_with_a_large_l1_keeps_every_coefficient_exactly_zero():
    d = 50
    rule = FTRLProximal(alpha=0.5, l1=1e3)
    state = rule.init_state(d)
    for t, (keys, g, gb) in enumerate(_steps(8, d, 300)):
        rule.apply(state, keys, g, gb + 1.0, t)
    out = rule.dense(state)
    assert np.all(out[:d] == 0.0) and not np.signbit(out[:d]).any()
    assert out[d] != 0.0  # the intercept is not penalised


# -- convergence on a sparse logistic regression -----------------------------------------


def _objective(X, y, P, reg):
    m = X @ P[:-1] + P[-1]
    return float(np.mean(np.logaddexp(0.0, m) - y * m)) + reg.penalty(P)


@pytest.mark.parametrize(
    ("name", "lr", "alpha", "l1_ratio", "tol"),
    [
        ("adagrad", 0.5, 0.01, 0.0, 2e-2),
        ("ftrl", 0.5, 0.01, 0.0, 1e-3),
        ("ftrl", 0.5, 0.02, 1.0, 1e-3),
    ],
)
def test_sparse_logistic_regression_reaches_the_optimum(name, lr, alpha, l1_ratio, tol):
    rng = np.random.default_rng(0)
    n, d = 300, 40
    X = sp.random(n, d, density=0.15, format="csr", random_state=1, data_rvs=rng.standard_normal)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(X @ rng.standard_normal(d) + 0.3)))) * 1.0
    reg = Regularizer(alpha, l1_ratio)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        solver = "lbfgs" if l1_ratio == 0 else "saga"
        # C sum(loss) + penalty is n C times the mean-loss objective: alpha = 1 / (n C)
        sk = LogisticRegression(
            C=1.0 / (alpha * n), l1_ratio=l1_ratio, solver=solver, tol=1e-12, max_iter=100_000
        ).fit(X, y)
    best = np.append(sk.coef_.ravel(), sk.intercept_)
    rule = make_keyed_optimizer(name, learning_rate=lr, alpha=alpha, l1_ratio=l1_ratio)
    state = rule.init_state(d)
    t, batch = 0, 10
    for epoch in range(50):
        order = rng.permutation(n)
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            Xb = X[rows]
            keys = np.unique(Xb.indices).astype(np.int64)
            Xk = Xb[:, keys]
            # pull the batch's keys, push the mean gradient at them
            r = 1.0 / (1.0 + np.exp(-(Xk @ rule.weights(state, keys) + rule.intercept(state))))
            r -= y[rows]
            rule.apply(state, keys, Xk.T @ r / rows.size, r.mean(), t, epoch)
            t += 1
    P = rule.dense(state)
    f, f_best = _objective(X, y, P, reg), _objective(X, y, best, reg)
    assert f_best * (1 - 1e-9) <= f <= f_best * (1 + tol)
    if name == "ftrl" and l1_ratio:
        np.testing.assert_array_equal(P[:d] == 0, best[:d] == 0)


# -- cost, checkpoints, shapes, settings -------------------------------------------------


class _NoPass(np.ndarray):
    """An array that refuses arithmetic over more than 1,000 of its elements: an O(d) pass
    over a state array, even in place (which allocates nothing), fails."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out", ())
        size = max(a.size for a in (*inputs, *out) if isinstance(a, _NoPass))
        if size > 1000:
            raise AssertionError(f"np.{ufunc.__name__} over {size} elements of the state")
        kwargs["out"] = tuple(a.view(np.ndarray) for a in out) or None
        inputs = tuple(a.view(np.ndarray) if isinstance(a, _NoPass) else a for a in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)


@pytest.mark.parametrize("name", sorted(KEYED_OPTIMIZERS))
def test_apply_and_pull_use_memory_in_the_keys_not_in_d(name):
    d, n_keys = 2**24, 10
    rule = make_keyed_optimizer(name, learning_rate=0.01, alpha=1e-4, l1_ratio=0.5)
    state = rule.init_state(d)
    rng = np.random.default_rng(9)
    pushes = [
        (np.sort(rng.choice(d, n_keys, replace=False)), rng.standard_normal(n_keys), 0.1)
        for _ in range(1000)
    ]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for t, (keys, g, gb) in enumerate(pushes):
            rule.apply(state, keys, g, gb, t)
            rule.weights(state, keys)
            rule.intercept(state)
        peak = tracemalloc.get_traced_memory()[1] - base
        # the probe: one O(d) temporary of numpy is seen
        tracemalloc.reset_peak()
        probe = np.abs(next(iter(state.values())))
        probe_peak = tracemalloc.get_traced_memory()[1] - base
        del probe
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{name}: apply/weights allocated {peak} bytes at their peak"
    assert probe_peak > 4 * d
    keys = pushes[-1][0]
    assert np.any(rule.weights(state, keys) != 0)
    # nor any O(d) pass in place
    guarded = {key: a.view(_NoPass) for key, a in state.items()}
    for t, (keys, g, gb) in enumerate(pushes[:100], start=1000):
        rule.apply(guarded, keys, g, gb, t)
        rule.weights(guarded, keys)
    with pytest.raises(AssertionError, match="elements of the state"):
        np.abs(next(iter(guarded.values())))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("name", sorted(KEYED_OPTIMIZERS))
def test_export_import_mid_run_continues_identically(name, k, dtype):
    d = 20
    kwargs = dict(learning_rate=0.3, alpha=0.5, l1_ratio=0.5)
    if name != "ftrl":
        kwargs["lr_schedule"] = "invscaling"
    rule = make_keyed_optimizer(name, **kwargs)
    state = rule.init_state(d, k, dtype=dtype)
    steps = _steps(10, d, 120, k)
    for t, (keys, g, gb) in enumerate(steps[:60]):
        rule.apply(state, keys, g, gb, t)
    arrays = rule.export_state(state)
    saved = {key: a.copy() for key, a in arrays.items()}
    again = make_keyed_optimizer(name, **kwargs).import_state(arrays)
    for t, (keys, g, gb) in enumerate(steps[60:], start=60):
        rule.apply(state, keys, g, gb, t)
        make_keyed_optimizer(name, **kwargs).apply(again, keys, g, gb, t)
    for key, a in rule.export_state(state).items():
        np.testing.assert_array_equal(again[key], a)
        assert again[key].dtype == a.dtype
    # the exported arrays were copies: later steps did not change them
    for key, a in arrays.items():
        np.testing.assert_array_equal(a, saved[key])


@pytest.mark.parametrize("name", sorted(KEYED_OPTIMIZERS))
def test_multinomial_columns_are_independent_and_float32_tracks_float64(name):
    d, k = 20, 3
    rule = make_keyed_optimizer(name, learning_rate=0.3, alpha=0.6, l1_ratio=0.3)
    state, s32 = rule.init_state(d, k), rule.init_state(d, k, dtype=np.float32)
    columns = [rule.init_state(d) for _ in range(k)]
    for t, (keys, g, gb) in enumerate(_steps(11, d, 150, k)):
        rule.apply(state, keys, g, gb, t)
        rule.apply(s32, keys, g, gb, t)
        for c in range(k):
            rule.apply(columns[c], keys, g[:, c], gb[c], t)
    out = rule.dense(state)
    assert out.shape == (d + 1, k)
    for c in range(k):
        _close(out[:, c], rule.dense(columns[c]), rtol=1e-14)
    coef = next(n for n, kind in rule.fields().items() if kind == "coef")
    assert s32[coef].dtype == np.float32 and s32[coef].nbytes == d * k * 4
    _close(rule.dense(s32), out, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(KEYED_OPTIMIZERS))
def test_warm_start_and_a_fixed_intercept(name):
    d = 15
    P0 = np.random.default_rng(12).standard_normal(d + 1)
    P0[3] = 0.0
    kwargs = dict(learning_rate=0.2, alpha=0.1, l1_ratio=0.5, fit_intercept=False)
    rule = make_keyed_optimizer(name, **kwargs)
    state = rule.init_state(d, params=P0)
    _close(rule.dense(state), P0, rtol=1e-15)
    b0 = rule.intercept(state)
    for t, (keys, g, gb) in enumerate(_steps(13, d, 50)):
        rule.apply(state, keys, g, gb, t)
    assert rule.intercept(state) == b0
    assert np.any(rule.dense(state)[:d] != P0[:d])


def test_a_shard_that_no_step_touches_still_counts_the_steps():
    # the sgd penalty acts on every coefficient at every step: a state with no keys in a
    # step gets the call with none, and shrinks as the dense rule does
    rule = make_keyed_optimizer("sgd", learning_rate=0.1, alpha=0.5, l1_ratio=0.5)
    dense = make_optimizer("sgd", learning_rate=0.1, alpha=0.5, l1_ratio=0.5)
    P = np.array([1.0, -0.3, 2.0, 0.5])
    state = rule.init_state(3, params=P)
    for t in range(20):
        rule.apply(state, np.array([], dtype=np.int64), np.zeros(0), None, t)
        P = dense.step(P, np.zeros(4), {}, t, 0)
    _close(rule.dense(state), P)
    assert rule.dense(state)[1] == 0.0


@pytest.mark.parametrize(
    ("keys", "grad", "grad_b", "match"),
    [
        ([3, 1], [1.0, 1.0], 0.0, "strictly increasing"),
        ([1, 1], [1.0, 1.0], 0.0, "strictly increasing"),
        ([0, 8], [1.0, 1.0], 0.0, r"must lie in \[0, 8\)"),
        ([-1, 2], [1.0, 1.0], 0.0, "must lie in"),
        ([0.5], [1.0], 0.0, "integers"),
        ([[0, 1]], [1.0, 1.0], 0.0, "1-D"),
        ([0, 1], [1.0], 0.0, "grad_keys has shape"),
        ([0, 1], [1.0, 2.0], [0.0, 1.0], "grad_b has shape"),
    ],
)
@pytest.mark.parametrize("name", sorted(KEYED_OPTIMIZERS))
def test_bad_pushes_are_refused_and_change_nothing(name, keys, grad, grad_b, match):
    rule = make_keyed_optimizer(name, learning_rate=0.1, alpha=0.1, l1_ratio=0.5)
    state = rule.init_state(8)
    rule.apply(state, [2, 5], [1.0, -1.0], 0.5, 0)
    before = rule.export_state(state)
    with pytest.raises(ValueError, match=match):
        rule.apply(state, keys, grad, grad_b, 1)
    for key, a in before.items():
        np.testing.assert_array_equal(state[key], a)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "lbfgs"}, "unknown keyed optimizer"),
        ({"name": "sgd", "options": {"eps": 1e-8}}, "takes no option"),
        ({"name": "sgd", "learning_rate": -1.0}, "learning_rate"),
        ({"name": "adagrad", "alpha": -1.0}, "alpha"),
        ({"name": "adam", "options": {"beta1": 1.0}}, "beta1"),
        ({"name": "ftrl", "lr_schedule": "invscaling"}, "lr_schedule='constant'"),
        ({"name": "ftrl", "options": {"beta": 0.0}}, "beta"),
        ({"name": "ftrl", "options": {"l1": -1.0}}, "l1"),
    ],
)
def test_bad_settings_are_rejected(kwargs, match):
    kwargs = {"learning_rate": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_keyed_optimizer(**kwargs)


def test_bad_states_are_rejected():
    rule = KeyedSGD(make_optimizer("sgd", learning_rate=0.1).schedule, Regularizer(0.1, 0.5))
    with pytest.raises(ValueError, match="float64 or float32"):
        rule.init_state(5, dtype=np.int64)
    with pytest.raises(ValueError, match="params has shape"):
        rule.init_state(5, params=np.zeros(5))
    with pytest.raises(ValueError, match="d \\(the number of coefficients\\)"):
        rule.init_state(0)
    arrays = rule.export_state(rule.init_state(5))
    # a checkpoint of the same rule without L1 keeps no L1 bookkeeping
    plain = make_keyed_optimizer("sgd", learning_rate=0.1, alpha=0.1)
    with pytest.raises(ValueError, match="keeps state"):
        plain.import_state(arrays)
    with pytest.raises(ValueError, match="keeps state"):
        make_keyed_optimizer("adagrad", learning_rate=0.1).import_state(arrays)
    arrays["l1_seen"] = np.zeros(4)
    with pytest.raises(ValueError, match="'l1_seen' has shape"):
        rule.import_state(arrays)
