"""The progress bar shown while a fit runs: epoch, loss, updates per second, staleness.

The driver calls :meth:`ProgressBar.update` once per finished epoch with the epoch's history
entry. tqdm is optional (``pip install tqdm``, or ``pip install ".[progress]"`` in the
checkout): without it, or when switched off, the bar does nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["ProgressBar", "progress_enabled"]


def progress_enabled(verbose: Any) -> bool:
    """Whether to show a bar: ``verbose="auto"`` (or None) means "when stderr is a terminal".

    Parameters
    ----------
    verbose : int, bool, "auto" or None
        0/False: never; a positive int/True: always; "auto"/None: when stderr is a tty.

    Examples
    --------
    >>> progress_enabled(0), progress_enabled(1)
    (False, True)
    """
    if verbose is None or verbose == "auto":
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())
    if isinstance(verbose, bool | int):
        return verbose > 0
    raise ValueError(f"verbose must be an integer >= 0 or 'auto', got {verbose!r}")


class ProgressBar:
    """A tqdm bar over epochs that shows the loss, updates/s and staleness.

    Parameters
    ----------
    total : int or None
        Most epochs the fit can run (``max_iter``); None for unknown.
    enabled : bool, default True
        False makes every method a no-op.
    desc : str, default "daskgd"
        Label at the left of the bar.
    file : file-like, optional
        Where the bar is drawn (default: stderr).

    Examples
    --------
    >>> bar = ProgressBar(3, enabled=False)
    >>> bar.update({"epoch": 1, "loss": 0.5, "time": 0.1, "updates": 4})
    >>> bar.postfix
    {'loss': '0.5', 'upd/s': '40', 'stale': '0'}
    >>> bar.close()
    """

    def __init__(
        self, total: int | None, *, enabled: bool = True, desc: str = "daskgd", file: Any = None
    ) -> None:
        self.postfix: dict[str, str] = {}
        self._last_time = 0.0
        self._bar: Any = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # the bar is a nicety: no tqdm, no bar
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=desc, unit="epoch", file=file, leave=True)

    def update(self, entry: Mapping[str, Any]) -> None:
        """Advance by one epoch, given that epoch's history entry."""
        t = float(entry.get("time") or 0.0)
        dt = t - self._last_time
        self._last_time = t
        updates = entry.get("updates") or 0
        rate = updates / dt if dt > 0 else 0.0
        self.postfix = {
            "loss": f"{float(entry.get('loss', float('nan'))):.4g}",
            "upd/s": f"{rate:.0f}",
            "stale": f"{float(entry.get('staleness_mean') or 0.0):.2g}",
        }
        if self._bar is not None:
            self._bar.set_postfix(self.postfix, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        """Close the bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
