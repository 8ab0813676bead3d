"""A worker killed mid-fit (nanny restart and kill -9), in sync and async mode.

The fit must finish, reach its tolerance on the whole data set, and never hang.
"""

import os
import signal
import threading

import numpy as np
import pytest

from daskgd.data import write_zarr
from daskgd.train import fit


def _problem(n=2000, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.5 + 0.3 * rng.standard_normal(n)
    A = np.column_stack([X, np.ones(n)])
    return X, y, np.linalg.lstsq(A, y, rcond=None)[0]


def _kill(client, how):
    victim = sorted(client.scheduler_info()["workers"])[-1]
    if how == "nanny":
        client.restart_workers([victim])
    else:
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
    return victim


@pytest.mark.parametrize(
    ("mode", "how", "source"),
    [
        ("sync", "nanny", "numpy"),
        ("sync", "kill9", "zarr"),
        ("async", "nanny", "zarr"),
        ("async", "kill9", "numpy"),
    ],
)
def test_worker_killed_mid_fit(client, tmp_path, mode, how, source):
    X, y, sol = _problem()
    data = (X, y)
    if source == "zarr":
        data = str(tmp_path / "d.zarr")
        write_zarr(data, X, y, chunk_rows=250)
    client.wait_for_workers(2, timeout=60)
    started = threading.Event()
    out = {}

    def run():
        try:
            # async stops on the loss (its fixed point depends on push rates, see below)
            stop = {"gtol": 1e-8} if mode == "sync" else {"tol": 1e-9, "n_iter_no_change": 20}
            out["res"] = fit(
                data,
                client=client,
                mode=mode,
                learning_rate=0.02,
                max_epochs=20000,
                max_time=120,
                **{"tol": None, **stop},
                callback=lambda row: started.set() if row["epoch"] >= 20 else None,
            )
        except BaseException as exc:  # surfaced below
            out["exc"] = exc

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(60)
    _kill(client, how)
    t.join(180)
    assert not t.is_alive(), "fit hung after a worker died"
    assert "exc" not in out, out.get("exc")
    res = out["res"]
    assert res.converged_, res.reason
    A = np.column_stack([X, np.ones(len(X))])
    f = 0.5 * np.mean((A @ np.append(res.coef_, res.intercept_) - y) ** 2)
    fstar = 0.5 * np.mean((A @ sol - y) ** 2)
    assert (f - fstar) / fstar <= (1e-8 if mode == "sync" else 1e-4)
    if mode == "sync":  # every round uses every live partition: the exact optimum
        np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=1e-6)
    # async weights each partition by how often it pushes; while a rerun task shares a
    # worker with another member its partition pushes less often, which biases the fixed
    # point slightly (asynchronous SGD's known behaviour with unequal worker speeds)
    client.wait_for_workers(2, timeout=60)
