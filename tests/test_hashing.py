"""DataFrames hashed into sparse datasets (``daskgd.hash_features``, ``hash_frame``): equal to
scikit-learn's ``FeatureHasher`` on the whole pandas frame, on real workers and in real Zarr
stores, trained on, and hashed again for prediction."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from distributed import futures_of
from sklearn.feature_extraction import FeatureHasher

import daskgd
from daskgd.data import FeatureHashing, feature_hashing, hash_features, hash_frame, open_zarr
from daskgd.data.hashing import HASHING_ATTR
from daskgd.data.store import group_arrays, open_group
from daskgd.data.trust import trusted_record
from daskgd.errors import DataValidationError, InvalidSettingError

CATEGORICAL = ["city", "device", "new"]
NUMERIC = ["age", "price"]


def _frame(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Text with missing values, a category, booleans, integers and floats (zeros among them),
    a label that depends on them and positive weights."""
    rng = np.random.default_rng(seed)
    city = rng.choice(np.array(["Oslo", "Rome", "Lima", "Kyiv", "Pune", None], dtype=object), n)
    device = pd.Categorical(rng.choice(["phone", "tablet", "desktop"], n))
    device[rng.random(n) < 0.1] = np.nan
    age = rng.integers(0, 6, n)
    price = np.round(rng.standard_normal(n), 3)
    price[rng.random(n) < 0.2] = 0.0
    margin = 0.8 * price - 0.3 * age + np.where(city == "Oslo", 1.5, -0.2) + rng.logistic(size=n)
    return pd.DataFrame(
        {
            "city": pd.array(city, dtype="str"),
            "device": device,
            "new": rng.random(n) < 0.4,
            "age": age,
            "price": price,
            "label": (margin > 0).astype(np.int64),
            "w": rng.uniform(0.5, 2.0, n),
        }
    )


def _reference(
    df: pd.DataFrame,
    n_features: int,
    categorical=CATEGORICAL,
    numeric=NUMERIC,
    *,
    alternate_sign: bool = True,
    dtype=np.float32,
):
    """The oracle: FeatureHasher(input_type="dict") on the whole frame's rows as dicts."""
    records = []
    for row in df.to_dict("records"):
        rec = {}
        for c in df.columns:  # the frame's column order
            if c in categorical and not pd.isna(row[c]):
                rec[c] = str(row[c])
            elif c in numeric:
                rec[c] = float(row[c])
        records.append(rec)
    hasher = FeatureHasher(n_features, input_type="dict", alternate_sign=alternate_sign,
                           dtype=dtype)  # fmt: skip
    return sp.csr_matrix(hasher.transform(records))


def _assert_same(got, want) -> None:
    """The same CSR matrix, array for array (values bitwise)."""
    assert sp.issparse(got) and got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.data, want.data)


@pytest.mark.parametrize("n_features", [8, 2**12])
@pytest.mark.parametrize("alternate_sign", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pandas_frame_equals_feature_hasher(n_features, alternate_sign, dtype):
    # 8 features: most rows have colliding features, summed (and cancelled) as there
    df = _frame()
    ds = hash_features(df, target="label", sample_weight="w", n_features=n_features,
                       alternate_sign=alternate_sign, dtype=np.dtype(dtype).name)  # fmt: skip
    want = _reference(df, n_features, alternate_sign=alternate_sign, dtype=dtype)
    assert ds.is_sparse and ds.n_features == n_features and ds.nnz == want.nnz
    _assert_same(ds.X.compute(), want)
    np.testing.assert_array_equal(ds.y.compute(), df["label"].to_numpy())
    np.testing.assert_array_equal(ds.sample_weight.compute(), df["w"].to_numpy())
    rec = ds.attrs[HASHING_ATTR]
    assert rec["columns"] == CATEGORICAL + NUMERIC and rec["categorical"] == CATEGORICAL
    assert rec["numeric"] == NUMERIC and rec["n_features"] == n_features
    assert rec["alternate_sign"] is alternate_sign and rec["target"] == "label"


def test_dask_frame_hashed_on_the_workers_equals_feature_hasher(client):
    df = _frame(300)
    ddf = dd.from_pandas(df, npartitions=5)  # 60 rows each
    ddf = ddf.map_partitions(lambda p: p[p.index >= 60])  # partition 0 empty, sizes unknown
    ds = hash_features(ddf, target="label", sample_weight="w", n_features=64, client=client)
    kept = df.iloc[60:]
    want = _reference(kept, 64)
    assert ds.chunks == (60, 60, 60, 60)  # the empty partition left out
    assert ds.nnz == want.nnz and ds.values_checked
    assert futures_of(ds.X)  # the hashed blocks are held by the workers
    _assert_same(ds.X.compute(), want)
    np.testing.assert_array_equal(ds.y.compute(), kept["label"].to_numpy())
    np.testing.assert_array_equal(ds.sample_weight.compute(), kept["w"].to_numpy())
    again = hash_features(ddf.drop(columns=["w"]), target="label", n_features=64,
                          chunk_rows=100, client=client)  # fmt: skip
    assert again.chunks == (100, 100, 40) and again.sample_weight is None
    _assert_same(again.X.compute(), want)


def test_slices_of_a_large_frame_stack_to_its_hashing(monkeypatch):
    # a pandas frame is hashed a slice of rows at a time: 7 rows here, so 35 slices
    monkeypatch.setattr(feature_hashing, "_SLICE_ROWS", 7)
    df = _frame(241)
    df.loc[[0, 13, 240], ["city", "device", "age", "price"]] = [None, np.nan, 0, 0.0]
    df["new"] = df["new"].astype(object)
    df.loc[[0, 13, 240], "new"] = None  # rows 0, 13 and 240 have no feature at all
    X = hash_features(df, target="label", sample_weight="w", n_features=2**12).X.compute()
    _assert_same(X, _reference(df, 2**12))
    assert X.getnnz(axis=1)[[0, 13, 240]].tolist() == [0, 0, 0]


def test_roles_by_dtype_and_overridden():
    df = _frame(120)
    # the integers as categories ("age=3"), the booleans as numbers (0 or 1)
    ds = hash_features(df, target="label", sample_weight="w", n_features=2**10,
                       categorical=["age"], numeric=["new"])  # fmt: skip
    cats, nums = ["city", "device", "age"], ["new", "price"]
    _assert_same(ds.X.compute(), _reference(df, 2**10, cats, nums))
    rec = ds.attrs[HASHING_ATTR]
    assert rec["categorical"] == cats and rec["numeric"] == nums
    # the weight column is a feature when not named as the weights
    ds = hash_features(df.drop(columns=["w"]).assign(w=df["w"]), target="label", n_features=16)
    assert ds.attrs[HASHING_ATTR]["numeric"] == [*NUMERIC, "w"]


def test_missing_categories_give_no_feature_and_missing_numbers_are_refused(client):
    df = pd.DataFrame({"c": ["a", None, "b", None], "x": [1.0, 0.0, 2.0, 0.0], "y": [0, 1, 0, 1]})
    X = hash_features(df, target="y", n_features=2**10).X.compute()
    assert np.diff(X.indptr).tolist() == [2, 0, 2, 0]  # no feature for None, nor for 0.0
    bad = df.assign(x=[1.0, 2.0, np.nan, 3.0], r=["r0", "r1", "r2", "r3"]).set_index("r")
    with pytest.raises(DataValidationError, match=r"'x' has a missing value \(NaN\) at row 2 "
                       r"\(index label 'r2'\).*fillna"):  # fmt: skip
        hash_features(bad, target="y")
    with pytest.raises(DataValidationError, match=r"'x' .*row 0 of partition 1"):
        hash_features(dd.from_pandas(bad, npartitions=2), target="y", client=client)
    nullable = df.assign(x=pd.array([1, None, 2, 3], dtype="Int64"))
    with pytest.raises(DataValidationError, match=r"'x' has a missing value \(NaN\) at row 1"):
        hash_features(nullable, target="y")
    with pytest.raises(DataValidationError, match=r"'x' has an infinite value \(inf\) at row 1"):
        hash_features(df.assign(x=[1.0, np.inf, 0.0, 0.0]), target="y")
    big = df.assign(x=[1.0, 1e39, 0.0, 0.0])
    with pytest.raises(DataValidationError, match=r"beyond float32's range.*float64"):
        hash_features(big, target="y")
    X = hash_features(big, target="y", dtype="float64", n_features=2**10).X.compute()
    assert np.abs(X.data).max() == 1e39
    # a missing number in a column declared categorical is no feature
    X = hash_features(bad, target="y", categorical=["x"], n_features=2**10).X.compute()
    assert np.diff(X.indptr).tolist() == [2, 1, 1, 1]


def test_zarr_round_trip(client, tmp_path):
    df = _frame(260)
    ddf = dd.from_pandas(df, npartitions=3)
    path = tmp_path / "hashed.zarr"
    ds = hash_features(ddf, path, target="label", sample_weight="w", n_features=128,
                       chunk_rows=50, task="classification", client=client)  # fmt: skip
    want = _reference(df, 128)
    assert ds.path == str(path) and ds.is_sparse and ds.chunks == (50,) * 5 + (10,)
    assert ds.values_checked and ds.nnz == want.nnz
    back = open_zarr(path)
    _assert_same(back.X.compute(), want)
    np.testing.assert_array_equal(back.y.compute(), df["label"].to_numpy())
    np.testing.assert_array_equal(back.sample_weight.compute(), df["w"].to_numpy())
    assert back.attrs["task"] == "classification" and back.classes_.tolist() == [0, 1]
    assert back.attrs[HASHING_ATTR] == ds.attrs[HASHING_ATTR]
    # recording the hashing kept the record of the value check: opening reads no chunk
    g = open_group(str(path), "r", None)
    assert trusted_record(group_arrays(g, str(path)), dict(g.attrs)) is not None
    # a pandas frame, hashed in this process: the same dataset
    local = hash_features(df, tmp_path / "local.zarr", target="label", sample_weight="w",
                          n_features=128, chunk_rows=50)  # fmt: skip
    _assert_same(local.X.compute(), want)
    assert local.attrs[HASHING_ATTR] == ds.attrs[HASHING_ATTR]
    # an existing dataset is refused before any hashing (the NaN is never reached)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        hash_features(df.assign(price=np.nan), path, target="label")
    again = hash_features(df.iloc[:100], path, target="label", n_features=128, overwrite=True)
    assert open_zarr(path).n_samples == 100 and again.attrs[HASHING_ATTR]["sample_weight"] is None


def test_training_on_the_hashed_zarr_equals_training_on_feature_hasher_output(client, tmp_path):
    df = _frame(600, seed=1).drop(columns=["w"])
    path = tmp_path / "train.zarr"
    hash_features(dd.from_pandas(df, npartitions=4), path, target="label", n_features=2**9,
                  dtype="float64", client=client)  # fmt: skip
    X = _reference(df, 2**9, dtype=np.float64)
    y = df["label"].to_numpy()
    kw = dict(loss="log_loss", optimizer="lbfgs", alpha=1e-2, max_epochs=30, tol=None,
              client=client)  # fmt: skip
    got, want = daskgd.fit(str(path), **kw), daskgd.fit((X, y), **kw)
    assert got.n_iter_ == want.n_iter_
    np.testing.assert_allclose(got.coef_, want.coef_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got.intercept_, want.intercept_, rtol=1e-8)
    # the in-memory dataset (blocks held by the workers) trains the same
    held = hash_features(dd.from_pandas(df, npartitions=4), target="label", n_features=2**9,
                         dtype="float64", client=client)  # fmt: skip
    np.testing.assert_allclose(daskgd.fit(held, **kw).coef_, want.coef_, rtol=1e-8, atol=1e-12)


def test_hash_frame_for_predict_hashes_as_training_did(client, tmp_path):
    df = _frame(200)
    path = tmp_path / "h.zarr"
    ds = hash_features(df, path, target="label", sample_weight="w", n_features=2**8,
                       categorical=["age"])  # fmt: skip
    cats, nums = ["city", "device", "new", "age"], ["price"]
    # the training frame again: the dataset's own X
    _assert_same(hash_frame(df, ds), ds.X.compute())
    # new rows, columns in another order, no target nor weights
    new = _frame(90, seed=7)[["price", "new", "age", "device", "city"]]
    want = _reference(new[["city", "device", "new", "age", "price"]], 2**8, cats, nums)
    for hashing in (ds, str(path), ds.attrs, ds.attrs[HASHING_ATTR],
                    FeatureHashing.from_attrs(ds.attrs)):  # fmt: skip
        _assert_same(hash_frame(new, hashing), want)
    lazy = hash_frame(dd.from_pandas(new, npartitions=3), ds, client=client)
    assert lazy.chunks[0] == (30, 30, 30) and lazy.dtype == np.float32
    _assert_same(lazy.compute(), want)
    # a model trained on the dataset predicts the new rows as from FeatureHasher's output
    model = daskgd.LogisticRegression(client=client, tol=1e-4).fit(str(path))
    np.testing.assert_array_equal(model.predict(lazy).compute(), model.predict(want))
    with pytest.raises(DataValidationError, match=r"lacks the feature column\(s\) \['city'\]"):
        hash_frame(new.drop(columns=["city"]), ds)
    with pytest.raises(DataValidationError, match=r"not made by daskgd\.hash_features"):
        hash_frame(new, {"task": "classification"})
    with pytest.raises(TypeError, match="FeatureHashing"):
        hash_frame(new, 3)


def test_the_settings_round_trip_and_load_from_the_package():
    h = FeatureHashing(["a", "b"], {"a"}, n_features=32, alternate_sign=False, dtype="float64")
    assert FeatureHashing.from_attrs(h.to_attrs()) == h and h.numeric == ("b",)
    assert "n_features=32" in repr(h)
    with pytest.raises(DataValidationError, match="version 2"):
        FeatureHashing.from_attrs({**h.to_attrs(), "version": 2})
    assert daskgd.hash_features is hash_features and daskgd.hash_frame is hash_frame
    assert daskgd.FeatureHashing is FeatureHashing


def _df():
    return pd.DataFrame({"c": ["a", "b"], "x": [1.0, 2.0], "y": [0, 1]})


@pytest.mark.parametrize(
    "make, kwargs, error, match",
    [
        (_df, {"target": "label"}, DataValidationError, "target column 'label' is not in"),
        (_df, {"target": "y", "categorical": ["x"], "numeric": ["x"]}, InvalidSettingError,
         r"\['x'\] are in both"),
        (lambda: _df().iloc[:0], {"target": "y"}, DataValidationError, "no rows"),
        (lambda: _df().rename(columns={"x": 0}), {"target": "y"}, DataValidationError,
         "column names must be strings, found 0"),
        (_df, {"target": "y", "n_features": 0}, InvalidSettingError, r"n_features must be in"),
        (_df, {"target": "y", "n_features": -4}, InvalidSettingError, r"n_features must be in"),
        (_df, {"target": "y", "n_features": 2**31}, InvalidSettingError, "n_features must be in"),
        (_df, {"target": "y", "n_features": 8.0}, InvalidSettingError, "must be an integer"),
        (_df, {"target": "y", "categorical": ["y"]}, InvalidSettingError, "listed as a feature"),
        (_df, {"target": "y", "numeric": ["z"]}, DataValidationError, r"\['z'\] are not in"),
        (_df, {"target": "y", "categorical": "c"}, InvalidSettingError, r"pass \['c'\]"),
        (_df, {"target": "y", "sample_weight": "y"}, InvalidSettingError, "same column"),
        (_df, {"target": "y", "dtype": "int32"}, InvalidSettingError, "float32 or float64"),
        (_df, {"target": "y", "chunk_rows": 0}, ValueError, "chunk_rows must be >= 1"),
        (lambda: _df().assign(t=pd.Timestamp("2026-01-01")), {"target": "y"},
         DataValidationError, "'t' has dtype datetime64.*categorical="),
        (lambda: _df().assign(y=["no", "yes"]), {"target": "y"}, DataValidationError,
         "target column 'y' has dtype str.*cat.codes"),
        (lambda: _df()[["y"]], {"target": "y"}, DataValidationError, "no feature columns"),
        (lambda: _df()["c"], {"target": "y"}, TypeError, "to_frame"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_clearly(make, kwargs, error, match):
    with pytest.raises(error, match=match):
        hash_features(make(), **kwargs)


def test_an_empty_dask_frame_is_refused(client):
    ddf = dd.from_pandas(_df(), npartitions=2)
    with pytest.raises(DataValidationError, match="no rows"):
        hash_features(ddf[ddf.x > 5], target="y", client=client)
