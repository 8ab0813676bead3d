"""What a new user's mistakes are told: sparse input, labels that are not classes, a single
class, a tls:// address without credentials, a lost scheduler's message."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

import daskgd
from daskgd.driver import fit
from daskgd.driver.connection import scheduler_lost_error
from daskgd.errors import DataValidationError, SchedulerSetupError


def _xy(n: int = 200, d: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    return X, X @ np.arange(1.0, d + 1)


def test_too_many_float_labels_blame_the_class_cap_not_continuity(tmp_path, client):
    X, _ = _xy(2002)
    y = (np.arange(2002) % 1001).astype(np.float64)  # 1001 integer-valued floats
    cap = "1001 distinct integer values, more than the 1000 classes"
    for call in (
        lambda: daskgd.write_zarr(tmp_path / "c.zarr", X, y, task="classification"),
        lambda: daskgd.as_dataset((X, y), task="classification"),
        lambda: daskgd.as_dataset((da.from_array(X), da.from_array(y)), task="classification"),
        lambda: fit((X, y), loss="log_loss", client=client, max_epochs=1),
    ):
        with pytest.raises(DataValidationError, match=cap) as info:
            call()
        assert "continuous" not in str(info.value)
    with pytest.raises(DataValidationError, match="continuous"):  # truly continuous
        daskgd.as_dataset((X, y + 0.5), task="classification")


@pytest.mark.parametrize("label", [1.0, -1.0, 0.0])
def test_fit_with_a_classification_loss_refuses_one_class(client, label):
    X, _ = _xy()
    for loss in ("log_loss", "hinge", "squared_hinge"):
        with pytest.raises(DataValidationError, match=r"at least 2 classes.*only one"):
            fit((X, np.full(len(X), label)), loss=loss, client=client, max_epochs=1)
    with pytest.raises(ValueError, match="at least 2 classes"):  # as the estimators do
        daskgd.SGDClassifier(client=client).fit(X, np.full(len(X), label))


def test_fit_with_a_classification_loss_refuses_continuous_targets(client):
    X, y = _xy()
    with pytest.raises(DataValidationError, match="classification loss but y holds continuous"):
        fit((X, y), loss="hinge", client=client, max_epochs=1)


def test_classifiers_refuse_continuous_dask_and_zarr_targets(tmp_path, client):
    X, y = _xy()
    path = tmp_path / "r.zarr"
    daskgd.write_zarr(path, X, y, chunk_rows=50)
    for data in ((da.from_array(X, chunks=50), da.from_array(y, chunks=50)), (str(path),)):
        with pytest.raises(DataValidationError, match="y holds continuous"):
            daskgd.SGDClassifier(client=client, max_iter=1).fit(*data)
    with pytest.raises(ValueError, match="continuous"):  # numpy: scikit-learn's own check
        daskgd.SGDClassifier(client=client, max_iter=1).fit(X, y)


def test_tls_address_without_credentials(client):
    X, y = _xy()
    with pytest.raises(SchedulerSetupError, match="needs TLS credentials"):
        fit((X, y), client="tls://127.0.0.1:1", max_epochs=1)
    with pytest.raises(SchedulerSetupError, match="needs TLS credentials"):
        daskgd.SGDRegressor(client="tls://127.0.0.1:1").fit(X, y)


def test_scheduler_lost_message_says_what_a_timeout_means(client):
    message = str(scheduler_lost_error(client, None, TimeoutError()))
    assert "(TimeoutError: the scheduler did not answer in time)" in message
    assert "TimeoutError: )" not in message
    assert "(OSError: refused)" in str(scheduler_lost_error(client, None, OSError("refused")))
