"""What the estimators share: the cluster a fit runs on, calling the engine, the fitted
attributes, the feature names, pickling and cloning.

The cluster
    ``client`` is a ``distributed.Client``, a scheduler address, or None (the current client,
    else an embedded ``LocalCluster`` that lives for one fit). Everything a fit computes
    (class discovery, class weights, the weight sum, the training) runs on that one
    cluster, never on dask's default scheduler. A fitted estimator holds no client: it
    pickles without a cluster, and a ``Client`` passed as ``client`` is dropped when
    pickling (the unpickled estimator uses the current client on its next fit).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from daskgd import driver
from daskgd.cluster import check_scheduler, connect
from daskgd.data import Dataset, FeatureBlocks
from daskgd.driver.placement import chunks_per_worker
from daskgd.history import history_to_dict
from daskgd.progress import ProgressBar, progress_enabled
from daskgd.sklearn.early_stopping import EarlyStopping
from daskgd.sklearn.inputs import in_memory_dataset
from daskgd.sklearn.params import check_params, engine_seed, resolve_optimizer

__all__ = ["LinearModel", "feature_names", "fit_client", "n_workers"]


def feature_names(X: Any) -> np.ndarray | None:
    """The column names of a data frame (pandas, dask) when all are strings, as
    scikit-learn records them; None for arrays, paths and other names."""
    columns = getattr(X, "columns", None)
    if columns is None or isinstance(X, Dataset):
        return None
    names = np.asarray(list(columns), dtype=object)
    if len(names) == 0 or not all(isinstance(n, str) for n in names):
        return None
    return names


@contextlib.contextmanager
def fit_client(client: Any) -> Iterator[Any]:
    """The ``distributed.Client`` one fit runs on, checked to run daskgd.

    A Client is used as given; an address is connected to for the fit; None is the current
    client, else an embedded LocalCluster (one worker process per core) started here and
    closed after the fit. None of them becomes dask's default scheduler.
    """
    from distributed import Client, LocalCluster, get_client

    if isinstance(client, str | os.PathLike):
        with connect(str(client), set_as_default=False) as c:
            check_scheduler(c)
            yield c
        return
    if client is not None:
        if not isinstance(client, Client):
            raise TypeError(
                "client must be a distributed.Client, a scheduler address or None, got "
                f"{type(client).__name__}"
            )
        check_scheduler(client)
        yield client
        return
    try:
        current = get_client()
    except ValueError:
        current = None
    if current is not None:
        check_scheduler(current)
        yield current
        return
    with (
        LocalCluster(
            n_workers=os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        yield c


def n_workers(client: Any) -> int:
    """Workers of the client's cluster now (at least 1)."""
    return max(1, len(client.scheduler_info()["workers"]))


class LinearModel:
    """The estimators' shared machinery: settings, feature names, the engine call, the bar.

    Subclasses declare ``_parameter_constraints`` (see :mod:`daskgd.sklearn.params`).
    """

    client: Any  # set by the subclasses' __init__ (a scikit-learn parameter)
    _parameter_constraints: ClassVar[dict[str, Any]] = {}
    #: LinearRegression, LogisticRegression: ``tol`` is a gradient tolerance, not a loss one
    _tol_is_gradient = False
    #: the cross-validated estimators: no sparse input
    _dense_only = False
    # Fitted attributes (set by fit; declared here for the type checker only).
    coef_: np.ndarray
    intercept_: np.ndarray
    n_features_in_: int

    def _check_frame_names(self, X: Any, *, reset: bool) -> None:
        """``feature_names_in_`` of lazy input (a dask DataFrame's columns; dask arrays,
        Datasets and paths have none): set on ``reset``, else compared by scikit-learn's
        rules (other names refuse, names missing on one side warn). numpy and pandas input
        go through scikit-learn's ``validate_data``, which applies the same rules."""
        names = feature_names(X)
        if reset:
            if names is None:
                self.__dict__.pop("feature_names_in_", None)
            else:
                self.feature_names_in_ = names
            return
        fitted: Any = getattr(self, "feature_names_in_", None)
        est = type(self).__name__
        if names is not None and fitted is None:
            warnings.warn(f"X has feature names, but {est} was fitted without feature names",
                          UserWarning, stacklevel=4)  # fmt: skip
        elif names is None and fitted is not None:
            warnings.warn(f"X does not have valid feature names, but {est} was fitted with "
                          "feature names", UserWarning, stacklevel=4)  # fmt: skip
        elif names is not None and not np.array_equal(names, fitted):
            raise ValueError(
                "The feature names should match those that were passed during fit. "
                f"Fitted with {list(fitted)}, got {list(names)}."
            )

    def _check_n_features(self, d: int, *, reset: bool = False) -> None:
        if reset:
            self.n_features_in_ = d
        elif d != self.n_features_in_:
            raise ValueError(
                f"X has {d} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )

    def _eta0(self) -> float | str:
        """The step size: ``eta0`` as given (checked), or "auto" (``1 / L``, computed by the
        workers from their rows while they load them; see :func:`daskgd.fit`)."""
        eta0 = getattr(self, "eta0", "auto")
        return "auto" if isinstance(eta0, str) else float(eta0)

    def _warn_unconverged(self, result: Any, tol: float | None) -> None:
        """scikit-learn's ``ConvergenceWarning`` for a fit that stopped short of its optimum
        (as scikit-learn, only when a tolerance was asked for)."""
        if tol is not None and not result.converged_:
            warnings.warn(
                f"{type(self).__name__} did not converge: {result.reason}. Increase max_iter, "
                "scale the features (e.g. with sklearn.preprocessing.StandardScaler) or "
                "loosen tol.",
                ConvergenceWarning,
                stacklevel=4,
            )

    def _set_fitted(self, result: Any, history: dict[str, list[Any]] | None = None) -> None:
        """The fitted attributes every estimator has (coef_/intercept_ are the subclass's)."""
        self.n_iter_ = max(1, int(result.n_iter_))
        self.n_updates_ = int(result.n_updates_)
        self.converged_ = bool(result.converged_)
        self.history_ = history_to_dict(result.history) if history is None else history
        # which row-chunks each worker trained on (by ``placement``)
        self.plan_ = {w: list(c) for w, c in getattr(result, "plan_", {}).items()}

    def _run(
        self,
        data: tuple[np.ndarray | None, ...] | Dataset | FeatureBlocks,
        client: Any,
        *,
        loss: str,
        alpha: float,
        l1_ratio: float,
        max_iter: int,
        tol: float | None,
        classes: np.ndarray | None = None,
        coef_init: np.ndarray | None = None,
        intercept_init: Any = None,
        desc: str = "daskgd",
        **extra: Any,
    ) -> Any:
        """One engine fit on ``client``; returns the FitResult. The client is never kept.

        ``data`` is a Dataset (lazy input: the engine validates its values once), a
        FeatureBlocks (checked when it was made) or numpy arrays already validated here (the
        engine skips its scan), with their targets' ``classes`` in the engine's encoding.
        """
        p = self.get_params(deep=False)  # type: ignore[attr-defined]
        extra.update(self._checkpoint_settings(p, partial=extra.pop("partial", False)))
        if self._tol_is_gradient:
            # ``tol`` is a relative gradient tolerance; the loss rule only catches a solver
            # that can get no further (no decrease at all, longer than L-BFGS backtracks)
            extra["gtol_rel"], tol = tol, (None if tol is None else 0.0)
            extra["n_iter_no_change"] = 40
        bar = ProgressBar(max_iter, enabled=progress_enabled(p.get("verbose", 0)), desc=desc)
        callback: Callable[[dict[str, Any]], Any] = bar.update
        stopper = None
        lazy = isinstance(data, Dataset | FeatureBlocks)
        if p.get("early_stopping") and max_iter > 1:  # not for partial_fit's single epoch
            if lazy:
                raise ValueError(
                    "early_stopping=True holds out a share of in-memory data: pass numpy "
                    "arrays, or use early_stopping=False with dask arrays and Zarr data"
                )
            assert isinstance(data, tuple)  # numpy input (a Dataset was refused above)
            data, stopper = EarlyStopping.split(
                data, p["validation_fraction"], engine_seed(p.get("random_state")), loss=loss,
                epsilon=extra.get("epsilon", 0.1), tol=tol, patience=p["n_iter_no_change"],
                one_vs_rest=bool(extra.get("one_vs_rest")),
            )  # fmt: skip
            tol = None  # the held-out loss, not the training loss, decides when to stop

            def update_and_check(row: dict[str, Any]) -> bool:
                bar.update(row)
                return stopper(row)

            callback = update_and_check
            extra["callback_params"] = True
        if not isinstance(data, Dataset | FeatureBlocks):
            data = in_memory_dataset(data, n_workers(client), classes,
                                     chunks_per_worker(p.get("placement", "auto")))  # fmt: skip
        try:
            settings = driver.FitSettings(
                loss=loss,
                mode=p.get("mode", "sync"),
                # an estimator that names its solver otherwise (the GLMs' ``solver``) says
                optimizer=extra.pop("optimizer", None) or resolve_optimizer(p, alpha, l1_ratio),
                learning_rate=self._eta0(),
                lr_schedule=extra.pop("lr_schedule", "constant"),
                batch_size=p.get("batch_size"),
                max_epochs=max_iter,
                tol=tol,
                alpha=alpha,
                l1_ratio=l1_ratio,
                fit_intercept=p["fit_intercept"],
                max_staleness=p.get("max_staleness"),
                n_servers=p.get("n_servers", "auto"),
                placement=p.get("placement", "auto"),
                partition=p.get("partition", "rows"),
                random_state=engine_seed(p.get("random_state")),
                coef_init=coef_init,
                intercept_init=intercept_init,
                callback=callback,
                labels_checked=True,  # by the classifiers, up front
                **extra,
            )
            result = driver.fit_with_settings(data, settings, client=client, validate=lazy)
        finally:
            bar.close()
        if stopper is not None and stopper.stopped:
            # the held-out loss stalled: scikit-learn's stopping test held
            result.converged_ = True
        return result

    def _check_params(self) -> None:
        """The declared constraints, once per fit, before any data is read."""
        check_params(self)

    @staticmethod
    def _checkpoint_settings(p: dict[str, Any], partial: bool) -> dict[str, Any]:
        """The engine's checkpoint settings: ``fit`` writes them; ``warm_start`` resumes."""
        path = p.get("checkpoint")
        if path is None or partial:
            return {}
        return {
            "checkpoint": path,
            "checkpoint_every": p.get("checkpoint_every", 10),
            "resume": bool(p.get("warm_start")),
        }

    def __getstate__(self) -> dict[str, Any]:
        # A live Client does not pickle; the estimator falls back to the current client.
        state = dict(self.__dict__)
        if state.get("client") is not None and not isinstance(state["client"], str):
            state["client"] = None
        return state

    def __sklearn_clone__(self) -> Any:
        # clone() deep-copies parameters, which a live Client cannot survive: share it instead.
        params = self.get_params(deep=False)  # type: ignore[attr-defined]
        client = params.pop("client", None)
        new = type(self)(**{k: clone(v, safe=False) for k, v in params.items()})
        new.client = client
        return new

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()  # type: ignore[misc]
        # scipy.sparse input is trained as CSR, never densified; the cross-validated
        # estimators (Gram matrices, Newton paths) take dense input only
        tags.input_tags.sparse = not self._dense_only
        return tags
