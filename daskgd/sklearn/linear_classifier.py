"""The classifiers' shared fit and prediction (:class:`LinearClassifier`).

Labels of any type (strings too). Internally, binary problems use ``-1``/``+1`` targets
(``classes_[1]`` is the positive class) and the multinomial loss uses class indices.
A Zarr dataset (or Dataset) with numeric labels and no class weights reaches the engine as it
is: the workers read their chunks from the store and encode the labels as they read them.
Otherwise the labels are encoded lazily here, on the fit's cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from daskgd.data import Dataset, FeatureBlocks
from daskgd.sklearn.base import LinearModel, fit_client
from daskgd.sklearn.feature_input import (
    block_margins,
    check_block_fit,
    check_block_targets,
    score_inputs,
    with_targets,
)
from daskgd.sklearn.inputs import (
    dask_map,
    is_lazy,
    lazy_features,
    lazy_inputs,
    sample_weight_array,
)
from daskgd.sklearn.labels import (
    apply_class_weight,
    binary_targets,
    encode,
    find_classes,
    one_vs_rest_history,
    weight_sum,
)

__all__ = ["LinearClassifier"]


def _direct(ds: Dataset | None, classes: np.ndarray, class_weight: Any) -> Dataset | None:
    """The dataset itself, with the estimator's classes, when the workers can read and
    encode its labels as stored: numeric labels, all among ``classes``, no class weights."""
    if ds is None or class_weight is not None or ds.classes_ is None:
        return None
    if classes.dtype.kind not in "biuf":
        return None
    if not np.all(np.isin(ds.classes_, classes)):
        unknown = np.setdiff1d(ds.classes_, classes)
        raise ValueError(f"y contains labels not in classes_ {classes!r}: {unknown!r}")
    if np.array_equal(ds.classes_, classes):
        return ds
    return Dataset(ds.X, ds.y, ds.sample_weight, classes=classes, path=ds.path,
                   storage_options=ds.storage_options, attrs=ds.attrs)  # fmt: skip


class LinearClassifier(LinearModel, ClassifierMixin, BaseEstimator):
    """Shared fit/predict of the classifiers: label encoding, binary, multinomial, OvR."""

    def _loss(self) -> str:
        raise NotImplementedError  # pragma: no cover - abstract

    def _objective(self, total_weight: Callable[[], float]) -> tuple[float, float, dict]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _fit(
        self, X: Any, y: Any, sample_weight: Any, *, partial: bool, classes: Any = None
    ) -> Any:
        self._check_params()
        name = type(self).__name__
        fb = X if isinstance(X, FeatureBlocks) else None
        if fb is not None:
            check_block_fit(self)
        lazy = is_lazy(X)
        first = not (partial and hasattr(self, "coef_"))
        if not lazy:  # checked before any cluster is started or reached
            X, y = validate_data(self, X, y, reset=first, dtype=[np.float64, np.float32],
                                 accept_sparse="csr",
                                 order="C")  # fmt: skip
            check_classification_targets(y)
            sample_weight = sample_weight_array(sample_weight, X.shape[0], X.dtype)
        loss = self._loss()
        warm = not first or (getattr(self, "warm_start", False) and hasattr(self, "coef_"))
        with fit_client(self.client) as client:
            ds = None
            if fb is not None:
                self._check_frame_names(fb, reset=first)
                check_block_targets(fb, y, sample_weight, name, client)
                self._check_n_features(fb.n_features, reset=first)
                # the engine trains on the first group's targets, which hold the labels
                ds = fb.targets
                X, y, sample_weight = ds.X, ds.y, ds.sample_weight
            elif lazy:
                self._check_frame_names(X, reset=first)
                X, y, sample_weight, ds = lazy_inputs(X, y, sample_weight, client)
                if y is None:
                    raise ValueError(
                        f"{name} requires y to be passed, but the target y is None (and the "
                        "dataset has none)"
                    )
                self._check_n_features(X.shape[1], reset=first)
            if first:
                recorded = None if ds is None else ds.classes_
                self.classes_ = find_classes(name, y, classes, partial, recorded, client)
            elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
                raise ValueError(
                    f"classes={classes!r} differs from the classes of the first partial_fit "
                    f"call, {self.classes_!r}"
                )
            k = len(self.classes_)
            ovr = k > 2 and loss != "log_loss"
            cw = getattr(self, "class_weight", None)
            direct = _direct(ds, self.classes_, cw)
            data: tuple[np.ndarray, ...] | Dataset | FeatureBlocks
            enc: np.ndarray | None = None  # the classes of the targets handed to the engine
            if direct is not None:
                data, sample_weight = direct, direct.sample_weight
                if fb is not None:
                    data = with_targets(fb, direct)
            else:
                codes = encode(y, self.classes_)
                sample_weight = apply_class_weight(cw, self.classes_, codes, sample_weight,
                                                   X.dtype, client)  # fmt: skip
                if k == 2:
                    targets, enc = binary_targets(codes, X.dtype), np.array([-1.0, 1.0])
                else:
                    targets, enc = codes.astype(X.dtype), np.arange(k, dtype=np.float64)
                if fb is not None:
                    # encoded here: the groups are then read through dask, not the store
                    data = with_targets(fb, Dataset(X, targets, sample_weight, classes=enc))
                elif lazy:
                    data = Dataset(X, targets, sample_weight, classes=enc)
                else:
                    data = (X, targets) if sample_weight is None else (X, targets, sample_weight)
            alpha, l1_ratio, extra = self._objective(
                lambda: weight_sum(sample_weight, X.shape[0], client)
            )
            if ovr and getattr(self, "checkpoint", None) is not None and not partial:
                raise ValueError(
                    f"checkpoint= holds one model, and one-vs-rest fits {k} (one per class); "
                    "use LogisticRegression (multinomial) or fit without checkpoint"
                )
            if k == 2:
                coef_init = np.asarray(self.coef_[0], dtype=np.float64) if warm else None
                intercept_init: Any = float(self.intercept_[0]) if warm else None
            else:
                # one-vs-rest as one job: the k binary problems are the k columns of one
                # parameter matrix, all stepped by each round (one pass over the data per
                # epoch for all of them, and one round trip per batch instead of k)
                extra["n_classes"] = k
                if ovr:
                    extra["one_vs_rest"] = True
                coef_init = np.ascontiguousarray(self.coef_.T, dtype=np.float64) if warm else None
                intercept_init = np.asarray(self.intercept_, dtype=np.float64) if warm else None
            result = self._run(
                data,
                client,
                loss=loss,
                alpha=alpha,
                l1_ratio=l1_ratio,
                max_iter=1 if partial else self.max_iter,
                tol=None if partial else self.tol,
                classes=enc,
                coef_init=coef_init,
                intercept_init=intercept_init,
                desc=f"{name} (one-vs-rest, {k} classes)" if ovr else name,
                partial=partial,
                **extra,
            )
        if k == 2:
            self.coef_ = np.asarray(result.coef_, dtype=np.float64).reshape(1, -1)
            self.intercept_ = np.asarray([float(np.ravel(result.intercept_)[0])])
        else:
            self.coef_ = np.ascontiguousarray(np.asarray(result.coef_, dtype=np.float64).T)
            self.intercept_ = np.asarray(result.intercept_, dtype=np.float64).ravel()
        self._set_fitted(result, one_vs_rest_history(result.history, self.classes_) if ovr
                         else None)  # fmt: skip
        if not partial:
            self._warn_unconverged(result, self.tol)
        return self

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit the model on the cluster.

        Parameters
        ----------
        X : array-like, DataFrame (pandas or dask), dask array, Dataset, FeatureBlocks or str
            Features, or a dataset (then ``y`` may be omitted). A FeatureBlocks
            (:func:`daskgd.concat_features`) needs ``partition="features"``; it is trained on
            its first group's labels and weights.
        y : array-like, dask array or Series, optional
            Class labels of any type (with a FeatureBlocks: only the first group's, checked).
        sample_weight : array-like or dask array, optional
            (with a FeatureBlocks: as ``y``)

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, partial=False)

    # -- prediction ---------------------------------------------------------------------------

    def _margins(self, X: Any) -> Any:
        check_is_fitted(self)
        if isinstance(X, FeatureBlocks):
            self._check_frame_names(X, reset=False)
            self._check_n_features(X.n_features)
            m = block_margins(X, self.coef_.T, self.intercept_)
            return m[:, 0] if m.shape[1] == 1 else m
        if is_lazy(X):
            self._check_frame_names(X, reset=False)
            return self._block_margins(lazy_features(X))
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32], accept_sparse="csr")
        return self._block_margins(X)

    def _block_margins(self, X: Any) -> Any:
        """Margins of numpy X, or lazily of a dask X (its width checked)."""
        W, b = self.coef_.T, self.intercept_
        k = W.shape[1]

        def margins(blk: np.ndarray) -> np.ndarray:
            m = blk @ W.astype(blk.dtype) + b.astype(blk.dtype)
            return m[:, 0] if k == 1 else m

        if isinstance(X, da.Array):
            self._check_n_features(X.shape[1])
            return dask_map(X, margins, None if k == 1 else k, X.dtype)
        return margins(X)

    def decision_function(self, X: Any) -> Any:
        """Margins: (n_samples,) for two classes (positive favours ``classes_[1]``), else
        (n_samples, n_classes).

        Parameters
        ----------
        X : array-like, DataFrame, dask array, Dataset, FeatureBlocks or str

        Returns
        -------
        numpy.ndarray or dask.array.Array
        """
        return self._margins(X)

    def predict(self, X: Any) -> Any:
        """Predicted class labels (numpy for numpy input, lazy dask for dask input).

        Parameters
        ----------
        X : array-like, DataFrame, dask array, Dataset, FeatureBlocks or str

        Returns
        -------
        numpy.ndarray or dask.array.Array of shape (n_samples,)
        """
        return self._labels(self._margins(X))

    def _labels(self, m: Any) -> Any:
        classes = self.classes_

        def labels(block: np.ndarray) -> np.ndarray:
            idx = (block > 0).astype(np.intp) if block.ndim == 1 else block.argmax(axis=1)
            return classes[idx]

        if isinstance(m, da.Array):
            meta = np.empty((0,), dtype=classes.dtype)
            if m.ndim == 1:
                return da.map_blocks(labels, m, dtype=classes.dtype, meta=meta)
            return da.map_blocks(labels, m, drop_axis=1, dtype=classes.dtype, meta=meta)
        return labels(m)

    def _has_proba(self) -> bool:
        return self._proba_loss() == "log_loss"

    def _proba_loss(self) -> str:
        return "log_loss"

    @available_if(_has_proba)
    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, shape (n_samples, n_classes) (log loss only).

        Binary: the logistic sigmoid of the margin; multiclass: the softmax of the margins
        (the multinomial model that was fitted).

        Parameters
        ----------
        X : array-like, DataFrame, dask array, Dataset, FeatureBlocks or str

        Returns
        -------
        numpy.ndarray or dask.array.Array
        """
        from daskgd.objective.losses import link

        m = self._margins(X)
        k = len(self.classes_)

        def proba(block: np.ndarray) -> np.ndarray:
            if block.ndim == 1:
                p1 = link("log_loss", block)
                return np.column_stack([1.0 - p1, p1])
            return link("log_loss", block)

        if isinstance(m, da.Array):
            if m.ndim == 1:
                return da.map_blocks(proba, m, new_axis=1, chunks=(m.chunks[0], (2,)),
                                     dtype=np.float64)  # fmt: skip
            return da.map_blocks(proba, m, chunks=(m.chunks[0], (k,)), dtype=np.float64)
        return proba(m)

    @available_if(_has_proba)
    def predict_log_proba(self, X: Any) -> Any:
        """Logarithm of :meth:`predict_proba`."""
        p = self.predict_proba(X)
        return da.log(p) if isinstance(p, da.Array) else np.log(p)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Accuracy (a lazy dask scalar for dask input).

        Parameters
        ----------
        X : array-like, DataFrame, dask array, Dataset, FeatureBlocks or str
        y : array-like or dask array, optional (taken from the dataset when omitted)
        sample_weight : array-like, optional

        Returns
        -------
        float or dask.array.Array
        """
        if not is_lazy(X):
            return super().score(X, y, sample_weight)
        check_is_fitted(self)
        m, yd, sw = score_inputs(self, X, y, sample_weight, self._margins, self._block_margins)
        hit = (self._labels(m) == yd).astype(np.float64)
        if sw is None:
            return hit.mean()
        return (hit * sw).sum() / sw.sum()
