"""A rank's row-chunks mapped from their chunk files, not copied, and checked again at the end.

A full-batch training task reads its rows once and passes over them many times. When a
chunk's file holds its raw C-order rows (an uncompressed array on a local store:
:func:`~daskgd.data.chunkfiles.direct_folder`), the task maps the file read-only instead of
copying it into new memory: the page cache's pages are its rows. Fresh memory is what a
copy costs most on a virtual machine that hands freed memory back to its host: 400 MB of
rows read into new arrays took 0.11-0.74 s in a new process, mapped and digest-checked
0.03 s, and the passes over them ran at the same speed (``bench/NOTES.md``).

A mapping is only as stable as its file: a dataset rewritten while a fit reads it would
change the rows under the fit. :meth:`MappedRows.verify` therefore checks every mapped
chunk again when the task ends (against its recorded digest, and its file's size, inode
and modification time): a change raises :class:`~daskgd.errors.DataChangedError`, and no
model is returned. The check covers each task's files as that task mapped them: a task
rerun after a worker died maps the files as they are then, and the fit's own check when its
tasks are done (:func:`~daskgd.data.trust.check_unchanged`) finds a dataset written again
meanwhile. A file truncated while it is mapped faults the worker process (SIGBUS), which
distributed reports as a worker that died.
"""

from __future__ import annotations

import itertools
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskgd.data.chunkfiles import (
    check_digest,
    chunk_keys,
    direct_folder,
    location,
    missing_chunk_error,
    recorded_digests,
    wrong_size_error,
)
from daskgd.data.store import (
    check_opened,
    group_arrays,
    is_csr_group,
    open_for_reading,
    rows_per_chunk,
    store_path,
    worker_suffix,
)
from daskgd.errors import DaskgdError, DataChangedError, DataValidationError

__all__ = ["MappedChunk", "MappedRows", "map_row_chunks"]


@dataclass(frozen=True)
class MappedChunk:
    """One mapped chunk file and what it must still be when the task ends."""

    what: str  # "chunk i of array 'X' of the dataset P", for messages
    path: str
    values: np.ndarray  # the chunk's rows (read-only, on the mapping)
    digest: int | None
    stat: tuple[int, int, int]  # (inode, size, modification time in ns)


class MappedRows:
    """The rows of a rank's row-chunks, one piece per chunk: ``pieces[k]`` is
    ``(X, y, sample_weight, offset)`` of ``chunks[k]`` (the last two None when the dataset
    has none), mapped where the arrays' files allow and read otherwise."""

    def __init__(self, pieces: list[tuple[Any, ...]], mapped: list[MappedChunk]) -> None:
        self.pieces = pieces
        self.mapped = mapped

    def verify(self) -> None:
        """Raise if a mapped chunk's file changed since it was mapped."""
        for m in self.mapped:
            verify_chunk(m)


def verify_chunk(m: MappedChunk) -> None:
    """Raise a :class:`~daskgd.errors.DataChangedError` if ``m``'s file changed since it
    was mapped (its rows no longer match their digest, or the file was replaced)."""
    try:
        now = _stat(os.stat(m.path))
    except FileNotFoundError:
        now = None
    changed = now != m.stat
    if not changed and m.digest is not None:
        try:
            check_digest(m.values, m.digest, m.what, m.path)
        except DataValidationError:
            changed = True
    if changed:
        raise DataChangedError(
            f"{m.what}{worker_suffix()} changed while the fit was reading it ({m.path} was "
            "rewritten, replaced or removed): the model would mix two datasets, so it is not "
            "returned. Do not write a dataset while a fit trains on it; fit again from the "
            "start (a checkpoint written by this fit holds the mixed parameters: do not "
            "resume from it)"
        )


def _stat(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def map_row_chunks(
    path: str | os.PathLike[str],
    chunks: Sequence[int],
    *,
    storage_options: dict[str, Any] | None = None,
    opened: dict[str, Any] | None = None,
) -> MappedRows | None:
    """Map the row-chunks ``chunks`` of a dense dataset's ``X`` (checked as a read is; a
    dataset written again since ``opened`` raises as for
    :func:`~daskgd.data.chunkio.read_row_arrays`).

    Returns None when ``X`` cannot be mapped (compressed, sharded, remote, split into column
    chunks, sparse, or on a filesystem that does not map files): read it with
    :func:`~daskgd.data.chunkio.read_row_arrays` then.
    The other arrays (``y``, ``sample_weight``, ``offset``) are mapped the same way when
    their files allow, else read.

    Raises
    ------
    DataValidationError
        A chunk file is missing, of the wrong size, or does not match its recorded digest.
    """
    from daskgd.data.chunkio import read_row_arrays

    p = store_path(path)
    g = open_for_reading(p, storage_options)
    attrs = dict(g.attrs)
    check_opened(p, attrs, opened)
    if is_csr_group(attrs):
        return None
    arrays = group_arrays(g, p)
    X = arrays["X"]
    if direct_folder(X) is None:
        return None
    rows, n = rows_per_chunk(X), int(X.shape[0])
    n_chunks = -(-n // rows)
    for i in chunks:
        if not 0 <= i < n_chunks:
            raise IndexError(f"chunk {i} out of range: {p} has {n_chunks} row-chunks")
    fields: dict[str, list[np.ndarray]] = {}
    mapped: list[MappedChunk] = []
    for name, z in arrays.items():
        folder = direct_folder(z)
        if folder is None or rows_per_chunk(z) != rows:  # read as usual
            read = read_row_arrays(p, chunks, storage_options=storage_options, names=(name,))
            sizes = [min(rows, n - i * rows) for i in chunks]
            bounds = np.cumsum([0, *sizes]).tolist()
            fields[name] = [read[name][a:b] for a, b in itertools.pairwise(bounds)]
            continue
        digests = recorded_digests(attrs, name, n_chunks)
        fields[name] = []
        for i in chunks:
            try:
                m = _map_chunk(z, name, p, i, rows, folder,
                               None if digests is None else digests[i])  # fmt: skip
            except DaskgdError:  # a missing dataset or chunk: the read's own errors
                raise
            except OSError:  # a filesystem that cannot map files: read them
                return None
            mapped.append(m)
            fields[name].append(m.values)
    names = ("X", "y", "sample_weight", "offset")
    pieces = [
        tuple(fields[name][k] if name in fields else None for name in names)
        for k in range(len(chunks))
    ]
    return MappedRows(pieces, mapped)


def _map_chunk(z: Any, name: str, dataset: str, i: int, rows: int, folder: str,
               digest: int | None) -> MappedChunk:  # fmt: skip
    """Map row-chunk ``i`` of ``z`` from its raw file in ``folder``, checked."""
    key = chunk_keys(z, i)[0]
    path = os.path.join(folder, key)
    what = f"chunk {i} of array {name!r} of the dataset {dataset}"
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise missing_chunk_error(z, name, dataset, i, rows, key) from None
    with f:
        st = os.fstat(f.fileno())
        # an edge chunk is stored at full chunk size: its first rows are ours
        expected = int(np.prod(z.chunks)) * z.dtype.itemsize
        if st.st_size != expected:
            raise wrong_size_error(z, f"{what}{worker_suffix()}", location(z, key),
                                   st.st_size, expected)  # fmt: skip
        if expected == 0:
            buf: Any = b""
        elif hasattr(mmap, "MAP_POPULATE"):  # Linux: the pages mapped in one call
            buf = mmap.mmap(f.fileno(), expected, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                            prot=mmap.PROT_READ)  # fmt: skip
        else:
            buf = mmap.mmap(f.fileno(), expected, access=mmap.ACCESS_READ)
    size = min(rows, int(z.shape[0]) - i * rows)
    values = np.frombuffer(buf, dtype=z.dtype).reshape(tuple(z.chunks))[:size]
    check_digest(values, digest, f"{what}{worker_suffix()}", location(z, key))
    return MappedChunk(what, path, values, digest, _stat(st))
