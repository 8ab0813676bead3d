"""Synthetic regression and classification problems, generated chunk by chunk on the workers.

Every row-chunk is drawn from its own random stream, ``SeedSequence(random_state,
spawn_key=(1, i))`` for chunk ``i``, and the true coefficients from
``SeedSequence(random_state, spawn_key=(0,))``: the data depend on ``random_state`` and
``chunk_rows`` only, never on how many workers write it or in which order, nor on
``chunk_cols`` (how ``X``'s columns are cut into chunks on disk: a chunk's rows are drawn
whole, then stored block by block). Each task
generates one chunk and writes it to its own region of the pre-created Zarr arrays, so no
process ever holds more than a chunk (10 million x 100 float64 is 8 GB on disk and a few
chunks in memory).
"""

from __future__ import annotations

import os
from typing import Any

import dask
import numpy as np

from daskgd.data.checks import block_stats
from daskgd.data.chunkfiles import block_digests, chunk_digest
from daskgd.data.dataset import Dataset
from daskgd.data.opening import open_zarr
from daskgd.data.staging import DEFAULT_COMPRESSOR, DatasetWrite, check_chunk_cols
from daskgd.data.store import (
    auto_chunk_rows,
    cluster_client,
    compute_on_cluster,
    open_group,
    store_path,
    writable_array,
)

__all__ = ["make_classification", "make_regression", "seed_entropy", "seeded_rng"]


def seed_entropy(random_state: int | None) -> int:
    """The seed a generator's streams derive from: ``random_state``, checked, or one drawn
    (and stored in the dataset's attributes) when None."""
    if random_state is None:
        # Draw one and store it in the attributes, so the data can be made again.
        return int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
    if not isinstance(random_state, int | np.integer) or random_state < 0:
        raise ValueError(f"random_state must be a non-negative int or None, got {random_state!r}")
    return int(random_state)


def seeded_rng(entropy: int, *key: int) -> np.random.Generator:
    """The random stream ``key`` of the seed ``entropy``: ``SeedSequence(entropy,
    spawn_key=key)``, independent of every other key's."""
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))


def _check_sizes(n_samples: int, n_features: int, chunk_rows: int | None, dtype: Any) -> int:
    for name, v in (("n_samples", n_samples), ("n_features", n_features)):
        if not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    if chunk_rows is None:
        return auto_chunk_rows(n_samples, n_features, np.dtype(dtype).itemsize)
    if not isinstance(chunk_rows, int | np.integer) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    return min(int(chunk_rows), n_samples)


def _write_chunk(
    path: str,
    storage_options: dict[str, Any] | None,
    i: int,
    rows: int,
    start: int,
    params: dict[str, Any],
) -> tuple[int, dict[str, int], bool, list[int] | None]:
    """Generate row-chunk ``i`` and write it into the pre-created arrays (runs on a worker).

    Returns the rows written, the chunk's digest in each array, whether its values are all
    finite (checked here, in memory, for the record of the check) and, when ``X``'s columns
    are cut into chunks, the digest of each of its blocks.
    """
    rng = seeded_rng(params["entropy"], 1, i)
    d = params["n_features"]
    dtype = np.dtype(params["dtype"])
    X = rng.standard_normal((rows, d), dtype=np.float64)
    coef = np.asarray(params["coef"])
    margin = X @ coef + np.asarray(params["intercept"])
    if params["task"] == "regression":
        y = margin + params["noise"] * rng.standard_normal(rows)
        y = y.astype(dtype)
    elif coef.ndim == 1:  # binary: labels drawn from the logistic model
        p = 1.0 / (1.0 + np.exp(-margin))
        y = (rng.random(rows) < p).astype(np.int32)
    else:  # multinomial: labels drawn from the softmax model (Gumbel-max trick)
        y = np.argmax(margin + rng.gumbel(size=margin.shape), axis=1).astype(np.int32)
    g = open_group(path, "r+", storage_options)
    digests = {}
    blocks = None
    finite = True
    for name, values in (("X", X), ("y", y)):
        z = writable_array(g, name)
        values = np.ascontiguousarray(values, dtype=z.dtype)
        finite = finite and block_stats(values, "value")[0] == 0
        z[start : start + rows] = values
        digests[name] = chunk_digest(values)
        if name == "X" and params["chunk_cols"] is not None:
            blocks = block_digests(values, params["chunk_cols"])
    return rows, digests, finite, blocks


def _generate(
    path: str | os.PathLike[str],
    task: str,
    n_samples: int,
    n_features: int,
    *,
    chunk_rows: int | None,
    chunk_cols: int | None,
    random_state: int | None,
    dtype: Any,
    client: Any,
    compressor: Any,
    inner_chunk_rows: int | None,
    overwrite: bool,
    storage_options: dict[str, Any] | None,
    coef: np.ndarray,
    intercept: Any,
    entropy: int,
    extra_attrs: dict[str, Any],
) -> Dataset:
    p = store_path(path)
    rows = _check_sizes(n_samples, n_features, chunk_rows, dtype)
    cols = check_chunk_cols(chunk_cols, n_features)
    client = cluster_client(client)  # checked before anything is removed or written
    classes = extra_attrs.get("classes")
    writer = DatasetWrite(
        p,
        n_samples=n_samples,
        n_features=n_features,
        dtype=dtype,
        y_dtype=np.int32 if classes is not None else dtype,
        weighted=False,
        chunk_rows=rows,
        inner_chunk_rows=inner_chunk_rows,
        compressor=compressor,
        overwrite=overwrite,
        storage_options=storage_options,
        chunk_cols=cols,
        attrs={
            "task": task,
            "feature_names": None,
            "random_state": entropy,
            "coef": coef.tolist(),
            "intercept": np.asarray(intercept).tolist(),
            "synthetic": True,
            **extra_attrs,
        },
    )
    params = {
        "entropy": entropy,
        "n_features": n_features,
        "dtype": np.dtype(dtype).name,
        "coef": coef,
        "intercept": intercept,
        "task": task,
        "noise": float(extra_attrs.get("noise", 0.0)),
        "chunk_cols": cols,
    }
    params_d = dask.delayed(params, traverse=False)  # one copy in the graph, not one per task
    write = dask.delayed(_write_chunk, pure=True)
    tasks = [
        write(
            writer.path,
            storage_options,
            i,
            min(rows, n_samples - start),
            start,
            params_d,
            dask_key_name=f"daskgd-make-{task}-{dask.base.tokenize(writer.path, entropy)}-{i}",
        )
        for i, start in enumerate(range(0, n_samples, rows))
    ]
    try:
        written = compute_on_cluster(tasks, client)
        total = sum(w[0] for w in written)
        if total != n_samples:  # pragma: no cover - a broken store
            raise RuntimeError(f"wrote {total} rows, expected {n_samples}")
        finite = all(w[2] for w in written)
        blocks = None if cols is None else [w[3] for w in written]
        writer.finish({name: [w[1][name] for w in written] for name in ("X", "y")},
                      checked=finite, blocks=blocks)  # fmt: skip
    except BaseException:
        writer.abort()
        raise
    ds = open_zarr(p, storage_options=storage_options, validate=False, client=client)
    ds.values_checked = finite
    return ds


def make_regression(
    path: str | os.PathLike[str],
    n_samples: int,
    n_features: int,
    *,
    chunk_rows: int | None = None,
    chunk_cols: int | None = None,
    noise: float = 0.0,
    bias: float = 0.0,
    random_state: int | None = None,
    dtype: Any = np.float64,
    client: Any = None,
    compressor: Any = DEFAULT_COMPRESSOR,
    inner_chunk_rows: int | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> Dataset:
    """Write a linear regression problem ``y = X @ coef + bias + noise * N(0, 1)``.

    ``X`` is standard normal; ``coef`` is standard normal and stored in the group
    attributes (``coef``, ``intercept``, ``noise``, ``random_state``).

    Parameters
    ----------
    path : str or os.PathLike
        Local path or fsspec URL of the new group.
    n_samples, n_features : int
        Shape of ``X``.
    chunk_rows : int, optional
        Rows per chunk (one task each); default about 64 MiB of ``X``.
    chunk_cols : int, optional
        Also cut ``X``'s columns into chunks of this many on disk, for feature
        partitioning (as for :func:`daskgd.write_zarr`). The values do not depend on it.
    noise : float, default 0.0
        Standard deviation of the Gaussian noise added to ``y``.
    bias : float, default 0.0
        The true intercept.
    random_state : int, optional
        Seed; the data depend on it and ``chunk_rows`` only. None draws one (stored).
    dtype : {float64, float32}
        Dtype of ``X`` and ``y``.
    client : distributed.Client, optional
        Runs the chunk tasks; default: dask's current scheduler.
    compressor, inner_chunk_rows, overwrite, storage_options
        As for :func:`daskgd.write_zarr`.

    Returns
    -------
    Dataset
        The dataset, opened without a scan (the generator makes finite values).

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> ds = make_regression(os.path.join(d, "r.zarr"), 100, 3, chunk_rows=40,
    ...                      random_state=0, client=None)
    >>> ds.chunks, len(ds.attrs["coef"])
    ((40, 40, 20), 3)
    """
    _check_sizes(n_samples, n_features, chunk_rows, dtype)
    check_chunk_cols(chunk_cols, n_features)
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    entropy = seed_entropy(random_state)
    coef = seeded_rng(entropy, 0).standard_normal(n_features)
    return _generate(
        path,
        "regression",
        n_samples,
        n_features,
        chunk_rows=chunk_rows,
        chunk_cols=chunk_cols,
        random_state=random_state,
        dtype=dtype,
        client=client,
        compressor=compressor,
        inner_chunk_rows=inner_chunk_rows,
        overwrite=overwrite,
        storage_options=storage_options,
        coef=coef,
        intercept=float(bias),
        entropy=entropy,
        extra_attrs={"noise": float(noise), "classes": None},
    )


def make_classification(
    path: str | os.PathLike[str],
    n_samples: int,
    n_features: int,
    *,
    n_classes: int = 2,
    chunk_rows: int | None = None,
    chunk_cols: int | None = None,
    class_sep: float = 1.0,
    random_state: int | None = None,
    dtype: Any = np.float64,
    client: Any = None,
    compressor: Any = DEFAULT_COMPRESSOR,
    inner_chunk_rows: int | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> Dataset:
    """Write a classification problem drawn from a logistic (or softmax) model.

    ``X`` is standard normal. With two classes, ``P(y = 1 | x) = sigmoid(x @ coef +
    intercept)`` and ``coef`` has shape ``(n_features,)``; with more, ``y`` is drawn from
    ``softmax(x @ coef + intercept)`` and ``coef`` has shape ``(n_features, n_classes)``.
    Coefficients are normal with standard deviation ``3 * class_sep / sqrt(n_features)``
    (margins of standard deviation about ``3 * class_sep``). Labels are stored as int32
    ``0 .. n_classes - 1``; ``classes``, ``coef`` and ``intercept`` are in the attributes.

    Parameters
    ----------
    path : str or os.PathLike
        Local path or fsspec URL of the new group.
    n_samples, n_features : int
        Shape of ``X``.
    n_classes : int, default 2
        Number of classes (>= 2).
    chunk_rows : int, optional
        Rows per chunk (one task each); default about 64 MiB of ``X``.
    chunk_cols : int, optional
        Also cut ``X``'s columns into chunks of this many on disk, for feature
        partitioning (as for :func:`daskgd.write_zarr`). The values do not depend on it.
    class_sep : float, default 1.0
        Scales the coefficients: larger separates the classes more.
    random_state : int, optional
        Seed; the data depend on it and ``chunk_rows`` only. None draws one (stored).
    dtype : {float64, float32}
        Dtype of ``X``.
    client : distributed.Client, optional
        Runs the chunk tasks; default: dask's current scheduler.
    compressor, inner_chunk_rows, overwrite, storage_options
        As for :func:`daskgd.write_zarr`.

    Returns
    -------
    Dataset
    """
    _check_sizes(n_samples, n_features, chunk_rows, dtype)
    check_chunk_cols(chunk_cols, n_features)
    if not isinstance(n_classes, int | np.integer) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
    if not np.isfinite(class_sep) or class_sep <= 0:
        raise ValueError(f"class_sep must be a finite number > 0, got {class_sep!r}")
    entropy = seed_entropy(random_state)
    rng = seeded_rng(entropy, 0)
    scale = 3.0 * class_sep / np.sqrt(n_features)
    if n_classes == 2:
        coef = scale * rng.standard_normal(n_features)
        intercept: Any = 0.0
    else:
        coef = scale * rng.standard_normal((n_features, n_classes))
        intercept = np.zeros(n_classes)
    return _generate(
        path,
        "classification",
        n_samples,
        n_features,
        chunk_rows=chunk_rows,
        chunk_cols=chunk_cols,
        random_state=random_state,
        dtype=dtype,
        client=client,
        compressor=compressor,
        inner_chunk_rows=inner_chunk_rows,
        overwrite=overwrite,
        storage_options=storage_options,
        coef=coef,
        intercept=intercept,
        entropy=entropy,
        extra_attrs={"classes": list(range(n_classes)), "class_sep": float(class_sep)},
    )
