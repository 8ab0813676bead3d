"""Property-based fuzzing of every ``daskgd_*`` handler over real comms.

Each handler is called through ``client.scheduler.daskgd_<op>(...)`` (a TCP comm to a
real scheduler, as the driver and the workers call it) with random and malformed
payloads: wrong types and shapes, NaN, huge and negative numbers, missing and extra
keys, bytes, nested junk, unknown job ids, out-of-range ranks, stale and future
versions. The properties: every call is answered with a well-formed reply (an error
dict or a valid answer, never an exception raised into the scheduler), nothing is
logged at ERROR level on the scheduler, the scheduler keeps running, and a job created
beforehand is untouched and still trains afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from distributed import Client, LocalCluster
from distributed.protocol import ToPickle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from daskgd.driver import fit
from daskgd.parameter_server import PLUGIN_NAME, ParameterServer

LEGIT = "legit-job"
FUZZ = "fuzz-job"
LR = 0.5
D1 = 4  # parameters of the legitimate and the fuzzed job (3 features + intercept)
# addresses no worker has: a sync round of these ranks never waits for anyone
FAKE_RANKS = ["tcp://10.255.255.1:1", "tcp://10.255.255.2:1"]
ARGS: dict[str, tuple[str, ...]] = {
    "create": ("job", "params", "config", "optimizer", "ranks", "client", "resume"),
    "join": ("job", "rank", "worker", "incarnation"),
    "ready": (
        "job",
        "rank",
        "worker",
        "loss0",
        "loss_zero",
        "grad0",
        "weight",
        "curvature",
        "gram",
        "incarnation",
    ),
    "push": ("job", "rank", "version", "grad", "n", "weight", "loss", "worker", "incarnation"),
    "pull": ("job",),
    "status": ("job", "since", "params", "wait"),
    "stop": ("job", "reason"),
    "close": ("job", "since"),
    "snapshot": ("job", "fresh", "since"),
    "info": (),
}
# keyword names the RPC layer itself consumes: not something a handler ever sees
_RPC_KEYS = {"op", "reply", "serializers", "deserializers", "close"}
DEFAULT_EXAMPLES = 300
STRESS_EXAMPLES = 3000


class _ErrorLog(logging.Handler):
    """Collects ERROR records of the scheduler's loggers (in-process here)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Client, LocalCluster, _ErrorLog]]:
    """An in-process scheduler reached over TCP, the plugin installed, and a legit job."""
    errors = _ErrorLog()
    loggers = [logging.getLogger(n) for n in ("distributed", "daskgd")]
    for lg in loggers:
        lg.addHandler(errors)
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=False,
            protocol="tcp://",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        client.register_plugin(ParameterServer())
        reply = _call(client, "create", _legit_create())
        assert reply["status"] == "OK", reply
        yield client, cluster, errors
    for lg in loggers:
        lg.removeHandler(errors)


def _legit_create(job: str = LEGIT, mode: str = "async", inline: int = 16384) -> dict[str, Any]:
    # inline_max_params=0: the job takes the large-model path (steps in a worker thread)
    config = {"mode": mode, "n_samples": 10**6, "max_epochs": 10, "tol": None}
    return {
        "job": job,
        "params": ToPickle(np.arange(D1, dtype=np.float64) / 10),
        "config": {**config, "inline_max_params": inline},
        "optimizer": {"name": "sgd", "learning_rate": LR},
        "ranks": FAKE_RANKS,
    }


def _call(client: Client, op: str, msg: dict[str, Any]) -> Any:
    async def go() -> Any:
        return await asyncio.wait_for(getattr(client.scheduler, f"daskgd_{op}")(**msg), 30)

    return client.sync(go)


def _state(client: Client, job: str) -> tuple[int, np.ndarray, bool]:
    r = _call(client, "status", {"job": job, "params": True})
    assert r["status"] == "OK", r
    return r["version"], np.asarray(r["params"]), r["stopped"]


def _check_reply(op: str, msg: dict[str, Any], reply: Any) -> None:
    assert isinstance(reply, dict), (op, msg, reply)
    assert reply.get("status") in ("OK", "stale", "stopped", "error"), (op, msg, reply)
    if reply["status"] == "error":
        assert isinstance(reply.get("message"), str) and reply["message"], reply
        kinds = ("bad_message", "unknown_job", "superseded", "bad_resume")
        assert reply.get("kind") in kinds, (op, msg, reply)
    if "params" in reply:
        assert isinstance(reply["params"], np.ndarray)
    if "version" in reply and op != "info":
        assert isinstance(reply["version"], int) and reply["version"] >= 0


# -- strategies ----------------------------------------------------------------------------
_DTYPES = [
    np.float64,
    np.float32,
    np.float16,
    np.int64,
    np.uint8,
    np.bool_,
    np.complex128,
    "U3",
    "S2",
]
_HUGE = st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**400, -(10**30), 1e308, -1e308])
_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
_arrays = (
    hnp.arrays(st.sampled_from(_DTYPES), _shapes)
    | hnp.arrays(np.float64, st.sampled_from([(D1,), (D1 - 1,), (D1, 1), (1, D1), (0,)]))
    | hnp.arrays(object, _shapes, elements=st.none() | st.integers() | st.text(max_size=3))
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | _HUGE
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.complex_numbers(max_magnitude=1e6)
    | st.text(max_size=12)
    | st.binary(max_size=12)
    | st.sampled_from([np.float64("nan"), np.int64(1), np.float32(2.5), np.bool_(True)])
)
junk = st.recursive(
    _scalars | _arrays,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers(), max_size=3)
        | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3)
    ),
    max_leaves=6,
)
_ids = st.sampled_from([FUZZ, "no-such-job", "", "legit", f"{LEGIT} ", LEGIT.upper()])
_small_ints = st.integers(-3, 12)
_good_grad = st.builds(
    lambda v: ToPickle(np.asarray(v, dtype=np.float64)),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=D1, max_size=D1),
)
_config = st.fixed_dictionaries(
    {"mode": st.sampled_from(["sync", "async", "ssp", "bsp"]) | junk},
    optional={
        k: v | junk
        for k, v in {
            "n_samples": _small_ints,
            "batches_per_epoch": _small_ints,
            "max_epochs": _small_ints,
            "tol": st.floats(allow_nan=True) | st.none(),
            "gtol": st.floats(allow_nan=True) | st.none(),
            "gtol_rel": st.floats(allow_nan=True) | st.none(),
            "auto_lr": st.booleans(),
            "loss_curvature": st.floats(allow_nan=True),
            "max_time": st.floats(allow_nan=True) | st.none(),
            "max_staleness": _small_ints | st.none(),
            "staleness_lr": st.booleans(),
            "ssp_timeout": st.floats(allow_nan=True),
            "divergence_factor": st.floats(allow_nan=True),
            "record_params": st.booleans(),
            "member_timeout": st.floats(allow_nan=True),
            "inline_max_params": _small_ints,
            "no_such_setting": st.integers(),
        }.items()
    },
)
_optimizer = st.fixed_dictionaries(
    {"name": st.sampled_from(["sgd", "momentum", "adam", "adagrad", "lbfgs", "newton"]) | junk},
    optional={
        k: v | junk
        for k, v in {
            "learning_rate": st.floats(allow_nan=True, allow_infinity=True),
            "lr_schedule": st.sampled_from(["constant", "invscaling", "step", "wild"]),
            "alpha": st.floats(allow_nan=True),
            "l1_ratio": st.floats(allow_nan=True),
            "fit_intercept": st.booleans(),
            "options": st.dictionaries(st.sampled_from(["momentum", "eps", "beta9"]), junk),
        }.items()
    },
)
PLAUSIBLE: dict[str, Any] = {
    "job": _ids,
    "resume": st.none()
    | st.fixed_dictionaries(
        {"version": _small_ints, "epochs": _small_ints, "state": junk},
        optional={"progress": junk},
    ),
    "fresh": st.booleans(),
    "params": st.builds(ToPickle, _arrays),
    "config": _config,
    "optimizer": _optimizer,
    "ranks": st.lists(st.text(max_size=20), max_size=3) | st.just(FAKE_RANKS),
    "client": st.none() | st.text(max_size=8),
    "rank": _small_ints,
    "worker": st.none() | st.text(max_size=20) | st.just(FAKE_RANKS[0]),
    "version": _small_ints,
    "grad": _good_grad | st.builds(ToPickle, _arrays),
    "n": _small_ints,
    "weight": st.floats(allow_nan=True, allow_infinity=True) | _small_ints,
    "loss": st.floats(allow_nan=True, allow_infinity=True) | _small_ints,
    "loss0": st.floats(allow_nan=True, allow_infinity=True) | _small_ints,
    "loss_zero": st.floats(allow_nan=True, allow_infinity=True) | _small_ints,
    "grad0": _good_grad | st.builds(ToPickle, _arrays),
    "curvature": st.none()
    | st.tuples(*[st.floats(allow_nan=True, allow_infinity=True)] * 3)
    | st.lists(st.floats(0, 10), min_size=3, max_size=3),
    "gram": st.none()
    | st.builds(ToPickle, hnp.arrays(np.float64, st.sampled_from([(D1, D1), (D1 - 1, D1 - 1)])))
    | st.builds(ToPickle, _arrays),
    "since": _small_ints,
    "incarnation": st.none() | st.text(max_size=6),
    "reason": st.text(max_size=20),
    # a valid wait blocks the call until the next epoch: keep valid ones short, so the
    # run stays bounded, and try every kind of invalid one
    "wait": st.one_of(
        st.floats(0, 0.02),
        st.floats(max_value=-1e-9),
        st.floats(min_value=60.001),
        st.just(float("nan")),
        st.booleans(),
        st.text(max_size=3),
        st.none(),
    ),
}
_extra_keys = st.dictionaries(
    st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).filter(
        lambda k: k not in _RPC_KEYS and not any(k in a for a in ARGS.values())
    ),
    junk,
    max_size=2,
)


def _msgpack_safe(v: Any) -> bool:
    """Whether ``v`` can travel as a plain message value (else it is sent pickled)."""
    if v is None or isinstance(v, bool | float | str | bytes):
        return True
    if type(v) is int:
        return -(2**63) <= v < 2**64
    if type(v) is list:
        return all(_msgpack_safe(x) for x in v)
    if type(v) is dict:
        return all(type(k) is str and _msgpack_safe(x) for k, x in v.items())
    return False


@st.composite
def messages(draw: st.DrawFn, op: str) -> dict[str, Any]:
    """A message for ``daskgd_<op>``: each argument plausible or junk, keys dropped/added."""
    msg: dict[str, Any] = {}
    for name in ARGS[op]:
        if draw(st.integers(0, 19)) == 0:
            continue  # a missing key
        if name == "wait":  # junk could be a valid long wait: see PLAUSIBLE
            value = draw(PLAUSIBLE[name])
        else:
            value = draw(st.one_of(PLAUSIBLE[name], junk) if draw(st.booleans()) else junk)
        if not isinstance(value, ToPickle) and not _msgpack_safe(value):
            value = ToPickle(value)
        msg[name] = value
    if op in ("create",) and msg.get("job") == FUZZ:
        msg["job"] = "fuzz-created"
    if draw(st.integers(0, 9)) == 0:
        msg.update({k: ToPickle(v) for k, v in draw(_extra_keys).items()})
    return msg


def _fuzz(server: tuple[Client, LocalCluster, _ErrorLog], op: str, n: int, reliability) -> None:
    client, cluster, errors = server
    before = _state(client, LEGIT)
    count = 0

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        nonlocal count
        # a fresh victim for the mutating handlers: sync, async or ssp
        _call(client, "close", {"job": FUZZ})
        mode = data.draw(st.sampled_from(["sync", "async", "ssp"]))
        cfg = _legit_create(FUZZ, mode, data.draw(st.sampled_from([0, 16384])))
        if mode == "ssp":
            cfg["config"]["max_staleness"] = 1
        assert _call(client, "create", cfg)["status"] == "OK"
        msg = data.draw(messages(op))
        reply = _call(client, op, msg)
        _check_reply(op, msg, reply)
        count += 1

    run()
    reliability.add("fuzzed handler messages", count)
    assert not errors.records, [r.getMessage() for r in errors.records]
    assert cluster.scheduler.status.name == "running"
    assert _call(client, "info", {})["status"] == "OK"
    after = _state(client, LEGIT)
    assert after[0] == before[0] and not after[2]
    np.testing.assert_array_equal(after[1], before[1])


@pytest.mark.parametrize("op", list(ARGS))
def test_fuzz_handler(server, op, reliability):
    _fuzz(server, op, DEFAULT_EXAMPLES, reliability)


@pytest.mark.stress
@pytest.mark.parametrize("op", list(ARGS))
def test_fuzz_handler_stress(server, op, reliability):
    _fuzz(server, op, STRESS_EXAMPLES, reliability)


_MALFORMED_FOR_LEGIT = [
    ("push", {"rank": 2}),
    ("push", {"rank": -1}),
    ("push", {"rank": True}),
    ("push", {"version": 10**6}),
    ("push", {"version": -1}),
    ("push", {"grad": ToPickle(np.zeros(D1 + 1))}),
    ("push", {"grad": ToPickle(np.zeros(D1, dtype=np.complex128))}),
    ("push", {"grad": ToPickle(np.zeros(D1, dtype=object))}),
    ("push", {"grad": [0.0] * D1}),
    ("push", {"n": 0}),
    ("push", {"weight": -1.0}),
    ("push", {"weight": math.nan}),
    ("push", {"weight": ToPickle(10**400)}),
    ("push", {"loss": ToPickle(10**400)}),
    ("push", {"loss": "1.0"}),
    ("push", {"worker": ToPickle(["x"])}),
    ("push", {"surprise": 1}),
    ("push", {"incarnation": 3}),
    ("join", {"incarnation": ToPickle(["x"])}),
    ("join", {"rank": 5}),
    ("ready", {"rank": 7}),
    ("ready", {"loss0": -1.0}),
    ("ready", {"weight": math.inf}),
    ("ready", {"grad0": ToPickle(np.zeros(D1 + 1))}),
    ("ready", {"curvature": [1.0, 2.0]}),
    ("ready", {"curvature": [1.0, 2.0, -3.0]}),
    ("ready", {"gram": ToPickle(np.eye(D1 + 1))}),
    ("ready", {"gram": ToPickle(np.eye(D1 - 1)), "curvature": [1.0, 1.0, 1.0]}),
    ("ready", {"weight": math.nan}),
    ("ready", {"gram": ToPickle(np.eye(D1))}),  # a Gram matrix needs the curvature
    ("join", {"worker": 3}),
    ("status", {"since": "abc"}),
    ("status", {"since": -1}),
    ("status", {"params": ToPickle(np.ones(2))}),
    ("stop", {"reason": ToPickle(object())}),
    ("create", {}),
]


def _legit_message(op: str, change: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "push": {
            "job": LEGIT,
            "rank": 0,
            "version": 0,
            "grad": ToPickle(np.ones(D1)),
            "n": 10,
            "weight": 10.0,
            "loss": 1.0,
        },
        "join": {"job": LEGIT, "rank": 0, "worker": FAKE_RANKS[0]},
        "ready": {
            "job": LEGIT,
            "rank": 0,
            "worker": FAKE_RANKS[0],
            "loss0": 1.0,
            "loss_zero": 1.0,
            "grad0": ToPickle(np.ones(D1)),
            "weight": 10.0,
        },
        "status": {"job": LEGIT},
        "stop": {"job": LEGIT},
        "create": _legit_create(),
    }[op]
    return {**base, **change}


def test_malformed_messages_for_a_live_job_change_nothing(server, reliability):
    """Each message names the legitimate job with one bad field: refused, job untouched."""
    client, _, errors = server
    before = _state(client, LEGIT)
    for op, change in _MALFORMED_FOR_LEGIT:
        reply = _call(client, op, _legit_message(op, change))
        assert reply["status"] == "error", (op, change, reply)
        assert reply["kind"] == "bad_message", reply
    reliability.add("fuzzed handler messages", len(_MALFORMED_FOR_LEGIT))
    after = _state(client, LEGIT)
    assert after[0] == before[0] and not after[2]
    np.testing.assert_array_equal(after[1], before[1])
    # and it still trains: a valid push is one SGD step of the row-weighted gradient
    g = np.array([1.0, -2.0, 0.5, 4.0])
    version = after[0]
    reply = _call(
        client,
        "push",
        {**_legit_message("push", {}), "version": version, "grad": ToPickle(10 * g)},
    )
    assert reply["status"] == "OK" and reply["version"] == version + 1
    np.testing.assert_allclose(reply["params"], after[1] - LR * g)
    assert not errors.records


def test_a_fit_still_works_after_fuzzing(server):
    client, _, errors = server
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 3))
    y = X @ np.array([1.0, -1.0, 2.0]) + 0.5
    res = fit((X, y), client=client, learning_rate=0.5, max_epochs=300, tol=None, gtol=1e-10)
    np.testing.assert_allclose(res.coef_, [1.0, -1.0, 2.0], atol=1e-6)
    assert LEGIT in client.run_on_scheduler(
        lambda dask_scheduler: list(dask_scheduler.plugins[PLUGIN_NAME].jobs)
    )
    assert not errors.records
