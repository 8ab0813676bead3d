"""The parameter server: a scheduler plugin that holds each job's parameters and optimizer
state, closes synchronous rounds, bounds staleness and applies the stop rules, and its client.

Modules: :mod:`~daskgd.parameter_server.config` (JobConfig and the rules the driver checks
too), :mod:`~daskgd.parameter_server.job` (a job's state),
:mod:`~daskgd.parameter_server.rounds` (sync/async/ssp steps),
:mod:`~daskgd.parameter_server.stats` (epochs and stop rules),
:mod:`~daskgd.parameter_server.checks` (message checks),
:mod:`~daskgd.parameter_server.runner` (one owner per job),
:mod:`~daskgd.parameter_server.members` and :mod:`~daskgd.parameter_server.plugin` (the
handlers) on the scheduler; :mod:`~daskgd.parameter_server.client` on the driver and the
workers.

:class:`ParameterServer` is installed on the Dask scheduler with
``Client.register_plugin`` (idempotent, by name). Its ``start`` adds these
handlers to ``scheduler.handlers``; ``close`` removes them. Every reply is a
dict with a ``status`` key: ``"OK"``, ``"stale"`` (sync: the gradient was
computed at an older version; recompute at the params sent back),
``"stopped"`` (the job is over; see ``reason``/``error``) or ``"error"`` (the
message was invalid and changed nothing; see ``message``). Arrays travel
wrapped in :class:`distributed.protocol.ToPickle`.

==========================  ====================================================
handler                     arguments -> reply (besides ``status``)
==========================  ====================================================
``daskgd_create``           ``job, params, config, optimizer, ranks, client=None``
                            -> ``version``
``daskgd_join``             ``job, rank, worker, incarnation=None`` -> ``params,
                            version, position, wait_bound`` (and ``initial``, the job's
                            starting parameters, to a rank that has not reported
                            ``ready`` yet)
``daskgd_ready``            ``job, rank, worker, loss0, loss_zero, grad0, weight,
                            curvature=None, gram=None, incarnation=None`` -> ``params,
                            version``: after loading, a
                            rank's loss at the starting parameters and at zero and
                            its gradient there (divergence and ``gtol_rel``
                            references), and its curvature figures for
                            ``auto_lr``; with ``auto_lr`` the reply waits until
                            every live rank reported (the step size is then known)
``daskgd_push``             ``job, rank, version, grad, n, weight, loss,
                            worker=None, class_loss=None, incarnation=None,
                            hess=None`` -> ``params, version`` (``hess``: the
                            rows' summed Hessian, float64 ``(d + 1, d + 1)``, with
                            every push of a Newton job and only then)
``daskgd_pull``             ``job`` -> ``params, version``
``daskgd_status``           ``job, since=0, params=False, wait=0`` -> ``stopped, reason,
                            converged, error, error_kind, history, version,
                            epochs, live`` (and ``params`` when asked); the rows
                            before ``since`` drop their parameter vectors here
``daskgd_stop``             ``job, reason="stopped by the user"`` -> (as status)
``daskgd_close``            ``job, since=0`` -> final status with ``params`` and the
                            history rows from ``since``; frees the job
``daskgd_info``             -> ``jobs, version``
``daskgd_snapshot``         ``job, fresh=False, since=0`` -> ``seq, snapshot``
                            (the latest checkpoint snapshot, or a new one when
                            ``fresh``), ``history`` (its rows from ``since``)
==========================  ====================================================

Key-value (sparse) jobs: ``daskgd_kcreate``, ``daskgd_kready``, ``daskgd_kpull`` and
``daskgd_kpush`` (:mod:`~daskgd.parameter_server.keyed_handlers`) keep the parameters in a
keyed optimizer's state (:mod:`~daskgd.parameter_server.keyed_job`); a push carries the
gradient at the keys its batch touched and its reply the weights at the member's next
keys. ``join``, ``status``, ``stop`` and ``close`` serve them as they serve dense jobs.
With ``shards`` the keyed state lives in key-hashed shards on workers
(:mod:`~daskgd.parameter_server.kshard`) and the scheduler's pushes carry scalars only
(:mod:`~daskgd.parameter_server.kshard_handlers`).

Newton jobs (optimizer ``newton``, sync mode, full batches): each round sums the ranks'
gradients and Hessians in rank order and the optimizer solves for the next point, off the
event loop; a trial point of its line search whose loss overflowed is backed off from,
and a fit that stops short of convergence returns the step proposed from the point it
just accepted, or, stopped during a backtrack, the last accepted point (never a rejected
trial point).

One-vs-rest jobs (parameters ``(d + 1, k)``, one binary problem per column) push
``class_loss``, the k summed losses, besides their total ``loss``; the epoch's history
row then has ``class_loss``, each class's objective (its mean loss plus its column's
penalty), whose sum is the row's ``loss``.

Checkpoints: with ``checkpoint_every=k`` in the job's config, the job copies its
state (parameters, optimizer state, version, epoch, the length of its history,
stop-rule counters) into a *snapshot* right after the step that closed every
k-th epoch, where the step ran, so the snapshot is consistent; ``status`` replies
carry its sequence number ``snapshot_seq`` and the driver fetches and writes it
(:mod:`daskgd.checkpoint`). ``daskgd_create`` takes ``resume``, such a snapshot,
to continue a checkpointed fit. The scheduler never touches the disk.

Modes: ``sync`` waits until every live member pushed a gradient for the current
version and steps with their row-weighted mean (summed in rank order, so the
result is bitwise reproducible); with ``sync_quorum=k`` a round closes as soon
as ``k`` members pushed (or every live member, when fewer than ``k`` are left)
and steps with the row-weighted mean of the gradients that made it: the
stragglers' late gradients are dropped, counted (``dropped_gradients``) and
answered ``stale`` with the current parameters (backup workers, as in Chen et
al., "Revisiting distributed synchronous SGD", 2016); ``async`` applies each push on arrival and
records its staleness; ``ssp`` is ``async`` where a member more than
``max_staleness`` pushes ahead of the slowest live member waits.

Membership comes from the scheduler: ``remove_worker`` deactivates the ranks
running there, so a round never waits on a dead worker; a rerun training task
calls ``daskgd_join`` and continues from the current parameters.

Members and leases: each training-task run has an *incarnation* id, sent with
``join``, ``ready`` and ``push``; once a newer run of a rank joined, the older run's calls
are refused (kind ``superseded``), so a zombie task cannot push. A member silent for
``member_timeout`` seconds (no call) leaves the live set until it calls again, so a sync
round, an ssp wait or an ``auto_lr`` start never waits forever on a member that hangs.
A full-batch L-BFGS or Newton round closes only with every member's rows (its line search
compares the whole data's losses; a dead member's rerun task pushes at the same version):
there a member silent that long stops the job, naming its rank.

One owner per job: every change of a job runs through :meth:`ParameterServer.exclusive`,
on the event loop for a small model (at most ``inline_max_params`` numbers, where the
thread hand-off would cost more than the arithmetic, as ``bench/bench_engine.py``
measures) and otherwise in the plugin's thread pool under the job's lock, so one job's
steps run in order and off the loop, while other jobs' steps go on in other threads.
Published parameters are one immutable ``(version, params)`` pair, never mutated.
This module must stay importable without the compiled kernels.

The scheduler's port must be trusted (it unpickles what it is sent; use TLS with
:class:`distributed.security.Security`), but a handler still accepts only
well-formed messages for existing jobs: every argument is checked (types, shapes,
dtypes, ranges) before anything changes, a message with missing or unknown keys is
answered with an error, and an unexpected failure is logged and answered with an
error of kind ``"internal"`` rather than raised into the scheduler.
"""

from daskgd.parameter_server.block_tree import TREE_PLUGIN_NAME, TreeReducer
from daskgd.parameter_server.client import ParameterServerClient
from daskgd.parameter_server.config import (
    INLINE_MAX_PARAMS,
    MODES,
    PLUGIN_NAME,
    JobConfig,
    check_quorum,
    make_settings,
)
from daskgd.parameter_server.job import Job
from daskgd.parameter_server.plugin import ParameterServer

__all__ = [
    "INLINE_MAX_PARAMS",
    "MODES",
    "PLUGIN_NAME",
    "TREE_PLUGIN_NAME",
    "Job",
    "JobConfig",
    "ParameterServer",
    "ParameterServerClient",
    "TreeReducer",
    "check_quorum",
    "make_settings",
]
