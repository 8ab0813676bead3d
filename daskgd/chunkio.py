"""Reading a rank's row-chunks from Zarr into one preallocated buffer per array.

The training tasks hold their rows as one C-contiguous array each (``X``, ``y``,
``sample_weight``). Reading chunk by chunk through zarr and concatenating costs three
copies of every byte (zarr's read buffer, its output array, the concatenation), and
profiling showed the load of a 1,000,000 x 100 problem spending most of its time in them
(``bench/NOTES.md``). Here each chunk is read straight into its rows of the final buffer:

* an **uncompressed chunk on a local store** (codecs: ``bytes`` alone, in this machine's
  byte order, so its bytes are the C-order rows) is located with zarr's own metadata
  (``encode_chunk_key``) and read with ``readinto``: one copy, from the page cache;
* **anything else** (compression, sharding, remote stores, a chunk never written, which
  reads as the fill value) goes through zarr, one chunk at a time, into the same buffer.

Both give the bytes zarr would; the tests check them against zarr on every layout.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

__all__ = ["read_row_chunks"]


def _direct_folder(z: zarr.Array) -> str | None:
    """The folder whose files hold ``z``'s raw chunks, when they can be read as-is; else None."""
    from zarr.codecs import BytesCodec
    from zarr.storage import LocalStore

    meta = z.metadata
    if getattr(meta, "zarr_format", None) != 3 or not isinstance(z.store, LocalStore):
        return None
    codecs: tuple[Any, ...] = tuple(getattr(meta, "codecs", ()))
    if len(codecs) != 1 or not isinstance(codecs[0], BytesCodec):
        return None
    endian = getattr(codecs[0].endian, "value", codecs[0].endian)  # an Enum before zarr 3.2
    if z.dtype.itemsize > 1 and endian != sys.byteorder:
        return None
    if tuple(z.chunks[1:]) != tuple(z.shape[1:]):  # columns split over chunks
        return None
    return os.path.join(str(z.store.root), z.path)


def _read_rows(z: zarr.Array, folder: str | None, lo: int, out: np.ndarray) -> None:
    """Fill ``out`` with rows ``lo:lo + len(out)`` of ``z``, one row-chunk (C-contiguous)."""
    if folder is not None:
        coords = (lo // int(z.chunks[0]),) + (0,) * (z.ndim - 1)
        try:
            with open(os.path.join(folder, z.metadata.encode_chunk_key(coords)), "rb", 0) as f:
                # an edge chunk is stored at full chunk size: its first rows are ours
                view = memoryview(out).cast("B")  # type: ignore[arg-type]
                got = 0
                while got < view.nbytes and (k := f.readinto(view[got:])):
                    got += k
            if got == view.nbytes:
                return
        except FileNotFoundError:  # never written: zarr fills it in
            pass
    out[...] = z[lo : lo + out.shape[0]]


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
    """
    from daskgd.data import _group_arrays, _open_group, _row_block, _store_path

    p = _store_path(path)
    arrays = _group_arrays(_open_group(p, "r", storage_options), p)
    rows, n = _row_block(arrays["X"]), int(arrays["X"].shape[0])
    for i in chunks:
        if not 0 <= i < -(-n // rows):
            raise IndexError(f"chunk {i} out of range: {p} has {-(-n // rows)} row-chunks")
    sizes = [min(rows, n - i * rows) for i in chunks]
    out: dict[str, np.ndarray] = {}
    for name, z in arrays.items():
        buf = np.empty((sum(sizes), *z.shape[1:]), dtype=z.dtype)
        folder = _direct_folder(z) if int(z.chunks[0]) == rows else None
        at = 0
        for i, size in zip(chunks, sizes, strict=True):
            _read_rows(z, folder, i * rows, buf[at : at + size])
            at += size
        out[name] = buf
    return out["X"], out["y"], out.get("sample_weight")
