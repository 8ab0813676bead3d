"""Which compiled build of the kernels this process uses.

The kernels are built twice from one source (``src_ext/_kernels_impl.pxi``, see
``setup.py``): ``daskgd._kernels`` for the baseline instruction set and, on x86-64,
``daskgd._kernels_avx2`` for AVX2 with FMA. The faster build is chosen at import when
the CPU supports it (as numpy reports); the environment variable
``DASKGD_KERNELS=baseline`` forces the portable one. :data:`KERNEL_BUILD` names the
build in use and :data:`KERNELS` is its module.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["KERNELS", "KERNEL_BUILD", "available_builds", "select_build"]


def _cpu_has_avx2_fma() -> bool:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # pragma: no cover - numpy moved its private module
        return False
    return bool(__cpu_features__.get("AVX2")) and bool(__cpu_features__.get("FMA3"))


def available_builds() -> dict[str, ModuleType]:
    """The compiled kernel builds importable on this machine, by name.

    ``"baseline"`` is always there once daskgd is installed; ``"avx2"`` only on
    x86-64 CPUs with AVX2 and FMA.

    Returns
    -------
    dict of str to module
        Each build's extension module (``grad_loss_linear``, ``grad_loss_multinomial``,
        ``grad_hess``).

    Raises
    ------
    ImportError
        When daskgd was not compiled (a source checkout without a build).
    """
    builds: dict[str, ModuleType] = {}
    try:
        builds["baseline"] = importlib.import_module("daskgd._kernels")
    except ImportError as exc:  # pragma: no cover - only without a build
        raise ImportError(
            "daskgd's compiled kernels are missing; install daskgd with `pip install .` "
            "(or build in place with `python setup.py build_ext --inplace`)"
        ) from exc
    if _cpu_has_avx2_fma():
        try:
            builds["avx2"] = importlib.import_module("daskgd._kernels_avx2")
        except ImportError:
            pass  # built without it (another architecture or compiler)
    return builds


def select_build(wanted: str | None = None) -> tuple[str, ModuleType]:
    """The build to use: ``wanted`` (default: ``$DASKGD_KERNELS``), else the fastest here.

    Returns
    -------
    name : str
    module : module

    Raises
    ------
    ImportError
        When the build asked for is not available on this machine.
    """
    builds = available_builds()
    if wanted is None:
        wanted = os.environ.get("DASKGD_KERNELS", "")
    wanted = wanted.strip().lower()
    if wanted:
        if wanted not in builds:
            raise ImportError(
                f"DASKGD_KERNELS={wanted!r} is not available here; choose one of {sorted(builds)}"
            )
        return wanted, builds[wanted]
    name = "avx2" if "avx2" in builds else "baseline"
    return name, builds[name]


KERNEL_BUILD, KERNELS = select_build()
