"""The CSR kernels against the numpy/scipy oracle and against the dense kernels.

Random CSR blocks (empty rows, unsorted and repeated column indices, explicit zeros,
float32/float64 values, int32/int64 indices and row pointers, scipy matrices, scipy arrays
and bare CSRBlocks), every loss with targets in its domain, the multinomial loss, sample
weights and offsets, both compiled builds; the key-value form (:func:`grad_loss_keys`,
:func:`compact_columns`); the errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernels import _progress_during

from daskgd.kernels import (
    CSRBlock,
    available_builds,
    check_csr,
    compact_columns,
    grad_hess,
    grad_loss,
    grad_loss_keys,
    grad_loss_reference,
)
from daskgd.objective import LOSSES, MAX_DLOSS, get_loss

BUILDS = sorted(available_builds())
DTYPES = [np.float32, np.float64]
INDEX_DTYPES = [np.int32, np.int64]
KINDS = ["csr_matrix", "csr_array", "block"]
BINARY = [name for name, loss in LOSSES.items() if loss.classification]
#: (loss, Tweedie power): every loss, the Tweedie family at its special powers, and the
#: multinomial (softmax) log loss
CASES = [(name, 1.5) for name in sorted(LOSSES) if name != "tweedie"]
CASES += [("tweedie", r) for r in (1.0, 1.5, 2.0, 3.0)] + [("multinomial", 1.5)]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def _csr_arrays(rng, n, d, dtype, index_dtype, pointer_dtype, *, density=0.3, sort=False,
                repeat=False, empty=0.2):  # fmt: skip
    """data, indices, indptr of a random block: about ``density`` of each row stored,
    a share ``empty`` of the rows empty, columns in random order unless ``sort``, drawn with
    replacement (so repeated within a row) if ``repeat``, a tenth of the values explicit zeros."""
    counts = rng.binomial(d, density, size=n)
    counts[rng.random(n) < empty] = 0
    rows = []
    for c in counts:
        cols = rng.integers(0, d, size=c) if repeat else rng.permutation(d)[:c]
        rows.append(np.sort(cols) if sort else cols)
    indices = np.concatenate([*rows, np.zeros(0, dtype=np.int64)]).astype(index_dtype)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(pointer_dtype)
    data = rng.normal(size=indices.size)
    data[rng.random(indices.size) < 0.1] = 0.0
    return data.astype(dtype), indices, indptr


def _as_kind(kind: str, data, indices, indptr, shape):
    """The block as ``kind``, holding exactly these arrays (scipy's constructor may change
    the index dtypes: they are set back so that each dtype reaches the kernel)."""
    if kind == "block":
        return CSRBlock(data, indices, indptr, shape)
    X = getattr(sp, kind)((data, indices, indptr), shape=shape)
    X.data, X.indices, X.indptr = data, indices, indptr
    return X


def _oracle(data, indices, indptr, shape):
    """The block as a float64 scipy array built from the same entries, for the reference."""
    return sp.csr_array((data.astype(np.float64), indices.astype(np.int64),
                         indptr.astype(np.int64)), shape=shape)  # fmt: skip


def _targets(rng, loss: str, power: float, p: np.ndarray, k: int) -> np.ndarray:
    n = p.shape[0]
    if loss == "multinomial":
        return rng.integers(0, k, size=n).astype(np.float64)
    if loss in BINARY:
        return rng.choice([-1.0, 1.0], size=n)
    mu = np.exp(np.clip(p, -20, 20))
    if loss == "poisson" or (loss == "tweedie" and power == 1.0):
        return rng.poisson(mu).astype(np.float64)
    if loss == "gamma" or (loss == "tweedie" and power >= 2.0):
        return rng.gamma(2.0, mu / 2.0)
    if loss == "tweedie":  # compound Poisson-Gamma: zeros and positive amounts
        return np.where(rng.random(n) < 0.3, 0.0, rng.gamma(2.0, mu / 2.0))
    return p + rng.normal(size=n)


def _problem(seed, n, d, loss, power, dtype, *, scale=1.0, weighted=True, offset=True,
             k=3):  # fmt: skip
    """Weights, intercept, targets, sample weights and offsets, in ``dtype`` (the oracle
    then sees exactly the values the kernel sees)."""
    rng = np.random.default_rng(seed)
    multi = loss == "multinomial"
    w = rng.normal(scale=scale / np.sqrt(d), size=(d, k) if multi else d)
    b = rng.normal(size=k) if multi else float(rng.normal())
    off = rng.normal(scale=0.5, size=n) if offset and not multi else None
    # the targets follow the margins of a denser draw of the same scale: in the domain
    # either way, and near the model for the log-link families
    p = rng.normal(scale=scale, size=n) + (0.0 if off is None else off)
    y = _targets(rng, loss, power, p, k)
    sw = rng.uniform(0.0, 2.0, size=n) if weighted else None
    w, y, sw, off = (None if a is None else np.asarray(a, dtype=dtype) for a in (w, y, sw, off))
    return w, b, y, sw, off


def _assert_matches(got, want, Xo, w, b, y, sw, off, loss, power, dtype, epsilon=0.1):
    """``got`` equals ``want`` up to rounding: each output within rtol of the sum of its
    terms' magnitudes, plus the margins' rounding carried by the second derivative."""
    rtol, tiny = RTOL[dtype], float(np.finfo(dtype).tiny)
    A = abs(Xo)
    n = Xo.shape[0]
    s = np.ones(n) if sw is None else sw.astype(np.float64)
    w64 = w.astype(np.float64)
    margin = A @ np.abs(w64) + np.abs(b) + (0.0 if off is None else np.abs(off))
    P = Xo @ w64 + b + (0.0 if off is None else off.astype(np.float64))
    if loss == "multinomial":
        rows, dl = get_loss("log_loss").reference_multinomial(P, y.astype(np.float64))
        margin = margin.max(axis=1, initial=0.0)
        per_row = s[:, None] * (np.abs(dl) + margin[:, None])  # softmax curvature <= 1
        rows_err = (s * np.abs(dl).sum(axis=1)) @ margin
    else:
        fam = get_loss(loss)
        rows, dl = fam.reference(P, y.astype(np.float64), epsilon, power)
        dl = np.clip(dl, -MAX_DLOSS, MAX_DLOSS)
        h = np.abs(fam.reference_hessian(P, y.astype(np.float64), epsilon, power))
        per_row = s * (np.abs(dl) + h * margin)
        rows_err = (s * np.abs(dl)) @ margin
    assert np.isfinite(got[0])
    assert abs(got[0] - want[0]) <= rtol * (s @ np.abs(rows) + rows_err) + tiny
    bound = rtol * np.asarray(A.T @ per_row) + tiny
    assert np.all(np.abs(np.asarray(got[1], dtype=np.float64) - want[1]) <= bound)
    assert np.all(np.abs(np.asarray(got[2], dtype=np.float64) - want[2])
                  <= rtol * per_row.sum(axis=0) + tiny)  # fmt: skip


@st.composite
def csr_cases(draw):
    loss, power = draw(st.sampled_from(CASES))
    log_link = loss in ("poisson", "gamma", "tweedie")
    return {
        "loss": loss,
        "power": power,
        "dtype": draw(st.sampled_from(DTYPES)),
        "index_dtype": draw(st.sampled_from(INDEX_DTYPES)),
        "pointer_dtype": draw(st.sampled_from(INDEX_DTYPES)),
        "kind": draw(st.sampled_from(KINDS)),
        "build": draw(st.sampled_from(BUILDS)),
        "n": draw(st.integers(0, 40)),
        "d": draw(st.sampled_from([1, 2, 3, 8, 17, 64, 300])),
        "density": draw(st.sampled_from([0.02, 0.1, 0.5, 1.0])),
        "sort": draw(st.booleans()),
        "repeat": draw(st.booleans()),
        "empty": draw(st.sampled_from([0.0, 0.3, 1.0])),
        "scale": draw(st.sampled_from([0.1, 1.0] if log_link else [1e-3, 1.0, 30.0])),
        "weighted": draw(st.booleans()),
        "offset": draw(st.booleans()),
        "epsilon": draw(st.sampled_from([0.1, 2.0])),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@settings(max_examples=400, deadline=None)
@given(csr_cases())
def test_hypothesis_csr_matches_reference_and_dense(case):
    loss, power, dtype, n, d = (case[k] for k in ("loss", "power", "dtype", "n", "d"))
    rng = np.random.default_rng(case["seed"])
    arrays = _csr_arrays(rng, n, d, dtype, case["index_dtype"], case["pointer_dtype"],
                         density=case["density"], sort=case["sort"], repeat=case["repeat"],
                         empty=case["empty"])  # fmt: skip
    X = _as_kind(case["kind"], *arrays, (n, d))
    w, b, y, sw, off = _problem(case["seed"] + 1, n, d, loss, power, dtype, scale=case["scale"],
                                weighted=case["weighted"], offset=case["offset"])  # fmt: skip
    kw = dict(loss="log_loss" if loss == "multinomial" else loss, sample_weight=sw,
              offset=off, power=power, epsilon=case["epsilon"])  # fmt: skip
    got = grad_loss(X, y, w, b, **kw, _build=case["build"])
    Xo = _oracle(*arrays, (n, d))
    want = grad_loss_reference(Xo, y, w, b, **kw)
    args = (Xo, w, b, y, sw, off, loss, power, dtype, case["epsilon"])
    _assert_matches(got, want, *args)
    # the dense kernel on the same block: the same to rounding (each is within the bound
    # of the oracle, so they are within twice it of each other)
    dense = grad_loss(Xo.toarray().astype(dtype), y, w, b, **kw, _build=case["build"])
    _assert_matches(got, dense, *args)
    assert got[1].dtype == dtype


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("loss", "power"), CASES, ids=[f"{a}-{r}" for a, r in CASES])
def test_every_loss_on_a_larger_block(build, dtype, loss, power):
    """Every loss, both precisions and builds, on a block of 517 rows (unsorted, repeated
    and stored-zero entries, empty rows), weighted and with offsets."""
    rng = np.random.default_rng(abs(hash((loss, power))) % 2**32)
    n, d = 517, 41
    arrays = _csr_arrays(rng, n, d, dtype, np.int32, np.int64, density=0.2, repeat=True)
    w, b, y, sw, off = _problem(5, n, d, loss, power, dtype)
    kw = dict(loss="log_loss" if loss == "multinomial" else loss, sample_weight=sw,
              offset=off, power=power)  # fmt: skip
    got = grad_loss(sp.csr_array((arrays), shape=(n, d)), y, w, b, **kw, _build=build)
    Xo = _oracle(*arrays, (n, d))
    want = grad_loss_reference(Xo, y, w, b, **kw)
    _assert_matches(got, want, Xo, w, b, y, sw, off, loss, power, dtype)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_rows_and_empty_block(build, dtype):
    """An empty row's margin is the intercept (plus offset); a block without entries has
    a zero gradient in w, and one without rows a zero loss."""
    n, d = 4, 3
    X = sp.csr_array((n, d), dtype=dtype)
    y = np.array([1.0, 2.0, 3.0, 4.0], dtype=dtype)
    loss, g, gb = grad_loss(X, y, np.ones(d, dtype=dtype), 0.5, offset=np.full(n, 0.5, dtype),
                            _build=build)  # fmt: skip
    np.testing.assert_array_equal(g, np.zeros(d))
    assert gb == pytest.approx(sum(1.0 - v for v in y))
    assert loss == pytest.approx(sum(0.5 * (1.0 - v) ** 2 for v in y))
    loss, g, gb = grad_loss(sp.csr_array((0, d), dtype=dtype), np.empty(0), np.ones(d))
    assert (loss, gb) == (0.0, 0.0) and not g.any()


def test_repeated_columns_add_as_scipy_does():
    """Entries (0, 1) = 2 and (0, 1) = 3 stored apart act as one entry 5."""
    X = sp.csr_matrix((np.array([2.0, 3.0, 1.0]), np.array([1, 1, 0]), np.array([0, 3])),
                      shape=(1, 2))  # fmt: skip
    canonical = sp.csr_matrix(np.array([[1.0, 5.0]]))
    got, want = grad_loss(X, [1.0], [0.5, 0.25]), grad_loss(canonical, [1.0], [0.5, 0.25])
    assert got[0] == want[0] and got[2] == want[2]
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("kind", KINDS)
def test_out_buffer_is_filled_and_reused(kind):
    rng = np.random.default_rng(1)
    arrays = _csr_arrays(rng, 30, 6, np.float32, np.int64, np.int32)
    X = _as_kind(kind, *arrays, (30, 6))
    out = np.full(7, np.nan, dtype=np.float32)  # the kernel clears it
    y, w = rng.normal(size=30), rng.normal(size=6)
    _, g, gb = grad_loss(X, y, w, out=out)
    assert np.shares_memory(g, out) and out[6] == np.float32(gb)
    np.testing.assert_array_equal(g, grad_loss(X, y, w)[1])
    with pytest.raises(ValueError, match="out must be"):
        grad_loss(X, y, w, out=np.empty(7))  # float64 for float32 data


def test_indptr_of_another_integer_type_is_converted():
    rng = np.random.default_rng(2)
    data, indices, indptr = _csr_arrays(rng, 20, 5, np.float64, np.int32, np.int64)
    block = check_csr(CSRBlock(data, indices, indptr.astype(np.uint16), (20, 5)))
    assert block.data is data and block.indices is indices and block.indptr.dtype == np.int64
    y, w = rng.normal(size=20), rng.normal(size=5)
    got = grad_loss(CSRBlock(data, indices, indptr.astype(np.uint16), (20, 5)), y, w)
    want = grad_loss(CSRBlock(data, indices, indptr, (20, 5)), y, w)
    np.testing.assert_array_equal(got[1], want[1])


def _batch(seed=3, n=40, d=50, dtype=np.float64, kind="csr_array"):
    rng = np.random.default_rng(seed)
    arrays = _csr_arrays(rng, n, d, dtype, np.int32, np.int32, density=0.05, repeat=True)
    return _as_kind(kind, *arrays, (n, d)), rng


@pytest.mark.parametrize("kind", KINDS)
def test_compact_columns(kind):
    X, _ = _batch(kind=kind)
    keys, X_local = compact_columns(X)
    full = _oracle(X.data, X.indices, X.indptr, X.shape).toarray()
    assert keys.dtype == np.int64 and np.all(np.diff(keys) > 0)
    np.testing.assert_array_equal(keys, np.unique(X.indices))
    assert type(X_local) is type(X) and X_local.shape == (X.shape[0], keys.size)
    assert np.shares_memory(X_local.data, X.data)
    local = _oracle(X_local.data, X_local.indices, X_local.indptr, X_local.shape).toarray()
    np.testing.assert_array_equal(local, full[:, keys])
    assert not full[:, np.setdiff1d(np.arange(X.shape[1]), keys)].any()


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loss", ["squared_error", "log_loss", "poisson", "multinomial"])
def test_keys_form_is_the_gradient_at_the_keys(build, dtype, kind, loss):
    """grad_loss_keys from the weights at the keys: the full CSR gradient at the keys
    (bitwise: the same additions in the same order), zero elsewhere, and the dense gradient
    at the keys to rounding; with the exact keys and with a superset of them."""
    X, rng = _batch(dtype=dtype, kind=kind)
    n, d = X.shape
    w, b, y, sw, off = _problem(7, n, d, loss, 1.5, dtype, weighted=True, offset=True)
    kw = dict(loss="log_loss" if loss == "multinomial" else loss, sample_weight=sw,
              offset=off, _build=build)  # fmt: skip
    full = grad_loss(X, y, w, b, **kw)
    dense = grad_loss(_oracle(X.data, X.indices, X.indptr, X.shape).toarray().astype(dtype),
                      y, w, b, **kw)  # fmt: skip
    touched = compact_columns(X)[0]
    assert not np.delete(full[1], touched, axis=0).any()
    extra = np.union1d(touched, rng.choice(d, size=10, replace=False))
    for keys in (touched, extra):
        loss_sum, got_keys, g, gb = grad_loss_keys(X, y, w[keys], keys, b, **kw)
        np.testing.assert_array_equal(got_keys, touched)
        assert got_keys.dtype == np.int64 and g.dtype == dtype
        assert loss_sum == full[0]
        np.testing.assert_array_equal(g, full[1][touched])
        np.testing.assert_array_equal(gb, full[2])
        _assert_close(g, dense[1][touched], dtype)


def _assert_close(got, want, dtype):
    rtol = RTOL[dtype]
    scale = float(np.max(np.abs(want), initial=0.0))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def test_keys_of_a_batch_without_entries():
    X = sp.csr_array((3, 5))
    loss, keys, g, gb = grad_loss_keys(X, [1.0, 2.0, 3.0], np.zeros(2), [1, 4], 0.0)
    assert keys.size == 0 and g.shape == (0,) and gb == -6.0 and loss == 7.0


@pytest.mark.parametrize("fmt", ["csc", "coo", "bsr", "lil", "dok", "dia"])
def test_other_sparse_formats_say_to_convert(fmt):
    X = sp.random(6, 4, density=0.5, format=fmt, random_state=0)
    with pytest.raises(TypeError, match=r"'" + fmt + r"' format.*X\.tocsr\(\)"):
        grad_loss(X, np.ones(6), np.ones(4))


def test_dense_only_kernels_name_the_sparse_form():
    X = sp.random(6, 4, density=0.5, format="csr", random_state=0)
    with pytest.raises(TypeError, match="only grad_loss has a sparse form"):
        grad_hess(X, np.ones(6), np.ones(4))


def _bad(**change):
    """A 3 x 4 block's arrays with some of them replaced."""
    parts = {"data": np.array([1.0, 2.0, 3.0, 4.0]), "indices": np.array([3, 0, 1, 2]),
             "indptr": np.array([0, 2, 2, 4]), "shape": (3, 4)}  # fmt: skip
    parts.update(change)
    return CSRBlock(**parts)


@pytest.mark.parametrize(
    ("X", "error", "match"),
    [
        (sp.csr_array(np.ones((3, 4), dtype=np.int64)), TypeError, "float32 or float64"),
        (_bad(data=np.ones(4, dtype=np.float16)), TypeError, r"X.astype\(numpy.float64\)"),
        (_bad(indices=np.array([3, 0, 1, 2], dtype=np.uint32)), TypeError, "int32 or int64"),
        (_bad(data=np.ones(8)[::2]), ValueError, "X.data must be a contiguous 1-D"),
        (_bad(indices=np.array([3, 9, 0, 9, 1, 9, 2, 9])[::2]), ValueError, "X.indices must"),
        (_bad(indices=np.array([3, 0, 1])), ValueError, "from 0 to at most 3"),
        (_bad(indptr=np.array([0.0, 2.0, 2.0, 4.0])), TypeError, "integer array"),
        (_bad(indptr=np.array([0, 2, 4])), ValueError, "X's 3 rows need 4"),
        (_bad(indptr=np.array([1, 2, 2, 4])), ValueError, "from 0 to at most 4"),
        (_bad(indptr=np.array([0, 2, 2, 5])), ValueError, "from 0 to at most 4"),
        (_bad(indptr=np.array([0, 3, 1, 4])), ValueError, "decreases at row 1"),
        (_bad(indices=np.array([3, 0, 1, 4])), ValueError, "column index 4 in row 2"),
        (_bad(indices=np.array([3, -1, 1, 2])), ValueError, "column index -1 in row 0"),
        (_bad(shape=(3, 4, 1)), ValueError, "must be 2-D"),
        (sp.csr_array(np.ones(3)), ValueError, "must be 2-D"),
        ([[1.0, 2.0]] * 3, TypeError, "numpy.ndarray or a scipy.sparse CSR"),
    ],
)
def test_bad_blocks(X, error, match):
    n, d = (3, 4) if isinstance(X, CSRBlock) or np.ndim(X) != 2 else np.shape(X)
    with pytest.raises(error, match=match):
        grad_loss(X, np.ones(n), np.ones(d))


def test_out_of_range_indices_pass_unchecked_when_told():
    """check_input=False trusts the structure (blocks validated once): the index check is
    what check_input adds; an in-range block gives the same result either way."""
    X, rng = _batch()
    y, w = rng.normal(size=X.shape[0]), rng.normal(size=X.shape[1])
    a, b = grad_loss(X, y, w, check_input=False), grad_loss(X, y, w)
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="column index 4 in row 2"):
        compact_columns(_bad(indices=np.array([3, 0, 1, 4])))


@pytest.mark.parametrize(
    ("keys", "w_keys", "error", "match"),
    [
        ([2, 1, 0, 3], np.ones(4), ValueError, "sorted and unique"),
        ([0, 1, 1, 3], np.ones(4), ValueError, "sorted and unique"),
        ([0, 1, 2, 4], np.ones(4), ValueError, r"lie in \[0, 4\)"),
        ([-1, 0, 1, 2], np.ones(4), ValueError, r"lie in \[0, 4\)"),
        ([0.0, 1.0, 2.0, 3.0], np.ones(4), TypeError, "1-D integer array"),
        ([0, 1, 2, 3], np.ones(3), ValueError, r"w_keys must have shape \(4,\)"),
        ([0, 1, 3], np.ones(3), ValueError, "column 2 in row 2, which is not among keys"),
        ([], np.ones(0), ValueError, "column 0 in row 0, which is not among keys"),
    ],
)
def test_bad_keys(keys, w_keys, error, match):
    with pytest.raises(error, match=match):
        grad_loss_keys(_bad(), np.ones(3), w_keys, keys)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("kind", ["linear", "multinomial"])
def test_csr_kernels_release_the_gil(build, kind):
    """Another Python thread makes progress while a CSR kernel runs on a large block (see
    tests/test_kernels.py for the method and its control)."""
    rng = np.random.default_rng(4)
    n, d, k, per_row = (100_000, 1_000, 5, 20) if kind == "multinomial" else (500_000, 1_000, 1, 20)
    data = rng.normal(size=n * per_row)
    indices = rng.integers(0, d, size=n * per_row).astype(np.int32)
    indptr = np.arange(n + 1, dtype=np.int64) * per_row
    kernels = available_builds()[build]
    if kind == "linear":
        y, w, out = rng.normal(size=n), rng.normal(size=d), np.empty(d + 1)

        def kernel():
            kernels.grad_loss_csr_linear(data, indices, indptr, y, w, 0.5, None, out,
                                         LOSSES["squared_error"].code, 0.1)  # fmt: skip

    else:
        y = rng.integers(0, k, size=n).astype(np.float64)
        W, b, out = rng.normal(size=(d, k)), np.zeros(k), np.empty((d + 1, k))

        def kernel():
            kernels.grad_loss_csr_multinomial(data, indices, indptr, y, W, b, None, out)

    counts = []
    for _ in range(20):
        counts.append(_progress_during(kernel))
        if counts[-1] > 0:
            break
    assert counts[-1] > 0, counts


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index", [np.int32, np.int64])
@pytest.mark.parametrize("weighted", [False, True])
def test_column_squares_kernel_is_the_weighted_sum_of_squares(build, dtype, index, weighted):
    """``column_squares_csr`` adds ``sum_i w_i x_ij^2`` to each column (numpy oracle),
    each stored entry on its own (a repeated column adds its squares, as scipy's
    ``w @ (X o X)`` did), and leaves ``out`` alone for an empty block."""
    rng = np.random.default_rng(5)
    X = sp.random(400, 30, density=0.1, format="csr", random_state=6, dtype=np.float64)
    X = sp.csr_matrix((X.data.astype(dtype), X.indices.astype(index), X.indptr.astype(index)),
                      shape=X.shape)  # fmt: skip
    X.indices[:3] = X.indices[0]  # a repeated column within the first row adds
    sw = rng.uniform(0.5, 2.0, size=400) if weighted else None
    rows = np.repeat(np.arange(400), np.diff(X.indptr))
    want = np.zeros(30)
    np.add.at(want, X.indices, (1.0 if sw is None else sw[rows]) * X.data.astype(np.float64) ** 2)
    out = np.full(30, 1.0)
    available_builds()[build].column_squares_csr(X.data, X.indices, X.indptr, sw, out)
    np.testing.assert_allclose(out, want + 1.0, rtol=1e-12)
    empty = sp.csr_matrix((0, 30), dtype=dtype)
    out = np.zeros(30)
    available_builds()[build].column_squares_csr(
        empty.data, empty.indices.astype(index), empty.indptr.astype(index), None, out
    )
    assert not np.any(out)
