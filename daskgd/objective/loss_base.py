"""The base class of every loss, :class:`Loss`, and the derivative clip :data:`MAX_DLOSS`.

The families themselves live in :mod:`daskgd.objective.losses` (the classic ones and the
registry) and :mod:`daskgd.objective.loglink` (the log-link GLM families).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

__all__ = ["MAX_DLOSS", "Loss"]

#: Largest absolute loss derivative, as in scikit-learn's SGD.
MAX_DLOSS = 1e12


class Loss:
    """A loss known to the kernels, with everything that depends on which loss it is.

    Attributes
    ----------
    name : str
        The public name, as passed to ``loss=``.
    code : int
        The integer the compiled kernel dispatches on (``src_ext/_kernels_impl.pxi``).
    classification : bool
        True when targets are class labels (``-1``/``+1`` for binary losses).
    curvature : float
        A bound on the second derivative of the loss in the margin (for ``1 / L`` steps).
    """

    name: ClassVar[str]
    code: ClassVar[int]
    classification: ClassVar[bool] = False
    curvature: ClassVar[float] = 1.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def reference(
        self, p: np.ndarray, y: np.ndarray, epsilon: float = 0.1, power: float = 1.5
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-row loss and its derivative in the margin, in numpy (the kernels' oracle).

        Parameters
        ----------
        p : ndarray of shape (n,)
            Margins.
        y : ndarray of shape (n,)
            Targets.
        epsilon : float, default=0.1
            Width of the Huber loss's quadratic zone (other losses ignore it).
        power : float, default=1.5
            The Tweedie power (other losses ignore it).

        Returns
        -------
        loss, dloss : ndarray of shape (n,)
            Not clipped: the callers clip ``dloss`` to :data:`MAX_DLOSS`, as the kernels do.
        """
        raise NotImplementedError  # pragma: no cover - every loss below defines it

    def reference_hessian(
        self, p: np.ndarray, y: np.ndarray, epsilon: float = 0.1, power: float = 1.5
    ) -> np.ndarray:
        """Per-row second derivative of the loss in the margin, in numpy.

        Where the loss has a kink (hinge, Huber's and the squared hinge's zone edges) the
        one-sided value of the zone the row falls in is returned, as its derivative is.
        Arguments as :meth:`reference`.

        Returns
        -------
        ndarray of shape (n,)
            Not clipped (callers clip to :data:`MAX_DLOSS`, as the kernels do).
        """
        raise NotImplementedError  # pragma: no cover - every loss below defines it

    def link(self, margin: np.ndarray) -> np.ndarray:
        """Map margins to predictions (identity unless the loss is a likelihood)."""
        return margin

    def check_targets(
        self,
        y: np.ndarray,
        *,
        multinomial: bool = False,
        n_classes: int = 0,
        name: str = "y",
        power: float = 1.5,
    ) -> None:
        """Raise ``ValueError`` when ``y`` lies outside the loss's domain.

        Binary classification losses take ``-1``/``+1``; the multinomial loss takes class
        indices ``0 .. n_classes - 1``; ``poisson`` and ``tweedie`` (``1 <= power < 2``)
        take ``y >= 0``, ``gamma`` and ``tweedie`` (``power >= 2``) take ``y > 0``; other
        regression losses take any finite value. ``power`` is the Tweedie power (only
        ``tweedie`` reads it, and checks it with :func:`check_power`).
        """
        if multinomial:
            bad = (y < 0) | (y >= n_classes) | (y != np.floor(y))
            if np.any(bad):
                first = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"{name} must hold class indices 0..{n_classes - 1} for the multinomial "
                    f"loss; found {y[first]!r} at position {first}. Encode labels first "
                    "(e.g. numpy.unique(labels, return_inverse=True))."
                )
        elif self.classification:
            bad = (y != 1) & (y != -1)
            if np.any(bad):
                first = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"{name} must hold -1/+1 labels for loss {self.name!r}; found "
                    f"{y[first]!r} at position {first}. For 0/1 labels pass 2 * y - 1."
                )
