"""Loss and gradient of a linear model over a block of rows: the compiled kernels.

- :func:`grad_loss` (:mod:`~daskgd.kernels.dispatch`): the Python face of the compiled
  kernels in ``src_ext/``, which checks its inputs and dispatches by dtype.
- CSR blocks (:mod:`~daskgd.kernels.sparse`): :func:`grad_loss` also takes a ``scipy.sparse``
  CSR matrix/array or a :class:`CSRBlock` and reads only its stored entries;
  :func:`compact_columns` renumbers a batch to the columns it touches, and
  :func:`grad_loss_keys` (:mod:`~daskgd.kernels.keys`) gives the gradient at those keys
  from the weights at them (a key-value parameter server's pull and push).
- :func:`grad_hess` (:mod:`~daskgd.kernels.hessian`): loss, gradient and Hessian
  ``A^T diag(s l'') A`` of a block in one pass (Newton's method, Gram matrices).
- :func:`grad_loss_many` (:mod:`~daskgd.kernels.many`): loss and gradient of many models on
  one block, reading it once (the fold models of a cross-validated path).
- :data:`KERNEL_BUILD` and :func:`available_builds` (:mod:`~daskgd.kernels.builds`): the
  baseline and AVX2+FMA builds, and which one is in use (``DASKGD_KERNELS=baseline``
  forces the portable one).
- :func:`grad_loss_reference` and :func:`grad_hess_reference`
  (:mod:`~daskgd.kernels.reference`): the same computations
  in plain numpy, the tests' oracle; each loss's definition is its family in
  :mod:`daskgd.objective.losses`.
"""

from daskgd.kernels.builds import KERNEL_BUILD, available_builds
from daskgd.kernels.dispatch import grad_loss
from daskgd.kernels.hessian import grad_hess
from daskgd.kernels.keys import grad_loss_keys
from daskgd.kernels.many import grad_loss_many
from daskgd.kernels.reference import grad_hess_reference, grad_loss_reference
from daskgd.kernels.sparse import CSRBlock, check_csr, compact_columns

__all__ = [
    "KERNEL_BUILD",
    "CSRBlock",
    "available_builds",
    "check_csr",
    "compact_columns",
    "grad_hess",
    "grad_hess_reference",
    "grad_loss",
    "grad_loss_keys",
    "grad_loss_many",
    "grad_loss_reference",
]
