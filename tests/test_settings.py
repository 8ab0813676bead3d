"""FitSettings: one settings object, checked once, from which the job, the optimizer and the
training tasks' settings are derived; and fit's signature, which must match it."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import daskgd
from daskgd.driver import FitSettings, fit, fit_async
from daskgd.driver.constraints import Integer, Real
from daskgd.driver.settings import CONSTRAINTS
from daskgd.errors import InvalidSettingError
from daskgd.objective import make_optimizer
from daskgd.parameter_server import JobConfig

#: settings of FitSettings that fit does not take (the estimators' and tests' hooks)
HOOKS = {"one_vs_rest", "labels_checked", "delay"}
#: fit's arguments that are not settings
NOT_SETTINGS = {"data", "offset", "client", "validate"}

INTEGER_SETTINGS = sorted(
    name for name, kinds in CONSTRAINTS.items() if any(isinstance(k, Integer) for k in kinds)
)
REAL_SETTINGS = sorted(
    name for name, kinds in CONSTRAINTS.items() if any(isinstance(k, Real) for k in kinds)
)


def _xy(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 3))
    return X, X @ np.array([1.0, -2.0, 0.5])


def test_every_integer_and_number_setting_is_declared():
    assert {"max_epochs", "batch_size", "n_iter_no_change", "step_size", "sync_quorum",
            "max_staleness", "n_workers", "random_state", "n_classes",
            "checkpoint_every"} <= set(INTEGER_SETTINGS)  # fmt: skip
    assert {"tol", "alpha", "poll_interval", "worker_timeout"} <= set(REAL_SETTINGS)


@pytest.mark.parametrize("name", INTEGER_SETTINGS + REAL_SETTINGS)
@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_bools_are_refused_for_integer_and_number_settings(name, value):
    with pytest.raises(InvalidSettingError, match=f"^{name} must be") as info:
        FitSettings(**{name: value})
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


@pytest.mark.parametrize("name", ["max_epochs", "batch_size", "sync_quorum", "tol", "alpha"])
def test_fit_refuses_bools_before_any_work(name):
    # no client and no cluster: the settings are checked first, before one is started
    with pytest.raises(InvalidSettingError, match=f"{name} must be"):
        fit(_xy(), **{name: True})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_epochs": 0}, "max_epochs must be an integer >= 1, got 0"),
        ({"max_epochs": 2.0}, "max_epochs must be an integer >= 1"),
        ({"tol": -1.0}, "tol must be None or a number >= 0"),
        ({"tol": math.inf}, "tol must be None or a number >= 0"),
        ({"l1_ratio": 1.5}, r"l1_ratio must be a number in \[0, 1\]"),
        ({"fit_intercept": 1}, "fit_intercept must be True or False"),
        ({"callback": 3}, "callback must be None or a callable"),
        ({"mode": "bsp"}, "unknown mode 'bsp'; choose one of: sync, async, ssp"),
        ({"loss": "nope"}, "unknown loss 'nope'"),
        ({"learning_rate": "fast"}, "learning_rate must be one of 'auto' or a number > 0"),
        ({"checkpoint": "s3://bucket/ck.zarr"}, "local"),
        ({"delay": {"0": 1.0}}, "delay must be None or a dict rank -> seconds"),
    ],
)
def test_one_message_shape_per_kind(kwargs, match):
    with pytest.raises(InvalidSettingError, match=match):
        FitSettings(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "lbfgs", "mode": "async"}, "mode='sync' and full batches"),
        ({"optimizer": "lbfgs", "batch_size": 8}, "mode='sync' and full batches"),
        ({"mode": "ssp"}, "mode='ssp' needs max_staleness"),  # JobConfig's rule
        ({"max_staleness": 2}, "max_staleness applies to mode='ssp' only"),
        ({"sync_quorum": 1, "mode": "async"}, "sync_quorum applies to mode='sync' only"),
        ({"n_classes": 3}, "multinomial log_loss only"),
        ({"resume": True}, "resume=True needs checkpoint"),
        ({"alpha": 0.1, "l1_ratio": 0.5, "optimizer": "lbfgs"}, "smooth objective"),
        ({"one_vs_rest": True, "n_classes": 3, "loss": "huber"}, "one-vs-rest takes"),
    ],
)
def test_rules_between_settings(kwargs, match):
    with pytest.raises(InvalidSettingError, match=match):
        FitSettings(**kwargs)


def _message(call):
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value)


def test_the_lbfgs_rule_says_the_same_from_fit_and_the_estimators(client):
    X, y = _xy()
    from_fit = _message(lambda: fit((X, y), client=client, optimizer="lbfgs", mode="async"))
    reg = daskgd.SGDRegressor(optimizer="lbfgs", mode="async", batch_size=None, client=client)
    from_estimator = _message(lambda: reg.fit(X, y))
    assert from_fit == from_estimator and "mode='sync' and full batches" in from_fit
    lin = daskgd.LinearRegression(optimizer="lbfgs", batch_size=4, client=client)
    assert _message(lambda: lin.fit(X, y)) == _message(
        lambda: fit((X, y), client=client, optimizer="lbfgs", batch_size=4)
    )


def test_the_quorum_rule_is_the_parameter_servers(client):
    """``sync_quorum`` larger than the job, or below it with L-BFGS: the parameter server's
    check_quorum, raised on the driver before the job is created."""
    from daskgd.parameter_server import check_quorum

    X, y = _xy()
    cfg = JobConfig(sync_quorum=1)
    with pytest.raises(ValueError) as direct:
        check_quorum(cfg, make_optimizer("lbfgs", learning_rate=1.0), 2)
    got = _message(lambda: fit((X, y), client=client, optimizer="lbfgs", sync_quorum=1))
    assert got == str(direct.value)


def test_fit_and_fit_async_take_exactly_the_settings_with_their_defaults():
    settings = {
        f.name: f.default
        for f in FitSettings.__dataclass_fields__.values()
        if f.init and f.name not in HOOKS
    }
    for fn in (fit, fit_async):
        params = inspect.signature(fn).parameters
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), fn.__name__
        got = {n: p.default for n, p in params.items() if n not in NOT_SETTINGS}
        assert got == settings, fn.__name__
        # every setting is documented
        assert all(f"    {n} : " in fn.__doc__ or f", {n}" in fn.__doc__ or f"{n}, " in fn.__doc__
                   for n in got), fn.__name__  # fmt: skip
    assert inspect.signature(fit).parameters["learning_rate"].default == "auto"
    assert set(CONSTRAINTS) == set(settings) | HOOKS


def test_the_derived_settings_are_valid_where_they_go():
    s = FitSettings(loss="log_loss", n_classes=4, optimizer="adam", learning_rate=0.1,
                    batch_size=16, mode="ssp", max_staleness=2, random_state=7,
                    checkpoint="ck.zarr")  # fmt: skip
    cfg = JobConfig(**s.job_config(n_samples=100, batches_per_epoch=3))
    assert cfg.mode == "ssp" and cfg.checkpoint_every == 10 and not cfg.auto_lr
    assert type(make_optimizer(**s.optimizer_spec())).__name__ == "Adam"
    spec = s.worker_spec(classes=None, batches_per_epoch=3)
    assert spec["seed"] == 7 and spec["batches_per_epoch"] == 3 and spec["curvature"] is None
    assert s.params_shape(5) == (6, 4) and s.multinomial
    auto = FitSettings()
    assert auto.auto_lr and auto.worker_spec(classes=None, batches_per_epoch=1)["curvature"]
    assert not FitSettings(optimizer="lbfgs").auto_lr  # L-BFGS takes no step size
    assert FitSettings(random_state=np.int64(3)).seed == 3
    # numpy numbers are plain Python numbers once checked (a numpy step is not "auto")
    s = FitSettings(learning_rate=np.float64(0.2), max_epochs=np.int32(4))
    assert type(s.learning_rate) is float and type(s.max_epochs) is int and not s.auto_lr
    assert JobConfig(**s.job_config(n_samples=10, batches_per_epoch=1)).auto_lr is False
    assert isinstance(FitSettings().seed, int)


def test_settings_are_frozen():
    s = FitSettings()
    with pytest.raises(AttributeError):
        s.max_epochs = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_epochs": True},
        {"n_iter_no_change": True},
        {"batches_per_epoch": True},
        {"mode": "ssp", "max_staleness": False},
        {"sync_quorum": True},
        {"checkpoint_every": True},
    ],
)
def test_the_scheduler_refuses_bools_for_integers_too(kwargs):
    # what a driver of another version (or a hand-made message) could send
    with pytest.raises(ValueError, match="must be"):
        JobConfig(**kwargs)


def test_member_timeout_reaches_the_parameter_server():
    from daskgd.parameter_server import JobConfig

    s = FitSettings(member_timeout=5.0)
    cfg = JobConfig(**s.job_config(n_samples=10, batches_per_epoch=1))
    assert cfg.member_timeout == 5.0
    with pytest.raises(ValueError, match="member_timeout"):
        FitSettings(member_timeout=0)


def test_power_goes_to_the_workers_and_newton_and_auto_are_optimizers():
    s = FitSettings(power=1.7)
    assert s.worker_spec(classes=None, batches_per_epoch=1)["power"] == 1.7
    assert FitSettings().worker_spec(classes=None, batches_per_epoch=1)["power"] == 1.5
    assert not FitSettings().worker_spec(classes=None, batches_per_epoch=1)["hessian"]
    with pytest.raises(InvalidSettingError, match=r"power must be a number >= 1, got 0\.5"):
        FitSettings(power=0.5)
    assert FitSettings(optimizer="newton").worker_spec(classes=None, batches_per_epoch=1)["hessian"]
    # "auto" is checked against every optimizer it may stand for: L1 rules out L-BFGS, so
    # a wide elastic net falls to sgd, which takes it
    assert FitSettings(optimizer="auto", alpha=0.1, l1_ratio=0.5).auto_candidates() == [
        "newton",
        "sgd",
    ]
    with pytest.raises(InvalidSettingError, match="unknown optimizer 'bfgs'"):
        FitSettings(optimizer="bfgs")
