"""Keeping freed memory for reuse in a worker process while it trains or holds a shard.

A training task receives the model's parameters with every reply, and a shard server
receives every push's slice and sends its rows back: each message is a new buffer the size
of the model (or of a shard), freed a moment later. Dask's nanny starts its workers with
``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.pre-spawn-environ``), which also fixes
glibc's mmap threshold at 128 KiB: every such buffer is then a fresh ``mmap`` whose pages the
kernel zero-fills on first touch, and returns at ``free``. At a million parameters that is
tens of MB of page faults a push; on a virtual machine whose host takes freed pages back,
several milliseconds per MB (measured in ``bench/results/servers.md``).

While a holder is registered (:func:`hold`: a training task, a shard), glibc is told to serve
allocations up to :data:`MMAP_CEILING` from its heap and to keep up to ``TRIM_FACTOR`` times
the largest holder's model bytes of freed memory there (at most :data:`TRIM_CEILING`), so
the next message reuses the last one's pages. When the last holder leaves, the process's
settings at start (its ``MALLOC_*`` environment, else glibc's defaults) are set again and
the kept memory is returned (``malloc_trim``). Elsewhere than glibc (macOS, Windows, musl)
this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

__all__ = ["FreedMemory", "hold", "release", "settings"]

#: glibc's ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's default for both thresholds
_GLIBC_DEFAULT = 128 * 1024
#: the largest mmap threshold glibc accepts on 64-bit (half its heap size)
MMAP_CEILING = 32 * 2**20
#: freed memory kept, in multiples of the largest holder's bytes
TRIM_FACTOR = 8
#: at most this much freed memory kept
TRIM_CEILING = 256 * 2**20

_lock = threading.Lock()
_holders: dict[Any, int] = {}
_current: tuple[int, int] | None = None


def _glibc() -> Any:
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        return ctypes.CDLL(None)
    except (AttributeError, ValueError, OSError):  # not glibc (no confstr name, no libc)
        return None


_LIBC = _glibc()


def _from_env(name: str) -> int:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return _GLIBC_DEFAULT


def settings(nbytes: int) -> tuple[int, int]:
    """``(mmap_threshold, trim_threshold)`` while the largest holder has ``nbytes``."""
    mmap = min(MMAP_CEILING, max(_GLIBC_DEFAULT, 2 * nbytes))
    trim = min(TRIM_CEILING, max(_GLIBC_DEFAULT, TRIM_FACTOR * nbytes))
    return mmap, trim


def _apply() -> None:
    """Set the thresholds the holders need, or the process's own when none is left."""
    global _current
    if _LIBC is None:
        return
    if _holders:
        want = settings(max(_holders.values()))
    else:
        want = (_from_env("MALLOC_MMAP_THRESHOLD_"), _from_env("MALLOC_TRIM_THRESHOLD_"))
    if want == _current:
        return
    _LIBC.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(want[0]))
    _LIBC.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(want[1]))
    if not _holders:
        _LIBC.malloc_trim(ctypes.c_size_t(0))
        want = None  # type: ignore[assignment]
    _current = want


def hold(key: Any, nbytes: int) -> None:
    """Keep freed memory for reuse while ``key`` holds a model (or shard) of ``nbytes``."""
    with _lock:
        _holders[key] = max(int(nbytes), _holders.get(key, 0))
        _apply()


def release(key: Any) -> None:
    """``key`` no longer holds anything; the last holder's release restores the settings."""
    with _lock:
        if _holders.pop(key, None) is not None:
            _apply()


class FreedMemory:
    """A holder for one training task: ``with FreedMemory() as memory: memory.keep(n)``."""

    def keep(self, nbytes: int) -> None:
        hold(self, nbytes)

    def __enter__(self) -> FreedMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        release(self)
