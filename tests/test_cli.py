"""The ``daskgd demo``, ``fit`` and ``predict`` verbs, run as real processes (exit codes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _subprocess import subprocess_env, worker_command

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def daskgd(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daskgd.cli", *argv], cwd=cwd,
                          env=subprocess_env(),
                          capture_output=True, text=True, timeout=240)  # fmt: skip


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_demo_prints_a_table_and_writes_a_png(tmp_path):
    r = daskgd("demo", "--n-samples", "3000", "--n-features", "5", "--max-epochs", "5",
               "--plot", "demo.png", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    rows = [ln.split() for ln in lines if ln.startswith(("sync ", "async "))]
    assert [row[0] for row in rows] == ["sync", "async"]
    assert all(int(row[1]) == 5 and float(row[4]) < 0.1 for row in rows)  # 5 epochs, near optimum
    width, height = _png_size(tmp_path / "demo.png")
    assert width > 100 and height > 100


@pytest.mark.parametrize("suffix", [".json", ".zarr"])
def test_fit_then_predict(tmp_path, suffix):
    argv = ["make-data", "d.zarr", "--n-samples", "1000", "--n-features", "4", "--task",
            "classification", "--chunk-rows", "250"]  # fmt: skip
    assert daskgd(*argv, cwd=tmp_path).returncode == 0
    r = daskgd("fit", "d.zarr", "--loss", "log_loss", "--n-workers", "2", "--max-epochs", "60",
               "--output", f"model{suffix}", "--plot", "fit.png", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "SGDClassifier(loss='log_loss', mode='sync'): " in r.stdout
    _png_size(tmp_path / "fit.png")
    r = daskgd("predict", f"model{suffix}", "d.zarr", "--output", "p.npy", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pred = np.load(tmp_path / "p.npy")
    assert pred.shape == (1000,) and set(np.unique(pred)) <= {0, 1}
    accuracy = float(r.stdout.strip().rsplit(" ", 1)[1])
    assert accuracy > 0.7


def test_model_json_holds_coefficients_and_history(tmp_path):
    assert daskgd("make-data", "r.zarr", "--n-samples", "400", "--n-features", "3",
                  "--chunk-rows", "100", cwd=tmp_path).returncode == 0  # fmt: skip
    r = daskgd("fit", "r.zarr", "--n-workers", "1", "--max-epochs", "300", "--tol", "0",
               "--output", "m.json", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    model = json.loads((tmp_path / "m.json").read_text())
    assert model["format"] == "daskgd-model" and model["estimator"] == "SGDRegressor"
    assert len(model["coef"]) == 3 and len(model["history"]["loss"]) == model["n_iter"] > 10
    # noise-free data: the fit reproduces the stored true coefficients closely
    from daskgd.data import open_zarr

    ds = open_zarr(tmp_path / "r.zarr")
    X, y = ds.X.compute(), ds.y.compute()
    pred = X @ np.asarray(model["coef"]) + model["intercept"][0]
    assert np.corrcoef(pred, y)[0, 1] > 0.999


@pytest.mark.parametrize(
    "argv",
    [
        ["fit"],
        ["fit", "x.zarr", "--loss", "ranking"],
        ["fit", "x.zarr", "--mode", "gossip"],
        ["fit", "x.zarr", "--max-epochs", "0"],
        ["predict", "m.json"],
        ["demo", "--n-samples", "-3"],
    ],
)
def test_bad_arguments_exit_2(tmp_path, argv):
    r = daskgd(*argv, cwd=tmp_path)
    assert r.returncode == 2 and "usage:" in r.stderr


def test_failures_exit_1_with_one_line(tmp_path):
    # a missing dataset is a bad argument (exit 2, test_argument_errors_exit_2_...); a fit
    # that diverges is a failure
    r = daskgd("fit", "missing.zarr", "--n-workers", "1", cwd=tmp_path)
    assert r.returncode == 2 and "no Zarr dataset" in r.stderr and "Traceback" not in r.stderr
    assert daskgd("make-data", "d.zarr", "--n-samples", "10", "--n-features", "2",
                  cwd=tmp_path).returncode == 0  # fmt: skip
    r = daskgd("fit", "d.zarr", "--n-workers", "1", "--learning-rate", "1e9", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith("daskgd: error: ") and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    (tmp_path / "bad.json").write_text("{}")
    r = daskgd("predict", "bad.json", "d.zarr", cwd=tmp_path)
    assert r.returncode == 1 and "not a daskgd model file" in r.stderr
    r = daskgd("--debug", "predict", "bad.json", "d.zarr", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" in r.stderr


_LOGGING_SCRIPT = """
import argparse, logging, sys

from daskgd.cli.common import client_for


def main():
    args = argparse.Namespace(scheduler=None, n_workers=1, debug=sys.argv[1] == "debug")
    with client_for(args) as c:
        c.run(lambda: logging.getLogger("distributed.worker").error("worker says boom"))
        logging.getLogger("distributed.scheduler").error("scheduler says boom")
    print("done")


if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("debug", [False, True])
def test_cluster_logs_stay_off_stderr_without_debug(tmp_path, debug):
    """The command's own cluster logs nothing to stderr but critical errors: a worker's
    error log (as when a heartbeat meets the scheduler closing at exit) would put a
    traceback before the one-line error. ``--debug`` shows them."""
    script = tmp_path / "quiet.py"
    script.write_text(_LOGGING_SCRIPT)
    r = subprocess.run([sys.executable, str(script), "debug" if debug else "plain"],
                       cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                       timeout=240)  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr
    if debug:
        assert "worker says boom" in r.stderr and "scheduler says boom" in r.stderr
    else:
        assert r.stderr == "", r.stderr


MAKE = ["make-data", "n.zarr", "--n-samples", "9", "--n-features", "2"]


@pytest.fixture
def datasets(tmp_path):
    """A regression and a classification dataset, written in this process."""
    from daskgd.cli.main import main

    for name, task in (("r.zarr", "regression"), ("c.zarr", "classification")):
        argv = ["make-data", str(tmp_path / name), "--n-samples", "60", "--n-features", "2",
                "--chunk-rows", "30", "--task", task]  # fmt: skip
        assert main(argv) == 0
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["fit", "r.zarr", "--mode", "ssp"], "--mode: ssp needs --max-staleness"),
        (["fit", "r.zarr", "--mode", "ssp", "--max-staleness", "-3"], "--max-staleness"),
        (["fit", "r.zarr", "--max-staleness", "2"], "--max-staleness: applies to --mode ssp"),
        (["fit", "r.zarr", "--learning-rate", "-1"], "--learning-rate"),
        (["fit", "r.zarr", "--learning-rate", "0"], "--learning-rate"),
        (["fit", "r.zarr", "--learning-rate", "nan"], "--learning-rate"),
        (["fit", "r.zarr", "--batch-size", "0"], "--batch-size"),
        (["fit", "r.zarr", "--batch-size", "-5"], "--batch-size"),
        (["fit", "r.zarr", "--max-epochs", "0"], "--max-epochs"),
        (["fit", "r.zarr", "--tol", "-1"], "--tol"),
        (["fit", "r.zarr", "--tol", "inf"], "--tol"),
        (["fit", "r.zarr", "--alpha", "-0.1"], "--alpha"),
        (["fit", "r.zarr", "--l1-ratio", "1.5"], "--l1-ratio"),
        (["fit", "r.zarr", "--random-state", "-1"], "--random-state"),
        (["fit", "r.zarr", "--n-workers", "0"], "--n-workers"),
        (["fit", "r.zarr", "--scheduler", "notanaddress"], "--scheduler"),
        ([*MAKE, "--scheduler", "tcp://host:port"], "--scheduler"),
        (["fit", "r.zarr", "--output", "model.txt"], "--output"),
        (["fit", "r.zarr", "--output", "no/such/dir/model.json"], "--output"),
        (["fit", "r.zarr", "--plot", "loss.bmp"], "--plot"),
        (["fit", "r.zarr", "--plot", "no/such/dir/loss.png"], "--plot"),
        (["fit", "r.zarr", "--loss", "log_loss"], "--loss: log_loss is a classification loss"),
        (["fit", "r.zarr", "--loss", "hinge"], "--loss: hinge is a classification loss"),
        (["fit", "c.zarr", "--loss", "squared_error"], "--loss: squared_error is a regression"),
        (["fit", "missing.zarr"], "path: no Zarr dataset at 'missing.zarr'"),
        (["predict", "missing.json", "r.zarr"], "model: no model file at 'missing.json'"),
        (["predict", "m.json", "missing.zarr"], "path: no Zarr dataset at 'missing.zarr'"),
        (["predict", "m.json", "r.zarr", "--output", "p.csv"], "--output"),
        (["predict", "m.json", "r.zarr", "--output", "no/dir/p.npy"], "--output"),
        (["predict", "m.json", "r.zarr", "--head", "0"], "--head"),
        (["info", "missing.zarr"], "path: no Zarr dataset at 'missing.zarr'"),
        (["demo", "--plot", "demo.bmp"], "--plot"),
        (["demo", "--n-workers", "0"], "--n-workers"),
        (["demo", "--max-epochs", "0"], "--max-epochs"),
        ([*MAKE, "--task", "classification", "--n-classes", "1"], "--n-classes"),
        ([*MAKE, "--random-state", "-2"], "--random-state"),
    ],
)
def test_argument_errors_exit_2_naming_the_flag_before_any_work(datasets, argv, flag, capsys):
    from daskgd.cli.main import main

    (datasets / "m.json").write_text("{}")
    cwd = Path.cwd()
    try:
        os.chdir(datasets)
        code = main(argv)
    finally:
        os.chdir(cwd)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "usage:" in captured.err and f"error: argument {flag}" in captured.err
    assert captured.out == ""  # nothing trained, nothing written
    assert not (datasets / "model.txt").exists() and not (datasets / "n.zarr").exists()


def test_predict_given_a_dataset_for_the_model_says_so(datasets):
    r = daskgd("predict", "r.zarr", "c.zarr", cwd=datasets)
    assert r.returncode == 1
    assert "r.zarr is not a daskgd model file (it is a daskgd dataset" in r.stderr
    assert "KeyError" not in r.stderr and r.stderr.count("\n") == 1
    (datasets / "text.json").write_text("not json")
    r = daskgd("predict", "text.json", "c.zarr", cwd=datasets)
    assert r.returncode == 1 and "text.json is not a daskgd model file (not JSON" in r.stderr


def test_tls_address_without_credentials_fails_at_once(datasets):
    r = daskgd("fit", "r.zarr", "--scheduler", "tls://127.0.0.1:1", cwd=datasets)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("daskgd: error: SchedulerSetupError: cannot connect to tls://")
    assert "needs TLS credentials" in r.stderr


def test_a_lost_scheduler_is_one_line_on_stderr(tmp_path, processes):
    """The scheduler dies mid-fit: stderr holds the one-line reason, none of distributed's
    log records (the client's reconnection and heartbeat tracebacks)."""
    from distributed import Client
    from test_existing_cluster import _scheduler

    sf, address = _scheduler(tmp_path, processes, with_daskgd=True)
    processes.append(subprocess.Popen(
        worker_command(sf), cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ))  # fmt: skip
    scheduler = processes[0]
    with Client(address) as c:
        c.wait_for_workers(1, timeout=120)
    assert daskgd("make-data", "d.zarr", "--n-samples", "200", "--n-features", "2",
                  "--chunk-rows", "100", cwd=tmp_path).returncode == 0  # fmt: skip
    cli = subprocess.Popen(
        [sys.executable, "-m", "daskgd.cli", "fit", "d.zarr", "--scheduler", address,
         "--max-epochs", "100000000", "--tol", "0", "--batch-size", "1"],
        cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        with Client(address) as c:  # wait for the training task, then kill the scheduler

            def training(dask_scheduler=None):
                return [str(k) for k in dask_scheduler.tasks if "daskgd-train" in str(k)]

            while not c.run_on_scheduler(training):
                assert cli.poll() is None, cli.communicate()
        scheduler.kill()
        _out, err = cli.communicate(timeout=240)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 1, err
    assert err.startswith("daskgd: error: SchedulerLostError: lost the Dask scheduler"), err
    assert err.count("\n") == 1, err
