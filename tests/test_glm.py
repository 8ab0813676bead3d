"""PoissonRegressor, GammaRegressor and TweedieRegressor on the session's LocalCluster, against
scikit-learn's estimators on the same data (numpy and Zarr paths, with sample weights) and,
with offsets (which scikit-learn does not take), against scipy's minimisation of the same
objective. Both coefficient sets are judged by one formula: scikit-learn's mean half
deviance plus ``alpha / 2 * ||coef||^2``."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.optimize
import sklearn.linear_model as sk
from sklearn.base import clone
from sklearn.metrics import d2_tweedie_score, mean_tweedie_deviance
from sklearn.utils.estimator_checks import parametrize_with_checks

import daskgd
from daskgd import GammaRegressor, PoissonRegressor, TweedieRegressor, write_zarr
from daskgd.errors import DataValidationError
from daskgd.sklearn.families import family_loss, solver_optimizer, unit_deviance
from daskgd.sklearn.params import resolve_optimizer

ALPHA = 0.01
TIGHT = {"tol": 1e-10, "max_iter": 500, "verbose": 0}
#: (daskgd estimator, its parameters, scikit-learn's, the Tweedie power)
FAMILIES = {
    "poisson": (PoissonRegressor, {}, sk.PoissonRegressor, 1.0),
    "gamma": (GammaRegressor, {}, sk.GammaRegressor, 2.0),
    "tweedie": (TweedieRegressor, {"power": 1.5}, sk.TweedieRegressor, 1.5),
}


def _data(family, n=1500, d=5, seed=0, offset=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.array([1.0, 0.5, 2.0, 1.0, 0.3])[:d]
    off = rng.uniform(-1.0, 1.0, n) if offset else np.zeros(n)
    mu = np.exp(X @ np.linspace(-0.3, 0.3, d) + 0.4 + off)
    if family == "poisson":
        y = rng.poisson(mu).astype(float)
    elif family == "gamma":
        y = rng.gamma(2.0, mu / 2.0)
    else:  # compound Poisson-Gamma: zeros and positive amounts
        y = rng.poisson(mu) * rng.gamma(2.0, 0.5, n)
    w = rng.uniform(0.2, 3.0, n)
    return X, y, w, off


def _objective(X, y, coef, b, power, sw=None, off=None):
    """scikit-learn's objective: mean half deviance + alpha/2 ||coef||^2."""
    eta = X @ coef + b + (0.0 if off is None else off)
    mu = eta if power == 0 else np.exp(eta)
    dev = mean_tweedie_deviance(y, mu, sample_weight=sw, power=power)
    return 0.5 * dev + ALPHA / 2 * coef @ coef


def _oracle(X, y, power, sw, off):
    """The optimum by scipy: the same objective, its exact gradient, L-BFGS-B to 1e-13."""
    s = np.ones(len(y)) if sw is None else sw
    A = np.column_stack([X, np.ones(len(y))])

    def f(theta):
        mu = np.exp(A @ theta + off)
        # the half deviance's derivative in eta: mu^(1-p) (mu - y)
        r = mu ** (1.0 - power) * (mu - y)
        value = _objective(X, y, theta[:-1], theta[-1], power, sw, off)
        grad = A.T @ (s * r) / s.sum()
        grad[:-1] += ALPHA * theta[:-1]
        return value, grad

    start = np.zeros(A.shape[1])
    start[-1] = np.log(np.average(y, weights=s) / np.average(np.exp(off), weights=s))
    options = {"gtol": 1e-13, "ftol": 1e-15, "maxiter": 5000}
    res = scipy.optimize.minimize(f, start, jac=True, method="L-BFGS-B", options=options)
    return res.x[:-1], res.x[-1]


@parametrize_with_checks(
    [
        PoissonRegressor(verbose=0),
        GammaRegressor(verbose=0),
        TweedieRegressor(power=1.5, verbose=0),
        TweedieRegressor(verbose=0),
    ]
)
def test_sklearn_compatible(client, estimator, check):
    check(estimator)


@pytest.mark.parametrize("source", ["numpy", "numpy-weighted", "zarr-weighted"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_agrees_with_scikit_learn(tmp_path, client, family, source):
    Est, params, Sk, power = FAMILIES[family]
    X, y, w, _ = _data(family)
    sw = None if source == "numpy" else w
    ref = Sk(alpha=ALPHA, solver="newton-cholesky", tol=1e-12, max_iter=1000, **params)
    ref.fit(X, y, sample_weight=sw)
    est = Est(alpha=ALPHA, **params, **TIGHT)
    if source == "zarr-weighted":
        path = str(tmp_path / "g.zarr")
        write_zarr(path, X, y, sw, chunk_rows=400)
        est.fit(path)
    else:
        est.fit(X, y, sample_weight=sw)
    assert est.converged_
    ours = _objective(X, y, est.coef_, est.intercept_[0], power, sw)
    theirs = _objective(X, y, ref.coef_, ref.intercept_, power, sw)
    assert abs(ours - theirs) <= 1e-6 * abs(theirs), (ours, theirs)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0, atol=1e-5)
    np.testing.assert_allclose(est.intercept_[0], ref.intercept_, rtol=0, atol=1e-5)
    np.testing.assert_allclose(est.predict(X), ref.predict(X), rtol=1e-5)
    assert est.score(X, y, sw) == pytest.approx(ref.score(X, y, sw), rel=1e-6)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_offsets_against_scipy(tmp_path, client, family):
    Est, params, _, power = FAMILIES[family]
    X, y, w, off = _data(family, offset=True, seed=1)
    coef, b = _oracle(X, y, power, w, off)
    best = _objective(X, y, coef, b, power, w, off)
    path = str(tmp_path / "o.zarr")
    write_zarr(path, X, y, w, offset=off, chunk_rows=400)
    Xd, yd, wd, od = (da.from_array(a, chunks=500) for a in (X, y, w, off))
    for data in ((X, y), path, (Xd.rechunk((500, -1)), yd)):
        est = Est(alpha=ALPHA, **params, **TIGHT)
        if isinstance(data, str):
            est.fit(data)  # the stored offsets and weights
        elif isinstance(data[0], da.Array):
            est.fit(*data, sample_weight=wd, offset=od)
        else:
            est.fit(*data, sample_weight=w, offset=off)
        got = _objective(X, y, est.coef_, est.intercept_[0], power, w, off)
        assert abs(got - best) <= 1e-6 * abs(best), data if isinstance(data, str) else "numpy"
        np.testing.assert_allclose(est.coef_, coef, rtol=0, atol=1e-5)
        np.testing.assert_allclose(est.intercept_[0], b, rtol=0, atol=1e-5)
    mu = np.exp(X @ est.coef_ + est.intercept_[0] + off)
    np.testing.assert_allclose(est.predict(X, offset=off), mu, rtol=1e-12)
    np.testing.assert_allclose(est.predict(path).compute(), mu, rtol=1e-12)  # stored offsets
    lazy = est.predict(da.from_array(X, chunks=(500, 5)), offset=da.from_array(off, chunks=300))
    np.testing.assert_allclose(lazy.compute(), mu, rtol=1e-12)
    # an offset ignored is a different model: the fit without one is not this optimum
    plain = Est(alpha=ALPHA, **params, **TIGHT).fit(X, y, sample_weight=w)
    assert _objective(X, y, plain.coef_, plain.intercept_[0], power, w, off) > best * (1 + 1e-3)


def test_the_start_intercept_is_the_same_from_every_input(tmp_path, client):
    """``log(sum s y / sum s exp(o))``: summed on the workers from a stored dataset's files
    (raw or compressed, one task per worker), through dask for other lazy input, in numpy."""
    from daskgd.data import Dataset, open_zarr
    from daskgd.sklearn.glm_start import log_mean_intercept

    X, y, w, off = _data("poisson", n=1000, offset=True, seed=2)
    want = np.log((w @ y) / (w @ np.exp(off)))
    for name, codec in (("raw", {"compressor": None}), ("zstd", {})):
        path = str(tmp_path / f"{name}.zarr")
        write_zarr(path, X, y, w, offset=off, chunk_rows=130, **codec)
        assert log_mean_intercept(open_zarr(path), client) == pytest.approx(want, rel=1e-13)
    lazy = Dataset(*(da.from_array(a, chunks=250) for a in (X, y, w)),
                   offset=da.from_array(off, chunks=250))  # fmt: skip
    assert log_mean_intercept(lazy, client) == pytest.approx(want, rel=1e-13)
    assert log_mean_intercept((X, y, w, off), client) == pytest.approx(want, rel=1e-13)
    assert log_mean_intercept((X, 0 * y), client) is None  # all zero: the tasks refuse it
    plain = str(tmp_path / "plain.zarr")  # neither weights nor offsets: the mean target
    write_zarr(plain, X, y, chunk_rows=130)
    got = log_mean_intercept(open_zarr(plain), client)
    assert got == pytest.approx(np.log(y.mean()), rel=1e-13)


@pytest.mark.parametrize(("family", "scale"), [("poisson", 80.0), ("gamma", 1e-3)])
def test_losses_below_zero_train(client, family, scale):
    """The engine's losses drop the deviance's terms in y alone, so they go below zero (large
    counts; small amounts): the fit still reaches scikit-learn's optimum."""
    Est, params, Sk, power = FAMILIES[family]
    rng = np.random.default_rng(3)
    X = rng.standard_normal((800, 3))
    mu = scale * np.exp(X @ [0.2, -0.1, 0.3])
    y = rng.poisson(mu).astype(float) if family == "poisson" else rng.gamma(2.0, mu / 2.0)
    est = Est(alpha=ALPHA, **params, **TIGHT).fit(X, y)
    assert est.history_["loss"][-1] < 0
    ref = Sk(alpha=ALPHA, solver="newton-cholesky", tol=1e-12, **params).fit(X, y)
    ours = _objective(X, y, est.coef_, est.intercept_[0], power)
    theirs = _objective(X, y, ref.coef_, ref.intercept_, power)
    assert abs(ours - theirs) <= 1e-6 * abs(theirs)


def test_tweedie_powers_map_to_their_families(client):
    X, y, _, _ = _data("poisson")
    ls = TweedieRegressor(power=0.0, alpha=ALPHA, **TIGHT).fit(X, y)
    ref = sk.TweedieRegressor(power=0.0, alpha=ALPHA, tol=1e-12, solver="newton-cholesky")
    ref.fit(X, y)
    np.testing.assert_allclose(ls.coef_, ref.coef_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ls.predict(X), X @ ls.coef_ + ls.intercept_[0], rtol=1e-12)
    assert ls.score(X, y) == pytest.approx(ref.score(X, y), rel=1e-8)
    one = TweedieRegressor(power=1.0, alpha=ALPHA, **TIGHT).fit(X, y)
    pois = PoissonRegressor(alpha=ALPHA, **TIGHT).fit(X, y)
    np.testing.assert_allclose(one.coef_, pois.coef_, rtol=0, atol=1e-7)
    assert family_loss(0.0) == ("squared_error", "identity")
    assert family_loss(1.0) == ("poisson", "log") and family_loss(2.0) == ("gamma", "log")
    assert family_loss(3.0) == ("tweedie", "log")


def test_lazy_score_is_the_d2_of_numpy(client):
    X, y, w, _ = _data("tweedie")
    est = TweedieRegressor(power=1.5, alpha=ALPHA, **TIGHT).fit(X, y, sample_weight=w)
    expected = d2_tweedie_score(y, est.predict(X), sample_weight=w, power=1.5)
    assert est.score(X, y, w) == pytest.approx(expected, rel=1e-12)
    Xd, yd, wd = (da.from_array(a, chunks=400) for a in (X, y, w))
    assert float(est.score(Xd, yd, wd).compute()) == pytest.approx(expected, rel=1e-9)
    for p in (0.0, 1.0, 2.0, 1.5, 3.0):
        mu = np.exp(X[:, 0] * 0.1)
        ypos = y + 0.5
        got = unit_deviance(ypos, mu, p)
        want = mean_tweedie_deviance(ypos, mu, power=p) * len(ypos)
        assert got.sum() == pytest.approx(want, rel=1e-10), p


@pytest.mark.parametrize(
    ("est", "y_bad", "match"),
    [
        (PoissonRegressor(), -1.0, r"non-negative targets \(y >= 0\); y\[7\] = -1.0"),
        (TweedieRegressor(power=1.5), -0.5, "non-negative targets"),
        (GammaRegressor(), 0.0, r"positive targets \(y > 0\); y\[7\] = 0.0"),
        (TweedieRegressor(power=3.0), 0.0, "positive targets"),
    ],
)
def test_targets_outside_the_family_are_refused(tmp_path, client, est, y_bad, match):
    X, y, _, _ = _data("gamma", n=400)
    y[7] = y_bad
    with pytest.raises(ValueError, match=match):
        clone(est).set_params(verbose=0).fit(X, y)
    # from a Zarr path the training tasks find them: a clear error, not a hang
    path = str(tmp_path / "bad.zarr")
    write_zarr(path, X, y, chunk_rows=100)
    with pytest.raises(DataValidationError, match=r"y \(rank \d"):
        clone(est).set_params(verbose=0).fit(path)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"power": 0.5}, r"power must be 0 or a number >= 1.*got 0.5"),
        ({"power": -1.0}, "power must be 0 or a number >= 1"),
        ({"power": 1.5, "link": "identity"}, "link='identity' takes power=0 only"),
        ({"power": 0.0, "link": "log"}, "link='log' with power=0"),
        ({"solver": "sag"}, "solver must be one of"),
        ({"alpha": -1.0}, "alpha must be a number >= 0"),
    ],
)
def test_bad_settings_are_refused_before_any_work(params, match):
    X, y, _, _ = _data("poisson", n=50)
    with pytest.raises(ValueError, match=match):
        TweedieRegressor(**params).fit(X, y)  # no cluster: refused before one is reached


def test_bad_offsets_and_zero_targets(tmp_path, client):
    X, y, _, off = _data("poisson", n=400, offset=True)
    off[5] = -np.inf  # log of a zero exposure
    with pytest.raises(ValueError, match=r"offset must hold finite values; row 5.*np.log"):
        PoissonRegressor(verbose=0).fit(X, y, offset=off)
    with pytest.raises(ValueError, match=r"offset.shape == \(399,\)"):
        PoissonRegressor(verbose=0).fit(X, y, offset=off[:-1])
    path = str(tmp_path / "inf.zarr")
    write_zarr(path, X, y, offset=off, chunk_rows=100, validate=False)
    with pytest.raises(DataValidationError, match=r"offset contains NaN or inf.*chunk 0"):
        PoissonRegressor(verbose=0).fit(path)
    good = np.zeros(400)
    with pytest.raises(DataValidationError, match="offset must be 1-D with one value per row"):
        PoissonRegressor(verbose=0).fit(da.from_array(X, chunks=(100, 5)), y, offset=good[:10])
    with pytest.raises(ValueError, match="every target is 0"):
        PoissonRegressor(verbose=0).fit(X, np.zeros(400))


def test_solvers_parameters_and_warm_start(client):
    assert solver_optimizer("newton-cholesky", 1.0) == "newton"
    assert solver_optimizer("newton", 1.0) == "newton"
    assert solver_optimizer("lbfgs", 1.0) == "lbfgs"
    auto = resolve_optimizer({"optimizer": "auto", "mode": "sync", "batch_size": None}, 1.0, 0.0)
    assert solver_optimizer("auto", 1.0) == auto
    # scikit-learn's parameters and defaults, but solver="auto" (daskgd's choice)
    ours = ("client", "checkpoint", "checkpoint_every")
    pairs = ((PoissonRegressor, sk.PoissonRegressor), (TweedieRegressor, sk.TweedieRegressor))
    for Est, Sk in pairs:
        got = {k: v for k, v in Est().get_params().items() if k not in ours}
        assert got == {**Sk().get_params(), "solver": "auto"}
    assert clone(TweedieRegressor(power=1.5)).power == 1.5
    assert daskgd.PoissonRegressor is PoissonRegressor and daskgd.sklearn.GammaRegressor
    X, y, _, _ = _data("poisson")
    first = PoissonRegressor(alpha=ALPHA, solver="lbfgs", **TIGHT).fit(X, y)
    again = clone(first).set_params(warm_start=True)
    again.coef_, again.intercept_ = first.coef_, first.intercept_
    again.fit(X, y)
    assert again.n_iter_ <= 3 and again.converged_
    np.testing.assert_allclose(again.coef_, first.coef_, rtol=0, atol=1e-7)


def test_a_saved_glm_predicts_the_same(tmp_path, client):
    X, y, _, off = _data("tweedie", offset=True)
    est = TweedieRegressor(power=1.5, alpha=ALPHA, verbose=0).fit(X, y, offset=off)
    for name in ("m.json", "m.zarr"):
        daskgd.save_model(est, tmp_path / name)
        back = daskgd.load_model(tmp_path / name)
        assert isinstance(back, TweedieRegressor) and back.power == 1.5
        np.testing.assert_array_equal(back.predict(X, offset=off), est.predict(X, offset=off))
