"""ParameterServerClient: the client half of the protocol, against an in-process scheduler."""

import pickle

import numpy as np
import pytest
from distributed.utils_test import gen_cluster

from daskgd.errors import (
    BadMessageError,
    ParameterServerError,
    ParameterServerTimeoutError,
    ResumeRejectedError,
    SupersededError,
    TrainingError,
    UnknownJobError,
)
from daskgd.parameter_server import ParameterServer, ParameterServerClient
from daskgd.parameter_server.client import ERRORS, raise_for_reply

OPT = {"name": "sgd", "learning_rate": 0.5}
CLEAN = {"processes": False, "threads": False}


def test_one_table_maps_error_kinds_to_exceptions():
    for kind, cls in ERRORS.items():
        with pytest.raises(cls) as info:
            raise_for_reply("push", {"status": "error", "kind": kind, "message": "m"})
        assert info.value.kind == kind and info.value.op == "push"
    with pytest.raises(ParameterServerError) as info:  # an unknown kind: the base class
        raise_for_reply("push", {"status": "error", "kind": "internal", "message": "m"})
    assert type(info.value) is ParameterServerError
    assert isinstance(info.value, TrainingError)
    assert issubclass(BadMessageError, ValueError)
    ok = {"status": "stopped", "reason": "r"}
    assert raise_for_reply("push", ok) is ok  # normal answers pass through


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_client_round_trip_and_errors(c, s, a, b):
    await c.register_plugin(ParameterServer())
    ps = ParameterServerClient.from_client(c, "j")
    cfg = {"mode": "async", "n_samples": 10, "max_epochs": 100, "tol": None}
    assert (await ps.create(np.zeros(4), cfg, OPT, [a.address]))["status"] == "OK"
    with pytest.raises(BadMessageError, match="exists already"):
        await ps.create(np.zeros(4), cfg, OPT, [a.address])
    with pytest.raises(ResumeRejectedError):
        await ParameterServerClient.from_client(c, "r").create(
            np.zeros(4), cfg, OPT, [a.address], resume={"version": -1, "epochs": 0}
        )
    joined = await ps.join(0, a.address)
    assert joined["version"] == 0 and ps.wait_bound > 0
    reply = await ps.push(0, 0, np.ones(4), 10, 10.0, 1.0, worker=a.address)
    assert reply["status"] == "OK" and reply["version"] == 1
    assert (await ps.pull())["version"] == 1
    assert len((await ps.status())["history"]) == 1
    assert "j" in (await ps.info())["jobs"]
    # a newer run of rank 0 joins: the old run's pushes are refused
    rerun = ParameterServerClient.from_client(c, "j")
    await rerun.join(0, b.address)
    with pytest.raises(SupersededError):
        await ps.push(0, 1, np.ones(4), 10, 10.0, 1.0)
    assert (await rerun.push(0, 1, np.ones(4), 10, 10.0, 1.0))["version"] == 2
    final = await ps.close()
    assert final["version"] == 2
    with pytest.raises(UnknownJobError):
        await ps.pull()
    # pickled by name; unpickled outside a task it uses the default client
    clone = pickle.loads(pickle.dumps(ps))
    assert clone.job == "j"


@gen_cluster(client=True, clean_kwargs=CLEAN)
async def test_every_call_has_a_timeout(c, s, a, b):
    """A push held by the server longer than the client's timeout (a sync round waiting
    for a member that never pushes) raises instead of hanging."""
    await c.register_plugin(ParameterServer())
    ps = ParameterServerClient.from_client(c, "s", timeout=0.2)
    cfg = {"mode": "sync", "n_samples": 20, "max_epochs": 100, "tol": None}
    await ps.create(np.zeros(4), cfg, OPT, [a.address, b.address])
    with pytest.raises(ParameterServerTimeoutError, match="no reply within"):
        await ps.push(0, 0, np.ones(4), 10, 10.0, 1.0)
    with pytest.raises(ValueError, match="timeout"):
        ParameterServerClient("s", c.scheduler, timeout=0)
