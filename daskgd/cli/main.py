"""The ``daskgd`` command.

Verbs are argparse subcommands, each a ``_cmd_<verb>(args) -> int`` function registered in
:func:`build_parser`. Exit codes: 0 success, 2 bad arguments (argparse), 1 failure with a
one-line reason on stderr (the traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _scheduler_address(text: str) -> str:
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(text)
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected a scheduler address such as tcp://host:8786, got {text!r} ({exc})"
        ) from None
    return text


class UsageError(Exception):
    """A bad argument found after parsing (it needs the file system or another flag).

    :func:`main` reports it like argparse does: the usage, the message, exit code 2.
    """


def _is_url(path: str) -> bool:
    return "://" in path


def check_exists(flag: str, path: str, what: str) -> None:
    """A local ``path`` given as ``flag`` must exist (URLs are checked when opened)."""
    if not _is_url(path) and not os.path.exists(path):
        raise UsageError(f"argument {flag}: no {what} at {path!r}")


def check_output(flag: str, path: str, suffixes: Sequence[str]) -> None:
    """An output file ``path`` must end in one of ``suffixes``, in a folder that exists."""
    if not path.endswith(tuple(suffixes)):
        raise UsageError(f"argument {flag}: {path!r} must end in {' or '.join(suffixes)}")
    if _is_url(path):
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"argument {flag}: the folder {folder!r} of {path!r} does not exist")


def check_plot(flag: str, path: str) -> None:
    """A plot file: a format matplotlib writes, in a folder that exists."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    check_output(flag, path, [f".{f}" for f in formats])


def _storage_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # numbers, booleans, JSON objects
    except json.JSONDecodeError:
        return key, value


def _compressor(name: str) -> Any:
    from zarr.codecs import BloscCodec

    from daskgd.data import DEFAULT_COMPRESSOR

    if name == "zstd":
        return DEFAULT_COMPRESSOR
    if name == "blosc-lz4":
        return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    return None


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[Any]:
    """A client for --scheduler, a LocalCluster for --n-workers, else dask's threads."""
    if args.scheduler:
        from daskgd.cluster import check_scheduler, connect

        with connect(args.scheduler) as client:
            check_scheduler(client)  # before any work is sent to it
            yield client
    elif args.n_workers:
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=args.n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=cluster_log_level(args),
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
    else:
        yield None


def cluster_log_level(args: argparse.Namespace) -> int:
    """The level of distributed's logs (scheduler, nannies, workers) on stderr for a
    cluster the command starts: only critical ones, or warnings with ``--debug``.

    A failure is reported as one line; distributed's own logs would add tracebacks that
    say nothing about it (e.g. a worker whose heartbeat meets the scheduler closing as
    the command exits: "Failed to communicate with scheduler during heartbeat").
    """
    import logging

    return logging.WARNING if getattr(args, "debug", False) else logging.CRITICAL


def _check_make_data(args: argparse.Namespace) -> None:
    if args.task == "classification" and args.n_classes < 2:
        raise UsageError(f"argument --n-classes: expected an integer >= 2, got {args.n_classes}")


def _cmd_make_data(args: argparse.Namespace) -> int:
    from daskgd.data.synthetic import make_classification, make_regression

    common = {
        "chunk_rows": args.chunk_rows,
        "random_state": args.random_state,
        "dtype": args.dtype,
        "compressor": _compressor(args.compressor),
        "inner_chunk_rows": args.inner_chunk_rows,
        "overwrite": args.overwrite,
        "storage_options": dict(args.storage_option) or None,
    }
    with _client(args) as client:
        if args.task == "regression":
            ds = make_regression(
                args.path, args.n_samples, args.n_features, noise=args.noise,
                client=client, **common,
            )  # fmt: skip
        else:
            ds = make_classification(
                args.path, args.n_samples, args.n_features, n_classes=args.n_classes,
                client=client, **common,
            )  # fmt: skip
    print(f"wrote {ds!r}")
    return 0


def _info(path: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    from daskgd.data import group_arrays, open_group, open_zarr, rows_per_chunk

    ds = open_zarr(path, storage_options=storage_options, validate=False)
    path = ds.path or path  # resolved: a relative path or ~ made absolute
    g = open_group(path, "r", storage_options)
    arrays = {}
    for name, z in group_arrays(g, path).items():
        arrays[name] = {
            "shape": list(z.shape),
            "dtype": str(z.dtype),
            "row_chunk": rows_per_chunk(z),
            "chunks": list(z.chunks),
            "shards": None if z.shards is None else list(z.shards),
            "codecs": [repr(c) for c in z.compressors] or ["uncompressed"],
            "bytes": int(z.nbytes),
            "bytes_on_disk": int(z.nbytes_stored()),
        }
    return {
        "path": path,
        "n_samples": ds.n_samples,
        "n_features": ds.n_features,
        "dtype": str(ds.dtype),
        "n_chunks": ds.n_chunks,
        "classes": None if ds.classes_ is None else ds.classes_.tolist(),
        "arrays": arrays,
        "bytes_on_disk": sum(a["bytes_on_disk"] for a in arrays.values()),
        "attrs": ds.attrs,
    }


def _cmd_info(args: argparse.Namespace) -> int:
    info = _info(args.path, dict(args.storage_option) or None)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    mib = info["bytes_on_disk"] / 2**20
    print(
        f"{info['path']}: {info['n_samples']} x {info['n_features']} {info['dtype']}, "
        f"{info['n_chunks']} row-chunks, {mib:.1f} MiB on disk"
    )
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
            arrays = ", ".join(k for k in value if k != "algorithm")
            print(f"  digests: {value.get('algorithm')} of every row-chunk of {arrays}")
            continue
        text = json.dumps(value, default=str)
        print(f"  {key}: {text if len(text) <= 80 else text[:77] + '...'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``daskgd`` command (one subparser per verb)."""
    parser = argparse.ArgumentParser(
        prog="daskgd", description="Distributed gradient descent for linear models on Dask."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("make-data", help="write a synthetic dataset to Zarr")
    p.add_argument("path", help="local path or fsspec URL of the new Zarr group")
    p.add_argument("--n-samples", type=_positive_int, required=True)
    p.add_argument("--n-features", type=_positive_int, required=True)
    p.add_argument("--task", choices=["regression", "classification"], default="regression")
    p.add_argument("--n-classes", type=_positive_int, default=2,
                   help="classification only (>= 2)")  # fmt: skip
    p.add_argument("--noise", type=_non_negative_float, default=0.0, help="regression only")
    p.add_argument("--chunk-rows", type=_positive_int, default=None)
    p.add_argument("--inner-chunk-rows", type=_positive_int, default=None,
                   help="shard each row-chunk into inner chunks of this many rows")  # fmt: skip
    p.add_argument("--random-state", type=_non_negative_int, default=0)
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--compressor", choices=["zstd", "blosc-lz4", "none"], default="zstd")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--storage-option", type=_storage_option, action="append", default=[],
                   metavar="KEY=VALUE", help="fsspec option for a URL (repeatable)")  # fmt: skip
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", type=_scheduler_address,
                       help="address of a running Dask scheduler")  # fmt: skip
    where.add_argument("--n-workers", type=_positive_int, default=None,
                       help="start a LocalCluster with this many worker processes")  # fmt: skip
    p.set_defaults(func=_cmd_make_data, check=_check_make_data, parser=p)

    p = sub.add_parser("info", help="describe a daskgd Zarr dataset")
    p.add_argument("path", help="local path or fsspec URL of the Zarr group")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--storage-option", type=_storage_option, action="append", default=[],
                   metavar="KEY=VALUE", help="fsspec option for a URL (repeatable)")  # fmt: skip
    p.set_defaults(
        func=_cmd_info, check=lambda a: check_exists("path", a.path, "Zarr dataset"), parser=p
    )

    from daskgd.cli.train import add_verbs

    add_verbs(sub)
    return parser


@contextlib.contextmanager
def _quiet_distributed(debug: bool) -> Iterator[None]:
    """Without ``--debug``, distributed's own log records (a worker's heartbeat traceback as
    the cluster closes after a failure) stay off stderr, which holds the one-line reason.

    The environment variable reaches the LocalCluster's worker processes; both are restored
    afterwards (``main`` also runs inside other programs and tests).
    """
    if debug:
        yield
        return
    # distributed gives its loggers levels of their own (distributed.client: warning), so
    # a level on the parent logger would not hold them back: disable below CRITICAL instead
    disabled, env = logging.root.manager.disable, os.environ.get("DASK_LOGGING__DISTRIBUTED")
    logging.disable(logging.ERROR)
    os.environ["DASK_LOGGING__DISTRIBUTED"] = "critical"
    try:
        yield
    finally:
        logging.disable(disabled)
        if env is None:
            os.environ.pop("DASK_LOGGING__DISTRIBUTED", None)
        else:
            os.environ["DASK_LOGGING__DISTRIBUTED"] = env


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``daskgd`` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or bad arguments (2)
        return int(exc.code or 0)
    try:
        with _quiet_distributed(args.debug):
            check = getattr(args, "check", None)
            if check is not None:
                check(args)  # argument errors that need the file system: before any work
            return int(args.func(args))
    except UsageError as exc:
        try:
            args.parser.error(str(exc))  # the usage and the message on stderr, like argparse
        except SystemExit as stop:
            return int(stop.code or 2)
        return 2  # pragma: no cover - error() always exits
    except KeyboardInterrupt:
        print("daskgd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        reason = " ".join(str(exc).split()) or type(exc).__name__
        print(f"daskgd: error: {type(exc).__name__}: {reason}", file=sys.stderr)
        return 1
