"""read_row_chunks against zarr itself, on every layout (direct reads and zarr's fallback)."""

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec

from daskgd.data import write_zarr
from daskgd.data.chunkio import direct_folder, read_row_chunks
from daskgd.errors import DataValidationError


def _group(path, X, y, *, chunks, x_chunks=None, codecs=None, w=None, skip_write=()):
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    kw = {} if codecs is None else {"serializer": codecs, "compressors": None}
    zX = g.create_array("X", shape=X.shape, dtype=X.dtype, chunks=x_chunks or (chunks, X.shape[1]),
                        fill_value=0, **kw)  # fmt: skip
    zy = g.create_array("y", shape=y.shape, dtype=y.dtype, chunks=(chunks,), fill_value=0)
    for i in range(-(-len(y) // chunks)):
        if i in skip_write:
            continue
        sl = slice(i * chunks, (i + 1) * chunks)
        zX[sl] = X[sl]
        zy[sl] = y[sl]
    if w is not None:
        g.create_array("sample_weight", data=w, chunks=(chunks,))
    return g


def _expected(X, y, rows, chunks):
    idx = np.concatenate([np.arange(i * rows, min((i + 1) * rows, len(y))) for i in chunks])
    return X[idx], y[idx]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("compressor", [None, "default"])
def test_matches_zarr(tmp_path, dtype, compressor):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1003, 7)).astype(dtype)
    y = rng.standard_normal(1003).astype(dtype)
    w = rng.random(1003)
    path = str(tmp_path / "d.zarr")
    kw = {} if compressor == "default" else {"compressor": None}
    write_zarr(path, X, y, sample_weight=w, chunk_rows=100, **kw)
    chunks = [10, 3, 0, 7]  # the edge chunk (10: 3 rows), out of order
    Xr, yr, wr = read_row_chunks(path, chunks)
    eX, ey = _expected(X, y, 100, chunks)
    assert Xr.flags.c_contiguous and Xr.dtype == dtype
    np.testing.assert_array_equal(Xr, eX)
    np.testing.assert_array_equal(yr, ey)
    np.testing.assert_array_equal(wr, _expected(X, w, 100, chunks)[1])
    g = zarr.open_group(path, mode="r")
    assert (direct_folder(g["X"]) is not None) == (compressor is None)


def test_sharded_reads_whole_shards(tmp_path):
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((950, 4)), rng.standard_normal(950)
    path = str(tmp_path / "s.zarr")
    write_zarr(path, X, y, chunk_rows=200, inner_chunk_rows=50)
    Xr, yr, _ = read_row_chunks(path, [4, 1])
    eX, ey = _expected(X, y, 200, [4, 1])
    np.testing.assert_array_equal(Xr, eX)
    np.testing.assert_array_equal(yr, ey)


def test_layouts_zarr_must_read(tmp_path):
    """Foreign byte order and split columns go through zarr; a never-written chunk is refused.

    Zarr reads a chunk that was never written as its fill value; a training set is never
    meant to hold rows of zeros that are not in its files, so a missing chunk is an error
    that names it, whichever way the chunk would be read.
    """
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((300, 6)), rng.standard_normal(300)
    other = "big" if np.little_endian else "little"
    cases = {
        "endian": {"codecs": BytesCodec(endian=other)},
        "columns": {"x_chunks": (100, 3)},
    }
    for name, kw in cases.items():
        g = _group(tmp_path / f"{name}.zarr", X, y, chunks=100, **kw)
        Xr, yr, _ = read_row_chunks(str(tmp_path / f"{name}.zarr"), [2, 1, 0])
        np.testing.assert_array_equal(Xr, g["X"][:][np.r_[200:300, 100:200, 0:100]], name)
        np.testing.assert_array_equal(yr, g["y"][:][np.r_[200:300, 100:200, 0:100]], name)
    for name, kw in {
        "missing": {"codecs": BytesCodec(), "skip_write": (1,)},  # read directly
        "missing-zstd": {"skip_write": (1,)},  # read through zarr
        "missing-columns": {"x_chunks": (100, 3), "skip_write": (1,)},
    }.items():
        _group(tmp_path / f"{name}.zarr", X, y, chunks=100, **kw)
        with pytest.raises(
            DataValidationError, match=r"array 'X' .* has no chunk 1 \(rows 100-199\)"
        ):
            read_row_chunks(str(tmp_path / f"{name}.zarr"), [2, 1, 0])
        np.testing.assert_array_equal(
            read_row_chunks(str(tmp_path / f"{name}.zarr"), [2])[0], X[200:]
        )
    assert direct_folder(zarr.open_group(str(tmp_path / "missing.zarr"))["X"]) is not None
    assert direct_folder(zarr.open_group(str(tmp_path / "endian.zarr"))["X"]) is None


def test_chunk_out_of_range(tmp_path):
    path = str(tmp_path / "d.zarr")
    write_zarr(path, np.ones((10, 2)), np.ones(10), chunk_rows=5)
    with pytest.raises(IndexError, match="2 row-chunks"):
        read_row_chunks(path, [2])


@pytest.mark.parametrize("checksum", [False, True])
def test_zstd_chunks_are_decoded_in_place_like_zarr(tmp_path, checksum):
    """Zstandard chunk files are decompressed by numcodecs into their rows: same values."""
    from zarr.codecs import ZstdCodec

    from daskgd.data.chunkio import direct_reader

    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((250, 3)), rng.standard_normal(250)
    codec = ZstdCodec(level=3, checksum=checksum)
    write_zarr(tmp_path / "z.zarr", X, y, chunk_rows=100, compressor=codec)
    g = zarr.open_group(str(tmp_path / "z.zarr"), mode="r")
    folder, decoder = direct_reader(g["X"], 100)
    assert folder is not None and type(decoder).__name__ == "Zstd"
    assert direct_reader(g["X"], 50) == (None, None)  # rows that are not whole chunks
    Xr, yr, _ = read_row_chunks(tmp_path / "z.zarr", [2, 0, 1])  # the edge chunk first
    np.testing.assert_array_equal(Xr, np.concatenate([X[200:], X[:200]]))
    np.testing.assert_array_equal(yr, np.concatenate([y[200:], y[:200]]))
    # a plain zarr group (zarr's default codecs: bytes + zstd) takes the same path
    p = zarr.open_group(str(tmp_path / "p.zarr"), mode="w", zarr_format=3)
    p.create_array("X", data=X, chunks=(100, 3))
    assert direct_reader(p["X"], 100)[1] is not None
    # sharded or otherwise compressed arrays go through zarr
    write_zarr(tmp_path / "s.zarr", X, y, chunk_rows=100, inner_chunk_rows=50)
    s = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert direct_reader(s["X"], 100) == (None, None)
