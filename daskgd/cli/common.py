"""What every verb of the ``daskgd`` command shares: argument types, checks, the cluster.

A verb's module registers its subparser with these argument types (argparse reports a bad
value with exit code 2), checks what needs the file system with the ``check_*`` helpers
(which raise :class:`UsageError`, reported the same way), and gets its client from
:func:`client_for`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = [
    "UsageError",
    "add_cluster_options",
    "check_exists",
    "check_output",
    "check_plot",
    "client_for",
    "cluster_log_level",
    "fraction",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "scheduler_address",
    "storage_option",
]


class UsageError(Exception):
    """A bad argument found after parsing (it needs the file system or another flag).

    :func:`daskgd.cli.main` reports it like argparse does: the usage, the message, exit
    code 2.
    """


# -- argument types (argparse calls them; ArgumentTypeError is its "bad value") ---------------


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1]."""
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def scheduler_address(text: str) -> str:
    """A Dask scheduler address (``tcp://host:port``, ``tls://...``, ``inproc://...``)."""
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


def storage_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; the value is read as JSON when it is JSON (numbers, booleans, objects)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# -- checks after parsing (UsageError, exit code 2, before any work) --------------------------


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


# -- the cluster ------------------------------------------------------------------------------


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """``--scheduler ADDRESS`` or ``--n-workers N`` (neither: dask's threads in-process)."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--scheduler", type=scheduler_address,
                   help="address of a running Dask scheduler (tcp://, tls://)")  # fmt: skip
    g.add_argument("--n-workers", type=positive_int, default=None,
                   help="start a LocalCluster with this many worker processes")  # fmt: skip


def cluster_log_level(args: argparse.Namespace) -> int:
    """The level of distributed's logs (scheduler, nannies, workers) on stderr for a
    cluster the command starts: only critical ones, or warnings with ``--debug``.

    A failure is reported as one line; distributed's own logs would add tracebacks that
    say nothing about it (e.g. a worker whose heartbeat meets the scheduler closing as
    the command exits: "Failed to communicate with scheduler during heartbeat").
    """
    return logging.WARNING if getattr(args, "debug", False) else logging.CRITICAL


@contextlib.contextmanager
def client_for(args: argparse.Namespace) -> Iterator[Any]:
    """A client for ``--scheduler``, a LocalCluster for ``--n-workers``, else None (threads).

    The scheduler is checked (daskgd importable there, same version) before any work is
    sent to it.
    """
    if args.scheduler:
        from daskgd.cluster import check_scheduler, connect

        with connect(args.scheduler) as client:
            check_scheduler(client)
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
