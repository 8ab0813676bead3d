"""Solvers for one column block of a feature-partitioned fit, in lockstep with the others.

Rank ``k`` holds ``X_k`` (every row, its columns) and its block of the parameters
``v_k = [w_k, b_k]``: ``b_k`` is the intercept on rank 0 and an unused zero elsewhere, so
that every coordinate-wise rule of :mod:`daskgd.objective.optimizers` (and the
:class:`~daskgd.objective.regularizers.Regularizer`, which leaves the last entry alone)
applies to a block as to the whole model. The margins ``m = sum_k X_k w_k + b`` are what
the blocks share: each rank keeps the whole (reduced) margin vector, and everything that
is a function of it (the loss, its derivative in the margin, the loss along a search
direction) it computes itself, identically on every rank. What needs every block goes
through ``reduce`` (:class:`BlockExchange`), an all-reduce whose sums every rank receives
alike, so that every rank takes the same steps.

Per iteration, full batch, on each rank: ``g_k = X_k^T loss'(m)`` (one pass over its
block), a ``"stats"`` reduction (objective, gradient norm and, for L-BFGS, the Gram
matrix of its memory), the step ``p_k``, then ``X_k p_k`` (a second pass) reduced, which
moves the margins to the next iterate: ``m += t X p``. L-BFGS runs vector-free (Chen et
al., "Large-scale L-BFGS using MapReduce", NIPS 2014): its two-loop recursion needs only
the dot products of its ``2 memory + 1`` vectors, which one small reduction gives, and its
line search runs on the margins ``m + t X p`` without touching the data: one reduction of
``X p`` per iteration, however many trial steps.

Mini-batch SGD draws the same seeded batches of rows on every rank (a permutation of all
rows per epoch): one reduction of the batch's margins per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskgd.objective.block_lbfgs import BlockLBFGS, armijo_search
from daskgd.objective.loss_base import Loss
from daskgd.objective.optimizers import Optimizer
from daskgd.objective.regularizers import Regularizer

__all__ = ["BlockData", "BlockExchange", "run_block_solver"]

#: ``reduce(value, kind, epoch, backup) -> (sum, stop)``: the all-reduce (see the module).
Reduce = Callable[..., tuple[np.ndarray, dict[str, Any] | None]]


@dataclass
class BlockData:
    """One rank's share of a feature-partitioned problem.

    Parameters
    ----------
    X : ndarray, (n, d_k)
        The rank's columns, every row (float32 or float64).
    y : ndarray, (n,)
        Targets, encoded for the loss (-1/+1 labels for the binary classifiers).
    weight : ndarray, (n,)
        Row weights divided by their sum (the mean over rows is their dot product).
    offset : ndarray or None
        Per-row offsets added to the margins.
    loss : Loss
    epsilon, power : float
        The Huber/epsilon and Tweedie parameters of the loss.
    """

    X: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    offset: np.ndarray | None
    loss: Loss
    epsilon: float = 0.1
    power: float = 1.5

    def _row_slices(self) -> list[slice]:
        """Slices of rows whose float64 copy takes about 1 MB (float32 data): it stays in
        cache between the widening and the product."""
        n, d = self.X.shape
        step = max(1, (1 << 17) // max(d, 1))
        return [slice(lo, min(n, lo + step)) for lo in range(0, n, step)]

    def _widened(self, rows: slice) -> np.ndarray:
        """``X[rows]`` in float64, in a buffer reused from call to call (a fresh one each
        time would fault its pages in again)."""
        k = rows.stop - rows.start
        buf = getattr(self, "_buffer", None)
        if buf is None or buf.shape[0] < k:
            buf = self._buffer = np.empty((k, self.X.shape[1]))
        np.copyto(buf[:k], self.X[rows])
        return buf[:k]

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """``X_k v[:-1] + v[-1]``, summed in float64 (float32 rows are widened a slice at
        a time, as the row kernels widen them: the margins, carried from iterate to
        iterate, must not drift by float32 roundings)."""
        w = np.ascontiguousarray(v[:-1], dtype=np.float64)
        if self.X.dtype == np.float64:
            out = self.X @ w
        else:
            out = np.empty(self.X.shape[0])
            for rows in self._row_slices():
                np.matmul(self._widened(rows), w, out=out[rows])
        if v[-1] != 0.0:
            out += v[-1]
        return out

    def rmatvec(self, r: np.ndarray) -> np.ndarray:
        """``[X_k^T r, sum(r)]``, summed in float64."""
        g = np.empty(self.X.shape[1] + 1)
        if self.X.dtype == np.float64:
            g[:-1] = self.X.T @ r
        else:
            g[:-1] = 0.0
            for rows in self._row_slices():
                g[:-1] += self._widened(rows).T @ r[rows]
        g[-1] = math.fsum(r) if r.size < 64 else float(r.sum())
        return g

    def derivative(self, m: np.ndarray, rows: Any = slice(None)) -> tuple[float, np.ndarray]:
        """The mean loss at margins ``m`` (of ``rows``) and its derivative per row, weighted."""
        p = m if self.offset is None else m + self.offset[rows]
        loss, d = self.loss.reference(p, self.y[rows], self.epsilon, self.power)
        w = self.weight[rows]
        return float(w @ loss), w * d

    def column_squares(self) -> np.ndarray:
        """``sum_i weight_i x_ij**2`` per column, and 1 for the intercept's slot."""
        out = np.ones(self.X.shape[1] + 1)
        out[:-1] = 0.0
        for rows in self._row_slices():  # no copy of the whole block
            Xr = self._widened(rows)
            out[:-1] += self.weight[rows] @ (Xr * Xr)
        return out

    def top_curvature(self, intercept: bool) -> float:
        """The largest eigenvalue of ``A^T diag(weight) A`` (``A`` the block, with a column
        of ones when ``intercept``), by Lanczos on the block: no reduction needed."""
        from scipy.sparse.linalg import LinearOperator, eigsh

        d = self.X.shape[1] + (1 if intercept else 0)

        def mv(v: np.ndarray) -> np.ndarray:
            u = np.append(np.ravel(v)[: self.X.shape[1]], v[-1] if intercept else 0.0)
            out = self.rmatvec(self.weight * self.matvec(u))
            return out if intercept else out[:-1]

        if d <= 64:
            eye = np.eye(d)
            return float(np.linalg.eigvalsh(np.column_stack([mv(c) for c in eye]))[-1])
        op = LinearOperator((d, d), matvec=mv, dtype=np.float64)
        v0 = np.ones(d) / math.sqrt(d)
        return float(eigsh(op, k=1, which="LA", tol=1e-3, v0=v0, return_eigenvectors=False)[0])


class BlockExchange:
    """The reductions of one rank, numbered in the order every rank makes them."""

    def __init__(self, reduce: Reduce) -> None:
        self._reduce = reduce
        self.calls = 0
        self.bytes = 0

    def __call__(self, value: np.ndarray, kind: str = "sum", epoch: int | None = None,
                 backup: np.ndarray | None = None,
                 group: str = "row") -> tuple[np.ndarray, dict | None]:  # fmt: skip
        """Reduce ``value`` over ``group``: ``"row"`` (the blocks of this rank's rows: every
        rank unless the partition is a grid), ``"col"`` (the blocks of its columns) or
        ``"all"``; ``kind="stats"`` sums go to every rank and carry the stop."""
        self.calls += 1
        self.bytes += value.nbytes + (0 if backup is None else backup.nbytes)
        return self._reduce(value, kind=kind, epoch=epoch, backup=backup, group=group)


def run_block_solver(
    data: BlockData,
    v: np.ndarray,
    reduce: Reduce,
    *,
    optimizer: Optimizer,
    epoch: int = 0,
    memory: int = 10,
    precondition: bool = True,
    curvature: float = 1.0,
    batch_rows: int | None = None,
    seed: int = 0,
    lead: bool = True,
    local_steps: int | None = None,
    n_blocks: int = 1,
    block_curvature: float = 1.0,
    row_blocks: int = 1,
    counts_block: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Run one rank's solver until the coordinator says stop; return its block and the stop.

    ``v``: the block's parameters after ``epoch`` steps (full batch) or epochs
    (mini-batches): a restart's, or the start. Full batch reports each iterate with the
    steps taken before it (0: the start), so a fit of ``max_epochs`` takes that many steps
    and returns the iterate of its last history row, whose objective it reports;
    ``optimizer``: the rule, with the block's regularizer and ``fit_intercept`` (False
    on ranks that do not own the intercept); ``optimizer.name == "lbfgs"``: vector-free
    L-BFGS, else the rule's coordinate-wise steps (gradient descent, or mini-batch SGD with
    ``batch_rows``). ``curvature``: the loss's curvature bound (the preconditioner's scale).
    ``lead``: this rank reports the loss (rank 0; the loss is the same on every rank, and
    the coordinator adds the ranks' reports). ``local_steps``: the communication-saving
    block method instead (:func:`_local_rounds`), for ``n_blocks`` blocks, this one's
    ``A_k^T W A_k`` with top eigenvalue ``block_curvature``. A grid (``row_blocks`` > 1):
    this rank holds some rows of its columns; its block's gradient is reduced over the
    column's blocks, its loss over the row's, and ``counts_block`` says whether it reports
    its column block's share of the norms (one rank per column block does).

    Returns
    -------
    v : ndarray
        The block's parameters where the fit stopped.
    stop : dict
        The coordinator's decision: ``reason`` and ``converged``.
    """
    reg: Regularizer = optimizer.regularizer
    xchg = reduce if isinstance(reduce, BlockExchange) else BlockExchange(reduce)
    v = np.array(v, dtype=np.float64)
    if batch_rows is not None:
        return _minibatch(data, v, xchg, optimizer, epoch, batch_rows, seed, lead)
    grid = row_blocks > 1
    m = xchg(data.matvec(v))[0].copy()  # updated in place: never the reduction's own array
    if local_steps is not None:
        eta = 1.0 / (n_blocks * curvature * block_curvature + reg.l2)
        return _local_rounds(data, v, m, xchg, optimizer, epoch, local_steps, n_blocks, eta, lead)
    lbfgs = None
    if optimizer.name == "lbfgs":
        h = np.ones(v.size)
        if precondition:
            sq = data.column_squares()
            sq = xchg(sq, group="col")[0] if grid else sq  # every row of the columns
            h = np.maximum(curvature * sq + reg.l2, 1e-12 * curvature)
            h[-1] = curvature  # the intercept's column of ones
        lbfgs = BlockLBFGS(h, memory)
    g_prev: np.ndarray | None = None
    step: np.ndarray | None = None
    state = optimizer.init_state(v)
    while True:
        loss, r = data.derivative(m)
        loss = loss if lead else 0.0
        g = data.rmatvec(r)
        if grid:
            g = xchg(g, group="col")[0].copy()
        share = 1.0 if counts_block else 0.0  # a column block's norms, counted once
        if lbfgs is None:
            pg = reg.proximal_gradient(v, g.copy(), optimizer.fit_intercept)
            stats = np.array([loss, share * float(pg @ pg), share * reg.penalty(v)])
            total, stop = xchg(stats, kind="stats", epoch=epoch, backup=v, group="all")
            if stop:
                return v, stop
            new = optimizer.step(v, g, state, epoch, epoch)
            dm, _ = xchg(data.matvec(new - v))
            m += dm
            v = new
            epoch += 1
            continue
        reg.add_gradient(v, g)
        if not optimizer.fit_intercept:
            g[-1] = 0.0
        if g_prev is not None and step is not None:
            lbfgs.remember(step, g - g_prev)
        basis = lbfgs.basis(g)
        stats = share * np.concatenate([[0.0, float(g @ g), reg.penalty(v),
                                         float(np.abs(g / lbfgs.root).sum())],
                                        (basis @ basis.T).ravel()])  # fmt: skip
        stats[0] = loss
        total, stop = xchg(stats, kind="stats", epoch=epoch, backup=v, group="all")
        if stop:
            return v, stop
        k = basis.shape[0]
        B = total[4:].reshape(k, k)
        if lbfgs.s:  # the new pair is kept only with positive curvature (every block's s.y)
            i = len(lbfgs.s) - 1
            sy, ss, yy = B[i, k // 2 + i], B[i, i], B[k // 2 + i, k // 2 + i]
            if not sy > 1e-10 * math.sqrt(ss * yy):
                lbfgs.forget_last()
                keep = [j for j in range(k) if j not in (i, k // 2 + i)]
                basis, B = basis[keep], B[np.ix_(keep, keep)]
            basis, B = lbfgs.trim(basis, B)
        p, slope = lbfgs.direction(B, basis)
        if not slope < 0:  # not a descent direction: steepest descent
            lbfgs.clear()
            basis, B = basis[-1:], B[-1:, -1:]
            p, slope = lbfgs.direction(B, basis)
        pen = p.copy()
        pen[-1] = 0.0
        wpen = v.copy()
        wpen[-1] = 0.0
        red, _ = xchg(np.append(data.matvec(p), [float(wpen @ pen), float(pen @ pen),
                                                 float(wpen @ wpen)]))  # fmt: skip
        Xp, (wp, pp, ww) = red[:-3], red[-3:]
        f0 = total[0] + total[2]
        t0 = 1.0 if lbfgs.s else min(1.0, 1.0 / max(float(total[3]), 1e-300))

        def phi(t: float, m=m, Xp=Xp, wp=wp, pp=pp, ww=ww, l2=reg.l2) -> tuple[float, float]:
            # the objective along p from the margins alone; a grid adds its row blocks' losses
            loss, d = data.derivative(m + t * Xp)
            dl = float(d @ Xp)
            # every rank takes the lead's numbers (a grid's: the row blocks' sum): sums on
            # workers with other BLAS threads may differ in the last bits, and a step
            # accepted on one rank and not on another would part the blocks' margins
            loss, dl = xchg(np.array([loss, dl]) if lead else np.zeros(2), group="all")[0]
            return loss + 0.5 * l2 * (ww + 2 * t * wp + t * t * pp), dl + l2 * (wp + t * pp)

        t = armijo_search(phi, f0, slope, t0)
        if t == 0.0:  # no decrease along it: start the memory again from here
            lbfgs.clear()
        g_prev, step = g, t * p
        v = v + step
        m += t * Xp
        epoch += 1


def _local_rounds(data: BlockData, v: np.ndarray, m: np.ndarray, xchg: BlockExchange,
                  optimizer: Optimizer, epoch: int, local_steps: int, K: int, eta: float,
                  lead: bool) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """The communication-saving block method: between two reductions each block takes
    ``local_steps`` proximal gradient steps on its own surrogate, against the margins of
    the last reduction.

    The surrogate of block ``k`` is ``(1/K) L(m + K X_k d) + R_k(v_k + d)``: by convexity
    ``L(m + sum_k X_k d_k) <= (1/K) sum_k L(m + K X_k d_k)``, so the blocks' steps added
    together never increase the objective more than their surrogates promise (CoCoA+'s
    "adding" with ``sigma' = K``: Ma et al., "Adding vs. averaging in distributed
    primal-dual optimization", ICML 2015; here on the primal, as in Hydra-type block
    methods). Its gradient is ``X_k^T loss'(m + K X_k d)``, ``K`` times as curved as the
    block's share of ``L``: the step is ``1 / (K c lambda_k + l2)``, ``lambda_k`` the
    block's top eigenvalue, measured on the block alone. One reduction of ``X_k d_k`` per
    round, for ``2 local_steps`` passes over the block.
    """
    reg = optimizer.regularizer
    loss, r = data.derivative(m)
    while True:
        g = data.rmatvec(r)
        pg = reg.proximal_gradient(v, g.copy(), optimizer.fit_intercept)
        stats = np.array([loss if lead else 0.0, float(pg @ pg), reg.penalty(v)])
        _, stop = xchg(stats, kind="stats", epoch=epoch, backup=v)
        if stop:
            return v, stop
        w = v
        u = np.zeros_like(m)  # X_k (w - v): this block's change of the margins
        for h in range(local_steps):
            if h:
                _, r = data.derivative(m + K * u)
                g = data.rmatvec(r)
            new = optimizer.apply(w, g, {}, h, eta)
            u += data.matvec(new - w)
            w = new
        du, _ = xchg(u)
        m += du
        v = w
        loss, r = data.derivative(m)
        epoch += 1


def _minibatch(data: BlockData, v: np.ndarray, xchg: BlockExchange, optimizer: Optimizer,
               epoch: int, batch_rows: int, seed: int, lead: bool
               ) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """Mini-batch steps: the same permutation of the rows on every rank, each epoch;
    ``epoch`` epochs are done (a restart's backup is the block after them)."""
    n = data.X.shape[0]
    reg = optimizer.regularizer
    state = optimizer.init_state(v)
    t = epoch * -(-n // batch_rows)  # the schedule goes on where the epochs left it
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(n)
        loss_sum = weight_sum = 0.0
        g_sum = np.zeros(v.size)
        for lo in range(0, n, batch_rows):
            rows = np.sort(order[lo : lo + batch_rows])
            Xb = data.X[rows].astype(np.float64, copy=False)  # summed in float64
            mb, _ = xchg(data_matvec(Xb, v))
            wb = data.weight[rows]
            wsum = float(wb.sum())
            loss, r = data.derivative(mb, rows)
            if wsum > 0:
                g = np.empty(v.size)
                g[:-1] = Xb.T @ (r / wsum)
                g[-1] = float(r.sum()) / wsum
                g_sum += wsum * g
                v = optimizer.step(v, g, state, t, epoch)
                t += 1
            loss_sum += loss
            weight_sum += wsum
        # the epoch's mean batch gradient stands for the gradient (as in row mini-batches)
        pg = reg.proximal_gradient(v, g_sum / max(weight_sum, 1e-300), optimizer.fit_intercept)
        stats = np.array([loss_sum if lead else 0.0, float(pg @ pg), reg.penalty(v)])
        epoch += 1
        _, stop = xchg(stats, kind="stats", epoch=epoch, backup=v)
        if stop:
            return v, stop


def data_matvec(X: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``X v[:-1] + v[-1]`` for a float64 block of rows ``X``."""
    out = X @ v[:-1]
    return out + v[-1] if v[-1] != 0.0 else out
