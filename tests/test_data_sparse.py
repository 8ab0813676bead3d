"""Sparse (CSR) datasets: scipy and dask input written to Zarr and read back, the layout on
disk, what one row-chunk's read touches, Datasets that say they are sparse, and
``daskgd info``. Real Zarr stores in tmp_path, a real LocalCluster, scipy as the oracle."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from distributed import get_task_stream

import daskgd
import daskgd.data.sparse_store as sparse_store
from daskgd.cli import main
from daskgd.data import (
    FORMAT_VERSION,
    Dataset,
    as_dataset,
    check_dense,
    load_chunk,
    open_zarr,
    read_row_arrays,
    write_zarr,
)
from daskgd.data.chunkio import read_row_chunks
from daskgd.data.store import group_arrays
from daskgd.data.trust import trusted_record
from daskgd.errors import DataValidationError


def messy_csr(n=230, d=50, dtype=np.float64, index=np.int32, seed=0):
    """A CSR matrix with empty rows, unsorted and duplicate indices in its rows (explicit
    arrays, as scipy builds none of those itself), and its canonical form."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 7, size=n)
    counts[[0, 5, 6, n - 1]] = 0  # empty rows, the last one too
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(index)
    indices = rng.integers(0, d, size=int(indptr[-1])).astype(index)  # unsorted, repeats
    data = rng.standard_normal(len(indices)).astype(dtype)
    X = sp.csr_matrix((data, indices, indptr), shape=(n, d))
    canonical = X.copy()
    canonical.sum_duplicates()
    assert not X.has_canonical_format and canonical.nnz < X.nnz  # really messy
    return X, canonical


def same_csr(got, expected):
    """``got`` is a canonical csr_matrix equal to ``expected`` (exact values)."""
    assert isinstance(got, sp.csr_matrix) and got.format == "csr"
    assert got.shape == expected.shape and got.dtype == expected.dtype
    starts, ends = got.indptr[:-1], got.indptr[1:]
    for a, b in zip(starts, ends, strict=True):
        assert np.all(np.diff(got.indices[a:b]) > 0)  # sorted, distinct
    assert got.has_canonical_format
    assert abs(got - expected).max() == 0 if got.nnz or expected.nnz else True
    np.testing.assert_array_equal(got.indptr, expected.indptr)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.data, expected.data)


# ------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index", [np.int32, np.int64])
@pytest.mark.parametrize("compressor", ["default", None])
def test_scipy_round_trip(tmp_path, dtype, index, compressor):
    X, canon = messy_csr(dtype=dtype, index=index)
    y = np.arange(X.shape[0], dtype=np.float64)
    kw = {} if compressor == "default" else {"compressor": None}
    ds = write_zarr(tmp_path / "s.zarr", X, y, chunk_rows=64, **kw)
    assert ds.is_sparse and ds.nnz == canon.nnz and ds.chunks == (64, 64, 64, 38)
    for opened in (ds, open_zarr(tmp_path / "s.zarr", validate="full")):
        assert opened.is_sparse and opened.nnz == canon.nnz and opened.dtype == dtype
        blocks = [opened.X.blocks[i].compute() for i in range(opened.n_chunks)]
        for i, b in enumerate(blocks):
            same_csr(b, canon[i * 64 : (i + 1) * 64])
        same_csr(opened.X.compute(), canon)
    for i in range(4):
        Xi, yi, wi = load_chunk(tmp_path / "s.zarr", i)
        same_csr(Xi, canon[i * 64 : (i + 1) * 64])
        np.testing.assert_array_equal(yi, y[i * 64 : (i + 1) * 64])
        assert wi is None
    out = read_row_arrays(tmp_path / "s.zarr", [3, 0, 2])
    expect = sp.vstack([canon[192:], canon[:64], canon[128:192]], format="csr")
    same_csr(out["X"], expect)
    assert out["X"].indices.dtype == np.int32  # d < 2**31: int32 on disk and in memory
    np.testing.assert_array_equal(out["y"], np.concatenate([y[192:], y[:64], y[128:192]]))
    assert isinstance(read_row_chunks(tmp_path / "s.zarr", [1])[0], sp.csr_matrix)


def test_layout_on_disk(tmp_path):
    X, canon = messy_csr(dtype=np.float32)
    write_zarr(tmp_path / "s.zarr", X, np.zeros(X.shape[0]), chunk_rows=100)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert g.attrs["format_version"] == FORMAT_VERSION == 2 and g.attrs["x_format"] == "csr"
    assert "X" in set(g.group_keys())
    sub = g["X"]
    assert sub.attrs["format"] == "csr" and sub.attrs["shape"] == [230, 50]
    assert sub.attrs["nnz"] == canon.nnz and sub.attrs["chunk_rows"] == 100
    C = sub.attrs["segment"]
    ip, ind, dat = g["X/indptr"], g["X/indices"], g["X/data"]
    assert ip.dtype == np.int64 and ip.shape == (3, 101) and ip.chunks == (1, 101)
    assert ind.dtype == np.int32 and dat.dtype == np.float32 and ind.chunks == dat.chunks == (C,)
    rows = ip[:]
    for i, lo in enumerate((0, 100, 200)):
        hi = min(lo + 100, 230)
        local = rows[i, : hi - lo + 1]
        assert local[0] % C == 0  # each segment starts on a Zarr chunk of its own
        a, b = canon.indptr[lo], canon.indptr[hi]
        np.testing.assert_array_equal(local - local[0], canon.indptr[lo : hi + 1] - a)
        np.testing.assert_array_equal(ind[local[0] : local[-1]], canon.indices[a:b])
        assert np.all(rows[i, hi - lo + 1 :] == local[-1])  # a short chunk's padding
        if i:
            assert local[0] >= rows[i - 1, -1]  # no overlap with the previous segment
    # the record of the check is trusted: opening does not scan it again
    assert trusted_record(group_arrays(g, str(tmp_path / "s.zarr")), dict(g.attrs)) is not None


def test_int64_indices_when_the_columns_need_them(tmp_path):
    d = 2**31 + 10  # beyond int32's column numbers
    indices = np.array([0, d - 1, 5, 2**31 + 3], dtype=np.int64)
    X = sp.csr_matrix((np.arange(1.0, 5.0), indices, np.array([0, 2, 2, 4])), shape=(3, d))
    ds = write_zarr(tmp_path / "w.zarr", X, np.zeros(3))
    assert zarr.open_group(str(tmp_path / "w.zarr"))["X/indices"].dtype == np.int64
    Xr = load_chunk(tmp_path / "w.zarr", 0)[0]
    assert Xr.shape == (3, d) and Xr.indices.dtype == np.int64
    np.testing.assert_array_equal(Xr.indices, [0, d - 1, 5, 2**31 + 3])
    np.testing.assert_array_equal(Xr.data, [1.0, 2.0, 3.0, 4.0])
    assert ds.nnz == 4 and ds.n_features == d


def test_other_scipy_forms_are_converted(tmp_path):
    X, canon = messy_csr()
    y = np.zeros(X.shape[0])
    for i, form in enumerate((sp.csr_array(X), X.tocsc(), X.tocoo(), sp.coo_array(X))):
        ds = write_zarr(tmp_path / f"{i}.zarr", form, y, chunk_rows=100)
        same_csr(ds.X.compute(), canon)
    ints = sp.csr_matrix(np.array([[0, 2], [3, 0]], dtype=np.int64))
    ds = write_zarr(tmp_path / "int.zarr", ints, np.zeros(2))
    assert ds.dtype == np.float64 and ds.X.compute().toarray().tolist() == [[0, 2], [3, 0]]


def test_segments_across_many_zarr_chunks(tmp_path, monkeypatch):
    # tiny segments: each row-chunk's non-zeros span several Zarr chunks
    monkeypatch.setattr(sparse_store, "MIN_SEGMENT", 8)
    X = sp.random(300, 40, density=0.3, format="csr", random_state=1)
    ds = write_zarr(tmp_path / "s.zarr", X, np.zeros(300), chunk_rows=50)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    C = g["X"].attrs["segment"]
    assert C < X.nnz / 6 / 4  # several Zarr chunks per row-chunk
    same_csr(ds.X.compute(), X)
    same_csr(read_row_arrays(tmp_path / "s.zarr", [5, 1])["X"], sp.vstack([X[250:], X[50:100]]))


def chunk_files(path: Path, i: int) -> set[Path]:
    """The files that row-chunk ``i`` of a CSR dataset is stored in (indptr, segment, y)."""
    g = zarr.open_group(str(path), mode="r")
    C, R, n = g["X"].attrs["segment"], g["X"].attrs["chunk_rows"], g["X"].attrs["shape"][0]
    ptr = g["X/indptr"][i]
    start, end = int(ptr[0]), int(ptr[min(R, n - i * R)])
    out = {path / "X" / "indptr" / "c" / str(i) / "0", path / "y" / "c" / str(i)}
    for k in range(start // C, -(-end // C)):
        out |= {path / "X" / "indices" / "c" / str(k), path / "X" / "data" / "c" / str(k)}
    return out


def test_one_row_chunk_reads_only_its_own_files(tmp_path, monkeypatch):
    monkeypatch.setattr(sparse_store, "MIN_SEGMENT", 8)
    X = sp.random(400, 30, density=0.2, format="csr", random_state=2)
    path = tmp_path / "s.zarr"
    write_zarr(path, X, np.arange(400.0), chunk_rows=100)
    mine = chunk_files(path, 2)
    assert len(mine) > 4  # its segment is several Zarr chunks
    dirs = [path / "X" / part / "c" for part in ("indptr", "indices", "data")] + [path / "y" / "c"]
    every = {Path(root) / f for d in dirs for root, _, files in os.walk(d) for f in files}
    for f in every - mine:
        f.unlink()  # every other row-chunk's files gone
    Xi, yi, _ = load_chunk(path, 2)
    same_csr(Xi, X[200:300])
    np.testing.assert_array_equal(yi, np.arange(200.0, 300.0))
    with pytest.raises(DataValidationError, match="has no chunk 1"):
        load_chunk(path, 1)


# --------------------------------------------------------------------- dask input, workers


def test_dask_sparse_input_written_by_the_workers(client, tmp_path):
    X, canon = messy_csr(n=500, d=80, seed=3)
    parts = (120, 80, 200, 100)  # irregular: rechunked to chunk_rows on the workers
    Xd = da.from_array(X, chunks=(parts, 80), asarray=False)
    y = da.from_array(np.arange(500) % 3, chunks=(parts,))
    w = da.from_array(np.linspace(0.5, 2.0, 500), chunks=(parts,))
    off = np.linspace(-1, 1, 500)
    with get_task_stream(client) as ts:
        ds = write_zarr(tmp_path / "d.zarr", Xd, y, sample_weight=w, offset=off, chunk_rows=150)
    ran = {t["worker"] for t in ts.data if "_write_csr_block" in str(t["key"])}
    assert ran and ran <= set(client.scheduler_info()["workers"])
    assert ds.is_sparse and ds.chunks == (150, 150, 150, 50) and ds.nnz == canon.nnz
    assert ds.classes_.tolist() == [0, 1, 2]
    same_csr(ds.X.compute(), canon)
    np.testing.assert_allclose(ds.sample_weight.compute(), np.linspace(0.5, 2.0, 500))
    np.testing.assert_allclose(ds.offset.compute(), off)
    # read on a worker, as the training tasks do
    got = client.submit(read_row_arrays, str(tmp_path / "d.zarr"), [1, 3], pure=False).result()
    same_csr(got["X"], sp.vstack([canon[150:300], canon[450:]]))
    np.testing.assert_array_equal(got["y"], np.r_[np.arange(150, 300), np.arange(450, 500)] % 3)
    # a stored sparse dataset rewritten in other row-chunks, from its own dask arrays
    again = write_zarr(tmp_path / "r.zarr", ds.X, ds.y, chunk_rows=200)
    assert again.chunks == (200, 200, 100) and again.nnz == canon.nnz
    same_csr(again.X.compute(), canon)


@pytest.mark.parametrize("form", ["csr_array", "csc"])
def test_dask_blocks_of_other_forms(client, tmp_path, form):
    X, canon = messy_csr(n=300, seed=4)
    Xd = da.from_array(X, chunks=(100, 50), asarray=False)
    if form == "csc":
        Xd = Xd.map_blocks(lambda b: b.tocsc(), meta=sp.csc_matrix((0, 50)))
    else:
        Xd = Xd.map_blocks(sp.csr_array, meta=sp.csr_array((0, 50)))
    ds = write_zarr(tmp_path / "d.zarr", Xd, da.zeros(300, chunks=100))
    assert ds.chunks == (100, 100, 100)
    same_csr(ds.X.compute(), canon)


def test_a_graph_that_changes_between_the_passes_is_refused(client, tmp_path):
    def fresh(block):  # no seed: each computation draws another number of non-zeros
        density = np.random.default_rng().uniform(0.1, 0.9)
        return sp.random(block.shape[0], 30, density=density, format="csr")

    Xd = da.from_array(sp.csr_matrix((200, 30)), chunks=(100, 30), asarray=False)
    Xd = Xd.map_blocks(fresh, meta=sp.csr_matrix((0, 30)))
    with pytest.raises(DataValidationError, match="changed between the two passes"):
        write_zarr(tmp_path / "d.zarr", Xd, da.zeros(200, chunks=100))
    assert not (tmp_path / "d.zarr").exists()


def test_sharding_is_not_offered_for_sparse(tmp_path):
    X, _ = messy_csr()
    with pytest.raises(ValueError, match="not offered for sparse X"):
        write_zarr(tmp_path / "d.zarr", X, np.zeros(230), chunk_rows=100, inner_chunk_rows=50)
    assert not (tmp_path / "d.zarr").exists()


# ------------------------------------------------------------------ in-memory Datasets


def test_as_dataset_from_scipy_and_dask(client):
    X, canon = messy_csr(n=300, seed=5)
    y = np.arange(300) % 2
    ds = as_dataset((X, y), chunk_rows=128)
    assert ds.is_sparse and ds.nnz == canon.nnz and ds.chunks == (128, 128, 44)
    assert ds.values_checked and ds.classes_.tolist() == [0, 1]
    assert isinstance(ds.X._meta, sp.csr_matrix)
    for i in range(3):
        same_csr(ds.X.blocks[i].compute(), canon[i * 128 : (i + 1) * 128])
    Xd = da.from_array(X, chunks=(100, 50), asarray=False)
    ds = as_dataset((Xd, da.from_array(y, chunks=100)))
    assert ds.is_sparse and ds.chunks == (100, 100, 100) and ds._nnz is None
    assert ds.nnz == canon.nnz  # counted on the cluster the first time
    same_csr(ds.X.compute(), canon)
    assert "sparse nnz=" in repr(ds)


def test_dense_datasets_say_they_are_dense(tmp_path):
    ds = as_dataset((np.ones((10, 3)), np.zeros(10)))
    assert not ds.is_sparse and ds.nnz == 30
    ds = write_zarr(tmp_path / "d.zarr", np.ones((10, 3)), np.zeros(10))
    assert not ds.is_sparse and ds.nnz == 30 and ds.attrs["format_version"] == 1
    assert "sparse" not in repr(ds)


def test_check_dense_takes_csr_and_refuses_the_rest():
    X = sp.random(5, 3, density=0.5, format="csr")
    check_dense(X, np.zeros(5), None)
    check_dense(sp.csr_array(X), np.zeros(5), None)
    check_dense(da.from_array(X, chunks=(2, 3), asarray=False), np.zeros(5), None)
    with pytest.raises(DataValidationError, match=r"CSC form.*X\.tocsr\(\)"):
        check_dense(X.tocsc(), np.zeros(5), None)
    with pytest.raises(DataValidationError, match="y is a sparse"):
        check_dense(X, sp.csr_matrix(np.zeros((5, 1))), None)

    class PyDataCOO:  # pydata sparse's module, without installing it
        __module__ = "sparse._coo.core"

    with pytest.raises(DataValidationError, match=r"X is a sparse PyDataCOO.*to_scipy_sparse"):
        check_dense(PyDataCOO(), np.zeros(5), None)


def test_dataset_refuses_an_empty_row_chunk():
    X = sp.random(10, 3, density=0.5, format="csr")
    X = da.from_array(X, chunks=((5, 0, 5), (3,)), asarray=False)
    with pytest.raises(DataValidationError, match="row-chunk 1 is empty"):
        Dataset(X, da.zeros(10, chunks=((5, 0, 5),)))
    with pytest.raises(DataValidationError, match="row-chunk 1 is empty"):
        as_dataset((X, da.zeros(10, chunks=((5, 0, 5),))))


def test_public_names():
    assert daskgd.make_sparse_classification.__module__ == "daskgd.data.sparse_synthetic"
    assert "make_sparse_regression" in daskgd.__all__
    assert "make_sparse_classification" in dir(daskgd)
    assert daskgd.data.FORMAT_VERSION == 2 and daskgd.data.DENSE_FORMAT_VERSION == 1


# --------------------------------------------------------------------------- daskgd info


def test_info_shows_sparse_data(tmp_path, capsys):
    X, canon = messy_csr(dtype=np.float32)
    path = str(tmp_path / "s.zarr")
    write_zarr(path, X, np.arange(230) % 2, chunk_rows=100)
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    density = canon.nnz / (230 * 50)
    assert "230 x 50 float32, 3 row-chunks" in out
    assert f"sparse (CSR): nnz {canon.nnz}, density {density:.3g}" in out
    assert "index dtype int32" in out and "X/indices: shape" in out and "format_version: 2" in out
    assert main(["info", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sparse"]["nnz"] == canon.nnz and info["sparse"]["index_dtype"] == "int32"
    assert info["sparse"]["density"] == pytest.approx(density)
    assert info["arrays"]["X/indptr"]["row_chunk"] == 100
    assert info["classes"] == [0, 1]
