"""The ``daskgd hash`` verb: a CSV or Parquet table hashed into a sparse Zarr dataset
(:func:`~daskgd.data.hashing.hash_features`)."""

from __future__ import annotations

import argparse
import glob
import os
from typing import Any

from daskgd.cli.common import UsageError, add_cluster_options, client_for, positive_int

__all__ = ["add_verbs", "check_hash", "cmd_hash", "read_table"]

_CSV = (".csv", ".csv.gz", ".tsv")
_PARQUET = (".parquet", ".pq")


def _columns(text: str) -> list[str]:
    """A comma-separated list of column names."""
    names = [c.strip() for c in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected column names separated by commas: {text!r}")
    return names


def read_table(path: str) -> Any:
    """A dask DataFrame over a CSV (``.csv``, ``.csv.gz``, ``.tsv``, globs allowed) or
    Parquet (``.parquet``, ``.pq``, or a folder of them) input."""
    import dask.dataframe as dd

    if path.endswith(_CSV):
        gz = path.endswith(".gz")  # not splittable: one partition per file
        return dd.read_csv(path, sep="\t" if path.endswith(".tsv") else ",",
                           blocksize=None if gz else "default")  # fmt: skip
    return dd.read_parquet(path)


def check_hash(args: argparse.Namespace) -> None:
    """Argument errors of ``daskgd hash`` (exit code 2)."""
    path = args.input
    if not path.endswith(_CSV + _PARQUET) and not os.path.isdir(path):
        raise UsageError(
            f"argument input: {path!r} is neither CSV ({', '.join(_CSV)}) nor Parquet "
            f"({', '.join(_PARQUET)}, or a folder of Parquet files)"
        )
    if "://" not in path and not glob.glob(path):
        raise UsageError(f"argument input: no file at {path!r}")
    both = sorted(set(args.categorical or ()) & set(args.numeric or ()))
    if both:
        raise UsageError(f"arguments --categorical and --numeric: both list {both}")


def cmd_hash(args: argparse.Namespace) -> int:
    """``daskgd hash INPUT OUTPUT --target COL``: hash a table's columns into a sparse dataset."""
    from daskgd.data.hashing import hash_features

    with client_for(args) as client:
        ds = hash_features(
            read_table(args.input),
            args.output,
            target=args.target,
            sample_weight=args.sample_weight,
            n_features=args.n_features,
            categorical=args.categorical,
            numeric=args.numeric,
            dtype=args.dtype,
            chunk_rows=args.chunk_rows,
            task=args.task,
            client=client,
            overwrite=args.overwrite,
        )
    print(f"wrote {ds!r}")
    return 0


def add_verbs(sub: Any) -> None:
    """Register ``hash`` on the command's subparsers."""
    p = sub.add_parser("hash", help="hash a CSV/Parquet table into a sparse Zarr dataset")
    p.add_argument("input", help="CSV (.csv, .csv.gz, .tsv; globs allowed) or Parquet file(s)")
    p.add_argument("output", help="local path or fsspec URL of the new Zarr group")
    p.add_argument("--target", required=True, help="the label column")
    p.add_argument("--sample-weight", default=None, metavar="COL", help="a weight column")
    p.add_argument("--n-features", type=positive_int, default=2**20,
                   help="columns of the hashed matrix (default 2**20)")  # fmt: skip
    p.add_argument("--categorical", type=_columns, default=None, metavar="COL,...",
                   help="columns hashed as categories (default: text, booleans)")  # fmt: skip
    p.add_argument("--numeric", type=_columns, default=None, metavar="COL,...",
                   help="columns hashed as numbers (default: integers, floats)")  # fmt: skip
    p.add_argument("--task", choices=["regression", "classification"], default=None)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--chunk-rows", type=positive_int, default=None)
    p.add_argument("--overwrite", action="store_true")
    add_cluster_options(p)
    p.set_defaults(func=cmd_hash, check=check_hash, parser=p)
