"""Build the Cython gradient kernels.

All metadata lives in ``pyproject.toml``; this file only declares the extensions.
One Cython source (``src_ext/_kernels_impl.pxi`` with the includes ``_kernels_hessian.pxi``,
``_kernels_many.pxi`` and ``_kernels_csr.pxi``) is built twice: ``daskgd._kernels``
for the baseline instruction set, and on x86-64 ``daskgd._kernels_avx2`` with AVX2
and FMA, which ``daskgd.kernels`` selects at import when the CPU has them.
"""

import platform
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# -fassociative-math (with the two flags it requires) lets GCC vectorise the
# dot-product reductions; it does not assume finite values, so NaN and inf still
# propagate and are caught by the callers.
EXTRA_COMPILE_ARGS = [
    "-O3",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fno-signed-zeros",
    "-fassociative-math",
]


def kernel_extension(name: str, extra_args: list[str]) -> Extension:
    return Extension(
        f"daskgd.{name}",
        sources=[f"src_ext/{name}.pyx"],
        depends=[
            "src_ext/_kernels_impl.pxi",
            "src_ext/_kernels_hessian.pxi",
            "src_ext/_kernels_many.pxi",
            "src_ext/_kernels_csr.pxi",
        ],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=EXTRA_COMPILE_ARGS + extra_args,
    )


extensions = [kernel_extension("_kernels", [])]
if platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32":
    extensions.append(kernel_extension("_kernels_avx2", ["-mavx2", "-mfma"]))

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
