"""The record of a dataset's value check, so that an unchanged dataset is not scanned twice.

When daskgd writes a dataset it checks every value as it goes (NaN/inf in ``X`` and ``y``,
negative or non-finite weights) and records the CRC-32C digest of every row-chunk. It then
stores the result of that check in the group attribute ``checked``::

    {"version": 1, "finite": true, "weight_sum": 12.5 or null, "token": "<sha256 hex>"}

and :func:`~daskgd.data.open_zarr` (``validate=True``) trusts it instead of scanning the data
again, as long as the group is unchanged. The ``token`` ties the record to the group's
content without reading any chunk:

* it hashes the recorded **digests** of every row-chunk (and of every block of an ``X``
  whose columns are cut into chunks, ``X_blocks``), and every chunk that is read (by a
  training task, :func:`~daskgd.data.load_chunk`, or the dataset's dask arrays) is checked
  against its digest. A chunk that was rewritten after the check therefore cannot be read
  at all: the read raises :class:`~daskgd.errors.DataValidationError`. The record holds for
  exactly the values that can be read.
* it hashes each array's **metadata** (shape, dtype, chunking, codecs, fill value): an
  array that was replaced, resized or re-encoded (for which the recorded digests might no
  longer be checked) breaks the token, and the group is scanned again.

File sizes and modification times were the other choice: they cost a ``stat`` per chunk
(thousands of calls on an object store), change when a dataset is merely copied, and can
stay the same when a chunk is rewritten in place; the digests cost nothing more (they are
read with the attributes) and are checked on every read anyway.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import zarr

from daskgd.data.chunkfiles import BLOCK_DIGESTS
from daskgd.data.chunkio import recorded_digests
from daskgd.data.store import check_opened, open_group, opened_attrs

__all__ = [
    "RECORD_ATTR",
    "RECORD_VERSION",
    "check_unchanged",
    "content_token",
    "make_record",
    "trusted_record",
]

#: The group attribute that holds the record.
RECORD_ATTR = "checked"
#: Version of the record's layout; another version is not trusted (the group is scanned).
RECORD_VERSION = 1


def content_token(arrays: Mapping[str, zarr.Array], attrs: Mapping[str, Any]) -> str | None:
    """A SHA-256 of the group's chunk digests, its arrays' metadata and the attributes that
    describe the values (task, classes, feature names); None without digests.

    Parameters
    ----------
    arrays : mapping of str to zarr.Array
        The dataset's arrays (``X``, ``y``, ``sample_weight``, ``offset``; a CSR ``X`` as
        its parts ``X/indptr``, ``X/indices``, ``X/data``).
    attrs : mapping
        The group attributes, with ``digests``.

    Returns
    -------
    str or None
        None when some array has no digest for each of its row-chunks: such a group's
        chunks are not all checked on read, so no record can be trusted for it.
    """
    digests: dict[str, list[int]] = {}
    for name, z in arrays.items():
        shards = z.shards if z.shards is not None else z.chunks
        n_chunks = -(-int(z.shape[0]) // max(1, int(shards[0])))
        if name.startswith("X/") and "X/indptr" in arrays:
            # a CSR X's parts have a digest per row-chunk: one per row of its indptr
            n_chunks = int(arrays["X/indptr"].shape[0])
        found = recorded_digests(attrs, name, n_chunks)
        if found is None:
            return None
        digests[name] = found
    recorded = attrs.get("digests")
    if isinstance(recorded, Mapping) and BLOCK_DIGESTS in recorded:
        # the digests that reads of column ranges check: editing them with a block breaks
        # the record too (left out when there are none, so that older tokens still hold)
        digests[BLOCK_DIGESTS] = recorded[BLOCK_DIGESTS]
    h = hashlib.sha256()
    h.update(json.dumps(digests, sort_keys=True).encode())
    # what a trusted open takes from the attributes without reading y: an edited class
    # list would give a class with no samples a column
    described = {k: attrs.get(k) for k in ("task", "classes", "feature_names")}
    h.update(json.dumps(described, sort_keys=True, default=str).encode())
    for name in sorted(arrays):
        meta = arrays[name].metadata.to_dict()
        meta.pop("attributes", None)  # an array's own attributes say nothing of its values
        h.update(name.encode())
        h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()


def make_record(
    arrays: Mapping[str, zarr.Array], attrs: Mapping[str, Any], weight_sum: float | None
) -> dict[str, Any] | None:
    """The record of a check that found every value good, or None when it cannot be tied.

    Parameters
    ----------
    arrays, attrs
        As for :func:`content_token`, after the digests are recorded.
    weight_sum : float or None
        The sum of ``sample_weight`` (None when there are no weights).
    """
    token = content_token(arrays, attrs)
    if token is None:
        return None
    return {
        "version": RECORD_VERSION,
        "finite": True,
        "weight_sum": None if weight_sum is None else float(weight_sum),
        "token": token,
    }


def trusted_record(
    arrays: Mapping[str, zarr.Array], attrs: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The group's record when it can be trusted instead of a scan, else None.

    Trusted: a record of this version, of a check that passed (finite values, a positive
    weight sum when there are weights), whose token matches the group as it is now.
    """
    record = attrs.get(RECORD_ATTR)
    if not isinstance(record, Mapping) or record.get("version") != RECORD_VERSION:
        return None
    if record.get("finite") is not True:
        return None
    if "sample_weight" in arrays:
        total = record.get("weight_sum")
        if not isinstance(total, int | float) or not total > 0:
            return None
    token = record.get("token")
    if not isinstance(token, str) or token != content_token(arrays, attrs):
        return None
    return dict(record)


def check_unchanged(
    path: str, storage_options: dict[str, Any] | None, attrs: Mapping[str, Any]
) -> None:
    """Raise :class:`~daskgd.errors.DataChangedError` if the dataset at ``path`` is no longer
    the one whose attributes, when it was opened, were ``attrs``: it was written again (a new
    ``write_id``), its recorded chunk digests changed, or it is gone.

    A fit calls this when its training tasks are done. Each task's rows are checked against
    the digests as it reads them (and mapped rows again as it ends), but a task rerun after
    a worker died reads the dataset as it is then: without this check, a dataset rewritten
    meanwhile would give a model of two datasets. A dataset written by another tool, with
    neither attribute, cannot be compared and passes.
    """
    opened = opened_attrs(attrs)
    if not opened:
        return
    try:
        now = dict(open_group(path, "r", storage_options).attrs)
    except FileNotFoundError:
        now = {}
    check_opened(path, now, opened)
