"""Learning-rate schedules: a name -> rule table (:data:`SCHEDULES`) and :class:`Schedule`.

Plain Python; it runs on the scheduler inside the parameter server's executor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SCHEDULES", "Schedule"]

#: The schedules :class:`Schedule` knows.
SCHEDULES = ("constant", "invscaling", "step")


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule.

    Parameters
    ----------
    name : {"constant", "invscaling", "step"}
        ``constant``: ``eta0``; ``invscaling``: ``eta0 / (1 + t) ** power_t`` with
        ``t`` the number of updates applied so far; ``step``: ``eta0 * gamma **
        (epoch // step_size)``.
    eta0 : float
        Initial learning rate, positive.
    power_t : float, default=0.25
        Exponent of ``invscaling``.
    step_size : int, default=10
        Epochs between two decays of ``step``.
    gamma : float, default=0.5
        Decay factor of ``step``, in (0, 1].

    Examples
    --------
    >>> Schedule("step", 1.0, step_size=2, gamma=0.5)(t=0, epoch=5)
    0.25
    """

    name: str
    eta0: float
    power_t: float = 0.25
    step_size: int = 10
    gamma: float = 0.5

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(
                f"unknown lr_schedule {self.name!r}; choose one of: {', '.join(SCHEDULES)}"
            )
        if not (isinstance(self.eta0, int | float) and math.isfinite(self.eta0) and self.eta0 > 0):
            raise ValueError(f"learning_rate must be a positive finite number, got {self.eta0!r}")
        if not self.power_t >= 0:
            raise ValueError(f"power_t must be >= 0, got {self.power_t!r}")
        if not (isinstance(self.step_size, int) and self.step_size >= 1):
            raise ValueError(f"step_size must be a positive integer, got {self.step_size!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must lie in (0, 1], got {self.gamma!r}")

    def __call__(self, t: int, epoch: int) -> float:
        """Learning rate for update number ``t`` (0-based) during epoch ``epoch``."""
        if self.name == "constant":
            return self.eta0
        if self.name == "invscaling":
            return self.eta0 / (1.0 + t) ** self.power_t
        return self.eta0 * self.gamma ** (epoch // self.step_size)
