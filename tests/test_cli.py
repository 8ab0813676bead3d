"""The ``daskgd demo``, ``fit`` and ``predict`` verbs, run as real processes (exit codes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _subprocess import subprocess_env

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
    r = daskgd("fit", "missing.zarr", "--n-workers", "1", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith("daskgd: error: ") and "Traceback" not in r.stderr
    (tmp_path / "bad.json").write_text("{}")
    assert daskgd("make-data", "d.zarr", "--n-samples", "10", "--n-features", "2",
                  cwd=tmp_path).returncode == 0  # fmt: skip
    r = daskgd("predict", "bad.json", "d.zarr", cwd=tmp_path)
    assert r.returncode == 1 and "not a daskgd model file" in r.stderr
    r = daskgd("--debug", "predict", "bad.json", "d.zarr", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" in r.stderr


_LOGGING_SCRIPT = """
import argparse, logging, sys

from daskgd.cli import _client


def main():
    args = argparse.Namespace(scheduler=None, n_workers=1, debug=sys.argv[1] == "debug")
    with _client(args) as c:
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
