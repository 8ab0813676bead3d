"""Declared constraints on the fit settings, checked in one place (scikit-learn style).

Each setting names the kinds of value it takes (:data:`daskgd.driver.settings.CONSTRAINTS`);
:func:`validate` refuses anything else with one message shape: ``"<name> must be <what> or
<what>, got <value>"``. Booleans are never integers or numbers here (``max_epochs=True`` is
refused), as in scikit-learn's ``Interval(Integral, ...)``.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskgd.errors import InvalidSettingError

__all__ = [
    "Boolean",
    "Constraint",
    "Delays",
    "Integer",
    "Options",
    "PathLike",
    "Real",
    "validate",
]


class Constraint:
    """One kind of value a setting accepts."""

    def accepts(self, value: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


@dataclass(frozen=True)
class Options(Constraint):
    """One of a fixed set of strings."""

    values: tuple[str, ...]

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.values

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Integer(Constraint):
    """An integer (Python or numpy, never a bool) of at least ``low``."""

    low: int

    def accepts(self, value: Any) -> bool:
        return (
            isinstance(value, numbers.Integral) and not _is_bool(value) and int(value) >= self.low
        )

    def describe(self) -> str:
        return f"an integer >= {self.low}"


@dataclass(frozen=True)
class Real(Constraint):
    """A finite real number (never a bool) in ``[low, high]``; ``low`` excluded if ``open``."""

    low: float = -math.inf
    high: float = math.inf
    open: bool = False
    unit: str = "a number"

    def accepts(self, value: Any) -> bool:
        if _is_bool(value) or not isinstance(value, numbers.Real):
            return False
        try:
            v = float(value)
        except OverflowError:
            return False
        if not math.isfinite(v) or v > self.high:
            return False
        return v > self.low if self.open else v >= self.low

    def describe(self) -> str:
        if self.high < math.inf:
            return f"{self.unit} in [{self.low:g}, {self.high:g}]"
        if self.low == -math.inf:
            return f"a finite {self.unit.removeprefix('a ')}"
        return f"{self.unit} {'>' if self.open else '>='} {self.low:g}"


@dataclass(frozen=True)
class Boolean(Constraint):
    """True or False (numpy's too)."""

    def accepts(self, value: Any) -> bool:
        return _is_bool(value)

    def describe(self) -> str:
        return "True or False"


@dataclass(frozen=True)
class PathLike(Constraint):
    """A path: a string or an ``os.PathLike``."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str | os.PathLike)

    def describe(self) -> str:
        return "a path"


@dataclass(frozen=True)
class Kind(Constraint):
    """An instance of ``types`` (a dict, a callable...), described as ``what``."""

    what: str
    test: Callable[[Any], bool]

    def accepts(self, value: Any) -> bool:
        return bool(self.test(value))

    def describe(self) -> str:
        return self.what


@dataclass(frozen=True)
class Delays(Constraint):
    """A dict rank (int) -> seconds >= 0 (the stragglers' test hook)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, Mapping) and all(
            isinstance(r, int)
            and not _is_bool(r)
            and isinstance(t, int | float)
            and not _is_bool(t)
            and math.isfinite(t)
            and t >= 0
            for r, t in value.items()
        )

    def describe(self) -> str:
        return "a dict rank -> seconds >= 0"


#: A value that is never checked here (arrays checked against the data later).
ANY = Kind("anything", lambda v: True)
#: None, as one of a setting's kinds.
NONE = Kind("None", lambda v: v is None)
MAPPING = Kind("a dict", lambda v: isinstance(v, Mapping))
CALLABLE = Kind("a callable", callable)
SECONDS = Real(0.0, open=True, unit="a number of seconds")


def validate(name: str, value: Any, kinds: tuple[Constraint, ...]) -> None:
    """Raise :class:`~daskgd.errors.InvalidSettingError` unless one of ``kinds`` accepts.

    A setting whose only kind is :class:`Options` gets ``"unknown <name> ...; choose one
    of: ..."``, the message of the registries (losses, optimizers).
    """
    if any(k.accepts(value) for k in kinds):
        return
    if len(kinds) == 1 and isinstance(kinds[0], Options):
        raise InvalidSettingError(
            f"unknown {name} {value!r}; choose one of: {', '.join(kinds[0].values)}"
        )
    what = " or ".join(k.describe() for k in kinds)
    raise InvalidSettingError(f"{name} must be {what}, got {value!r}")
