"""Checks of the messages the parameter server's handlers receive.

Each check returns None for a good message, else the text of the error reply; a check
changes nothing. They look at types, shapes, dtypes and ranges only (O(1) in the size of
the model): the O(d) tests of a large array's values (finiteness) run where the job's
steps run, off the event loop (see :mod:`daskgd.parameter_server.rounds`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from daskgd.parameter_server.config import is_index, is_real
from daskgd.parameter_server.job import Job

__all__ = [
    "check_class_loss",
    "check_create",
    "check_hess",
    "check_incarnation",
    "check_push",
    "check_push_scalars",
    "check_rank",
    "check_ready",
    "check_status",
    "error",
]


def error(message: str, kind: str = "bad_message") -> dict[str, str]:
    """An error reply (``kind``: see :data:`daskgd.parameter_server.client.ERRORS`)."""
    return {"status": "error", "message": message, "kind": kind}


def check_rank(job: Job, rank: Any) -> str | None:
    """``rank`` is one of the job's."""
    if not is_index(rank) or not 0 <= rank < len(job.ranks):
        return f"rank must be an integer in [0, {len(job.ranks)}), got {rank!r}"
    return None


def check_incarnation(job: Job, rank: int, incarnation: Any) -> dict[str, str] | None:
    """The error reply for a call from an older run of the rank than the one that joined
    last (kind ``superseded``), or for a malformed id; None when the call may go on."""
    if incarnation is None:
        return None
    if not isinstance(incarnation, str):
        return error(f"incarnation must be None or a string, got {incarnation!r}")
    current = job.ranks[rank].incarnation
    if current is not None and incarnation != current:
        return error(
            f"rank {rank}: a newer run of this training task joined the job; this run "
            "(its worker was thought lost) must end",
            kind="superseded",
        )
    return None


def check_push(job: Job, version, grad, n, weight, loss, worker) -> str | None:
    """A push's arguments (the rank is checked already)."""
    if not is_index(version) or version < 0:
        return f"version must be an integer >= 0, got {version!r}"
    if version > job.version:
        return f"version {version} is from the future (current version {job.version})"
    if job.shards is not None:  # the gradient went to the shards; only scalars come here
        if grad is not None:
            return "grad must be None for a sharded job: push its slices to the shards"
    elif not isinstance(grad, np.ndarray):
        return f"grad must be a numpy array, got {type(grad).__name__}"
    elif grad.shape != job.shape:
        return f"grad has shape {grad.shape}; this job's parameters have {job.shape}"
    elif grad.dtype not in (np.float32, np.float64):
        return f"grad must be float32 or float64, got {grad.dtype}"
    return check_push_scalars(n, weight, loss, worker)


def check_push_scalars(n: Any, weight: Any, loss: Any, worker: Any) -> str | None:
    """The scalars every push carries, dense or key-value, whole or sharded: the batch's
    rows ``n``, its total sample ``weight``, its ``loss`` and the sender's ``worker``."""
    if not is_index(n) or n < 1:
        return f"n (rows in the batch) must be a positive integer, got {n!r}"
    if not (is_real(weight) and math.isfinite(weight) and weight >= 0):
        return f"weight must be a finite number >= 0, got {weight!r}"
    if not is_real(loss):
        return f"loss must be a real number, got {loss!r}"
    if worker is not None and not isinstance(worker, str):
        return f"worker must be None or an address string, got {type(worker).__name__}"
    return None


def check_class_loss(job: Job, class_loss: Any) -> str | None:
    """One-vs-rest jobs: ``class_loss`` holds one float per class."""
    k = job.shape[1] if len(job.shape) == 2 else None
    if k is None:
        return "class_loss is for one-vs-rest jobs (2-D parameters) only"
    if not (isinstance(class_loss, np.ndarray) and class_loss.shape == (k,)):
        shape = getattr(class_loss, "shape", type(class_loss).__name__)
        return f"class_loss must be a numpy array of shape ({k},), got {shape}"
    if class_loss.dtype.kind != "f":
        return f"class_loss must be a float array, got {class_loss.dtype}"
    return None


def check_hess(job: Job, hess: Any) -> str | None:
    """A push's Hessian: a float64 ``(d + 1, d + 1)`` array when the job's optimizer needs
    one (Newton) and asked for it at this round's point (the replies' ``hessian`` flag;
    between fresh Hessians it carries one forward), optional otherwise; never for other
    optimizers. Its values are checked where the job's steps run (O(d^2))."""
    if not job.optimizer.needs_hessian:
        if hess is not None:
            return f"hess is for optimizer 'newton'; this job's optimizer is {job.optimizer.name!r}"
        return None
    n = job.shape[0]
    if hess is None and not job.wants_hessian:
        return None
    if not isinstance(hess, np.ndarray):
        return f"optimizer 'newton' needs hess, a float64 array of shape ({n}, {n}), with this push"
    if hess.shape != (n, n) or hess.dtype != np.float64:
        return f"hess must be a float64 array of shape ({n}, {n}), got {hess.dtype} {hess.shape}"
    return None


def check_create(params, config, optimizer, ranks, client) -> str | None:
    """A new job's arguments (the values of ``params`` are checked by the caller)."""
    if (
        not isinstance(params, np.ndarray)
        or params.ndim not in (1, 2)
        or params.dtype.kind not in "iuf"
        or params.size < 1
    ):
        return "params must be a real numpy array of shape (d + 1,) or (d + 1, k)"
    if (
        not isinstance(ranks, list | tuple)
        or not ranks
        or not all(isinstance(a, str) for a in ranks)
    ):
        return "ranks must be a non-empty list of worker address strings"
    if client is not None and not isinstance(client, str):
        return f"client must be None or a client id string, got {type(client).__name__}"
    for name, value in (("config", config), ("optimizer", optimizer)):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return f"{name} must be a dict with string keys, got {type(value).__name__}"
    return None


def check_status(since: Any, params: Any) -> str | None:
    """``since`` and ``params`` of a status, close or snapshot call."""
    if not is_index(since) or since < 0:
        return f"since must be an integer >= 0, got {since!r}"
    if not isinstance(params, bool):
        return f"params must be True or False, got {params!r}"
    return None


def check_ready(
    job: Job, worker, loss0, loss_zero, grad0, weight, curvature, gram, colsq=None
) -> str | None:
    """A ``ready`` report's arguments (the rank is checked already)."""
    if not isinstance(worker, str):
        return f"worker must be an address string, got {type(worker).__name__}"
    below = job.config.loss_below_zero  # the log-link losses (see JobConfig)
    for name, v in (("loss0", loss0), ("loss_zero", loss_zero), ("weight", weight)):
        # non-finite losses are divergence, answered by the job; negative ones are malformed
        finite = name != "weight" or (is_real(v) and math.isfinite(v))
        if not is_real(v) or (v < 0 and not (below and name != "weight")) or not finite:
            return f"{name} must be a real number >= 0, got {v!r}"
    if not (
        isinstance(grad0, np.ndarray)
        and grad0.shape == job.shape
        and grad0.dtype in (np.float32, np.float64)
    ):
        return f"grad0 must be a float array of shape {job.shape}"
    if curvature is not None and not (
        isinstance(curvature, tuple | list) and len(curvature) == 3
        and all(is_real(c) and math.isfinite(c) and c >= 0 for c in curvature)
    ):  # fmt: skip
        return "curvature must be None or three finite numbers >= 0"
    # A^T W A: with the intercept's column of ones when the intercept is fitted
    n = job.shape[0] - (0 if job.optimizer.fit_intercept else 1)
    if gram is not None and not (
        curvature is not None and isinstance(gram, np.ndarray) and gram.shape == (n, n)
        and gram.dtype == np.float64 and bool(np.all(np.isfinite(gram)))
    ):  # fmt: skip
        return f"gram must be None or a finite float64 array of shape ({n}, {n})"
    if colsq is not None and not (
        isinstance(colsq, np.ndarray) and colsq.shape == (job.shape[0],)
        and colsq.dtype == np.float64 and bool(np.all(np.isfinite(colsq) & (colsq >= 0)))
    ):  # fmt: skip
        return f"colsq must be None or a finite float64 array >= 0 of shape ({job.shape[0]},)"
    return None


def check_shards(shards: Any, params: Any, config: Any, optimizer: Any, workers: Any) -> str | None:
    """A sharded job's layout and settings: what the shards can run (sync rounds, rules
    that act coordinate by coordinate, no recorded parameter vectors)."""
    if not (
        isinstance(shards, list | tuple) and shards and all(isinstance(a, str) for a in shards)
    ):
        return "shards must be a non-empty list of worker addresses"
    if len(set(shards)) != len(shards):
        return f"shards must be distinct workers, got {shards}"
    gone = [a for a in shards if a not in workers]
    if gone:
        return f"shard worker(s) {gone} are not in the cluster"
    if len(shards) > params.shape[0]:
        return f"{len(shards)} shards for {params.shape[0]} parameter rows: use fewer servers"
    name = optimizer.get("name") if isinstance(optimizer, dict) else None
    if name == "newton":
        return ("optimizer 'newton' needs the whole model in one place: use n_servers=0, "
                "or optimizer 'lbfgs' or a first-order one (sgd, momentum, nesterov, adagrad, "
                "adam)")  # fmt: skip
    if isinstance(config, dict) and config.get("record_params"):
        return "callback_params=True keeps every epoch's parameters: use n_servers=0"
    if name == "lbfgs" and isinstance(config, dict) and config.get("batches_per_epoch", 1) != 1:
        return "optimizer 'lbfgs' with shards needs full batches (batches_per_epoch=1)"
    return None
