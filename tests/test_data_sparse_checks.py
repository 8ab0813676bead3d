"""Sparse (CSR) datasets refuse bad input and damaged stores with errors naming the array,
the row-chunk and the row: bad structure or values on write, a group whose CSR layout or
attributes disagree, chunk files missing, altered or rewritten (never read as zeros), and
format versions. Real Zarr stores in tmp_path, a real LocalCluster."""

from __future__ import annotations

import re
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import zarr

from daskgd.data import (
    FORMAT_VERSION,
    Dataset,
    as_dataset,
    load_chunk,
    open_zarr,
    read_row_arrays,
    write_zarr,
)
from daskgd.errors import DataValidationError, IncompleteDatasetError


def bad_csr(kind: str, n: int = 300, at: int = 150) -> sp.csr_matrix:
    """``n`` x 20 rows of 2 non-zeros each, broken one way at row ``at`` (scipy refuses none
    of these ways when it builds a matrix from its arrays)."""
    indptr = np.arange(0, 2 * n + 1, 2)
    indices = np.tile([3, 7], n)
    data = np.ones(2 * n)
    if kind == "indptr decreases":
        indptr[at + 1] = indptr[at] - 1
    elif kind == "negative index":
        indices[2 * at] = -4
    elif kind == "index too large":
        indices[2 * at + 1] = 20
    elif kind in ("nan", "inf"):
        data[2 * at + 1] = np.nan if kind == "nan" else np.inf
    X = sp.csr_matrix((data, indices, indptr), shape=(n, 20))
    if kind == "indptr too short":
        X.indptr[-1] -= 1  # after the constructor, which trims indices to indptr[-1]
    return X


def bad_dask(kind: str) -> da.Array:
    """300 good rows in dask blocks of 100, block 1 replaced by one broken at its row 50."""

    def swap(block, block_info=None):
        return bad_csr(kind, 100, 50) if block_info[0]["chunk-location"][0] == 1 else block

    good = da.from_array(bad_csr("none"), chunks=(100, 20), asarray=False)
    return good.map_blocks(swap, meta=sp.csr_matrix((0, 20)))


STRUCTURE = {
    "indptr decreases": r"X\.indptr is not monotone at chunk 1, row 150",
    # the whole matrix's last row (chunk 2), or the last row of the dask block (chunk 1)
    "indptr too short": r"X\.indptr does not match X\.indices at (chunk 2, row 299|chunk 1, row "
    r"199) .*spans (599|199) entries but indices has (600|200)",
    "negative index": r"X\.indices has a column index -4 that is negative, at chunk 1, row 150",
    "index too large": r"X\.indices has a column index 20 that is >= the number of columns, 20, "
    r"at chunk 1, row 150",
}
VALUES = r"X contains NaN or inf values in chunk 1 \(.*first bad row 150"


@pytest.mark.parametrize("kind", list(STRUCTURE))
def test_bad_structure_is_refused_on_write(client, tmp_path, kind):
    X, y = bad_csr(kind), np.zeros(300)
    with pytest.raises(DataValidationError, match=STRUCTURE[kind]):
        write_zarr(tmp_path / "m.zarr", X, y, chunk_rows=100)
    with pytest.raises(DataValidationError, match=STRUCTURE[kind]):
        as_dataset((X, y), chunk_rows=100)
    assert not (tmp_path / "m.zarr").exists()
    # blocks of a dask array: checked where each is computed, naming that block and its row
    Xd = bad_dask(kind)
    with pytest.raises(DataValidationError, match=STRUCTURE[kind]):
        write_zarr(tmp_path / "d.zarr", Xd, da.zeros(300, chunks=100))
    with pytest.raises(DataValidationError, match=STRUCTURE[kind]):
        as_dataset((Xd, da.zeros(300, chunks=100))).X.compute()
    assert not (tmp_path / "d.zarr").exists()


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_bad_values_are_refused(client, tmp_path, kind):
    X, y = bad_csr(kind), np.zeros(300)
    Xd, yd = bad_dask(kind), da.zeros(300, chunks=100)
    for make in (
        lambda: write_zarr(tmp_path / "m.zarr", X, y, chunk_rows=100),
        lambda: write_zarr(tmp_path / "d.zarr", Xd, yd),
        lambda: as_dataset((X, y), chunk_rows=100),
        lambda: as_dataset((Xd, yd)),
    ):
        with pytest.raises(DataValidationError, match=VALUES):
            make()
    assert not (tmp_path / "m.zarr").exists() and not (tmp_path / "d.zarr").exists()
    # written unchecked: a scan (any group without a record of its check) finds them
    write_zarr(tmp_path / "u.zarr", X, y, chunk_rows=100, validate=False)
    with pytest.raises(DataValidationError, match=VALUES):
        open_zarr(tmp_path / "u.zarr")
    ds = open_zarr(tmp_path / "u.zarr", validate=False)
    with pytest.raises(DataValidationError, match=VALUES):
        ds.validate()


# ------------------------------------------------------------------- damaged stores


def _written(path: Path, n: int = 400, d: int = 30) -> sp.csr_matrix:
    X = sp.random(n, d, density=0.2, format="csr", random_state=7)
    write_zarr(path, X, np.arange(n) % 2, chunk_rows=100)
    return X


def _segment_file(path: Path, i: int) -> tuple[Path, Path]:
    g = zarr.open_group(str(path), mode="r")
    k = int(g["X/indptr"][i, 0]) // g["X"].attrs["segment"]
    return path / "X" / "indices" / "c" / str(k), path / "X" / "data" / "c" / str(k)


@pytest.mark.parametrize("part", ["indptr", "indices", "data"])
def test_missing_chunk_file_is_an_error_not_zeros(client, tmp_path, part):
    path = tmp_path / "s.zarr"
    X = _written(path)
    if part == "indptr":
        gone = path / "X" / "indptr" / "c" / "2" / "0"
    else:
        gone = _segment_file(path, 2)[part == "data"]
    gone.unlink()
    expect = rf"array 'X/{part}' of the dataset {path} has no chunk \d+ \(rows 200-299\)"
    where = re.escape(str(gone))
    with pytest.raises(DataValidationError, match=expect + f".*{where} is missing"):
        load_chunk(path, 2)
    with pytest.raises(DataValidationError, match=expect + " on worker tcp://"):
        client.submit(load_chunk, str(path), 2, pure=False).result()
    with pytest.raises(DataValidationError, match=expect):
        open_zarr(path, validate="full")
    ds = open_zarr(path)  # trusted record: opens, but reading the chunk is refused
    with pytest.raises(DataValidationError, match=expect):
        ds.X.compute()
    with pytest.raises(DataValidationError, match=expect):
        read_row_arrays(path, [0, 2])
    np.testing.assert_array_equal(load_chunk(path, 1)[0].toarray(), X[100:200].toarray())


def test_rewritten_chunk_does_not_match_its_digest(client, tmp_path):
    path = tmp_path / "s.zarr"
    _written(path)
    g = zarr.open_group(str(path), mode="r+")
    start = int(g["X/indptr"][1, 0])
    g["X/data"][start] = 1234.5  # zarr rewrites the chunk file: a valid file, other values
    with pytest.raises(DataValidationError, match=r"row-chunk 1 of array 'X/data' .*does not "
                       r"match its digest"):  # fmt: skip
        load_chunk(path, 1)
    load_chunk(path, 0)  # the others still read


def _undigested(path: Path) -> zarr.Group:
    """The group with its digests and record removed: only the structure checks are left."""
    g = zarr.open_group(str(path), mode="r+")
    attrs = dict(g.attrs)
    attrs.pop("digests")
    attrs.pop("checked")
    g.attrs.put(attrs)
    return g


def test_read_checks_the_structure_of_each_chunk(tmp_path):
    path = tmp_path / "s.zarr"
    X = _written(path)
    g = _undigested(path)
    ip, ind = g["X/indptr"], g["X/indices"]
    row = ip[1]  # row-chunk 1: rows 100-199
    r = int(np.argmax(np.diff(row[:101]) >= 2))  # a row with two indices or more
    a = int(row[r])
    cases = [
        (lambda: ind.__setitem__(a, 30), r"array 'X/indices' of the dataset .* has a column "
         rf"index 30 that is >= the number of columns, 30, at chunk 1, row {100 + r}"),
        (lambda: ind.__setitem__(a, -1), rf"column index -1 that is negative, at chunk 1, row "
         rf"{100 + r}"),
        (lambda: ind.__setitem__(slice(a, a + 2), ind[a : a + 2][::-1]),
         rf"array 'X/indices' .* is not sorted \(or has a duplicate\) within chunk 1, row "
         rf"{100 + r}"),
        (lambda: ip.__setitem__((1, r + 1), row[r] - 1), rf"array 'X/indptr' .* is not "
         rf"monotone at chunk 1, row {100 + r}"),
        (lambda: ip.__setitem__((1, 0), row[0] + 1), "does not start at a multiple of the "
         "segment size"),
        (lambda: ip.__setitem__((1, 100), ind.shape[0] + 5), "does not lie within X/indices"),
        (lambda: ip.__setitem__((1, 100), row[0] - 1), "does not lie within X/indices"),
    ]  # fmt: skip
    saved = (ip[:], ind[:])
    for damage, message in cases:
        damage()
        with pytest.raises(DataValidationError, match=message):
            load_chunk(path, 1)
        ip[:], ind[:] = saved
        np.testing.assert_array_equal(load_chunk(path, 1)[0].toarray(), X[100:200].toarray())


def test_layout_that_disagrees_with_the_attributes_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    _written(path)
    g = zarr.open_group(str(path), mode="r+")
    g["X"].attrs["shape"] = [400, 31]  # a column count the group does not have
    with pytest.raises(DataValidationError, match=r"X has shape \[400, 31\] .*n_features is 30"):
        open_zarr(path)
    g["X"].attrs["shape"] = [400, 30]
    g.attrs["n_features"] = 29
    with pytest.raises(DataValidationError, match="column or row count disagrees"):
        open_zarr(path)
    g.attrs["n_features"] = 30
    g["X"].attrs["segment"] = 7
    with pytest.raises(DataValidationError, match=r"array 'X/indices' has shape .* in chunks"):
        open_zarr(path)
    g["X"].attrs["segment"] = g["X/indices"].chunks[0]
    g["X"].attrs["nnz"] = 10**9
    with pytest.raises(DataValidationError, match="attribute nnz"):
        open_zarr(path)


def test_y_chunks_must_match_the_row_chunks(tmp_path):
    path = tmp_path / "s.zarr"
    _written(path)
    g = zarr.open_group(str(path), mode="r+")
    y = g["y"][:]
    del g["y"]
    g.create_array("y", data=y, chunks=(50,))
    with pytest.raises(DataValidationError, match="y is stored in row-chunks of 50 rows but X"):
        open_zarr(path, validate=False)
    X = da.from_array(sp.random(10, 3, format="csr"), chunks=(5, 3), asarray=False)
    with pytest.raises(DataValidationError, match="y and X have different row chunks"):
        Dataset(X, da.zeros(10, chunks=2))


def test_a_lost_part_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    _written(path)
    del zarr.open_group(str(path), mode="r+")["X/data"]
    with pytest.raises(DataValidationError, match="has no array 'X/data': its X is stored as CSR"):
        open_zarr(path)


# ---------------------------------------------------------------------------- versions


def test_version_1_dense_groups_still_open(tmp_path):
    # a group as daskgd 1's write_zarr left it (format version 1, no x_format attribute)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 3)), rng.standard_normal(60)
    g = zarr.open_group(str(tmp_path / "v1.zarr"), mode="w", zarr_format=3)
    g.create_array("X", data=X, chunks=(20, 3))
    g.create_array("y", data=y, chunks=(20,))
    g.attrs.update({"format": "daskgd", "format_version": 1, "complete": True})
    ds = open_zarr(tmp_path / "v1.zarr")
    assert not ds.is_sparse and ds.nnz == 180
    np.testing.assert_array_equal(ds.X.compute(), X)
    np.testing.assert_array_equal(load_chunk(tmp_path / "v1.zarr", 1)[0], X[20:40])
    # and dense groups written now keep version 1
    assert write_zarr(tmp_path / "d.zarr", X, y).attrs["format_version"] == 1


def test_versions_that_do_not_fit_are_refused(tmp_path):
    path = tmp_path / "s.zarr"
    _written(path)
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(DataValidationError, match=r"newer daskgd .*upgrade daskgd"):
        open_zarr(path)
    g.attrs["format_version"] = 1
    with pytest.raises(DataValidationError, match="CSR data is format version 2 or later"):
        open_zarr(path)
    g.attrs["format_version"] = 2
    g.attrs["complete"] = False
    with pytest.raises(IncompleteDatasetError):
        open_zarr(path)
