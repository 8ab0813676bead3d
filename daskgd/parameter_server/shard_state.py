"""One job's shard on one worker: its rows, its optimizer state, the open round and its
backups (the data half of :mod:`daskgd.parameter_server.shard`, whose handlers call it).

A shard stores its rows with one extra last row when it does not hold the intercept: the
rules that act coordinate by coordinate (:meth:`daskgd.objective.Optimizer.apply`) treat
the last row as the unpenalised intercept, so the padding row (zero, with a zero gradient)
takes that part and every real row is stepped exactly as the whole-model server steps it.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np

from daskgd.objective import LBFGSOptimizer, Optimizer
from daskgd.objective.finite import all_finite, dot
from daskgd.objective.lbfgs_sharded import LBFGSSlice
from daskgd.parameter_server.checks import error

__all__ = ["BACKUPS", "HURRY_WAIT", "RoundSlices", "ShardState", "keep_version", "present_weight"]

#: Backups a shard (and a replica holder) keeps, the newest by version.
BACKUPS = 2
#: Seconds a shard waits, once a member died, for what it may have sent: the slices of
#: an open sync round, an epoch's async pushes (in flight from live members they land
#: within it; the dead member's never come).
HURRY_WAIT = 2.0


def present_weight(ranks: list, weights: list | None, missing: list[int], weight: float) -> float:
    """The weight a round steps with: ``weight`` (every rank's, as the coordinator summed
    it), or, when the slices of dead ranks ``missing`` never came, the present ranks'
    (``weights``: each rank's, in ``ranks``' order), so that the step is their mean."""
    if not missing or weights is None:
        return weight
    kept = [float(w) for (r, _), w in zip(ranks, weights, strict=True) if r not in missing]
    return max(math.fsum(kept), 0.0)


def keep_version(backups: dict[int, dict[str, Any]], b: dict[str, Any]) -> None:
    """Add backup ``b`` to ``backups`` (by its version), keeping the newest :data:`BACKUPS`."""
    backups[int(b["version"])] = b
    for v in sorted(backups)[:-BACKUPS]:
        del backups[v]


class RoundSlices:
    """The open rounds' slices of a shard's state and the events its handlers wait on:
    the part the dense (:class:`ShardState`) and the key-hashed
    (:class:`~daskgd.parameter_server.kshard_state.KeyedShardState`) shards share. The
    subclass sets the attributes below and stores the slices (``store``)."""

    #: round -> (rank, incarnation) -> the slice that rank sent
    pending: dict[int, dict[tuple[int, str | None], Any]]
    changed: asyncio.Event  # set (and replaced) when a version is published
    arrived: asyncio.Event  # set (and replaced) when a slice is stored
    closed: bool
    #: (rank, incarnation) -> when the coordinator said that run died (:meth:`forget`)
    gone: dict[tuple[int, str | None], float]

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def forget(self, ranks: list) -> None:
        """The coordinator says the runs ``ranks`` (``(rank, incarnation)``) died: a round
        waits :data:`HURRY_WAIT` seconds more at most for their slices."""
        now = asyncio.get_running_loop().time()
        for r, inc in ranks:
            if inc is not None:  # a run without one cannot be told from its successor
                self.gone.setdefault((int(r), inc), now)
        self.arrived.set()  # wake a round waiting for them
        self.arrived = asyncio.Event()

    async def wait_for_slices(
        self, version: int, ranks: list, timeout: float
    ) -> tuple[list[int], bool]:
        """Wait until the slices of ``ranks`` for ``version`` arrived (a rank sends its
        slices and its scalars at once, so the coordinator may close a round before a
        slice landed). Returns the ranks still missing after ``timeout`` seconds, and
        whether all of those died (:meth:`forget`; their slices are waited for only
        :data:`HURRY_WAIT` seconds from then, as one in flight lands by then)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        gone = self.gone
        while True:
            got = self.pending.get(version, {})
            missing = [(r, inc) for r, inc in ranks if (r, inc) not in got]
            dead = bool(missing) and all(m in gone for m in missing)
            end = min(deadline, max(gone[m] for m in missing) + HURRY_WAIT) if dead else deadline
            left = end - loop.time()
            if not missing or left <= 0 or self.closed:
                return [r for r, _ in missing], dead
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                pass

    async def collect(
        self, version: int, ranks: list, weight: float, weights: list | None, timeout: float
    ) -> tuple[list, dict, float, list[int]] | str:
        """Round ``version``'s slices, once those of ``ranks`` arrived or only dead runs'
        are missing (:meth:`wait_for_slices`): the ranks present, their slices (taken out),
        the weight to step with (:func:`present_weight`) and the ranks missing; or what is
        wrong, when a live rank's slice did not come within ``timeout`` seconds."""
        missing, dead = await self.wait_for_slices(version, ranks, timeout)
        if missing and not dead:
            return (f"the slices of rank(s) {missing} for version {version} did not arrive "
                    f"within {timeout:g} s")  # fmt: skip
        present = [(r, inc) for r, inc in ranks if r not in missing]
        weight = present_weight(ranks, weights, missing, weight)
        return present, self.take_round(version), weight, missing

    def take_round(self, version: int) -> dict:
        """The slices of round ``version``, taken out (on the event loop, where they are
        stored); those of older rounds, which closed without them, are dropped."""
        got = self.pending.pop(version, {})
        for v in [v for v in self.pending if v < version]:
            del self.pending[v]
        return got


class ShardState(RoundSlices):
    """One job's shard on one worker: its rows, optimizer state and the open round."""

    def __init__(
        self, params: np.ndarray, optimizer: Optimizer, padded: bool, version: int,
        state: dict[str, np.ndarray] | None,
    ) -> None:  # fmt: skip
        self.padded = padded
        P = np.asarray(params, dtype=np.float64)
        if padded:  # the stand-in intercept row (see the module docstring)
            P = np.concatenate([P, np.zeros((1, *P.shape[1:]))])
        self.optimizer = optimizer
        self.opt_state = self._import(P, state)
        self.published = (int(version), P)
        self.previous = self.published
        self.pending: dict[int, dict[tuple[int, str | None], np.ndarray]] = {}
        self.round_sum: np.ndarray | None = None
        self.round_divided = False  # round_sum holds the round's mean (reduce)
        self.epoch_sum: np.ndarray | None = None
        #: L-BFGS's preconditioner: each rank's column squares of these rows, the loss's
        #: curvature bound, and the scale ``sqrt(h0)`` (P's shape) made from them
        self.colsq: dict[int, np.ndarray] = {}
        self.curvature = 1.0
        self.scale: np.ndarray | None = None
        # async/ssp: each open epoch's gradient sum and pushes applied
        self.epoch_sums: dict[int, np.ndarray] = {}
        self.epoch_counts: dict[int, int] = {}
        self.backups: dict[int, dict[str, Any]] = {}  # version -> rows, state: keep_backup
        self.lock = asyncio.Lock()
        self.changed = asyncio.Event()  # set (and replaced) when a version is published
        self.arrived = asyncio.Event()  # set (and replaced) when a slice is stored
        self.closed = False
        self.gone = {}
        #: async/ssp: the coordinator's recovery count; a push admitted before the last
        #: rebuild (an older generation) is refused, so every shard applies the same pushes
        self.generation = 0
        #: async/ssp: a member died while epochs up to this one were open: their closes
        #: wait only briefly for pushes it may have had admitted (see HURRY_WAIT)
        self.hurry_through = -1
        #: async/ssp: the last epoch whose figures this shard gave (a push of it arriving
        #: later, counted lost, is applied but not added to a closed epoch)
        self.closed_through = -1

    def _import(self, P: np.ndarray, state: dict[str, np.ndarray] | None) -> Any:
        """The optimizer state of rows ``P`` from ``state`` (None: a fresh one). L-BFGS
        keeps its vectors' slices here and its numbers on the coordinator
        (:mod:`daskgd.objective.lbfgs_sharded`); its state arrays have the rows first."""
        opt = self.optimizer
        if isinstance(opt, LBFGSOptimizer):
            return LBFGSSlice.restore(opt.memory, {} if state is None else self._pad(state))
        return opt.init_state(P) if state is None else opt.import_state(P, self._pad(state))

    def _pad(self, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.padded:
            return state
        return {k: np.concatenate([v, np.zeros((1, *v.shape[1:]))]) for k, v in state.items()}

    @property
    def rows(self) -> np.ndarray:
        """The shard's real rows (published; never mutated)."""
        P = self.published[1]
        return P[:-1] if self.padded else P

    def publish(self, version: int, P: np.ndarray) -> None:
        """Publish ``(version, P)``, keeping the pair before for a rollback (the waiters
        are woken by :meth:`notify`, on the event loop: this may run in a thread)."""
        self.previous, self.published = self.published, (version, P)

    def store(self, version: int, rank: int, incarnation: str | None, grad: np.ndarray) -> None:
        # by run: a superseded run's late slice never takes the place of the new run's
        self.pending.setdefault(version, {})[(rank, incarnation)] = grad
        self.gone.pop((rank, incarnation), None)  # it came: no more hurry for that run
        self.arrived.set()
        self.arrived = asyncio.Event()

    def round(
        self, version: int, ranks: list, got: dict, close: bool, mean_w: float, lr: float,
        t: int, weight: float,
    ) -> dict[str, Any]:  # fmt: skip
        """One sync round: :meth:`reduce`, then :meth:`step`; the reply has the epoch's
        pieces (when it closes) and ``finite``. L-BFGS does not step here: the reply has
        the dot products (:meth:`evaluate`) and :meth:`direction` steps."""
        out = self.reduce(version, ranks, got, close, mean_w, weight)
        if out["status"] != "OK":
            return out
        if isinstance(self.opt_state, LBFGSSlice):
            out["dots"] = self.evaluate(weight)
        else:
            out["finite"] = self.step(version, lr, t, weight)
        return out

    def reduce(
        self, version: int, ranks: list, got: dict, close: bool, mean_w: float,
        weight: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Sum the round's slices ``got`` in the coordinator's (rank) order; add them to
        the epoch; when the epoch closes, its pieces of the penalty and the gradient norm.
        An epoch of this one round (its weight ``mean_w`` is the round's ``weight``) has
        the round's mean gradient: made once, read by the pieces and then the step."""
        slices = []
        for rank, incarnation in ranks:
            entry = got.get((rank, incarnation))
            if entry is None:
                return error(f"shard has no gradient of rank {rank} for version {version}")
            slices.append(entry)
        total = self._sum(slices)
        self.round_sum, self.round_divided = total, False
        out: dict[str, Any] = {"status": "OK"}
        alone = (
            close and self.epoch_sum is None and weight is not None and weight > 0
            and mean_w == weight and not isinstance(self.opt_state, LBFGSSlice)
            and not self.optimizer.regularizer.l2  # the pieces would add its part to it
        )  # fmt: skip
        if alone:
            self.round_divided = True
            out.update(self._pieces(np.divide(total, mean_w, out=total)))
            return out
        if self.epoch_sum is None:
            self.epoch_sum = total.copy()
        else:
            np.add(self.epoch_sum, total, out=self.epoch_sum)
        if close:
            out.update(self._epoch_pieces(mean_w))
        return out

    def _sum(self, slices: list[np.ndarray]) -> np.ndarray:
        """A new float64 array (with the padding row) of the slices summed in their order,
        each one read once: ``float64(g0) + float64(g1) + ...``, bitwise."""
        total = np.empty(self.published[1].shape)
        body = total[:-1] if self.padded else total
        if self.padded:
            total[-1] = 0.0
        if not slices:  # every rank's slice was lost with its worker (shard.round)
            body[...] = 0.0
        elif len(slices) == 1:
            np.copyto(body, slices[0])
        else:
            np.add(slices[0], slices[1], out=body, dtype=np.float64)
            for g in slices[2:]:
                np.add(body, g, out=body)
        return total

    def _epoch_pieces(self, mean_w: float) -> dict[str, Any]:
        """This shard's share of the epoch's penalty and (proximal) gradient norm, as the
        whole-model server computes them (``EpochRules.close_epoch``)."""
        assert self.epoch_sum is not None
        # the epoch's sum is done with: it becomes the mean gradient in place
        mean = np.divide(self.epoch_sum, mean_w, out=self.epoch_sum)
        self.epoch_sum = None
        return self._pieces(mean)

    def _pieces(self, mean: np.ndarray) -> dict[str, Any]:
        """The epoch's pieces from its ``mean`` gradient, which they change in place: the
        L2 penalty's part added, the intercept's entry zeroed when it is not fitted (the
        step zeroes it too, so without L2 the step may reuse ``mean``: see reduce)."""
        P, opt = self.published[1], self.optimizer
        reg = opt.regularizer
        g = reg.proximal_gradient(P, mean, opt.fit_intercept)
        if self.padded:
            g = g[:-1]
        flat = g.ravel()  # a view: the rows are contiguous
        out: dict[str, Any] = {
            "penalty": reg.penalty(P),
            "grad_sq": dot(flat, flat),  # no temporary of the shard's size
        }
        if P.ndim == 2:
            out["class_penalty"] = reg.column_penalty(P).tolist()
        return out

    # -- L-BFGS: the coordinator decides from dot products (lbfgs_sharded) -------------
    def evaluate(self, weight: float) -> dict[str, Any]:
        """L-BFGS: the objective's gradient at the published rows (the round's mean plus
        the penalty's, as ``LBFGSOptimizer.step`` forms it) kept, and this shard's parts of
        the dot products the coordinator decides with."""
        P, opt = self.published[1], self.optimizer
        assert isinstance(self.opt_state, LBFGSSlice) and self.round_sum is not None
        g = self.round_sum / weight if weight > 0 else np.zeros_like(P)
        opt.regularizer.add_gradient(P, g)
        if not opt.fit_intercept or self.padded:
            g[-1] = 0.0
        self.round_sum = None
        lbfgs = self.opt_state
        if self.scale is None and self.colsq and weight > 0:
            self.scale = self._preconditioner(weight)
        if self.scale is None:
            return lbfgs.evaluate(P, g)
        if lbfgs.D is None:  # fresh, restored or rolled back: its vectors are unscaled
            lbfgs.rescale(self.scale)
        return lbfgs.evaluate(P * self.scale, g / self.scale)

    def _preconditioner(self, weight: float) -> np.ndarray:
        """``sqrt(h0)`` of these rows, as the whole-model server's ``lbfgs_diagonal``:
        ``c * sum_i w_i x_ij^2 / sum_i w_i + l2`` (the intercept's row: ``c``; a padding
        row: 1), from the ranks' column squares summed in rank order."""
        c = self.curvature
        h = c * np.sum([self.colsq[r] for r in sorted(self.colsq)], axis=0) / weight
        if self.padded:  # every real row a coefficient; the padding row unscaled
            h = np.concatenate([h + self.optimizer.regularizer.l2, [1.0]])
        else:  # the last row is the intercept, not penalised
            h[:-1] += self.optimizer.regularizer.l2
        h = np.maximum(h, 1e-12 * c)
        P = self.published[1]
        return np.sqrt(h).reshape(-1, *([1] * (P.ndim - 1))) * np.ones_like(P)

    def direction(self, version: int, decision: dict[str, Any]) -> bool:
        """L-BFGS: apply the coordinator's ``decision`` (or stay: weightless data, or a
        round that lost a slice, whose point is evaluated again) and
        publish the next point as ``version + 1``; False (nothing published) when it is not
        finite."""
        P = self.published[1]
        assert isinstance(self.opt_state, LBFGSSlice)
        new = P
        if decision["action"] != "stay":
            new = self.opt_state.decide(decision).reshape(P.shape)
            if self.opt_state.D is not None:  # the scaled variables' point, unscaled
                assert self.scale is not None
                new = new / self.scale
            if not all_finite(new):
                return False
        self.publish(version + 1, new)
        return True

    def step(self, version: int, lr: float, t: int, weight: float) -> bool:
        """Step with the round's mean gradient; publish ``version + 1``. False (nothing
        published) when the rows became non-finite."""
        P = self.published[1]
        if weight > 0 and self.round_sum is not None:
            mean = self.round_sum  # the round's own sum, or its mean already (reduce)
            if not self.round_divided:
                mean = np.divide(mean, weight, out=mean)
            new = self.optimizer.apply(P, mean, self.opt_state, t, lr, overwrite_grad=True)
            if not all_finite(new):
                return False
            if self.padded:
                new[-1] = 0.0
        else:
            new = P
        self.round_sum = None
        self.publish(version + 1, new)
        return True

    # -- async/ssp: each push applied on arrival --------------------------------------
    def apply_push(
        self, grad: np.ndarray, lr: float, t: int, weight: float, epoch: int, generation: int
    ) -> bool | None:
        """Step this shard's rows with one push's slice now (async/ssp) and count it in its
        epoch; False (nothing published) when the rows became non-finite, None (nothing
        done) when the push was admitted before the last rebuild."""
        if generation != self.generation:
            return None
        grad = np.asarray(grad)
        # a float64 copy (padded) made here, read once; a float64 slice as it is
        own = grad.dtype != np.float64 or self.padded
        g = self._sum([grad]) if own else grad
        kept = False  # g became the epoch's sum
        if epoch > self.closed_through:
            if epoch in self.epoch_sums:
                np.add(self.epoch_sums[epoch], g, out=self.epoch_sums[epoch])
            else:
                self.epoch_sums[epoch] = g if own else g.copy()
                kept = own
            self.epoch_counts[epoch] = self.epoch_counts.get(epoch, 0) + 1
        v, P = self.published
        new = P
        if weight > 0:
            mean = np.divide(g, weight, out=g) if own and not kept else g / weight
            new = self.optimizer.apply(P, mean, self.opt_state, t, lr, overwrite_grad=True)
            if not all_finite(new):
                return False
            if self.padded:
                new[-1] = 0.0
        self.publish(v + 1, new)
        return True

    def epoch_pieces(self, epoch: int, mean_w: float) -> dict[str, Any]:
        """Async/ssp: the closed epoch's pieces (its gradient sum, at the rows now)."""
        self.epoch_sum = self.epoch_sums.pop(epoch, None)
        got = self.epoch_counts.pop(epoch, 0)
        self.closed_through = max(self.closed_through, epoch)
        if self.epoch_sum is None:
            self.epoch_sum = np.zeros_like(self.published[1])
        return {"status": "OK", "got": got, **self._epoch_pieces(mean_w)}

    # -- recovery: a copy of the rows and state at a version, here and on a replica ----
    def keep_backup(self, version: int | None = None) -> dict[str, Any]:
        """Keep this shard's rows and state as they are now, by version (their copy is
        what a rollback after a lost shard restores; the last :data:`BACKUPS` are kept,
        so a backup cut short never replaces the one the coordinator counts on); returns
        them to send to the replica. ``version``: the coordinator's count to file it under
        (in async/ssp mode a shard's own count of applied pushes falls behind it when an
        admitted push never arrived)."""
        out = self.export()
        if version is not None:
            out["version"] = int(version)
        keep_version(self.backups, out)
        return out

    def restore_backup(self, version: int, source: int, generation: int = 0) -> None:
        """Roll back to the backup of version ``source``, published as ``version`` (the
        coordinator's count goes on); the open round's slices and the open epoch's sums
        are dropped."""
        b = self.backups[source]
        P = np.asarray(b["params"], dtype=np.float64)
        state = {k: np.array(v) for k, v in b["state"].items()}
        if self.padded:
            P = np.concatenate([P, np.zeros((1, *P.shape[1:]))])
        self.opt_state = self._import(P, state)
        self.pending.clear()
        self.round_sum = self.epoch_sum = None
        self.epoch_sums.clear()
        self.epoch_counts.clear()
        self.hurry_through = self.closed_through = -1
        self.generation = int(generation)
        self.published = self.previous = (int(version), P)

    def export(self) -> dict[str, Any]:
        if isinstance(self.opt_state, LBFGSSlice):
            state = self.opt_state.export(self.published[1].shape)
        else:
            state = self.optimizer.export_state(self.opt_state)
        if self.padded:
            state = {k: v[:-1] for k, v in state.items()}
        out = {"params": self.rows.copy(), "state": state, "version": self.published[0]}
        if self.scale is not None:  # L-BFGS's preconditioner, for a shard rebuilt from it
            out["scale"] = self.scale
        return out
