"""The ``daskgd`` command: the parser, and :func:`main`, which runs one verb.

Verbs are argparse subcommands, registered by their modules' ``add_verbs``
(:mod:`~daskgd.cli.data_commands`: ``make-data``, ``info``; :mod:`~daskgd.cli.hash_command`:
``hash``;
:mod:`~daskgd.cli.train_commands`: ``demo``, ``fit``, ``predict``). Each sets ``func``
(``args -> exit code``) and ``check`` (argument errors that need the file system). Exit
codes: 0 success, 2 bad arguments (argparse, or :class:`~daskgd.cli.common.UsageError`),
1 failure with a one-line reason on stderr (the traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence

from daskgd.cli.common import UsageError
from daskgd.cli.data_commands import add_verbs as add_data_verbs
from daskgd.cli.hash_command import add_verbs as add_hash_verbs
from daskgd.cli.train_commands import add_verbs as add_train_verbs

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``daskgd`` command (one subparser per verb)."""
    parser = argparse.ArgumentParser(
        prog="daskgd", description="Distributed gradient descent for linear models on Dask."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_data_verbs(sub)
    add_hash_verbs(sub)
    add_train_verbs(sub)
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
    """Run the ``daskgd`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after ``daskgd`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code: 0 success, 2 bad arguments, 1 failure, 130 interrupted.
    """
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
