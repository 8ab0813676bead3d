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
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from daskgd.data.store import (
    ARRAY_NAMES,
    group_arrays,
    open_group,
    rows_per_chunk,
    store_path,
    worker_suffix,
)
from daskgd.errors import DataNotFoundError, DataValidationError

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

#: The digest of a row-chunk recorded in a dataset's ``digests`` attribute.
DIGEST_ALGORITHM = "crc32c"


def chunk_digest(a: np.ndarray) -> int:
    """CRC-32C of an array's values: its C-order bytes, little-endian.

    Digests are computed from the values (not from the stored, possibly compressed,
    bytes), so one digest checks a chunk whichever way it is read.
    """
    import google_crc32c

    a = np.ascontiguousarray(a)
    little = a.dtype.newbyteorder("<")
    if a.dtype != little:  # a big-endian array (or machine): digest the little-endian bytes
        a = a.astype(little)
    flat = a.reshape(-1).view(np.uint8)
    flat.flags.writeable = False  # google_crc32c reads only read-only buffers
    return int(google_crc32c.value(flat))


def _location(z: zarr.Array, key: str) -> str:
    """Where ``key`` of ``z`` lives: a file path for a local store, else the store's path."""
    root = getattr(z.store, "root", None)
    base = str(root) if root is not None else str(getattr(z.store, "path", z.store))
    return "/".join(part for part in (base.rstrip("/"), z.path, key) if part)


def _key_exists(z: zarr.Array, key: str) -> bool:
    from zarr.storage import LocalStore

    if isinstance(z.store, LocalStore):
        return os.path.exists(os.path.join(str(z.store.root), z.path, key))
    from zarr.core.sync import sync

    return bool(sync(z.store.exists(f"{z.path}/{key}" if z.path else key)))


def _chunk_keys(z: zarr.Array, i: int) -> list[str]:
    """The store keys of row-chunk ``i`` of ``z`` (its shard when sharded), every column chunk."""
    outer = tuple(z.shards or z.chunks)
    cols = [range(-(-int(s) // int(c))) for s, c in zip(z.shape[1:], outer[1:], strict=True)]
    return [z.metadata.encode_chunk_key((i, *rest)) for rest in itertools.product(*cols)]


def _missing(z: zarr.Array, name: str, dataset: str, i: int, rows: int, key: str) -> Exception:
    """The error for row-chunk ``i`` of ``z`` not being in the store."""
    where = worker_suffix()
    root = getattr(z.store, "root", None)
    if root is not None and not os.path.isdir(str(root)):
        return DataNotFoundError(
            f"the dataset {dataset} does not exist{where}: it was opened where it exists, but "
            "this process cannot see it (or it was moved or deleted since). Keep the dataset "
            "on a filesystem that every worker mounts at the same path, or use a URL every "
            "worker can read (s3://..., gs://...)"
        )
    if not _key_exists(z, "zarr.json"):
        return DataNotFoundError(
            f"array {name!r} of the dataset {dataset} is not there{where} "
            f"({_location(z, 'zarr.json')} is missing): the dataset was moved, deleted or "
            "damaged since it was opened, or this worker sees another folder at that path; "
            "write the dataset again"
        )
    lo = i * rows
    hi = min(lo + rows, int(z.shape[0]))
    return DataValidationError(
        f"array {name!r} of the dataset {dataset} has no chunk {i} (rows {lo}-{hi - 1})"
        f"{where}: {_location(z, key)} is missing. A complete dataset has every chunk: it was "
        "damaged, or written by a tool that leaves out chunks equal to the fill value (zarr "
        "does unless write_empty_chunks=True). Write it again with daskgd.write_zarr"
    )


def _local_chunks(z: zarr.Array) -> tuple[str, tuple[Any, ...]] | None:
    """The folder of ``z``'s chunk files and the codecs after ``bytes``, when its chunks are
    whole rows of native-endian bytes (then further encoded by those codecs) in local files.
    """
    from zarr.codecs import BytesCodec
    from zarr.storage import LocalStore

    meta = z.metadata
    if getattr(meta, "zarr_format", None) != 3 or not isinstance(z.store, LocalStore):
        return None
    codecs: tuple[Any, ...] = tuple(getattr(meta, "codecs", ()))
    if not codecs or not isinstance(codecs[0], BytesCodec):
        return None
    endian = getattr(codecs[0].endian, "value", codecs[0].endian)  # an Enum before zarr 3.2
    if z.dtype.itemsize > 1 and endian != sys.byteorder:
        return None
    if tuple(z.chunks[1:]) != tuple(z.shape[1:]):  # columns split over chunks
        return None
    return os.path.join(str(z.store.root), z.path), codecs[1:]


def direct_folder(z: zarr.Array) -> str | None:
    """The folder whose files hold ``z``'s raw chunks, when they can be read as-is; else None."""
    found = _local_chunks(z)
    return found[0] if found is not None and not found[1] else None


def direct_reader(z: zarr.Array, rows: int) -> tuple[str | None, Any]:
    """How :func:`read_chunk` reads ``z``'s row-chunks of ``rows`` rows without zarr.

    Returns ``(folder, decoder)``: raw chunk files are read into place (decoder None);
    Zstandard frames of raw bytes (zarr's and daskgd's default codecs) are decompressed
    straight into place by numcodecs' ``Zstd``, which saves zarr's intermediate buffer and
    copy (a third of the read time, measured on 80 MB chunks). ``(None, None)``: through
    zarr (sharding, other codecs, remote stores).
    """
    from zarr.codecs import ZstdCodec

    found = _local_chunks(z)
    if found is None or int(z.chunks[0]) != rows:
        return None, None
    folder, rest = found
    if not rest:
        return folder, None
    if len(rest) == 1 and isinstance(rest[0], ZstdCodec):
        from numcodecs import Zstd

        return folder, Zstd(level=rest[0].level, checksum=rest[0].checksum)
    return None, None


def read_chunk(
    z: zarr.Array,
    name: str,
    dataset: str,
    i: int,
    rows: int,
    out: np.ndarray,
    *,
    folder: str | None = None,
    decoder: Any = None,
    digest: int | None = None,
) -> None:
    """Fill ``out`` (C-contiguous) with row-chunk ``i`` of ``z``, whose row-chunks hold ``rows``.

    ``folder`` and ``decoder`` are :func:`direct_reader`'s for ``z`` (folder None: read
    through zarr); ``digest`` the chunk's recorded :func:`chunk_digest`, if any.

    Raises
    ------
    DataValidationError
        The chunk is missing, its raw file has the wrong size, zarr cannot decode it, or it
        does not match its digest; the message names the array, the chunk and its file.
    DataNotFoundError
        The array or the whole dataset is not there (e.g. on a worker that cannot see it).
    """
    keys = _chunk_keys(z, i)
    key = keys[0]
    if folder is not None and decoder is not None:
        _decode_file(z, name, dataset, i, rows, out, os.path.join(folder, key), decoder)
    elif folder is not None:
        path = os.path.join(folder, key)
        try:
            f = open(path, "rb", 0)
        except FileNotFoundError:
            raise _missing(z, name, dataset, i, rows, key) from None
        with f:
            # an edge chunk is stored at full chunk size: its first rows are ours
            expected = int(np.prod(z.chunks)) * z.dtype.itemsize
            size = os.fstat(f.fileno()).st_size
            view = memoryview(out).cast("B")  # type: ignore[arg-type]
            got = 0
            if size == expected:
                while got < view.nbytes and (k := f.readinto(view[got:])):
                    got += k
            if size != expected or got != view.nbytes:
                raise DataValidationError(
                    f"chunk {i} of array {name!r} of the dataset {dataset}{worker_suffix()} has "
                    f"the wrong size: {path} holds {size if got == 0 else got} bytes, an "
                    f"uncompressed chunk of shape {tuple(z.chunks)} {z.dtype} has {expected}. "
                    "The file is truncated or damaged: write the dataset again"
                )
    else:
        for k in keys:
            if not _key_exists(z, k):
                raise _missing(z, name, dataset, i, rows, k)
        lo = i * rows
        try:
            out[...] = z[lo : lo + out.shape[0]]
        except OSError:
            raise  # the store itself failed (permissions, network): its own message says so
        except Exception as exc:
            raise DataValidationError(
                f"chunk {i} of array {name!r} of the dataset {dataset}{worker_suffix()} cannot be "
                f"decoded ({type(exc).__name__}: {exc}): {_location(z, key)} is damaged. "
                "Write the dataset again"
            ) from exc
    if digest is not None and (found := chunk_digest(out)) != digest:
        raise DataValidationError(
            f"chunk {i} of array {name!r} of the dataset {dataset}{worker_suffix()} does not match "
            f"its digest ({DIGEST_ALGORITHM} {found:#010x}, recorded {int(digest):#010x}): "
            f"{_location(z, key)} was altered or torn after it was written. Write the dataset "
            "again"
        )


def _decode_file(
    z: zarr.Array, name: str, dataset: str, i: int, rows: int, out: np.ndarray, path: str,
    decoder: Any,
) -> None:  # fmt: skip
    """Decompress the chunk file ``path`` into ``out`` (through a buffer for an edge chunk)."""
    key = _chunk_keys(z, i)[0]
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise _missing(z, name, dataset, i, rows, key) from None
    # an edge chunk is stored at full chunk size: its first rows are ours
    full = out.size == int(np.prod(z.chunks))
    target = out if full else np.empty(tuple(z.chunks), dtype=z.dtype)
    try:
        decoder.decode(data, out=target)
    except Exception as exc:  # numcodecs: RuntimeError for bad frames or sizes
        raise DataValidationError(
            f"chunk {i} of array {name!r} of the dataset {dataset}{worker_suffix()} cannot be "
            f"decoded ({type(exc).__name__}: {exc}): {_location(z, key)} is damaged. "
            "Write the dataset again"
        ) from exc
    if not full:
        out[...] = target[: out.shape[0]]


def recorded_digests(attrs: Mapping[str, Any], name: str, n_chunks: int) -> list[int] | None:
    """The recorded digests of array ``name``'s row-chunks, or None when there are none."""
    recorded = attrs.get("digests")
    if not isinstance(recorded, Mapping) or recorded.get("algorithm") != DIGEST_ALGORITHM:
        return None
    values = recorded.get(name)
    if not isinstance(values, list) or len(values) != n_chunks:
        return None
    return [int(v) for v in values]


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
        (:func:`read_row_arrays` reads the offsets too.)
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
) -> dict[str, np.ndarray]:
    """As :func:`read_row_chunks`, each array of ``names`` the dataset has, by name.

    Returns
    -------
    dict of str to numpy.ndarray
        ``X``, ``y`` and those of ``sample_weight`` and ``offset`` that the dataset holds
        (and ``names`` asks for), each the chunks' rows concatenated.
    """
    p = store_path(path)
    try:
        g = open_group(p, "r", storage_options)
    except FileNotFoundError as exc:
        raise DataNotFoundError(
            f"the dataset {p} does not exist{worker_suffix()} ({exc}): it was opened where it "
            "exists, but this process cannot see it (or it was moved or deleted since). Keep the "
            "dataset on a filesystem that every worker mounts at the same path, or use a URL "
            "every worker can read (s3://..., gs://...)"
        ) from exc
    attrs = dict(g.attrs)
    arrays = group_arrays(g, p)
    rows, n = rows_per_chunk(arrays["X"]), int(arrays["X"].shape[0])
    n_chunks = -(-n // rows)
    for i in chunks:
        if not 0 <= i < n_chunks:
            raise IndexError(f"chunk {i} out of range: {p} has {n_chunks} row-chunks")
    sizes = [min(rows, n - i * rows) for i in chunks]
    out: dict[str, np.ndarray] = {}
    for name, z in arrays.items():
        if name not in names:
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
        dataset has none.

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
