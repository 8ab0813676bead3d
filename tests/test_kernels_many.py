"""The many-models kernel (grad_loss_many) against its numpy oracle and the one-model kernel."""

from __future__ import annotations

import numpy as np
import pytest

from daskgd.kernels import available_builds, grad_loss, grad_loss_many
from daskgd.objective import LOSSES, MAX_DLOSS, get_loss

BUILDS = sorted(available_builds())
BINARY = [name for name, loss in LOSSES.items() if loss.classification]
CASES = [(name, 1.5) for name in sorted(LOSSES) if name != "tweedie"] + [
    ("tweedie", r) for r in (1.0, 1.5, 2.0, 3.0)
]
IDS = [f"{name}-{r}" if name == "tweedie" else name for name, r in CASES]
#: around the kernel's blocks of 8 rows, d = 0 and 1, one model and many
SHAPES = [(1, 1, 1), (7, 2, 3), (9, 3, 1), (64, 0, 2), (300, 7, 5), (517, 1, 4), (40, 120, 6)]


def _targets(rng, loss: str, power: float, n: int) -> np.ndarray:
    if loss in BINARY:
        return rng.choice([-1.0, 1.0], size=n)
    if loss == "poisson" or (loss == "tweedie" and power == 1.0):
        return rng.poisson(1.5, size=n).astype(np.float64)
    if loss == "gamma" or (loss == "tweedie" and power >= 2.0):
        return rng.gamma(2.0, 1.0, size=n)
    if loss == "tweedie":
        return np.where(rng.random(n) < 0.3, 0.0, rng.gamma(2.0, 1.0, size=n))
    return rng.normal(size=n)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("loss", "power"), CASES, ids=IDS)
def test_grad_loss_many_matches_reference(build, dtype, loss, power):
    """Each model's loss and gradient equal the numpy oracle's, with and without weights,
    offsets and intercepts, for every loss, both precisions and both builds."""
    fam = get_loss(loss)
    rng = np.random.default_rng(abs(hash((loss, power))) % 2**32)
    for n, d, M in SHAPES:
        X = (rng.normal(size=(n, d)) / np.sqrt(max(d, 1))).astype(dtype)
        W = rng.normal(size=(M, d))
        b = rng.normal(size=M)
        y = _targets(rng, loss, power, n)
        sw = rng.uniform(0.0, 2.0, size=n) if rng.integers(2) else None
        offset = rng.normal(scale=0.5, size=n) if rng.integers(2) else None
        losses, grads = grad_loss_many(
            X, y, W, b, loss=loss, sample_weight=sw, offset=offset, power=power, _build=build
        )
        assert losses.shape == (M,) and grads.shape == (M, d + 1)
        assert losses.dtype == grads.dtype == np.float64
        A = np.hstack([X.astype(np.float64), np.ones((n, 1))])
        s = np.ones(n) if sw is None else sw
        for m in range(M):
            p = A @ np.append(W[m], b[m]) + (0.0 if offset is None else offset)
            rows, dl = fam.reference(p, y, 0.1, power)
            dl = np.clip(dl, -MAX_DLOSS, MAX_DLOSS) * s
            # margins differ by rounding (~1e-16 |x||w|): a loss moves by dl times that
            tol = 1e-12 * (s @ np.abs(rows) + np.abs(dl).sum() * 10) + 1e-300
            assert abs(losses[m] - s @ rows) <= tol
            bound = 1e-12 * (np.abs(A).T @ (np.abs(dl) + 1.0)) + 1e-300
            assert np.all(np.abs(grads[m] - A.T @ dl) <= bound)


def test_grad_loss_many_equals_one_model_at_a_time():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(1001, 17))
    y = rng.choice([-1.0, 1.0], size=1001)
    W, b = rng.normal(size=(4, 17)), rng.normal(size=4)
    losses, grads = grad_loss_many(X, y, W, b, loss="log_loss")
    for m in range(4):
        loss, g, gb = grad_loss(X, y, W[m], b[m], loss="log_loss")
        np.testing.assert_allclose(losses[m], loss, rtol=1e-13)
        np.testing.assert_allclose(grads[m], np.append(g, gb), rtol=1e-11, atol=1e-12)


def test_grad_loss_many_no_models_and_no_intercepts():
    X = np.ones((5, 2))
    losses, grads = grad_loss_many(X, np.ones(5), np.empty((0, 2)))
    assert losses.shape == (0,) and grads.shape == (0, 3)
    losses, grads = grad_loss_many(X, np.ones(5), np.zeros((2, 2)))  # b defaults to zeros
    np.testing.assert_allclose(losses, [2.5, 2.5])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"W": np.zeros(2)}, "W must be 2-D"),
        ({"W": np.zeros((2, 3))}, "W has 3 columns but X has 2"),
        ({"b": np.zeros(3)}, "b must have shape"),
        ({"y": np.full(5, 2.0), "loss": "log_loss"}, "-1"),
        ({"sample_weight": -np.ones(5)}, "non-negative"),
        ({"offset": np.full(5, np.nan)}, "offset must be finite"),
        ({"loss": "nope"}, "nope"),
    ],
)
def test_grad_loss_many_bad_input(kwargs, match):
    args = {"X": np.ones((5, 2)), "y": np.ones(5), "W": np.zeros((2, 2))} | kwargs
    with pytest.raises(ValueError, match=match):
        grad_loss_many(**args)
