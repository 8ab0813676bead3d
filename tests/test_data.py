"""Tests of daskgd.data and daskgd.data.synthetic on real Zarr stores and a LocalCluster."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import wait

import daskgd
from daskgd.data import (
    DENSE_FORMAT_VERSION,
    FORMAT_VERSION,
    Dataset,
    as_dataset,
    load_chunk,
    open_zarr,
    write_zarr,
)
from daskgd.data.synthetic import make_classification, make_regression
from daskgd.errors import DataValidationError, IncompleteDatasetError


def _xy(n: int = 100, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal(n)


def _raw_group(path, X, y, *, w=None, y_chunks=None, attrs=None):
    """A group written with plain Zarr (not write_zarr), to build malformed datasets."""
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    g.attrs.update(
        attrs
        if attrs is not None
        else {"format": "daskgd", "format_version": FORMAT_VERSION, "complete": True}
    )
    g.create_array("X", data=X, chunks=(25, *X.shape[1:]) if X.ndim else ())
    g.create_array("y", data=y, chunks=y_chunks or (25, *y.shape[1:]))
    if w is not None:
        g.create_array("sample_weight", data=w, chunks=(25,))
    return g


# ------------------------------------------------------------------ round trips


def test_write_open_roundtrip_numpy(tmp_path):
    X, y = _xy()
    w = np.linspace(0.5, 2, 100)
    ds = write_zarr(tmp_path / "d.zarr", X, y, w, chunk_rows=30, feature_names=list("abcd"))
    assert isinstance(ds, Dataset)
    assert (ds.n_samples, ds.n_features, ds.n_chunks) == (100, 4, 4)
    assert ds.chunks == (30, 30, 30, 10)
    assert ds.dtype == np.float64
    assert ds.path == str(tmp_path / "d.zarr")
    assert ds.classes_ is None
    ds = open_zarr(tmp_path / "d.zarr")
    np.testing.assert_array_equal(ds.X.compute(), X)
    np.testing.assert_array_equal(ds.y.compute(), y)
    np.testing.assert_array_equal(ds.sample_weight.compute(), w)
    assert ds.X.chunks == ((30, 30, 30, 10), (4,))
    a = ds.attrs
    # dense groups keep format version 1 (their layout did not change with CSR's version 2)
    assert a["format_version"] == DENSE_FORMAT_VERSION and a["complete"] is True
    assert (a["n_samples"], a["n_features"], a["dtype"]) == (100, 4, "float64")
    assert a["feature_names"] == ["a", "b", "c", "d"]
    assert a["task"] == "regression"


def test_write_open_float32_and_int_labels(tmp_path):
    X, _ = _xy()
    y = np.arange(100) % 3
    ds = write_zarr(tmp_path / "c.zarr", X.astype(np.float32), y, chunk_rows=50)
    assert ds.dtype == np.float32
    np.testing.assert_array_equal(ds.classes_, [0, 1, 2])
    assert ds.attrs["classes"] == [0, 1, 2] and ds.attrs["task"] == "classification"


def test_integer_targets_with_many_values_are_regression(tmp_path):
    X, _ = _xy(2000)
    ds = write_zarr(tmp_path / "r.zarr", X, np.arange(2000))
    assert ds.attrs["task"] == "regression" and ds.classes_ is None


def test_file_url_with_storage_options(tmp_path):
    X, y = _xy()
    url = f"file://{tmp_path}/u.zarr"
    write_zarr(url, X, y, chunk_rows=40, storage_options={"auto_mkdir": True})
    ds = open_zarr(url, storage_options={"auto_mkdir": False})
    assert ds.storage_options == {"auto_mkdir": False}
    np.testing.assert_array_equal(ds.X.compute(), X)
    # The same store is readable through its local path.
    np.testing.assert_array_equal(open_zarr(tmp_path / "u.zarr").y.compute(), y)
    Xc, _yc, wc = load_chunk(url, 1, storage_options={})
    np.testing.assert_array_equal(Xc, X[40:80])
    assert wc is None


def test_storage_options_refused_for_local_path(tmp_path):
    X, y = _xy()
    write_zarr(tmp_path / "d.zarr", X, y)
    with pytest.raises(ValueError, match="storage_options"):
        open_zarr(tmp_path / "d.zarr", storage_options={"anon": True})


def test_write_dask_input_in_parallel_on_cluster(client, tmp_path):
    X = da.random.default_rng(1).standard_normal((1000, 5), chunks=(100, 5))
    y = X.sum(axis=1).rechunk(250)  # y chunked differently: rechunked to X's rows
    w = da.ones(1000, chunks=300)
    ds = write_zarr(tmp_path / "d.zarr", X, y, w, client=client)
    assert ds.chunks == (100,) * 10
    Xn = X.compute()
    np.testing.assert_array_equal(ds.X.compute(), Xn)
    np.testing.assert_allclose(ds.y.compute(), Xn.sum(axis=1))
    # The write ran as tasks on the workers (one per chunk), not through the client.
    prefixes = client.run_on_scheduler(
        lambda dask_scheduler: [str(k) for k in dask_scheduler.task_prefixes]
    )
    assert "write_block" in prefixes


def test_write_dask_irregular_chunks_rechunked(client, tmp_path):
    X = da.ones((100, 3), chunks=((10, 40, 50), (2, 1)))
    ds = write_zarr(tmp_path / "d.zarr", X, da.zeros(100, chunks=100), chunk_rows=32)
    assert ds.chunks == (32, 32, 32, 4)
    assert ds.X.compute().sum() == 300


def test_overwrite(tmp_path):
    X, y = _xy()
    write_zarr(tmp_path / "d.zarr", X, y)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_zarr(tmp_path / "d.zarr", X, y)
    ds = write_zarr(tmp_path / "d.zarr", X[:50], y[:50], overwrite=True)
    assert ds.n_samples == 50


def test_rewrite_never_reuses_old_chunks_held_by_the_cluster(client, tmp_path):
    X, y = _xy()
    old = write_zarr(tmp_path / "d.zarr", X, y, chunk_rows=50)
    held = client.persist(old.X)
    wait(held)
    new = write_zarr(tmp_path / "d.zarr", X + 1, y, chunk_rows=50, overwrite=True)
    assert new.X.name != old.X.name
    np.testing.assert_array_equal(client.compute(new.X).result(), X + 1)


@pytest.mark.parametrize(
    ("compressor", "expect"),
    [
        (daskgd.data.DEFAULT_COMPRESSOR, "ZstdCodec"),
        (None, None),
        (zarr.codecs.BloscCodec(cname="lz4", clevel=5), "BloscCodec"),
    ],
)
def test_compressors(tmp_path, compressor, expect):
    X, y = _xy()
    write_zarr(tmp_path / "d.zarr", X, y, compressor=compressor)
    g = zarr.open_group(str(tmp_path / "d.zarr"), mode="r")
    codecs = g["X"].compressors
    if expect is None:
        assert codecs == ()
    else:
        assert type(codecs[0]).__name__ == expect
    np.testing.assert_array_equal(open_zarr(tmp_path / "d.zarr").X.compute(), X)


def test_sharded_write_reads_whole_shards(tmp_path):
    X, y = _xy(200)
    ds = write_zarr(tmp_path / "s.zarr", X, y, chunk_rows=80, inner_chunk_rows=20)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert g["X"].shards == (80, 4) and g["X"].chunks == (20, 4)
    # Dask chunks are whole shards (dask/dask#12586), not the inner chunks.
    assert ds.chunks == (80, 80, 40)
    np.testing.assert_array_equal(ds.X.compute(), X)
    Xc, _yc, _ = load_chunk(tmp_path / "s.zarr", 2)
    np.testing.assert_array_equal(Xc, X[160:])
    with pytest.raises(ValueError, match="must divide chunk_rows"):
        write_zarr(tmp_path / "t.zarr", X, y, chunk_rows=80, inner_chunk_rows=30)


def test_reads_sharded_group_written_by_plain_zarr(tmp_path):
    X, y = _xy(120)
    g = zarr.open_group(str(tmp_path / "p.zarr"), mode="w", zarr_format=3)
    g.create_array("X", data=X, chunks=(10, 4), shards=(60, 4))
    g.create_array("y", data=y, chunks=(10,), shards=(60,))
    ds = open_zarr(tmp_path / "p.zarr")
    assert ds.chunks == (60, 60)
    assert ds.classes_ is None
    np.testing.assert_array_equal(ds.y.compute(), y)


# ------------------------------------------------------------------ completeness and format


def test_incomplete_group_refused(tmp_path):
    X, y = _xy()
    _raw_group(
        tmp_path / "i.zarr", X, y,
        attrs={"format": "daskgd", "format_version": 1, "complete": False},
    )  # fmt: skip
    with pytest.raises(IncompleteDatasetError, match="not a complete"):
        open_zarr(tmp_path / "i.zarr")


def test_failed_write_leaves_nothing_complete(client, tmp_path):
    X = np.ones((100, 3))
    X[73, 2] = np.inf
    with pytest.raises(DataValidationError, match="X contains NaN or inf values in chunk 3"):
        write_zarr(tmp_path / "f.zarr", da.from_array(X, chunks=(20, 3)), np.zeros(100))
    # every chunk task ended before the group was removed: nothing is left on disk
    assert not (tmp_path / "f.zarr").exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_local_write_leaves_nothing(tmp_path):
    """The same without a distributed client (dask's threaded scheduler)."""
    X = np.ones((100, 3))
    X[5, 0] = np.nan
    with dask.config.set(scheduler="threads"):
        with pytest.raises(DataValidationError, match="X contains NaN or inf values in chunk 0"):
            write_zarr(tmp_path / "f.zarr", da.from_array(X, chunks=(10, 3)), np.zeros(100))
    assert list(tmp_path.iterdir()) == []


def test_newer_format_version_refused(tmp_path):
    X, y = _xy()
    _raw_group(
        tmp_path / "n.zarr", X, y,
        attrs={"format": "daskgd", "format_version": FORMAT_VERSION + 1, "complete": True},
    )  # fmt: skip
    with pytest.raises(DataValidationError, match="newer daskgd"):
        open_zarr(tmp_path / "n.zarr")


@pytest.mark.parametrize("missing", ["X", "y"])
def test_missing_array_in_group(tmp_path, missing):
    X, y = _xy()
    g = zarr.open_group(str(tmp_path / "m.zarr"), mode="w", zarr_format=3)
    if missing != "X":
        g.create_array("X", data=X)
    if missing != "y":
        g.create_array("y", data=y)
    with pytest.raises(DataValidationError, match=f"no array '{missing}'"):
        open_zarr(tmp_path / "m.zarr")


def test_open_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_zarr(tmp_path / "nothing.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataValidationError, match="not a Zarr v3 group"):
        open_zarr(tmp_path / "empty")
    zarr.create_array(str(tmp_path / "array.zarr"), shape=(3,), dtype="f8")
    with pytest.raises(DataValidationError, match="not a Zarr v3 group"):
        open_zarr(tmp_path / "array.zarr")


# ------------------------------------------------------------------ validation, one item each


def test_X_not_2d(tmp_path):
    with pytest.raises(DataValidationError, match="X must be 2-D"):
        write_zarr(tmp_path / "d.zarr", np.ones(10), np.ones(10))
    _raw_group(tmp_path / "r.zarr", np.ones((100, 2, 2)), np.ones(100))
    with pytest.raises(DataValidationError, match="X must be 2-D"):
        open_zarr(tmp_path / "r.zarr")


def test_y_not_1d(tmp_path):
    with pytest.raises(DataValidationError, match="y must be 1-D"):
        as_dataset((np.ones((10, 2)), np.ones((10, 2))))
    _raw_group(tmp_path / "r.zarr", np.ones((100, 2)), np.ones((100, 1)))
    with pytest.raises(DataValidationError, match="y must be 1-D"):
        open_zarr(tmp_path / "r.zarr")


def test_row_counts_differ(tmp_path):
    with pytest.raises(DataValidationError, match="X has 10 rows, y has 9"):
        write_zarr(tmp_path / "d.zarr", np.ones((10, 2)), np.ones(9))
    with pytest.raises(DataValidationError, match="sample_weight has 8"):
        as_dataset((np.ones((10, 2)), np.ones(10), np.ones(8)))
    assert not (tmp_path / "d.zarr").exists()


def test_row_chunks_differ(tmp_path):
    _raw_group(tmp_path / "r.zarr", np.ones((100, 2)), np.ones(100), y_chunks=(30,))
    with pytest.raises(DataValidationError, match=r"y is stored in row-chunks of 30.*X in chunks"):
        open_zarr(tmp_path / "r.zarr")
    # A Dataset built by hand with mismatched chunks is refused, with the rechunk to do...
    with pytest.raises(DataValidationError, match=r"rechunk\(X.chunks\[0\]\)"):
        Dataset(da.ones((100, 2), chunks=(50, 2)), da.ones(100, chunks=30))
    # ...and as_dataset does that rechunk itself.
    ds = as_dataset((da.ones((100, 2), chunks=(50, 2)), da.ones(100, chunks=30)))
    assert ds.y.chunks == ((50, 50),)


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (np.array([["a", "b"]] * 4), np.ones(4), "X has non-numeric dtype"),
        (np.ones((4, 2), dtype=complex), np.ones(4), "X has non-numeric dtype"),
        (np.ones((4, 2)), np.array(["a", "b", "c", "d"]), "y has non-numeric dtype"),
        (np.ones((4, 2)), np.ones(4, dtype=object), "y has non-numeric dtype"),
    ],
)
def test_non_numeric_dtype(tmp_path, X, y, match):
    with pytest.raises(DataValidationError, match=match):
        write_zarr(tmp_path / "d.zarr", X, y)
    with pytest.raises(DataValidationError, match=match):
        as_dataset((X, y))


def test_integer_X_promoted_and_zarr_int_X_refused(tmp_path):
    ds = as_dataset((np.ones((10, 2), dtype=np.int64), np.ones(10)))
    assert ds.dtype == np.float64
    _raw_group(tmp_path / "r.zarr", np.ones((100, 2), dtype=np.int32), np.ones(100))
    with pytest.raises(DataValidationError, match=r"X has dtype int32.*float32 or float64"):
        open_zarr(tmp_path / "r.zarr")


def test_nan_in_X_found_per_chunk_on_cluster(client, tmp_path):
    X, y = _xy(100)
    X[57, 1] = np.nan
    _raw_group(tmp_path / "r.zarr", X, y)
    with pytest.raises(
        DataValidationError, match=r"X contains NaN or inf values in chunk 2 \(rows 50-74; first"
    ):
        open_zarr(tmp_path / "r.zarr", client=client)
    # The scan ran as one task per chunk on the workers.
    keys = client.run_on_scheduler(
        lambda dask_scheduler: [
            str(k) for k in dask_scheduler.task_prefixes if "daskgd-check" in str(k)
        ]
    )
    assert keys
    assert open_zarr(tmp_path / "r.zarr", validate=False).n_samples == 100


def test_inf_in_y(client, tmp_path):
    X, y = _xy(100)
    y[3] = -np.inf
    _raw_group(tmp_path / "r.zarr", X, y)
    with pytest.raises(DataValidationError, match=r"y contains NaN or inf values in chunk 0"):
        open_zarr(tmp_path / "r.zarr")
    with pytest.raises(DataValidationError, match="y contains NaN or inf values in chunk 0"):
        as_dataset((X, y), chunk_rows=10)
    with pytest.raises(DataValidationError, match="y contains NaN or inf values in chunk 0"):
        write_zarr(tmp_path / "w.zarr", X, y)
    assert not (tmp_path / "w.zarr").exists()
    assert as_dataset((X, y), validate=False).n_samples == 100


def test_empty_dataset(tmp_path):
    with pytest.raises(DataValidationError, match="empty"):
        write_zarr(tmp_path / "d.zarr", np.ones((0, 3)), np.ones(0))
    _raw_group(tmp_path / "r.zarr", np.ones((0, 3)), np.ones(0))
    with pytest.raises(DataValidationError, match="empty"):
        open_zarr(tmp_path / "r.zarr")


def test_zero_features(tmp_path):
    with pytest.raises(DataValidationError, match="0 features"):
        as_dataset((np.ones((5, 0)), np.ones(5)))
    g = zarr.open_group(str(tmp_path / "r.zarr"), mode="w", zarr_format=3)
    g.create_array("X", shape=(5, 0), dtype="f8", chunks=(5, 1))
    g.create_array("y", data=np.ones(5))
    with pytest.raises(DataValidationError, match="0 features"):
        open_zarr(tmp_path / "r.zarr")


def test_labels_must_match_task(client, tmp_path):
    X, y = _xy()
    with pytest.raises(DataValidationError, match="continuous"):
        as_dataset((X, y), task="classification")
    with pytest.raises(DataValidationError, match="at least 2 classes"):
        as_dataset((X, np.ones(100, dtype=int)), task="classification")
    with pytest.raises(DataValidationError, match="boolean"):
        as_dataset((X, y > 0), task="regression")
    with pytest.raises(DataValidationError, match="continuous"):
        write_zarr(tmp_path / "w.zarr", X, y, task="classification")
    make_classification(tmp_path / "c.zarr", 200, 3, chunk_rows=50, random_state=0)
    with pytest.raises(DataValidationError, match="labels for classification"):
        open_zarr(tmp_path / "c.zarr", task="regression")
    assert open_zarr(tmp_path / "c.zarr", task="classification").classes_.tolist() == [0, 1]
    # Integer-valued float labels are class labels.
    ds = as_dataset((X, (np.arange(100) % 2).astype(float)), task="classification")
    assert ds.classes_.tolist() == [0.0, 1.0]
    # ...also when y is a dask array (classes found on the cluster).
    ds = as_dataset((da.from_array(X, chunks=(25, 4)), da.arange(100, chunks=25) % 3))
    assert ds.classes_.tolist() == [0, 1, 2]
    yf = (da.arange(100, chunks=25) % 2).astype(float)
    ds = as_dataset((da.from_array(X, chunks=(25, 4)), yf), task="classification")
    assert ds.classes_.tolist() == [0.0, 1.0]
    ds = write_zarr(
        tmp_path / "f.zarr", da.from_array(X, chunks=(25, 4)), yf, task="classification"
    )
    assert ds.attrs["classes"] == [0.0, 1.0] and ds.attrs["task"] == "classification"


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
def test_bad_sample_weights(client, tmp_path, bad):
    X, y = _xy()
    w = np.ones(100)
    w[61] = bad
    with pytest.raises(
        DataValidationError, match=r"sample_weight contains negative, NaN or inf values in chunk 2"
    ):
        as_dataset((X, y, w), chunk_rows=30)
    with pytest.raises(DataValidationError, match="sample_weight contains negative"):
        write_zarr(tmp_path / "w.zarr", da.from_array(X, chunks=30), y, da.from_array(w, 30))
    _raw_group(tmp_path / "r.zarr", X, y, w=w)
    with pytest.raises(DataValidationError, match=r"sample_weight contains negative.*chunk 2"):
        open_zarr(tmp_path / "r.zarr")


def test_all_zero_sample_weights(tmp_path):
    X, y = _xy()
    with pytest.raises(DataValidationError, match="sums to zero"):
        as_dataset((X, y, np.zeros(100)))
    with pytest.raises(DataValidationError, match="negative"):
        as_dataset((X, y, -np.ones(100, dtype=int)))


# ------------------------------------------------------------------ synthetic data


def test_make_regression_independent_of_worker_count(client, tmp_path):
    kw = {"chunk_rows": 64, "noise": 0.5, "bias": 2.0, "random_state": 7}
    on_cluster = make_regression(tmp_path / "a.zarr", 300, 6, client=client, **kw)
    with dask.config.set(scheduler="synchronous"):  # one thread in this process
        local = make_regression(tmp_path / "b.zarr", 300, 6, client=None, **kw)
    np.testing.assert_array_equal(on_cluster.X.compute(), local.X.compute())
    np.testing.assert_array_equal(on_cluster.y.compute(), local.y.compute())
    other = make_regression(tmp_path / "c.zarr", 300, 6, chunk_rows=64, random_state=8)
    assert not np.array_equal(other.X.compute(), local.X.compute())
    a = on_cluster.attrs
    assert a["random_state"] == 7 and a["noise"] == 0.5 and a["intercept"] == 2.0
    assert len(a["coef"]) == 6 and a["task"] == "regression"
    assert on_cluster.chunks == (64, 64, 64, 64, 44)


def test_make_regression_follows_its_coefficients(client, tmp_path):
    ds = make_regression(tmp_path / "r.zarr", 2000, 5, chunk_rows=500, noise=0.0, bias=1.5,
                         random_state=3, dtype=np.float32)  # fmt: skip
    X, y = ds.X.compute(), ds.y.compute()
    assert X.dtype == np.float32 and y.dtype == np.float32
    coef = np.array(ds.attrs["coef"])
    np.testing.assert_allclose(y, X.astype(np.float64) @ coef + 1.5, rtol=1e-5, atol=1e-5)
    # With noise, least squares recovers the stored coefficients.
    ds = make_regression(tmp_path / "n.zarr", 5000, 5, chunk_rows=1000, noise=0.3,
                         random_state=3)  # fmt: skip
    X, y = ds.X.compute(), ds.y.compute()
    A = np.column_stack([X, np.ones(len(X))])
    sol, *_ = np.linalg.lstsq(A, y, rcond=None)
    np.testing.assert_allclose(sol[:5], ds.attrs["coef"], atol=0.03)
    assert abs(np.std(y - X @ sol[:5] - sol[5]) - 0.3) < 0.02


def test_make_regression_random_state_none_is_recorded(tmp_path):
    ds = make_regression(tmp_path / "a.zarr", 50, 2, chunk_rows=20)
    seed = ds.attrs["random_state"]
    again = make_regression(tmp_path / "b.zarr", 50, 2, chunk_rows=20, random_state=seed)
    np.testing.assert_array_equal(ds.X.compute(), again.X.compute())


def test_make_classification_binary_logistic_model(client, tmp_path):
    from sklearn.linear_model import LogisticRegression

    ds = make_classification(tmp_path / "c.zarr", 20000, 4, chunk_rows=5000, random_state=0,
                             client=client)  # fmt: skip
    assert ds.classes_.tolist() == [0, 1] and ds.y.dtype == np.int32
    X, y = ds.X.compute(), ds.y.compute()
    model = LogisticRegression(C=1e6, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(model.coef_[0], ds.attrs["coef"], atol=0.15)


def test_make_classification_multiclass(client, tmp_path):
    ds = make_classification(tmp_path / "m.zarr", 3000, 5, n_classes=4, chunk_rows=700,
                             random_state=2, inner_chunk_rows=100, client=client)  # fmt: skip
    coef = np.array(ds.attrs["coef"])
    assert coef.shape == (5, 4)
    X, y = ds.X.compute(), ds.y.compute()
    assert set(np.unique(y)) == {0, 1, 2, 3}
    # Labels follow the softmax model: the true argmax is right far above chance (25%).
    assert np.mean(np.argmax(X @ coef, axis=1) == y) > 0.5
    assert ds.chunks == (700, 700, 700, 700, 200)


def test_make_data_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_samples"):
        make_regression(tmp_path / "a.zarr", 0, 3)
    with pytest.raises(ValueError, match="n_features"):
        make_regression(tmp_path / "a.zarr", 10, 0)
    with pytest.raises(ValueError, match="n_classes"):
        make_classification(tmp_path / "a.zarr", 10, 2, n_classes=1)
    with pytest.raises(ValueError, match="dtype"):
        make_regression(tmp_path / "a.zarr", 10, 2, dtype=np.int64)
    with pytest.raises(ValueError, match="noise"):
        make_regression(tmp_path / "a.zarr", 10, 2, noise=-1.0)
    assert not (tmp_path / "a.zarr").exists()


# ------------------------------------------------------------------ load_chunk, partition


def test_load_chunk(tmp_path):
    X, y = _xy(95)
    w = np.arange(95.0)
    write_zarr(tmp_path / "d.zarr", X, y, w, chunk_rows=20)
    for i, lo in enumerate(range(0, 95, 20)):
        Xc, yc, wc = load_chunk(tmp_path / "d.zarr", i)
        assert Xc.flags.c_contiguous and yc.flags.c_contiguous and wc.flags.c_contiguous
        np.testing.assert_array_equal(Xc, X[lo : lo + 20])
        np.testing.assert_array_equal(yc, y[lo : lo + 20])
        np.testing.assert_array_equal(wc, w[lo : lo + 20])
    with pytest.raises(IndexError, match="chunk 5 out of range"):
        load_chunk(tmp_path / "d.zarr", 5)


def test_load_chunk_on_a_worker(client, tmp_path):
    ds = make_regression(tmp_path / "d.zarr", 100, 3, chunk_rows=30, random_state=1)
    fut = client.submit(load_chunk, ds.path, 3)
    Xc, _yc, wc = fut.result()
    np.testing.assert_array_equal(Xc, ds.X[90:].compute())
    assert wc is None


def _check_plan(plan, workers, sizes):
    assert list(plan) == list(workers)
    flat = sorted(i for chunks in plan.values() for i in chunks)
    assert flat == list(range(len(sizes)))
    return {w: sum(sizes[i] for i in c) for w, c in plan.items()}


def test_partition_balanced_without_client():
    ds = as_dataset((np.ones((1000, 2)), np.ones(1000)), chunk_rows=100)
    plan = ds.partition(["a", "b", "c"])
    rows = _check_plan(plan, ["a", "b", "c"], ds.chunks)
    assert max(rows.values()) - min(rows.values()) <= 100
    for chunks in plan.values():  # contiguous runs
        assert chunks == list(range(chunks[0], chunks[-1] + 1))
    plan = ds.partition([f"w{i}" for i in range(12)])  # more workers than chunks
    rows = _check_plan(plan, [f"w{i}" for i in range(12)], ds.chunks)
    assert max(rows.values()) == 100
    with pytest.raises(ValueError, match="at least one worker"):
        ds.partition([])
    with pytest.raises(ValueError, match="duplicates"):
        ds.partition(["a", "a"])


def test_partition_keeps_chunks_where_they_live(client, tmp_path):
    ds = make_regression(tmp_path / "d.zarr", 800, 3, chunk_rows=100, random_state=0)
    w0, w1 = sorted(client.scheduler_info()["workers"])
    # Every chunk in memory on w0; chunks 6 and 7 also on w1.
    X = client.persist(ds.X, workers=[w0])
    wait(X)
    keys = list(dask.core.flatten(X.__dask_keys__()))
    client.replicate([client.futures_of(X)[i] for i in (6, 7)], n=2)
    who = client.who_has(X)
    assert all(w0 in who[k] for k in keys) and w1 in who[keys[6]] and w1 in who[keys[7]]
    ds.X = X
    plan = ds.partition([w0, w1], client=client)
    rows = _check_plan(plan, [w0, w1], ds.chunks)
    assert rows == {w0: 400, w1: 400}
    assert plan == {w0: [0, 1, 2, 3], w1: [4, 5, 6, 7]}
    # Without a client the plan is the same contiguous split, by a different route.
    assert ds.partition([w0, w1]) == plan
    # With the roles swapped, w1 keeps both chunks it holds and takes two more.
    plan = ds.partition([w1, w0], client=client)
    assert {6, 7} <= set(plan[w1]) and sum(ds.chunks[i] for i in plan[w1]) == 400


def test_partition_unknown_holders_fall_back(client):
    ds = as_dataset((np.ones((400, 2)), np.ones(400)), chunk_rows=100)
    plan = ds.partition(["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"], client=client)
    assert plan == {"tcp://127.0.0.1:1": [0, 1], "tcp://127.0.0.1:2": [2, 3]}


# ------------------------------------------------------------------ as_dataset


def test_as_dataset_kinds(client, tmp_path):
    X, y = _xy(100)
    ds = as_dataset((X, y))
    assert ds.n_chunks == 1 and ds.path is None
    assert as_dataset(ds) is ds
    write_zarr(tmp_path / "d.zarr", X, y, chunk_rows=25)
    for p in (tmp_path / "d.zarr", str(tmp_path / "d.zarr")):
        assert as_dataset(p).chunks == (25,) * 4
    ds = as_dataset([da.from_array(X, chunks=(10, 2)), y, np.ones(100)])
    assert ds.X.chunks == ((10,) * 10, (4,)) and ds.sample_weight.chunks == ((10,) * 10,)
    with pytest.raises(TypeError, match="tuple"):
        as_dataset(X)
    with pytest.raises(TypeError, match="tuple"):
        as_dataset((X,))


def test_default_chunking_of_numpy_input():
    ds = as_dataset((np.zeros((200_000, 100)), np.zeros(200_000)), validate=False)
    assert ds.chunks[0] * 100 * 8 <= 64 * 2**20
    assert ds.n_chunks == 3
    assert "n_samples=200000" in repr(ds)


def test_public_names():
    for name in ("write_zarr", "open_zarr", "make_regression", "make_classification",
                 "load_chunk", "as_dataset", "Dataset"):  # fmt: skip
        assert name in daskgd.__all__ and getattr(daskgd, name).__doc__
