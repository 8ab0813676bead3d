"""Build the Cython gradient kernels into ``daskgd._kernels``.

All metadata lives in ``pyproject.toml``; this file only declares the extension.
"""

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

extensions = [
    Extension(
        "daskgd._kernels",
        sources=["src_ext/_kernels.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=EXTRA_COMPILE_ARGS,
    )
]

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
