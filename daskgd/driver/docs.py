"""The documentation of ``fit``'s parameters, shared by :func:`daskgd.fit` and
:func:`daskgd.fit_async` (appended to their docstrings)."""

__all__ = ["FIT_PARAMETERS"]

FIT_PARAMETERS = """
    Parameters
    ----------
    data : Dataset, str, os.PathLike or tuple
        A :class:`daskgd.data.Dataset`, a Zarr path/URL, or ``(X, y)`` /
        ``(X, y, sample_weight)`` of numpy or dask arrays.
    loss : str, default="squared_error"
        ``squared_error``, ``huber``, ``log_loss``, ``hinge`` or ``squared_hinge``.
        Binary classification losses take ``y`` in ``{-1, +1}``.
    mode : {"sync", "async", "ssp"}, default="sync"
        ``sync``: every live worker's gradient at version v, their row-weighted
        mean, one step (deterministic for a fixed seed and worker count);
        ``async``: each gradient applied on arrival; ``ssp``: async, but a worker
        more than ``max_staleness`` pushes ahead of the slowest one waits.
    optimizer : {"sgd", "momentum", "nesterov", "adagrad", "adam", "lbfgs", "newton", \
"ftrl", "auto"}, default="sgd"
        ``lbfgs``: limited-memory BFGS with a line search on the exact loss, one pass
        over the data per round; sync mode, full batches and no L1 penalty only. It
        ignores ``learning_rate`` and converges in far fewer epochs than the others.
        ``newton``: each round the workers compute the loss, gradient and Hessian
        ``A^T D A`` of their rows in one pass; the parameter server sums them and takes
        a damped Newton step (Cholesky; L1 and elastic net by coordinate descent on the
        quadratic model, exact zeros) with a line search on the exact objective. A
        handful of passes even on ill-conditioned data; sync mode, full batches, one
        coefficient vector (not multinomial or one-vs-rest) and a loss with a second
        derivative (not ``hinge``); no ``learning_rate``. With ``tol`` (and no ``gtol``/
        ``gtol_rel``) it stops, converged, once the decrease its quadratic model
        predicts is at most ``tol * |loss|`` and the gradient norm at most ``sqrt(tol)``
        times its start. ``auto``: ``newton`` for such fits with at most
        :data:`daskgd.objective.NEWTON_MAX_FEATURES` parameters (``d + 1``; above, the
        Hessian costs more than the passes it saves), else ``lbfgs`` for smooth
        full-batch sync fits, else ``sgd``.
        Sparse ``X`` (scipy.sparse CSR blocks) with ``batch_size`` and ``sgd``,
        ``adagrad``, ``adam`` or ``ftrl`` trains *key-value*: a push carries the
        gradient at the columns its batch touched, a reply the weights at the next
        batch's, so neither grows with the number of features; ``sgd`` applies the
        elastic net lazily and exactly, ``adagrad``/``adam`` lazily at the touched
        coordinates (see :mod:`daskgd.objective.keyed`). ``ftrl``: FTRL-Proximal
        (McMahan et al., 2013), the click-prediction standard, key-value fits only;
        ``learning_rate`` is its ``alpha``, ``optimizer_options`` take ``beta``, ``l1``,
        ``l2``. Key-value fits run sync or async mode (with ``n_servers >= 1`` in
        key-hashed shards on workers), without
        checkpoints or ``gtol``/``gtol_rel`` (their history's ``grad_norm`` is NaN);
        ``learning_rate="auto"`` is 0.1 for adagrad and ftrl and 0.01 for adam there
        (sgd's is ``1 / L`` as below). See :mod:`daskgd.driver.keyed`.
    learning_rate : float or "auto", default="auto"
        The initial step size. ``"auto"``: ``1 / L``, with ``L`` a bound on the
        curvature of the objective that the workers compute from their rows while they
        load them (the largest eigenvalue of their ``A^T W A``, ``A`` the rows with a
        column of ones for the intercept, exactly up to 1,024 parameters and by power
        iteration above; out of core, the trace above that size), times the loss's
        curvature bound, plus ``alpha * (1 - l1_ratio)``; mini-batches add the mean
        squared row norm over the rows behind one step, and async/ssp divide the step by
        the number of workers (the delay of a gradient). Full-batch gradient descent
        cannot diverge with it; ``FitResult.learning_rate_`` holds the value.
    lr_schedule : {"constant", "invscaling", "step"}, default="constant"
        ``invscaling``: ``lr / (1 + t) ** power_t`` (t = updates so far);
        ``step``: ``lr * gamma ** (epoch // step_size)``.
    power_t, step_size, gamma : schedule settings
    optimizer_options : dict, optional
        ``momentum`` (momentum, nesterov; 0.9), ``beta1``/``beta2``/``eps`` (adam),
        ``eps`` (adagrad), ``memory`` (lbfgs; 10), ``precondition`` (lbfgs; True: the
        initial inverse Hessian scaled by a bound on the Hessian's diagonal at the start, from the
        column squares the workers send as they load; sharded fits too).
    batch_size : int or None, default=None
        Rows per worker per gradient; None is full batch (gradient descent).
    max_epochs : int, default=100
    tol : float or None, default=1e-4
        Stop when the epoch loss improved by less than ``tol`` (relative to the best)
        for ``n_iter_no_change`` epochs in a row. With ``optimizer="newton"`` (and
        ``"auto"`` choosing it), one round decides: the fit stops when the decrease the
        Newton model predicts is below ``tol`` (and the gradient below ``sqrt(tol)``
        times its start) or, whatever ``tol`` is (0 included), below the floating-point
        resolution of the summed loss. ``None`` disables both.
    n_iter_no_change : int, default=5
    gtol : float or None, default=None
        Stop when the (proximal) gradient norm of the objective is at most ``gtol``.
    gtol_rel : float or None, default=None
        Stop when that norm is at most ``gtol_rel`` times its norm at the starting
        parameters (measured by the workers on their first batch before any step).
    max_time : float or None, default=None
        Time budget in seconds; the fit stops (not converged) when it is used up.
    alpha : float, default=0.0
        Regularisation strength.
    l1_ratio : float, default=0.0
        Elastic-net mixing: 0 is L2, 1 is L1 (a proximal step: exact zeros).
    fit_intercept : bool, default=True
    epsilon : float, default=0.1
        Huber loss width.
    power : float, default=1.5
        The Tweedie power of ``loss="tweedie"``, at least 1 (power 0 is
        ``loss="squared_error"``); the other losses ignore it.
    n_classes : int, optional
        With ``loss="log_loss"`` and ``n_classes > 2``: the multinomial loss, ``y``
        holding class indices.
    coef_init, intercept_init : array-like, optional
        Starting point (default zeros).
    max_staleness : int, optional
        The bound of ``ssp`` mode (required there).
    sync_quorum : int, optional
        Sync mode with backup workers: a round closes once this many workers pushed
        their gradient (1 <= sync_quorum <= workers; None waits for every live worker)
        and steps with the row-weighted mean of those gradients; the late ones are
        dropped and counted (``FitResult.dropped_gradients_``). Each round then sees a
        subset of the partitions: full batch becomes a stochastic method, whose fixed
        point favours the partitions of the faster workers (as in ``async``), so shuffle
        rows across chunks; ``tol``/``gtol`` only look at epochs where every partition
        contributed, so keep ``max_epochs`` or ``max_time`` as the stop. Refused with
        ``optimizer="lbfgs"`` below every worker (its line search needs the whole data).
    staleness_lr : bool, default=False
        Async/ssp: divide the learning rate by the staleness of each gradient.
    client : distributed.Client, str or None
        A client, a scheduler address (``"tcp://host:8786"``), or None: the current
        client, else an embedded LocalCluster (one single-threaded worker process per
        core) started and closed by this call.
    n_workers : int, optional
        Use at most this many workers.
    n_servers : int or "auto", default="auto"
        Parameter servers: 0 keeps the whole model and its optimizer state on the
        scheduler; K >= 1 cuts them into K shards held by K workers (optimizers sgd,
        momentum, nesterov, adagrad and adam in every mode, lbfgs in sync mode; a
        key-value fit's keyed state split by a hash of the column), the scheduler
        coordinating;
        "auto": 2 shards for a model of 1,000,000 parameters or more (not a key-value one)
        trained by sgd, momentum, nesterov, adagrad or adam on 2 workers or more, where
        they were measured faster; else 0. ``FitResult.servers_`` lists the workers that
        held the shards as the fit started. See the README's "Sharded parameter servers".
    placement : {"auto", "balanced", "locality", "resources"}, default="auto"
        Which row-chunks each worker trains on. "locality": chunks of dask input that a
        worker already holds in memory stay there, the rest are balanced; "balanced":
        equal rows in contiguous runs; "resources": rows in proportion to each worker's
        capacity (the amount of the worker resource ``"daskgd"`` it declares, e.g.
        ``dask worker --resources "daskgd=2"``, when any worker declares it, else its
        threads), no worker past 60% of its memory limit while others have room. "auto"
        is "locality" (for Zarr data, nothing is in memory: balanced). The plan is
        ``FitResult.plan_``.
    partition : {"rows", "features"}, default="rows"
        How the data is split between the training tasks. "rows": each task trains on
        row-chunks (see ``placement``) and the parameter server holds the model.
        "features": each task holds every row of one block of columns and owns that
        block of the parameters, so that no process computes with the whole model (very
        wide data, or columns that come from different stores: see
        :func:`daskgd.concat_features`); the blocks are the store's column chunks
        (``write_zarr(chunk_cols=...)``) grouped into one contiguous block per worker,
        or even column ranges. Each iteration reduces the blocks' partial margins (a
        vector as long as the data has rows) on the scheduler. Sync mode, dense data,
        full-batch ``lbfgs`` (what "auto" picks) or gradient descent, or mini-batch SGD
        (``batch_size``: the same rows on every block) with the coordinate-wise
        optimizers; not multinomial, checkpoints, ``out_of_core`` or ``sync_quorum``.
        A task rerun after its worker died restarts every block from the last iterate
        they all reached (``FitResult.recoveries_``).
    reduction : {"auto", "coordinator", "tree"}, default="auto"
        How a feature-partitioned fit (``partition="features"`` or ``"grid"``) sums the
        blocks' partial margins each iteration. "coordinator": every rank sends its part
        to the scheduler, which adds them in rank order and sends the sum back. "tree":
        the ranks add them worker to worker along a binary tree (the root sends the
        total to every rank), so no margin passes through the scheduler; the small sums
        (the objective, the stop rules, the backups) stay on the scheduler. Both give the
        same result to rounding (the tree adds in another fixed order). "auto": the tree
        from 1,000,000 rows, where it measured faster (``bench/results/reduction.md``),
        else the coordinator.
    random_state : int, optional
        Seeds the mini-batch order.
    validate : bool, default=True
        Scan the data for non-finite values first.
    offset : array-like or dask array, optional
        ``(n_samples,)`` per-row offsets added to the margin ``x @ w + b`` (for the
        log-link losses, ``log(exposure)``), aligned with ``y``; they replace the offsets
        a Dataset or Zarr group holds (its ``offset`` array).
    progress : bool, default=False
        Show a progress bar (needs tqdm).
    poll_interval : float, default=0.05
        Longest time in seconds the driver waits on the scheduler for news of the job
        before it checks its training tasks again (the scheduler answers at once when an
        epoch ends or the job stops).
    callback : callable, optional
        Called with each epoch's history row; returning False stops the fit.
    callback_params : bool, default=False
        Give ``callback`` each epoch's parameters too, as the row's ``coef`` and
        ``intercept`` (those of the round that closed the epoch); for scoring held-out
        data during the fit.
    worker_timeout : float, default=60.0
        Seconds to wait when the cluster has no worker left (every one died and none came
        back, or there is none at the start) before raising
        :class:`daskgd.errors.NoWorkersError`.
    member_timeout : float, default=600.0
        Seconds a training task may stay silent (no gradient pushed) while a synchronous
        round, an ssp wait or the ``"auto"`` step waits for it; after that it leaves the
        round (it rejoins when it pushes again), so a task that hangs on a live worker
        cannot stall the others forever. Raise it for batches whose gradient takes longer.
        Full-batch ``lbfgs`` and ``newton`` rounds need every partition: there a task
        silent that long stops the fit with an error naming its rank.
    out_of_core : bool, default=False
        Zarr data only: each training task reads its row-chunks from the store every
        epoch, one chunk in memory at a time, instead of loading them once; for data
        larger than the cluster's memory. Mini-batches then come from a per-epoch
        shuffle of the chunks and of the rows within each chunk.
    checkpoint : str or os.PathLike, optional
        A Zarr group on a local or shared filesystem (e.g. ``"fit.zarr"``) to write
        checkpoints to: parameters, optimizer state, version, epoch, history and the
        settings, written atomically (a crash mid-write leaves the previous one) by the
        driver, off the scheduler. A final checkpoint is written when the fit ends. See
        :mod:`daskgd.checkpoint`.
    checkpoint_every : int, default=10
        Write a checkpoint every this many epochs (passes over the data).
    checkpoint_interval : float, optional
        Also write one when this many seconds passed since the last (mid-epoch for
        mini-batch fits).
    resume : bool, default=False
        Continue from the newest checkpoint at ``checkpoint``: parameters, optimizer
        state, epoch and update counters, stop-rule counters; the history is appended
        to. ``max_epochs`` counts all epochs, before and after the resume. With no
        checkpoint there yet, the fit starts fresh. A checkpoint from a fit with other
        features, loss, classes or optimizer is refused (``CheckpointError``).

    Returns
    -------
    FitResult

    Raises
    ------
    InvalidSettingError
        (a ``ValueError`` and a ``TypeError``) On a setting of the wrong kind or value, or
        settings that contradict each other; checked before any work is sent.
    ValueError
        On bad data (:class:`daskgd.errors.DataValidationError`).
    DivergenceError
        When the loss or gradient became non-finite, or the loss of an epoch exceeded
        1,000 times its value before the first step (the larger of the loss at the
        starting parameters and at zero), in every mode.
    SchedulerSetupError
        When the scheduler or a worker cannot import daskgd (checked before the data is
        opened), or a ``tls://`` address comes without TLS credentials.
    TrainingError
        When a training task failed or the job vanished.
    NoWorkersError
        (a ``TrainingError``) When every worker was gone for ``worker_timeout`` seconds.
    SchedulerLostError
        When the scheduler died (noticed within about 10 s) or stopped answering (30 s);
        the message names the last checkpoint and its epoch.
    CheckpointError
        When ``resume=True`` meets a checkpoint from an incompatible fit.
"""
