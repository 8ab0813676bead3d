"""Whether an array of the model's size is all finite, in one pass and no temporary."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["all_finite"]


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
