"""Full-batch ranks map uncompressed chunk files instead of copying them, checked again at the end.

The reference is the copying read (:func:`daskgd.data.chunkio.read_row_arrays`): the mapped
rows are the same values, the same checks refuse the same damaged files, and a fit on the
mapped rows is the fit on the same data read another way (Zstandard chunks, read into one
array). A chunk file changed while a fit trains on it is an error, never a model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import daskgd
from daskgd.data import write_zarr
from daskgd.data.chunkio import read_row_arrays
from daskgd.data.mapped import map_row_chunks
from daskgd.errors import DataChangedError, DataValidationError
from daskgd.worker.batches import InMemoryBatches
from daskgd.worker.chunk_batches import ChunkBatches, open_batches


def _data(n: int = 250, d: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ np.arange(1.0, d + 1) + 0.5 + 0.1 * rng.standard_normal(n)
    return X, y, np.linspace(0.5, 1.5, n)


def _chunk_file(path: Path, name: str, i: int) -> Path:
    return path / name / "c" / str(i) / ("0" if name == "X" else "")


def _source(path: Path, chunks: list[int]) -> tuple:
    return ("zarr", str(path), chunks, None, [0] * len(chunks))


def _keep(y, sw, where):
    return y


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mapped_rows_are_the_rows_read(tmp_path, dtype):
    X, y, w = _data()
    path = tmp_path / "raw.zarr"
    write_zarr(path, X.astype(dtype), y, sample_weight=w, chunk_rows=100, compressor=None)
    chunks = [2, 0]  # the edge chunk (50 rows of a 100-row file) and the first
    mapped = map_row_chunks(path, chunks)
    assert mapped is not None and len(mapped.mapped) == 3 * len(chunks)
    read = read_row_arrays(path, chunks)
    got = [np.concatenate([p[k] for p in mapped.pieces]) for k in range(3)]
    for a, name in zip(got, ["X", "y", "sample_weight"], strict=True):
        np.testing.assert_array_equal(a, read[name])
        assert a.dtype == read[name].dtype
    assert all(p[3] is None for p in mapped.pieces)  # no offsets in this dataset
    X0 = mapped.pieces[0][0]
    assert X0.shape == (50, 4) and not X0.flags.writeable and X0.flags.c_contiguous
    mapped.verify()  # nothing changed


def test_what_cannot_be_mapped_is_read(tmp_path):
    X, y, _ = _data()
    write_zarr(tmp_path / "zstd.zarr", X, y, chunk_rows=100)
    assert map_row_chunks(tmp_path / "zstd.zarr", [0]) is None
    batches = open_batches(_source(tmp_path / "zstd.zarr", [0, 1, 2]), 1, 0, 0, _keep,
                           out_of_core=False)  # fmt: skip
    assert isinstance(batches, InMemoryBatches)
    write_zarr(tmp_path / "raw.zarr", X, y, chunk_rows=100, compressor=None)
    batches = open_batches(_source(tmp_path / "raw.zarr", [0, 1]), 4, 0, 0, _keep,
                           out_of_core=False)  # fmt: skip
    assert isinstance(batches, InMemoryBatches)  # mini-batches permute a copy anyway


def test_chunk_batches_curvature_is_the_whole_arrays(tmp_path):
    X, y, w = _data(n=300, d=5)
    path = tmp_path / "raw.zarr"
    write_zarr(path, X, y, sample_weight=w, chunk_rows=70, compressor=None)
    src = _source(path, [0, 1, 2, 3, 4])
    pieces = open_batches(src, 1, 0, 0, _keep, out_of_core=False)
    whole = InMemoryBatches(src, 1, 0, 0, _keep)
    assert isinstance(pieces, ChunkBatches) and pieces.n == whole.n == 300
    for a, b in zip(pieces.curvature(True, 0), whole.curvature(True, 0), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_damaged_files_are_refused_as_a_read_refuses_them(tmp_path):
    X, y, w = _data()
    path = tmp_path / "raw.zarr"
    write_zarr(path, X, y, sample_weight=w, chunk_rows=100, compressor=None)
    f = _chunk_file(path, "X", 1)
    data = f.read_bytes()
    f.write_bytes(data[:1000])
    with pytest.raises(DataValidationError, match=rf"chunk 1 of array 'X' .* wrong size: {f}"):
        map_row_chunks(path, [0, 1])
    changed = bytearray(data)
    changed[8] ^= 0x40
    f.write_bytes(bytes(changed))
    with pytest.raises(DataValidationError, match=r"chunk 1 of array 'X' .* does not match"):
        map_row_chunks(path, [1])
    _chunk_file(path, "sample_weight", 2).unlink()
    with pytest.raises(DataValidationError, match=r"array 'sample_weight' .* has no chunk 2"):
        map_row_chunks(path, [2])


@pytest.mark.parametrize("how", ["in place", "replaced", "removed"])
def test_a_chunk_file_changed_after_mapping_fails_the_check(tmp_path, how):
    X, y, _ = _data()
    path = tmp_path / "raw.zarr"
    write_zarr(path, X, y, chunk_rows=100, compressor=None)
    mapped = map_row_chunks(path, [0, 1])
    assert mapped is not None
    f = _chunk_file(path, "X", 1)
    if how == "in place":  # the same file, one value changed: the mapping sees it
        with open(f, "r+b") as fh:
            fh.seek(8)
            fh.write(np.float64(7.0).tobytes())
        assert mapped.pieces[1][0][0, 1] == 7.0
    elif how == "replaced":  # a new file, identical bytes: the mapping keeps the old one
        tmp = f.with_name("new")
        tmp.write_bytes(f.read_bytes())
        os.replace(tmp, f)
    else:
        f.unlink()
    with pytest.raises(DataChangedError, match=rf"chunk 1 of array 'X' .* changed while "
                       rf"the fit was reading it \({f} was rewritten"):  # fmt: skip
        mapped.verify()


def test_fit_on_mapped_chunks_is_the_fit_on_read_chunks(client, tmp_path):
    X, y, w = _data(n=2000, d=6, seed=1)
    write_zarr(tmp_path / "raw.zarr", X, y, sample_weight=w, chunk_rows=300, compressor=None)
    write_zarr(tmp_path / "zstd.zarr", X, y, sample_weight=w, chunk_rows=300)
    fits = {
        name: daskgd.fit(str(tmp_path / f"{name}.zarr"), client=client, optimizer="lbfgs",
                         alpha=1e-3, tol=None, gtol=1e-10, max_epochs=200)
        for name in ("raw", "zstd")
    }  # fmt: skip
    raw, zstd = fits["raw"], fits["zstd"]
    assert raw.converged_ and zstd.converged_
    # the same data, summed one piece per chunk (mapped) or in one array (read)
    np.testing.assert_allclose(raw.coef_, zstd.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(raw.intercept_, zstd.intercept_, rtol=1e-9, atol=1e-12)


def test_a_dataset_rewritten_during_a_fit_is_an_error(client, tmp_path):
    X, y, _ = _data(n=400)
    path = tmp_path / "raw.zarr"
    write_zarr(path, X, y, chunk_rows=100, compressor=None)
    f = _chunk_file(path, "X", 3)
    seen = []

    def rewrite(row):
        # the first epoch's row: the tasks hold their rows; change one, then stop the fit
        seen.append(row["epoch"])
        with open(f, "r+b") as fh:
            fh.seek(0)
            fh.write(np.float64(1e3).tobytes())
        return False

    with pytest.raises(DataChangedError, match=r"chunk 3 of array 'X' .* changed while"):
        daskgd.fit(str(path), client=client, optimizer="lbfgs", tol=None, max_epochs=10_000,
                   max_time=120, callback=rewrite)  # fmt: skip
    # the rows of epochs the driver got together with the first are given to it as well
    assert seen[0] == 1


def _labels(X: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(3).logistic(size=len(X))
    return np.where(X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.3 + 2 * noise > 0, 5, 2)


def test_cross_validation_on_mapped_chunks_is_the_one_on_read_chunks(client, tmp_path):
    X, _, w = _data(n=600)
    t = _labels(X)
    for name, codec in (("raw", {"compressor": None}), ("zstd", {})):
        write_zarr(tmp_path / f"{name}.zarr", X, t, sample_weight=w, chunk_rows=60, **codec)
    paths = {name: str(tmp_path / f"{name}.zarr") for name in ("raw", "zstd")}
    assert map_row_chunks(paths["raw"], [0]) is not None  # the rows are mapped...
    assert map_row_chunks(paths["zstd"], [0]) is None  # ...and read
    logistic = {k: daskgd.LogisticRegressionCV(Cs=5, tol=1e-10).fit(p) for k, p in paths.items()}
    ridge = {k: daskgd.RidgeCV(alphas=[0.1, 1.0, 10.0]).fit(p) for k, p in paths.items()}
    for fits in (logistic, ridge):
        raw, zstd = fits["raw"], fits["zstd"]
        # the same chunks' sums (the workers' may come in another order)
        np.testing.assert_allclose(raw.coef_, zstd.coef_, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(raw.intercept_, zstd.intercept_, rtol=1e-12, atol=1e-14)
    assert logistic["raw"].converged_ and logistic["raw"].C_ == logistic["zstd"].C_
    np.testing.assert_array_equal(logistic["raw"].scores_[5], logistic["zstd"].scores_[5])


def test_a_dataset_rewritten_during_a_cross_validation_is_an_error(client, tmp_path,
                                                                    monkeypatch):  # fmt: skip
    import daskgd.sklearn.cv_logistic as cv_logistic

    X, _, _ = _data(n=400)
    path = tmp_path / "raw.zarr"
    write_zarr(path, X, _labels(X), chunk_rows=50, compressor=None)
    f = _chunk_file(path, "X", 6)
    run_paths = cv_logistic.run_paths

    def rewrite_after(*args, **kwargs):
        # the path's rounds are done on the rows held on the workers: change one of them
        passes = run_paths(*args, **kwargs)
        with open(f, "r+b") as fh:
            fh.write(np.float64(1e3).tobytes())
        return passes

    monkeypatch.setattr(cv_logistic, "run_paths", rewrite_after)
    est = daskgd.LogisticRegressionCV(Cs=3)
    with pytest.raises(DataChangedError, match=r"chunk 6 of array 'X' .* changed while"):
        est.fit(str(path))
    assert not hasattr(est, "coef_")  # nothing that looks trained


def test_a_dataset_written_again_during_a_fit_is_an_error_read_or_mapped(client, tmp_path):
    """A task rerun after a worker died would read the dataset as it is then: the fit checks
    at its end that the dataset is still the one it opened (its write id and digests)."""
    from daskgd.data.trust import check_unchanged

    X, y, _ = _data(n=400)
    path = tmp_path / "zstd.zarr"  # read into the tasks' memory: their rows do not change
    write_zarr(path, X, y, chunk_rows=100)
    attrs = daskgd.open_zarr(path).attrs
    check_unchanged(str(path), None, attrs)  # unchanged

    def rewrite(row):
        write_zarr(path, X + 1.0, y, chunk_rows=100, overwrite=True)
        return False

    with pytest.raises(
        DataChangedError, match=r"zstd.zarr was written again, or removed, after the fit opened it"
    ):
        daskgd.fit(str(path), client=client, optimizer="lbfgs", tol=None, max_epochs=10_000,
                   max_time=120, callback=rewrite)  # fmt: skip
    with pytest.raises(DataChangedError, match="written again"):
        check_unchanged(str(path), None, attrs)
    import shutil

    shutil.rmtree(path)
    with pytest.raises(DataChangedError, match="or removed"):
        check_unchanged(str(path), None, attrs)
    check_unchanged(str(path), None, {})  # nothing recorded to compare: passes


@pytest.mark.parametrize("codec", ["raw", "zstd"])
def test_a_cross_validation_on_a_dataset_written_again_since_it_was_opened_is_an_error(
    client, tmp_path, codec
):
    """The folds, sizes and classes are the opened dataset's: rows read from another one
    (the same shape, or other row-chunks) would be a silent mix."""
    X, _, _ = _data(n=600)
    t = _labels(X)
    kw = {"compressor": None} if codec == "raw" else {}
    path = tmp_path / "d.zarr"
    write_zarr(path, X, t, chunk_rows=60, **kw)
    ds = daskgd.open_zarr(path)
    write_zarr(path, 2 * X, t, chunk_rows=60, overwrite=True, **kw)
    with pytest.raises(DataChangedError, match="written again, or removed, after the fit"):
        daskgd.RidgeCV(alphas=[1.0]).fit(ds)
    ds = daskgd.open_zarr(path)
    write_zarr(path, X, t, chunk_rows=30, overwrite=True, **kw)
    est = daskgd.LogisticRegressionCV(Cs=3)
    with pytest.raises(DataChangedError, match="written again"):
        est.fit(ds)
    assert not hasattr(est, "classes_") and not hasattr(est, "coef_")
    assert daskgd.LogisticRegressionCV(Cs=3).fit(daskgd.open_zarr(path)).converged_


def test_a_feature_partitioned_fit_checks_its_parts_at_the_end(client, tmp_path):
    X, y, _ = _data(n=400, d=4)
    paths = [tmp_path / "a.zarr", tmp_path / "b.zarr"]
    write_zarr(paths[0], X[:, :2], y, chunk_rows=100)
    write_zarr(paths[1], X[:, 2:], y, chunk_rows=100)
    parts = daskgd.concat_features([str(p) for p in paths])

    def rewrite(row):
        write_zarr(paths[1], X[:, 2:] + 1.0, y, chunk_rows=100, overwrite=True)
        return False

    with pytest.raises(DataChangedError, match=r"b.zarr was written again"):
        daskgd.fit(parts, client=client, partition="features", optimizer="lbfgs", tol=None,
                   max_epochs=10_000, max_time=120, callback=rewrite)  # fmt: skip


def test_a_chunk_task_checks_its_mapped_rows_after_its_function(tmp_path):
    """RidgeCV's and ElasticNetCV's passes (one task a chunk, ``ChunkTask``) check the rows
    they mapped once their function has read them."""
    from daskgd.sklearn.cv_tasks import ChunkTask, open_chunk

    X, y, _ = _data(n=200)
    path = tmp_path / "raw.zarr"
    write_zarr(path, X, y, chunk_rows=100, compressor=None)
    opened = {k: daskgd.open_zarr(path).attrs[k] for k in ("write_id", "digests")}
    f = _chunk_file(path, "X", 1)

    def column_sums(chunk):
        return chunk[0].sum(axis=0)

    task = ChunkTask(column_sums)
    got = task(open_chunk(str(path), 1, None, opened, 100), 1, np.float64, None, False)
    np.testing.assert_array_equal(got, X[100:].sum(axis=0))

    def sums_then_rewrite(chunk):
        out = chunk[0].sum(axis=0)
        with open(f, "r+b") as fh:  # the file changes while the pass holds its rows
            fh.write(np.float64(1e3).tobytes())
        return out

    task = ChunkTask(sums_then_rewrite)
    with pytest.raises(DataChangedError, match=r"chunk 1 of array 'X' .* changed while"):
        task(open_chunk(str(path), 1, None, opened, 100), 1, np.float64, None, False)
