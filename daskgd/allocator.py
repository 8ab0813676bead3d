"""Keeping freed memory for reuse in a worker process while it trains or holds a shard.

A training task receives the model's parameters with every reply, and a shard server
receives every push's slice and sends its rows back: each message is a new buffer the size
of the model (or of a shard), freed a moment later. glibc, left to itself, raises its mmap
threshold to the size of such a freed buffer and serves the next one from its heap. But
Dask's nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``), and setting any of glibc's malloc thresholds
fixes the mmap threshold at 128 KiB: every such buffer is then a fresh ``mmap`` whose pages
the kernel zero-fills on first touch, and returns at ``free``. At a million parameters, on
one 2-core virtual machine, a push took 26.6 ms with the model on the scheduler and 29.6 ms
in 2 shards under that setting, and 14.5 and 12.1 ms without it.

In a process whose thresholds are fixed that way (a ``MALLOC_*`` variable or a
``glibc.malloc`` tunable sets one), while a holder is registered (:func:`hold`: a training
task, a shard), glibc is told to serve allocations up to :data:`MMAP_CEILING` from its heap
and to keep up to ``TRIM_FACTOR`` times the largest holder's model bytes free at the top of
each heap (at most :data:`TRIM_CEILING`; freed memory inside a heap stays until the end),
so that the next message reuses the last one's pages. When the last holder leaves, the
process's own settings are set again and the kept memory is returned (``malloc_trim``).
A process with glibc's own (dynamic) thresholds is left alone: calling ``mallopt`` would
fix them for good. Elsewhere than glibc (macOS, Windows, musl) this does nothing.
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
#: the largest trim threshold set (the free memory kept at the top of each heap)
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


#: glibc's environment variables and tunables that fix its thresholds
_FIXING_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
               "MALLOC_MMAP_MAX_")  # fmt: skip
_FIXING_TUNABLES = ("trim_threshold", "mmap_threshold", "top_pad", "mmap_max")


def _tunables() -> dict[str, str]:
    """``glibc.malloc.*`` tunables of ``GLIBC_TUNABLES`` (``a=1:b=2``), by their last part."""
    out = {}
    for item in os.environ.get("GLIBC_TUNABLES", "").split(":"):
        name, _, value = item.partition("=")
        if name.startswith("glibc.malloc."):
            out[name.removeprefix("glibc.malloc.")] = value
    return out


def _own_settings() -> tuple[int, int] | None:
    """The process's ``(mmap_threshold, trim_threshold)`` when they are fixed at its start,
    None when glibc adjusts them itself (nothing to do then)."""
    tunables = _tunables()
    if not any(os.environ.get(n) for n in _FIXING_ENV) and not any(
        n in tunables for n in _FIXING_TUNABLES
    ):
        return None

    def value(env: str, tunable: str) -> int:
        for raw in (os.environ.get(env), tunables.get(tunable)):
            if raw:
                try:
                    return int(raw, 0)
                except ValueError:
                    continue
        return _GLIBC_DEFAULT

    return (value("MALLOC_MMAP_THRESHOLD_", "mmap_threshold"),
            value("MALLOC_TRIM_THRESHOLD_", "trim_threshold"))  # fmt: skip


#: what to set back once no holder is left (None: nothing is ever changed)
_OWN = _own_settings() if _LIBC is not None else None


def settings(nbytes: int) -> tuple[int, int]:
    """``(mmap_threshold, trim_threshold)`` while the largest holder has ``nbytes``."""
    mmap = min(MMAP_CEILING, max(_GLIBC_DEFAULT, 2 * nbytes))
    trim = min(TRIM_CEILING, max(_GLIBC_DEFAULT, TRIM_FACTOR * nbytes))
    return mmap, trim


def _apply() -> None:
    """Set the thresholds the holders need, or the process's own when none is left."""
    global _current
    if _OWN is None:
        return
    want = settings(max(_holders.values())) if _holders else _OWN
    if want == (_current or _OWN):
        return
    # mallopt returns 0 for a value it refuses (and changes nothing)
    ok = _LIBC.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(want[0])) and _LIBC.mallopt(
        _M_TRIM_THRESHOLD, ctypes.c_int(want[1])
    )
    if not _holders:
        _LIBC.malloc_trim(ctypes.c_size_t(0))
        _current = None
    elif ok:
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
