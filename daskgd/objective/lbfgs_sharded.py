"""L-BFGS on a parameter vector cut into shards: the vectors stay where they live.

:class:`~daskgd.objective.lbfgs.LBFGS` holds whole vectors. With sharded parameters each
shard holds its slice of the last accepted point, its gradient, the search direction and
the correction pairs (:class:`LBFGSSlice`), and the coordinator holds only numbers
(:class:`LBFGSCoordinator`): the objective, the step along the direction, and the dot
products of the ``2m + 1`` base vectors ``s_1..s_m, y_1..y_m, g``. The two-loop recursion
runs on those dot products alone and yields the direction as coefficients of the base
vectors, which every shard applies to its own slices ("vector-free L-BFGS", Chen, Wang
and Zhou, "Large-scale L-BFGS using MapReduce", NIPS 2014). Each round costs the shards one
pass over their rows to compute their part of the new dot products (``3 (2m + 3)`` of
them) and the coordinator ``O(m^2)`` arithmetic: nothing it receives grows with ``d``.

With the column-squares preconditioner (``LBFGS.h0``) each shard keeps its vectors in the
variables scaled by ``D = sqrt(h0)`` of its rows (:meth:`LBFGSSlice.rescale`; its caller
scales the points and gradients and unscales the points), so the dot products are those
of the whole-model rule's scaled metric; exported state is unscaled.

The decisions (Armijo test, its rounding-level fallback, when to keep a pair, when to
restart, the interpolated backtracking step) are :class:`LBFGS`'s own, so the iterates are
those of the whole-model rule but for the order in which dot products are summed: equal to
rounding, not bitwise.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daskgd.objective.lbfgs import backtrack_step, rounding_level

__all__ = ["LBFGSCoordinator", "LBFGSSlice", "gram", "rows_first", "two_loop", "whole_state"]


def two_loop(G: np.ndarray, m: int) -> np.ndarray:
    """The L-BFGS direction's coefficients from the base vectors' dot products.

    Parameters
    ----------
    G : ndarray of shape (2m + 1, 2m + 1)
        Dot products of the base vectors ``s_1..s_m, y_1..y_m, g`` (oldest pair first).
    m : int
        Pairs kept.

    Returns
    -------
    ndarray of shape (2m + 1,)
        ``delta`` with ``H g = sum_l delta_l b_l`` (the direction is ``-H g``).

    Examples
    --------
    >>> import numpy as np
    >>> two_loop(np.array([[4.0]]), 0)  # no pairs: H = I
    array([1.])
    """
    delta = np.zeros(2 * m + 1)
    delta[2 * m] = 1.0
    alphas = []
    for i in reversed(range(m)):
        rho = 1.0 / G[m + i, i]
        a = rho * float(G[i] @ delta)
        delta[m + i] -= a
        alphas.append((rho, a))
    if m:
        delta *= G[m - 1, 2 * m - 1] / G[2 * m - 1, 2 * m - 1]
    for i, (rho, a) in zip(range(m), reversed(alphas), strict=True):
        b = rho * float(G[m + i] @ delta)
        delta[i] += a - b
    return delta


def gram(S: list[np.ndarray], Y: list[np.ndarray], g: np.ndarray) -> np.ndarray:
    """Dot products of the base vectors ``S + Y + [g]`` (whole vectors: used on resume)."""
    B = np.array([v.ravel() for v in (*S, *Y, g)], dtype=np.float64)
    return B @ B.T


@dataclass
class LBFGSSlice:
    """One shard's slices of the L-BFGS vectors (flattened rows of the shard)."""

    memory: int = 10
    x: np.ndarray | None = None  # last accepted point
    g: np.ndarray | None = None  # its gradient
    p: np.ndarray | None = None  # search direction
    S: list[np.ndarray] = field(default_factory=list)
    Y: list[np.ndarray] = field(default_factory=list)
    trial: tuple[np.ndarray, np.ndarray] | None = None  # the point evaluated, its gradient
    #: the preconditioner's scale ``sqrt(h0)`` of these rows (flat) once :meth:`rescale`
    #: set it: the vectors are then kept in the scaled variables ``v = D x``
    D: np.ndarray | None = None

    def rescale(self, D: np.ndarray) -> None:
        """Keep the vectors in the variables scaled by ``D`` from now on (they are in the
        unscaled ones): L-BFGS with ``H0 = gamma / D^2``, as ``LBFGS.h0`` (the caller
        scales the points and gradients it passes, and unscales the points it gets)."""
        assert self.D is None
        self.D = D = np.asarray(D, dtype=np.float64).ravel()
        for key, up in (("x", True), ("g", False), ("p", True)):
            v = getattr(self, key)
            if v is not None:
                setattr(self, key, v * D if up else v / D)
        self.S = [v * D for v in self.S]
        self.Y = [v / D for v in self.Y]

    def evaluate(self, x: np.ndarray, g: np.ndarray) -> dict[str, Any]:
        """Keep the evaluated point ``x`` and its gradient ``g``; return this shard's parts
        of the dot products the coordinator needs to accept it (or not)."""
        x, g = x.ravel().copy(), g.ravel().copy()
        self.trial = (x, g)
        out: dict[str, Any] = {
            "gS": [float(g @ v) for v in self.S],
            "gY": [float(g @ v) for v in self.Y],
            "gg": float(g @ g),
            "gabs": float(np.abs(g).sum()),
            "scaled": float(self.D is not None),  # preconditioned (summed: any shard)
        }
        if self.x is not None and self.g is not None:
            s, y = x - self.x, g - self.g
            out.update(
                sS=[float(s @ v) for v in self.S], sY=[float(s @ v) for v in self.Y],
                yS=[float(y @ v) for v in self.S], yY=[float(y @ v) for v in self.Y],
                ss=float(s @ s), sy=float(s @ y), yy=float(y @ y), gs=float(g @ s),
                gy=float(g @ y),
            )  # fmt: skip
        return out

    def decide(self, msg: dict[str, Any]) -> np.ndarray:
        """Apply the coordinator's decision on the evaluated point; the next point to
        evaluate (flat)."""
        action = msg["action"]
        if action == "accept":
            assert self.trial is not None
            x, g = self.trial
            if msg["keep_pair"]:
                assert self.x is not None and self.g is not None
                self.S.append(x - self.x)
                self.Y.append(g - self.g)
                if len(self.S) > self.memory:
                    del self.S[0], self.Y[0]
            if msg["clear"]:
                self.S, self.Y = [], []
            self.x, self.g = x, g
            coef = np.asarray(msg["coef"], dtype=np.float64)
            m = len(self.S)
            q = coef[2 * m] * self.g
            for c, v in zip(coef[:m], self.S, strict=True):
                q += c * v
            for c, v in zip(coef[m : 2 * m], self.Y, strict=True):
                q += c * v
            self.p = -q
        elif action == "reset":  # the line search failed: steepest descent from x
            assert self.g is not None
            self.S, self.Y = [], []
            self.p = -self.g
        self.trial = None
        assert self.x is not None and self.p is not None
        return self.x + float(msg["t"]) * self.p

    # -- state as arrays whose first axis is the shard's rows (stacked along it) --------
    def export(self, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """The vectors as arrays of the shard's ``shape`` (pairs as ``(rows, m, ...)``)."""
        out = {}
        D = 1.0 if self.D is None else self.D  # the state in the unscaled variables

        def unscaled(v: np.ndarray, up: bool) -> np.ndarray:
            return (v / D if up else v * D).reshape(shape)

        for key, up in (("x", True), ("g", False), ("p", True)):
            v = getattr(self, key)
            if v is not None:
                out[f"lbfgs_{key}"] = unscaled(v, up)
        for key, vs, up in (("s", self.S, True), ("y", self.Y, False)):
            a = np.array([unscaled(v, up) for v in vs]).reshape(len(vs), *shape)
            out[f"lbfgs_{key}"] = np.moveaxis(a, 0, 1).copy()
        return out

    @classmethod
    def restore(cls, memory: int, arrays: dict[str, np.ndarray]) -> LBFGSSlice:
        """The slice :meth:`export` wrote (``arrays`` may hold other entries)."""
        out = cls(memory=memory)
        for key in ("x", "g", "p"):
            if f"lbfgs_{key}" in arrays:
                setattr(out, key, np.asarray(arrays[f"lbfgs_{key}"], dtype=np.float64).ravel())
        for key, attr in (("s", "S"), ("y", "Y")):
            a = arrays.get(f"lbfgs_{key}")
            if a is not None and a.size:
                a = np.moveaxis(np.asarray(a, dtype=np.float64), 1, 0)
                setattr(out, attr, [v.ravel().copy() for v in a])
        return out


#: The coordinator's numbers kept in a checkpoint next to the shards' vectors (the names
#: :meth:`LBFGS.state` gives them, so that a checkpoint resumes with any number of shards).
SCALARS = ("f", "t", "backtracks", "iterations")


@dataclass
class LBFGSCoordinator:
    """The numbers of a sharded L-BFGS (see the module docstring) and its decisions."""

    memory: int = 10
    c1: float = 1e-4
    max_backtracks: int = 30
    m: int = 0  # pairs kept
    G: np.ndarray = field(default_factory=lambda: np.zeros((1, 1)))
    f: float = np.inf
    gabs: float = 0.0  # |g|_1 at the accepted point
    slope: float = 0.0  # g . p at the accepted point
    t: float = 1.0
    backtracks: int = 0
    iterations: int = 0
    started: bool = False
    scaled: bool = False  # the shards keep scaled vectors (the preconditioner)

    def tell(self, f: float, d: dict[str, Any]) -> dict[str, Any]:
        """Take the objective ``f`` at the evaluated point and the summed dot products
        ``d`` (:meth:`LBFGSSlice.evaluate`); return the decision for the shards."""
        if not self.started:
            return self._accept(f, d, pair=False)
        rounding = rounding_level(f, self.f, float(d["gabs"]), self.gabs)
        if np.isfinite(f) and (f <= self.f + self.c1 * self.t * self.slope or rounding):
            pair = d["sy"] > 1e-10 * np.sqrt(d["ss"]) * np.sqrt(d["yy"])
            return self._accept(f, d, pair=bool(pair))
        self.backtracks += 1
        if self.backtracks > self.max_backtracks:
            self.m, self.backtracks = 0, 0
            gg = self.G[-1, -1]
            self.G = np.array([[gg]])
            self.slope = -gg
            self.t = self._first_step()
            return {"action": "reset", "t": self.t}
        self.t = backtrack_step(f, self.f, self.slope, self.t)
        return {"action": "backtrack", "t": self.t}

    def _accept(self, f: float, d: dict[str, Any], pair: bool) -> dict[str, Any]:
        first = not self.started
        self.G, self.m = self._new_gram(d, pair)
        if pair and self.m > self.memory:  # drop the oldest pair
            keep = [i for i in range(2 * self.m + 1) if i not in (0, self.m)]
            self.G, self.m = self.G[np.ix_(keep, keep)], self.m - 1
        self.f, self.gabs, self.started = float(f), float(d["gabs"]), True
        self.scaled = float(d.get("scaled", 0.0)) > 0
        self.backtracks = 0
        self.iterations += 0 if first else 1
        coef = two_loop(self.G, self.m)
        slope = -float(self.G[-1] @ coef)
        clear = not slope < 0  # not a descent direction: restart from steepest descent
        if clear:
            self.G, self.m = self.G[-1:, -1:].copy(), 0
            coef, slope = np.ones(1), -float(self.G[0, 0])
        self.slope = slope
        self.t = 1.0 if self.m else self._first_step()
        return {"action": "accept", "keep_pair": pair, "clear": clear, "coef": coef.tolist(),
                "t": self.t}  # fmt: skip

    def _first_step(self) -> float:
        """The step along a direction without pairs, as :class:`LBFGS` takes it: 1 with
        the preconditioner (the diagonal Newton step), else ``min(1, 1 / |g|_1)``."""
        if self.scaled or self.gabs == 0:
            return 1.0
        return min(1.0, 1.0 / self.gabs)

    def _new_gram(self, d: dict[str, Any], pair: bool) -> tuple[np.ndarray, int]:
        """The dot products of the new base: the old pairs (and the new one) and the new g."""
        m0 = self.m
        old = self.G[: 2 * m0, : 2 * m0]
        gS, gY = np.asarray(d["gS"], dtype=float), np.asarray(d["gY"], dtype=float)
        if not pair:
            G = np.zeros((2 * m0 + 1, 2 * m0 + 1))
            G[: 2 * m0, : 2 * m0] = old
            G[-1, :m0] = G[:m0, -1] = gS
            G[-1, m0 : 2 * m0] = G[m0 : 2 * m0, -1] = gY
            G[-1, -1] = d["gg"]
            return G, m0
        m = m0 + 1
        # base order: S_old, s, Y_old, y, g
        iS, iY = list(range(m0)), list(range(m, m + m0))
        G = np.zeros((2 * m + 1, 2 * m + 1))
        G[np.ix_(iS + iY, iS + iY)] = old
        s, y, g = m0, m + m0, 2 * m
        rows = {
            s: (d["sS"], d["sY"], d["ss"], d["sy"], d["gs"]),
            y: (d["yS"], d["yY"], d["sy"], d["yy"], d["gy"]),
            g: (gS, gY, d["gs"], d["gy"], d["gg"]),
        }
        for i, (vS, vY, with_s, with_y, with_g) in rows.items():
            G[i, iS] = G[iS, i] = vS
            G[i, iY] = G[iY, i] = vY
            G[i, s] = G[s, i] = with_s
            G[i, y] = G[y, i] = with_y
            G[i, g] = G[g, i] = with_g
        return G, m

    def copy(self) -> LBFGSCoordinator:
        return copy.deepcopy(self)

    def state(self) -> dict[str, float]:
        """The numbers a checkpoint keeps (the vectors are the shards')."""
        return {"f": self.f, "t": self.t, "backtracks": self.backtracks,
                "iterations": self.iterations}  # fmt: skip

    @classmethod
    def from_whole(cls, memory: int, state: dict[str, Any]) -> LBFGSCoordinator:
        """The coordinator of a fit resumed from a whole-model L-BFGS state (``LBFGS.state``
        entries, as a checkpoint holds them without their ``lbfgs_`` prefix)."""
        out = cls(memory=memory)
        g = state.get("g")
        if g is None:
            return out
        g = np.asarray(g, dtype=np.float64).ravel()
        n = g.size
        S = [v for v in np.asarray(state.get("s", np.zeros((0, n))), dtype=float).reshape(-1, n)]
        Y = [v for v in np.asarray(state.get("y", np.zeros((0, n))), dtype=float).reshape(-1, n)]
        out.m, out.G = len(S), gram(S, Y, g)
        out.f = float(state.get("f", np.inf))
        out.t = float(state.get("t", 1.0))
        out.backtracks = int(state.get("backtracks", 0))
        out.iterations = int(state.get("iterations", 0))
        out.gabs = float(np.abs(g).sum())
        p = state.get("p")
        out.slope = 0.0 if p is None else float(g @ np.asarray(p, dtype=float).ravel())
        out.started = True
        return out


def rows_first(state: dict[str, np.ndarray], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """A whole-model L-BFGS state (``LBFGSOptimizer.export_state``) as arrays whose first
    axis is the parameters' rows, to be cut into shards (the numbers stay out: they are
    the coordinator's)."""
    out = {}
    for key in ("x", "g", "p"):
        if f"lbfgs_{key}" in state:
            out[f"lbfgs_{key}"] = np.asarray(state[f"lbfgs_{key}"], dtype=np.float64).reshape(shape)
    for key in ("s", "y"):
        a = np.asarray(state.get(f"lbfgs_{key}", np.zeros(0)), dtype=np.float64)
        a = a.reshape(-1, *shape)
        out[f"lbfgs_{key}"] = np.moveaxis(a, 0, 1).copy()
    return out


def whole_state(
    stacked: dict[str, np.ndarray], shape: tuple[int, ...], coordinator: LBFGSCoordinator
) -> dict[str, np.ndarray]:
    """The inverse of :func:`rows_first`: the shards' stacked vectors and the
    coordinator's numbers as the whole-model state a checkpoint holds."""
    n = int(np.prod(shape))
    out: dict[str, np.ndarray] = {}
    for key in ("s", "y"):
        a = np.asarray(stacked[f"lbfgs_{key}"], dtype=np.float64)
        out[f"lbfgs_{key}"] = np.moveaxis(a, 1, 0).reshape(-1, n)
    for key in ("x", "g", "p"):
        if f"lbfgs_{key}" in stacked:
            out[f"lbfgs_{key}"] = np.asarray(stacked[f"lbfgs_{key}"], dtype=np.float64).ravel()
    out.update({f"lbfgs_{k}": np.array(v, dtype=np.float64)
                for k, v in coordinator.state().items()})  # fmt: skip
    return out
