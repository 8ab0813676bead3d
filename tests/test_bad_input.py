"""A table of bad inputs: each is refused with the right daskgd error, a message that says
what is wrong and how to fix it, and the input data left as it was (on disk and in memory).
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from distributed import Client
from test_existing_cluster import _scheduler

from daskgd.checkpoint import load_checkpoint
from daskgd.data import FORMAT_VERSION, write_zarr
from daskgd.driver import fit
from daskgd.errors import (
    DataValidationError,
    DivergenceError,
    IncompleteDatasetError,
    SchedulerSetupError,
    TrainingError,
)


def _xy(n: int = 120, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, X @ np.arange(1.0, d + 1) + 0.1 * rng.standard_normal(n)


def _digest(path: Path) -> str:
    """A hash of every file's relative name and bytes under ``path``."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _memory(X, y, w=None, **kw) -> Callable[[Any, Path], tuple]:
    """A fit on in-memory arrays (compared before/after for mutation)."""

    def make(client, tmp):
        arrays = (X, y) if w is None else (X, y, w)
        return arrays, lambda **extra: fit(arrays, client=client, **kw, **extra)

    return make


def _on_disk(build: Callable[[Path], None], **kw) -> Callable[[Any, Path], tuple]:
    """A fit on a Zarr group that ``build`` writes (hashed before/after)."""

    def make(client, tmp):
        path = tmp / "data.zarr"
        build(path)
        return path, lambda **extra: fit(str(path), client=client, **kw, **extra)

    return make


def _misaligned(path: Path) -> None:
    X, y = _xy()
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    g.attrs.update({"format": "daskgd", "format_version": FORMAT_VERSION, "complete": True})
    g.create_array("X", data=X, chunks=(40, 3))
    g.create_array("y", data=y, chunks=(30,))


def _half_written(path: Path) -> None:
    X, y = _xy()
    write_zarr(path, X, y, chunk_rows=40)
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["complete"] = False  # what a write that died half-way leaves


def _good(path: Path) -> None:
    X, y = _xy()
    write_zarr(path, X, y, chunk_rows=40)


X0, y0 = _xy()
Xnan = X0.copy()
Xnan[7, 1] = np.nan
yinf = y0.copy()
yinf[100] = np.inf
labels3 = np.arange(120) % 3
ylab_nan = (np.arange(120) % 2).astype(float)
ylab_nan[5] = np.nan
wneg = np.ones(120)
wneg[3] = -1.0

# id, make(client, tmp) -> (data, call), error class, key words in the message
CASES: list[tuple[str, Callable, type[Exception], tuple[str, ...]]] = [
    ("X-1d", _memory(X0[:, 0], y0), DataValidationError, ("X", "2-D")),
    ("y-wrong-length", _memory(X0, y0[:-5]), DataValidationError, ("y", "115", "120")),
    ("y-2d", _memory(X0, np.c_[y0, y0]), DataValidationError, ("y", "1-D")),
    ("X-object", _memory(X0.astype(object), y0), DataValidationError, ("dtype", "float64")),
    ("X-complex", _memory(X0 + 1j, y0), DataValidationError, ("complex", "float64")),
    ("X-strings", _memory(X0.astype(str), y0), DataValidationError, ("dtype", "float64")),
    ("X-nan", _memory(Xnan, y0), DataValidationError, ("X", "NaN", "validate")),
    ("y-inf", _memory(X0, yinf), DataValidationError, ("y", "inf")),
    ("empty", _memory(np.empty((0, 3)), np.empty(0)), DataValidationError, ("empty", "0 rows")),
    ("no-features", _memory(np.empty((10, 0)), np.zeros(10)), DataValidationError, ("0 features",)),
    ("misaligned-chunks", _on_disk(_misaligned), DataValidationError, ("chunk",)),
    (
        "hinge-3-classes",
        _memory(X0, labels3, loss="hinge"),
        DataValidationError,
        ("3 classes", "binary"),
    ),
    (
        "labels-nan",
        _memory(X0, ylab_nan, loss="log_loss"),
        DataValidationError,
        ("y", "NaN"),
    ),
    ("weights-negative", _memory(X0, y0, wneg), DataValidationError, ("sample_weight", "negative")),
    ("unknown-loss", _memory(X0, y0, loss="cubic"), ValueError, ("loss", "cubic", "squared_error")),
    ("unknown-mode", _memory(X0, y0, mode="bsp"), ValueError, ("mode", "bsp", "async")),
    ("unknown-optimizer", _memory(X0, y0, optimizer="bfgs"), ValueError, ("bfgs", "adam")),
    (
        "diverging-lr",
        _on_disk(_good, learning_rate=1e6, max_epochs=50, tol=None),
        DivergenceError,
        ("diverged", "smaller learning_rate"),
    ),
    (
        "half-written-zarr",
        _on_disk(_half_written),
        IncompleteDatasetError,
        ("not a complete", "overwrite=True"),
    ),
]


@pytest.fixture(scope="module")
def existing_checkpoint(cluster, tmp_path_factory) -> Path:
    """A checkpoint from a good fit with the table's number of features."""
    path = tmp_path_factory.mktemp("ckpt") / "fit.zarr"
    with Client(cluster, set_as_default=False) as c:
        fit(_xy(), client=c, max_epochs=3, tol=None, checkpoint=str(path))
    return path


@pytest.mark.parametrize(
    ("make", "error", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_refused(client, tmp_path, make, error, words, existing_checkpoint, reliability):
    data, call = make(client, tmp_path)
    before = _digest(data) if isinstance(data, Path) else [np.array(a, copy=True) for a in data]
    # the fit names an existing checkpoint: a refused fit must leave it as it was
    ckpt = tmp_path / "fit.zarr"
    shutil.copytree(existing_checkpoint, ckpt)
    ckpt_before = _digest(ckpt)
    with pytest.raises(error) as info:
        call(checkpoint=str(ckpt), checkpoint_every=10**6)
    message = str(info.value)
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    if isinstance(data, Path):
        assert _digest(data) == before
    else:
        for a, b in zip(data, before, strict=True):
            np.testing.assert_array_equal(a, b)
    assert _digest(ckpt) == ckpt_before
    assert load_checkpoint(ckpt).epoch == 3
    reliability.add("bad inputs refused", 1)


def test_bad_input_scheduler_without_daskgd(tmp_path, processes, reliability):
    """The table's "scheduler without daskgd" row (as in test_existing_cluster.py)."""
    _, address = _scheduler(tmp_path, processes, with_daskgd=False)
    X, y = _xy(20)
    with pytest.raises(SchedulerSetupError, match="Install daskgd"):
        fit((X, y), client=address)
    reliability.add("bad inputs refused", 1)


def test_bad_input_client_closed_mid_fit(cluster, tmp_path, reliability):
    """The driver's client closes while the fit runs: a TrainingError, not a hang."""
    path = tmp_path / "data.zarr"
    _good(path)
    before = _digest(path)
    client = Client(cluster, set_as_default=False)
    outcome: dict[str, BaseException | None] = {}
    started = threading.Event()

    def run() -> None:
        try:
            fit(str(path), client=client, max_epochs=10**6, tol=None, learning_rate=1e-4,
                callback=lambda row: started.set())  # fmt: skip
            outcome["error"] = None
        except BaseException as exc:
            outcome["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    # close mid-fit: once the first epoch is in (a fixed sleep could land before the fit
    # started on a loaded machine, or after it failed for another reason)
    assert started.wait(120) or not t.is_alive(), outcome
    client.close()
    t.join(60)
    assert not t.is_alive(), "fit hung after its client closed"
    err = outcome["error"]
    assert isinstance(err, TrainingError), repr(err)
    assert "client" in str(err).lower()
    assert _digest(path) == before
    reliability.add("bad inputs refused", 1)
