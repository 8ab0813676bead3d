"""Synthetic sparse problems like click logs, generated chunk by chunk on the workers, stored
as CSR (:mod:`~daskgd.data.sparse_store`).

**Rows.** Every row has exactly ``nnz_per_row`` non-zeros. Their columns follow a power law
of popularity, as hashed click-log features do (a few columns in most rows, most columns
rare): a row draws ``nnz_per_row`` popularity ranks from a Zipf-like law, ``P(rank r)``
about proportional to ``r ** -popularity_exponent`` (a continuous power law on ``[1, d + 1)``,
floored), and a rank drawn twice in a row moves to the next free rank (so the row's columns
are distinct and the count exact). Ranks become columns through a random permutation of
the ``d`` columns, keyed by the seed: a Feistel network on the bits of the column number
(with cycle walking), so no table of ``d`` entries is ever built. Values are 1.0
(``values="binary"``, one-hot-like features) or standard normal (``values="normal"``).

**Labels.** The true coefficient of column ``j`` is non-zero with probability
``coef_density``, normal then, drawn from a hash of ``(seed, j)``: each task computes only
the coefficients of the columns it touches. Regression: ``y = X @ coef + bias + noise *
N(0, 1)`` (standard normal coefficients, as the dense
:func:`~daskgd.data.synthetic.make_regression`).
Classification (binary): ``P(y = 1 | x) = sigmoid(x @ coef + intercept)`` with coefficients
of standard deviation ``3 * class_sep / sqrt(nnz_per_row * coef_density)`` (margins of
standard deviation about ``3 * class_sep``); ``weights`` sets the intercept so that the first
rows (up to 16,384) have that share of positives in expectation.

**Reproducible.** Rows are drawn in blocks of :data:`BLOCK_ROWS` rows, block ``b`` from the
stream ``SeedSequence(random_state, spawn_key=(1, b))``: the data depend on ``random_state``
only, neither on ``chunk_rows`` nor on the workers that write it. The true coefficients are
stored in the attribute ``coef`` when ``n_features <= 4096``, else in the float64 array
``coef`` of the group (attribute ``coef_array`` names it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import dask
import numpy as np

from daskgd.data.checks import block_stats
from daskgd.data.chunkfiles import chunk_digest
from daskgd.data.csr import csr_block_stats, make_csr
from daskgd.data.dataset import Dataset
from daskgd.data.opening import open_zarr
from daskgd.data.sparse_store import CSRLayout, auto_csr_chunk_rows, csr_targets, write_csr_chunk
from daskgd.data.staging import DEFAULT_COMPRESSOR, DatasetWrite
from daskgd.data.store import (
    cluster_client,
    compute_on_cluster,
    open_group,
    store_path,
    writable_array,
)
from daskgd.data.synthetic import seed_entropy, seeded_rng

__all__ = ["BLOCK_ROWS", "make_sparse_classification", "make_sparse_regression"]

#: Rows drawn from one random stream: the unit of reproducibility.
BLOCK_ROWS = 4096
#: Up to this many features the true coefficients are stored in the attributes.
COEF_ATTR_MAX = 4096
_PILOT_ROWS = 4 * BLOCK_ROWS

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a well-mixed 64-bit hash of each uint64 (wrapping products)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _unit(h: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) from the top 53 bits of hashes."""
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _permute(x: np.ndarray, d: int, keys: np.ndarray) -> np.ndarray:
    """The seeded permutation of ``[0, d)`` at ``x``: a 4-round Feistel network on an even
    number of bits, applied again to values that land at ``d`` or beyond (cycle walking: the
    network permutes ``[0, 2**bits)``, so each walk returns into ``[0, d)``, in under 4 steps
    on average as ``2**bits < 4 d``)."""
    bits = max(2, int(d - 1).bit_length())
    bits += bits % 2
    half, mask = np.uint64(bits // 2), np.uint64((1 << (bits // 2)) - 1)

    def rounds(v: np.ndarray) -> np.ndarray:
        left, right = v >> half, v & mask
        for k in keys:
            left, right = right, left ^ (_mix(right ^ k) & mask)
        return (left << half) | right

    out = rounds(x.astype(np.uint64))
    todo = np.flatnonzero(out >= np.uint64(d))
    while todo.size:
        flat = out.reshape(-1)
        flat[todo] = rounds(flat[todo])
        todo = todo[flat[todo] >= np.uint64(d)]
    return out.astype(np.int64)


def _ranks(u: np.ndarray, d: int, s: float) -> np.ndarray:
    """Popularity ranks in ``[0, d)`` from uniforms: density ``x ** -s`` on ``[1, d + 1)``."""
    if s == 0:
        x = 1.0 + u * d
    elif s == 1:
        x = np.exp(u * np.log1p(d))
    else:
        a = 1.0 - s
        x = (1.0 + u * np.expm1(a * np.log1p(d))) ** (1.0 / a)
    return np.minimum(np.floor(x).astype(np.int64) - 1, d - 1)


def _coef_at(cols: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """The true coefficients of columns ``cols``: a hash of (seed, column) decides each."""
    h = _mix(cols.astype(np.uint64) ^ p["keys"][4])
    informative = _unit(h) < p["coef_density"]
    u1 = 1.0 - _unit(_mix(h ^ p["keys"][5]))  # in (0, 1]: its log is finite
    u2 = _unit(_mix(h ^ p["keys"][6]))
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)  # Box-Muller
    return np.where(informative, p["scale"] * z, 0.0)


def _block(p: dict[str, Any], b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of block ``b``: sorted columns ``(rows, k)``, values, margins without the
    intercept, and the stream (positioned for the labels' draws)."""
    rng = seeded_rng(p["entropy"], 1, b)
    rows = min(BLOCK_ROWS, p["n_samples"] - b * BLOCK_ROWS)
    d, k = p["n_features"], p["nnz_per_row"]
    ranks = np.sort(_ranks(rng.random((rows, k)), d, p["exponent"]), axis=1)
    j = np.arange(k)
    # a repeated rank moves to the next free one: strictly increasing, and within [0, d)
    ranks = np.minimum(np.maximum.accumulate(ranks - j, axis=1) + j, d - k + j)
    cols = np.sort(_permute(ranks, d, p["keys"][:4]), axis=1)
    if p["values"] == "binary":
        vals = np.ones((rows, k))
    else:
        vals = rng.standard_normal((rows, k))
    margin = np.einsum("ij,ij->i", _coef_at(cols, p), vals)
    return cols, vals, margin, rng  # type: ignore[return-value]


def _labels(p: dict[str, Any], margin: np.ndarray, rng: Any) -> np.ndarray:
    from scipy.special import expit

    margin = margin + p["intercept"]
    if p["task"] == "regression":
        return margin + p["noise"] * rng.standard_normal(len(margin))
    return (rng.random(len(margin)) < expit(margin)).astype(np.int32)


def _write_chunk(
    path: str, storage_options: dict[str, Any] | None, i: int, p: dict[str, Any], layout: CSRLayout
) -> tuple[dict[str, int], bool]:
    """Generate row-chunk ``i`` from its blocks and write it (runs on a worker).

    Returns the chunk's digests (the CSR parts and ``y``) and whether its values are finite.
    """
    lo = i * layout.chunk_rows
    hi = lo + layout.rows(i)
    cols, vals, ys = [], [], []
    for b in range(lo // BLOCK_ROWS, (hi - 1) // BLOCK_ROWS + 1):
        c, v, margin, rng = _block(p, b)
        y = _labels(p, margin, rng)
        a, z = (
            max(lo, b * BLOCK_ROWS) - b * BLOCK_ROWS,
            min(hi, (b + 1) * BLOCK_ROWS) - b * BLOCK_ROWS,
        )
        cols.append(c[a:z])
        vals.append(v[a:z])
        ys.append(y[a:z])
    k, rows = p["nnz_per_row"], hi - lo
    indices = np.concatenate(cols).reshape(-1).astype(layout.index_dtype)
    data = np.concatenate(vals).reshape(-1).astype(layout.dtype)
    X = make_csr(data, indices, np.arange(rows + 1, dtype=np.int64) * k, layout.n_cols)
    g = open_group(path, "r+", storage_options)
    digests = write_csr_chunk(csr_targets(g), layout, i, X)
    zy = writable_array(g, "y")
    y = np.ascontiguousarray(np.concatenate(ys), dtype=zy.dtype)
    zy[lo:hi] = y
    digests["y"] = chunk_digest(y)
    finite = csr_block_stats(X)[0] == 0 and block_stats(y, "value")[0] == 0
    return digests, finite


def _intercept(p: dict[str, Any], positive: float) -> float:
    """The intercept at which the first rows' mean probability of class 1 is ``positive``."""
    from scipy.special import expit

    blocks = range(-(-min(p["n_samples"], _PILOT_ROWS) // BLOCK_ROWS))
    margin = np.concatenate([_block(p, b)[2] for b in blocks])
    lo, hi = -50.0, 50.0
    for _ in range(100):  # bisection: the mean is increasing in the intercept
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if expit(margin + mid).mean() < positive else (lo, mid)
    return 0.5 * (lo + hi)


def _check(
    n_samples: Any, n_features: Any, nnz_per_row: Any, chunk_rows: Any, dtype: Any,
    exponent: Any, coef_density: Any, values: Any,
) -> None:  # fmt: skip
    for name, v in (("n_samples", n_samples), ("n_features", n_features),
                    ("nnz_per_row", nnz_per_row)):  # fmt: skip
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if nnz_per_row > n_features:
        raise ValueError(
            f"nnz_per_row ({nnz_per_row}) must not exceed n_features ({n_features}): each "
            "row's non-zeros are in distinct columns"
        )
    if chunk_rows is not None and (not isinstance(chunk_rows, int | np.integer) or chunk_rows < 1):
        raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    if not (isinstance(exponent, int | float) and np.isfinite(exponent) and exponent >= 0):
        raise ValueError(f"popularity_exponent must be a finite number >= 0, got {exponent!r}")
    if not (isinstance(coef_density, int | float) and 0 < coef_density <= 1):
        raise ValueError(f"coef_density must be in (0, 1], got {coef_density!r}")
    if values not in ("binary", "normal"):
        raise ValueError(f"values must be 'binary' or 'normal', got {values!r}")


def _generate(
    path: str | os.PathLike[str], p: dict[str, Any], *, chunk_rows: int | None, dtype: Any,
    client: Any, compressor: Any, overwrite: bool, storage_options: dict[str, Any] | None,
    attrs: dict[str, Any],
) -> Dataset:  # fmt: skip
    target = store_path(path)
    n, d, k = p["n_samples"], p["n_features"], p["nnz_per_row"]
    rows = min(int(chunk_rows or auto_csr_chunk_rows(n, n * k, dtype, d)), n)
    layout = CSRLayout.plan(n, d, rows, [min(rows, n - lo) * k for lo in range(0, n, rows)], dtype)
    client = cluster_client(client)  # checked before anything is removed or written
    small = d <= COEF_ATTR_MAX
    writer = DatasetWrite(
        target, n_samples=n, n_features=d, dtype=dtype,
        y_dtype=np.int32 if p["task"] == "classification" else dtype, weighted=False,
        chunk_rows=rows, inner_chunk_rows=None, compressor=compressor, overwrite=overwrite,
        storage_options=storage_options, csr=layout,
        attrs={
            "task": p["task"], "feature_names": None, "random_state": p["entropy"],
            "synthetic": True, "intercept": p["intercept"], "nnz_per_row": k,
            "popularity_exponent": p["exponent"], "coef_density": p["coef_density"],
            "values": p["values"], "coef": _coef_at(np.arange(d), p).tolist() if small else None,
            "coef_array": None if small else "coef", **attrs,
        },
    )  # fmt: skip
    p_d = dask.delayed(p, traverse=False)  # one copy in the graph, not one per task
    layout_d = dask.delayed(layout, traverse=False)
    write = dask.delayed(_write_chunk, pure=True)
    token = dask.base.tokenize(writer.path, p["entropy"])
    tasks = [write(writer.path, storage_options, i, p_d, layout_d,
                   dask_key_name=f"daskgd-make-sparse-{p['task']}-{token}-{i}")
             for i in range(len(layout.nnz))]  # fmt: skip
    try:
        if not small:
            step = 2**18
            z = writer.group.create_array("coef", shape=(d,), dtype=np.float64, chunks=(step,),
                                          fill_value=0)  # fmt: skip
            for lo in range(0, d, step):
                z[lo : lo + step] = _coef_at(np.arange(lo, min(d, lo + step)), p)
        written = compute_on_cluster(tasks, client)
        finite = all(ok for _, ok in written)
        digests = {name: [w[name] for w, _ in written] for name in written[0][0]}
        writer.finish(digests, checked=finite)
    except BaseException:
        writer.abort()
        raise
    ds = open_zarr(target, storage_options=storage_options, validate=False, client=client)
    ds.values_checked = finite
    return ds


def _params(
    task: str, n_samples: int, n_features: int, nnz_per_row: int, random_state: int | None,
    popularity_exponent: float, coef_density: float, values: str, scale: float,
) -> dict[str, Any]:  # fmt: skip
    entropy = seed_entropy(random_state)
    keys = seeded_rng(entropy, 0).integers(0, 2**63, size=7, dtype=np.uint64)
    return {
        "task": task, "entropy": entropy, "keys": keys, "n_samples": int(n_samples),
        "n_features": int(n_features), "nnz_per_row": int(nnz_per_row),
        "exponent": float(popularity_exponent), "coef_density": float(coef_density),
        "values": values, "scale": float(scale), "intercept": 0.0, "noise": 0.0,
    }  # fmt: skip


def make_sparse_regression(
    path: str | os.PathLike[str],
    n_samples: int,
    n_features: int = 2**20,
    nnz_per_row: int = 40,
    *,
    chunk_rows: int | None = None,
    dtype: Any = "float32",
    noise: float = 0.0,
    bias: float = 0.0,
    coef_density: float = 0.1,
    popularity_exponent: float = 1.0,
    values: Literal["binary", "normal"] = "binary",
    random_state: int | None = None,
    client: Any = None,
    compressor: Any = DEFAULT_COMPRESSOR,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> Dataset:
    """Write a sparse linear regression problem ``y = X @ coef + bias + noise * N(0, 1)``.

    Rows, columns, values and coefficients as the module's text says: exactly
    ``nnz_per_row`` non-zeros a row, in columns of power-law popularity.

    Parameters
    ----------
    path : str or os.PathLike
        Local path or fsspec URL of the new group.
    n_samples, n_features : int
        Shape of ``X``.
    nnz_per_row : int, default 40
        Non-zeros in each row (at most ``n_features``).
    chunk_rows : int, optional
        Rows per row-chunk (one task each); default about 64 MiB of values and indices.
    dtype : {"float32", "float64"}
        Dtype of ``X``'s values and of ``y``.
    noise : float, default 0.0
        Standard deviation of the Gaussian noise added to ``y``.
    bias : float, default 0.0
        The true intercept.
    coef_density : float, default 0.1
        The share of columns with a non-zero true coefficient (standard normal).
    popularity_exponent : float, default 1.0
        The power law's exponent: 0 draws columns uniformly, larger concentrates the
        non-zeros on fewer columns.
    values : {"binary", "normal"}, default "binary"
        1.0 for every non-zero (one-hot-like features), or standard normal values.
    random_state : int, optional
        Seed; the data depend on it only. None draws one (stored).
    client : distributed.Client, optional
        Runs the chunk tasks; default: dask's current scheduler.
    compressor, overwrite, storage_options
        As for :func:`daskgd.write_zarr`.

    Returns
    -------
    Dataset
        The sparse dataset, opened without a scan (the generator checks its values).

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> ds = make_sparse_regression(os.path.join(d, "r.zarr"), 1000, 2**16, 10,
    ...                             chunk_rows=400, random_state=0, client=None)
    >>> ds.is_sparse, ds.nnz, ds.chunks
    (True, 10000, (400, 400, 200))
    """
    _check(n_samples, n_features, nnz_per_row, chunk_rows, dtype, popularity_exponent,
           coef_density, values)  # fmt: skip
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    p = _params("regression", n_samples, n_features, nnz_per_row, random_state,
                popularity_exponent, coef_density, values, 1.0)  # fmt: skip
    p.update(intercept=float(bias), noise=float(noise))
    return _generate(path, p, chunk_rows=chunk_rows, dtype=dtype, client=client,
                     compressor=compressor, overwrite=overwrite, storage_options=storage_options,
                     attrs={"noise": float(noise), "classes": None})  # fmt: skip


def make_sparse_classification(
    path: str | os.PathLike[str],
    n_samples: int,
    n_features: int = 2**20,
    nnz_per_row: int = 40,
    *,
    chunk_rows: int | None = None,
    dtype: Any = "float32",
    class_sep: float = 1.0,
    weights: Sequence[float] | None = None,
    coef_density: float = 0.1,
    popularity_exponent: float = 1.0,
    values: Literal["binary", "normal"] = "binary",
    random_state: int | None = None,
    client: Any = None,
    compressor: Any = DEFAULT_COMPRESSOR,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> Dataset:
    """Write a sparse binary classification problem drawn from a logistic model.

    ``P(y = 1 | x) = sigmoid(x @ coef + intercept)``; rows, columns, values and
    coefficients as the module's text says. Labels are int32 0 and 1 (``classes`` [0, 1]).

    Parameters
    ----------
    path, n_samples, n_features, nnz_per_row, chunk_rows, dtype
        As for :func:`make_sparse_regression` (``dtype`` is that of ``X``).
    class_sep : float, default 1.0
        Scales the coefficients: margins have a standard deviation of about
        ``3 * class_sep``.
    weights : sequence of float, optional
        The shares of classes 0 and 1 (as scikit-learn's ``make_classification``; one
        value: class 0's, class 1 taking the rest). The intercept is set so that the first
        rows (up to 16,384) have this share of positives in expectation; default:
        intercept 0.
    coef_density, popularity_exponent, values, random_state, client, compressor, overwrite,
    storage_options
        As for :func:`make_sparse_regression`.

    Returns
    -------
    Dataset
        The sparse dataset; ``attrs`` hold ``classes``, ``intercept`` and the true
        coefficients (``coef``, or the array named by ``coef_array``).
    """
    _check(n_samples, n_features, nnz_per_row, chunk_rows, dtype, popularity_exponent,
           coef_density, values)  # fmt: skip
    if not np.isfinite(class_sep) or class_sep <= 0:
        raise ValueError(f"class_sep must be a finite number > 0, got {class_sep!r}")
    positive = None
    if weights is not None:
        w = [float(v) for v in weights]
        if len(w) not in (1, 2) or not all(0 < v < 1 for v in w) or sum(w) > 1 + 1e-9:
            raise ValueError(
                f"weights must be one or two class shares in (0, 1) summing to at most 1, "
                f"got {weights!r}"
            )
        positive = w[1] / sum(w) if len(w) == 2 else 1.0 - w[0]
    scale = 3.0 * class_sep / np.sqrt(nnz_per_row * coef_density)
    p = _params("classification", n_samples, n_features, nnz_per_row, random_state,
                popularity_exponent, coef_density, values, scale)  # fmt: skip
    if positive is not None:
        p["intercept"] = _intercept(p, positive)
    attrs = {
        "classes": [0, 1],
        "class_sep": float(class_sep),
        "weights": None if weights is None else [float(v) for v in weights],
    }
    return _generate(path, p, chunk_rows=chunk_rows, dtype=dtype, client=client,
                     compressor=compressor, overwrite=overwrite, storage_options=storage_options,
                     attrs=attrs)  # fmt: skip
