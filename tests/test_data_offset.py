"""Offsets in the data: the optional ``offset`` array of a dataset (written, opened, checked,
trusted, read by the training tasks in memory and out of core) and ``daskgd.fit(offset=)``,
on real Zarr stores and the session's LocalCluster. The oracle of the fits: least squares
with offsets is least squares on ``y - offset`` (closed form)."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr

import daskgd
from daskgd import Dataset, as_dataset, fit, load_chunk, open_zarr, write_zarr
from daskgd.cli.main import main
from daskgd.data import read_row_arrays, read_row_chunks
from daskgd.errors import DataValidationError


def _data(n=600, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    offset = rng.uniform(-1.0, 1.0, n)
    y = X @ np.arange(1.0, d + 1) + 0.5 + offset + 0.1 * rng.standard_normal(n)
    return X, y, offset


def _lstsq(X, y, offset):
    """The least squares optimum with offsets: regress y - offset on [X, 1]."""
    A = np.column_stack([X, np.ones(len(y))])
    sol = np.linalg.lstsq(A, y - offset, rcond=None)[0]
    return sol[:-1], sol[-1]


def test_write_open_and_read_an_offset(tmp_path):
    X, y, off = _data()
    w = np.linspace(0.5, 2.0, len(y))
    path = str(tmp_path / "o.zarr")
    ds = write_zarr(path, X, y, w, offset=off, chunk_rows=150)
    assert ds.offset is not None and ds.offset.chunks == ds.y.chunks
    assert "offset" in repr(ds)
    opened = open_zarr(path)  # trusted: the record of the write's check covers the offsets
    assert opened.values_checked and opened.offset.dtype == np.float64
    np.testing.assert_array_equal(opened.offset.compute(), off)
    got = read_row_arrays(path, [3, 0])
    np.testing.assert_array_equal(got["offset"], np.concatenate([off[450:], off[:150]]))
    np.testing.assert_array_equal(got["sample_weight"][:150], w[450:])
    # the readers without offsets keep their shapes: (X, y, sample_weight)
    assert len(read_row_chunks(path, [1])) == 3 and len(load_chunk(path, 1)) == 3
    # a dataset without offsets has none
    plain = write_zarr(str(tmp_path / "p.zarr"), X, y, chunk_rows=150)
    assert plain.offset is None and "offset" not in read_row_arrays(plain.path, [0])


def test_dask_and_pandas_offsets_are_written_by_the_workers(tmp_path, client):
    X, y, off = _data()
    path = str(tmp_path / "d.zarr")
    write_zarr(path, da.from_array(X, chunks=(200, 4)), da.from_array(y, chunks=200),
               offset=da.from_array(off, chunks=100), chunk_rows=200)  # fmt: skip
    np.testing.assert_array_equal(open_zarr(path).offset.compute(), off)
    frame = pd.DataFrame(X, columns=list("abcd"))
    ds = write_zarr(str(tmp_path / "f.zarr"), frame, pd.Series(y), offset=pd.Series(off))
    np.testing.assert_array_equal(ds.offset.compute(), off)


def test_info_lists_the_offset_array(tmp_path, capsys):
    X, y, off = _data()
    path = str(tmp_path / "i.zarr")
    write_zarr(path, X, y, offset=off, chunk_rows=200)
    assert main(["info", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arrays"]["offset"]["shape"] == [600]
    assert info["arrays"]["offset"]["row_chunk"] == 200


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_offsets_are_refused_where_they_enter(tmp_path, client, bad):
    X, y, off = _data()
    off[123] = bad
    with pytest.raises(DataValidationError, match=r"offset contains NaN or inf.*np.log"):
        write_zarr(str(tmp_path / "n.zarr"), X, y, offset=off, chunk_rows=100)
    assert not (tmp_path / "n.zarr").exists()
    with pytest.raises(DataValidationError, match="offset contains NaN or inf values in chunk 1"):
        write_zarr(str(tmp_path / "n.zarr"), da.from_array(X, chunks=(100, 4)), y,
                   offset=da.from_array(off, chunks=100), chunk_rows=100)  # fmt: skip
    with pytest.raises(DataValidationError, match=r"offset contains NaN or inf.*row 123"):
        as_dataset((X, y), offset=off)
    with pytest.raises(DataValidationError, match=r"offset contains NaN or inf.*row 123"):
        as_dataset((da.from_array(X, chunks=(100, 4)), y), offset=off, client=client)
    # written unchecked: the scan of open_zarr refuses it, and so does a training task
    path = str(tmp_path / "u.zarr")
    write_zarr(path, X, y, offset=off, chunk_rows=100, validate=False)
    with pytest.raises(DataValidationError, match=r"offset contains NaN or inf.*chunk 1"):
        open_zarr(path, client=client)
    with pytest.raises(DataValidationError, match=r"offset \(rank \d.*must be finite"):
        fit(path, validate=False, optimizer="lbfgs", max_epochs=5, client=client)


def test_misaligned_or_missing_offsets_are_refused(tmp_path, client):
    X, y, off = _data()
    with pytest.raises(DataValidationError, match=r"one value per row of X \(600,\)"):
        as_dataset((X, y), offset=off[:-1])
    with pytest.raises(DataValidationError, match=r"one value per row of X \(600,\)"):
        write_zarr(str(tmp_path / "s.zarr"), X, y, offset=off[:, None])
    with pytest.raises(DataValidationError, match="offset and X have different row chunks"):
        Dataset(da.from_array(X, chunks=(300, 4)), da.from_array(y, chunks=300),
                offset=da.from_array(off, chunks=200))  # fmt: skip
    # a plain Zarr group whose offset is chunked otherwise than X
    path = str(tmp_path / "z.zarr")
    g = zarr.open_group(path, mode="w", zarr_format=3)
    for name, a, rows in (("X", X, 200), ("y", y, 200), ("offset", off, 150)):
        g.create_array(name, shape=a.shape, dtype=a.dtype, chunks=(rows, *a.shape[1:]))[:] = a
    with pytest.raises(DataValidationError, match="offset is stored in row-chunks of 150"):
        open_zarr(path)
    # a daskgd dataset whose offset array was deleted after the write
    path = str(tmp_path / "gone.zarr")
    write_zarr(path, X, y, offset=off, chunk_rows=200)
    del zarr.open_group(path, mode="a", zarr_format=3)["offset"]
    with pytest.raises(DataValidationError, match=r"no array 'offset'.*was deleted"):
        open_zarr(path)


def _check_lstsq(res, X, y, off):
    coef, b = _lstsq(X, y, off)
    np.testing.assert_allclose(res.coef_, coef, rtol=0, atol=1e-7)
    np.testing.assert_allclose(res.intercept_, b, rtol=0, atol=1e-7)


def test_fit_with_offsets_from_every_source(tmp_path, client):
    X, y, off = _data()
    kw = {"optimizer": "lbfgs", "max_epochs": 200, "tol": None, "gtol": 1e-10, "client": client}
    _check_lstsq(fit((X, y), offset=off, **kw), X, y, off)
    Xd, yd = da.from_array(X, chunks=(150, 4)), da.from_array(y, chunks=150)
    _check_lstsq(fit((Xd, yd), offset=da.from_array(off, chunks=100), **kw), X, y, off)
    path = str(tmp_path / "t.zarr")
    write_zarr(path, X, y, offset=off, chunk_rows=150)
    _check_lstsq(fit(path, **kw), X, y, off)
    _check_lstsq(fit(path, out_of_core=True, **kw), X, y, off)
    # an offset given with a path replaces the stored one (read through dask)
    other = -2.0 * off
    _check_lstsq(fit(path, offset=other, **kw), X, y, other)
    _check_lstsq(fit(open_zarr(path), offset=other, **kw), X, y, other)
    # and without offsets, the plain least squares
    _check_lstsq(fit((X, y), **kw), X, y, np.zeros_like(off))


def test_fit_async_takes_offsets(cluster):
    import asyncio

    from distributed import Client

    X, y, off = _data()

    async def main():
        async with Client(cluster.scheduler_address, asynchronous=True) as c:
            return await daskgd.fit_async((X, y), offset=off, client=c, optimizer="lbfgs",
                                          max_epochs=200, tol=None, gtol=1e-10)  # fmt: skip

    _check_lstsq(asyncio.run(main()), X, y, off)


def test_mini_batches_permute_the_offsets_with_their_rows(tmp_path, client):
    """In memory and out of core, each batch's offsets are those of its rows: with the
    offsets folded into y the fit is the same, step for step."""
    X, y, off = _data(n=400)
    path = str(tmp_path / "b.zarr")
    write_zarr(path, X, y, offset=off, chunk_rows=100)
    folded = str(tmp_path / "f.zarr")
    write_zarr(folded, X, y - off, chunk_rows=100)
    kw = {"batch_size": 50, "learning_rate": 0.05, "max_epochs": 3, "tol": None,
          "random_state": 0, "client": client}  # fmt: skip
    for ooc in (False, True):
        a = fit(path, out_of_core=ooc, **kw)
        b = fit(folded, out_of_core=ooc, **kw)
        np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-12, atol=1e-12)
        assert [h["loss"] for h in a.history] == pytest.approx([h["loss"] for h in b.history])


def test_multi_class_fits_refuse_offsets(client):
    X, _, off = _data(n=300)
    labels = np.arange(300) % 3
    with pytest.raises(DataValidationError, match="n_classes=3 has one margin per class"):
        fit((X, labels), offset=off, loss="log_loss", n_classes=3, optimizer="lbfgs",
            max_epochs=3, client=client)  # fmt: skip


def test_offsets_are_exported_where_the_readme_says():
    assert daskgd.write_zarr is write_zarr
    import inspect

    assert "offset" in inspect.signature(daskgd.fit).parameters
    assert "offset" in inspect.signature(daskgd.fit_async).parameters
    assert "offset" in inspect.signature(daskgd.as_dataset).parameters
