"""The compiled kernels against the numpy oracle, every loss, both precisions, both builds."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskgd.kernels import KERNEL_BUILD, available_builds, grad_loss, grad_loss_reference
from daskgd.objective import LOSSES, get_loss, link

BUILDS = sorted(available_builds())
BINARY = [name for name, loss in LOSSES.items() if loss.classification]
#: the log-link families (their own tests: tests/test_kernels_hessian.py)
LOG_LINK = ("poisson", "gamma", "tweedie")
CLASSIC = sorted(set(LOSSES) - set(LOG_LINK))
DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def _targets(rng, loss: str, n: int, scale: float = 1.0) -> np.ndarray:
    if loss in BINARY:
        return rng.choice([-1.0, 1.0], size=n)
    if loss in LOG_LINK:  # positive amounts, whatever the family
        return rng.gamma(2.0, scale=scale, size=n)
    return rng.normal(scale=scale, size=n)


def _assert_close(got, want, dtype, atol_scale=1.0):
    """Relative error of summed quantities, measured against their magnitude."""
    rtol = RTOL[dtype]
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-300) * atol_scale
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_reference(build, dtype, loss, weighted):
    rng = np.random.default_rng(0)
    n, d = 203, 37  # not multiples of the kernel's row block
    X = rng.normal(size=(n, d)).astype(dtype)
    y = _targets(rng, loss, n).astype(dtype)
    w = rng.normal(size=d).astype(dtype)
    sw = rng.random(n).astype(dtype) if weighted else None
    got = grad_loss(X, y, w, 0.25, loss=loss, sample_weight=sw, _build=build)
    want = grad_loss_reference(X, y, w, 0.25, loss=loss, sample_weight=sw)
    for g, r in zip(got, want, strict=True):
        _assert_close(g, r, dtype)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("epsilon", [0.01, 1.0, 5.0])
def test_huber_width_matches_reference(build, dtype, epsilon):
    """The Huber loss's epsilon reaches the kernel: residuals on both sides of it."""
    rng = np.random.default_rng(5)
    n, d = 203, 9
    X = rng.normal(size=(n, d)).astype(dtype)
    y = rng.normal(scale=3.0, size=n).astype(dtype)
    w = rng.normal(size=d).astype(dtype)
    got = grad_loss(X, y, w, 0.1, loss="huber", epsilon=epsilon, _build=build)
    want = grad_loss_reference(X, y, w, 0.1, loss="huber", epsilon=epsilon)
    for g, r in zip(got, want, strict=True):
        _assert_close(g, r, dtype)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_multinomial_matches_reference(build, dtype, weighted):
    rng = np.random.default_rng(1)
    n, d, k = 150, 11, 4
    X = rng.normal(size=(n, d)).astype(dtype)
    y = rng.integers(0, k, size=n).astype(dtype)
    W = rng.normal(size=(d, k)).astype(dtype)
    b = rng.normal(size=k).astype(dtype)
    sw = rng.random(n).astype(dtype) if weighted else None
    out = np.empty((d + 1, k), dtype=dtype)
    got = grad_loss(X, y, W, b, loss="log_loss", sample_weight=sw, out=out, _build=build)
    want = grad_loss_reference(X, y, W, b, loss="log_loss", sample_weight=sw)
    assert got[1].base is out or got[1].base is out.base
    for g, r in zip(got, want, strict=True):
        _assert_close(g, r, dtype)


@st.composite
def blocks(draw):
    dtype = draw(st.sampled_from(DTYPES))
    loss = draw(st.sampled_from(CLASSIC))
    n = draw(st.integers(1, 40))
    d = draw(st.sampled_from([1, 2, 3, 5, 8, 17, 64, 300]))
    seed = draw(st.integers(0, 2**32 - 1))
    margin_scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 1e4]))
    weighted = draw(st.booleans())
    build = draw(st.sampled_from(BUILDS))
    return dtype, loss, n, d, seed, margin_scale, weighted, build


@settings(max_examples=300, deadline=None)
@given(blocks())
def test_hypothesis_random_blocks(case):
    dtype, loss, n, d, seed, margin_scale, weighted, build = case
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(dtype)
    # weights scaled so that margins reach about +-margin_scale
    w = (rng.normal(size=d) * margin_scale / np.sqrt(d)).astype(dtype)
    b = float(rng.normal())
    y = _targets(rng, loss, n, scale=margin_scale).astype(dtype)
    sw = rng.random(n).astype(dtype) if weighted else None
    got = grad_loss(X, y, w, b, loss=loss, sample_weight=sw, _build=build)
    want = grad_loss_reference(X, y, w, b, loss=loss, sample_weight=sw)
    assert np.isfinite(got[0])
    # Error bounds of a sum are relative to the sum of its terms' magnitudes (a
    # gradient can cancel to ~0); the float64 reference sees exactly the same
    # widened inputs, so even for float32 only rounding of the outputs differs.
    X64 = X.astype(np.float64)
    p = X64 @ w.astype(np.float64) + b
    _, dloss = get_loss(loss).reference(p, y.astype(np.float64), 0.1)
    dloss = np.abs(dloss) * (1.0 if sw is None else sw.astype(np.float64))
    # Outputs are stored in X's dtype: below its smallest normal number they underflow.
    rtol, tiny = RTOL[dtype], float(np.finfo(dtype).tiny)
    # A loss also inherits its margin's rounding error, |dloss| * |x||w| * eps: far in
    # the tail of the log loss (5e-175) that term exceeds rtol * loss.
    margin_err = rtol * (dloss @ (np.abs(X64) @ np.abs(w.astype(np.float64)) + abs(b)))
    assert abs(got[0] - want[0]) <= rtol * abs(want[0]) + margin_err + tiny
    # likewise each derivative inherits its margin's error times the second derivative
    # (a one-row block far in the log loss's tail: dloss 8e-28 moves by 1e-12 relative)
    fam = get_loss(loss)
    h = np.abs(fam.reference_hessian(p, y.astype(np.float64), 0.1))
    h = h * (1.0 if sw is None else sw.astype(np.float64))
    per_row = dloss + h * (np.abs(X64) @ np.abs(w.astype(np.float64)) + abs(b))
    assert np.all(np.abs(got[1] - want[1]) <= rtol * (np.abs(X64).T @ per_row) + tiny)
    assert abs(got[2] - want[2]) <= rtol * per_row.sum() + tiny


@pytest.mark.parametrize("loss", CLASSIC)
def test_huge_margins_stay_finite(loss):
    X = np.array([[1e200], [-1e200], [1e-300]])
    y = np.array([1.0, -1.0, 1.0]) if loss in BINARY else np.array([1e300, -1e300, 0.0])
    w = np.array([1e100])
    _total, g, _gb = grad_loss(X, y, w, loss=loss)
    assert np.all(np.isfinite(g)) or loss in ("squared_error", "squared_hinge")
    # derivative clipped as in scikit-learn: |dloss| <= 1e12
    ref = grad_loss_reference(X, y, w, loss=loss)
    np.testing.assert_allclose(g, ref[1], rtol=1e-12)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_loss_stable_for_any_margin(build, dtype):
    # float32 too: exp(800) overflows float64, exp(100) already overflows float32
    X = np.array([[1.0]] * 4, dtype=dtype)
    y = np.array([1.0, -1.0, 1.0, -1.0], dtype=dtype)
    for w in (1e4, -1e4, 800.0, -800.0, 100.0, -100.0):
        total, g, _gb = grad_loss(X, y, [w], loss="log_loss", _build=build)
        assert np.isfinite(total) and np.isfinite(g).all()
        np.testing.assert_allclose(total, 2 * abs(w), rtol=1e-12)
        np.testing.assert_allclose(g, grad_loss_reference(X, y, [w], loss="log_loss")[1],
                                   rtol=RTOL[dtype])  # fmt: skip


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("active", ["all", "last", "before_last", "none"])
def test_every_row_count_around_the_row_block(build, dtype, active):
    # The kernel writes the gradient's last update (the last block of 8 rows, or the last
    # row after them) straight to ``out``, keeps a float64 accumulator only for the ones
    # before it, and writes zeros when no row adds anything: every row count from one
    # to three blocks and a tail, with hinge rows switched on (margin < 1) or off so that
    # the last update, the ones before it, all or none add to the gradient; then a few row
    # counts with no columns, or weighted with a zero weight on the last row.
    rng = np.random.default_rng(11)
    for n, d, weighted in [(n, 29, False) for n in range(1, 27)] + [
        (n, d, True) for n in (1, 8, 9, 16, 17) for d in (0, 3)
    ]:
        X = rng.normal(size=(n, d)).astype(dtype)
        w = (0.01 * rng.normal(size=d)).astype(dtype)
        last = {n - 1} if n % 8 else set(range(n - 8, n))  # the rows of the last update
        on = {"all": set(range(n)), "last": last, "before_last": set(range(n)) - last,
              "none": set()}[active]  # fmt: skip
        # y = 1: a margin near 0 is active, one pushed to 10 by the row's offset is not
        offset = np.array([0.0 if i in on else 10.0 for i in range(n)], dtype=dtype)
        y = np.ones(n, dtype=dtype)
        sw = None
        if weighted:  # a zero weight on the last row: its update adds nothing
            sw = rng.random(n).astype(dtype)
            sw[-1] = 0.0
        out = np.full(d + 1, np.nan, dtype=dtype)  # every entry must be written
        got = grad_loss(X, y, w, 0.0, loss="hinge", offset=offset, sample_weight=sw, out=out,
                        _build=build)  # fmt: skip
        want = grad_loss_reference(X, y, w, 0.0, loss="hinge", offset=offset, sample_weight=sw)
        for g, r in zip(got, want, strict=True):
            _assert_close(g, r, dtype)
        if not on:
            assert not np.any(out), n


def test_out_buffer_is_reused():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(10, 3))
    out = np.empty(4)
    _, g, gb = grad_loss(X, rng.normal(size=10), np.ones(3), out=out)
    assert np.shares_memory(g, out)
    np.testing.assert_array_equal(out[:3], g)
    assert out[3] == gb


def test_gil_released_two_threads_agree():
    rng = np.random.default_rng(3)
    X = [rng.normal(size=(20_000, 50)) for _ in range(2)]
    y = [rng.normal(size=20_000) for _ in range(2)]
    w = rng.normal(size=50)
    results: dict[int, tuple] = {}

    def work(i):
        results[i] = grad_loss(X[i], y[i], w)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        np.testing.assert_allclose(results[i][1], grad_loss_reference(X[i], y[i], w)[1], rtol=1e-12)


class _Counter(threading.Thread):
    """Counts loop iterations in Python, which needs the GIL, from the moment it is let go.

    It stops on its own after ``limit`` iterations: with the switch interval raised (see
    below) nothing else makes it give the GIL back.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(daemon=True)
        self.go = threading.Event()
        self.limit = limit
        self.count = 0

    def run(self) -> None:
        self.go.wait()
        while self.count < self.limit:
            self.count += 1


def _progress_during(call, limit: int = 20_000) -> int:
    """Iterations another Python thread made while ``call()`` ran in this one.

    The interpreter normally takes the GIL from a thread every 5 ms, even inside a C call
    that holds it; with a switch interval of 100 s it never does in this test, so the
    counting thread can run during ``call`` only if ``call`` releases the GIL. The count
    is read right after ``call`` returns, before this thread runs any other code that
    could let go of the GIL.
    """
    counter = _Counter(limit)
    counter.start()
    old = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    try:
        # Another thread of the process (a cluster's event loop) that began waiting for
        # the GIL before the change would still take it after 5 ms: let such waits end
        # now (a sleep releases the GIL), so that they do not fall in the measurement.
        time.sleep(0.01)
        counter.go.set()  # the counter wakes, then waits for the GIL this thread holds
        call()
        count = counter.count
    finally:
        sys.setswitchinterval(old)
    counter.join()
    return count


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["linear", "multinomial", "hessian"])
def test_kernels_release_the_gil(build, dtype, kind):
    """Another Python thread makes progress while a compiled kernel runs on a large block,
    and none while a C call that holds the GIL does (the comparison that shows the count
    can be zero).

    The compiled functions are called directly: ``grad_loss``'s checks use numpy, which
    may release the GIL itself and would let the counter run whatever the kernel does.
    """
    rng = np.random.default_rng(4)
    n, d, k = (20_000, 50, 5) if kind == "multinomial" else (200_000, 50, 1)
    X = rng.normal(size=(n, d)).astype(dtype)
    y = (rng.integers(0, k, size=n) if kind == "multinomial" else rng.normal(size=n)).astype(dtype)
    kernels = available_builds()[build]
    if kind == "linear":
        w, out = rng.normal(size=d).astype(dtype), np.empty(d + 1, dtype=dtype)

        def kernel():
            kernels.grad_loss_linear(X, y, w, 0.5, None, out, LOSSES["squared_error"].code, 0.1)

    elif kind == "hessian":
        w, out = rng.normal(size=d).astype(dtype), np.empty(d + 1)
        hess, y64, w64 = np.empty((d + 1, d + 1)), y.astype(np.float64), w.astype(np.float64)

        def kernel():
            kernels.grad_hess(X, y64, w64, 0.5, None, None, out, hess,
                              LOSSES["squared_error"].code, 0.1, 1.5, True)  # fmt: skip

    else:
        W, b = rng.normal(size=(d, k)).astype(dtype), np.zeros(k, dtype=dtype)
        out = np.empty((d + 1, k), dtype=dtype)

        def kernel():
            kernels.grad_loss_multinomial(X, y, W, b, None, out)

    # A C loop that holds the GIL throughout: numpy's sum of Python objects (each addition
    # is a call into the interpreter's C API, never a release).
    objects = X[:2_000].ravel().astype(object)
    assert _progress_during(lambda: objects.sum()) == 0
    # Released, the counter runs as soon as it is scheduled; on a busy machine it may not
    # be within one call, so a few calls are allowed. A kernel that held the GIL would
    # leave the count at 0 every time, as above.
    counts = []
    for _ in range(20):
        counts.append(_progress_during(kernel))
        if counts[-1] > 0:
            break
    assert counts[-1] > 0, counts
    multi = kind == "multinomial"
    want = grad_loss_reference(X, y, *((W, b) if multi else (w, 0.5)),
                               loss="log_loss" if multi else "squared_error")[1]  # fmt: skip
    np.testing.assert_allclose(
        out[:d], want, rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 10 * np.abs(out).max()
    )


def test_default_build_is_the_fastest_available():
    assert KERNEL_BUILD == ("avx2" if "avx2" in BUILDS else "baseline")


def test_empty_block():
    loss, g, gb = grad_loss(np.empty((0, 3)), np.empty(0), np.ones(3))
    assert loss == 0.0 and gb == 0.0
    np.testing.assert_array_equal(g, np.zeros(3))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"X": np.ones(3)}, ValueError, "X must be 2-D"),
        ({"X": np.ones((3, 2), dtype=np.int64)}, TypeError, "float32 or float64"),
        ({"X": [[1.0, 2.0]] * 3}, TypeError, "numpy.ndarray"),
        ({"X": np.asfortranarray(np.ones((3, 2)))}, ValueError, "C-contiguous"),
        ({"y": np.ones(4)}, ValueError, "y has 4 entries"),
        ({"y": np.ones((3, 1))}, ValueError, "y must be 1-D"),
        ({"w": np.ones(3)}, ValueError, "w must have shape"),
        ({"loss": "nope"}, ValueError, "unknown loss 'nope'"),
        ({"loss": "hinge", "y": np.array([0.0, 1.0, 1.0])}, ValueError, "-1/\\+1 labels"),
        ({"sample_weight": -np.ones(3)}, ValueError, "non-negative"),
        ({"sample_weight": np.ones(2)}, ValueError, "sample_weight has 2 entries"),
        ({"out": np.empty(2)}, ValueError, "out must be"),
        ({"out": np.empty(3, dtype=np.float32)}, ValueError, "out must be"),
        ({"loss": "huber", "epsilon": 0.0}, ValueError, "epsilon must be positive"),
        ({"w": np.ones((2, 3)), "loss": "hinge"}, ValueError, "multinomial"),
        (
            {"w": np.ones((2, 3)), "loss": "log_loss", "y": np.array([0.0, 1.0, 3.0])},
            ValueError,
            "class indices 0..2",
        ),
    ],
)
def test_bad_input(kwargs, error, match):
    args = {"X": np.ones((3, 2)), "y": np.ones(3), "w": np.ones(2)}
    args.update(kwargs)
    X, y, w = args.pop("X"), args.pop("y"), args.pop("w")
    with pytest.raises(error, match=match):
        grad_loss(X, y, w, **args)


def test_link_functions():
    np.testing.assert_array_equal(link("squared_error", np.array([1.0, -2.0])), [1.0, -2.0])
    p = link("log_loss", np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_allclose(p, [0.0, 0.5, 1.0])
    P = link("log_loss", np.array([[1.0, 1.0], [1000.0, 0.0]]))
    np.testing.assert_allclose(P, [[0.5, 0.5], [1.0, 0.0]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", BINARY)
def test_one_vs_rest_columns_match_the_binary_oracle(loss, dtype):
    """The training task's one-vs-rest step (k binary problems, one per parameter column,
    targets as class indices) against the numpy oracle, column by column."""
    from daskgd.worker.task import _one_vs_rest

    rng = np.random.default_rng(11)
    n, d, k = 257, 6, 4
    X = rng.normal(size=(n, d)).astype(dtype)
    y = rng.integers(0, k, size=n).astype(dtype)
    sw = rng.uniform(0.5, 2.0, size=n).astype(dtype)
    params = rng.normal(scale=0.5, size=(d + 1, k))
    grad, losses = _one_vs_rest(X, y, sw, params, {"loss": loss, "epsilon": 0.1})
    assert grad.shape == (d + 1, k) and grad.dtype == np.float64 and losses.shape == (k,)
    for j in range(k):
        yj = np.where(y == j, 1.0, -1.0)
        want, gw, gb = grad_loss_reference(X, yj, params[:d, j], params[d, j], loss=loss,
                                           sample_weight=sw)  # fmt: skip
        _assert_close(losses[j], want, dtype)
        _assert_close(grad[:d, j], gw, dtype)
        _assert_close(grad[d, j], gb, dtype)
