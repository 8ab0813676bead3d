"""Limited-memory BFGS driven one function evaluation at a time.

The parameter server cannot call an objective: each synchronous round of the
workers evaluates the loss and gradient at the published parameters and hands
them back. :class:`LBFGS` is therefore a state machine: :meth:`LBFGS.tell` takes
the objective and gradient at the point it last proposed and returns the next
point to evaluate. Between accepted iterates it backtracks along the search
direction until the Armijo condition holds (with a safeguarded quadratic
interpolation of the step, using the loss the kernels return), so every round
costs one pass over the data and no round is wasted on a separate line search.

Only for full-batch, smooth objectives: an L1 penalty or mini-batch gradients
break its assumptions, and the callers refuse them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from daskgd.objective.finite import dot

__all__ = ["FLOAT32_PAIRS", "LBFGS", "backtrack_step", "rounding_level"]

#: Parameters from which :class:`LBFGS` keeps its correction pairs in float32.
FLOAT32_PAIRS = 2**20


def backtrack_step(f: float, f0: float, slope: float, t: float) -> float:
    """The next trial step after step ``t`` along a direction of slope ``slope`` from an
    objective ``f0`` gave ``f`` without enough decrease: the minimum of the quadratic
    through them (halving when it has none), kept within ``[0.1 t, 0.5 t]``; a non-finite
    ``f`` cuts the step tenfold."""
    if np.isfinite(f):
        denom = 2.0 * (f - f0 - slope * t)
        t_new = -slope * t * t / denom if denom > 0 else 0.5 * t
    else:
        t_new = 0.1 * t
    return float(np.clip(t_new, 0.1 * t, 0.5 * t))


def rounding_level(f: float, f0: float, gabs: float, gabs0: float) -> bool:
    """Whether a step from objective ``f0`` to ``f`` is accepted at the rounding level:
    the change is within 16 roundings of ``f0`` and the gradient's 1-norm went down from
    ``gabs0`` to ``gabs`` (see :meth:`LBFGS._rounding_level`)."""
    eps = 16 * np.finfo(np.float64).eps * max(abs(f0), 1e-300)
    return bool(abs(f - f0) <= eps) and gabs < gabs0


@dataclass
class LBFGS:
    """L-BFGS with an Armijo backtracking line search, one evaluation per call.

    Parameters
    ----------
    memory : int, default=10
        Number of correction pairs ``(s, y)`` kept.
    c1 : float, default=1e-4
        Sufficient-decrease constant of the Armijo condition.
    max_backtracks : int, default=30
        Backtracking steps tried along one direction before the memory is reset and
        the method restarts from steepest descent.
    h0 : ndarray or None, default=None
        A positive diagonal that the initial inverse-Hessian approximation divides by
        (a preconditioner, e.g. the Hessian's diagonal at the start): ``H0 = gamma /
        h0`` with ``gamma = s.y / (y.(y / h0))`` (Nocedal and Wright, "Numerical
        Optimization", 2006, 7.2): the iterates of L-BFGS on the variables scaled by
        ``sqrt(h0)`` (but for the curvature-pair filter and the rounding-level test,
        which use the unscaled norms). Its first direction (and after a restart) is
        the diagonal Newton step ``-g / h0``, tried at length 1. None: the identity,
        and a first step of ``min(1, 1 / |g|_1)`` along ``-g``.

    Notes
    -----
    From :data:`FLOAT32_PAIRS` parameters on (1-D points), the correction pairs are kept
    in float32: half the memory (``2 m d`` numbers: 335 MB instead of 671 MB at
    ``d = 2^22``) and half the bytes the recursion reads, its sums still in float64.
    The pairs only shape the inverse-Hessian model; the points, the gradients and the
    line search's tests stay in float64.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.diag([1.0, 10.0]); b = np.array([1.0, 1.0])
    >>> opt = LBFGS()
    >>> x = np.zeros(2)
    >>> for _ in range(30):
    ...     x = opt.tell(x, 0.5 * x @ A @ x - b @ x, A @ x - b)
    >>> np.allclose(x, [1.0, 0.1])
    True
    """

    memory: int = 10
    c1: float = 1e-4
    max_backtracks: int = 30
    h0: np.ndarray | None = field(default=None, repr=False)
    _s: deque = field(default_factory=deque, repr=False)
    _y: deque = field(default_factory=deque, repr=False)
    _x: np.ndarray | None = field(default=None, repr=False)  # last accepted point
    _f: float = field(default=np.inf, repr=False)
    _g: np.ndarray | None = field(default=None, repr=False)
    _p: np.ndarray | None = field(default=None, repr=False)  # search direction
    _t: float = field(default=1.0, repr=False)  # trial step along _p
    _backtracks: int = field(default=0, repr=False)
    _hinv: tuple | None = field(default=None, repr=False)  # (h0, 1 / h0)
    #: float64 arrays the next pairs are computed into before new ones are made (the
    #: pairs the memory dropped, or arrays a caller made ready)
    spares: list = field(default_factory=list, repr=False)
    _ops: _Mixed | None = field(default=None, repr=False)  # the pairs' arithmetic
    iterations: int = 0

    def tell(self, x: np.ndarray, f: float, g: np.ndarray, keep: bool = False) -> np.ndarray:
        """Take ``f`` and its gradient ``g`` at ``x``; return the next point to evaluate.

        ``x`` must be the point this method returned last (or the starting point on
        the first call). The returned array is new; ``x`` and ``g`` are not kept unless
        ``keep`` (two copies fewer, which count at millions of parameters): then the
        caller never changes ``x``, and ``g`` becomes this object's, whose memory holds
        later vectors once it is done with it (the caller does not read ``g`` again;
        :meth:`own_copy` makes it in such memory).
        """
        x = np.asarray(x, dtype=np.float64)
        if not keep:
            x = x.copy()
            g_in, g = g, self.take(x.shape)
            np.copyto(g, np.reshape(g_in, x.shape))
        g = np.asarray(g, dtype=np.float64)
        x_k, g_k, p = self._x, self._g, self._p
        if x_k is None or g_k is None or p is None:
            return self._accept(x, float(f), g, first=True)
        slope = dot(g_k, p)
        if np.isfinite(f) and (
            f <= self._f + self.c1 * self._t * slope or self._rounding_level(f, g, g_k)
        ):
            # into arrays this process already holds where it can: a new array of
            # millions of parameters costs its page faults (on some virtual machines
            # 30x the subtraction itself)
            dtype = _pair_dtype(x.shape)
            s, y = self.take(x.shape, dtype), self.take(x.shape, dtype)
            np.subtract(x, x_k, out=s, casting="same_kind")
            np.subtract(g, g_k, out=y, casting="same_kind")
            self._give(g_k)  # done with: g is the new one
            pair_dot = self._mixed().dot  # as in the two-loop recursion, either dtype
            sy, norms = pair_dot(s, y), np.sqrt(pair_dot(s, s) * pair_dot(y, y))
            if sy > 1e-10 * norms:
                self._s.append(s)
                self._y.append(y)
                if len(self._s) > self.memory:
                    self._give(self._s.popleft(), self._y.popleft())
            else:
                self._give(s, y)
            return self._accept(x, float(f), g)
        # Not enough decrease: backtrack, interpolating the step where possible.
        self._give(g)  # the trial point's gradient is done with
        self._backtracks += 1
        if self._backtracks > self.max_backtracks:
            self._forget()
            return self._accept(x_k, self._f, g_k, first=True)
        self._t = backtrack_step(f, self._f, slope, self._t)
        return x_k + self._t * p

    def _forget(self) -> None:
        """Drop every pair (a restart); their arrays become spares."""
        self._give(*self._s, *self._y)
        self._s.clear()
        self._y.clear()

    def _give(self, *arrays: np.ndarray) -> None:
        """Keep arrays done with as spares, up to the three a round takes (the rest freed)."""
        room = 3 - len(self.spares)
        self.spares += list(arrays[: max(room, 0)])

    def _mixed(self) -> _Mixed:
        """The pairs' arithmetic (its buffer made once)."""
        if self._ops is None:
            self._ops = _Mixed()
        return self._ops

    def own_copy(self, a: np.ndarray) -> np.ndarray:
        """A float64 copy of ``a`` in memory this object is done with, where it has some
        (to hand to :meth:`tell` with ``keep``)."""
        out = self.take((a.size,)).reshape(a.shape)
        np.copyto(out, a)
        return out

    def take(self, shape: tuple, dtype: type = np.float64) -> np.ndarray:
        """An array of ``shape`` and ``dtype`` to compute a vector into (its values are
        arbitrary): a spare one (a dropped pair's, a gradient done with), else a new one."""
        for i, a in enumerate(self.spares):
            if a.shape == shape and a.dtype == dtype:
                return self.spares.pop(i)
        return np.empty(shape, dtype=dtype)

    def _rounding_level(self, f: float, g: np.ndarray, g_k: np.ndarray) -> bool:
        # Near the optimum the loss changes by less than its own rounding error, so the
        # Armijo test can no longer tell a good step from a bad one and L-BFGS would stall
        # short of a tight gradient tolerance. There, as scikit-learn's Newton solvers do,
        # a step is accepted when the gradient's 1-norm decreases.
        return rounding_level(f, self._f, float(np.abs(g).sum()), float(np.abs(g_k).sum()))

    def _accept(self, x: np.ndarray, f: float, g: np.ndarray, first: bool = False) -> np.ndarray:
        self._x, self._f, self._g = x, f, g
        self._backtracks = 0
        self.iterations += 0 if first else 1
        # the last direction's array is done with: the new one is computed into it
        p = self._two_loop(g, out=self._p)
        np.negative(p, out=p)
        if not dot(g, p) < 0:  # not a descent direction: restart
            self._forget()
            p = -self._two_loop(g)  # steepest descent (in the scaled variables)
        self._p = p
        if self._s or self.h0 is not None:
            # with a preconditioner the first direction is the diagonal Newton step
            # -g / h0, whose natural length is 1: on click-log-like data 9 passes to
            # 1e-3 instead of 11 (the 1/||g||_1 step below barely moves, and one
            # backtrack is cheaper than that wasted pass)
            self._t = 1.0
        else:
            gnorm = float(np.abs(g).sum())
            self._t = 1.0 if gnorm == 0 else min(1.0, 1.0 / gnorm)
        out = p * self._t
        out += x
        return out

    def _inverse(self) -> np.ndarray:
        """``1 / h0``, computed once per ``h0``."""
        assert self.h0 is not None
        if self._hinv is None or self._hinv[0] is not self.h0:
            self._hinv = (self.h0, 1.0 / self.h0)
        return self._hinv[1]

    def _two_loop(self, g: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        # in place, by blocks (_Mixed): at millions of parameters each temporary array
        # costs its page faults, and the recursion would otherwise make 2m of them; and
        # not on BLAS's threads, whose helpers spin after each call on the scheduler
        if out is not None and out.shape == g.shape and out.flags.c_contiguous:
            np.copyto(out, g)
            q = out
        else:
            q = g.copy()
        alphas = []
        k = self._mixed()  # float32 or float64 pairs, float64 sums and q
        for s, y in zip(reversed(self._s), reversed(self._y), strict=True):
            rho = 1.0 / k.dot(y, s)
            a = rho * k.dot(s, q)
            k.axpy(-a, y, q)
            alphas.append((rho, a))
        hinv = None if self.h0 is None else self._inverse()
        if self._s:
            s, y = self._s[-1], self._y[-1]
            q *= k.dot(s, y) / k.dot(y, y, hinv)
        if hinv is not None:
            q *= hinv
        for (s, y), (rho, a) in zip(
            zip(self._s, self._y, strict=True), reversed(alphas), strict=True
        ):
            b = rho * k.dot(y, q)
            k.axpy(a - b, s, q)
        return q

    def state(self) -> dict:
        """The optimizer state as plain arrays and numbers (for checkpoints)."""
        return {
            "s": np.array(self._s),
            "y": np.array(self._y),
            "x": self._x,
            "f": self._f,
            "g": self._g,
            "p": self._p,
            "t": self._t,
            "backtracks": self._backtracks,
            "iterations": self.iterations,
        }

    def load_state(self, state: dict, n: int) -> None:
        """Restore what :meth:`state` returned (arrays may come back as 0-d arrays).

        Parameters
        ----------
        state : dict
            The output of :meth:`state`; missing entries (``x``, ``g``, ``p`` before the
            first call) stay unset.
        n : int
            Number of parameters.

        Raises
        ------
        ValueError
            When the arrays do not fit ``n`` parameters.
        """

        def vec(key: str) -> np.ndarray | None:
            if state.get(key) is None:
                return None
            v = np.asarray(state[key], dtype=np.float64).ravel()
            if v.shape != (n,):
                raise ValueError(f"L-BFGS state {key!r} has {v.size} numbers; expected {n}")
            return v.copy()

        pairs = []
        for key in ("s", "y"):
            m = np.asarray(state.get(key, np.zeros((0, n))), dtype=np.float64)
            m = m.reshape(-1, n) if m.size else np.zeros((0, n))
            pairs.append(m)
        if len(pairs[0]) != len(pairs[1]) or len(pairs[0]) > self.memory:
            raise ValueError("L-BFGS state: s and y must hold the same number of pairs <= memory")
        dtype = _pair_dtype((n,))
        self._s = deque(row.astype(dtype) for row in pairs[0])
        self._y = deque(row.astype(dtype) for row in pairs[1])
        self._x, self._g, self._p = vec("x"), vec("g"), vec("p")
        self._f = float(state.get("f", np.inf))
        self._t = float(state.get("t", 1.0))
        self._backtracks = int(state.get("backtracks", 0))
        self.iterations = int(state.get("iterations", 0))


def _pair_dtype(shape: tuple) -> type:
    """The dtype the correction pairs of points of ``shape`` are kept in (float32 for 1-D
    points of :data:`FLOAT32_PAIRS` entries or more)."""
    return np.float32 if len(shape) == 1 and shape[0] >= FLOAT32_PAIRS else np.float64


class _Mixed:
    """Products of the pairs (float32 or float64 vectors) with float64 ones, summed in
    float64, by blocks through one reused float64 buffer: numpy alone would cast a whole
    float32 vector to a float64 temporary (page faults at millions of parameters), its
    float32 dot products accumulate in float32, and its float64 ones run on BLAS's threads
    (whose helpers then spin for about 0.1 s, on the scheduler's machine)."""

    BLOCK = 65536

    def __init__(self) -> None:
        self.buf = np.empty(self.BLOCK)

    def dot(self, a: np.ndarray, b: np.ndarray, w: np.ndarray | None = None) -> float:
        """``sum_i a_i b_i (w_i)`` in float64."""
        total = 0.0
        for lo in range(0, a.size, self.BLOCK):
            t = self.buf[: min(self.BLOCK, a.size - lo)]
            np.multiply(a[lo : lo + t.size], b[lo : lo + t.size], out=t, dtype=np.float64)
            if w is not None:
                t *= w[lo : lo + t.size]
            total += float(t.sum())
        return total

    def axpy(self, alpha: float, x: np.ndarray, y: np.ndarray) -> None:
        """``y += alpha * x`` in place (``y`` float64)."""
        for lo in range(0, x.size, self.BLOCK):
            t = self.buf[: min(self.BLOCK, x.size - lo)]
            np.multiply(x[lo : lo + t.size], alpha, out=t, dtype=np.float64)
            y[lo : lo + t.size] += t
