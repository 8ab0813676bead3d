"""Feature partitioning's data layer: X stored in column chunks, column reads, parts side by side.

Real Zarr stores in tmp_path; numpy is the oracle (the values written, ``chunk_digest`` of
the blocks). The dask write path and the fits run on the session's LocalCluster.
"""

from __future__ import annotations

import itertools
import os
import pickle
import shutil
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import zarr

import daskgd
from daskgd.cli import main as cli_main
from daskgd.data import (
    FeatureBlocks,
    as_dataset,
    column_blocks,
    column_parts,
    concat_features,
    load_chunk,
    open_zarr,
    read_columns,
    read_row_arrays,
    read_row_chunks,
    write_zarr,
)
from daskgd.data.chunkfiles import chunk_digest
from daskgd.data.store import group_arrays
from daskgd.data.synthetic import make_classification, make_regression
from daskgd.data.trust import trusted_record
from daskgd.driver import fit
from daskgd.errors import DataValidationError

N, D, ROWS, COLS = 103, 17, 20, 5  # 6 row-chunks (the last of 3 rows), column chunks 5,5,5,2


def _data(n: int = N, d: int = D, dtype=np.float64, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    return X, (X @ rng.standard_normal(d) + 0.5).astype(dtype)


def _blocks(X: np.ndarray, rows: int, cols: int) -> list[list[int]]:
    """The oracle of digests["X_blocks"]."""
    return [
        [chunk_digest(X[r : r + rows, c : c + cols]) for c in range(0, X.shape[1], cols)]
        for r in range(0, X.shape[0], rows)
    ]


def _attrs(path) -> dict:
    return dict(zarr.open_group(str(path), mode="r").attrs)


def _block_file(path: Path, i: int, j: int) -> Path:
    return path / "X" / "c" / str(i) / str(j)


# ------------------------------------------------------------------------------ writing


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["zstd", "raw", "sharded"])
def test_write_zarr_with_chunk_cols_round_trip(tmp_path, dtype, layout):
    X, y = _data(dtype=dtype)
    w = np.linspace(0.5, 1.5, N)
    kw = {"raw": {"compressor": None}, "sharded": {"inner_chunk_rows": 10}}.get(layout, {})
    path = tmp_path / "d.zarr"
    ds = write_zarr(path, X, y, sample_weight=w, chunk_rows=ROWS, chunk_cols=COLS, **kw)
    z = zarr.open_array(str(path / "X"), mode="r")
    if layout == "sharded":
        assert z.shards == (ROWS, COLS) and z.chunks == (10, COLS)
    else:
        assert z.chunks == (ROWS, COLS) and z.shards is None
    assert zarr.open_array(str(path / "y"), mode="r").chunks[0] == (
        10 if layout == "sharded" else ROWS
    )
    attrs = _attrs(path)
    assert attrs["chunk_cols"] == COLS
    digests = attrs["digests"]
    assert digests["X_blocks"] == _blocks(X, ROWS, COLS)
    # the row-chunk digests over all columns, as without chunk_cols
    assert digests["X"] == [chunk_digest(X[r : r + ROWS]) for r in range(0, N, ROWS)]
    assert ds.column_chunks == (5, 5, 5, 2)
    np.testing.assert_array_equal(ds.X.compute(), X)
    np.testing.assert_array_equal(ds.sample_weight.compute(), w)
    # the record of the write's check holds: opening does not scan
    g = zarr.open_group(str(path), mode="r")
    assert trusted_record(group_arrays(g, str(path)), attrs) is not None
    again = open_zarr(path)
    assert again.values_checked and again.column_chunks == (5, 5, 5, 2)
    assert len(again.X.chunks[1]) == 1  # the dask X stays one chunk along the columns
    np.testing.assert_array_equal(again.X.compute(), X)


def test_dask_input_written_by_the_workers_records_the_same_digests(client, tmp_path):
    X, y = _data()
    write_zarr(tmp_path / "np.zarr", X, y, chunk_rows=ROWS, chunk_cols=COLS)
    Xd = da.from_array(X, chunks=(33, 7))  # other chunks than the store's: rechunked
    ds = write_zarr(tmp_path / "dask.zarr", Xd, da.from_array(y, chunks=33),
                    chunk_rows=ROWS, chunk_cols=COLS, client=client)  # fmt: skip
    a, b = _attrs(tmp_path / "np.zarr"), _attrs(tmp_path / "dask.zarr")
    assert b["digests"]["X_blocks"] == a["digests"]["X_blocks"] == _blocks(X, ROWS, COLS)
    assert b["digests"]["X"] == a["digests"]["X"]
    assert b["chunk_cols"] == COLS and ds.column_chunks == (5, 5, 5, 2)
    assert open_zarr(tmp_path / "dask.zarr").values_checked  # the record was written
    np.testing.assert_array_equal(read_columns(tmp_path / "dask.zarr", 4, 11), X[:, 4:11])


def test_dask_input_with_a_bad_value_leaves_nothing(client, tmp_path):
    X, y = _data()
    X[45, 3] = np.nan
    with pytest.raises(DataValidationError, match="chunk 2"):
        write_zarr(tmp_path / "bad.zarr", da.from_array(X, chunks=(20, D)),
                   da.from_array(y, chunks=20), chunk_cols=COLS, client=client)  # fmt: skip
    assert not os.path.exists(tmp_path / "bad.zarr")


def test_chunk_cols_as_wide_as_X_is_one_column_chunk(tmp_path):
    X, y = _data()
    ds = write_zarr(tmp_path / "d.zarr", X, y, chunk_rows=ROWS, chunk_cols=100)
    attrs = _attrs(tmp_path / "d.zarr")
    assert attrs["chunk_cols"] == D and ds.column_chunks is None
    assert attrs["digests"]["X_blocks"] == [[d] for d in attrs["digests"]["X"]]
    plain = write_zarr(tmp_path / "p.zarr", X, y, chunk_rows=ROWS)
    assert plain.column_chunks is None and "chunk_cols" not in plain.attrs
    assert "X_blocks" not in plain.attrs["digests"]


def test_chunk_cols_refused_for_sparse_x_and_bad_values(tmp_path):
    X, y = _data()
    with pytest.raises(ValueError, match="feature partitioning needs dense X"):
        write_zarr(tmp_path / "s.zarr", sp.csr_matrix(X), y, chunk_cols=5)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunk_cols must be a positive int"):
            write_zarr(tmp_path / "b.zarr", X, y, chunk_cols=bad)
        with pytest.raises(ValueError, match="chunk_cols must be a positive int"):
            make_regression(tmp_path / "b.zarr", 10, 3, chunk_cols=bad, client=None)
    assert not os.path.exists(tmp_path / "s.zarr") and not os.path.exists(tmp_path / "b.zarr")


def test_edited_block_digests_break_the_record(tmp_path):
    X, y = _data()
    path = tmp_path / "d.zarr"
    write_zarr(path, X, y, chunk_rows=ROWS, chunk_cols=COLS)
    g = zarr.open_group(str(path), mode="r+")
    digests = dict(g.attrs["digests"])
    digests["X_blocks"] = [[v ^ 1 for v in row] for row in digests["X_blocks"]]
    g.attrs["digests"] = digests
    assert trusted_record(group_arrays(g, str(path)), dict(g.attrs)) is None


# ---------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("kind", ["regression", "binary", "multiclass"])
def test_synthetic_values_do_not_depend_on_chunk_cols(tmp_path, kind):
    def make(name, **kw):
        path = tmp_path / name
        if kind == "regression":
            return make_regression(path, 90, 11, chunk_rows=25, noise=0.3, random_state=7,
                                   client=None, **kw)  # fmt: skip
        n_classes = 2 if kind == "binary" else 3
        return make_classification(path, 90, 11, n_classes=n_classes, chunk_rows=25,
                                   random_state=7, dtype=np.float32, client=None, **kw)  # fmt: skip

    plain, cut = make("plain.zarr"), make("cut.zarr", chunk_cols=4)
    Xp, Xc = plain.X.compute(), cut.X.compute()
    np.testing.assert_array_equal(Xc, Xp)
    np.testing.assert_array_equal(cut.y.compute(), plain.y.compute())
    assert cut.column_chunks == (4, 4, 3) and plain.column_chunks is None
    assert zarr.open_array(str(tmp_path / "cut.zarr" / "X"), mode="r").chunks == (25, 4)
    a, b = _attrs(tmp_path / "plain.zarr"), _attrs(tmp_path / "cut.zarr")
    assert a["coef"] == b["coef"] and a["digests"]["X"] == b["digests"]["X"]
    assert b["digests"]["X_blocks"] == _blocks(Xp, 25, 4) and b["chunk_cols"] == 4
    assert open_zarr(tmp_path / "cut.zarr").values_checked
    np.testing.assert_array_equal(read_columns(tmp_path / "cut.zarr", 3, 9), Xp[:, 3:9])


def test_synthetic_with_chunk_cols_on_the_cluster_and_sharded(client, tmp_path):
    ds = make_regression(tmp_path / "r.zarr", 120, 9, chunk_rows=40, chunk_cols=3,
                         inner_chunk_rows=20, random_state=1, client=client)  # fmt: skip
    ref = make_regression(tmp_path / "p.zarr", 120, 9, chunk_rows=40, random_state=1,
                          client=client)  # fmt: skip
    z = zarr.open_array(str(tmp_path / "r.zarr" / "X"), mode="r")
    assert z.shards == (40, 3) and z.chunks == (20, 3)
    X = ref.X.compute()
    np.testing.assert_array_equal(ds.X.compute(), X)
    assert _attrs(tmp_path / "r.zarr")["digests"]["X_blocks"] == _blocks(X, 40, 3)


def test_cli_make_data_with_chunk_cols(tmp_path, capsys):
    path = str(tmp_path / "c.zarr")
    argv = ["make-data", path, "--n-samples", "60", "--n-features", "7", "--chunk-rows", "20",
            "--chunk-cols", "3", "--random-state", "2"]  # fmt: skip
    assert cli_main(argv) == 0
    ds = open_zarr(path)
    assert ds.column_chunks == (3, 3, 1)
    ref = make_regression(tmp_path / "r.zarr", 60, 7, chunk_rows=20, random_state=2, client=None)
    np.testing.assert_array_equal(ds.X.compute(), ref.X.compute())
    capsys.readouterr()
    assert cli_main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "chunks [20, 3]" in out and "of every row-chunk of X, y and every block of X" in out
    sparse = ["make-data", str(tmp_path / "s.zarr"), "--n-samples", "60", "--n-features", "7",
              "--sparse", "--chunk-cols", "3"]  # fmt: skip
    assert cli_main(sparse) == 2
    assert "--chunk-cols: not offered with --sparse" in capsys.readouterr().err


# ------------------------------------------------------------------ reading a chunk grid


@pytest.mark.parametrize("layout", ["zstd", "raw", "sharded"])
def test_row_reads_of_a_chunk_grid(tmp_path, layout):
    X, y = _data()
    kw = {"raw": {"compressor": None}, "sharded": {"inner_chunk_rows": 5}}.get(layout, {})
    path = tmp_path / "d.zarr"
    write_zarr(path, X, y, chunk_rows=ROWS, chunk_cols=COLS, **kw)
    Xr, yr, wr = read_row_chunks(path, [5, 1, 3])
    rows = np.r_[100:103, 20:40, 60:80]
    np.testing.assert_array_equal(Xr, X[rows])
    np.testing.assert_array_equal(yr, y[rows])
    assert wr is None and Xr.flags.c_contiguous
    np.testing.assert_array_equal(load_chunk(path, 2)[0], X[40:60])
    np.testing.assert_array_equal(read_row_arrays(path, [0])["X"], X[:20])
    # a missing column chunk of a row-chunk is a missing chunk of that row-chunk
    os.remove(_block_file(path, 3, 2))
    with pytest.raises(DataValidationError, match=rf"has no chunk 3 .*{_block_file(path, 3, 2)}"):
        load_chunk(path, 3)
    np.testing.assert_array_equal(load_chunk(path, 4)[0], X[80:100])


@pytest.mark.parametrize("out_of_core", [False, True])
def test_row_partitioned_fit_on_a_chunk_grid(client, tmp_path, out_of_core):
    X, y = _data(n=300, d=6)
    path = tmp_path / "d.zarr"
    write_zarr(path, X, y, chunk_rows=50, chunk_cols=4)
    res = fit(str(path), client=client, optimizer="lbfgs", out_of_core=out_of_core,
              max_epochs=200, tol=None, gtol=1e-10)  # fmt: skip
    A = np.column_stack([X, np.ones(len(X))])
    sol = np.linalg.lstsq(A, y, rcond=None)[0]
    np.testing.assert_allclose(res.coef_, sol[:-1], atol=1e-6)
    np.testing.assert_allclose(res.intercept_, sol[-1], atol=1e-6)


def test_dataset_pickles_with_its_column_chunks(tmp_path):
    X, y = _data()
    ds = write_zarr(tmp_path / "d.zarr", X, y, chunk_rows=ROWS, chunk_cols=COLS)
    back = pickle.loads(pickle.dumps(ds))
    assert back.column_chunks == (5, 5, 5, 2) and back.path == ds.path
    np.testing.assert_array_equal(back.X.compute(), X)
    memory = as_dataset((X, y), validate=False)
    assert memory.column_chunks is None
    assert pickle.loads(pickle.dumps(memory)).column_chunks is None
    with pytest.raises(DataValidationError, match="column_chunks"):
        daskgd.Dataset(ds.X, ds.y, column_chunks=(5, 5))


# ------------------------------------------------------------------------ column_blocks


def test_column_blocks_even_split():
    assert column_blocks(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert column_blocks(10, 1) == [(0, 10)]
    assert column_blocks(3, 5) == [(0, 1), (1, 2), (2, 3)]  # fewer columns than blocks
    for n in range(1, 40):
        for k in range(1, 12):
            got = column_blocks(n, k)
            ref = [(int(a[0]), int(a[-1]) + 1) for a in np.array_split(np.arange(n), min(n, k))]
            assert got == ref


def test_column_blocks_on_chunk_boundaries():
    assert column_blocks(20_000, 4, [5000] * 4) == [(0, 5000), (5000, 10000), (10000, 15000),
                                                   (15000, 20000)]  # fmt: skip
    assert column_blocks(17, 3, (5, 5, 5, 2)) == [(0, 5), (5, 10), (10, 17)]
    assert column_blocks(17, 9, (5, 5, 5, 2)) == [(0, 5), (5, 10), (10, 15), (15, 17)]
    assert column_blocks(17, 1, (5, 5, 5, 2)) == [(0, 17)]
    rng = np.random.default_rng(0)
    for _ in range(300):
        width, m = int(rng.integers(1, 9)), int(rng.integers(1, 30))
        last = int(rng.integers(1, width + 1))
        chunks = [width] * (m - 1) + [last]
        n, k = sum(chunks), int(rng.integers(1, 12))
        got = column_blocks(n, k, chunks)
        edges = set(np.cumsum([0, *chunks]).tolist())
        assert len(got) == min(k, m) and got[0][0] == 0 and got[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(got))
        assert all(c0 in edges and c1 in edges and c0 < c1 for c0, c1 in got)
        # a range holds floor or ceil of m / k chunks (one of a narrower last chunk's
        # ranges may hold one more), and no range is wider than the best split needs
        counts = [sum(1 for e in edges if c0 < e <= c1) for c0, c1 in got]
        assert max(counts) - min(counts) <= 2 and max(counts) <= -(-m // min(k, m)) + 1
    for bad in (0, -2):
        with pytest.raises(ValueError, match="n_blocks must be a positive int"):
            column_blocks(10, bad)
    with pytest.raises(ValueError, match="summing to n_features"):
        column_blocks(10, 2, (5, 4))
    with pytest.raises(ValueError, match="summing to n_features"):
        column_blocks(10, 2, (10, 0))


# ------------------------------------------------------------------------- read_columns


RANGES = [(0, 17), (0, 5), (5, 10), (15, 17), (10, 17), (3, 12), (6, 7), (16, 17), (4, 5)]


@pytest.mark.parametrize("layout", ["zstd", "raw", "sharded"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_read_columns_of_a_chunk_grid(tmp_path, layout, dtype):
    X, y = _data(dtype=dtype)
    kw = {"raw": {"compressor": None}, "sharded": {"inner_chunk_rows": 10}}.get(layout, {})
    write_zarr(tmp_path / "d.zarr", X, y, chunk_rows=ROWS, chunk_cols=COLS, **kw)
    for c0, c1 in RANGES:  # aligned with the chunks and not
        got = read_columns(tmp_path / "d.zarr", c0, c1)
        assert got.dtype == dtype and got.flags.c_contiguous and got.shape == (N, c1 - c0)
        np.testing.assert_array_equal(got, X[:, c0:c1])


@pytest.mark.parametrize("compressor", ["default", None])
def test_read_columns_of_one_column_chunk(tmp_path, compressor):
    X, y = _data()
    kw = {} if compressor == "default" else {"compressor": None}
    write_zarr(tmp_path / "d.zarr", X, y, chunk_rows=ROWS, **kw)
    for c0, c1 in RANGES:
        got = read_columns(str(tmp_path / "d.zarr"), c0, c1)
        assert got.flags.c_contiguous
        np.testing.assert_array_equal(got, X[:, c0:c1])
    # a row-chunk altered after the write is refused by its digest
    f = tmp_path / "d.zarr" / "X" / "c" / "2" / "0"
    shutil.copyfile(tmp_path / "d.zarr" / "X" / "c" / "0" / "0", f)
    with pytest.raises(DataValidationError, match=r"chunk 2 of array 'X' .* does not match its"):
        read_columns(tmp_path / "d.zarr", 1, 3)


def test_read_columns_of_a_missing_chunk_names_it(tmp_path):
    X, y = _data()
    path = tmp_path / "d.zarr"
    write_zarr(path, X, y, chunk_rows=ROWS, chunk_cols=COLS)
    gone = _block_file(path, 4, 2)
    os.remove(gone)
    expect = rf"array 'X' of the dataset {path} has no chunk 4 \(rows 80-99\): {gone} is missing"
    for c0, c1 in [(10, 15), (0, 17), (12, 16)]:
        with pytest.raises(DataValidationError, match=expect):
            read_columns(path, c0, c1)
    # ranges that do not touch it still read
    np.testing.assert_array_equal(read_columns(path, 0, 10), X[:, :10])
    np.testing.assert_array_equal(read_columns(path, 15, 17), X[:, 15:])


def test_read_columns_on_a_worker_names_it(client, tmp_path):
    X, y = _data()
    path = tmp_path / "d.zarr"
    write_zarr(path, X, y, chunk_rows=ROWS, chunk_cols=COLS)
    np.testing.assert_array_equal(client.submit(read_columns, path, 5, 10).result(), X[:, 5:10])
    os.remove(_block_file(path, 0, 1))
    with pytest.raises(DataValidationError, match=r"has no chunk 0 .* on worker tcp://"):
        client.submit(read_columns, path, 5, 10, pure=False).result()


def test_read_columns_checks_each_block_against_its_digest(tmp_path):
    X, y = _data()
    path = tmp_path / "d.zarr"
    write_zarr(path, X, y, chunk_rows=ROWS, chunk_cols=COLS)
    # rewritten through zarr: it decodes, only its digest tells
    zarr.open_array(str(path / "X"), mode="r+")[20:40, 10:15] = 1.0
    f = _block_file(path, 1, 2)
    expect = r"chunk \(1, 2\) of array 'X' \(rows 20-39, columns 10-14\) .* does not match its "
    expect += rf"digest \(crc32c 0x[0-9a-f]+, recorded 0x[0-9a-f]+\): {f} was altered"
    for c0, c1 in [(10, 15), (0, 17), (11, 12)]:  # aligned, and inside the block
        with pytest.raises(DataValidationError, match=expect):
            read_columns(path, c0, c1)
    np.testing.assert_array_equal(read_columns(path, 0, 10), X[:, :10])
    # garbage in another block: it cannot be decoded
    g = _block_file(path, 3, 0)
    g.write_bytes(b"\x13" * 64)
    with pytest.raises(DataValidationError, match=rf"chunk \(3, 0\) .* cannot be decoded .*{g}"):
        read_columns(path, 0, 5)


def test_read_columns_refuses_sparse_data_and_bad_ranges(tmp_path):
    X, y = _data()
    X[np.abs(X) < 1] = 0
    write_zarr(tmp_path / "s.zarr", sp.csr_matrix(X), y, chunk_rows=ROWS)
    with pytest.raises(ValueError, match="feature partitioning needs dense X"):
        read_columns(tmp_path / "s.zarr", 0, 3)
    write_zarr(tmp_path / "d.zarr", X, y, chunk_rows=ROWS)
    for c0, c1 in [(-1, 3), (3, 3), (5, 2), (0, 18)]:
        with pytest.raises(ValueError, match="not within the 17 columns"):
            read_columns(tmp_path / "d.zarr", c0, c1)
    with pytest.raises(FileNotFoundError):
        read_columns(tmp_path / "nothing.zarr", 0, 1)


# ---------------------------------------------------------------------- concat_features


def _parts(tmp_path, widths=(6, 4, 3), *, names=None, **kw):
    """Groups holding the same rows and y, X's columns split by ``widths``."""
    X, y = _data(d=sum(widths))
    paths, at = [], 0
    for k, w in enumerate(widths):
        path = tmp_path / f"p{k}.zarr"
        fn = None if names is None or names[k] is None else names[k]
        write_zarr(path, X[:, at : at + w], y, chunk_rows=ROWS, feature_names=fn,
                   **(kw if k == 0 else {}))  # fmt: skip
        paths.append(path)
        at += w
    return X, y, paths


def test_concat_features_puts_parts_side_by_side(tmp_path, monkeypatch):
    X, _, paths = _parts(tmp_path, sample_weight=np.linspace(1, 2, N))

    # the same y, recorded with the same row-chunks: its digests are compared, nothing read
    def no_reads(*a, **k):
        raise AssertionError("y was read")

    monkeypatch.setattr(column_parts, "read_row_arrays", no_reads)
    fb = concat_features(paths)
    assert isinstance(fb, FeatureBlocks) and fb.bounds == ((0, 6), (6, 10), (10, 13))
    assert fb.n_features == 13 and fb.n_samples == N and fb.dtype == np.float64
    assert fb.feature_names is None and not fb.is_sparse and fb.classes_ is None
    assert fb.targets is fb.parts[0] and fb.targets.sample_weight is not None
    assert "n_features=13" in repr(fb) and str(paths[2]) in repr(fb)
    whole = np.hstack([read_columns(p.path, 0, p.n_features) for p in fb.parts])
    np.testing.assert_array_equal(whole, X)
    back = pickle.loads(pickle.dumps(fb))
    assert back.bounds == fb.bounds and back.parts[1].path == str(paths[1])


def test_concat_features_names(tmp_path):
    _, _, paths = _parts(tmp_path, names=[["a", "b", "c", "d", "e", "f"], None, ["u", "v", "w"]])
    fb = concat_features(paths)
    assert fb.feature_names == ["a", "b", "c", "d", "e", "f", "x6", "x7", "x8", "x9", "u", "v", "w"]
    _, _, paths = _parts(tmp_path / "dup", widths=(2, 2), names=[["a", "b"], ["c", "a"]])
    with pytest.raises(DataValidationError, match=r"'a' is in part 0 \(column 0\) and part 1 "):
        concat_features(paths)


def test_concat_features_reads_y_when_its_chunks_differ(tmp_path):
    X, y = _data(d=5)
    write_zarr(tmp_path / "a.zarr", X[:, :2], y, chunk_rows=ROWS, chunk_cols=1)
    write_zarr(tmp_path / "b.zarr", X[:, 2:], y, chunk_rows=33)
    memory = as_dataset((X[:, :1], y), validate=False)
    fb = concat_features([tmp_path / "a.zarr", tmp_path / "b.zarr", memory], validate=False)
    assert fb.bounds == ((0, 2), (2, 5), (5, 6))
    assert fb.parts[0].column_chunks == (1, 1) and fb.parts[2].path is None
    y2 = y.copy()
    y2[70] += 1.0
    write_zarr(tmp_path / "c.zarr", X[:, 2:], y2, chunk_rows=33)
    with pytest.raises(DataValidationError, match=r"part 1 \(.*c.zarr\)'s y differs from part 0 "
                       r"\(.*a.zarr\)'s \(first at row 70\)"):  # fmt: skip
        concat_features([tmp_path / "a.zarr", tmp_path / "c.zarr"])


def test_concat_features_refuses_parts_that_disagree(tmp_path):
    X, y = _data(d=4)
    w = np.linspace(1, 2, N)
    a = tmp_path / "a.zarr"
    write_zarr(a, X[:, :2], y, chunk_rows=ROWS)

    def other(name, Xo=X[:, 2:], yo=y, **kw):
        write_zarr(tmp_path / name, Xo, yo, chunk_rows=ROWS, **kw)
        return tmp_path / name

    short = other("r.zarr", X[:100, 2:], y[:100])
    expect = rf"part 1 \({short}\) has 100 rows but part 0 \({a}\) has 103: the parts must hold"
    with pytest.raises(DataValidationError, match=expect):
        concat_features([a, short])
    y2 = y.copy()
    y2[5] = -y2[5]
    with pytest.raises(DataValidationError, match=r"y differs .*first at row 5"):
        concat_features([a, other("y.zarr", yo=y2)])
    with pytest.raises(DataValidationError, match=r"different dtypes \(part 0 .*: float64, "
                       r"part 1 .*: float32\)"):  # fmt: skip
        concat_features([a, other("f.zarr", X[:, 2:].astype(np.float32), y.astype(np.float32))])
    with pytest.raises(DataValidationError, match=r"part 1 .* holds sample_weight but part 0 .* "
                       r"does not.* Put sample_weight in the first group"):  # fmt: skip
        concat_features([a, other("w.zarr", sample_weight=w)])
    with pytest.raises(DataValidationError, match=r"holds offset but part 0 .* does not"):
        concat_features([a, other("o.zarr", offset=np.zeros(N))])
    aw = other("aw.zarr", X[:, :2], sample_weight=w)
    fb = concat_features([aw, other("w2.zarr", sample_weight=w)])  # the same weights: fine
    assert fb.targets.sample_weight is not None
    with pytest.raises(DataValidationError, match=r"part 1 .*'s sample_weight differs from "
                       r"part 0 .*'s \(first at row 0\)"):  # fmt: skip
        concat_features([aw, other("w3.zarr", sample_weight=w[::-1].copy())])
    Xs = X[:, 2:].copy()
    Xs[np.abs(Xs) < 1] = 0
    with pytest.raises(DataValidationError, match="sparse X: feature partitioning needs dense"):
        concat_features([a, other("s.zarr", sp.csr_matrix(Xs))])
    with pytest.raises(DataValidationError, match="at least one dataset"):
        concat_features([])
    with pytest.raises(TypeError, match="part 1 is a ndarray"):
        concat_features([a, X])


def test_concat_features_is_public():
    assert daskgd.concat_features is concat_features and daskgd.FeatureBlocks is FeatureBlocks
    for name in ("concat_features", "FeatureBlocks"):
        assert name in daskgd.__all__ and getattr(daskgd, name).__doc__
    for name in ("concat_features", "FeatureBlocks", "column_blocks", "read_columns"):
        assert name in daskgd.data.__all__
