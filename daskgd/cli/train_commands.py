"""The ``daskgd demo``, ``fit`` and ``predict`` verbs.

``fit --output`` writes a model file and ``predict`` reads one, through the public
:func:`daskgd.io.save_model` and :func:`daskgd.io.load_model`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from daskgd.cli.common import (
    UsageError,
    add_cluster_options,
    check_exists,
    check_output,
    check_plot,
    client_for,
    cluster_log_level,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from daskgd.driver.settings import PARTITIONS, PLACEMENTS
from daskgd.history import to_jsonable
from daskgd.io import load_model, save_model
from daskgd.objective import LOSSES, OPTIMIZERS, SCHEDULES

__all__ = ["add_verbs", "check_demo", "check_fit", "check_predict", "cmd_demo", "cmd_fit",
           "cmd_predict"]  # fmt: skip

_REGRESSION = tuple(name for name, loss in LOSSES.items() if not loss.classification)


def _estimator(args: argparse.Namespace, client: Any) -> Any:
    from daskgd.sklearn import SGDClassifier, SGDRegressor

    cls = SGDRegressor if args.loss in _REGRESSION else SGDClassifier
    return cls(
        loss=args.loss,
        penalty="elasticnet" if args.l1_ratio else ("l2" if args.alpha else None),
        alpha=args.alpha,
        l1_ratio=args.l1_ratio,
        max_iter=args.max_epochs,
        tol=args.tol,
        learning_rate=args.lr_schedule,
        eta0="auto" if args.learning_rate is None else args.learning_rate,
        batch_size=args.batch_size,
        mode=args.mode,
        optimizer=args.optimizer,
        max_staleness=args.max_staleness,
        placement=args.placement,
        partition=args.partition,
        random_state=args.random_state,
        verbose="auto" if args.progress else 0,
        client=client,
    )


def check_fit(args: argparse.Namespace) -> None:
    """Argument errors of ``daskgd fit``, found before any training (exit code 2)."""
    from daskgd.data import open_zarr

    if args.mode == "ssp" and args.max_staleness is None:
        raise UsageError("argument --mode: ssp needs --max-staleness N (the bound)")
    if args.mode != "ssp" and args.max_staleness is not None:
        raise UsageError("argument --max-staleness: applies to --mode ssp only")
    if args.output is not None:
        check_output("--output", args.output, [".json", ".zarr"])
    if args.plot is not None:
        check_plot("--plot", args.plot)
    check_exists("path", args.path, "Zarr dataset")
    # the dataset's metadata (no pass over the data): is the loss for its kind of target?
    ds = open_zarr(args.path, validate=False)
    if args.loss not in _REGRESSION and ds.classes_ is None:
        raise UsageError(
            f"argument --loss: {args.loss} is a classification loss, but {args.path} holds "
            "continuous targets (regression); use --loss squared_error or huber"
        )
    if args.loss in _REGRESSION and ds.attrs.get("task") == "classification":
        raise UsageError(
            f"argument --loss: {args.loss} is a regression loss, but {args.path} holds "
            "class labels; use --loss log_loss, hinge or squared_hinge"
        )


def cmd_fit(args: argparse.Namespace) -> int:
    """``daskgd fit PATH``: train on a Zarr dataset, save the model, print a summary."""
    with client_for(args) as client:
        est = _estimator(args, client)
        t0 = time.perf_counter()
        est.fit(args.path)
        elapsed = time.perf_counter() - t0
        est.client = None
    loss = est.history_["loss"][-1] if est.history_.get("loss") else float("nan")
    print(
        f"{type(est).__name__}(loss={args.loss!r}, mode={args.mode!r}): {est.n_iter_} epochs, "
        f"{est.n_updates_} updates, final loss {loss:.6g}, "
        f"{'converged' if est.converged_ else 'not converged'}, {elapsed:.2f} s"
    )
    if args.output:
        save_model(est, args.output)
        print(f"model written to {args.output}")
    if args.plot:
        _save_plot({args.mode: est}, args.plot)
        print(f"plot written to {args.plot}")
    return 0


def check_predict(args: argparse.Namespace) -> None:
    """Argument errors of ``daskgd predict``, found before any work (exit code 2)."""
    check_exists("model", args.model, "model file")
    check_exists("path", args.path, "Zarr dataset")
    if args.output is not None:
        check_output("--output", args.output, [".npy", ".json"])


def check_demo(args: argparse.Namespace) -> None:
    """Argument errors of ``daskgd demo`` (exit code 2)."""
    if args.plot:
        check_plot("--plot", args.plot)


def cmd_predict(args: argparse.Namespace) -> int:
    """``daskgd predict MODEL PATH``: predictions for a Zarr dataset (and its score)."""
    from daskgd.data import open_zarr

    est = load_model(args.model)
    ds = open_zarr(args.path, validate=False)
    with client_for(args) as client:
        pred = est.predict(ds.X)
        compute = client.compute if client is not None else None
        values = compute(pred).result() if compute else pred.compute()
        score = None
        if ds.y is not None and not args.no_score:
            s = est.score(ds.X, ds.y)
            score = float(compute(s).result() if compute else s.compute())
    if args.output:
        out = str(args.output)
        if out.endswith(".npy"):
            np.save(out, values)
        else:  # .json (check_predict refused anything else)
            Path(out).write_text(json.dumps(to_jsonable(values.tolist())), encoding="utf-8")
        print(f"{len(values)} predictions written to {out}")
    else:
        for v in values[: args.head]:
            print(v)
    if score is not None:
        name = "R^2" if est.__class__.__name__.endswith("Regressor") else "accuracy"
        print(f"{name} on {args.path}: {score:.6g}")
    return 0


def _save_plot(runs: Any, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    from daskgd.plot import plot_history

    axes = plot_history(runs)
    axes[0].figure.savefig(path, dpi=100)
    plt.close(axes[0].figure)


def cmd_demo(args: argparse.Namespace) -> int:
    """``daskgd demo``: synthetic Zarr data, an embedded cluster, sync vs async, a plot."""
    from distributed import Client, LocalCluster

    from daskgd.data.synthetic import make_regression
    from daskgd.sklearn import SGDRegressor

    with tempfile.TemporaryDirectory(prefix="daskgd-demo-") as tmp:
        path = os.path.join(tmp, "demo.zarr")
        print(f"writing {args.n_samples} x {args.n_features} synthetic regression data to {path}")
        with (
            LocalCluster(n_workers=args.n_workers, threads_per_worker=1, processes=True,
                         dashboard_address=":0", silence_logs=cluster_log_level(args)) as cluster,
            Client(cluster) as client,
        ):  # fmt: skip
            ds = make_regression(path, args.n_samples, args.n_features, noise=0.1,
                                 chunk_rows=max(1, args.n_samples // (4 * args.n_workers)),
                                 random_state=0, client=client)  # fmt: skip
            X, y = ds.X.compute(), ds.y.compute()
            A = np.column_stack([X, np.ones(len(X))])
            best = 0.5 * float(np.mean((A @ np.linalg.lstsq(A, y, rcond=None)[0] - y) ** 2))
            runs, rows = {}, []
            for mode in ("sync", "async"):
                est = SGDRegressor(penalty=None, batch_size=args.batch_size, mode=mode,
                                   learning_rate="constant", max_iter=args.max_epochs,
                                   tol=1e-6, random_state=0, verbose=0, client=client)  # fmt: skip
                t0 = time.perf_counter()
                est.fit(path)
                elapsed = time.perf_counter() - t0
                est.client = None
                loss = est.history_["loss"][-1]
                stale = max(est.history_.get("staleness_max") or [0])
                rows.append((mode, est.n_iter_, est.n_updates_, loss, (loss - best) / best,
                             stale, elapsed))  # fmt: skip
                runs[mode] = est
    print(f"\noptimum (least squares): {best:.6g}")
    header = ("mode", "epochs", "updates", "final loss", "rel. gap", "max stale", "time (s)")
    print("{:<6} {:>7} {:>8} {:>12} {:>10} {:>9} {:>9}".format(*header))
    for r in rows:
        print(f"{r[0]:<6} {r[1]:>7} {r[2]:>8} {r[3]:>12.6g} {r[4]:>10.2e} {r[5]:>9} {r[6]:>9.2f}")
    if args.plot:
        _save_plot(runs, args.plot)
        print(f"\nconvergence plot written to {args.plot}")
    return 0


def add_verbs(sub: Any) -> None:
    """Register ``demo``, ``fit`` and ``predict`` on the command's subparsers."""
    p = sub.add_parser("demo", help="fit sync and async on synthetic data; print and plot")
    p.add_argument("--n-samples", type=positive_int, default=20_000)
    p.add_argument("--n-features", type=positive_int, default=20)
    p.add_argument("--n-workers", type=positive_int, default=2)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--max-epochs", type=positive_int, default=20)
    p.add_argument("--plot", default="daskgd-demo.png", help="PNG to write ('' for none)")
    p.set_defaults(func=cmd_demo, check=check_demo, parser=p)

    p = sub.add_parser("fit", help="train a linear model on a Zarr dataset")
    p.add_argument("path", help="Zarr group (local path or URL) written by make-data/write_zarr")
    p.add_argument("--loss", default="squared_error", choices=list(LOSSES))
    p.add_argument("--mode", choices=["sync", "async", "ssp"], default="sync")
    # L-BFGS is offered by the estimators that choose it (LinearRegression,
    # LogisticRegression); the command trains SGD estimators
    optimizers = [name for name in OPTIMIZERS if name != "lbfgs"]
    p.add_argument("--optimizer", default="sgd", choices=optimizers)
    p.add_argument("--learning-rate", type=positive_float, default=None,
                   help="initial step size (default: 1/L, safe for full batch)")  # fmt: skip
    p.add_argument("--lr-schedule", choices=list(SCHEDULES), default="constant")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: full batch")
    p.add_argument("--max-epochs", type=positive_int, default=100)
    p.add_argument("--tol", type=non_negative_float, default=1e-4)
    p.add_argument("--alpha", type=non_negative_float, default=0.0)
    p.add_argument("--l1-ratio", type=fraction, default=0.0)
    p.add_argument("--max-staleness", type=non_negative_int, default=None,
                   help="bound of --mode ssp (required there)")  # fmt: skip
    p.add_argument("--random-state", type=non_negative_int, default=0)
    p.add_argument("--placement", choices=list(PLACEMENTS), default="auto",
                   help="which rows each worker trains on (resources: by the workers' "
                   "declared 'daskgd' resource, else their threads)")  # fmt: skip
    p.add_argument("--partition", choices=list(PARTITIONS), default="rows",
                   help="features: each worker holds every row of one block of columns and "
                   "that block of the coefficients (wide data)")  # fmt: skip
    p.add_argument("--output", help="model file to write: model.json or model.zarr")
    p.add_argument("--plot", help="convergence plot to write (PNG)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    add_cluster_options(p)
    p.set_defaults(func=cmd_fit, check=check_fit, parser=p)

    p = sub.add_parser("predict", help="predict with a saved model on a Zarr dataset")
    p.add_argument("model", help="model file written by 'daskgd fit --output'")
    p.add_argument("path", help="Zarr group with X (and y, for the score)")
    p.add_argument("--output", help="write the predictions to a .npy or .json file")
    p.add_argument("--head", type=positive_int, default=10, help="predictions to print")
    p.add_argument("--no-score", action="store_true", help="skip the score")
    add_cluster_options(p)
    p.set_defaults(func=cmd_predict, check=check_predict, parser=p)
