"""The job state machine of the parameter server, without RPC: steps, rounds, stop,
incarnations, leases, snapshots and the history's parameter vectors."""

import itertools
import time

import numpy as np
import pytest

from daskgd.objective import make_optimizer
from daskgd.parameter_server import Job, JobConfig

WORKERS = {"w0", "w1"}


def _job(mode="async", d=3, **config) -> Job:
    cfg = JobConfig(**{"mode": mode, "n_samples": 20, "max_epochs": 1000, "tol": None, **config})
    opt = make_optimizer(name="sgd", learning_rate=0.5)
    return Job("j", np.zeros(d + 1), cfg, opt, ["w0", "w1"], None)


def test_published_pair_is_replaced_never_mutated():
    j = _job()
    before = j.published
    v0, p0 = before
    j.apply_async(0, 0, np.ones(4), 10, 10.0, 1.0)
    assert j.published is not before and j.version == 1
    assert v0 == 0 and np.all(p0 == 0.0)  # the old pair is untouched
    np.testing.assert_allclose(j.params, -0.05)


def test_no_step_after_the_stop():
    j = _job()
    j.stop("enough")
    assert j.apply_async(0, 0, np.ones(4), 10, 10.0, 1.0) is None
    assert j.arrive_sync(0, 0, np.ones(4), 10, 10.0, 1.0, None, WORKERS) == "stopped"
    assert j.version == 0 and j.ranks[0].updates == 0 and j.stats.updates == 0
    j.stop("again", converged=True)  # the first reason wins
    assert j.reason == "enough" and not j.converged


def test_the_push_that_reaches_max_epochs_is_the_last():
    j = _job(max_epochs=1)
    j.apply_async(0, 0, np.ones(4), 10, 10.0, 1.0)
    j.apply_async(1, 1, np.ones(4), 10, 10.0, 1.0)  # closes epoch 1: stop
    assert j.stopped and "max_epochs" in j.reason
    assert j.apply_async(0, 2, np.ones(4), 10, 10.0, 1.0) is None
    assert j.version == sum(h["updates"] for h in j.history) == 2


def test_sync_round_closes_when_every_live_member_pushed():
    j = _job(mode="sync")
    assert j.arrive_sync(0, 0, np.ones(4), 10, 10.0, 1.0, None, WORKERS) == "OK"
    assert j.version == 0 and 0 in j.pending
    assert j.arrive_sync(0, 0, np.ones(4), 10, 10.0, 1.0, None, WORKERS) == "twice"
    assert j.arrive_sync(1, 0, 3 * np.ones(4), 10, 30.0, 1.0, None, WORKERS) == "OK"
    assert j.version == 1 and not j.pending
    np.testing.assert_allclose(j.params, -0.5 * 4 / 40)
    assert j.arrive_sync(0, 0, np.ones(4), 10, 10.0, 1.0, None, WORKERS) == "stale"
    assert j.dropped == 1
    # a member whose worker is gone is not waited for
    assert j.arrive_sync(0, 1, np.ones(4), 10, 10.0, 1.0, None, {"w0"}) == "OK"
    assert j.version == 2


def test_a_silent_member_leaves_the_live_set_after_member_timeout():
    j = _job(mode="sync", member_timeout=30.0)
    assert j.live(WORKERS) == [0, 1]
    j.ranks[1].last_seen = time.monotonic() - 31.0  # its lease ran out
    assert j.live(WORKERS) == [0]
    j.arrive_sync(0, 0, np.ones(4), 10, 10.0, 1.0, None, WORKERS)
    assert j.version == 1  # the round closed without the silent member
    j.touch(1)  # rank 1 calls again: its lease is renewed
    assert j.live(WORKERS) == [0, 1]
    # rank 0 waits in the open round: silent, but waiting on the server, so live
    j.arrive_sync(0, 1, np.ones(4), 10, 10.0, 1.0, None, WORKERS)
    j.ranks[0].last_seen = time.monotonic() - 31.0
    assert j.live(WORKERS) == [0, 1] and j.version == 1
    with pytest.raises(ValueError, match="member_timeout"):
        JobConfig(member_timeout=0)


def test_a_new_incarnation_replaces_the_old_runs_waiting_gradient():
    j = _job(mode="sync")
    j.join(0, "w0", "run-1", WORKERS)
    j.arrive_sync(0, 0, np.ones(4), 10, 10.0, 1.0, None, WORKERS)
    assert 0 in j.pending
    j.join(0, "w1", "run-2", WORKERS)  # the rerun: the zombie's gradient is dropped
    assert 0 not in j.pending and j.ranks[0].incarnation == "run-2"
    assert j.arrive_sync(0, 0, np.ones(4), 10, 10.0, 1.0, None, WORKERS) == "OK"
    j.join(0, "w1", "run-2", WORKERS)  # the same run joining again keeps its gradient
    assert 0 in j.pending


def test_snapshot_and_its_sequence_number_change_together():
    j = _job(checkpoint_every=1)
    j.apply_async(0, 0, np.ones(4), 10, 10.0, 1.0)
    j.apply_async(1, 1, np.ones(4), 10, 10.0, 1.0)  # epoch 1 closes: a snapshot
    assert j.snapshot_seq == 1 and j.snapshot is not None
    assert j.snapshot["version"] == 2
    j.apply_async(0, 2, np.ones(4), 10, 10.0, 1.0)
    j.fresh_snapshot()
    assert j.snapshot_seq == 2 and j.snapshot["version"] == 3


def test_history_rows_drop_their_parameters_once_the_driver_has_them():
    j = _job(record_params=True)
    for v in range(6):
        j.apply_async(v % 2, v, np.ones(4), 10, 10.0, 1.0)
    assert len(j.history) == 3 and all("params" in h for h in j.history)
    out = j.report_status(2, False, WORKERS)  # the driver holds rows 0 and 1
    assert [h["epoch"] for h in out["history"]] == [3]
    assert ["params" in h for h in j.history] == [False, False, True]
    final = j.close(2, WORKERS)
    assert final["stopped"] and [h["epoch"] for h in final["history"]] == [3]
    assert "params" in final


def test_inline_threshold_is_a_job_setting():
    assert _job(d=3).inline
    assert not _job(d=3, inline_max_params=0).inline
    with pytest.raises(ValueError, match="inline_max_params"):
        JobConfig(inline_max_params=-1)


def test_a_first_join_keeps_clock_zero_and_a_rerun_catches_up():
    """ssp: a member that joins late for the first time starts at clock 0 (the others
    waited for it there); only a rerun of a lost member starts at the slowest clock."""
    j = _job(mode="ssp", max_staleness=2)
    j.join(0, "w0", "run-0", WORKERS)
    for v in range(2):
        j.apply_async(0, v, np.ones(4), 1, 1.0, 1.0)
    assert j.join(1, "w1", "run-1", WORKERS) == 0 and j.ranks[1].clock == 0
    j.apply_async(1, 2, np.ones(4), 1, 1.0, 1.0)
    # rank 1's worker was lost and the task rerun: it must not hold rank 0 back
    assert j.join(1, "w0", "run-2", WORKERS) == 2 and j.ranks[1].clock == 2


def test_a_zombie_push_checked_before_the_rerun_joined_is_refused_by_the_owner():
    """The push handler checks the incarnation on arrival, then waits for the job's owner;
    a rerun's join may run in between. The owner checks again: the zombie's gradient does
    not enter the round the rerun pushes to."""
    from daskgd.parameter_server.members import _SUPERSEDED, _if_current

    j = _job(mode="sync")
    j.join(0, "w0", "run-1", WORKERS)
    j.join(0, "w1", "run-2", WORKERS)  # the rerun joined while the zombie's push waited
    args = (0, np.ones(4), 10, 10.0, 1.0, None, WORKERS)
    assert _if_current(j, "run-1", j.arrive_sync, 0, *args) is _SUPERSEDED
    assert 0 not in j.pending
    assert _if_current(j, "run-2", j.arrive_sync, 0, *args) == "OK" and 0 in j.pending
    j2 = _job(mode="async")
    j2.join(1, "w0", "run-1", WORKERS)
    j2.join(1, "w1", "run-2", WORKERS)
    assert _if_current(j2, "run-1", j2.apply_async, 1, 0, np.ones(4), 10, 10.0, 1.0) is _SUPERSEDED
    assert j2.version == 0


def _cyclic(j, X, y, parts, pushes):
    """Ranks push in turn, each its partition's least-squares gradient at the published
    parameters (a full batch each): incremental gradient descent."""
    for k in range(pushes):
        if j.stopped:
            break
        r, (v, P) = k % len(parts), j.published
        rows = parts[r]
        resid = X[rows] @ P[:-1] + P[-1] - y[rows]
        grad = np.append(X[rows].T @ resid, resid.sum())
        if j.check is not None:  # what the push handler does: the check's part, no step
            j.take_check_part(r, j.check, v, grad, float(len(rows)), 0.0)
        else:
            j.apply_async(r, v, grad, len(rows), float(len(rows)), 0.5 * float(resid @ resid))


def test_async_gradient_test_on_a_cycle_is_checked_at_one_point():
    """Two partitions with far-apart optima, stepped in turn with a constant step: the
    iterates settle on a cycle whose gradients sum to zero along it. The gradient test
    holds on that sum; checked at one point it does not, and the fit is not converged."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 2))
    y = X @ np.array([1.0, -1.0]) + np.repeat([3.0, -3.0], 10)
    cfg = JobConfig(mode="async", n_samples=20, max_epochs=200, tol=None, gtol=1e-10)
    j = Job("j", np.zeros(3), cfg, make_optimizer(name="sgd", learning_rate=0.5), ["w0", "w1"],
            None)  # fmt: skip
    _cyclic(j, X, y, [np.arange(10), np.arange(10, 20)], 10_000)
    A = np.column_stack([X, np.ones(20)])
    checks = [(h["epoch"], h["check"]) for h in j.history if "check" in h]
    assert j.stopped and not j.converged and "max_epochs" in j.reason
    assert "gradient at one point" in j.reason
    assert checks and all(c["grad_norm"] > 1e-3 for _, c in checks)
    # the check's norm is the exact gradient's at the parameters it was taken at
    e, c = checks[0]
    assert e >= 1 and c["version"] >= 1
    # checks come at epochs at least twice apart
    assert all(b >= 2 * a for (a, _), (b, _) in itertools.pairwise(checks))
    w = j.params
    assert np.linalg.norm(A.T @ (A @ w - y) / 20) > 1e-3


def test_async_gradient_test_confirmed_at_one_point_converges():
    """One partition: async full batch is gradient descent; the check confirms the test."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 2))
    y = X @ np.array([1.0, -1.0]) + 0.5
    cfg = JobConfig(mode="async", n_samples=20, max_epochs=2000, tol=None, gtol=1e-10)
    j = Job("j", np.zeros(3), cfg, make_optimizer(name="sgd", learning_rate=0.5), ["w0"], None)
    _cyclic(j, X, y, [np.arange(20)], 10_000)
    assert j.converged and "confirmed at version" in j.reason, j.reason
    A = np.column_stack([X, np.ones(20)])
    np.testing.assert_allclose(j.params, np.linalg.lstsq(A, y, rcond=None)[0], atol=1e-9)
