"""The objective: losses as families, regularizers, step schedules and optimizers (L-BFGS).

Plain numpy throughout: the scheduler imports this package (through the parameter server)
and never needs the compiled kernels.

Modules, lowest first: :mod:`~daskgd.objective.losses` (each loss with its kernel code,
numpy reference, Hessian, link, curvature bound and target checks; the log-link GLM
families in :mod:`~daskgd.objective.loglink`, their base in
:mod:`~daskgd.objective.loss_base`),
:mod:`~daskgd.objective.regularizers`, :mod:`~daskgd.objective.schedules`,
:mod:`~daskgd.objective.lbfgs` (the L-BFGS state machine),
:mod:`~daskgd.objective.quadratic` (coordinate descent on a quadratic model with L1),
:mod:`~daskgd.objective.newton` (the Newton state machine, the crossover
:data:`NEWTON_MAX_FEATURES` and :func:`choose_optimizer`, the rule of ``optimizer="auto"``) and
:mod:`~daskgd.objective.optimizers` (the update rules and their registry);
for sparse models, the per-coordinate ("key-value") rules that touch only the keys a
gradient touched: :mod:`~daskgd.objective.keyed_base` (their interface),
:mod:`~daskgd.objective.ftrl` (FTRL-Proximal) and :mod:`~daskgd.objective.keyed` (lazy SGD,
AdaGrad, Adam, their registry and :func:`make_keyed_optimizer`).
"""

from daskgd.objective.ftrl import FTRLProximal
from daskgd.objective.keyed import (
    KEYED_OPTIMIZERS,
    KeyedAdaGrad,
    KeyedAdam,
    KeyedOptimizer,
    KeyedSGD,
    make_keyed_optimizer,
)
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
from daskgd.objective.newton import NEWTON_MAX_FEATURES, Newton, choose_optimizer
from daskgd.objective.optimizers import (
    OPTIMIZERS,
    AdaGrad,
    Adam,
    LBFGSOptimizer,
    Momentum,
    Nesterov,
    NewtonOptimizer,
    Optimizer,
    make_optimizer,
)
from daskgd.objective.regularizers import Regularizer, soft_threshold
from daskgd.objective.schedules import SCHEDULES, Schedule

__all__ = [
    "KEYED_OPTIMIZERS",
    "LBFGS",
    "LOSSES",
    "MAX_DLOSS",
    "NEWTON_MAX_FEATURES",
    "OPTIMIZERS",
    "SCHEDULES",
    "AdaGrad",
    "Adam",
    "FTRLProximal",
    "Gamma",
    "Hinge",
    "Huber",
    "KeyedAdaGrad",
    "KeyedAdam",
    "KeyedOptimizer",
    "KeyedSGD",
    "LBFGSOptimizer",
    "LogLoss",
    "Loss",
    "Momentum",
    "Nesterov",
    "Newton",
    "NewtonOptimizer",
    "Optimizer",
    "Poisson",
    "Regularizer",
    "Schedule",
    "SquaredError",
    "SquaredHinge",
    "Tweedie",
    "check_power",
    "check_targets",
    "choose_optimizer",
    "curvature_bound",
    "get_loss",
    "link",
    "make_keyed_optimizer",
    "make_optimizer",
    "soft_threshold",
]
