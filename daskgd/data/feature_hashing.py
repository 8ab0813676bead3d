"""How a DataFrame's columns become hashed sparse features: :class:`FeatureHashing`, the
hashing trick as scikit-learn's ``FeatureHasher`` does it (used by
:mod:`~daskgd.data.hashing`, which makes datasets of it).

**A row's features.** Categorical column ``c`` with value ``v``: the feature ``"c=v"`` (``v``
formatted by ``str``: ``"c=True"``, ``"c=31"``) with value 1; a missing value (None, NaN,
``pd.NA``) gives none. Numeric column ``c`` with value ``x``: the feature ``"c"`` with value
``x``; a zero gives none (as in ``FeatureHasher``), and NaN or inf is **refused**, naming the
column and the row: dropping it would silently read a missing number as 0 (fill it, or make
the column categorical). By default object, string, category and boolean columns are
categorical, integer and float ones numeric; ``categorical=``/``numeric=`` set the roles of
the columns they list.

**The hashing** is ``FeatureHasher(n_features, input_type="pair", alternate_sign=...)`` on each
row's ``(column, value)`` pairs in the recorded column order: equal, value for value, to
``FeatureHasher(input_type="dict")`` on the frame's rows as dicts of those pairs (features
that collide in a row are summed in the same order). A pandas frame is hashed
:data:`_SLICE_ROWS` rows at a time; a dask frame one task per partition.

The settings travel as JSON (:meth:`FeatureHashing.to_attrs`), the group attribute
:data:`HASHING_ATTR` of a hashed dataset, so that new rows can be hashed the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np

from daskgd.data.csr import canonical_csr, csr_meta, make_csr
from daskgd.data.store import cluster_client, compute_on_cluster
from daskgd.errors import DataValidationError, InvalidSettingError

__all__ = ["HASHING_ATTR", "FeatureHashing", "frame_kind"]

#: The group attribute (and ``Dataset.attrs`` key) holding :meth:`FeatureHashing.to_attrs`.
HASHING_ATTR = "feature_hashing"
#: Version of that record's layout.
_VERSION = 1
#: Rows hashed at once: bounds the Python objects (one pair per value) held at a time.
_SLICE_ROWS = 65_536
_MAX_FEATURES = 2**31 - 1  # FeatureHasher's indices are int32


def frame_kind(frame: Any) -> str:
    """``"pandas"`` or ``"dask"`` for a DataFrame of that library; a TypeError otherwise."""
    import pandas as pd

    if isinstance(frame, pd.DataFrame):
        return "pandas"
    import dask.dataframe as dd

    if isinstance(frame, dd.DataFrame):
        return "dask"
    raise TypeError(
        f"expected a pandas or dask DataFrame, got {type(frame).__name__}; hashing turns named "
        "columns into features (a Series: series.to_frame())"
    )


def _default_role(name: str, dtype: Any) -> str:
    """A column's role by its dtype: categorical or numeric, else a DataValidationError."""
    import pandas as pd

    types = pd.api.types
    if isinstance(dtype, pd.CategoricalDtype) or types.is_bool_dtype(dtype):
        return "categorical"
    if types.is_object_dtype(dtype) or types.is_string_dtype(dtype):
        return "categorical"
    if getattr(dtype, "kind", "O") in "iuf":
        return "numeric"
    raise DataValidationError(
        f"column {name!r} has dtype {dtype}, which is neither categorical nor numeric: list it "
        f"in categorical= (each value v becomes the feature '{name}=v') or numeric= (values "
        "converted to floats), or drop it"
    )


def _names(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        hint = f"; for one column pass [{value!r}]" if isinstance(value, str) else ""
        raise InvalidSettingError(f"{what} must be a list of column names, got {value!r}{hint}")
    return list(value)


def _check_strings(names: Sequence[Any]) -> None:
    bad = [c for c in names if not isinstance(c, str)]
    if bad:
        raise DataValidationError(
            f"column names must be strings, found {bad[0]!r} ({type(bad[0]).__name__}): "
            "features are named after their columns; rename them, e.g. "
            "frame.columns = frame.columns.astype(str)"
        )


class FeatureHashing:
    """How the columns of a DataFrame are hashed into ``n_features`` sparse features.

    Parameters
    ----------
    columns : sequence of str
        The feature columns, in the order their features are hashed (and summed where they
        collide).
    categorical : collection of str
        Those of ``columns`` that are categorical; the others are numeric.
    n_features : int, default 2**20
        Columns of the hashed matrix, ``1 <= n_features < 2**31``.
    alternate_sign : bool, default True
        Sign each value by its feature's hash (``FeatureHasher``'s ``alternate_sign``).
    dtype : {"float32", "float64"}, default "float32"
    target, sample_weight : str, optional
        The label and weight columns of the training frame (recorded only).

    Examples
    --------
    >>> import pandas as pd
    >>> h = FeatureHashing(["city", "age"], ["city"], n_features=2**10)
    >>> X = h.transform(pd.DataFrame({"age": [30.0, 0.0], "city": ["Oslo", None]}))
    >>> X.shape, X.getnnz(axis=1).tolist()  # "city=Oslo" and "age"; then nothing
    ((2, 1024), [2, 0])
    """

    def __init__(
        self,
        columns: Sequence[str],
        categorical: Sequence[str] | set[str] | frozenset[str],
        *,
        n_features: int = 2**20,
        alternate_sign: bool = True,
        dtype: Any = "float32",
        target: str | None = None,
        sample_weight: str | None = None,
    ) -> None:
        if isinstance(n_features, bool) or not isinstance(n_features, int | np.integer):
            raise InvalidSettingError(f"n_features must be an integer, got {n_features!r}")
        if not 1 <= int(n_features) <= _MAX_FEATURES:
            raise InvalidSettingError(
                f"n_features must be in [1, 2**31 - 1], got {n_features}: the hashed matrix "
                "has this many columns (2**20, the default, suits most data)"
            )
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise InvalidSettingError(f"dtype must be float32 or float64, got {dtype!r}")
        self.columns = tuple(_names(columns, "columns"))
        cats = set(_names(categorical, "categorical"))
        _check_strings([*self.columns, *cats])
        if not self.columns:
            raise DataValidationError("no feature columns: the frame has only the target/weight")
        if len(set(self.columns)) != len(self.columns) or not cats <= set(self.columns):
            raise DataValidationError(
                f"the feature columns {list(self.columns)} must be distinct and hold the "
                f"categorical ones {sorted(cats)}"
            )
        self.categorical = tuple(c for c in self.columns if c in cats)
        self.numeric = tuple(c for c in self.columns if c not in cats)
        self.n_features = int(n_features)
        self.alternate_sign = bool(alternate_sign)
        self.target, self.sample_weight = target, sample_weight

    @classmethod
    def from_frame(
        cls,
        frame: Any,
        *,
        target: str | None = None,
        sample_weight: str | None = None,
        categorical: Sequence[str] | None = None,
        numeric: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> FeatureHashing:
        """The hashing of ``frame``'s columns but ``target`` and ``sample_weight``, in the
        frame's order, with roles by dtype unless listed (see :mod:`~daskgd.data.hashing`).

        Raises
        ------
        DataValidationError
            A missing target, weight or listed column, a non-string column name, a column
            of neither role, no feature column.
        InvalidSettingError
            A column in both lists, the target or weight in one, bad ``kwargs``.
        """
        frame_kind(frame)
        names = list(frame.columns)
        _check_strings(names)
        cats, nums = _names(categorical, "categorical"), _names(numeric, "numeric")
        both = sorted(set(cats) & set(nums))
        if both:
            raise InvalidSettingError(
                f"column(s) {both} are in both categorical= and numeric=: give each one role"
            )
        if target is not None and target == sample_weight:
            raise InvalidSettingError(f"target and sample_weight are the same column {target!r}")
        for what, col in (("target", target), ("sample_weight", sample_weight)):
            if col is not None and col not in names:
                raise DataValidationError(f"the {what} column {col!r} is not in the frame "
                                          f"(columns: {names})")  # fmt: skip
            if col is not None and col in {*cats, *nums}:
                raise InvalidSettingError(f"the {what} column {col!r} is listed as a feature")
        missing = [c for c in (*cats, *nums) if c not in names]
        if missing:
            raise DataValidationError(f"listed column(s) {missing} are not in the frame "
                                      f"(columns: {names})")  # fmt: skip
        columns = [c for c in names if c not in (target, sample_weight)]
        roles = {c: "categorical" for c in cats} | {c: "numeric" for c in nums}
        chosen = [c for c in columns if (roles.get(c) or _default_role(c, frame.dtypes[c]))
                  == "categorical"]  # fmt: skip
        return cls(columns, chosen, target=target, sample_weight=sample_weight, **kwargs)

    def to_attrs(self) -> dict[str, Any]:
        """The settings as JSON values: the ``feature_hashing`` attribute."""
        return {
            "version": _VERSION,
            "hasher": "sklearn.feature_extraction.FeatureHasher",
            "input_type": "pair",
            "n_features": self.n_features,
            "alternate_sign": self.alternate_sign,
            "dtype": self.dtype.name,
            "columns": list(self.columns),
            "categorical": list(self.categorical),
            "numeric": list(self.numeric),
            "target": self.target,
            "sample_weight": self.sample_weight,
            "missing": {"categorical": "no feature", "numeric": "refused"},
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> FeatureHashing:
        """The hashing recorded in a dataset's attributes (or their ``feature_hashing``).

        Raises
        ------
        DataValidationError
            No record (the data was not made by :func:`hash_features`), or one of another
            version.
        """
        rec = attrs.get(HASHING_ATTR, attrs)
        keys = ("version", "n_features", "alternate_sign", "dtype", "columns", "categorical")
        if not isinstance(rec, Mapping) or not all(k in rec for k in keys):
            raise DataValidationError(
                "no feature hashing is recorded here (attribute 'feature_hashing'): the "
                "dataset was not made by daskgd.hash_features"
            )
        if rec["version"] != _VERSION:
            raise DataValidationError(
                f"the feature hashing record has version {rec['version']!r}; this daskgd "
                f"reads version {_VERSION}: hash with the daskgd that wrote it"
            )
        return cls(rec["columns"], rec["categorical"], n_features=rec["n_features"],
                   alternate_sign=rec["alternate_sign"], dtype=rec["dtype"],
                   target=rec.get("target"), sample_weight=rec.get("sample_weight"))  # fmt: skip

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureHashing) and self.to_attrs() == other.to_attrs()

    __hash__ = None  # type: ignore[assignment]  # mutable attributes, compared by value

    def __dask_tokenize__(self) -> object:
        return tuple(sorted((k, str(v)) for k, v in self.to_attrs().items()))  # by value

    def __repr__(self) -> str:
        return (
            f"FeatureHashing(n_features={self.n_features}, categorical={list(self.categorical)}"
            f", numeric={list(self.numeric)}, alternate_sign={self.alternate_sign}, "
            f"dtype={self.dtype.name})"
        )

    def _pairs(self, part: Any, row0: int, partition: int | None) -> list[list[Any]]:
        """Per feature column, each row's ``(column, value)`` pair, or None for no feature."""
        out = []
        for c in self.columns:
            s = part[c]
            if c in self.categorical:
                missing = s.isna().to_numpy().tolist()
                vals = s.to_numpy(dtype=object).tolist()
                out.append([None if m else (c, v if v.__class__ is str else str(v))
                            for v, m in zip(vals, missing, strict=True)])  # fmt: skip
                continue
            try:
                x = s.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as exc:
                raise DataValidationError(f"numeric column {c!r} holds values that are not "
                                          f"numbers ({exc}): convert it (pandas.to_numeric), "
                                          "or list it in categorical=") from None  # fmt: skip
            bad = ~(np.abs(x) <= np.finfo(self.dtype).max)  # NaN, inf, beyond the dtype
            if bad.any():
                r = int(np.argmax(bad))
                of = "" if partition is None else f" of partition {partition}"
                at = f"row {row0 + r}{of} (index label {part.index[r]!r})"
                if np.isnan(x[r]):
                    what = f"has a missing value (NaN) at {at}"
                elif np.isinf(x[r]):
                    what = f"has an infinite value ({x[r]}) at {at}"
                else:
                    what = (f"has the value {x[r]} at {at}, beyond {self.dtype.name}'s range "
                            "(hash with dtype='float64', or scale the column)")  # fmt: skip
                raise DataValidationError(
                    f"numeric column {c!r} {what}. Numeric features must be finite: fill "
                    f"the missing ones (frame.fillna({{{c!r}: 0}})) or drop those rows, or "
                    f"list {c!r} in categorical= (where a missing value is no feature)"
                )
            out.append([(c, v) for v in x.tolist()])  # zeros: FeatureHasher drops them
        return out

    def _check_columns(self, frame: Any) -> None:
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise DataValidationError(f"the frame lacks the feature column(s) {missing} that "
                                      f"the data was hashed with")  # fmt: skip

    def transform(self, frame: Any, *, client: Any = None, partition: int | None = None) -> Any:
        """Hash the rows of ``frame`` (its feature columns, found by name; others ignored).

        Parameters
        ----------
        frame : pandas.DataFrame or dask.dataframe.DataFrame
        client : distributed.Client, optional
            Where a dask frame's partition sizes are counted (one pass over it).
        partition : int, optional
            The partition that a pandas ``frame`` is, named in the messages.

        Returns
        -------
        scipy.sparse.csr_matrix or dask.array.Array
            Canonical CSR ``(n_rows, n_features)``; for a dask frame, a lazy array of one
            such block per partition (empty ones kept: the blocks line up with them).

        Raises
        ------
        DataValidationError
            A feature column is missing; a numeric value is NaN, infinite or not a number.
        """
        self._check_columns(frame)
        if frame_kind(frame) == "dask":
            sizes = compute_on_cluster([frame.map_partitions(len)], cluster_client(client))[0]
            spec, hashed = dask.delayed(self, traverse=False), dask.delayed(_hash_block)
            meta = csr_meta(self.n_features, self.dtype)
            return da.concatenate(
                [da.from_delayed(hashed(p, spec, i), shape=(int(n), self.n_features),
                                 dtype=self.dtype, meta=meta)
                 for i, (p, n) in enumerate(zip(frame.to_delayed(), sizes, strict=True))]
            )  # fmt: skip
        from sklearn.feature_extraction import FeatureHasher

        hasher = FeatureHasher(self.n_features, input_type="pair", dtype=self.dtype,
                               alternate_sign=self.alternate_sign)  # fmt: skip
        data, indices, indptr = [], [], [np.zeros(1, np.int64)]
        for lo in range(0, len(frame), _SLICE_ROWS):
            cols = self._pairs(frame.iloc[lo : lo + _SLICE_ROWS], lo, partition)
            m = canonical_csr(hasher.transform(
                [p for p in row if p is not None] for row in zip(*cols, strict=True)))  # fmt: skip
            data.append(m.data)
            indices.append(m.indices)
            indptr.append(m.indptr[1:].astype(np.int64) + indptr[-1][-1])
        if not data:
            return csr_meta(self.n_features, self.dtype)
        ptr = np.concatenate(indptr)
        idx = np.dtype(np.int32 if ptr[-1] < 2**31 else np.int64)
        # each slice is canonical (sorted, distinct indices per row), so their stack is
        return make_csr(np.concatenate(data), np.concatenate(indices).astype(idx, copy=False),
                        ptr.astype(idx), self.n_features)  # fmt: skip


def _hash_block(part: Any, spec: FeatureHashing, i: int) -> Any:
    return spec.transform(part, partition=i)
