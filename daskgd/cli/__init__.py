"""The ``daskgd`` command line.

Modules, lowest first: :mod:`~daskgd.cli.common` (argument types, checks, the cluster),
the verbs (:mod:`~daskgd.cli.data_commands`, :mod:`~daskgd.cli.hash_command`,
:mod:`~daskgd.cli.train_commands`) and
:mod:`~daskgd.cli.main` (the parser and :func:`main`).
"""

from daskgd.cli.common import UsageError
from daskgd.cli.main import build_parser, main

__all__ = ["UsageError", "build_parser", "main"]
