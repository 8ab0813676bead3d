"""The synthetic sparse generators: reproducible whatever the chunking and the workers, a
power law of column popularity, labels from the stored true model, and ``daskgd make-data
--sparse``. Real Zarr stores, a real LocalCluster, numpy/scipy as the oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from distributed import get_task_stream
from scipy.special import expit

from daskgd.cli import main
from daskgd.data import open_zarr
from daskgd.data.sparse_synthetic import make_sparse_classification, make_sparse_regression

N, D, K = 20_000, 2**16, 30


def _read(path):
    ds = open_zarr(path, validate="full")
    return ds, ds.X.compute(), ds.y.compute()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A classification problem made in this process, in row-chunks of 2,500 rows."""
    path = tmp_path_factory.mktemp("ref") / "c.zarr"
    make_sparse_classification(path, N, D, K, chunk_rows=2500, random_state=11,
                               weights=[0.8, 0.2], client=None)  # fmt: skip
    return (path, *_read(path))


def test_rows_are_canonical_with_exactly_k_nonzeros(reference):
    _, ds, X, y = reference
    assert ds.is_sparse and ds.nnz == N * K and ds.chunks == (2500,) * 8
    assert isinstance(X, sp.csr_matrix) and X.shape == (N, D) and X.dtype == np.float32
    assert np.all(np.diff(X.indptr) == K)
    rows = X.indices.reshape(N, K)
    assert np.all(np.diff(rows, axis=1) > 0) and rows.min() >= 0 and rows.max() < D
    assert np.all(X.data == 1.0)  # values="binary"
    assert y.dtype == np.int32 and set(np.unique(y)) == {0, 1}
    assert ds.attrs["classes"] == [0, 1] and ds.attrs["synthetic"] is True
    assert ds.values_checked  # the record of the generator's check


def test_same_seed_same_data_whatever_the_chunks_and_workers(client, reference, tmp_path):
    _, _, X, y = reference
    with get_task_stream(client) as ts:
        ds = make_sparse_classification(tmp_path / "c.zarr", N, D, K, chunk_rows=3000,
                                        random_state=11, weights=[0.8, 0.2])  # fmt: skip
    assert {t["worker"] for t in ts.data} <= set(client.scheduler_info()["workers"])
    assert any("make-sparse" in str(t["key"]) for t in ts.data)
    assert ds.chunks[0] == 3000
    X2, y2 = ds.X.compute(), ds.y.compute()
    assert (X2 != X).nnz == 0 and np.array_equal(X2.indices, X.indices)
    np.testing.assert_array_equal(y2, y)
    other = make_sparse_classification(tmp_path / "o.zarr", 2000, D, K, random_state=12)
    assert (other.X.compute() != X[:2000]).nnz > 0


def test_column_popularity_follows_a_power_law(reference, tmp_path):
    _, _, X, _ = reference
    counts = np.sort(np.bincount(X.indices, minlength=D))[::-1]
    top = counts[: D // 100].sum() / counts.sum()
    assert top > 0.5  # the top 1% of the columns hold most non-zeros
    assert counts[0] > 0.5 * N  # one column in most rows
    assert np.median(counts) <= 2  # most columns rare
    flat = make_sparse_regression(tmp_path / "u.zarr", N, D, K, popularity_exponent=0.0,
                                  random_state=3, client=None)  # fmt: skip
    counts = np.sort(np.bincount(flat.X.compute().indices, minlength=D))[::-1]
    assert counts[: D // 100].sum() / counts.sum() < 0.05  # exponent 0: uniform


def test_every_column_once_when_a_row_holds_them_all(tmp_path):
    # k = d (not a power of two): the seeded permutation of the columns is a bijection
    ds = make_sparse_regression(tmp_path / "all.zarr", 50, 37, 37, random_state=5, client=None)
    X = ds.X.compute()
    assert np.all(X.indices.reshape(50, 37) == np.arange(37))


def test_labels_come_from_the_stored_logistic_model(reference):
    path, ds, X, y = reference
    coef = zarr.open_group(str(path), mode="r")["coef"][:]  # d > 4096: an array, not an attr
    assert ds.attrs["coef"] is None and ds.attrs["coef_array"] == "coef"
    assert coef.shape == (D,) and abs(np.count_nonzero(coef) / D - 0.1) < 0.01
    p = expit(X @ coef + ds.attrs["intercept"])
    assert abs(y.mean() - 0.2) < 0.02  # weights=[0.8, 0.2]
    assert abs(p.mean() - y.mean()) < 0.02  # calibrated
    assert p[y == 1].mean() - p[y == 0].mean() > 0.2  # informative
    margin = X @ coef
    assert 1.5 < margin.std() < 4.5  # about 3 * class_sep


def test_regression_is_linear_plus_noise(tmp_path):
    ds = make_sparse_regression(tmp_path / "r.zarr", 8000, 1000, 12, chunk_rows=3000, noise=0.5,
                                bias=2.0, values="normal", dtype="float64", random_state=2,
                                client=None)  # fmt: skip
    X, y = ds.X.compute(), ds.y.compute()
    coef = np.asarray(ds.attrs["coef"])  # d <= 4096: in the attributes
    assert ds.attrs["intercept"] == 2.0 and ds.attrs["noise"] == 0.5 and ds.classes_ is None
    assert X.dtype == np.float64 and abs(X.data.mean()) < 0.05 and abs(X.data.std() - 1) < 0.05
    resid = y - X @ coef - 2.0
    assert abs(resid.std() - 0.5) < 0.03 and abs(resid.mean()) < 0.03


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nnz_per_row": 50}, "nnz_per_row .* must not exceed n_features"),
        ({"nnz_per_row": 0}, "nnz_per_row must be a positive int"),
        ({"coef_density": 0.0}, "coef_density must be in"),
        ({"popularity_exponent": -1.0}, "popularity_exponent must be"),
        ({"values": "counts"}, "values must be 'binary' or 'normal'"),
        ({"dtype": "int32"}, "dtype must be float32 or float64"),
        ({"chunk_rows": 0}, "chunk_rows must be a positive int"),
        ({"weights": [0.5, 0.7]}, "weights must be one or two class shares"),
        ({"class_sep": 0.0}, "class_sep must be"),
    ],
)
def test_bad_parameters(tmp_path, kwargs, message):
    args = {"nnz_per_row": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_sparse_classification(tmp_path / "x.zarr", 100, 40, client=None, **args)
    assert not (tmp_path / "x.zarr").exists()


def test_make_data_sparse_then_info(tmp_path, capsys):
    path = str(tmp_path / "s.zarr")
    argv = ["make-data", path, "--sparse", "--n-samples", "3000", "--n-features", "65536",
            "--nnz-per-row", "20", "--chunk-rows", "1000", "--task", "classification",
            "--dtype", "float32", "--random-state", "4"]  # fmt: skip
    assert main(argv) == 0
    assert "sparse nnz=60000" in capsys.readouterr().out
    ds = open_zarr(path)
    assert ds.is_sparse and ds.chunks == (1000,) * 3 and ds.classes_.tolist() == [0, 1]
    X = ds.X.compute()
    same = make_sparse_classification(tmp_path / "api.zarr", 3000, 65536, 20, random_state=4,
                                      client=None)  # fmt: skip
    assert (same.X.compute() != X).nnz == 0  # the CLI is the function
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "sparse (CSR): nnz 60000, density 0.000305" in out and "index dtype int32" in out
    assert main(["info", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sparse"]["nnz"] == 60000
    reg = str(tmp_path / "r.zarr")
    assert main(["make-data", reg, "--sparse", "--n-samples", "500", "--n-features", "100",
                 "--noise", "0.1"]) == 0  # fmt: skip
    assert open_zarr(reg).nnz == 500 * 40 and open_zarr(reg).attrs["noise"] == 0.1


@pytest.mark.parametrize(
    "extra",
    [
        ["--nnz-per-row", "5"],  # without --sparse
        ["--sparse", "--task", "classification", "--n-classes", "3"],
        ["--sparse", "--inner-chunk-rows", "5"],
        ["--sparse", "--nnz-per-row", "11"],  # more than --n-features
    ],
)
def test_make_data_sparse_bad_arguments_exit_2(tmp_path, capsys, extra):
    argv = ["make-data", str(tmp_path / "s.zarr"), "--n-samples", "10", "--n-features", "10"]
    assert main([*argv, *extra]) == 2
    assert "usage" in capsys.readouterr().err
    assert not (tmp_path / "s.zarr").exists()
