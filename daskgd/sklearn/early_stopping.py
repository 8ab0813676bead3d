"""Early stopping: a random share of the rows held out, and the model's loss on them.

scikit-learn's ``early_stopping`` scores a held-out ``validation_fraction`` after every
epoch; here the score is the model's own loss on those rows (in the engine's encoding of the
targets), computed by the compiled kernel at each epoch's parameters (the engine hands them
to the callback). In-memory (numpy) input only: the split is made in this process.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from daskgd.kernels import grad_loss

__all__ = ["EarlyStopping"]


def _sparse(a: Any) -> bool:
    return (type(a).__module__ or "").startswith("scipy.sparse")


class EarlyStopping:
    """Stop when the loss on held-out rows has not improved for ``patience`` epochs.

    scikit-learn's ``early_stopping`` scores a held-out ``validation_fraction`` after
    every epoch; here the score is the model's own loss on those rows (in the engine's
    encoding of the targets), computed by the kernel at each epoch's parameters.
    """

    def __init__(self, held_out: tuple, loss: str, epsilon: float, tol: float | None,
                 patience: int, one_vs_rest: bool = False) -> None:  # fmt: skip
        self.X, self.y = held_out[0], held_out[1]
        # one-vs-rest: y holds class indices and the coefficients one column per class
        self.one_vs_rest = one_vs_rest
        self.sw = held_out[2] if len(held_out) > 2 else None
        self.weight = float(len(self.y) if self.sw is None else np.sum(self.sw))
        self.loss, self.epsilon = loss, epsilon
        self.tol, self.patience = (tol or 0.0), int(patience)
        self.best, self.bad = math.inf, 0
        self.stopped = False

    @classmethod
    def split(cls, data: tuple, fraction: float, seed: int | None, **kwargs: Any):
        """(training data, stopper): a random ``fraction`` of the rows is held out."""
        n = len(data[1])
        n_val = max(1, round(fraction * n))
        if n - n_val < 1:
            raise ValueError(f"validation_fraction={fraction} leaves no rows to train on")
        order = np.random.default_rng(seed).permutation(n)
        train, val = np.sort(order[n_val:]), np.sort(order[:n_val])

        def pick(idx: np.ndarray) -> tuple:
            # sparse rows stay CSR (row selection keeps the format)
            return tuple(a[idx] if _sparse(a) else np.ascontiguousarray(a[idx]) for a in data)

        return pick(train), cls(pick(val), **kwargs)

    def __call__(self, row: dict[str, Any]) -> bool:
        coef = np.asarray(row["coef"], dtype=self.X.dtype)
        if self.one_vs_rest:  # the sum of the k binary losses, the joint job's objective
            intercept = np.asarray(row["intercept"])
            total = 0.0
            for j in range(coef.shape[1]):
                yj = np.where(self.y == j, 1.0, -1.0).astype(self.X.dtype)
                part, _, _ = grad_loss(self.X, yj, np.ascontiguousarray(coef[:, j]),
                                       float(intercept[j]), loss=self.loss,
                                       sample_weight=self.sw, epsilon=self.epsilon,
                                       check_input=False)  # fmt: skip
                total += part
        else:
            total, _, _ = grad_loss(self.X, self.y, coef, row["intercept"], loss=self.loss,
                                    sample_weight=self.sw, epsilon=self.epsilon,
                                    check_input=False)  # fmt: skip
        held_out_loss = total / self.weight
        if held_out_loss > self.best - self.tol * abs(self.best):
            self.bad += 1
        else:
            self.bad = 0
        self.best = min(self.best, held_out_loss)
        self.stopped = self.bad >= self.patience
        return not self.stopped  # False stops the fit
