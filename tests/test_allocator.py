"""Freed memory kept for reuse while a worker trains or holds a shard (daskgd.allocator)."""

from __future__ import annotations

import os
import subprocess
import sys

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


#: In a process started as Dask's nanny starts workers (MALLOC_TRIM_THRESHOLD_=65536): the
#: free bytes glibc keeps after a 16 MB buffer is freed, before, during and after a hold.
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

out = {"before": kept()}
allocator.hold("task", 16 * 2**20)
out["during"] = kept()
allocator.hold("shard", 2**20)
allocator.release("task")
out["smaller"] = list(allocator.settings(max(allocator._holders.values())))
allocator.release("shard")
out["after"] = kept()
out["holders"] = len(allocator._holders)
print(json.dumps(out))
"""


@glibc
def test_a_hold_keeps_freed_buffers_and_its_release_gives_them_back():
    import json

    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", _KEPT], env=env, capture_output=True,
                         text=True, check=True)  # fmt: skip
    got = json.loads(out.stdout)
    mb = 2**20
    assert got["before"] < 4 * mb  # mmapped and unmapped at free: nothing to reuse
    assert got["during"] >= 16 * mb  # kept in the heap for the next message
    assert got["smaller"] == [2 * mb, 8 * mb]  # the shard's own size once the task left
    assert got["after"] < 4 * mb  # the process's own settings again
    assert got["holders"] == 0


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
    assert set(client.run(_held).values()) == {(0, None)}
