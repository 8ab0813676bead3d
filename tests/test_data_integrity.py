"""Data integrity: no silent wrong result from a path, a chunk file or an overwrite.

Zarr reads a chunk that is not there as its fill value, without a word. These tests break
datasets on disk the ways a user's do (a relative path on a cluster whose workers run
elsewhere, a deleted, truncated, oversized, corrupt or altered chunk file, a whole array
gone, an overwrite that fails) and check that each one is a clear error naming the array,
the chunk, the file and, on a worker, the worker, or for paths that it simply works.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from _subprocess import (
    scheduler_address,
    scheduler_command,
    stop_processes,
    subprocess_env,
    worker_command,
)
from distributed import Client

import daskgd
from daskgd.cli import main as cli_main
from daskgd.data import load_chunk, open_zarr, write_zarr
from daskgd.data.chunkio import chunk_digest, read_row_chunks
from daskgd.data.synthetic import make_regression
from daskgd.driver import fit
from daskgd.errors import DataNotFoundError, DataValidationError

COEF = np.array([1.0, -2.0, 0.5, 3.0])


def _xy(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    return X, X @ COEF + 1.0 + 0.01 * rng.standard_normal(n)


def _chunk_file(path: Path, name: str, i: int) -> Path:
    return path / name / "c" / str(i) / ("0" if name == "X" else "")


# ------------------------------------------------------------------ a real cluster elsewhere


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A ``dask scheduler`` and 2 ``dask worker`` processes whose working directory is not ours.

    Yields the scheduler's address and the workers' working directory.
    """
    cwd = tmp_path_factory.mktemp("workers-cwd")
    sf = cwd / "scheduler.json"
    env = subprocess_env()
    common = {"cwd": cwd, "env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen(scheduler_command(sf), **common)]
    try:
        address = scheduler_address(sf, procs[0], tries=1200)
        for _ in range(2):
            procs.append(subprocess.Popen(worker_command(sf), **common))
        with Client(address) as c:
            c.wait_for_workers(2, timeout=120)
        yield address, cwd
    finally:
        stop_processes(procs)


def test_relative_path_on_a_cluster_with_another_working_directory(
    elsewhere, tmp_path, monkeypatch
):
    """A relative path names the driver's dataset on every worker: fit, estimators, the CLI."""
    address, workers_cwd = elsewhere
    here = tmp_path / "driver"
    here.mkdir()
    monkeypatch.chdir(here)
    X, y = _xy()
    write_zarr("reg.zarr", X, y, chunk_rows=100)
    assert not (workers_cwd / "reg.zarr").exists()
    sol = np.linalg.lstsq(np.column_stack([X, np.ones(len(y))]), y, rcond=None)[0]

    res = fit("reg.zarr", client=address, learning_rate=0.5, max_epochs=300, tol=None, gtol=1e-10)
    np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=1e-6)

    reg = daskgd.SGDRegressor(client=address, batch_size=None, learning_rate="constant",
                              eta0=0.3, max_iter=300, tol=None, alpha=0.0, verbose=0)  # fmt: skip
    reg.fit("reg.zarr")
    np.testing.assert_allclose(reg.coef_, sol[:4], atol=1e-3)

    rc = cli_main(["fit", "reg.zarr", "--scheduler", address, "--max-epochs", "200",
                   "--output", "model.json"])  # fmt: skip
    assert rc == 0
    model = json.loads((here / "model.json").read_text())
    coef = np.asarray(model["coef"], dtype=float)
    np.testing.assert_allclose(coef.ravel(), sol[:4], atol=0.05)

    # a plain Zarr group (no daskgd attributes): the classes are found by the workers
    rng = np.random.default_rng(3)
    Xc = rng.standard_normal((300, 3))
    yc = np.argmax(Xc @ rng.standard_normal((3, 3)), axis=1).astype(np.int64)
    g = zarr.open_group("clf.zarr", mode="w", zarr_format=3)
    g.create_array("X", data=Xc, chunks=(100, 3))
    g.create_array("y", data=yc, chunks=(100,), config={"write_empty_chunks": True})
    clf = daskgd.LogisticRegression(client=address, max_iter=50, verbose=0).fit("clf.zarr")
    assert clf.classes_.tolist() == [0, 1, 2]
    assert clf.score(Xc, yc) > 0.8


def test_path_a_worker_cannot_see(elsewhere, tmp_path, monkeypatch):
    """A path that exists for the driver but not on the workers: an error naming both.

    ``/proc/self/cwd/...`` is an absolute path that names the driver's folder in the
    driver and the workers' own working directory on a worker, as a path on a disk that
    only the driver's machine has would.
    """
    address, _ = elsewhere
    here = tmp_path / "driver"
    here.mkdir()
    monkeypatch.chdir(here)
    X, y = _xy()
    write_zarr("reg.zarr", X, y, chunk_rows=100)
    path = "/proc/self/cwd/reg.zarr"
    assert open_zarr(path, validate=False).n_samples == 400  # the driver sees it
    with Client(address) as c:
        workers = list(c.scheduler_info()["workers"])
        for validate in (True, False):
            with pytest.raises(DataNotFoundError) as info:
                fit(path, client=c, validate=validate, max_epochs=2)
            msg = str(info.value)
            assert path in msg and "does not exist on worker tcp://127.0.0.1:" in msg
            assert any(w in msg for w in workers)
        with pytest.raises(DataNotFoundError, match=r"does not exist on worker tcp://"):
            c.submit(load_chunk, "reg.zarr", 0, pure=False).result()
        with pytest.raises(DataNotFoundError, match=r"does not exist on worker tcp://"):
            fit(path, client=c, validate=False, out_of_core=True, max_epochs=2)


# ------------------------------------------------------------------ path forms


def test_relative_home_and_file_url_paths_are_resolved(tmp_path, monkeypatch, capsys):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    X, y = _xy(50)
    ds = write_zarr("~/h.zarr", X, y)
    assert ds.path == str(home / "h.zarr") and (home / "h.zarr" / "zarr.json").exists()
    assert not (cwd / "~").exists()
    assert open_zarr("~/h.zarr").path == str(home / "h.zarr")
    ds = write_zarr("sub/r.zarr", X, y)
    assert ds.path == str(cwd / "sub" / "r.zarr")
    ds = open_zarr("file://sub/r.zarr")
    assert ds.path == f"file://{cwd}/sub/r.zarr"
    np.testing.assert_array_equal(ds.X.compute(), X)
    np.testing.assert_array_equal(load_chunk("sub/r.zarr", 0)[0], X)
    assert cli_main(["info", "sub/r.zarr", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(cwd / "sub" / "r.zarr")


# ------------------------------------------------------------------ missing chunks


LAYOUTS = {
    "raw": {"compressor": None},
    "zstd": {},
    "sharded": {"inner_chunk_rows": 25},
}


def _dataset(path: Path, layout: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X, y = _xy(400)
    w = np.linspace(0.5, 1.5, 400)
    write_zarr(path, X, y, sample_weight=w, chunk_rows=100, **LAYOUTS[layout])
    return X, y, w


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", ["X", "y", "sample_weight"])
def test_missing_chunk_is_an_error_naming_array_and_chunk(client, tmp_path, layout, name):
    path = tmp_path / "d.zarr"
    _dataset(path, layout)
    os.remove(_chunk_file(path, name, 2))
    expect = rf"array '{name}' of the dataset {path} has no chunk 2 \(rows 200-299\)"
    # a scan reads every chunk; validate=True trusts the record of the write's check (see
    # test_data_trust.py), and then the first read refuses the chunk, as below
    with pytest.raises(DataValidationError, match=expect):
        open_zarr(path, validate="full")
    with pytest.raises(DataValidationError, match=expect):
        load_chunk(path, 2)
    with pytest.raises(DataValidationError, match=expect + " on worker tcp://"):
        client.submit(load_chunk, path, 2, pure=False).result()
    ds = open_zarr(path, validate=False)  # metadata only: opens, but reading is refused
    with pytest.raises(DataValidationError, match=expect):
        ds.X.compute() if name == "X" else (ds.y if name == "y" else ds.sample_weight).compute()
    for out_of_core in (False, True):
        with pytest.raises(DataValidationError, match=expect):
            fit(path, client=client, validate=False, out_of_core=out_of_core, max_epochs=2)
    # the other chunks still read
    np.testing.assert_array_equal(load_chunk(path, 1)[0], _xy(400)[0][100:200])


def test_missing_chunk_found_with_validation_on_when_fitting(client, tmp_path):
    path = tmp_path / "d.zarr"
    _dataset(path, "raw")
    os.remove(_chunk_file(path, "X", 1))
    with pytest.raises(DataValidationError, match=r"array 'X' .* has no chunk 1"):
        fit(str(path), client=client, max_epochs=2)
    with pytest.raises(DataValidationError, match=r"array 'X' .* has no chunk 1"):
        daskgd.SGDRegressor(client=client, verbose=0, max_iter=2).fit(str(path))


def test_whole_array_missing(client, tmp_path):
    path = tmp_path / "d.zarr"
    _dataset(path, "zstd")
    ds = open_zarr(path, validate=False)
    shutil.rmtree(path / "sample_weight")
    with pytest.raises(
        DataNotFoundError, match=r"array 'sample_weight' of the dataset .* not there"
    ):
        ds.sample_weight.compute()
    with pytest.raises(DataValidationError, match="no array 'sample_weight' on worker tcp://"):
        fit(ds, client=client, validate=False, max_epochs=2)
    with pytest.raises(DataValidationError, match="no array 'sample_weight', but it was written"):
        open_zarr(path)
    shutil.rmtree(path / "X")
    with pytest.raises(DataNotFoundError, match=r"array 'X' of the dataset .* not there on worker"):
        client.compute(ds.X).result()
    with pytest.raises(DataValidationError, match="no array 'X'"):
        open_zarr(path)


def test_every_chunk_is_written_even_one_of_zeros(client, tmp_path):
    """Zarr leaves out chunks equal to the fill value; daskgd writes them, so none is missing."""
    X, _ = _xy(400)
    X[100:200] = 0.0
    y = np.r_[np.zeros(200), np.ones(200)].astype(np.int64)  # chunks 0 and 1 all class 0
    write_zarr(tmp_path / "n.zarr", X, y, chunk_rows=100)
    write_zarr(tmp_path / "d.zarr", da.from_array(X, chunks=100), da.from_array(y, chunks=100))
    make_regression(tmp_path / "m.zarr", 400, 3, chunk_rows=100, noise=0.0, random_state=0)
    with dask.config.set(scheduler="threads"):  # writers in threads of this process
        make_regression(tmp_path / "t.zarr", 400, 3, chunk_rows=100, random_state=0)
    # ...which leave zarr's own default alone: a plain zarr write still leaves them out
    assert zarr.config.get("array.write_empty_chunks") is False
    for name in ("n", "d", "m", "t"):
        for array in ("X", "y"):
            for i in range(4):
                assert _chunk_file(tmp_path / f"{name}.zarr", array, i).exists(), (name, array, i)
    assert open_zarr(tmp_path / "n.zarr").classes_.tolist() == [0, 1]


def test_plain_zarr_group_with_a_chunk_left_out_is_refused(client, tmp_path):
    X, y = _xy(300)
    X[100:200] = 0.0  # plain zarr does not write this chunk: it equals the fill value
    g = zarr.open_group(str(tmp_path / "p.zarr"), mode="w", zarr_format=3)
    g.create_array("X", data=X, chunks=(100, 4))
    g.create_array("y", data=y, chunks=(100,))
    assert not _chunk_file(tmp_path / "p.zarr", "X", 1).exists()
    with pytest.raises(DataValidationError, match=r"write_empty_chunks=True"):
        open_zarr(tmp_path / "p.zarr")
    with pytest.raises(DataValidationError, match=r"array 'X' .* has no chunk 1"):
        fit(str(tmp_path / "p.zarr"), client=client, validate=False, max_epochs=2)


# ------------------------------------------------------------------ damaged chunk files


def test_raw_chunk_file_of_the_wrong_size(client, tmp_path):
    path = tmp_path / "d.zarr"
    X, _, _ = _dataset(path, "raw")
    f = _chunk_file(path, "X", 1)
    data = f.read_bytes()
    assert len(data) == 100 * 4 * 8
    f.write_bytes(data[:1000])  # truncated
    expect = rf"chunk 1 of array 'X' .* wrong size: {f} holds 1000 bytes, .* has 3200"
    with pytest.raises(DataValidationError, match=expect):
        load_chunk(path, 1)
    with pytest.raises(DataValidationError, match=expect):
        open_zarr(path, validate="full")
    with pytest.raises(DataValidationError, match=expect):
        open_zarr(path).X.compute()  # trusted, then read
    with pytest.raises(DataValidationError, match=expect):
        fit(str(path), client=client, validate=False, max_epochs=2)
    f.write_bytes(data + b"\0" * 64)  # oversized: once read as its first bytes
    with pytest.raises(DataValidationError, match=rf"{f} holds 3264 bytes, .* has 3200"):
        read_row_chunks(path, [1])
    f.write_bytes(data)
    np.testing.assert_array_equal(load_chunk(path, 1)[0], X[100:200])


def test_edge_chunk_is_read_at_full_chunk_size(tmp_path):
    """The last chunk (fewer rows) is stored at full size: that is not a wrong size."""
    X, y = _xy(250)
    write_zarr(tmp_path / "d.zarr", X, y, chunk_rows=100, compressor=None)
    np.testing.assert_array_equal(load_chunk(tmp_path / "d.zarr", 2)[0], X[200:])


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_compressed_chunk_names_array_chunk_and_file(client, tmp_path, damage):
    path = tmp_path / "d.zarr"
    _dataset(path, "zstd")
    f = _chunk_file(path, "y", 3)
    data = f.read_bytes()
    f.write_bytes(b"\x13" * 64 if damage == "garbage" else data[: len(data) // 2])
    expect = rf"chunk 3 of array 'y' of the dataset {path}.* cannot be decoded .*{f} is damaged"
    with pytest.raises(DataValidationError, match=expect):
        load_chunk(path, 3)
    with pytest.raises(DataValidationError, match=expect):
        open_zarr(path, validate="full")
    with pytest.raises(DataValidationError, match=expect):
        open_zarr(path).y.compute()  # trusted, then read
    with pytest.raises(DataValidationError, match=expect):
        fit(str(path), client=client, validate=False, max_epochs=2)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_altered_chunk_does_not_match_its_digest(client, tmp_path, layout):
    """A chunk file swapped for another valid one, or with bytes changed in place."""
    path = tmp_path / "d.zarr"
    _dataset(path, layout)
    digests = open_zarr(path, validate=False).attrs["digests"]
    assert digests["algorithm"] == "crc32c" and len(digests["X"]) == 4
    a, b = _chunk_file(path, "X", 0), _chunk_file(path, "X", 2)
    if layout == "raw":
        data = bytearray(b.read_bytes())
        data[8] ^= 0x40  # one bit of one value
        b.write_bytes(bytes(data))
    else:
        shutil.copyfile(a, b)  # decodes fine: only the digest tells
    expect = r"chunk 2 of array 'X' .* does not match its digest \(crc32c 0x"
    with pytest.raises(DataValidationError, match=expect):
        load_chunk(path, 2)
    with pytest.raises(DataValidationError, match=expect):
        open_zarr(path, validate="full")
    with pytest.raises(DataValidationError, match=expect):
        open_zarr(path).X.compute()  # trusted, then read
    with pytest.raises(DataValidationError, match=expect):
        fit(str(path), client=client, validate=False, max_epochs=2)


def test_digests_match_what_is_read(client, tmp_path):
    X, y = _xy(250)
    for name, kw in LAYOUTS.items():
        ds = write_zarr(tmp_path / f"{name}.zarr", X.astype(np.float32), y, chunk_rows=100, **kw)
        for i, lo in enumerate(range(0, 250, 100)):
            assert ds.attrs["digests"]["X"][i] == chunk_digest(X[lo : lo + 100].astype("f4"))
            assert ds.attrs["digests"]["y"][i] == chunk_digest(y[lo : lo + 100])
    ds = make_regression(tmp_path / "m.zarr", 250, 3, chunk_rows=100, random_state=0)
    open_zarr(ds.path, validate="full")  # reads every chunk against its digest
    assert chunk_digest(np.arange(3, dtype=">f8")) == chunk_digest(np.arange(3, dtype="<f8"))


# ------------------------------------------------------------------ overwrite


@pytest.mark.parametrize("where", ["cluster", "threads"])
def test_failed_overwrite_keeps_the_old_dataset(client, tmp_path, where):
    X, y = _xy(100)
    old = write_zarr(tmp_path / "d.zarr", X, y, chunk_rows=20)
    bad = X + 1
    bad[73, 2] = np.nan
    with dask.config.set(scheduler="threads") if where == "threads" else client.as_current():
        with pytest.raises(DataValidationError, match="X contains NaN or inf values in chunk 3"):
            write_zarr(tmp_path / "d.zarr", da.from_array(bad, chunks=(20, 4)), y, overwrite=True,
                       client=client if where == "cluster" else None)  # fmt: skip
    ds = open_zarr(tmp_path / "d.zarr")
    assert ds.attrs["write_id"] == old.attrs["write_id"]
    np.testing.assert_array_equal(ds.X.compute(), X)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zarr"]  # nothing left beside it


def test_overwrite_replaces_and_leaves_nothing_beside(client, tmp_path):
    X, y = _xy(100)
    write_zarr(tmp_path / "d.zarr", X, y)
    ds = write_zarr(tmp_path / "d.zarr", da.from_array(X[:60] + 1, chunks=30), y[:60],
                    overwrite=True)  # fmt: skip
    np.testing.assert_array_equal(open_zarr(tmp_path / "d.zarr").X.compute(), X[:60] + 1)
    assert ds.n_samples == 60
    make_regression(tmp_path / "d.zarr", 50, 2, random_state=0, overwrite=True)
    assert open_zarr(tmp_path / "d.zarr").n_features == 2
    (tmp_path / "f.zarr").write_text("not a dataset")
    write_zarr(tmp_path / "f.zarr", X, y, overwrite=True)
    assert open_zarr(tmp_path / "f.zarr").n_samples == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zarr", "f.zarr"]


def test_failed_overwrite_keeps_the_old_dataset_on_an_fsspec_url():
    """An object store has no rename: the new dataset is written beside, then moved."""
    import fsspec

    X, y = _xy(100)
    url = "memory://daskgd-integrity/d.zarr"
    fs = fsspec.filesystem("memory")
    try:
        old = write_zarr(url, X, y, chunk_rows=25)
        bad = X + 1
        bad[5, 0] = np.inf
        with dask.config.set(scheduler="threads"):
            with pytest.raises(DataValidationError, match="X contains NaN or inf"):
                write_zarr(url, da.from_array(bad, chunks=25), y, overwrite=True)
            assert open_zarr(url).attrs["write_id"] == old.attrs["write_id"]
            write_zarr(url, da.from_array(X + 1, chunks=25), y, overwrite=True)
            np.testing.assert_array_equal(open_zarr(url).X.compute(), X + 1)
        assert [e["name"] for e in fs.ls("/daskgd-integrity")] == ["/daskgd-integrity/d.zarr"]
    finally:
        fs.rm("/daskgd-integrity", recursive=True)
