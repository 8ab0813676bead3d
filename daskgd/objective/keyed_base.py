"""The base of the per-coordinate ("key-value") update rules of sparse models.

With sparse data a mini-batch gradient is non-zero at a few coordinates only (the
columns its rows touch, the *keys*). A keyed rule keeps its parameters and its state in
arrays allocated once, and each :meth:`KeyedOptimizer.apply` reads and writes only the
rows of the touched keys (and the intercept), in time and memory proportional to the
number of keys, never to ``d``. Pulls read the current coefficients at some keys
(:meth:`~KeyedOptimizer.weights`); :meth:`~KeyedOptimizer.dense` builds the whole
``(d + 1,)`` / ``(d + 1, k)`` parameter array (the layout of
:mod:`daskgd.objective.optimizers`: the coefficients, then the intercept row).

The state is a dict of named numpy arrays (scalars are 0-d arrays, so that they too are
updated in place); :meth:`~KeyedOptimizer.export_state` copies it for a checkpoint and
:meth:`~KeyedOptimizer.import_state` rebuilds it. Each array has a *kind*:

- ``coef``: one row per coefficient, ``(d,)`` or ``(d, k)``, in the state's dtype;
- ``stamp``: one float64 per coefficient row, ``(d,)`` (bookkeeping of lazy updates);
- ``bias``: the intercept's share, ``()`` or ``(k,)``, float64;
- ``scalar``: one float64, ``()``.

Plain numpy; it runs where the parameter server runs, and does no networking.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

__all__ = ["BLOCK_ROWS", "STATE_DTYPES", "KeyedOptimizer", "check_keys", "row_blocks"]

#: The dtypes a keyed rule's per-coefficient arrays may have.
STATE_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))

#: Rows handled at once by the O(d) passes (:meth:`KeyedOptimizer.dense`, a rescale), so
#: that their temporaries stay a few MB whatever ``d`` is.
BLOCK_ROWS = 1 << 16


def row_blocks(d: int) -> Iterator[slice]:
    """Slices that cover ``range(d)`` in blocks of :data:`BLOCK_ROWS` rows.

    Examples
    --------
    >>> len(list(row_blocks(3 * BLOCK_ROWS + 1)))
    4
    """
    for start in range(0, d, BLOCK_ROWS):
        yield slice(start, min(start + BLOCK_ROWS, d))


def check_keys(keys: Any, d: int) -> np.ndarray:
    """Validate the keys of a push or a pull: integers, strictly increasing, in ``[0, d)``.

    Parameters
    ----------
    keys : array_like of int
        The touched coordinates (columns), sorted and without repeats.
    d : int
        The number of coefficients of the model.

    Returns
    -------
    ndarray
        ``keys`` as a 1-D integer array (not copied when it already is one).

    Raises
    ------
    ValueError
        When ``keys`` is not 1-D, not integer, not strictly increasing, or out of range.

    Examples
    --------
    >>> check_keys([0, 3, 7], d=8).tolist()
    [0, 3, 7]
    """
    keys = np.asarray(keys)
    if keys.ndim != 1 or not (keys.dtype.kind in "iu" or keys.size == 0):
        raise ValueError(
            f"keys must be a 1-D array of integers, got shape {keys.shape} and dtype {keys.dtype}"
        )
    if keys.size == 0:
        return keys.astype(np.int64)
    # repeated keys would lose updates in fancy-indexed writes: refuse them
    if keys.size > 1:
        bad = np.flatnonzero(keys[1:] <= keys[:-1])
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"keys must be strictly increasing (sorted, no repeats): keys[{i}] = "
                f"{int(keys[i])} is followed by keys[{i + 1}] = {int(keys[i + 1])}; "
                "pass np.unique(keys) and the gradient summed per key"
            )
    if keys[0] < 0 or keys[-1] >= d:
        raise ValueError(
            f"keys must lie in [0, {d}) for a model of {d} coefficients; got keys from "
            f"{int(keys[0])} to {int(keys[-1])}"
        )
    return keys


class KeyedOptimizer:
    """A per-coordinate update rule for sparse gradients (the base of the keyed rules).

    A subclass declares its state arrays (:meth:`fields`) and implements
    :meth:`_update` (one step at some keys), :meth:`_coef` (the coefficients at some
    rows), :meth:`_bias` (the intercept) and :meth:`_start` (the state that stands for
    given parameters). Everything else is here.
    """

    name: ClassVar[str] = ""
    fit_intercept: bool

    # -- what a subclass provides --------------------------------------------------------

    def fields(self) -> dict[str, str]:
        """The state's arrays: name -> kind (``coef``, ``stamp``, ``bias``, ``scalar``)."""
        raise NotImplementedError

    def _update(
        self,
        state: dict[str, np.ndarray],
        keys: np.ndarray,
        grad: np.ndarray,
        grad_b: np.ndarray,
        t: int,
        epoch: int,
        lr_scale: float,
    ) -> None:
        """One step at ``keys`` (validated), ``grad`` float64 shaped like their rows."""
        raise NotImplementedError

    def _coef(self, state: dict[str, np.ndarray], rows: np.ndarray | slice) -> np.ndarray:
        """The current coefficients at ``rows`` (keys or a block), float64."""
        raise NotImplementedError

    def _bias(self, state: dict[str, np.ndarray]) -> np.ndarray:
        """The current intercept, float64, ``()`` or ``(k,)``."""
        raise NotImplementedError

    def _start(self, state: dict[str, np.ndarray], params: np.ndarray | None) -> None:
        """Set the fresh (zero) state to stand for ``params`` (None: all zero)."""
        raise NotImplementedError

    # -- the interface -------------------------------------------------------------------

    def init_state(
        self,
        d: int,
        k: int | None = None,
        dtype: Any = np.float64,
        params: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Allocate the state of a model of ``d`` coefficients (O(d), once).

        Parameters
        ----------
        d : int
            Number of coefficients (columns of the data).
        k : int, optional
            Number of columns of the parameters (multinomial: one per class); None for
            one coefficient vector.
        dtype : {np.float64, np.float32}, default=np.float64
            Dtype of the per-coefficient arrays (float32 halves the memory of a large
            model; the scalars, the intercept and the bookkeeping stay float64).
        params : ndarray, optional
            Start from these parameters, ``(d + 1,)`` or ``(d + 1, k)`` (a warm start);
            zero when not given. With ``fit_intercept=False`` their intercept row is the
            fixed intercept.

        Returns
        -------
        dict of str to ndarray
            The state, updated in place by :meth:`apply`.

        Raises
        ------
        ValueError
            On a bad ``d``, ``k``, ``dtype`` or ``params``.
        """
        if not (isinstance(d, int | np.integer) and d >= 1):
            raise ValueError(f"d (the number of coefficients) must be an integer >= 1, got {d!r}")
        if k is not None and not (isinstance(k, int | np.integer) and k >= 1):
            raise ValueError(f"k (columns of the parameters) must be None or >= 1, got {k!r}")
        dt = np.dtype(dtype)
        if dt not in STATE_DTYPES:
            raise ValueError(f"the state dtype must be float64 or float32, got {dt}")
        d = int(d)
        k = None if k is None else int(k)
        tail = () if k is None else (k,)
        if params is not None:
            params = np.asarray(params, dtype=np.float64)
            if params.shape != (d + 1, *tail):
                raise ValueError(
                    f"params has shape {params.shape}; a model of d={d} coefficients "
                    f"{'and k=' + str(k) + ' columns ' if k else ''}needs {(d + 1, *tail)} "
                    "(the coefficients, then the intercept row)"
                )
        shapes = {"coef": (d, *tail), "stamp": (d,), "bias": tail, "scalar": ()}
        state = {
            name: np.zeros(shapes[kind], dtype=dt if kind == "coef" else np.float64)
            for name, kind in self.fields().items()
        }
        self._start(state, params)
        return state

    def shape(self, state: dict[str, np.ndarray]) -> tuple[int, int | None]:
        """``(d, k)`` of the model the state holds (``k`` None for one vector)."""
        name = next(n for n, kind in self.fields().items() if kind == "coef")
        coef = state[name]
        return coef.shape[0], (coef.shape[1] if coef.ndim == 2 else None)

    def apply(
        self,
        state: dict[str, np.ndarray],
        keys: Any,
        grad_keys: Any,
        grad_b: Any,
        t: int,
        epoch: int = 0,
        lr_scale: float = 1.0,
    ) -> None:
        """One update from a sparse mean gradient, in place, in O(len(keys)).

        Call it once per server step, in the order of ``t``: a state whose keys a step
        does not touch (a parameter shard) still gets the call, with no keys, as the
        penalty of ``sgd`` (its weight scale) acts on every coefficient at every step.

        Parameters
        ----------
        state : dict
            From :meth:`init_state` or :meth:`import_state`; changed in place.
        keys : array_like of int
            The touched coordinates, strictly increasing, in ``[0, d)``.
        grad_keys : array_like
            The mean data gradient at ``keys``, ``(len(keys),)`` or ``(len(keys), k)``;
            zero at every other coordinate.
        grad_b : float or array_like or None
            The intercept's gradient, a number or ``(k,)``; None reads as zero (and it is
            ignored with ``fit_intercept=False``).
        t : int
            Number of updates applied so far (for schedules and bias corrections).
        epoch : int, default=0
            Current epoch, for step schedules.
        lr_scale : float, default=1.0
            Extra factor on the learning rate (staleness-aware async mode).

        Raises
        ------
        ValueError
            On bad keys or a gradient of the wrong shape; nothing is changed then.
        """
        d, k = self.shape(state)
        keys = check_keys(keys, d)
        tail = () if k is None else (k,)
        grad = np.asarray(grad_keys, dtype=np.float64)
        if grad.shape != (keys.size, *tail):
            raise ValueError(
                f"grad_keys has shape {grad.shape}; for {keys.size} keys of a model with "
                f"parameters of shape {(d + 1, *tail)} it must be {(keys.size, *tail)}"
            )
        gb = np.zeros(tail) if grad_b is None else np.asarray(grad_b, dtype=np.float64)
        if gb.shape != tail:
            raise ValueError(
                f"grad_b has shape {gb.shape}; the intercept of this model has shape {tail}"
            )
        self._update(state, keys, grad, gb, int(t), int(epoch), float(lr_scale))

    def weights(self, state: dict[str, np.ndarray], keys: Any) -> np.ndarray:
        """The current coefficients at ``keys`` (what a worker pulls), O(len(keys)).

        Returns
        -------
        ndarray
            A fresh float64 array, ``(len(keys),)`` or ``(len(keys), k)``.
        """
        keys = check_keys(keys, self.shape(state)[0])
        return np.array(self._coef(state, keys), dtype=np.float64)

    def intercept(self, state: dict[str, np.ndarray]) -> float | np.ndarray:
        """The current intercept: a float, or a fresh ``(k,)`` array."""
        b = self._bias(state)
        return float(b) if b.ndim == 0 else np.array(b, dtype=np.float64)

    def dense(self, state: dict[str, np.ndarray]) -> np.ndarray:
        """The whole parameter array, ``(d + 1,)`` or ``(d + 1, k)``, float64 (O(d)).

        For the final model, checkpoints of the parameters and dense pulls; the state is
        not changed.
        """
        d, k = self.shape(state)
        out = np.empty((d + 1,) if k is None else (d + 1, k))
        for rows in row_blocks(d):
            out[rows] = self._coef(state, rows)
        out[d] = self._bias(state)
        return out

    def export_state(self, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The state as named arrays, copied (for checkpoints); later steps do not change them."""
        return {name: np.array(state[name]) for name in self.fields()}

    def import_state(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rebuild the state that :meth:`export_state` wrote (copies; the dtype is kept).

        Raises
        ------
        ValueError
            When ``arrays`` does not hold this rule's state (other names, shapes that do
            not fit together, another dtype), e.g. a checkpoint of another rule or of the
            same rule with other settings.
        """
        fields = self.fields()
        if set(arrays) != set(fields):
            raise ValueError(
                f"keyed optimizer {self.name!r} with these settings keeps state "
                f"{sorted(fields)}, the checkpoint has {sorted(arrays)}"
            )
        coef_name = next(n for n, kind in fields.items() if kind == "coef")
        coef = np.asarray(arrays[coef_name])
        if coef.ndim not in (1, 2) or coef.shape[0] < 1 or coef.dtype not in STATE_DTYPES:
            raise ValueError(
                f"state {coef_name!r} must be a (d,) or (d, k) float64/float32 array, got "
                f"shape {coef.shape} and dtype {coef.dtype}"
            )
        d, tail = coef.shape[0], coef.shape[1:]
        shapes = {"coef": (d, *tail), "stamp": (d,), "bias": tail, "scalar": ()}
        state = {}
        for name, kind in fields.items():
            a = np.asarray(arrays[name])
            dt = coef.dtype if kind == "coef" else np.dtype(np.float64)
            if a.shape != shapes[kind] or a.dtype != dt:
                raise ValueError(
                    f"state {name!r} has shape {a.shape} and dtype {a.dtype}; with "
                    f"{coef_name!r} of shape {coef.shape} it must have shape "
                    f"{shapes[kind]} and dtype {dt}"
                )
            state[name] = a.copy()
        return state
