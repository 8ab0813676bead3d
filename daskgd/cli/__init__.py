"""The ``daskgd`` command line."""

from daskgd.cli.main import UsageError, build_parser, main

__all__ = ["UsageError", "build_parser", "main"]
