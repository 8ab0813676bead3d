"""The ``daskgd make-data`` and ``info`` verbs: write a synthetic dataset, describe one."""

from __future__ import annotations

import argparse
import json
from typing import Any

from daskgd.cli.common import (
    UsageError,
    add_cluster_options,
    check_exists,
    client_for,
    non_negative_float,
    non_negative_int,
    positive_int,
    storage_option,
)

__all__ = ["add_verbs", "check_make_data", "cmd_info", "cmd_make_data", "dataset_info"]


def _compressor(name: str) -> Any:
    from zarr.codecs import BloscCodec

    from daskgd.data import DEFAULT_COMPRESSOR

    if name == "zstd":
        return DEFAULT_COMPRESSOR
    if name == "blosc-lz4":
        return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    return None


def check_make_data(args: argparse.Namespace) -> None:
    """Argument errors of ``daskgd make-data`` (exit code 2)."""
    if args.task == "classification" and args.n_classes < 2:
        raise UsageError(f"argument --n-classes: expected an integer >= 2, got {args.n_classes}")
    if not args.sparse:
        if args.nnz_per_row is not None:
            raise UsageError("argument --nnz-per-row: only with --sparse")
        return
    if args.task == "classification" and args.n_classes != 2:
        raise UsageError("argument --n-classes: sparse classification data has 2 classes")
    if args.inner_chunk_rows is not None:
        raise UsageError("argument --inner-chunk-rows: not offered with --sparse")
    if args.chunk_cols is not None:
        raise UsageError(
            "argument --chunk-cols: not offered with --sparse (feature partitioning needs dense X)"
        )
    if (args.nnz_per_row or 40) > args.n_features:
        raise UsageError(
            f"argument --nnz-per-row: at most --n-features ({args.n_features}), got "
            f"{args.nnz_per_row or 40}"
        )


def cmd_make_data(args: argparse.Namespace) -> int:
    """``daskgd make-data PATH``: write a synthetic regression or classification dataset
    (``--sparse``: CSR, click-log-like, :mod:`daskgd.data.sparse_synthetic`)."""
    from daskgd.data.sparse_synthetic import make_sparse_classification, make_sparse_regression
    from daskgd.data.synthetic import make_classification, make_regression

    common = {
        "chunk_rows": args.chunk_rows,
        "random_state": args.random_state,
        "dtype": args.dtype,
        "compressor": _compressor(args.compressor),
        "overwrite": args.overwrite,
        "storage_options": dict(args.storage_option) or None,
    }
    with client_for(args) as client:
        if args.sparse:
            sparse = {"nnz_per_row": args.nnz_per_row or 40, "client": client, **common}
            if args.task == "regression":
                ds = make_sparse_regression(args.path, args.n_samples, args.n_features,
                                            noise=args.noise, **sparse)  # fmt: skip
            else:
                ds = make_sparse_classification(args.path, args.n_samples, args.n_features,
                                                **sparse)  # fmt: skip
        elif args.task == "regression":
            ds = make_regression(
                args.path, args.n_samples, args.n_features, noise=args.noise,
                client=client, inner_chunk_rows=args.inner_chunk_rows,
                chunk_cols=args.chunk_cols, **common,
            )  # fmt: skip
        else:
            ds = make_classification(
                args.path, args.n_samples, args.n_features, n_classes=args.n_classes,
                client=client, inner_chunk_rows=args.inner_chunk_rows,
                chunk_cols=args.chunk_cols, **common,
            )  # fmt: skip
    print(f"wrote {ds!r}")
    return 0


def dataset_info(path: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """What ``daskgd info`` prints: the dataset's shape, arrays, codecs, sizes, attributes;
    for sparse data its non-zeros, density and index dtype too."""
    from daskgd.data import group_arrays, open_group, open_zarr, rows_per_chunk
    from daskgd.data.store import array_member

    ds = open_zarr(path, storage_options=storage_options, validate=False)
    path = ds.path or path  # resolved: a relative path or ~ made absolute
    g = open_group(path, "r", storage_options)
    arrays = {}
    for name, z in group_arrays(g, path).items():
        arrays[name] = {
            "shape": list(z.shape),
            "dtype": str(z.dtype),
            # a CSR X's indices and data are cut by non-zeros, its indptr a row-chunk a row
            "row_chunk": ds.chunks[0] if name.startswith("X/") else rows_per_chunk(z),
            "chunks": list(z.chunks),
            "shards": None if z.shards is None else list(z.shards),
            "codecs": [repr(c) for c in z.compressors] or ["uncompressed"],
            "bytes": int(z.nbytes),
            "bytes_on_disk": int(z.nbytes_stored()),
        }
    sparse = None
    if ds.is_sparse:
        indices = array_member(g, "X/indices")
        sparse = {
            "format": "csr",
            "nnz": ds.nnz,
            "density": ds.nnz / (ds.n_samples * ds.n_features),
            "index_dtype": str(indices.dtype),
            "segment": int(indices.chunks[0]),
        }
    return {
        "path": path,
        "n_samples": ds.n_samples,
        "n_features": ds.n_features,
        "dtype": str(ds.dtype),
        "n_chunks": ds.n_chunks,
        "sparse": sparse,
        "classes": None if ds.classes_ is None else ds.classes_.tolist(),
        "arrays": arrays,
        "bytes_on_disk": sum(a["bytes_on_disk"] for a in arrays.values()),
        "attrs": ds.attrs,
    }


def cmd_info(args: argparse.Namespace) -> int:
    """``daskgd info PATH``: describe a dataset (``--json`` for machines)."""
    info = dataset_info(args.path, dict(args.storage_option) or None)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    mib = info["bytes_on_disk"] / 2**20
    print(
        f"{info['path']}: {info['n_samples']} x {info['n_features']} {info['dtype']}, "
        f"{info['n_chunks']} row-chunks, {mib:.1f} MiB on disk"
    )
    if info["sparse"] is not None:
        sp = info["sparse"]
        print(f"sparse (CSR): nnz {sp['nnz']}, density {sp['density']:.3g} "
              f"({sp['nnz'] / info['n_samples']:.1f} non-zeros a row), index dtype "
              f"{sp['index_dtype']}, segments of {sp['segment']} values")  # fmt: skip
    if info["classes"] is not None:
        print(f"classes: {info['classes']}")
    for name, a in info["arrays"].items():
        shards = f", shards {a['shards']}" if a["shards"] else ""
        print(f"  {name}: shape {a['shape']} {a['dtype']}, chunks {a['chunks']}{shards}, "
              f"codecs {', '.join(a['codecs'])}, {a['bytes_on_disk'] / 2**20:.1f} MiB on disk "
              f"({a['bytes'] / 2**20:.1f} MiB raw)")  # fmt: skip
    print("attributes:")
    for key, value in info["attrs"].items():
        if key == "digests" and isinstance(value, dict):
            arrays = ", ".join(k for k in value if k not in ("algorithm", "X_blocks"))
            blocks = " and every block of X" if "X_blocks" in value else ""
            print(f"  digests: {value.get('algorithm')} of every row-chunk of {arrays}{blocks}")
            continue
        text = json.dumps(value, default=str)
        print(f"  {key}: {text if len(text) <= 80 else text[:77] + '...'}")
    return 0


def _check_info(args: argparse.Namespace) -> None:
    check_exists("path", args.path, "Zarr dataset")


def add_verbs(sub: Any) -> None:
    """Register ``make-data`` and ``info`` on the command's subparsers."""
    p = sub.add_parser("make-data", help="write a synthetic dataset to Zarr")
    p.add_argument("path", help="local path or fsspec URL of the new Zarr group")
    p.add_argument("--n-samples", type=positive_int, required=True)
    p.add_argument("--n-features", type=positive_int, required=True)
    p.add_argument("--task", choices=["regression", "classification"], default="regression")
    p.add_argument("--n-classes", type=positive_int, default=2,
                   help="classification only (>= 2)")  # fmt: skip
    p.add_argument("--noise", type=non_negative_float, default=0.0, help="regression only")
    p.add_argument("--sparse", action="store_true",
                   help="CSR data like click logs: power-law column popularity, a sparse true "
                   "model (binary classification or regression)")  # fmt: skip
    p.add_argument("--nnz-per-row", type=positive_int, default=None,
                   help="with --sparse: non-zeros in each row (default 40)")  # fmt: skip
    p.add_argument("--chunk-rows", type=positive_int, default=None)
    p.add_argument("--chunk-cols", type=positive_int, default=None,
                   help="also cut X's columns into chunks of this many (dense only), so that "
                   "workers can read column ranges (feature partitioning)")  # fmt: skip
    p.add_argument("--inner-chunk-rows", type=positive_int, default=None,
                   help="shard each row-chunk into inner chunks of this many rows")  # fmt: skip
    p.add_argument("--random-state", type=non_negative_int, default=0)
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--compressor", choices=["zstd", "blosc-lz4", "none"], default="zstd")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--storage-option", type=storage_option, action="append", default=[],
                   metavar="KEY=VALUE", help="fsspec option for a URL (repeatable)")  # fmt: skip
    add_cluster_options(p)
    p.set_defaults(func=cmd_make_data, check=check_make_data, parser=p)

    p = sub.add_parser("info", help="describe a daskgd Zarr dataset")
    p.add_argument("path", help="local path or fsspec URL of the Zarr group")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--storage-option", type=storage_option, action="append", default=[],
                   metavar="KEY=VALUE", help="fsspec option for a URL (repeatable)")  # fmt: skip
    p.set_defaults(func=cmd_info, check=_check_info, parser=p)
