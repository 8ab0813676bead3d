"""Reading a dataset's row-chunks from Zarr, checked, into preallocated buffers.

The training tasks hold their rows as one C-contiguous array each (``X``, ``y``,
``sample_weight``). Reading chunk by chunk through zarr and concatenating costs three
copies of every byte (zarr's read buffer, its output array, the concatenation), and
profiling showed the load of a 1,000,000 x 100 problem spending most of its time in them
(``bench/NOTES.md``). Here each chunk is read straight into its rows of the final buffer:

* an **uncompressed chunk on a local store** (codecs: ``bytes`` alone, in this machine's
  byte order, so its bytes are the C-order rows) is located with zarr's own metadata
  (``encode_chunk_key``) and read with ``readinto``: one copy, from the page cache;
* a **Zstandard chunk on a local store** (``bytes`` then ``zstd``: zarr's default codecs,
  and daskgd's) is decompressed by numcodecs straight into its rows;
* **anything else** (other compression, sharding, remote stores) goes through zarr, one
  chunk at a time, into the same buffer.

Every read is checked, because zarr itself reads a chunk that is not there as its fill
value, silently: a chunk whose file is missing (or a whole array, or the whole store, as
when a worker cannot see the driver's path) is an error naming the array, the chunk, the
file and the worker; a raw chunk file of the wrong size, or a chunk zarr cannot decode, is
a :class:`~daskgd.errors.DataValidationError` naming them too; and when the dataset
records per-chunk digests (``write_zarr`` and the synthetic generators do: CRC-32C of each
row-chunk's values, in the group attribute ``digests``), each chunk read is checked
against its digest, which catches chunks altered or torn after they were written. The
CRC-32C runs at 7-14 GB/s on one core: +29% on an uncompressed load from the page cache,
a few percent of a Zstandard one (``bench/results/digests.md``).

The reads of one chunk file are :mod:`~daskgd.data.chunkfiles`'; a sparse ``X`` (CSR) is
read by :mod:`~daskgd.data.sparse_store`, with the same checks, into one ``csr_matrix``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from daskgd.data.chunkfiles import (
    DIGEST_ALGORITHM,
    chunk_digest,
    direct_folder,
    direct_reader,
    read_chunk,
    recorded_digests,
)
from daskgd.data.sparse_store import CSRChunks
from daskgd.data.store import (
    ARRAY_NAMES,
    check_opened,
    group_arrays,
    is_csr_group,
    open_for_reading,
    rows_per_chunk,
    store_path,
)

__all__ = [
    "DIGEST_ALGORITHM",
    "CheckedRows",
    "chunk_digest",
    "direct_folder",
    "direct_reader",
    "load_chunk",
    "read_chunk",
    "read_row_arrays",
    "read_row_chunks",
    "recorded_digests",
]


class CheckedRows:
    """A Zarr array as dask's ``from_array`` reads it: whole row-chunks, each one checked.

    Parameters
    ----------
    z : zarr.Array
        The array (pickled to the workers with its store's absolute path).
    name, dataset : str
        The array's name and the dataset's path, for messages.
    rows : int
        Rows per row-chunk (a whole shard when sharded).
    digests : list of int, optional
        The recorded digest of each row-chunk.
    """

    def __init__(
        self, z: zarr.Array, name: str, dataset: str, rows: int, digests: list[int] | None
    ) -> None:
        self.z, self.name, self.dataset, self.rows, self.digests = z, name, dataset, rows, digests
        self.shape = tuple(int(s) for s in z.shape)
        self.dtype = np.dtype(z.dtype)
        self.ndim = len(self.shape)

    def chunk(self, i: int) -> np.ndarray:
        """Row-chunk ``i``, read and checked."""
        n = self.shape[0]
        out = np.empty((min(self.rows, n - i * self.rows), *self.shape[1:]), dtype=self.dtype)
        folder, decoder = direct_reader(self.z, self.rows)
        digest = None if self.digests is None else self.digests[i]
        read_chunk(self.z, self.name, self.dataset, i, self.rows, out, folder=folder,
                   decoder=decoder, digest=digest)  # fmt: skip
        return out

    def __getitem__(self, sel: Any) -> np.ndarray:
        sel = sel if isinstance(sel, tuple) else (sel,)
        first = sel[0] if sel else slice(None)
        if not isinstance(first, slice):
            first = slice(int(first), int(first) + 1) if first >= 0 else slice(first, None)
            return self[(first, *sel[1:])][0]
        start, stop, step = first.indices(self.shape[0])
        rest = (slice(None), *sel[1:])
        if stop <= start:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)[rest]
        lo, hi = start // self.rows, (stop - 1) // self.rows
        parts = [self.chunk(i) for i in range(lo, hi + 1)]
        block = parts[0] if len(parts) == 1 else np.concatenate(parts)
        base = lo * self.rows
        return block[start - base : stop - base : step][rest]


def read_row_chunks(
    path: str | os.PathLike[str],
    chunks: Sequence[int],
    *,
    storage_options: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read row-chunks of a daskgd dataset into one new C-contiguous array per field.

    Parameters
    ----------
    path : str or os.PathLike
        The dataset, as for :func:`daskgd.open_zarr`.
    chunks : sequence of int
        Row-chunk indices (whole shards when the dataset is sharded), in the order their
        rows are wanted.
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    X, y, sample_weight : numpy.ndarray
        The chunks' rows, concatenated; ``sample_weight`` is None when the dataset has none.
        (:func:`read_row_arrays` reads the offsets too.) A sparse dataset's ``X`` is one
        canonical ``scipy.sparse.csr_matrix``.
    """
    out = read_row_arrays(path, chunks, storage_options=storage_options,
                          names=("X", "y", "sample_weight"))  # fmt: skip
    return out["X"], out["y"], out.get("sample_weight")


def read_row_arrays(
    path: str | os.PathLike[str],
    chunks: Sequence[int],
    *,
    storage_options: dict[str, Any] | None = None,
    names: Sequence[str] = ARRAY_NAMES,
    opened: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """As :func:`read_row_chunks`, each array of ``names`` the dataset has, by name.

    ``opened``: the dataset's attributes that tell its writings apart
    (:func:`~daskgd.data.store.opened_attrs`) as the caller opened it; a dataset written
    again since raises :class:`~daskgd.errors.DataChangedError` (None: not compared).

    Returns
    -------
    dict of str to numpy.ndarray or scipy.sparse.csr_matrix
        ``X``, ``y`` and those of ``sample_weight`` and ``offset`` that the dataset holds
        (and ``names`` asks for), each the chunks' rows concatenated. A sparse dataset's
        ``X`` is one canonical ``csr_matrix`` of those rows, built from the stored parts
        directly (:meth:`~daskgd.data.sparse_store.CSRChunks.rows`).
    """
    p = store_path(path)
    g = open_for_reading(p, storage_options)
    attrs = dict(g.attrs)
    check_opened(p, attrs, opened)
    arrays = group_arrays(g, p)
    csr = CSRChunks(g, p, attrs) if is_csr_group(attrs) else None
    if csr is not None:
        rows, n = csr.chunk_rows, csr.shape[0]
    else:
        rows, n = rows_per_chunk(arrays["X"]), int(arrays["X"].shape[0])
    n_chunks = -(-n // rows)
    for i in chunks:
        if not 0 <= i < n_chunks:
            raise IndexError(f"chunk {i} out of range: {p} has {n_chunks} row-chunks")
    sizes = [min(rows, n - i * rows) for i in chunks]
    out: dict[str, Any] = {}
    if csr is not None and "X" in names:
        out["X"] = csr.rows(chunks)
    for name, z in arrays.items():
        if name not in names or name.startswith("X/"):
            continue
        buf = np.empty((sum(sizes), *z.shape[1:]), dtype=z.dtype)
        folder, decoder = direct_reader(z, rows)
        digests = recorded_digests(attrs, name, n_chunks)
        at = 0
        for i, size in zip(chunks, sizes, strict=True):
            read_chunk(z, name, p, i, rows, buf[at : at + size], folder=folder,
                       decoder=decoder,
                       digest=None if digests is None else digests[i])  # fmt: skip
            at += size
        out[name] = buf
    return out


def load_chunk(
    path: str | os.PathLike[str],
    i: int,
    *,
    storage_options: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read row-chunk ``i`` of a dataset straight from Zarr (for out-of-core training).

    Parameters
    ----------
    path : str or os.PathLike
        The dataset, as for :func:`open_zarr`.
    i : int
        Row-chunk index, ``0 <= i < n_chunks``.
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    X, y, sample_weight : numpy.ndarray
        C-contiguous arrays of the chunk's rows; ``sample_weight`` is None when the
        dataset has none. For a sparse dataset ``X`` is a canonical
        ``scipy.sparse.csr_matrix`` (each row's indices sorted and distinct).

    Raises
    ------
    DataValidationError
        The chunk is missing in an array, its raw file has the wrong size, it cannot be
        decoded or does not match its recorded digest (naming array, chunk and file).
    DataNotFoundError
        The dataset or one of its arrays is not at ``path`` in this process (on a worker:
        the message names it).
    """
    return read_row_chunks(path, [i], storage_options=storage_options)
