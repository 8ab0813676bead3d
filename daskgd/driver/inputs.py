"""The one route from what the user passes to a checked :class:`~daskgd.data.Dataset`."""

from __future__ import annotations

from typing import Any

import numpy as np
from distributed import Client

from daskgd.data import Dataset, as_dataset, no_classes_reason
from daskgd.driver.placement import chunk_rows_for, chunks_per_worker
from daskgd.driver.settings import FitSettings
from daskgd.errors import DataValidationError
from daskgd.objective import get_loss

__all__ = ["check_classes", "open_data"]


def open_data(
    data: Any,
    s: FitSettings,
    client: Client,
    *,
    validate: bool,
    n_workers: int,
    offset: Any = None,
) -> Dataset:
    """Open ``data`` (a Dataset, a Zarr path, arrays) and check its labels against ``s``.

    Blocking: the driver runs it in a thread. The scan (``validate``) of dask input runs
    on the cluster of ``client``; numpy input is cut into one chunk per worker (several
    for ``placement="resources"``, which hands out whole chunks).
    ``offset`` (per-row offsets of the margin) replaces the data's own, if any.
    """
    ds = as_dataset(
        data,
        offset=offset,
        validate=validate,
        client=client,
        chunk_rows=chunk_rows_for(data, n_workers, chunks_per_worker(s.placement)),
    )
    if ds.offset is not None and s.n_columns is not None:
        raise DataValidationError(
            f"the data has offsets, which are added to the one margin of each row; a fit "
            f"with n_classes={s.n_classes} has one margin per class and takes none. Fit "
            "without offsets (a dataset without an 'offset' array)"
        )
    check_classes(ds, s, client)
    return ds


def check_classes(ds: Dataset, s: FitSettings, client: Client | None = None) -> None:
    """A classification loss needs class labels, of at least two classes (as the estimators).

    Runs before the job is created (on the error path it may take a pass over ``y``).
    """
    if not get_loss(s.loss).classification:
        return  # a regression target is never scanned for labels
    # read here, not in the async core: a group that does not record its classes is
    # scanned for them on first access
    classes = ds.classes_
    if s.labels_checked:
        return
    if classes is None:
        raise DataValidationError(
            f"loss={s.loss!r} is a classification loss but {no_classes_reason(ds.y, client)}; "
            "use loss='squared_error' or 'huber' for a regression target"
        )
    if len(classes) < 2:
        raise DataValidationError(
            f"loss={s.loss!r} needs samples of at least 2 classes, but y holds only one: "
            f"{np.asarray(classes).tolist()!r}; a classifier cannot learn from one class"
        )
