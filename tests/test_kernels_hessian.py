"""The log-link losses, offsets and the Hessian kernel against their numpy oracles.

The oracles themselves are checked too: each loss's derivative and second derivative
against finite differences of its value, and the log-link families against
scikit-learn's half deviances (same derivatives, values equal up to a function of y).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from daskgd.kernels import (
    available_builds,
    grad_hess,
    grad_hess_reference,
    grad_loss,
    grad_loss_reference,
)
from daskgd.objective import LOSSES, MAX_DLOSS, check_power, get_loss

BUILDS = sorted(available_builds())
DTYPES = [np.float32, np.float64]
BINARY = [name for name, loss in LOSSES.items() if loss.classification]
#: (loss, Tweedie power) pairs: every loss, and the Tweedie family at its special powers
CASES = [(name, 1.5) for name in sorted(LOSSES) if name != "tweedie"] + [
    ("tweedie", r) for r in (1.0, 1.2, 1.5, 2.0, 2.5, 3.0)
]
IDS = [f"{name}-{r}" if name == "tweedie" else name for name, r in CASES]
#: shapes around the kernel's row blocks (8 and 256 rows): d = 1, n below a block, n not
#: a multiple of either
SHAPES = [(1, 1), (5, 1), (9, 3), (255, 2), (256, 1), (300, 7), (517, 1), (700, 23), (30, 120)]


def _targets(rng, loss: str, power: float, p: np.ndarray) -> np.ndarray:
    n = p.shape[0]
    if loss in BINARY:
        return rng.choice([-1.0, 1.0], size=n)
    mu = np.exp(np.clip(p, -20, 20))
    if loss == "poisson" or (loss == "tweedie" and power == 1.0):
        return rng.poisson(mu).astype(np.float64)
    if loss == "gamma" or (loss == "tweedie" and power >= 2.0):
        return rng.gamma(2.0, mu / 2.0)
    if loss == "tweedie":  # compound Poisson-Gamma: zeros and positive amounts
        return np.where(rng.random(n) < 0.3, 0.0, rng.gamma(2.0, mu / 2.0))
    return p + rng.normal(scale=0.5, size=n)


def _block(seed: int, n: int, d: int, loss: str, power: float, dtype, options: dict):
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, d)) / np.sqrt(d)).astype(dtype)
    w = rng.normal(size=d)
    b = 0.3 if options.get("intercept", True) else 0.0
    offset = rng.normal(scale=0.5, size=n) if options.get("offset") else None
    p = X.astype(np.float64) @ w + b + (0.0 if offset is None else offset)
    y = _targets(rng, loss, power, p)
    sw = rng.uniform(0.0, 2.0, size=n) if options.get("weighted") else None
    return X, y, w, b, sw, offset


def _bound(X, terms, rtol: float) -> np.ndarray:
    """Rounding bound of ``A^T terms`` (terms (n,) or (n, m)): rtol times the sum of the
    magnitudes of what is added, never below the smallest normal number."""
    A = np.abs(np.hstack([X.astype(np.float64), np.ones((X.shape[0], 1))]))
    return rtol * (A.T @ np.abs(terms)) + np.finfo(np.float64).tiny


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("loss", "power"), CASES, ids=IDS)
def test_grad_hess_matches_reference(build, dtype, loss, power):
    """Every loss, both precisions and builds, shapes around the block sizes, and a random
    mix of sample weights, offsets and intercept."""
    rng = np.random.default_rng(hash((loss, power)) % 2**32)
    for k, (n, d) in enumerate(SHAPES):
        options = {key: bool(rng.integers(2)) for key in ("weighted", "offset", "intercept")}
        X, y, w, b, sw, offset = _block(k, n, d, loss, power, dtype, options)
        kwargs = dict(loss=loss, sample_weight=sw, offset=offset, power=power,
                      fit_intercept=options["intercept"])  # fmt: skip
        total, g, H = grad_hess(X, y, w, b, _build=build, **kwargs)
        want_total, want_g, want_H = grad_hess_reference(X, y, w, b, **kwargs)
        assert g.dtype == H.dtype == np.float64 and H.shape == (d + 1, d + 1)
        np.testing.assert_array_equal(H, H.T)
        fam = get_loss(loss)
        p = X.astype(np.float64) @ w + b + (0.0 if offset is None else offset)
        s = np.ones(n) if sw is None else sw
        rows, dl = fam.reference(p, y, 0.1, power)
        h = np.clip(fam.reference_hessian(p, y, 0.1, power), -MAX_DLOSS, MAX_DLOSS) * s
        # margins differ by rounding (~1e-16 |x||w|): a loss moves by dl times that
        assert abs(total - want_total) <= 1e-12 * (s @ np.abs(rows) + s @ np.abs(dl) * 10)
        A = np.abs(np.hstack([X.astype(np.float64), np.ones((n, 1))]))
        assert np.all(np.abs(g - want_g) <= _bound(X, np.abs(dl * s) + np.abs(h), 1e-12))
        assert np.all(np.abs(H - want_H) <= 1e-12 * (A.T @ (A * np.abs(h)[:, None])) + 1e-300)
        if not options["intercept"]:
            assert not H[d].any() and not H[:, d].any()


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("loss", "power"), CASES, ids=IDS)
def test_grad_loss_with_offset_and_power_matches_reference(build, dtype, loss, power):
    rng = np.random.default_rng(7)
    for k, (n, d) in enumerate(SHAPES):
        options = {key: bool(rng.integers(2)) for key in ("weighted", "offset")}
        X, y, w, b, sw, offset = _block(k, n, d, loss, power, dtype, options)
        # grad_loss carries y, w, weights and offset in X's dtype: the oracle gets the same
        y, w, sw, offset = (None if a is None else np.asarray(a, dtype=dtype)
                            for a in (y, w, sw, offset))  # fmt: skip
        got = grad_loss(X, y, w, b, loss=loss, sample_weight=sw, offset=offset, power=power,
                        _build=build)  # fmt: skip
        want = grad_loss_reference(X, y, w, b, loss=loss, sample_weight=sw, offset=offset,
                                   power=power)  # fmt: skip
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        fam = get_loss(loss)
        p = X.astype(np.float64) @ w.astype(np.float64) + b
        p += 0.0 if offset is None else offset.astype(np.float64)
        s = np.ones(n) if sw is None else sw.astype(np.float64)
        rows, dl = fam.reference(p, y.astype(np.float64), 0.1, power)
        h = np.abs(fam.reference_hessian(p, y.astype(np.float64), 0.1, power))
        assert abs(got[0] - want[0]) <= rtol * (s @ np.abs(rows)) + 1e-12 * (s @ np.abs(dl))
        bound = _bound(X, s * (np.abs(dl) + 1e-3 * h), rtol)
        assert np.all(np.abs(got[1] - want[1]) <= bound[:d])
        assert abs(got[2] - want[2]) <= bound[d]


@pytest.mark.parametrize(("loss", "power"), CASES, ids=IDS)
def test_grad_hess_gradient_is_grad_loss_gradient(loss, power):
    X, y, w, b, sw, offset = _block(3, 301, 5, loss, power, np.float64,
                                    {"weighted": True, "offset": True})  # fmt: skip
    total, g, _ = grad_hess(X, y, w, b, loss=loss, sample_weight=sw, offset=offset, power=power)
    want = grad_loss(X, y, w, b, loss=loss, sample_weight=sw, offset=offset, power=power)
    np.testing.assert_allclose(total, want[0], rtol=1e-12)
    np.testing.assert_allclose(g[:-1], want[1], rtol=1e-10, atol=1e-12 * np.abs(g).max())
    np.testing.assert_allclose(g[-1], want[2], rtol=1e-10, atol=1e-12 * np.abs(g).max())


def _kink_free(loss: str, p: np.ndarray, y: np.ndarray, step: float) -> np.ndarray:
    """Rows whose margin is not within ``step`` of a kink of the loss."""
    if loss in ("hinge", "squared_hinge"):
        return np.abs(1.0 - p * y) > 2 * step
    if loss == "huber":
        return np.abs(np.abs(p - y) - 0.1) > 2 * step
    return np.ones(p.shape, dtype=bool)


@pytest.mark.parametrize(("loss", "power"), CASES, ids=IDS)
def test_reference_derivatives_by_finite_differences(loss, power):
    """The oracle's first and second derivatives are those of its loss (central
    differences, away from kinks)."""
    rng = np.random.default_rng(1)
    p = rng.uniform(-3.0, 3.0, size=400)
    y = _targets(rng, loss, power, p)
    fam, step = get_loss(loss), 1e-5
    keep = _kink_free(loss, p, y, step)
    up, down = fam.reference(p + step, y, 0.1, power), fam.reference(p - step, y, 0.1, power)
    _, dl = fam.reference(p, y, 0.1, power)
    h = fam.reference_hessian(p, y, 0.1, power)
    fd1 = (up[0] - down[0]) / (2 * step)
    fd2 = (up[1] - down[1]) / (2 * step)
    scale = 1.0 + np.abs(up[0]) + np.abs(dl) + np.abs(h)
    np.testing.assert_allclose(fd1[keep], dl[keep], rtol=0, atol=1e-6 * scale[keep].max())
    np.testing.assert_allclose(fd2[keep], h[keep], rtol=0, atol=1e-5 * scale[keep].max())


@pytest.mark.parametrize(("loss", "power"), CASES, ids=IDS)
def test_second_derivative_sign(loss, power):
    """Every loss is convex in the margin (l'' >= 0) on its domain, except the Tweedie
    family above power 2 where mu is large against y (as in scikit-learn)."""
    rng = np.random.default_rng(2)
    p = rng.uniform(-30.0, 30.0, size=2000)
    y = _targets(rng, loss, power, rng.uniform(-5.0, 5.0, size=2000))
    h = get_loss(loss).reference_hessian(p, y, 0.1, power)
    if loss == "tweedie" and power > 2.0:
        mu = np.exp(p)
        assert np.all((h >= 0) == ((power - 2.0) * mu <= (power - 1.0) * y))
    else:
        assert np.all(h >= 0)


@pytest.mark.parametrize(
    ("loss", "power", "cls"),
    [("poisson", 1.5, "HalfPoissonLoss"), ("gamma", 1.5, "HalfGammaLoss")]
    + [("tweedie", r, "HalfTweedieLoss") for r in (1.0, 1.5, 2.0, 3.0)],
)
def test_log_link_losses_agree_with_scikit_learn(loss, power, cls):
    """Same gradient and Hessian as scikit-learn's half deviances; values that differ by
    a function of y alone."""
    from sklearn._loss import loss as sk_loss

    sk = getattr(sk_loss, cls)(power=power) if cls == "HalfTweedieLoss" else getattr(sk_loss, cls)()
    rng = np.random.default_rng(3)
    p = rng.uniform(-3.0, 3.0, size=200)
    y = _targets(rng, loss, power, p)
    fam = get_loss(loss)
    rows, dl = fam.reference(p, y, 0.1, power)
    sk_g, sk_h = sk.gradient_hessian(y_true=y, raw_prediction=p)
    np.testing.assert_allclose(dl, sk_g, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fam.reference_hessian(p, y, 0.1, power), sk_h, rtol=1e-10)
    # the difference of the values does not depend on the margin
    p2 = p + rng.uniform(-1.0, 1.0, size=200)
    diff1 = rows - sk.loss(y_true=y, raw_prediction=p)
    diff2 = fam.reference(p2, y, 0.1, power)[0] - sk.loss(y_true=y, raw_prediction=p2)
    np.testing.assert_allclose(diff1, diff2, rtol=1e-9, atol=1e-9)


def test_squared_error_at_zero_gives_the_gram_matrix():
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(300, 4)), rng.normal(size=300)
    total, g, H = grad_hess(X, y, np.zeros(4), loss="squared_error")
    A = np.hstack([X, np.ones((300, 1))])
    np.testing.assert_allclose(H, A.T @ A, rtol=1e-12)
    np.testing.assert_allclose(g, -A.T @ y, rtol=1e-12)
    np.testing.assert_allclose(total, 0.5 * y @ y, rtol=1e-12)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize(("loss", "power"), [("poisson", 1.5), ("gamma", 1.5),
                                             ("tweedie", 1.5), ("tweedie", 3.0)])  # fmt: skip
def test_log_link_huge_margins(build, loss, power):
    """exp overflows: derivatives are clipped as the other losses' are, never NaN."""
    X = np.array([[1.0], [-1.0], [1e-300], [1.0]])
    strict = loss == "gamma" or power >= 2.0
    y = np.array([1.0, 2.0, 1.0, 3.0]) if strict else np.array([0.0, 2.0, 1.0, 0.0])
    for w in (800.0, -800.0, 1e5, -1e5):
        total, g, gb = grad_loss(X, y, [w], loss=loss, power=power, _build=build)
        assert not np.isnan(total) and np.isfinite(g).all() and np.isfinite(gb)
        ref = grad_loss_reference(X, y, [w], loss=loss, power=power)
        np.testing.assert_allclose(g, ref[1], rtol=1e-12)
        _, g2, H = grad_hess(X, y, [w], loss=loss, power=power, _build=build)
        assert np.isfinite(g2).all() and np.isfinite(H).all()
        np.testing.assert_allclose(H, grad_hess_reference(X, y, [w], loss=loss, power=power)[2],
                                   rtol=1e-12)  # fmt: skip


@pytest.mark.parametrize(
    ("loss", "power", "y", "match"),
    [
        ("poisson", 1.5, [1.0, -1.0, 2.0], "non-negative .* at row 1"),
        ("gamma", 1.5, [1.0, 2.0, 0.0], "positive .* at row 2"),
        ("tweedie", 1.5, [1.0, -2.0, 0.0], "non-negative .* at row 1"),
        ("tweedie", 2.0, [1.0, 2.0, 0.0], "positive .* at row 2"),
        ("tweedie", 3.0, [0.0, 2.0, 1.0], "positive .* at row 0"),
        ("tweedie", 0.5, [1.0, 2.0, 3.0], "power in \\(0, 1\\)"),
        ("tweedie", 0.0, [1.0, 2.0, 3.0], "loss='squared_error'"),
        ("tweedie", float("nan"), [1.0, 2.0, 3.0], "Tweedie power"),
    ],
)
@pytest.mark.parametrize("func", [grad_loss, grad_hess])
def test_bad_targets_and_powers(func, loss, power, y, match):
    with pytest.raises(ValueError, match=match):
        func(np.ones((3, 2)), np.array(y), np.zeros(2), loss=loss, power=power)


def test_tweedie_power_one_and_two_accept_their_families_targets():
    X = np.ones((3, 2))
    grad_hess(X, np.array([0.0, 1.0, 2.0]), np.zeros(2), loss="tweedie", power=1.0)
    grad_loss(X, np.array([0.5, 1.0, 2.0]), np.zeros(2), loss="tweedie", power=2.0)
    assert check_power(1) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"w": np.zeros((2, 3)), "loss": "log_loss", "y": np.zeros(3)}, "1-D weights"),
        ({"offset": np.array([0.0, np.inf, 0.0])}, "offset must be finite.* row 1"),
        ({"offset": np.zeros(4)}, "offset has 4 entries"),
        ({"sample_weight": -np.ones(3)}, "non-negative"),
        ({"epsilon": 0.0, "loss": "huber"}, "epsilon must be positive"),
    ],
)
def test_grad_hess_bad_input(kwargs, match):
    args = {"X": np.ones((3, 2)), "y": np.ones(3), "w": np.zeros(2)}
    args.update(kwargs)
    X, y, w = args.pop("X"), args.pop("y"), args.pop("w")
    with pytest.raises(ValueError, match=match):
        grad_hess(X, y, w, **args)


def test_grad_loss_refuses_offset_with_2d_weights():
    with pytest.raises(ValueError, match="offset"):
        grad_loss(np.ones((3, 2)), np.zeros(3), np.zeros((2, 3)), loss="log_loss",
                  offset=np.zeros(3))  # fmt: skip


def test_link_of_log_link_families():
    for loss in ("poisson", "gamma", "tweedie"):
        np.testing.assert_allclose(get_loss(loss).link(np.array([0.0, 1.0])), [1.0, np.e])


def test_empty_block():
    total, g, H = grad_hess(np.empty((0, 3)), np.empty(0), np.ones(3), loss="poisson")
    assert total == 0.0 and not g.any() and not H.any() and H.shape == (4, 4)


def test_no_features():
    """d = 0: the Hessian is the intercept's alone."""
    X, y = np.empty((5, 0)), np.arange(5.0)
    for fit_intercept in (True, False):
        got = grad_hess(X, y, np.empty(0), 0.5, loss="poisson", fit_intercept=fit_intercept)
        want = grad_hess_reference(X, y, np.empty(0), 0.5, loss="poisson",
                                   fit_intercept=fit_intercept)  # fmt: skip
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
        for g, r in zip(got[1:], want[1:], strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-12)


def test_importing_the_kernels_does_not_import_scipy_linalg():
    """BLAS is looked up at grad_hess's first call: the workers that never use it, and
    importing daskgd.kernels, do not pay for importing scipy.linalg."""
    code = (
        "import sys, daskgd.kernels\n"
        "assert 'scipy.linalg' not in sys.modules, 'imported at import'\n"
        "import numpy as np\n"
        "daskgd.kernels.grad_hess(np.ones((3, 2)), np.ones(3), np.zeros(2))\n"
        "assert 'scipy.linalg' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("loss", "power"), CASES, ids=IDS)
def test_single_precision_hessian_is_close_and_the_rest_exact(build, dtype, loss, power):
    """hessian_precision="single": each 256-row block's product in float32, summed in
    float64. The loss and gradient are the double run's bit for bit; the Hessian is within
    float32 rounding of the oracle's, relative to the sizes of what is summed (so columns on
    scales far apart keep their own relative accuracy); negative curvature rows (Tweedie
    powers above 2) are subtracted as in double precision."""
    rng = np.random.default_rng(abs(hash((loss, power, "single"))) % 2**32)
    for k, (n, d) in enumerate(SHAPES):
        options = {key: bool(rng.integers(2)) for key in ("weighted", "offset", "intercept")}
        X, y, w, b, sw, offset = _block(k, n, d, loss, power, dtype, options)
        X = np.ascontiguousarray(X * np.logspace(-2, 2, d).astype(dtype))  # scales apart
        kwargs = dict(loss=loss, sample_weight=sw, offset=offset, power=power,
                      fit_intercept=options["intercept"], _build=build)  # fmt: skip
        total, g, H = grad_hess(X, y, w, b, **kwargs)
        total1, g1, H1 = grad_hess(X, y, w, b, hessian_precision="single", **kwargs)
        assert total1 == total and np.array_equal(g1, g)
        np.testing.assert_array_equal(H1, H1.T)
        fam = get_loss(loss)
        p = X.astype(np.float64) @ w + b + (0.0 if offset is None else offset)
        s = np.ones(n) if sw is None else sw
        h = np.clip(fam.reference_hessian(p, y, 0.1, power), -MAX_DLOSS, MAX_DLOSS) * s
        A = np.abs(np.hstack([X.astype(np.float64), np.ones((n, 1))]))
        # the worst case: the two factors' roundings and 256 float32 additions, 2**-24 each
        bound = (2 + 256) * 2.0**-24 * (A.T @ (A * np.abs(h)[:, None])) + 1e-300
        assert np.all(np.abs(H1 - H) <= bound)


def test_hessian_precision_is_checked():
    with pytest.raises(ValueError, match="hessian_precision must be 'double' or 'single'"):
        grad_hess(np.ones((3, 2)), np.ones(3), np.zeros(2), hessian_precision="half")
