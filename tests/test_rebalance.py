"""The latency placement's decisions (:mod:`daskgd.parameter_server.rebalance`), on their own:
which chunks move, when a move does not pay, and the setting's checks. The fits that use
it are in ``test_placement.py``."""

from __future__ import annotations

import pytest

from daskgd.parameter_server.config import JobConfig
from daskgd.parameter_server.rebalance import (
    ASYNC_MIN_GAIN,
    HORIZON,
    MIN_GAIN,
    PASSES,
    Rebalancer,
    check_rebalance,
)


def _epoch(rb: Rebalancer, seconds_per_row: list[float], read: float = 0.0) -> None:
    """Each rank pushes its rows once at its speed; ``read`` seconds per row read."""
    for r, spr in enumerate(seconds_per_row):
        rows = rb.rows(r)
        rb.observe(r, rows, [rows * spr, rows * read, rows])


def test_chunks_move_from_the_slow_rank_until_the_rounds_even_out():
    rb = Rebalancer([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]], [100] * 12, 1)
    _epoch(rb, [2e-3, 1e-3, 1e-3])  # rank 0 half as fast: 0.8 s against 0.4 s
    moves = rb.end_epoch(1, 50)
    assert [m["from"] for m in moves] == [0] * len(moves)
    assert {m["to"] for m in moves} == {1, 2}
    # capacity 1 : 2 : 2 of 1200 rows: 240 : 480 : 480, in chunks of 100
    assert sorted(rb.rows(r) for r in range(3)) == [200, 500, 500]
    assert rb.version == 1 and rb.moves == moves
    assert sorted(c for a in rb.assignment for c in a) == list(range(12))
    # the epoch after a move decides nothing, whatever it measured (one-off costs)
    _epoch(rb, [9e-3, 1e-3, 1e-3])
    assert rb.end_epoch(2, 50) == [] and rb.version == 1
    # measured again with the new rows: even enough, nothing moves
    _epoch(rb, [2e-3, 1e-3, 1e-3])
    assert rb.end_epoch(3, 50) == [] and rb.version == 1
    assert rb.message() == [1, rb.assignment]


def test_equal_speeds_and_small_gains_move_nothing():
    rb = Rebalancer([[0, 1], [2, 3]], [100] * 4, 1)
    _epoch(rb, [1e-3, 1e-3])
    assert rb.end_epoch(1, 10) == []
    # a rank 4% slower: one chunk would gain less than MIN_GAIN of the epoch
    _epoch(rb, [1.04e-3, 1e-3])
    assert MIN_GAIN > 0.04 / 2 and rb.end_epoch(1, 10) == []


def test_a_move_that_costs_more_than_it_gains_is_not_made():
    rb = Rebalancer([[0, 1, 2, 3], [4, 5, 6, 7]], [100] * 8, 1)
    # one chunk off rank 0 gains 0.2 s an epoch; reading it costs 100 rows x 2e-3 s
    _epoch(rb, [2e-3, 1e-3], read=2e-3)
    assert rb.end_epoch(1, 1) == []  # 0.2 s x 1 epoch left does not beat 0.2 s
    assert not rb.settling
    _epoch(rb, [2e-3, 1e-3], read=2e-3)
    moves = rb.end_epoch(1, 100)  # the gain counts over HORIZON epochs
    assert moves and all(m["gain_s"] * HORIZON > m["cost_s"] for m in moves)


def test_a_long_fit_counts_the_gain_over_as_many_epochs_as_it_ran():
    def one(done: int) -> list:
        rb = Rebalancer([[0, 1, 2, 3], [4, 5, 6, 7]], [100] * 8, 1)
        _epoch(rb, [2e-3, 1e-3], read=1.2e-2)  # a chunk: 0.2 s gained an epoch, 1.2 s to read
        return rb.end_epoch(done, 1000)

    assert one(1) == [] and one(HORIZON) == []
    assert one(7)


def test_a_rank_keeps_a_chunk_and_a_batch_a_row():
    rb = Rebalancer([[0], [1, 2]], [100, 100, 100], 1)
    _epoch(rb, [1.0, 1e-3])  # rank 0 very slow, but it has one chunk only
    assert rb.end_epoch(1, 10) == []
    rb = Rebalancer([[0, 1], [2, 3]], [100] * 4, 150)  # 150 batches an epoch
    _epoch(rb, [1.0, 1e-3])
    assert rb.end_epoch(1, 10) == []  # 100 rows would be fewer than 150 batches


def test_an_epoch_without_every_rank_measured_moves_nothing():
    rb = Rebalancer([[0, 1], [2, 3]], [100] * 4, 1)
    rb.observe(0, 200, [1.0, 0.0, 0])
    assert rb.end_epoch(1, 10) == []
    for bad in (None, [1.0], ["a", 0, 0], [float("nan"), 0, 0], [-1.0, 0, 0]):
        rb.observe(0, 200, bad)  # ignored
    assert rb.kernel == [0.0, 0.0]


@pytest.mark.parametrize(
    "spec, match",
    [
        ([], "a dict"),
        ({"assignment": [[0]]}, "a dict"),
        ({"assignment": [[0]], "chunk_rows": []}, "chunk_rows"),
        ({"assignment": [[0]], "chunk_rows": [0]}, "chunk_rows"),
        ({"assignment": [[0], [0]], "chunk_rows": [5]}, "every chunk to one rank"),
        ({"assignment": [[0], []], "chunk_rows": [5]}, "every chunk to one rank"),
        ({"assignment": [["a"]], "chunk_rows": [5]}, "lists of chunks"),
    ],
)
def test_check_rebalance(spec, match):
    assert match in check_rebalance(spec)
    with pytest.raises(ValueError, match="rebalance"):
        JobConfig(rebalance=spec)


def test_rebalance_takes_every_mode_and_one_list_per_rank():
    ok = {"assignment": [[0, 1], [2]], "chunk_rows": [5, 5, 5]}
    assert check_rebalance(ok) is None and check_rebalance(ok, 2) is None
    assert "2 ranks, the job 3" in check_rebalance(ok, 3)
    for mode in ("sync", "async", "ssp"):
        JobConfig(mode=mode, rebalance=ok, max_staleness=2 if mode == "ssp" else None)


# -- async and ssp ---------------------------------------------------------------------


def _pushes(rb: Rebalancer, clock: list[float], rank: int, k: int, spr: float, fixed: float,
            held: float = 0.0, version: int = 0) -> None:  # fmt: skip
    """``k`` pushes of ``rank``, each a batch at ``spr`` seconds per row, ``fixed`` seconds
    beside the kernel, then ``held`` seconds waiting on the server (ssp)."""
    rows = rb.rows(rank) // rb.nb
    for _ in range(k):
        clock[rank] += rows * spr + fixed
        rb.observe(rank, rows, [rows * spr, 0.0, 0, float(version)], now=clock[rank])
        rb.held(rank, held)
        clock[rank] += held


def test_async_steps_weigh_each_push_by_its_rows():
    rb = Rebalancer([[0, 1, 2], [3]], [100] * 4, 10, patient=True)
    assert rb.step_scale(30) == 1.0  # a batch of the largest rank (300 rows / 10)
    assert rb.step_scale(10) == pytest.approx(1 / 3)
    assert rb.step_scale(45) == 1.0  # never more than the configured step


def test_async_measures_until_every_rank_passed_over_its_rows():
    """A server epoch in which the slow rank did not pass over its rows decides nothing,
    and what was measured so far is kept for the next."""
    rb = Rebalancer([[0, 1, 2, 3], [4, 5, 6, 7]], [100] * 8, 4, patient=True)
    clock = [0.0, 0.0]
    _pushes(rb, clock, 1, 8, 1e-3, 1e-3)  # rank 1 passed over its rows twice (PASSES)
    _pushes(rb, clock, 0, 4, 2e-3, 1e-3)  # rank 0, twice as slow, once
    assert PASSES == 2 and rb.end_epoch(1, 100) == [] and rb.done == [400, 800]
    # the first whole window holds the tasks' start: measured, not decided on
    _pushes(rb, clock, 0, 4, 2e-3, 1e-3)
    assert rb.end_epoch(2, 100) == [] and rb.done == [0, 0] and not rb.settling
    _pushes(rb, clock, 0, 8, 2e-3, 1e-3)
    _pushes(rb, clock, 1, 8, 1e-3, 1e-3)
    moves = rb.end_epoch(3, 100)
    # 1 : 2 of 800 rows, in chunks of 100: 300 : 500 (the fixed cost is each rank's)
    assert {(m["from"], m["to"]) for m in moves} == {(0, 1)}
    assert (rb.rows(0), rb.rows(1)) == (300, 500) and rb.version == 1
    # timings measured on the former rows (version 0) are not counted
    _pushes(rb, clock, 0, 4, 2e-3, 1e-3, version=0)
    assert rb.done == [0, 0]


def _past_the_start(rb: Rebalancer) -> Rebalancer:
    rb.settling = False  # as after the first window (see the test above)
    return rb


def test_async_fixed_costs_and_server_waits():
    """The gaps between a rank's pushes, less its kernel time and the time the server held
    it (ssp), are its fixed cost per push: counted in its epoch, which no move changes."""
    rb = _past_the_start(Rebalancer([[0, 1], [2, 3]], [100] * 4, 2, patient=True))
    clock = [0.0, 0.0]
    _pushes(rb, clock, 0, 5, 1e-3, 0.05, held=0.2)
    _pushes(rb, clock, 1, 5, 1e-3, 0.01, held=0.0)
    assert rb.gaps == [4, 4]
    assert rb.overhead[0] == pytest.approx(4 * 0.05) and rb.overhead[1] == pytest.approx(0.04)
    speed, fixed = rb._speeds()
    assert speed == pytest.approx([1e3, 1e3]) and fixed == pytest.approx([0.1, 0.02])
    # rank 0 takes 0.3 s an epoch, rank 1 0.22 s: one chunk (0.1 s) would make them
    # 0.2 s and 0.32 s, a longer epoch, so nothing moves
    assert rb.end_epoch(1, 100) == []


def test_async_moves_only_when_together_they_gain_enough():
    """One chunk at a time may gain less than ASYNC_MIN_GAIN; the moves are judged
    together, and none made when together they gain too little."""
    rb = _past_the_start(
        Rebalancer([list(range(20)), list(range(20, 40))], [50] * 40, 1, patient=True)
    )
    clock = [0.0, 0.0]
    _pushes(rb, clock, 0, 2, 1.5e-3, 0.0)  # 1.5 s against 1 s an epoch
    _pushes(rb, clock, 1, 2, 1e-3, 0.0)
    moves = rb.end_epoch(1, 100)
    # each chunk narrows the 0.5 s spread by 0.125 s, less than 15% of 1.5 s; four even
    # the epochs out (1.2 s each)
    assert len(moves) == 4 and all(m["gain_s"] < ASYNC_MIN_GAIN * 1.5 for m in moves)
    assert (rb.rows(0), rb.rows(1)) == (800, 1200)
    rb = _past_the_start(
        Rebalancer([list(range(10)), list(range(10, 20))], [100] * 20, 1, patient=True)
    )
    _pushes(rb, clock, 0, 2, 1.1e-3, 0.0)  # 10% slower: at best 1.1 s -> 1.05 s
    _pushes(rb, clock, 1, 2, 1e-3, 0.0)
    assert rb.end_epoch(1, 100) == [] and rb.version == 0
