"""The objective: losses as families, regularizers, step schedules and optimizers (L-BFGS).

Plain numpy throughout: the scheduler imports this package (through the parameter server)
and never needs the compiled kernels.

Modules, lowest first: :mod:`~daskgd.objective.losses` (each loss with its kernel code,
numpy reference, Hessian, link, curvature bound and target checks; the log-link GLM
families in :mod:`~daskgd.objective.loglink`, their base in
:mod:`~daskgd.objective.loss_base`),
:mod:`~daskgd.objective.regularizers`, :mod:`~daskgd.objective.schedules`,
:mod:`~daskgd.objective.lbfgs` (the L-BFGS state machine) and
:mod:`~daskgd.objective.optimizers` (the update rules and their registry).
"""

from daskgd.objective.lbfgs import LBFGS
from daskgd.objective.losses import (
    LOSSES,
    MAX_DLOSS,
    Gamma,
    Hinge,
    Huber,
    LogLoss,
    Loss,
    Poisson,
    SquaredError,
    SquaredHinge,
    Tweedie,
    check_power,
    check_targets,
    curvature_bound,
    get_loss,
    link,
)
from daskgd.objective.optimizers import (
    OPTIMIZERS,
    AdaGrad,
    Adam,
    LBFGSOptimizer,
    Momentum,
    Nesterov,
    Optimizer,
    make_optimizer,
)
from daskgd.objective.regularizers import Regularizer, soft_threshold
from daskgd.objective.schedules import SCHEDULES, Schedule

__all__ = [
    "LBFGS",
    "LOSSES",
    "MAX_DLOSS",
    "OPTIMIZERS",
    "SCHEDULES",
    "AdaGrad",
    "Adam",
    "Gamma",
    "Hinge",
    "Huber",
    "LBFGSOptimizer",
    "LogLoss",
    "Loss",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "Poisson",
    "Regularizer",
    "Schedule",
    "SquaredError",
    "SquaredHinge",
    "Tweedie",
    "check_power",
    "check_targets",
    "curvature_bound",
    "get_loss",
    "link",
    "make_optimizer",
    "soft_threshold",
]
