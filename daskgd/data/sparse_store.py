"""The Zarr layout of a sparse ``X`` (CSR, format version 2): creating it, writing a row-chunk,
and reading row-chunks back, checked.

A sparse dataset is a daskgd group (attribute ``x_format = "csr"``, ``format_version = 2``)
whose ``y``, ``sample_weight`` and ``offset`` are stored as for dense data, and whose ``X`` is
a **subgroup** with attributes ``format = "csr"``, ``shape = [n, d]``, ``nnz``,
``chunk_rows`` (R) and ``segment`` (C), holding three arrays:

* ``indptr``: int64, shape ``(n_chunks, R + 1)``, one Zarr chunk per row: row-chunk ``i``'s
  index pointer is ``indptr[i, :rows_i + 1]``, **absolute** positions into ``indices`` and
  ``data`` (the entries past a short last chunk's rows repeat its end);
* ``indices`` (int32 when ``d < 2**31``, else int64) and ``data`` (float32 or float64):
  1-D, in Zarr chunks of C elements. Row-chunk ``i``'s non-zeros are the **segment**
  ``[indptr[i, 0], indptr[i, rows_i])``; every segment starts at a multiple of C, at the
  first one at or after the end of the previous segment.

So no Zarr chunk holds non-zeros of two row-chunks: each row-chunk is written by its own task
(the parallel write of :func:`~daskgd.data.write_zarr` and the synthetic generators, with no
lock), and reading one reads its ``indptr`` chunk and the ``ceil(nnz_i / C)`` chunks of its
segment, I/O proportional to its non-zeros. The padding costs under C elements per
row-chunk: C is a power of two near an eighth of the mean non-zeros of a row-chunk, between
2**10 and 2**18 (1 MiB of int32): at most about an eighth of the data for row-chunks of
8,192 non-zeros or more (zeros, which compress to almost nothing), and 8 to 16 Zarr chunks
of each array per row-chunk of the mean size (more once C reaches its cap of 2**18).

Other layouts were weighed: one Zarr array per row-chunk (a metadata document per chunk to
list and open), a 2-D ``(n_chunks, max nnz)`` array (every chunk padded to the largest), and
Zarr sharding of the 1-D arrays (shards are of one fixed size, so segments would still need
aligning, as here, to be written independently).

Reads check what can be checked cheaply, on every load: the files exist (Zarr reads a
missing one as zeros), each part matches the CRC-32C digest recorded for its row-chunk, the
segment is aligned and inside the arrays, ``indptr`` never decreases and matches the
segment, every index lies in ``[0, d)``, and each row's indices are sorted and distinct.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import dask.array as da
import numpy as np
import zarr

from daskgd.data.chunkfiles import (
    DIGEST_ALGORITHM,
    chunk_digest,
    direct_reader,
    key_exists,
    location,
    missing_chunk_error,
    read_chunk,
    recorded_digests,
)
from daskgd.data.csr import check_csr, check_sorted, csr_dask_array, index_dtype, make_csr
from daskgd.data.store import (
    CSR_PARTS,
    TARGET_CHUNK_BYTES,
    array_member,
    worker_suffix,
    writable_array,
)
from daskgd.errors import DataValidationError

__all__ = [
    "MAX_SEGMENT",
    "MIN_SEGMENT",
    "CSRChunks",
    "CSRLayout",
    "auto_csr_chunk_rows",
    "create_csr",
    "csr_targets",
    "segment_size",
    "write_csr_chunk",
]

#: Bounds of C, the Zarr chunk of ``indices`` and ``data`` (elements): see the module's text.
MIN_SEGMENT = 2**10
MAX_SEGMENT = 2**18


def auto_csr_chunk_rows(n: int, nnz: int, dtype: Any, n_features: int) -> int:
    """Rows per row-chunk of a CSR ``X`` with ``nnz`` values in ``n`` rows: about
    :data:`~daskgd.data.store.TARGET_CHUNK_BYTES` of values, indices and index pointers."""
    per_value = np.dtype(dtype).itemsize + index_dtype(n_features).itemsize
    per_row = max(1.0, nnz / max(1, n) * per_value + 8)
    return max(1, min(int(n), int(TARGET_CHUNK_BYTES // per_row)))


def segment_size(nnz: Sequence[int]) -> int:
    """C for row-chunks of these non-zero counts: the power of two at or below an eighth of
    their mean, within [:data:`MIN_SEGMENT`, :data:`MAX_SEGMENT`]."""
    mean = sum(int(k) for k in nnz) / max(1, len(nnz))
    c = 1 << max(0, int(mean / 8).bit_length() - 1)
    return int(min(MAX_SEGMENT, max(MIN_SEGMENT, c)))


@dataclass(frozen=True)
class CSRLayout:
    """Where each row-chunk of a CSR ``X`` goes: its non-zero counts and the segment size.

    Attributes
    ----------
    n_rows, n_cols, chunk_rows : int
        The shape of ``X`` and the rows per row-chunk.
    nnz : tuple of int
        The non-zeros of each row-chunk.
    segment : int
        C, the Zarr chunk of ``indices`` and ``data`` (elements).
    dtype : str
        The values' dtype, ``"float32"`` or ``"float64"``.
    """

    n_rows: int
    n_cols: int
    chunk_rows: int
    nnz: tuple[int, ...]
    segment: int
    dtype: str

    @classmethod
    def plan(
        cls, n_rows: int, n_cols: int, chunk_rows: int, nnz: Sequence[int], dtype: Any
    ) -> CSRLayout:
        """The layout for row-chunks with these non-zero counts (C by :func:`segment_size`)."""
        counts = tuple(int(k) for k in nnz)
        if len(counts) != -(-int(n_rows) // int(chunk_rows)):
            raise ValueError(f"{len(counts)} non-zero counts for {n_rows} rows in chunks of "
                             f"{chunk_rows}")  # fmt: skip
        return cls(int(n_rows), int(n_cols), int(chunk_rows), counts, segment_size(counts),
                   np.dtype(dtype).name)  # fmt: skip

    @cached_property
    def starts(self) -> tuple[int, ...]:
        """The first position of each row-chunk's segment (multiples of C)."""
        out, at, c = [], 0, self.segment
        for k in self.nnz:
            out.append(at)
            at = -(-(at + k) // c) * c
        return tuple(out)

    @property
    def length(self) -> int:
        """The length of ``indices`` and ``data``: the end of the last segment."""
        return self.starts[-1] + self.nnz[-1] if self.nnz else 0

    @property
    def index_dtype(self) -> np.dtype[Any]:
        return index_dtype(self.n_cols)

    def rows(self, i: int) -> int:
        """The rows of row-chunk ``i``."""
        return min(self.chunk_rows, self.n_rows - i * self.chunk_rows)


def create_csr(g: zarr.Group, layout: CSRLayout, compressors: Any) -> None:
    """Create the subgroup ``X`` of ``g`` and its three arrays, empty, for ``layout``."""
    sub = g.create_group("X")
    sub.attrs.update(
        {
            "format": "csr",
            "shape": [layout.n_rows, layout.n_cols],
            "nnz": sum(layout.nnz),
            "chunk_rows": layout.chunk_rows,
            "segment": layout.segment,
        }
    )
    n_chunks = len(layout.nnz)
    width = layout.chunk_rows + 1
    common = {"compressors": compressors, "fill_value": 0}
    sub.create_array("indptr", shape=(n_chunks, width), dtype=np.int64, chunks=(1, width),
                     **common)  # fmt: skip
    for name, dtype in (("indices", layout.index_dtype), ("data", np.dtype(layout.dtype))):
        sub.create_array(name, shape=(layout.length,), dtype=dtype, chunks=(layout.segment,),
                         **common)  # fmt: skip


def csr_targets(g: zarr.Group) -> tuple[zarr.Array, ...]:
    """The arrays of ``g``'s CSR ``X``, opened to write every chunk (as dense arrays are)."""
    return tuple(writable_array(g, name) for name in CSR_PARTS)


def write_csr_chunk(
    targets: Sequence[zarr.Array], layout: CSRLayout, i: int, block: Any
) -> dict[str, int]:
    """Write row-chunk ``i`` (a canonical ``csr_matrix``) into its segment and ``indptr`` row.

    Returns the digest of each part as written (:data:`~daskgd.data.store.CSR_PARTS`).

    Raises
    ------
    DataValidationError
        The block's rows or non-zeros are not those the layout was planned for (``X``
        changed between the count and the write).
    """
    zp, zi, zd = targets
    start, nnz, rows = layout.starts[i], int(block.nnz), int(block.shape[0])
    if nnz != layout.nnz[i] or rows != layout.rows(i):
        raise DataValidationError(
            f"X's row-chunk {i} has {rows} rows and {nnz} non-zeros now, but "
            f"{layout.rows(i)} rows and {layout.nnz[i]} non-zeros when they were counted: X "
            "changed between the two passes of the write (a dask graph that draws random "
            "numbers without a seed?). Persist X first (X = X.persist()) and write again"
        )
    row = np.full(layout.chunk_rows + 1, start + nnz, dtype=np.int64)
    row[: rows + 1] = np.asarray(block.indptr, dtype=np.int64) - int(block.indptr[0]) + start
    zp[i : i + 1] = row[None]
    indices = np.ascontiguousarray(block.indices, dtype=layout.index_dtype)
    data = np.ascontiguousarray(block.data, dtype=np.dtype(layout.dtype))
    if nnz:
        zi[start : start + nnz] = indices
        zd[start : start + nnz] = data
    values = (row, indices, data)
    return {name: chunk_digest(v) for name, v in zip(CSR_PARTS, values, strict=True)}


def _chunk_of(reader: CSRChunks, i: int) -> Any:
    return reader.chunk(i)


class CSRChunks:
    """A stored CSR ``X``: its layout checked when opened, its row-chunks read checked.

    Parameters
    ----------
    g : zarr.Group
        The dataset's group (with ``x_format = "csr"``).
    dataset : str
        Its path, for messages.
    attrs : mapping
        The group's attributes (``n_samples``, ``n_features``, ``digests``).

    Raises
    ------
    DataValidationError
        The subgroup or its arrays do not have the layout above: wrong attributes, a column
        count that disagrees with the group's ``n_features``, wrong dtypes, shapes or chunks.
    """

    def __init__(self, g: zarr.Group, dataset: str, attrs: Mapping[str, Any]) -> None:
        self.dataset = dataset
        sub = g["X"]
        if not isinstance(sub, zarr.Group):
            raise self._bad("X is an array, not a CSR subgroup")
        meta = dict(sub.attrs)
        shape, R, C = meta.get("shape"), meta.get("chunk_rows"), meta.get("segment")
        if meta.get("format") != "csr" or not (
            isinstance(shape, list) and len(shape) == 2 and all(isinstance(s, int) for s in shape)
        ):
            raise self._bad(f"the subgroup X's attributes are not those of CSR data: {meta}")
        n, d = shape
        for key, value in (("n_samples", n), ("n_features", d)):
            if key in attrs and attrs[key] != value:
                raise self._bad(
                    f"X has shape {shape} (its attribute shape) but the group's {key} is "
                    f"{attrs[key]}: the column or row count disagrees"
                )
        if not (isinstance(R, int) and R >= 1 and isinstance(C, int) and C >= 1):
            raise self._bad(f"X's chunk_rows ({R!r}) and segment ({C!r}) must be positive ints")
        self.parts = {name: array_member(g, name) for name in CSR_PARTS}
        zi, zd = self.parts["X/indices"], self.parts["X/data"]
        n_chunks = -(-n // R)
        expect = {
            "X/indptr": ((n_chunks, R + 1), (1, R + 1), ("int64",)),
            "X/indices": ((zi.shape[0],), (C,), ("int32", "int64")),
            "X/data": ((zi.shape[0],), (C,), ("float32", "float64")),
        }
        for name, z in self.parts.items():
            shp, chunks, dtypes = expect[name]
            if tuple(z.shape) != shp or tuple(z.chunks) != chunks or z.shards is not None:
                raise self._bad(
                    f"array {name!r} has shape {tuple(z.shape)} in chunks {tuple(z.chunks)}"
                    f"{' (sharded)' if z.shards is not None else ''}; for {n} rows in row-chunks "
                    f"of {R} and segments of {C} it must have shape {shp} in chunks {chunks}"
                )
            if np.dtype(z.dtype).name not in dtypes:
                raise self._bad(f"array {name!r} has dtype {z.dtype}, not one of {dtypes}")
        if d >= 2**31 and zi.dtype == np.int32:
            raise self._bad(f"X has {d} columns, more than int32 indices can number")
        nnz = meta.get("nnz")
        if not isinstance(nnz, int) or not 0 <= nnz <= zi.shape[0]:
            raise self._bad(f"X's attribute nnz ({nnz!r}) is not an int in [0, {zi.shape[0]}]")
        self.shape, self.chunk_rows, self.segment, self.nnz = (n, d), R, C, nnz
        self.dtype = np.dtype(zd.dtype)
        self.digests = {name: recorded_digests(attrs, name, n_chunks) for name in CSR_PARTS}

    def _bad(self, what: str) -> DataValidationError:
        return DataValidationError(
            f"{self.dataset}: {what}. The dataset is damaged or was not written by daskgd: "
            "write it again with daskgd.write_zarr"
        )

    @property
    def row_chunks(self) -> tuple[int, ...]:
        n, R = self.shape[0], self.chunk_rows
        return tuple(min(R, n - lo) for lo in range(0, n, R))

    def dask_array(self, name: str) -> da.Array:
        """``X`` as a dask array of ``csr_matrix`` blocks, one per row-chunk, each read checked."""
        return csr_dask_array(_chunk_of, self, name, self.row_chunks, self.shape[1], self.dtype)

    def chunk(self, i: int) -> Any:
        """Row-chunk ``i`` as a canonical ``csr_matrix``, read and checked."""
        return self.rows([i])

    def _pointer(self, i: int) -> np.ndarray:
        """Row-chunk ``i``'s index pointer (absolute positions), read and checked."""
        n, R = self.shape[0], self.chunk_rows
        z = self.parts["X/indptr"]
        out = np.empty((1, R + 1), dtype=np.int64)
        folder, decoder = direct_reader(z, 1)
        digests = self.digests["X/indptr"]
        read_chunk(z, "X/indptr", self.dataset, i, 1, out, folder=folder, decoder=decoder,
                   digest=None if digests is None else digests[i],
                   row_range=(i * R, min(n, i * R + R)))  # fmt: skip
        ptr = out[0, : min(R, n - i * R) + 1]
        start, end = int(ptr[0]), int(ptr[-1])
        length = int(self.parts["X/indices"].shape[0])
        if start % self.segment or not 0 <= start <= end <= length:
            raise DataValidationError(
                f"array 'X/indptr' of the dataset {self.dataset}{worker_suffix()}: row-chunk {i}'s"
                f" segment [{start}, {end}) does not start at a multiple of the segment size "
                f"{self.segment} or does not lie within X/indices (length {length}). The "
                "dataset is damaged: write it again"
            )
        return ptr

    def _segment(self, name: str, i: int, start: int, end: int, out: np.ndarray) -> None:
        """Fill ``out`` with positions ``[start, end)`` of ``X/indices`` or ``X/data``, row-chunk
        ``i``'s (decoded straight into ``out``: no copy through a buffer of zarr's)."""
        z = self.parts[name]
        c = self.segment
        n, R = self.shape[0], self.chunk_rows
        for k in range(start // c, -(-end // c)):
            key = z.metadata.encode_chunk_key((k,))
            if not key_exists(z, key):
                raise missing_chunk_error(z, name, self.dataset, i, R, key,
                                          (i * R, min(n, i * R + R)))  # fmt: skip
        if out.dtype != z.dtype:  # int32 indices of a result past int32's positions
            values = np.empty(end - start, dtype=z.dtype)
            self._segment(name, i, start, end, values)
            out[...] = values
            return
        folder, decoder = direct_reader(z, c)
        if folder is not None:
            # each chunk file read (or decompressed) straight into its place: zarr's async
            # reads took 0.4 s of a 160 MB partition, most of it waiting on its event loop
            for k in range(start // c, -(-end // c)):
                lo = k * c - start  # start is a multiple of c (_pointer checks it)
                read_chunk(z, name, self.dataset, k, c, out[lo : min(lo + c, end - start)],
                           folder=folder, decoder=decoder)  # fmt: skip
        else:
            self._read_through_zarr(z, name, i, start, end, out)
        digests = self.digests[name]
        if digests is not None and (found := chunk_digest(out)) != digests[i]:
            where = location(z, z.metadata.encode_chunk_key((start // c,)))
            raise DataValidationError(
                f"row-chunk {i} of array {name!r} of the dataset {self.dataset}{worker_suffix()} "
                f"does not match its digest ({DIGEST_ALGORITHM} {found:#010x}, recorded "
                f"{int(digests[i]):#010x}): its chunks from {where} on were altered or torn "
                "after they were written. Write the dataset again"
            )

    def _read_through_zarr(
        self, z: zarr.Array, name: str, i: int, start: int, end: int, out: np.ndarray
    ) -> None:
        """:meth:`_segment`'s read where the chunk files cannot be read directly (remote
        stores, other codecs): decoded by zarr into ``out``."""
        from zarr.core.buffer import default_buffer_prototype

        c = self.segment
        try:
            z.get_basic_selection(
                slice(start, end), out=default_buffer_prototype().nd_buffer.from_numpy_array(out)
            )
        except OSError:
            raise  # the store itself failed (permissions, network): its own message says so
        except Exception as exc:
            raise DataValidationError(
                f"row-chunk {i} of array {name!r} of the dataset {self.dataset}{worker_suffix()} "
                f"cannot be decoded ({type(exc).__name__}: {exc}): one of its chunks "
                f"{start // c}-{max(start, end - 1) // c} is damaged. Write the dataset again"
            ) from exc

    def rows(self, chunks: Sequence[int]) -> Any:
        """Row-chunks ``chunks``, in this order, as one canonical ``csr_matrix``.

        The parts are decoded straight into their places of the result (no join of per-chunk
        matrices, no copy through zarr's buffers).

        Raises
        ------
        DataValidationError
            A missing, damaged or altered chunk file; a bad structure (as
            :func:`~daskgd.data.csr.check_csr`, :func:`~daskgd.data.csr.check_sorted`),
            naming the array, the row-chunk and the row.
        DataNotFoundError
            The dataset or one of its arrays is not there (e.g. on a worker that cannot see it).
        """
        n_chunks = len(self.row_chunks)
        for i in chunks:
            if not 0 <= i < n_chunks:
                raise IndexError(
                    f"chunk {i} out of range: {self.dataset} has {n_chunks} row-chunks"
                )
        ptrs = [self._pointer(i) for i in chunks]
        total = sum(int(p[-1] - p[0]) for p in ptrs)
        stored = np.dtype(self.parts["X/indices"].dtype)
        # scipy keeps indptr and indices in one dtype: int64 once positions pass int32's range
        itype = stored if total < 2**31 else np.dtype(np.int64)
        indices = np.empty(total, dtype=itype)
        data = np.empty(total, dtype=self.dtype)
        indptr = np.empty(sum(len(p) - 1 for p in ptrs) + 1, dtype=itype)
        indptr[0] = 0
        at = r = 0
        for i, ptr in zip(chunks, ptrs, strict=True):
            start, end = int(ptr[0]), int(ptr[-1])
            idx = indices[at : at + end - start]
            self._segment("X/indices", i, start, end, idx)
            row0 = i * self.chunk_rows
            check_csr(ptr, idx, self.shape[1], dataset=self.dataset, chunk=i, row0=row0)
            check_sorted(ptr, idx, dataset=self.dataset, chunk=i, row0=row0)
            self._segment("X/data", i, start, end, data[at : at + end - start])
            indptr[r + 1 : r + len(ptr)] = ptr[1:] - start + at
            at += end - start
            r += len(ptr) - 1
        return make_csr(data, indices, indptr, self.shape[1])
