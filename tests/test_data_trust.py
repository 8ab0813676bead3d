"""The record of a dataset's value check (``checked``), trusted while the group is unchanged,
and the passes over ``y`` that a regression never pays for. Real Zarr stores, a LocalCluster."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

import daskgd
import daskgd.data.dataset as dataset_module
from daskgd.data import as_dataset, open_zarr, write_zarr
from daskgd.data.chunkio import chunk_digest
from daskgd.data.synthetic import make_classification, make_regression
from daskgd.data.trust import RECORD_ATTR, content_token
from daskgd.errors import DataValidationError


def _xy(n: int = 200, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal(n)


@pytest.fixture
def counted(monkeypatch):
    """Counts of the value scans and of the passes over ``y`` that find class labels."""
    calls = {"scan": 0, "labels_in_scan": 0, "find_classes": 0}
    scan, find = dataset_module.validate_values, dataset_module.find_classes

    def counting_scan(*args, find_labels=False, **kwargs):
        calls["scan"] += 1
        calls["labels_in_scan"] += bool(find_labels)
        return scan(*args, find_labels=find_labels, **kwargs)

    def counting_find(*args, **kwargs):
        calls["find_classes"] += 1
        return find(*args, **kwargs)

    monkeypatch.setattr(dataset_module, "validate_values", counting_scan)
    monkeypatch.setattr(dataset_module, "find_classes", counting_find)
    return calls


def _foreign(path, X, y):
    """A group written by plain zarr: no daskgd attributes, no record, no digests."""
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    g.create_array("X", data=X, chunks=(50, X.shape[1]))
    g.create_array("y", data=y, chunks=(50,))
    return g


@pytest.mark.parametrize("source", ["numpy", "dask"])
def test_written_dataset_is_trusted_until_full(client, tmp_path, counted, source):
    X, y = _xy()
    w = np.ones(len(y))
    if source == "dask":
        X, y, w = (da.from_array(a, chunks=50) for a in (X, y, w))
    ds = write_zarr(tmp_path / "d.zarr", X, y, sample_weight=w, chunk_rows=50)
    record = ds.attrs[RECORD_ATTR]
    assert record["finite"] is True and record["weight_sum"] == 200.0
    assert ds.values_checked
    opened = open_zarr(tmp_path / "d.zarr")  # validate=True: the record stands for the scan
    assert counted["scan"] == 0 and opened.values_checked
    assert as_dataset(opened).values_checked and counted["scan"] == 0  # nor a second time
    open_zarr(tmp_path / "d.zarr", validate="full")
    assert counted["scan"] == 1
    as_dataset(opened, validate="full")
    assert counted["scan"] == 2


def test_synthetic_data_is_trusted(client, tmp_path, counted):
    make_regression(tmp_path / "r.zarr", 200, 3, chunk_rows=50, random_state=0)
    make_classification(tmp_path / "c.zarr", 200, 3, chunk_rows=50, random_state=0)
    open_zarr(tmp_path / "r.zarr", task="regression")
    open_zarr(tmp_path / "c.zarr", task="classification")
    assert counted["scan"] == 0 and counted["find_classes"] == 0


def test_no_record_without_validation(client, tmp_path, counted):
    X, y = _xy()
    write_zarr(tmp_path / "d.zarr", X, y, chunk_rows=50, validate=False)
    assert RECORD_ATTR not in open_zarr(tmp_path / "d.zarr", validate=False).attrs
    open_zarr(tmp_path / "d.zarr")
    assert counted["scan"] == 1


def test_all_zero_weights_are_not_trusted(client, tmp_path):
    """A dask write checks each block; the sum is checked where it is known: at open."""
    X, y = _xy()
    w = da.zeros(200, chunks=50)
    write_zarr(tmp_path / "d.zarr", da.from_array(X, chunks=50), da.from_array(y, chunks=50), w)
    with pytest.raises(DataValidationError, match="sample_weight sums to zero"):
        open_zarr(tmp_path / "d.zarr")


def test_rewritten_values_with_new_digests_are_scanned_again(client, tmp_path, counted):
    """Another tool writes NaN into a chunk and even records its digest: the token breaks."""
    X, y = _xy()
    write_zarr(tmp_path / "d.zarr", X, y, chunk_rows=50)
    g = zarr.open_group(str(tmp_path / "d.zarr"), mode="r+")
    bad = X[100:150].copy()
    bad[7, 1] = np.nan
    g["X"][100:150] = bad
    digests = dict(g.attrs["digests"])
    digests["X"] = [*digests["X"][:2], chunk_digest(bad), digests["X"][3]]
    g.attrs["digests"] = digests
    with pytest.raises(DataValidationError, match=r"X contains NaN or inf values in chunk 2"):
        open_zarr(tmp_path / "d.zarr")
    assert counted["scan"] == 1


def test_rewritten_chunk_is_refused_on_read_when_trusted(client, tmp_path):
    """The record holds for the values the digests allow, and only those can be read."""
    X, y = _xy()
    write_zarr(tmp_path / "d.zarr", X, y, chunk_rows=50)
    g = zarr.open_group(str(tmp_path / "d.zarr"), mode="r+")
    bad = X[100:150].copy()
    bad[7, 1] = np.nan
    g["X"][100:150] = bad  # digests left as they were
    ds = open_zarr(tmp_path / "d.zarr")  # trusted: nothing read
    expect = r"chunk 2 of array 'X' .* does not match its digest"
    with pytest.raises(DataValidationError, match=expect):
        ds.X.compute()
    with pytest.raises(DataValidationError, match=expect):
        daskgd.load_chunk(tmp_path / "d.zarr", 2)
    with pytest.raises(DataValidationError, match=expect):
        open_zarr(tmp_path / "d.zarr", validate="full")
    with pytest.raises(DataValidationError, match=expect):
        daskgd.fit(str(tmp_path / "d.zarr"), client=client, max_epochs=2)


def test_replaced_array_breaks_the_token(client, tmp_path, counted):
    X, y = _xy()
    write_zarr(tmp_path / "d.zarr", X, y, chunk_rows=50, compressor=None)
    g = zarr.open_group(str(tmp_path / "d.zarr"), mode="r+")
    arrays = {n: g[n] for n in ("X", "y")}
    token = content_token(arrays, dict(g.attrs))
    assert token == g.attrs[RECORD_ATTR]["token"]
    # the same values, stored compressed: every digest still matches, the metadata does not
    del g["y"]
    g.create_array("y", data=y, chunks=(50,), config={"write_empty_chunks": True})
    assert content_token({"X": g["X"], "y": g["y"]}, dict(g.attrs)) != token
    open_zarr(tmp_path / "d.zarr")
    assert counted["scan"] == 1


def test_validate_must_be_known(tmp_path):
    X, y = _xy()
    write_zarr(tmp_path / "d.zarr", X, y)
    with pytest.raises(ValueError, match="validate must be True, False or 'full'"):
        open_zarr(tmp_path / "d.zarr", validate="yes")  # type: ignore[arg-type]


# ------------------------------------------------------------------ groups from other tools


def test_foreign_group_is_scanned_and_its_nan_found(client, tmp_path, counted):
    X, y = _xy()
    X[130, 2] = np.inf
    _foreign(tmp_path / "f.zarr", X, y)
    with pytest.raises(DataValidationError, match=r"X contains NaN or inf .* chunk 2 .* row 130"):
        open_zarr(tmp_path / "f.zarr")
    assert counted["scan"] == 1
    ds = open_zarr(tmp_path / "f.zarr", validate=False)
    assert not ds.values_checked


def test_regression_target_is_never_scanned_for_labels(client, tmp_path, counted):
    X, y = _xy()
    _foreign(tmp_path / "f.zarr", X, y)
    open_zarr(tmp_path / "f.zarr", task="regression")
    ds = open_zarr(tmp_path / "f.zarr")
    assert counted == {"scan": 2, "labels_in_scan": 0, "find_classes": 0}
    daskgd.fit(str(tmp_path / "f.zarr"), client=client, loss="squared_error", max_epochs=2)
    assert counted["find_classes"] == 0 and counted["labels_in_scan"] == 0
    assert ds.classes_ is None  # asked for: found then (one pass over y)
    assert counted["find_classes"] == 1


def test_classification_labels_found_in_the_scan(client, tmp_path, counted):
    X, _ = _xy()
    y = np.tile([0.0, 1.0, 2.0, 1.0], 50)  # integer-valued floats: class labels
    _foreign(tmp_path / "f.zarr", X, y)
    ds = open_zarr(tmp_path / "f.zarr", task="classification")
    assert ds.classes_.tolist() == [0.0, 1.0, 2.0]
    assert counted == {"scan": 1, "labels_in_scan": 1, "find_classes": 0}
    _foreign(tmp_path / "g.zarr", X, np.linspace(0, 1, 200))
    with pytest.raises(DataValidationError, match="continuous"):
        open_zarr(tmp_path / "g.zarr", task="classification")


def test_dask_input_labels_only_when_asked(client, counted):
    X, y = _xy()
    Xd, yd = da.from_array(X, chunks=50), da.from_array(y, chunks=50)
    as_dataset((Xd, yd), task="regression")
    ds = as_dataset((Xd, yd))
    assert counted["find_classes"] == 0 and counted["labels_in_scan"] == 0
    labels = da.from_array(np.tile([0, 1], 100), chunks=50)
    assert as_dataset((Xd, labels), task="classification").classes_.tolist() == [0, 1]
    assert counted == {"scan": 3, "labels_in_scan": 1, "find_classes": 0}
    assert ds.classes_ is None and counted["find_classes"] == 1


def test_edited_classes_break_the_token(client, tmp_path, counted):
    """The classes a trusted open takes from the attributes are covered by the record: a
    class added by hand (no sample of it) is found out by a scan, not given a column."""
    X, _ = _xy()
    y = np.arange(200) % 2
    write_zarr(tmp_path / "c.zarr", X, y, chunk_rows=50)
    assert open_zarr(tmp_path / "c.zarr").classes_.tolist() == [0, 1] and counted["scan"] == 0
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r+")
    g.attrs["classes"] = [0, 1, 2]
    ds = open_zarr(tmp_path / "c.zarr")
    assert counted["scan"] == 1
    assert ds.classes_.tolist() == [0, 1]
