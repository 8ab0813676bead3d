"""Environments for the tests' subprocesses (``daskgd`` commands, ``dask scheduler``/``worker``)."""

from __future__ import annotations

import os
from pathlib import Path

import daskgd

#: The folder daskgd was imported from: site-packages when installed (as under tox), the
#: checkout when built in place. Subprocesses get it first on their path, so they run the
#: daskgd under test and never an unbuilt source tree.
DASKGD_PARENT = str(Path(daskgd.__file__).resolve().parents[1])


def subprocess_env(*, without_daskgd: Path | None = None) -> dict[str, str]:
    """``os.environ`` with daskgd importable, or, given a folder, made unimportable.

    To stand for a machine where daskgd is not installed even though this environment
    has it, ``without_daskgd`` receives a ``daskgd`` package that fails to import
    exactly as a missing one does, and goes first on the path.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if without_daskgd is None:
        env["PYTHONPATH"] = DASKGD_PARENT
        return env
    shadow = without_daskgd / "daskgd"
    shadow.mkdir(parents=True, exist_ok=True)
    (shadow / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'daskgd\'", name="daskgd")\n'
    )
    env["PYTHONPATH"] = str(without_daskgd)
    return env
