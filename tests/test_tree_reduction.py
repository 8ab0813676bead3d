"""``reduction="tree"``: a feature-partitioned fit's partial margins summed worker to worker.

Real worker processes and Zarr stores; the same fit with ``reduction="coordinator"`` (every
sum through the scheduler) as the oracle, to 1e-10, for full-batch L-BFGS and gradient
descent, least squares and logistic, feature and grid partitions; a worker killed mid-fit;
the coordinator's answers to a rank of the tree that waits; the settings' checks.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from _kills import fit_and_kill, runs_rank
from distributed import Client, LocalCluster

from daskgd.data import write_zarr
from daskgd.driver import fit, fit_with_settings
from daskgd.driver.settings import FitSettings
from daskgd.errors import InvalidSettingError, TrainingError
from daskgd.parameter_server.block_job import TREE_QUIET, BlockJob, BlockRules
from daskgd.parameter_server.block_tree import tree_neighbours


def _problem(n=1200, d=12, seed=0, classify=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, size=d)
    y = X @ rng.standard_normal(d) + 0.5 + 0.3 * rng.standard_normal(n)
    if classify:
        y = np.where(y > np.median(y), 1.0, -1.0)
    return X, y


def _ridge(X, y, alpha):
    n, d = X.shape
    A = np.column_stack([X, np.ones(n)])
    H = A.T @ A / n
    H[:d, :d] += alpha * np.eye(d)
    return np.linalg.solve(H, A.T @ y / n)


@pytest.mark.parametrize("partition", ["features", "grid"])
@pytest.mark.parametrize("loss", ["squared_error", "log_loss"])
@pytest.mark.parametrize("optimizer", ["lbfgs", "sgd"])
def test_tree_gives_the_coordinators_result(quad, tmp_path, partition, loss, optimizer):
    """The same iterates both ways, to 1e-10: the sums differ only in the order of their
    additions; no margin goes through the scheduler with the tree."""
    X, y = _problem(classify=loss == "log_loss")
    path = str(tmp_path / "tree.zarr")
    write_zarr(path, X, y, chunk_rows=300, chunk_cols=3,
               task="classification" if loss == "log_loss" else "regression")  # fmt: skip
    common = dict(loss=loss, partition=partition, optimizer=optimizer, alpha=0.05, tol=None,
                  max_epochs=20, client=quad)  # fmt: skip
    if optimizer == "sgd":
        common["learning_rate"] = 0.05
    coord = fit(path, reduction="coordinator", **common)
    tree = fit(path, reduction="tree", **common)
    scale = np.abs(coord.coef_).max()
    np.testing.assert_allclose(tree.coef_, coord.coef_, rtol=1e-10, atol=1e-10 * scale)
    assert tree.intercept_ == pytest.approx(coord.intercept_, rel=1e-10, abs=1e-10 * scale)
    assert [h["epoch"] for h in tree.history] == [h["epoch"] for h in coord.history]
    np.testing.assert_allclose([h["loss"] for h in tree.history],
                               [h["loss"] for h in coord.history], rtol=1e-12)  # fmt: skip
    n_blocks = 4
    assert len(tree.blocks_) == n_blocks
    if partition == "grid":
        assert sorted({b["columns"] for b in tree.blocks_}) == [(0, 6), (6, 12)]
    # every rank sent its margins to its tree neighbours, and far less to the scheduler
    t, c = tree.timings_, coord.timings_
    assert all(b == 0 for b in c["peer_bytes"])
    assert sum(t["peer_bytes"]) >= tree.n_iter_ * len(y) * 8
    margins = tree.n_iter_ * len(y) * 8  # at least one margin sum per iteration, per rank
    for r in range(n_blocks):
        assert c["scheduler_bytes"][r] - t["scheduler_bytes"][r] >= margins


def test_tree_fit_reaches_the_ridge_optimum(quad, tmp_path):
    X, y = _problem(n=1000, d=8)
    ref = _ridge(X, y, 0.1)
    res = fit((X, y), partition="features", optimizer="lbfgs", reduction="tree", alpha=0.1,
              gtol=1e-10, tol=None, max_epochs=300, client=quad)  # fmt: skip
    assert res.converged_, res.reason
    np.testing.assert_allclose(res.coef_, ref[:-1], atol=1e-8 * np.abs(ref).max())
    assert res.intercept_ == pytest.approx(ref[-1], abs=1e-8)


def test_worker_killed_mid_fit_with_the_tree(tmp_path, reliability):
    """kill -9 the worker of block 1 while the ranks reduce through the tree: the ranks
    waiting for its part hear of the new generation from the coordinator, every block
    restarts, and the fit reaches the uninterrupted fit's result."""
    X, y = _problem(n=1200, d=12)
    ref = _ridge(X, y, 0.1)
    path = str(tmp_path / "kill.zarr")
    write_zarr(path, X, y, chunk_rows=400, chunk_cols=4)
    settings = dict(partition="features", reduction="tree", alpha=0.1, tol=None,
                    max_epochs=400, optimizer="sgd", learning_rate=0.5, gtol=1e-8,
                    delay={1: 0.05})  # fmt: skip
    with (
        LocalCluster(n_workers=3, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        whole = fit_with_settings(path, FitSettings(**settings), client=c)
        out = fit_and_kill(c, path, settings, after_epoch=3,
                           victim=lambda c: runs_rank(c, 1, kind="block"))  # fmt: skip
        reliability.add("worker kills (kill -9), feature partitioning, tree reduction")
    assert "error" not in out, out.get("error")
    res = out["res"]
    assert res.recoveries_ and res.recoveries_[0]["rank"] == 1
    assert res.converged_, res.reason
    epochs = [h["epoch"] for h in res.history]
    assert epochs == sorted(set(epochs))
    np.testing.assert_allclose(res.coef_, ref[:-1], atol=1e-5 * np.abs(ref).max())
    np.testing.assert_allclose(res.coef_, whole.coef_, atol=1e-5 * np.abs(ref).max())


def test_a_rank_silent_in_the_tree_fails_the_fit_naming_it():
    """Rank 1 hangs before its margins' sum (the delay hook): its parent in the tree
    waits in slices, and once rank 1 has called nothing for TREE_QUIET seconds and the
    wait passed member_timeout, the fit fails naming it; no rank waits forever."""
    X, y = _problem(n=600, d=6)
    settings = dict(partition="features", reduction="tree", optimizer="lbfgs", tol=None,
                    max_epochs=5, member_timeout=1.0, delay={1: TREE_QUIET + 4})  # fmt: skip
    with (
        LocalCluster(n_workers=3, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        with pytest.raises(TrainingError, match=r"rank\(s\) \[1\].*sent nothing to rank 0"):
            fit_with_settings((X, y), FitSettings(**settings), client=c)


def test_the_coordinator_answers_a_waiting_rank_of_the_tree():
    """Go on (with the ranks' workers) while the rank waited for is alive; restart on a
    new generation; past member_timeout fail, naming the rank that stopped calling."""
    job = BlockJob("j", 4, BlockRules(max_epochs=5), member_timeout=1.0)
    for r in range(4):
        job.join(r, f"tcp://w{r}")
    reply = job.tree_check(1, 0, [3], 5.0, False)  # rank 3 called a moment ago
    assert reply == {"status": "ok", "workers": [f"tcp://w{r}" for r in range(4)]}
    assert job.tree_check(0, 0, [1], 0.5, True)["status"] == "ok"  # not past the timeout
    assert job.tree_check(0, 7, [1], 0.5, False)["status"] == "restart"
    job.seen[3] = time.monotonic() - 2 * TREE_QUIET
    assert job.tree_check(1, 0, [3], 0.5, False)["status"] == "ok"  # not past the timeout
    reply = job.tree_check(1, 0, [3], 5.0, False)
    assert reply["status"] == "stopped"
    assert "rank(s) [3]" in reply["error"] and "tcp://w3" in reply["error"]
    assert job.error_kind == "member_timeout"
    job = BlockJob("k", 2, BlockRules(max_epochs=5), member_timeout=1.0)
    for r in range(2):
        job.join(r, f"tcp://w{r}")
    reply = job.tree_check(1, 0, [0], 5.0, True)  # alive, but its worker unreachable
    assert reply["status"] == "stopped" and "could not be reached" in reply["error"]


def test_the_tree_is_a_binary_tree_in_rank_order():
    members = [2, 5, 7, 9, 11]
    links = {r: tree_neighbours(r, members) for r in members}
    assert links == {2: (None, [5, 7]), 5: (2, [9, 11]), 7: (2, []), 9: (5, []), 11: (5, [])}
    assert tree_neighbours(4, [4]) == (None, [])


def test_reduction_is_checked():
    X, y = _problem(n=50, d=3)
    with pytest.raises(InvalidSettingError, match="partition='features'"):
        fit((X, y), reduction="tree", client="tcp://127.0.0.1:1")
    with pytest.raises(InvalidSettingError, match="reduction"):
        fit((X, y), partition="features", reduction="ring", client="tcp://127.0.0.1:1")
