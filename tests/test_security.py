"""Security: fits over TLS with the user's ``Security``, and jobs reachable only by their id."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from distributed import Client, LocalCluster
from distributed.protocol import ToPickle
from distributed.security import Security

from daskgd.driver import fit, fit_async
from daskgd.parameter_server import ParameterServer


def _problem():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((240, 3))
    y = X @ np.array([2.0, -1.0, 0.5]) - 1.0 + 0.05 * rng.standard_normal(240)
    sol = np.linalg.lstsq(np.column_stack([X, np.ones(240)]), y, rcond=None)[0]
    return X, y, sol


@pytest.fixture(scope="module")
def tls_cluster():
    """Two worker processes behind TLS, with the certificates of ``Security.temporary()``."""
    sec = Security.temporary()
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        protocol="tls://",
        security=sec,
        dashboard_address=":0",
        memory_limit="1GiB",
    ) as cluster:
        yield cluster, sec


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_fit_over_tls(tls_cluster, mode):
    cluster, sec = tls_cluster
    assert cluster.scheduler_address.startswith("tls://")
    X, y, sol = _problem()
    with Client(cluster, security=sec, set_as_default=False) as client:
        res = fit(
            (X, y),
            client=client,
            mode=mode,
            learning_rate=0.3 if mode == "sync" else 0.05,
            max_epochs=400,
            tol=None,
            gtol=1e-9 if mode == "sync" else None,
        )
        # every worker still talks TLS to the scheduler
        assert all(a.startswith("tls://") for a in client.scheduler_info()["workers"])
    atol = 1e-7 if mode == "sync" else 5e-2
    np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=atol)


def test_fit_async_over_tls(tls_cluster):
    cluster, sec = tls_cluster
    X, y, sol = _problem()

    async def go():
        async with Client(cluster.scheduler_address, security=sec, asynchronous=True) as c:
            return await fit_async(
                (X, y), client=c, learning_rate=0.3, max_epochs=400, tol=None, gtol=1e-9
            )

    res = asyncio.run(go())
    np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=1e-7)


def test_client_without_certificates_is_refused(tls_cluster):
    """A TLS scheduler cannot be reached (or sent handler messages) without a certificate."""
    cluster, _ = tls_cluster
    with pytest.raises((OSError, TypeError, ValueError)):
        Client(cluster.scheduler_address, timeout="3s", set_as_default=False)


def test_jobs_are_reached_only_by_their_id(tls_cluster):
    """A wrong id reads or stops nothing: ``unknown_job``, and the other jobs are untouched."""
    cluster, sec = tls_cluster
    with Client(cluster, security=sec, set_as_default=False) as client:
        client.register_plugin(ParameterServer())
        ranks = list(client.scheduler_info()["workers"])

        def call(op, **msg):
            return client.sync(getattr(client.scheduler, f"daskgd_{op}"), **msg)

        for job in ("job-a", "job-b"):
            reply = call(
                "create",
                job=job,
                params=ToPickle(np.ones(4)),
                config={"mode": "async", "n_samples": 100},
                optimizer={"name": "sgd", "learning_rate": 0.1},
                ranks=ranks,
            )
            assert reply["status"] == "OK", reply
        for wrong in ("job-c", "job-", "JOB-A", "", None, 1):
            for op in ("stop", "pull", "status", "close", "join", "push"):
                extra = {
                    "join": {"rank": 0, "worker": ranks[0]},
                    "push": {
                        "rank": 0,
                        "version": 0,
                        "grad": ToPickle(np.ones(4)),
                        "n": 1,
                        "weight": 1.0,
                        "loss": 1.0,
                    },
                }.get(op, {})
                reply = call(op, job=wrong, **extra)
                assert reply["status"] == "error" and reply["kind"] == "unknown_job", reply
        for job in ("job-a", "job-b"):
            st = call("status", job=job, params=True)
            assert not st["stopped"] and st["version"] == 0
            np.testing.assert_array_equal(st["params"], np.ones(4))
        assert call("stop", job="job-a")["stopped"]
        assert not call("status", job="job-b")["stopped"]
        call("close", job="job-a")
        call("close", job="job-b")
        assert not {"job-a", "job-b"} & set(call("info")["jobs"])
