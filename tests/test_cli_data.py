"""Tests of the ``daskgd make-data`` and ``daskgd info`` verbs (real Zarr stores on disk)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from _subprocess import subprocess_env

from daskgd.cli import main
from daskgd.data import open_zarr


def test_make_data_regression_then_info(tmp_path, capsys):
    path = str(tmp_path / "r.zarr")
    argv = ["make-data", path, "--n-samples", "500", "--n-features", "4", "--chunk-rows",
            "128", "--noise", "0.1", "--random-state", "3"]  # fmt: skip
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    ds = open_zarr(path)
    assert ds.chunks == (128, 128, 128, 116) and ds.attrs["noise"] == 0.1
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "500 x 4 float64" in out and "4 row-chunks" in out and "ZstdCodec" in out
    assert "format_version: 1" in out
    assert main(["info", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arrays"]["X"]["shape"] == [500, 4]
    assert info["arrays"]["X"]["bytes_on_disk"] > 0
    assert info["attrs"]["random_state"] == 3


def test_make_data_classification_sharded_uncompressed(tmp_path, capsys):
    path = str(tmp_path / "c.zarr")
    argv = ["make-data", path, "--n-samples", "300", "--n-features", "3", "--task",
            "classification", "--n-classes", "3", "--chunk-rows", "100", "--inner-chunk-rows",
            "25", "--compressor", "none", "--dtype", "float32"]  # fmt: skip
    assert main(argv) == 0
    g = zarr.open_group(path, mode="r")
    assert g["X"].shards == (100, 3) and g["X"].compressors == ()
    capsys.readouterr()
    assert main(["info", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["classes"] == [0, 1, 2] and info["dtype"] == "float32"
    assert info["arrays"]["X"]["codecs"] == ["uncompressed"]


def test_make_data_on_a_local_cluster_and_file_url(tmp_path):
    url = f"file://{tmp_path}/u.zarr"
    argv = ["make-data", url, "--n-samples", "200", "--n-features", "2", "--chunk-rows", "50",
            "--n-workers", "1", "--storage-option", "auto_mkdir=true"]  # fmt: skip
    assert main(argv) == 0
    local = open_zarr(tmp_path / "u.zarr")
    assert local.n_samples == 200
    # Same seed and chunking in this process: the same data (worker count does not matter).
    assert main(["make-data", str(tmp_path / "v.zarr"), "--n-samples", "200",
                 "--n-features", "2", "--chunk-rows", "50"]) == 0  # fmt: skip
    np.testing.assert_array_equal(open_zarr(tmp_path / "v.zarr").X.compute(), local.X.compute())


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["make-data"],
        ["make-data", "p", "--n-samples", "0", "--n-features", "2"],
        ["make-data", "p", "--n-samples", "10", "--n-features", "x"],
        ["make-data", "p", "--n-samples", "10", "--n-features", "2", "--task", "ranking"],
        ["make-data", "p", "--n-samples", "10", "--n-features", "2", "--noise", "-1"],
        ["info"],
        ["frobnicate"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage" in capsys.readouterr().err


def test_failure_exits_1_with_one_line(tmp_path, capsys):
    # a missing path is a bad argument: exit 2, the usage and one error line naming it
    assert main(["info", str(tmp_path / "missing.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and "Traceback" not in err
    assert [ln for ln in err.splitlines() if "error:" in ln] == [
        f"daskgd info: error: argument path: no Zarr dataset at {str(tmp_path / 'missing.zarr')!r}"
    ]
    # a folder that is not a dataset: a failure, one line
    (tmp_path / "empty").mkdir()
    assert main(["info", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    path = str(tmp_path / "r.zarr")
    argv = ["make-data", path, "--n-samples", "10", "--n-features", "2"]
    assert main(argv) == 0
    assert main(argv) == 1
    assert "overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    # inner chunks must divide the row-chunks
    bad = [*argv, "--overwrite", "--chunk-rows", "5", "--inner-chunk-rows", "3"]
    assert main(bad) == 1


def test_debug_shows_traceback(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["--debug", "info", str(tmp_path / "empty")]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_runs_as_a_program(tmp_path):
    path = str(tmp_path / "p.zarr")
    # the installed console script where there is one (under tox), else the module
    script = Path(sys.executable).with_name("daskgd")
    run = [str(script)] if script.exists() else [sys.executable, "-m", "daskgd.cli"]
    opts = {"cwd": tmp_path, "env": subprocess_env(), "capture_output": True, "text": True,
            "timeout": 120}  # fmt: skip
    r = subprocess.run([*run, "make-data", path, "--n-samples", "20", "--n-features", "2"], **opts)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*run, "info", path], **opts)
    assert r.returncode == 0 and "20 x 2 float64" in r.stdout
    r = subprocess.run([*run, "info"], **opts)
    assert r.returncode == 2


def _table(n: int = 120):
    import pandas as pd

    rng = np.random.default_rng(5)
    city = rng.choice(np.array(["Oslo", "Rome", "Lima", None], dtype=object), n)
    return pd.DataFrame({"city": city, "age": rng.integers(0, 5, n),
                         "price": np.round(rng.standard_normal(n), 2),
                         "label": rng.integers(0, 2, n)})  # fmt: skip


def _hashed_reference(df, n_features: int, categorical, numeric):
    """scikit-learn's FeatureHasher on the table's rows as dicts (the oracle)."""
    import pandas as pd
    from sklearn.feature_extraction import FeatureHasher

    records = [{c: (str(r[c]) if c in categorical else float(r[c])) for c in df.columns
                if (c in categorical and not pd.isna(r[c])) or c in numeric}
               for r in df.to_dict("records")]  # fmt: skip
    return FeatureHasher(n_features, input_type="dict", dtype=np.float32).transform(records)


def test_hash_csv_and_parquet_tables(tmp_path, capsys):
    df = _table()
    csv, parquet = tmp_path / "t.csv", tmp_path / "t.parquet"
    df.to_csv(csv, index=False)
    df.to_parquet(parquet)
    out = str(tmp_path / "h.zarr")
    argv = ["hash", str(csv), out, "--target", "label", "--n-features", "64",
            "--categorical", "city,age", "--chunk-rows", "50"]  # fmt: skip
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    ds = open_zarr(out)
    want = _hashed_reference(df, 64, ["city", "age"], ["price"])
    assert ds.is_sparse and ds.chunks == (50, 50, 20)
    assert (ds.X.compute() != want).nnz == 0
    np.testing.assert_array_equal(ds.y.compute(), df["label"].to_numpy())
    assert ds.attrs["feature_hashing"]["categorical"] == ["city", "age"]
    # Parquet, the roles by dtype (age numeric), on a LocalCluster
    out2 = str(tmp_path / "p.zarr")
    argv = ["hash", str(parquet), out2, "--target", "label", "--n-features", "64",
            "--n-workers", "1"]  # fmt: skip
    assert main(argv) == 0
    got = open_zarr(out2).X.compute()
    assert (got != _hashed_reference(df, 64, ["city"], ["age", "price"])).nnz == 0
    # an existing output: a failure on one line, naming the fix
    assert main(argv) == 1
    assert "overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["hash", "{csv}", "{out}"],
        ["hash", "{csv}", "{out}", "--target", "label", "--n-features", "0"],
        ["hash", "{csv}", "{out}", "--target", "label", "--categorical", "a,,b"],
        ["hash", "{csv}", "{out}", "--target", "label", "--categorical", "age",
         "--numeric", "age"],
        ["hash", "{dir}/t.json", "{out}", "--target", "label"],
        ["hash", "{dir}/missing.csv", "{out}", "--target", "label"],
    ],
)  # fmt: skip
def test_hash_bad_arguments_exit_2(argv, tmp_path, capsys):
    csv = tmp_path / "t.csv"
    _table(10).to_csv(csv, index=False)
    (tmp_path / "t.json").write_text("{}")
    names = {"csv": str(csv), "out": str(tmp_path / "o.zarr"), "dir": str(tmp_path)}
    assert main([a.format(**names) for a in argv]) == 2
    assert "usage" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()
