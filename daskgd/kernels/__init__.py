"""Loss and gradient of a linear model over a block of rows: the compiled kernels.

- :func:`grad_loss` (:mod:`~daskgd.kernels.dispatch`): the Python face of the compiled
  kernels in ``src_ext/``, which checks its inputs and dispatches by dtype.
- :data:`KERNEL_BUILD` and :func:`available_builds` (:mod:`~daskgd.kernels.builds`): the
  baseline and AVX2+FMA builds, and which one is in use (``DASKGD_KERNELS=baseline``
  forces the portable one).
- :func:`grad_loss_reference` (:mod:`~daskgd.kernels.reference`): the same computation
  in plain numpy, the tests' oracle; each loss's definition is its family in
  :mod:`daskgd.objective.losses`.
"""

from daskgd.kernels.builds import KERNEL_BUILD, available_builds
from daskgd.kernels.dispatch import grad_loss
from daskgd.kernels.reference import grad_loss_reference

__all__ = ["KERNEL_BUILD", "available_builds", "grad_loss", "grad_loss_reference"]
