"""Freed memory kept for reuse while a worker trains or holds a shard (daskgd.allocator)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import daskgd
from daskgd import allocator

glibc = pytest.mark.skipif(
    allocator._LIBC is None or not hasattr(allocator._LIBC, "mallinfo2"),
    reason="glibc's mallopt and mallinfo2 (glibc >= 2.33) only",
)


def test_settings_follow_the_largest_holder_within_bounds():
    assert allocator.settings(0) == (128 * 1024, 128 * 1024)
    assert allocator.settings(8 * 2**20) == (16 * 2**20, 64 * 2**20)
    assert allocator.settings(10**9) == (allocator.MMAP_CEILING, allocator.TRIM_CEILING)


#: The free bytes glibc keeps after a 16 MB buffer is freed, before, during and after a
#: hold, in a process started with the environment the test gives.
_KEPT = """
import ctypes, json
from daskgd import allocator

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info

def kept():
    b = bytearray(16 * 2**20)
    del b
    return libc.mallinfo2().fordblks

out = {"own": allocator._OWN, "before": [kept(), kept()]}
allocator.hold("task", 16 * 2**20)
out["during"] = kept()
out["set"] = allocator._current
allocator.hold("shard", 2**20)
allocator.release("task")
out["smaller"] = allocator._current
allocator.release("shard")
out["after"] = [kept(), kept()]
out["holders"] = len(allocator._holders)
out["current"] = allocator._current
print(json.dumps(out))
"""


def _kept(**env: str) -> dict:
    import json

    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", _KEPT], env={**clean, **env},
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)


@glibc
def test_under_the_nannys_setting_a_hold_keeps_freed_buffers_and_its_release_restores():
    got = _kept(MALLOC_TRIM_THRESHOLD_="65536")  # as Dask's nanny starts workers
    mb = 2**20
    assert got["own"] == [128 * 1024, 65536]
    assert max(got["before"]) < 4 * mb  # mmapped and unmapped at free: nothing to reuse
    assert got["set"] == [32 * mb, 128 * mb]
    assert got["during"] >= 16 * mb  # kept in the heap for the next message
    assert got["smaller"] == [2 * mb, 8 * mb]  # the shard's own size once the task left
    assert max(got["after"]) < 4 * mb  # the process's own settings again
    assert got["holders"] == 0 and got["current"] is None


@glibc
def test_glibcs_own_dynamic_thresholds_are_left_alone():
    """Without a MALLOC_* setting glibc raises its mmap threshold itself; a mallopt call
    would fix it for good, so a hold changes nothing and the reuse goes on after it."""
    got = _kept()
    mb = 2**20
    assert got["own"] is None
    assert got["before"][1] >= 16 * mb  # the second buffer came from the heap, and stayed
    assert got["set"] is None and got["smaller"] is None
    assert got["after"][1] >= 16 * mb


def test_tunables_fix_the_thresholds_too(monkeypatch):
    for name in allocator._FIXING_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=65536:glibc.foo=1")
    assert allocator._own_settings() == (128 * 1024, 65536)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.rtld.optional_static_tls=512")
    assert allocator._own_settings() is None


def _held(dask_worker=None) -> tuple[int, object]:
    return len(allocator._holders), allocator._current


@pytest.mark.parametrize("n_servers", [0, 2])
def test_a_fit_leaves_no_holder_on_the_workers(client, tmp_path, n_servers):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 50))
    y = X @ rng.standard_normal(50)
    path = str(tmp_path / "d.zarr")
    daskgd.write_zarr(path, X, y, chunk_rows=32)
    res = daskgd.fit(path, client=client, optimizer="sgd", learning_rate=0.01, max_epochs=3,
                     tol=None, n_servers=n_servers)  # fmt: skip
    assert res.n_iter_ == 3
    # the shards are dropped after the fit returns (the close does not wait for that)
    deadline = time.monotonic() + 30
    while set(client.run(_held).values()) != {(0, None)} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(client.run(_held).values()) == {(0, None)}
