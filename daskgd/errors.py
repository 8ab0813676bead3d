"""The exceptions daskgd raises and users catch.

Each one derives from :class:`DaskgdError` and from the built-in exception a
user would otherwise expect (``ValueError`` for bad data, ``RuntimeError`` for
a cluster problem), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class DaskgdError(Exception):
    """Base class of every daskgd error."""


class DataValidationError(DaskgdError, ValueError):
    """The data is malformed: wrong shape, dtype, chunks, NaN/inf, bad labels or weights."""


class DataChangedError(DataValidationError):
    """A dataset changed after the fit opened it: a chunk file a task mapped changed while
    the fit read it, or the dataset was written again (its write id or digests differ) or
    removed. The model would mix two datasets, so none is returned."""


class InvalidSettingError(DaskgdError, ValueError, TypeError):
    """A fit setting has the wrong type or value, or settings contradict each other.

    Both a ``ValueError`` and a ``TypeError``, as scikit-learn's ``InvalidParameterError``.
    """


class IncompleteDatasetError(DataValidationError):
    """A Zarr group is not a complete daskgd dataset (a write failed or is under way)."""


class DataNotFoundError(DaskgdError, FileNotFoundError):
    """A dataset, or one of its arrays, is not at its path where it is read (e.g. on a worker).

    A ``FileNotFoundError``: the driver opened the dataset, but the process that reads it
    (a Dask worker) finds nothing there, because the path names a folder that only the
    driver's machine has, or the dataset was moved or deleted since.
    """


class DivergenceError(DaskgdError, FloatingPointError):
    """The loss or the gradient became non-finite: the learning rate is too large."""


class SchedulerSetupError(DaskgdError, RuntimeError):
    """The Dask scheduler cannot run daskgd (daskgd is not installed there), or cannot be
    reached as configured (a ``tls://`` address without TLS credentials)."""


class TrainingError(DaskgdError, RuntimeError):
    """A fit failed on the cluster: every worker was lost, a task failed, the job vanished."""


class NoWorkersError(TrainingError):
    """Every worker of a fit was gone for longer than ``worker_timeout`` seconds.

    A :class:`TrainingError` (so a :class:`DaskgdError` and a ``RuntimeError``): start
    workers, find out why they die (memory limits, killed processes), or raise
    ``worker_timeout`` to wait longer for them to come back.
    """


class CheckpointError(DaskgdError, ValueError):
    """A checkpoint cannot be used: not a daskgd checkpoint, or from an incompatible fit."""


class SchedulerLostError(TrainingError):
    """The Dask scheduler died or became unreachable during a fit.

    Attributes
    ----------
    checkpoint : str or None
        The checkpoint path of the fit, if it had one.
    epoch : int or None
        The epoch of the last checkpoint written, if any.
    """

    def __init__(self, message: str, checkpoint: str | None = None, epoch: int | None = None):
        super().__init__(message)
        self.checkpoint = checkpoint
        self.epoch = epoch


class ModelFileError(DaskgdError, ValueError):
    """A file given as a saved model is not one (:func:`daskgd.load_model`), or names an
    estimator this daskgd does not have."""


class ParameterServerError(TrainingError):
    """The parameter server refused a call (its reply had ``status == "error"``).

    Attributes
    ----------
    op : str
        The operation (``"push"``, ``"create"``...).
    kind : str
        The reply's error kind (``"bad_message"``, ``"unknown_job"``, ``"internal"``...).
    """

    def __init__(self, message: str, op: str = "", kind: str = "internal") -> None:
        super().__init__(message)
        self.op = op
        self.kind = kind


class UnknownJobError(ParameterServerError):
    """The job is not on the scheduler: finished, closed, freed, or never created."""


class BadMessageError(ParameterServerError, ValueError):
    """A message the parameter server refused as malformed (bad settings, shapes, ranges);
    it changed nothing there."""


class SupersededError(ParameterServerError):
    """A newer run of this training task (a rerun after its worker was thought lost) joined
    the job: this run's pushes are refused and it must end."""


class ParameterServerTimeoutError(ParameterServerError):
    """The parameter server did not answer a call in time."""


class ResumeRejectedError(ParameterServerError, CheckpointError):
    """The parameter server refused to resume from a checkpoint that does not fit the job."""
