"""Convergence plots: the loss against epoch and against wall time, one line per run.

matplotlib is a dependency of daskgd (the demo's plot); it is imported only when
:func:`plot_history` is called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from daskgd.history import history_to_dict

__all__ = ["plot_history"]


def _runs(obj: Any, labels: Sequence[str] | None) -> list[tuple[str, dict[str, list[Any]]]]:
    """(label, columns) for each run in ``obj`` (one run, or a list/dict of runs)."""
    if isinstance(obj, Mapping) and obj and "loss" not in obj:
        items = list(obj.items())  # {"sync": result, "async": result}; columns have "loss"
    elif isinstance(obj, Sequence) and obj and not isinstance(obj[0], Mapping):
        items = [(None, o) for o in obj]  # [result, estimator, ...]
    else:
        items = [(None, obj)]
    if labels is not None and len(labels) != len(items):
        raise ValueError(f"got {len(labels)} labels for {len(items)} runs")
    runs = []
    for i, (key, o) in enumerate(items):
        cols = history_to_dict(o)
        if "loss" not in cols:
            raise ValueError(f"run {i} has no 'loss' in its history (keys: {sorted(cols)})")
        label = labels[i] if labels is not None else key
        if label is None:
            label = getattr(o, "mode", None) or getattr(o, "label", None) or f"run {i}"
        runs.append((str(label), cols))
    return runs


def _split(cols: dict[str, list[Any]]) -> list[tuple[str, dict[str, list[Any]]]]:
    """One-vs-rest estimators record a ``run`` column: one line per binary fit."""
    if "run" not in cols:
        return [("", cols)]
    out = []
    for r in dict.fromkeys(cols["run"]):
        idx = [i for i, v in enumerate(cols["run"]) if v == r]
        out.append((f" {r}", {k: [v[i] for i in idx] for k, v in cols.items()}))
    return out


def plot_history(
    result: Any, ax: Any = None, *, labels: Sequence[str] | None = None, logy: bool = True
) -> Any:
    """Plot the training loss against epoch and against wall time.

    Parameters
    ----------
    result : FitResult, fitted estimator, history, or a list/dict of them
        One run, or several (e.g. ``{"sync": r1, "async": r2}`` or ``[r1, r2]``): one line
        per run in each panel.
    ax : matplotlib Axes or a pair of Axes, optional
        Two Axes: loss per epoch in the first, per second in the second. One Axes: loss per
        epoch only. None: a new figure with two panels.
    labels : list of str, optional
        Legend labels, one per run (default: the dict keys, the run's ``mode``, or "run i").
    logy : bool, default True
        Logarithmic loss axis (when every loss is positive).

    Returns
    -------
    numpy.ndarray of matplotlib Axes
        The axes drawn on; ``axes[0].figure.savefig("loss.png")`` saves the plot.

    Raises
    ------
    ImportError
        If matplotlib is not installed.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> axes = plot_history({"sync": [{"epoch": 1, "loss": 1.0, "time": 0.1},
    ...                               {"epoch": 2, "loss": 0.5, "time": 0.2}]})
    >>> [a.get_xlabel() for a in axes]
    ['epoch', 'wall time (s)']
    """
    try:
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError as exc:
        raise ImportError(
            "plot_history needs matplotlib, a dependency of daskgd: pip install matplotlib"
        ) from exc
    runs = _runs(result, labels)
    if ax is None:
        _fig, ax = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    axes = np.atleast_1d(np.asarray(ax, dtype=object)).ravel()
    if len(axes) not in (1, 2):
        raise ValueError(f"ax must be one Axes or two, got {len(axes)}")
    positive = True
    for label, cols in runs:
        for suffix, part in _split(cols):
            loss = [np.nan if v is None else float(v) for v in part["loss"]]
            positive &= all(v > 0 for v in loss if np.isfinite(v))
            epochs = part.get("epoch") or list(range(1, len(loss) + 1))
            (line,) = axes[0].plot(epochs, loss, label=label + suffix)
            if len(axes) == 2 and part.get("time"):
                axes[1].plot(part["time"], loss, color=line.get_color(), label=label + suffix)
    axes[0].set_xlabel("epoch")
    if len(axes) == 2:
        axes[1].set_xlabel("wall time (s)")
    for a in axes:
        a.set_ylabel("training loss (objective)")
        if logy and positive:
            a.set_yscale("log")
        a.grid(True, alpha=0.3)
        a.legend()
    return axes
