"""Passes over an array of the model's size on the calling thread: whether it is all
finite (one pass, no temporary), and dot products without BLAS's threads.

numpy's ``a @ b`` on long vectors runs on OpenBLAS's threads, whose helpers then spin for
about 0.1 s after the call; on the scheduler of a local cluster, a dot product a round kept
a core spinning that the workers needed (at a million parameters the model on the scheduler
took 25% longer a push). :func:`dot` and :func:`norm` use numpy's ``einsum`` loop, on the
calling thread (0.4 ms for 10^6 numbers; no helper thread left spinning).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["all_finite", "dot", "norm"]


def all_finite(a: np.ndarray) -> bool:
    """Whether every number of ``a`` is finite: its sum is (one pass, no temporary), or,
    when the sum is not (a non-finite number, or finite ones summing past the largest
    float), the numbers are, one by one.

    Examples
    --------
    >>> import numpy as np
    >>> all_finite(np.array([1.0, 2.0])), all_finite(np.array([1.0, np.nan]))
    (True, False)
    >>> all_finite(np.array([1e308, 1e308]))  # the sum overflows; the numbers are finite
    True
    """
    return math.isfinite(float(np.add.reduce(a, axis=None))) or bool(np.all(np.isfinite(a)))


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """The dot product of ``a`` and ``b`` (same size, any shape: flattened) in float64, on
    the calling thread (see the module docstring). Float64 C-contiguous arrays are read in
    place; others are converted first.

    Examples
    --------
    >>> import numpy as np
    >>> dot(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    11.0
    """
    same = b is a
    a = np.ascontiguousarray(a, dtype=np.float64).reshape(-1)
    b = a if same else np.ascontiguousarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"dot: arrays of {a.size} and {b.size} numbers")
    return float(np.einsum("i,i->", a, b))


def norm(a: np.ndarray) -> float:
    """The Euclidean norm of ``a`` (flattened), :func:`dot` of ``a`` with itself.

    Examples
    --------
    >>> import numpy as np
    >>> norm(np.array([3.0, 4.0]))
    5.0
    """
    return math.sqrt(dot(a, a))
