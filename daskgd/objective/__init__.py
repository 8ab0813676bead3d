"""The objective: losses as families, regularizers, step schedules and optimizers (L-BFGS)."""

from daskgd.objective.lbfgs import LBFGS
from daskgd.objective.losses import (
    LOSSES,
    MAX_DLOSS,
    Loss,
    check_targets,
    curvature_bound,
    get_loss,
    link,
)
from daskgd.objective.optimizers import (
    OPTIMIZERS,
    SCHEDULES,
    LBFGSOptimizer,
    Optimizer,
    Regularizer,
    Schedule,
    make_optimizer,
    soft_threshold,
)

__all__ = [
    "LBFGS",
    "LOSSES",
    "MAX_DLOSS",
    "OPTIMIZERS",
    "SCHEDULES",
    "LBFGSOptimizer",
    "Loss",
    "Optimizer",
    "Regularizer",
    "Schedule",
    "check_targets",
    "curvature_bound",
    "get_loss",
    "link",
    "make_optimizer",
    "soft_threshold",
]
