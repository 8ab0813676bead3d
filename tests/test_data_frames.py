"""pandas and dask DataFrames as input: as_dataset, write_zarr and fit, on a LocalCluster."""

from __future__ import annotations

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
dd = pytest.importorskip("dask.dataframe")

import daskgd  # noqa: E402
from daskgd.data import as_dataset, open_zarr, write_zarr  # noqa: E402
from daskgd.errors import DataValidationError  # noqa: E402


def _frame(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "a": rng.standard_normal(n),
            "b": rng.integers(0, 5, n),  # integer column: a float feature
            "c": rng.standard_normal(n).astype(np.float32),
            "d": rng.random(n) < 0.5,  # boolean column
        }
    )
    y = pd.Series(X["a"] * 2.0 - X["b"] + 0.5, name="target")
    return X, y


def _as_floats(X) -> np.ndarray:
    return X.to_numpy(dtype=np.float64)


def test_pandas_frame_and_series(client):
    X, y = _frame()
    ds = as_dataset((X, y, pd.Series(np.ones(len(y)))), chunk_rows=50)
    assert ds.feature_names == ["a", "b", "c", "d"]
    assert ds.dtype == np.float64 and ds.chunks == (50, 50, 20)
    np.testing.assert_array_equal(ds.X.compute(), _as_floats(X))
    np.testing.assert_array_equal(ds.y.compute(), y.to_numpy())
    assert ds.values_checked and ds.classes_ is None


def test_all_float32_columns_stay_float32(client):
    X = pd.DataFrame({"u": np.arange(10, dtype=np.float32), "v": np.ones(10, np.float32)})
    ds = as_dataset((X, np.arange(10.0)))
    assert ds.dtype == np.float32


def test_dask_frame_with_unknown_partition_sizes(client):
    X, y = _frame(200)
    Xd = dd.from_pandas(X, npartitions=4)
    yd = dd.from_pandas(y, npartitions=4)
    keep = Xd["a"] > -10.0  # keeps every row, but the partition sizes become unknown
    Xf, yf = Xd[keep], yd[keep]
    assert any(np.isnan(s) for s in Xf.to_dask_array().chunks[0])
    ds = as_dataset((Xf, yf))
    assert ds.n_samples == 200 and ds.n_chunks == 4
    assert ds.feature_names == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(ds.X.compute(), _as_floats(X))
    np.testing.assert_array_equal(ds.y.compute(), y.to_numpy())
    # integer labels in a dask Series: class labels, found in the validation pass
    labels = dd.from_pandas(pd.Series(np.arange(200) % 3), npartitions=4)
    assert as_dataset((Xd, labels), task="classification").classes_.tolist() == [0, 1, 2]


def test_non_numeric_columns_are_named(client):
    X, y = _frame(20)
    X["city"] = ["x", "y"] * 10
    X["when"] = pd.date_range("2020-01-01", periods=20)
    with pytest.raises(DataValidationError, match=r"non-numeric column\(s\) \['city', 'when'\]"):
        as_dataset((X, y))
    with pytest.raises(DataValidationError, match=r"\['city', 'when'\]"):
        as_dataset((dd.from_pandas(X, npartitions=2), y))
    with pytest.raises(DataValidationError, match=r"y has non-numeric dtype"):
        as_dataset((X[["a"]], pd.Series(["p", "q"] * 10)))
    with pytest.raises(DataValidationError, match="y must be 1-D"):
        as_dataset((X[["a"]], X[["a", "b"]]))


def test_missing_values_in_nullable_columns_are_refused(client):
    X = pd.DataFrame({"a": pd.array([1, None, 3, 4], dtype="Int64"), "b": [1.0, 2, 3, 4]})
    with pytest.raises(DataValidationError, match=r"X contains NaN or inf .* first bad row 1"):
        as_dataset((X, np.arange(4.0)))


def test_names_only_when_all_are_strings(client):
    X = pd.DataFrame(np.ones((6, 2)))  # columns 0 and 1
    assert as_dataset((X, np.arange(6.0))).feature_names is None


def test_write_zarr_keeps_the_column_names(client, tmp_path):
    X, y = _frame()
    write_zarr(tmp_path / "p.zarr", X, y, chunk_rows=50)
    write_zarr(tmp_path / "d.zarr", dd.from_pandas(X, npartitions=3), dd.from_pandas(y, 3))
    for name in ("p", "d"):
        ds = open_zarr(tmp_path / f"{name}.zarr")
        assert ds.feature_names == ["a", "b", "c", "d"]
        assert ds.attrs["feature_names"] == ["a", "b", "c", "d"]
        np.testing.assert_array_equal(ds.X.compute(), _as_floats(X))


def test_fit_on_frames(client):
    X, y = _frame(300)
    sol = np.linalg.lstsq(np.column_stack([_as_floats(X), np.ones(300)]), y, rcond=None)[0]
    for data in ((X, y), (dd.from_pandas(X, npartitions=2), dd.from_pandas(y, npartitions=2))):
        res = daskgd.fit(data, client=client, optimizer="lbfgs", max_epochs=200)
        np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=1e-4)


def test_feature_names_must_match_the_columns():
    import dask.array as da

    from daskgd.data import Dataset

    X, y = da.ones((10, 2), chunks=5), da.ones(10, chunks=5)
    assert Dataset(X, y, feature_names=("u", "v")).feature_names == ["u", "v"]
    with pytest.raises(DataValidationError, match="feature_names has 1 names but X has 2"):
        Dataset(X, y, feature_names=["u"])
