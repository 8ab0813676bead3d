"""Newton's method driven one evaluation (loss, gradient and Hessian) at a time.

The parameter server cannot call the objective: each synchronous round of the workers
evaluates, in one pass over their rows, the loss, its gradient and its Hessian
``A^T diag(s * l'') A`` at the published parameters, and the server sums them.
:class:`Newton` is a state machine like :class:`~daskgd.objective.lbfgs.LBFGS`:
:meth:`Newton.tell` takes the mean loss, gradient and Hessian at the point it proposed
last and returns the next point to evaluate. Every trial point of the line search costs
one round, as for L-BFGS.

The objective is the mean loss plus ``alpha * ((1 - l1_ratio)/2 ||w||^2 + l1_ratio ||w||_1)``
(the intercept, the last parameter, is not penalised; without ``fit_intercept`` it stays
where it is). Each step solves the quadratic model of the smooth part:

- without L1: ``(H + l2) p = -g`` by Cholesky on the Jacobi-scaled matrix. A singular
  Hessian (a duplicated or constant column, more columns than rows, a loss with zero
  curvature on part of the rows) gets the minimum-norm step (an eigendecomposition, the
  directions below 1e-10 of the largest left out, as a least-squares solver does); an
  indefinite one gets Levenberg damping ``mu * max(diag(H)) * I``, grown until the
  factorisation holds with pivots above rounding level;
  when no damping up to ``1e4`` helps, the step falls back to a diagonally scaled gradient
  step (counted in :attr:`Newton.fallbacks`), never a silent failure;
- with L1 (lasso, elastic net): the model plus the L1 term is minimised by cyclic coordinate
  descent on the ``(d + 1) x (d + 1)`` matrix with an active set, as glum's IRLS-CD does:
  exact zeros.

An Armijo backtracking line search on the full objective (L1 included, with the model's
first-order decrease ``g.p + l1 (||w + p||_1 - ||w||_1)`` as the slope) guarantees
descent; a trial point with a non-finite loss is backed off from. On a quadratic objective
(squared error) the full step is exact and always passes the test.

A pass with the Hessian costs about five passes without it at d = 100 (measured on 500,000
rows a worker; see :mod:`daskgd.objective.curvature`), and near the optimum the Hessian
hardly changes. So the method asks for it only when it pays (:attr:`Newton.want_hessian`,
read by the server, which tells the workers): between fresh Hessians, the last one is
carried forward by BFGS updates from the gradients' change (``y = g_new - g_old`` along the
step ``s``), which keeps it exact where it was measured and corrects it along the directions
the iterates moved. A fresh Hessian is asked for at the next point unless the last step was
a full step that shrank the Newton decrement's square root by at least
:func:`reuse_contraction`: a gradient pass that gains that much gains as much per unit of
work as a Hessian pass. The point evaluated, the line search and the stop rules are
unchanged; a step taken with a carried-forward matrix is still a descent direction (the
matrix stays positive definite: an update whose curvature ``s.y`` is not positive is
skipped).

This module is plain numpy (the scheduler imports it); the crossover
:data:`NEWTON_MAX_FEATURES` and the rule of ``optimizer="auto"`` (:func:`choose_optimizer`)
live in :mod:`daskgd.objective.choice`, the rule for asking for a Hessian and the BFGS update
in :mod:`daskgd.objective.curvature` (all re-exported here). The Hessian is summed and
solved in one place, where the parameters live: a model split across several servers would
keep the solve with the summed blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from daskgd.objective.choice import NEWTON_MAX_FEATURES, choose_optimizer
from daskgd.objective.curvature import (
    NEWTON_CONTRACTION,
    PLAIN_NEWTON_COST,
    ROUNDING_FLOOR,
    bfgs_update,
    loss_resolution,
    reuse_contraction,
)
from daskgd.objective.lbfgs import backtrack_step
from daskgd.objective.quadratic import cholesky_solve, coordinate_descent
from daskgd.objective.regularizers import soft_threshold

__all__ = [
    "NEWTON_MAX_FEATURES",
    "Newton",
    "choose_optimizer",
    "loss_resolution",
    "reuse_contraction",
]

#: Levenberg damping factors tried in turn (relative to the Hessian's largest diagonal).
_DAMPING = (0.0, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4)
#: A squared Cholesky pivot, or an eigenvalue, of the scaled matrix (unit diagonal) below
#: this (relative to the largest eigenvalue) is singular: rounding would be amplified by
#: more than 1e10 along it.
_PIVOT = 1e-10


@dataclass
class Newton:
    """Newton's method with damping and an Armijo line search, one evaluation per call.

    Parameters
    ----------
    l2 : float, default=0.0
        Coefficient of ``||w||^2 / 2`` (``alpha * (1 - l1_ratio)``).
    l1 : float, default=0.0
        Coefficient of ``||w||_1`` (``alpha * l1_ratio``).
    fit_intercept : bool, default=True
        When False, the last parameter (the intercept) is not moved.
    c1 : float, default=1e-4
        Sufficient-decrease constant of the Armijo condition.
    max_backtracks : int, default=30
        Backtracking steps along one direction; then the direction becomes a scaled
        (proximal) gradient step, and after that the search restarts from the last
        accepted point.
    reuse_hessian : bool, default=True
        Ask for the Hessian only when the last step shows it is needed (see the module
        notes); False asks for it at every point (plain Newton). Either way a caller may
        pass the Hessian every time: a fresh one is always used.
    resolution : float, default=16 * machine epsilon
        Relative change of the loss below which two evaluations cannot be told apart
        (then a step is judged by the optimality measure instead of the Armijo test). A
        sum over ``m`` rows is exact to about ``sqrt(m)`` roundings: the server sets
        :func:`loss_resolution` of the rows it summed.
    rows : int or None, default=None
        The most rows a worker evaluates, for the cost of a Hessian pass
        (:func:`reuse_contraction`; None: large data, the round trip does not count). The
        server sets it.

    Attributes
    ----------
    iterations : int
        Accepted steps.
    decrement : float or None
        After :meth:`tell`: when the point told was accepted, the decrease of the
        objective the quadratic model predicts from there (zero at the optimum), else None.
    damping : float
        The Levenberg factor of the last direction (0: none; an indefinite Hessian).
    singular : bool
        Whether the last direction was the minimum-norm step of a singular Hessian.
    model_gradient : ndarray or None
        After a plain Newton step (no L1, damping or fallback): the gradient of the
        quadratic model at the point proposed, ``g + H p`` (the objective's own gradient
        there when the objective is quadratic: squared error).
    fallbacks : int
        Directions that fell back to a gradient step.
    want_hessian : bool
        Whether the next :meth:`tell` needs the Hessian at the point it is given (the
        point the last call returned); when False it may pass ``H=None``.
    hessians : int
        Hessians used so far (the rest of the accepted points reused one).

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[2.0, 0.5], [0.5, 1.0]]); b = np.array([1.0, -1.0])
    >>> opt = Newton()
    >>> x = np.zeros(2)
    >>> for _ in range(3):
    ...     x = opt.tell(x, 0.5 * x @ A @ x - b @ x, A @ x - b, A)
    >>> bool(np.allclose(A @ x, b))
    True
    """

    l2: float = 0.0
    l1: float = 0.0
    fit_intercept: bool = True
    c1: float = 1e-4
    max_backtracks: int = 30
    reuse_hessian: bool = True
    resolution: float = ROUNDING_FLOOR
    rows: int | None = None
    _x: np.ndarray | None = field(default=None, repr=False)  # last accepted point
    _f: float = field(default=np.inf, repr=False)  # the full objective there
    _g: np.ndarray | None = field(default=None, repr=False)  # smooth part's gradient there
    _hdiag: np.ndarray | None = field(default=None, repr=False)  # its Hessian's diagonal
    _p: np.ndarray | None = field(default=None, repr=False)  # search direction
    _slope: float = field(default=0.0, repr=False)  # first-order decrease along _p (< 0)
    _t: float = field(default=1.0, repr=False)
    _backtracks: int = field(default=0, repr=False)
    _gradient: bool = field(default=False, repr=False)  # _p is a gradient step
    _B: np.ndarray | None = field(default=None, repr=False)  # curvature the last step used
    _root: float = field(default=np.inf, repr=False)  # sqrt(decrement) at the last accepted x
    iterations: int = 0
    decrement: float | None = None
    damping: float = 0.0
    singular: bool = False
    fallbacks: int = 0
    want_hessian: bool = True
    hessians: int = 0
    model_gradient: np.ndarray | None = field(default=None, repr=False)

    # -- the objective's pieces -----------------------------------------------------------
    def objective(self, x: np.ndarray, loss: float) -> float:
        """The full objective from the mean loss ``loss`` at ``x``."""
        w = x[:-1]
        return float(loss + 0.5 * self.l2 * float(w @ w) + self.l1 * float(np.abs(w).sum()))

    def _smooth(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        g = np.array(g, dtype=np.float64)
        g[:-1] += self.l2 * x[:-1]
        if not self.fit_intercept:
            g[-1] = 0.0
        return g

    def optimality(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        """The minimum-norm subgradient of the objective at ``x`` (``g``: the smooth
        part's gradient, L2 included): zero exactly at the optimum."""
        out = g.copy()
        if self.l1:
            w, gw = x[:-1], g[:-1]
            nz = w != 0
            out[:-1] = np.where(nz, gw + self.l1 * np.sign(w), soft_threshold(gw, self.l1))
        if not self.fit_intercept:
            out[-1] = 0.0
        return out

    # -- the state machine -----------------------------------------------------------------
    def tell(self, x: np.ndarray, f: float, g: np.ndarray, H: np.ndarray | None) -> np.ndarray:
        """Take the mean loss ``f``, its gradient ``g`` and Hessian ``H`` at ``x``; return
        the next point to evaluate.

        ``x`` must be the point this method returned last (or the starting point on the
        first call); ``f``, ``g`` and ``H`` are the data term only (the penalty is added
        here). ``H`` may be None when :attr:`want_hessian` was False. A non-finite ``f``
        at a trial point backs off along the line (``g`` and ``H`` are not used then). The
        returned array is new.

        Raises
        ------
        ValueError
            On a non-finite loss, gradient or Hessian at the starting point (there is no
            point to back off to), or a missing Hessian that was asked for.
        """
        x = np.array(x, dtype=np.float64)
        n = x.size
        if H is None and (self.want_hessian or self._B is None):
            raise ValueError("Newton: the Hessian at this point was asked for and not given")
        finite = bool(np.isfinite(f)) and bool(np.all(np.isfinite(g)))
        finite = finite and (H is None or bool(np.all(np.isfinite(H))))
        self.decrement = None
        if self._x is None or self._p is None:
            if not finite:
                raise ValueError("Newton: non-finite loss, gradient or Hessian at the start")
            return self._accept(x, f, g, H)
        F = self.objective(x, f) if finite else np.inf
        armijo = finite and F <= self._f + self.c1 * self._t * self._slope
        if armijo or (finite and self._rounding_level(x, F, g)):
            self.iterations += 1
            return self._accept(x, f, g, H)
        self._backtracks += 1
        if self._backtracks > self.max_backtracks:
            # the line search failed along this direction: a gradient step from the last
            # accepted point, then (that failing too) start over from there
            x_k, g_k = self._x, self._g
            assert g_k is not None and self._hdiag is not None
            self._backtracks = 0
            if not self._gradient:
                self._gradient = True
                self.fallbacks += 1
                self._p, self._slope = self._gradient_step(x_k, g_k, self._hdiag)
                self._t = 1.0
                return x_k + self._p
            # give up on this point's directions: propose it again (a zero step passes
            # the Armijo test), so the next call accepts it afresh
            self._gradient = False
            self._p, self._slope, self._t = np.zeros(n), 0.0, 1.0
            return x_k.copy()
        self._t = backtrack_step(F, self._f, self._slope, self._t)
        assert self._x is not None and n == self._x.size
        return self._x + self._t * self._p

    def _rounding_level(self, x: np.ndarray, F: float, g: np.ndarray) -> bool:
        # Near the optimum the objective changes by less than its own rounding error and
        # the Armijo test cannot tell a good step from a bad one (see LBFGS): a step is
        # accepted there when the optimality measure decreases.
        assert self._x is not None and self._g is not None
        eps = self.resolution * max(abs(self._f), 1e-300)
        if abs(F - self._f) > eps:
            return False
        now = np.abs(self.optimality(x, self._smooth(x, g))).sum()
        before = np.abs(self.optimality(self._x, self._g)).sum()
        return bool(now < before)

    def _accept(self, x: np.ndarray, f: float, g: np.ndarray, H: np.ndarray | None) -> np.ndarray:
        gs = self._smooth(x, g)
        n = x.size
        full_step = self._p is not None and self._t == 1.0 and not self._gradient
        if H is not None:
            Hs = np.array(H, dtype=np.float64)
            Hs[np.arange(n - 1), np.arange(n - 1)] += self.l2
            self.hessians += 1
        else:
            assert self._B is not None and self._x is not None and self._g is not None
            Hs = bfgs_update(self._B, x - self._x, gs - self._g)
        self._B = Hs
        self._x, self._f, self._g = x, self.objective(x, f), gs
        self._hdiag = np.diag(Hs).copy()
        self._backtracks, self._t, self._gradient = 0, 1.0, False
        p, slope, model = self._direction(x, gs, Hs)
        self._p, self._slope = p, slope
        self.decrement = max(0.0, -model)
        root = float(np.sqrt(self.decrement))
        plain = not (self.l1 or self.damping or self.singular or self._gradient)
        # a fresh Hessian here, or a carried-forward one that took a full step and shrank
        # the decrement enough: carry it forward again; anything else (a backtrack, slow
        # progress, damping, a fallback) asks for a fresh Hessian at the next point
        q = reuse_contraction(n, self.rows)
        good = H is not None or (full_step and root <= q * self._root)
        reuse = self.reuse_hessian and q > NEWTON_CONTRACTION ** (1 / PLAIN_NEWTON_COST)
        self.want_hessian = not (
            reuse and good and not (self.damping or self.singular or self._gradient)
        )
        self._root = root
        # a plain Newton step with a fresh Hessian: the model's gradient at the new point,
        # which is the objective's own when the objective is quadratic
        self.model_gradient = None
        if plain and H is not None and np.any(p):
            gm = gs + Hs @ p
            gm[len(self._free(n)) :] = 0.0
            self.model_gradient = gm
        return x + p

    # -- directions -------------------------------------------------------------------------
    def _free(self, n: int) -> np.ndarray:
        return np.arange(n if self.fit_intercept else n - 1)

    def _l1_change(self, x: np.ndarray, p: np.ndarray) -> float:
        if not self.l1:
            return 0.0
        return self.l1 * float(np.abs(x[:-1] + p[:-1]).sum() - np.abs(x[:-1]).sum())

    def _direction(self, x: np.ndarray, g: np.ndarray, H: np.ndarray) -> tuple:
        """The step, its first-order decrease (the line search's slope) and the model's
        change ``g.p + p^T H p / 2 + l1 change`` (minus the Newton decrement)."""
        n = x.size
        idx = self._free(n)
        p = np.zeros(n)
        if idx.size == 0:
            return p, 0.0, 0.0
        A = H[np.ix_(idx, idx)]
        b = g[idx]
        diag = np.diag(A).copy()
        top = float(diag.max())
        floor = 1e-12 * top if top > 0 else 1.0
        scale = np.maximum(diag, floor)
        if self.l1:
            pen = idx < n - 1
            p[idx] = coordinate_descent(x[idx], b, A, scale, np.where(pen, self.l1, 0.0))
            self.damping = 0.0
        else:
            step = self._cholesky_step(A, b, scale)
            if step is None:
                self.fallbacks += 1
                self._gradient = True
                step = -b / scale
            p[idx] = step
        slope = float(g @ p) + self._l1_change(x, p)
        if not slope < 0:
            if np.any(self.optimality(x, g)) and not self._gradient:
                # not a descent direction although x is not optimal (rounding in a nearly
                # singular solve): fall back to a scaled gradient step
                self.fallbacks += 1
                self._gradient = True
                p, slope = self._gradient_step(x, g, np.diag(H).copy())
            if not slope < 0:
                return np.zeros(n), 0.0, 0.0  # stationary: the model has no descent
        model = slope + 0.5 * float(p[idx] @ (A @ p[idx]))
        return p, slope, model

    def _cholesky_step(self, A: np.ndarray, b: np.ndarray, scale: np.ndarray):
        # factorised on the Jacobi-scaled matrix: unit diagonal, so the tests are scale-free
        s = 1.0 / np.sqrt(scale)
        S = A * s[:, None] * s[None, :]
        rhs = -b * s
        self.singular = False
        try:
            L = np.linalg.cholesky(S)
            if float(np.min(np.diag(L))) ** 2 >= _PIVOT:
                self.damping = 0.0
                return cholesky_solve(L, rhs) * s
        except np.linalg.LinAlgError:
            pass
        lam, V = np.linalg.eigh(S)
        top = float(lam.max())
        if top > 0 and float(lam.min()) >= -_PIVOT * top:
            # positive semi-definite and singular to rounding (duplicated or constant
            # columns, more columns than rows): the minimum-norm step, the directions the
            # data do not determine left out (as a least-squares solver does), so rounding
            # is not amplified into them
            keep = lam > _PIVOT * top
            self.damping, self.singular = 0.0, True
            return (V[:, keep] @ ((V[:, keep].T @ rhs) / lam[keep])) * s
        # indefinite: Levenberg damping, grown until the factorisation holds
        ridge = np.diag(float(scale.max()) / scale)
        for mu in _DAMPING[1:]:
            try:
                L = np.linalg.cholesky(S + mu * ridge)
            except np.linalg.LinAlgError:
                continue
            if float(np.min(np.diag(L))) ** 2 < _PIVOT and mu < _DAMPING[-1]:
                continue
            z = cholesky_solve(L, rhs)
            if not np.all(np.isfinite(z)):
                continue
            self.damping = mu
            return z * s
        return None

    def _gradient_step(self, x: np.ndarray, g: np.ndarray, hdiag: np.ndarray) -> tuple:
        """A proximal gradient step scaled by the Hessian's diagonal, and its slope."""
        n = x.size
        idx = self._free(n)
        p = np.zeros(n)
        d = hdiag[idx]
        top = float(d.max()) if d.size else 0.0
        scale = np.maximum(d, 1e-12 * top if top > 0 else 1.0)
        z = x[idx] - g[idx] / scale
        if self.l1:
            pen = idx < n - 1
            z[pen] = soft_threshold(z[pen], self.l1 / scale[pen])
        p[idx] = z - x[idx]
        return p, float(g @ p) + self._l1_change(x, p)

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict:
        """The state as plain arrays and numbers (for checkpoints)."""
        return {
            "x": self._x,
            "f": self._f,
            "g": self._g,
            "hdiag": self._hdiag,
            "p": self._p,
            "slope": self._slope,
            "t": self._t,
            "backtracks": self._backtracks,
            "gradient": float(self._gradient),
            "iterations": self.iterations,
            "fallbacks": self.fallbacks,
            "B": self._B,
            "root": self._root,
            "want_hessian": float(self.want_hessian),
            "hessians": self.hessians,
        }

    def load_state(self, state: dict, n: int) -> None:
        """Restore what :meth:`state` returned (arrays may come back as 0-d arrays).

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
                raise ValueError(f"Newton state {key!r} has {v.size} numbers; expected {n}")
            return v.copy()

        self._x, self._g, self._hdiag, self._p = vec("x"), vec("g"), vec("hdiag"), vec("p")
        if (self._x is None) != (self._p is None):
            raise ValueError("Newton state: x and p must be both present or both absent")
        self._B = None
        if state.get("B") is not None:
            B = np.asarray(state["B"], dtype=np.float64)
            if B.shape != (n, n):
                raise ValueError(f"Newton state 'B' has shape {B.shape}; expected {(n, n)}")
            self._B = B.copy()
        self._root = float(state.get("root", np.inf))
        # a state without the matrix (written before it was kept) needs a fresh Hessian
        self.want_hessian = self._B is None or bool(float(state.get("want_hessian", 1.0)))
        self.hessians = int(state.get("hessians", 0))
        self._f = float(state.get("f", np.inf))
        self._slope = float(state.get("slope", 0.0))
        self._t = float(state.get("t", 1.0))
        self._backtracks = int(state.get("backtracks", 0))
        self._gradient = bool(float(state.get("gradient", 0.0)))
        self.iterations = int(state.get("iterations", 0))
        self.fallbacks = int(state.get("fallbacks", 0))

    def pending(self) -> np.ndarray | None:
        """The point the last :meth:`tell` returned (to evaluate next), or None before any:
        what a fit resumed from this state evaluates first."""
        if self._x is None or self._p is None:
            return None
        return self._x + self._t * self._p

    def best(self) -> np.ndarray | None:
        """The last accepted point (the lowest objective seen), or None before any."""
        return None if self._x is None else self._x.copy()

    def final(self) -> np.ndarray | None:
        """What a fit stopped short of convergence returns: right after a point was
        accepted, the step the model proposes from it (as every rule returns its last
        step); during a backtrack, the last accepted point, never a rejected trial point.
        None before any call."""
        if self._x is None:
            return None
        if self.decrement is not None:
            return self.pending()
        return self.best()
