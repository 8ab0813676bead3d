"""Chunk files of a dataset's arrays: their keys and files, digests, checked reads of one chunk.

The lowest layer of the reads (:mod:`~daskgd.data.chunkio` reads whole row-chunks of a
dataset with it, :mod:`~daskgd.data.sparse_store` the parts of a CSR ``X``). Zarr reads a
chunk that is not there as its fill value, silently: every read here checks that the chunk's
files exist, decode, and match the digest recorded when they were written.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr

from daskgd.data.store import worker_suffix
from daskgd.errors import DataNotFoundError, DataValidationError

__all__ = [
    "BLOCK_DIGESTS",
    "DIGEST_ALGORITHM",
    "block_digests",
    "chunk_digest",
    "chunk_keys",
    "direct_folder",
    "direct_reader",
    "key_exists",
    "location",
    "missing_chunk_error",
    "read_chunk",
    "recorded_block_digests",
    "recorded_digests",
    "wrong_size_error",
]

#: The digest of a row-chunk recorded in a dataset's ``digests`` attribute.
DIGEST_ALGORITHM = "crc32c"

#: The entry of the ``digests`` attribute that holds the digest of every block of an ``X``
#: whose columns are cut into chunks: a list (per row-chunk) of lists (per column chunk).
BLOCK_DIGESTS = "X_blocks"


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


def location(z: zarr.Array, key: str) -> str:
    """Where ``key`` of ``z`` lives: a file path for a local store, else the store's path."""
    root = getattr(z.store, "root", None)
    base = str(root) if root is not None else str(getattr(z.store, "path", z.store))
    return "/".join(part for part in (base.rstrip("/"), z.path, key) if part)


def key_exists(z: zarr.Array, key: str) -> bool:
    """Whether the store of ``z`` holds ``key`` (a chunk key of ``z``, or ``zarr.json``)."""
    from zarr.storage import LocalStore

    if isinstance(z.store, LocalStore):
        return os.path.exists(os.path.join(str(z.store.root), z.path, key))
    from zarr.core.sync import sync

    return bool(sync(z.store.exists(f"{z.path}/{key}" if z.path else key)))


def chunk_keys(z: zarr.Array, i: int) -> list[str]:
    """The store keys of row-chunk ``i`` of ``z`` (its shard when sharded), every column chunk."""
    outer = tuple(z.shards or z.chunks)
    cols = [range(-(-int(s) // int(c))) for s, c in zip(z.shape[1:], outer[1:], strict=True)]
    return [z.metadata.encode_chunk_key((i, *rest)) for rest in itertools.product(*cols)]


def missing_chunk_error(
    z: zarr.Array,
    name: str,
    dataset: str,
    i: int,
    rows: int,
    key: str,
    row_range: tuple[int, int] | None = None,
) -> Exception:
    """The error for row-chunk ``i`` of ``z`` (rows of ``rows`` each) not being in the store.

    ``row_range``: the dataset's rows ``[lo, hi)`` that the chunk holds, when they are not
    ``z``'s own (the parts of a CSR ``X``).
    """
    where = worker_suffix()
    root = getattr(z.store, "root", None)
    if root is not None and not os.path.isdir(str(root)):
        return DataNotFoundError(
            f"the dataset {dataset} does not exist{where}: it was opened where it exists, but "
            "this process cannot see it (or it was moved or deleted since). Keep the dataset "
            "on a filesystem that every worker mounts at the same path, or use a URL every "
            "worker can read (s3://..., gs://...)"
        )
    if not key_exists(z, "zarr.json"):
        return DataNotFoundError(
            f"array {name!r} of the dataset {dataset} is not there{where} "
            f"({location(z, 'zarr.json')} is missing): the dataset was moved, deleted or "
            "damaged since it was opened, or this worker sees another folder at that path; "
            "write the dataset again"
        )
    lo, hi = row_range or (i * rows, min(i * rows + rows, int(z.shape[0])))
    return DataValidationError(
        f"array {name!r} of the dataset {dataset} has no chunk {i} (rows {lo}-{hi - 1})"
        f"{where}: {location(z, key)} is missing. A complete dataset has every chunk: it was "
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
    row_range: tuple[int, int] | None = None,
) -> None:
    """Fill ``out`` (C-contiguous) with row-chunk ``i`` of ``z``, whose row-chunks hold ``rows``.

    ``folder`` and ``decoder`` are :func:`direct_reader`'s for ``z`` (folder None: read
    through zarr); ``digest`` the chunk's recorded :func:`chunk_digest`, if any;
    ``row_range`` as for :func:`missing_chunk_error`.

    Raises
    ------
    DataValidationError
        The chunk is missing, its raw file has the wrong size, zarr cannot decode it, or it
        does not match its digest; the message names the array, the chunk and its file.
    DataNotFoundError
        The array or the whole dataset is not there (e.g. on a worker that cannot see it).
    """
    keys = chunk_keys(z, i)
    key = keys[0]
    if folder is not None and decoder is not None:
        _decode_file(z, name, dataset, i, rows, out, os.path.join(folder, key), decoder,
                     row_range)  # fmt: skip
    elif folder is not None:
        path = os.path.join(folder, key)
        try:
            f = open(path, "rb", 0)
        except FileNotFoundError:
            raise missing_chunk_error(z, name, dataset, i, rows, key, row_range) from None
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
                raise wrong_size_error(
                    z, f"chunk {i} of array {name!r} of the dataset {dataset}{worker_suffix()}",
                    path, size if got == 0 else got, expected,
                )  # fmt: skip
    else:
        for k in keys:
            if not key_exists(z, k):
                raise missing_chunk_error(z, name, dataset, i, rows, k, row_range)
        lo = i * rows
        try:
            out[...] = z[lo : lo + out.shape[0]]
        except OSError:
            raise  # the store itself failed (permissions, network): its own message says so
        except Exception as exc:
            raise undecodable(
                f"chunk {i} of array {name!r} of the dataset {dataset}{worker_suffix()}",
                location(z, key), exc,
            ) from exc  # fmt: skip
    check_digest(out, digest, f"chunk {i} of array {name!r} of the dataset {dataset}"
                 f"{worker_suffix()}", location(z, key))  # fmt: skip


def wrong_size_error(
    z: zarr.Array, what: str, path: str, held: int, expected: int
) -> DataValidationError:
    """The error for ``what`` (a chunk, named), stored uncompressed in ``path``, whose file
    holds ``held`` bytes where a chunk of ``z`` has ``expected``."""
    return DataValidationError(
        f"{what} has the wrong size: {path} holds {held} bytes, an uncompressed chunk of "
        f"shape {tuple(z.chunks)} {z.dtype} has {expected}. The file is truncated or "
        "damaged: write the dataset again"
    )


def undecodable(what: str, where: str, exc: Exception) -> DataValidationError:
    """The error for ``what`` (a chunk, named), stored at ``where``, that cannot be decoded."""
    return DataValidationError(
        f"{what} cannot be decoded ({type(exc).__name__}: {exc}): {where} is damaged. "
        "Write the dataset again"
    )


def check_digest(values: np.ndarray, digest: int | None, what: str, where: str) -> None:
    """Raise when ``values`` of ``what`` (a chunk, named), stored at ``where``, do not match
    their recorded ``digest`` (None: nothing recorded, nothing to check)."""
    if digest is not None and (found := chunk_digest(values)) != digest:
        raise DataValidationError(
            f"{what} does not match its digest ({DIGEST_ALGORITHM} {found:#010x}, recorded "
            f"{int(digest):#010x}): {where} was altered or torn after it was written. Write "
            "the dataset again"
        )


def _decode_file(
    z: zarr.Array, name: str, dataset: str, i: int, rows: int, out: np.ndarray, path: str,
    decoder: Any, row_range: tuple[int, int] | None = None,
) -> None:  # fmt: skip
    """Decompress the chunk file ``path`` into ``out`` (through a buffer for an edge chunk)."""
    key = chunk_keys(z, i)[0]
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise missing_chunk_error(z, name, dataset, i, rows, key, row_range) from None
    # an edge chunk is stored at full chunk size: its first rows are ours
    full = out.size == int(np.prod(z.chunks))
    target = out if full else np.empty(tuple(z.chunks), dtype=z.dtype)
    try:
        decoder.decode(data, out=target)
    except Exception as exc:  # numcodecs: RuntimeError for bad frames or sizes
        raise DataValidationError(
            f"chunk {i} of array {name!r} of the dataset {dataset}{worker_suffix()} cannot be "
            f"decoded ({type(exc).__name__}: {exc}): {location(z, key)} is damaged. "
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


def block_digests(values: np.ndarray, chunk_cols: int) -> list[int]:
    """The :func:`chunk_digest` of each block of a row-chunk's values, ``chunk_cols`` columns
    each (the last one narrower), left to right."""
    d = int(values.shape[1])
    return [chunk_digest(values[:, c : c + chunk_cols]) for c in range(0, d, chunk_cols)]


def recorded_block_digests(
    attrs: Mapping[str, Any], n_chunks: int, n_col_chunks: int
) -> list[list[int]] | None:
    """The recorded digests of ``X``'s blocks (``[i][j]``: row-chunk ``i``, column chunk
    ``j``), or None when there are none of that many row-chunks and column chunks."""
    recorded = attrs.get("digests")
    if not isinstance(recorded, Mapping) or recorded.get("algorithm") != DIGEST_ALGORITHM:
        return None
    values = recorded.get(BLOCK_DIGESTS)
    if not isinstance(values, list) or len(values) != n_chunks:
        return None
    if not all(isinstance(row, list) and len(row) == n_col_chunks for row in values):
        return None
    return [[int(v) for v in row] for row in values]
