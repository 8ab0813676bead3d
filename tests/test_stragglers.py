"""Stragglers: backup workers (``sync_quorum``) and a worker slowed on purpose.

The slow worker is played by the ``delay={rank: seconds}`` setting of
:class:`~daskgd.driver.FitSettings` (not a parameter of ``fit``): that rank's training task
sleeps before every push. Timings are only compared with each other
(relative order, a wide margin), never with a number of seconds.
"""

import numpy as np
import pytest

from daskgd.driver import FitSettings, fit, fit_with_settings

DELAY = 0.15  # seconds per step of the slowed rank
EPOCHS = 30


def _fit_delayed(data, *, client, _delay, **settings):
    """``fit`` with the stragglers' hook, which only the settings object takes."""
    return fit_with_settings(data, FitSettings(delay=_delay, **settings), client=client)


def _problem(n, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.5 + 0.3 * rng.standard_normal(n)
    A = np.column_stack([X, np.ones(n)])
    return X, y, A, np.linalg.lstsq(A, y, rcond=None)[0]


def _gap(res, A, y, sol):
    """Relative excess of the least-squares objective over the optimum."""
    f = 0.5 * np.mean((A @ np.append(res.coef_, res.intercept_) - y) ** 2)
    fstar = 0.5 * np.mean((A @ sol - y) ** 2)
    return (f - fstar) / fstar


@pytest.mark.parametrize(
    ("kwargs", "match", "error"),
    [
        ({"sync_quorum": 0}, "sync_quorum must be", ValueError),
        ({"sync_quorum": True}, "sync_quorum must be", ValueError),
        ({"sync_quorum": 3}, "sync_quorum=3 but the job has 2", ValueError),
        ({"sync_quorum": 1, "mode": "async"}, "mode='sync' only", ValueError),
        ({"sync_quorum": 1, "optimizer": "lbfgs"}, "lbfgs", ValueError),
        ({"worker_timeout": 0}, "worker_timeout must be", ValueError),
        ({"worker_timeout": float("inf")}, "worker_timeout must be", ValueError),
        ({"_delay": {"0": 1.0}}, "delay must be", ValueError),
        ({"delay": {0: 1.0}}, "unexpected keyword", TypeError),  # the hook is private
    ],
)
def test_quorum_and_timeout_settings_are_checked(client, kwargs, match, error):
    X, y, _, _ = _problem(200)
    run = _fit_delayed if "_delay" in kwargs else fit
    with pytest.raises(error, match=match):
        run((X, y), client=client, max_epochs=2, **kwargs)


def test_quorum_full_batch_converges_and_counts_dropped_gradients(client, reliability):
    """k=1 of 2 at equal speeds: each round steps on whichever partition came first."""
    X, y, A, sol = _problem(20_000)
    client.wait_for_workers(2, timeout=60)
    res = fit(
        (X, y),
        client=client,
        mode="sync",
        sync_quorum=1,
        learning_rate=0.5,
        max_epochs=60,
        tol=None,
        random_state=0,
    )
    assert res.n_iter_ == 60 and res.reason.startswith("reached max_epochs")
    assert _gap(res, A, y, sol) <= 1e-3
    # every version takes one gradient; the other member's gradient for it is dropped
    assert res.dropped_gradients_ > 0
    per_epoch = sum(h["dropped_gradients"] for h in res.history)
    assert 0 < per_epoch <= res.dropped_gradients_
    reliability.add("quorum-sync fits (sync_quorum=1 of 2)", 1)
    # a quorum of every member is plain sync: nothing dropped, the exact optimum
    res = fit((X, y), client=client, sync_quorum=2, learning_rate=0.5, max_epochs=60, tol=None)
    assert res.dropped_gradients_ == 0
    np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=1e-6)


def test_stragglers_hold_back_only_plain_sync(client, reliability):
    """One worker slowed on purpose: async, ssp and a quorum of 1 of 2 finish the same number
    of epochs well before plain sync, which waits for the slow worker every round."""
    X, y, A, sol = _problem(20_000)
    client.wait_for_workers(2, timeout=60)
    common = {"learning_rate": 0.5, "max_epochs": EPOCHS, "tol": None, "random_state": 0}
    runs = {
        "sync": {"mode": "sync"},
        "quorum": {"mode": "sync", "sync_quorum": 1},
        # the slow worker's first gradient (at the zero start) may land late in the run,
        # dozens of versions stale: scale its step down by its staleness
        "async": {"mode": "async", "staleness_lr": True},
        # the fast worker may run up to 1.5 * EPOCHS pushes ahead, then it waits: about a
        # quarter of sync's wait on the slow worker (EPOCHS * 2 pushes in all)
        "ssp": {"mode": "ssp", "max_staleness": 3 * EPOCHS // 2},
    }
    took = {}
    for name, kw in runs.items():
        res = _fit_delayed((X, y), client=client, _delay={1: DELAY}, **common, **kw)
        assert res.n_iter_ == EPOCHS, (name, res.reason)
        # the slow partition contributes rarely (or, with the quorum, never once it is
        # late): the fixed point is close to the fast partition's optimum, which is close
        # to the whole data's because the rows are exchangeable. In async and ssp a stale
        # push of the slow partition may be the last step, by timing alone: measured up to
        # 1.8e-3 there (a CI run), against 1e-3 for the sync modes, whose last step is fixed
        bound = 1e-3 if kw["mode"] == "sync" else 5e-3
        assert _gap(res, A, y, sol) <= bound, name
        took[name] = res.history[-1]["time"]  # job start to the last epoch, on the scheduler
        reliability.add(f"fits with a slowed worker, {name}", 1)
    for name in ("quorum", "async", "ssp"):
        assert took[name] * 2 < took["sync"], took


def test_ssp_bound_holds_in_a_fit(client, reliability):
    """ssp with a slowed worker: at every epoch's close, the fast member is at most
    ``max_staleness + 1`` pushes ahead of the slow one (it may push once past the bound,
    then it waits), counted from the history's per-worker updates."""
    X, y, _, _ = _problem(2_000)
    client.wait_for_workers(2, timeout=60)
    s = 2
    res = _fit_delayed((X, y), client=client, mode="ssp", max_staleness=s, batch_size=100,
              learning_rate=0.05, max_epochs=4, tol=None, _delay={1: 0.05},
              random_state=0)  # fmt: skip
    assert res.n_iter_ == 4
    clocks: dict[str, int] = {}
    leads = []
    for h in res.history:
        for w, k in h["worker_updates"].items():
            clocks[w] = clocks.get(w, 0) + k
        if len(clocks) == 2:
            leads.append(max(clocks.values()) - min(clocks.values()))
    assert leads and max(leads) <= s + 1, leads
    reliability.add("ssp fits with the bound checked", 1)


@pytest.mark.parametrize("attempt", range(3))
def test_no_step_after_the_stop_on_a_large_model(client, attempt, reliability):
    """A 40,000-parameter async fit (its steps run off the scheduler's event loop) stops
    at max_epochs=2 and applies nothing after: every update is in the history."""
    rng = np.random.default_rng(attempt)
    X = rng.standard_normal((60, 40_000)).astype(np.float32)
    y = (X[:, :10].sum(axis=1) > 0).astype(np.float32)
    client.wait_for_workers(2, timeout=60)
    res = fit((X, y), client=client, mode="async", loss="squared_error", batch_size=10,
              learning_rate=1e-4, max_epochs=2, tol=None, random_state=attempt)  # fmt: skip
    assert len(res.history) == 2 and res.reason.startswith("reached max_epochs")
    assert res.n_updates_ == sum(h["updates"] for h in res.history)
    reliability.add("large-model fits checked for steps after the stop", 1)
