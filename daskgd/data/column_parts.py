"""Checks that datasets put side by side (:func:`~daskgd.data.columns.concat_features`) hold
the same rows, and their feature names side by side.

Comparing ``y`` (and the weights and offsets) costs nothing for groups that daskgd wrote
with the same row-chunks: their recorded digests are compared. Otherwise the values are
read (``n`` numbers per part) and compared.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from daskgd.data.chunkfiles import recorded_digests
from daskgd.data.chunkio import read_row_arrays
from daskgd.data.dataset import Dataset
from daskgd.data.store import compute_on_cluster
from daskgd.errors import DataValidationError

__all__ = ["check_parts", "joined_feature_names", "part_bounds", "part_name"]


def part_bounds(parts: Sequence[Dataset]) -> tuple[tuple[int, int], ...]:
    """Each part's columns ``[c0, c1)`` in the whole, the parts side by side."""
    ends = np.cumsum([0, *(ds.n_features for ds in parts)]).tolist()
    return tuple(itertools.pairwise(ends))


def part_name(ds: Dataset, k: int) -> str:
    """How messages name part ``k``: its index and its path."""
    return f"part {k} ({ds.path if ds.path else 'in memory'})"


def check_parts(parts: Sequence[Dataset], client: Any) -> None:
    """Refuse parts that do not hold the same rows, naming the part and saying what to do
    (the checks of :func:`~daskgd.data.columns.concat_features`)."""
    first = parts[0]
    for k, ds in enumerate(parts):
        if ds.is_sparse:
            raise DataValidationError(
                f"{part_name(ds, k)} has a sparse X: feature partitioning needs dense X. Train "
                "sparse data partitioned by rows, or write the part densely"
            )
    dtypes = {ds.dtype for ds in parts}
    if len(dtypes) > 1:
        listed = ", ".join(f"{part_name(ds, k)}: {ds.dtype}" for k, ds in enumerate(parts))
        raise DataValidationError(
            f"the parts' X have different dtypes ({listed}): write them again with one dtype "
            "(float32 or float64)"
        )
    for k, ds in enumerate(parts[1:], start=1):
        if ds.n_samples != first.n_samples:
            raise DataValidationError(
                f"{part_name(ds, k)} has {ds.n_samples} rows but {part_name(first, 0)} has "
                f"{first.n_samples}: the parts must hold the same rows, in the same order"
            )
        row = _differs(first, ds, "y", client)
        if row is not None:
            raise DataValidationError(
                f"{part_name(ds, k)}'s y differs from {part_name(first, 0)}'s (first at row "
                f"{row}): the parts must hold the same rows in the same order, with the same "
                "targets"
            )
        for name in ("sample_weight", "offset"):
            if getattr(ds, name) is None:
                continue
            if getattr(first, name) is None:
                raise DataValidationError(
                    f"{part_name(ds, k)} holds {name} but {part_name(first, 0)} does not: the "
                    f"first part's y, sample_weight and offset are trained on. Put {name} in "
                    "the first group (or remove it from this one)"
                )
            row = _differs(first, ds, name, client)
            if row is not None:
                raise DataValidationError(
                    f"{part_name(ds, k)}'s {name} differs from {part_name(first, 0)}'s (first "
                    f"at row {row}): the first part's is trained on. Remove {name} from this "
                    "part, or make it the same"
                )


def _recorded(ds: Dataset, name: str) -> list[int] | None:
    """The digests of ``name``'s row-chunks as stored, for a Dataset read from a group."""
    return None if ds.path is None else recorded_digests(ds.attrs, name, ds.n_chunks)


def _values(ds: Dataset, name: str, client: Any) -> np.ndarray:
    """All of array ``name`` of ``ds`` (n values): read checked, or computed."""
    if ds.path is not None:
        read = read_row_arrays(ds.path, range(ds.n_chunks), names=(name,),
                               storage_options=ds.storage_options)  # fmt: skip
        return np.asarray(read[name])
    (values,) = compute_on_cluster([getattr(ds, name)], client)
    return np.asarray(values)


def _differs(first: Dataset, other: Dataset, name: str, client: Any) -> int | None:
    """The first row where array ``name`` of the two differs, None when it is the same.

    Equal digests of the same row-chunks and dtype mean equal values (nothing is read);
    otherwise both are read and compared (digests also differ for the same values of
    another dtype, or -0.0 for 0.0).
    """
    a, b = _recorded(first, name), _recorded(other, name)
    same_dtype = getattr(first, name).dtype == getattr(other, name).dtype
    if a is not None and a == b and first.chunks == other.chunks and same_dtype:
        return None
    va, vb = _values(first, name, client), _values(other, name, client)
    unequal = va != vb
    if va.dtype.kind == "f" and vb.dtype.kind == "f":
        unequal &= ~(np.isnan(va) & np.isnan(vb))
    found = np.flatnonzero(unequal)
    return None if found.size == 0 else int(found[0])


def joined_feature_names(
    parts: Sequence[Dataset], bounds: Sequence[tuple[int, int]]
) -> list[str] | None:
    """The parts' feature names side by side, refused unless distinct (the names of
    :class:`~daskgd.data.columns.FeatureBlocks`)."""
    if all(ds.feature_names is None for ds in parts):
        return None
    names: list[str] = []
    for ds, (c0, c1) in zip(parts, bounds, strict=True):
        names += ds.feature_names or [f"x{j}" for j in range(c0, c1)]
    seen: dict[str, int] = {}
    for j, f in enumerate(names):
        if f in seen:
            k0, k1 = (next(k for k, (c0, c1) in enumerate(bounds) if c0 <= c < c1)
                      for c in (seen[f], j))  # fmt: skip
            raise DataValidationError(
                f"feature name {f!r} is in part {k0} (column {seen[f]}) and part {k1} (column "
                f"{j}): the parts' columns must have distinct names. Rename them (or give "
                "every part its feature names: a part without any has them made, x<column>)"
            )
        seen[f] = j
    return names
