"""Which optimizer ``optimizer="auto"`` stands for (plain Python: the scheduler imports it)."""

from __future__ import annotations

__all__ = ["NEWTON_MAX_FEATURES", "choose_optimizer"]

#: ``optimizer="auto"`` takes Newton for models of at most this many parameters (``d + 1``).
#: Measured with ``bench/newton_crossover.py`` (200,000 rows, 2 workers;
#: bench/results/newton_crossover*.md): with a Hessian in every Newton pass, Newton was 9x
#: (d=800) to 50x (d=100) faster than L-BFGS on ill-conditioned data and 1.7x (d=50) to 13x
#: (d=800) slower on well-conditioned data, and 512 was where the two met (about 10x either
#: way). With the Hessian carried forward between fresh ones, Newton is 0.7x-1.2x L-BFGS's
#: time on well-conditioned data up to d=800 and 100x faster on ill-conditioned data; the
#: limit stays for what grows above it on the scheduler: the Hessian each worker sends
#: (``8 d^2`` bytes) and the ``d^3`` solve.
NEWTON_MAX_FEATURES = 512


def choose_optimizer(
    n_params: int,
    smooth: bool,
    full_batch_sync: bool,
    multinomial: bool,
    *,
    twice_differentiable: bool = True,
) -> str:
    """The optimizer ``optimizer="auto"`` stands for.

    Parameters
    ----------
    n_params : int
        Parameters of one coefficient vector, ``d + 1`` (the intercept included).
    smooth : bool
        Whether the objective is differentiable (no L1 penalty, a differentiable loss).
    full_batch_sync : bool
        Sync mode with full batches (no ``batch_size``, no ``sync_quorum``).
    multinomial : bool
        Whether the parameters are a matrix (multinomial or one-vs-rest).
    twice_differentiable : bool, default=True
        Whether the loss has a second derivative (``hinge`` has none).

    Returns
    -------
    str
        ``"newton"`` for a 1-D, full-batch sync fit with ``n_params <=``
        :data:`NEWTON_MAX_FEATURES` (L1 included: coordinate descent inside each step),
        else ``"lbfgs"`` for a smooth full-batch sync fit, else ``"sgd"``.

    Examples
    --------
    >>> choose_optimizer(101, True, True, False)
    'newton'
    >>> choose_optimizer(100_001, True, True, False)
    'lbfgs'
    >>> choose_optimizer(101, True, False, False)
    'sgd'
    """
    if (
        full_batch_sync
        and not multinomial
        and twice_differentiable
        and int(n_params) <= NEWTON_MAX_FEATURES
    ):
        return "newton"
    if smooth and full_batch_sync:
        return "lbfgs"
    return "sgd"
