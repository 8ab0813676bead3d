"""The scheduler killed mid-fit, and a checkpoint write killed mid-write: real processes.

A ``dask scheduler`` subprocess is killed with SIGKILL while a checkpointed fit runs on
``dask worker`` subprocesses: the driver must raise SchedulerLostError (naming the last
checkpoint) within a bounded time, and a fit on a new scheduler and workers resumes
from that checkpoint to the least-squares optimum. Separately, processes writing a
checkpoint are SIGKILLed mid-write: the previous checkpoint still loads and resumes.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
from _subprocess import scheduler_address, scheduler_command, subprocess_env, worker_command
from test_faults import _problem

from daskgd.checkpoint import load_checkpoint
from daskgd.data import write_zarr
from daskgd.driver import fit
from daskgd.errors import SchedulerLostError


def _cluster(folder: Path, processes: list, n_workers: int = 2) -> tuple[subprocess.Popen, str]:
    """A ``dask scheduler`` and ``n_workers`` ``dask worker`` processes; (scheduler, address)."""
    folder.mkdir(parents=True, exist_ok=True)
    sf = folder / "scheduler.json"
    env = subprocess_env()
    quiet = {"cwd": folder, "env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    sched = subprocess.Popen(scheduler_command(sf), **quiet)
    processes.append(sched)
    address = scheduler_address(sf, sched)
    worker = worker_command(sf, "--death-timeout", "20")
    for _ in range(n_workers):
        processes.append(subprocess.Popen(worker, **quiet))
    from distributed import Client

    with Client(address, timeout=60) as c:
        c.wait_for_workers(n_workers, timeout=120)
    return sched, address


def _fit_then_kill_scheduler(data, ckpt, sched, address, kill_after_epoch, resume):
    """Run a checkpointed fit, SIGKILL the scheduler mid-fit; return (error, seconds to it)."""
    ready = threading.Event()
    out: dict = {}

    def on_epoch(row):
        # kill once the fit is well under way and has written a checkpoint of this run
        if row["epoch"] >= kill_after_epoch:
            try:
                if load_checkpoint(ckpt).epoch >= kill_after_epoch - 20:
                    ready.set()
            except FileNotFoundError:
                pass

    def run():
        try:
            out["res"] = fit(data, client=address, learning_rate=0.002, tol=None, gtol=1e-9,
                             max_epochs=100_000, max_time=240, checkpoint=ckpt,
                             checkpoint_every=5, callback=on_epoch, resume=resume)  # fmt: skip
        except BaseException as exc:  # checked by the caller
            out["exc"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    for _ in range(1200):
        if ready.wait(0.1) or not t.is_alive():
            break
    assert ready.is_set(), "".join(traceback.format_exception(out["exc"])) if out else out
    os.kill(sched.pid, signal.SIGKILL)
    killed = time.monotonic()
    t.join(90)
    waited = time.monotonic() - killed
    assert not t.is_alive(), "the driver hung after the scheduler died"
    return out.get("exc"), waited


def _check_lost(exc, waited, ckpt):
    assert isinstance(exc, SchedulerLostError), exc
    assert waited < 60, f"the driver took {waited:.0f} s to notice the scheduler died"
    msg = str(exc)
    assert ckpt in msg and "resume=True" in msg and "new cluster" in msg
    ck = load_checkpoint(ckpt)
    assert exc.checkpoint == ckpt and exc.epoch == ck.epoch and ck.epoch >= 5
    assert f"epoch {ck.epoch}" in msg
    return ck


def _stop(processes):
    for p in processes:
        if p.poll() is None:
            p.terminate()


def _resume_to_optimum(data, ckpt, address, sol, done_before):
    res = fit(data, client=address, learning_rate=0.5, tol=None, gtol=1e-9,
              max_epochs=100_000, max_time=120, checkpoint=ckpt, resume=True)  # fmt: skip
    assert res.converged_, res.reason
    np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=1e-6)
    epochs = [h["epoch"] for h in res.history]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) > done_before
    assert load_checkpoint(ckpt).epoch == res.n_iter_


def test_scheduler_killed_mid_fit_then_resume(tmp_path, processes, reliability):
    X, y, sol = _problem()
    data = str(tmp_path / "d.zarr")
    write_zarr(data, X, y, chunk_rows=250)
    ckpt = str(tmp_path / "fit.zarr")
    sched, address = _cluster(tmp_path / "c1", processes)
    exc, waited = _fit_then_kill_scheduler(data, ckpt, sched, address, 30, resume=False)
    print(f"the driver noticed the scheduler's death in {waited:.1f} s")
    reliability.add("scheduler kills + resume")
    ck = _check_lost(exc, waited, ckpt)
    # a new scheduler and new workers: resume to the least-squares optimum
    _stop(processes)
    _, address2 = _cluster(tmp_path / "c2", processes)
    _resume_to_optimum(data, ckpt, address2, sol, ck.epoch)


@pytest.mark.stress
@pytest.mark.timeout(900)
def test_repeated_scheduler_kills_soak(tmp_path, processes, reliability):
    X, y, sol = _problem()
    data = str(tmp_path / "d.zarr")
    write_zarr(data, X, y, chunk_rows=250)
    ckpt = str(tmp_path / "fit.zarr")
    last = 0
    for i in range(4):  # each run resumes the last, and loses its scheduler in turn
        _stop(processes)
        sched, address = _cluster(tmp_path / f"c{i}", processes)
        exc, waited = _fit_then_kill_scheduler(data, ckpt, sched, address, last + 40,
                                               resume=i > 0)  # fmt: skip
        reliability.add("scheduler kills + resume")
        ck = _check_lost(exc, waited, ckpt)
        assert ck.epoch > last and ck.history[-1]["epoch"] == ck.epoch
        last = ck.epoch
    _stop(processes)
    _, address = _cluster(tmp_path / "final", processes)
    _resume_to_optimum(data, ckpt, address, sol, last)


_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import daskgd.checkpoint as C

    path, how, d = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ck = C.load_checkpoint(path)
    calls = []
    if how == "after-first-array":
        write = C._write_array
        def _write_array(group, name, value):
            if calls:
                os.kill(os.getpid(), signal.SIGKILL)
            calls.append(name)
            return write(group, name, value)
        C._write_array = _write_array
    elif how == "before-publish":
        C._publish = lambda tmp, final: os.kill(os.getpid(), signal.SIGKILL)
    params = ck.params if d == 0 else np.random.default_rng(0).standard_normal(d)
    print("writing", flush=True)
    C.save_checkpoint(path, params=params, state=ck.state, version=ck.version + 100,
                      epoch=ck.epoch + 50, history=ck.history, config=ck.config,
                      progress=ck.progress)
    print("done", flush=True)
    """
)


def _write_in_subprocess(path: str, how: str, d: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, path, how, str(d)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("how", ["after-first-array", "before-publish"])
def test_killed_checkpoint_write_keeps_the_previous(client, tmp_path, reliability, how):
    X, y, sol = _problem(n=600)
    ckpt = str(tmp_path / "fit.zarr")
    fit((X, y), client=client, learning_rate=0.3, tol=None, max_epochs=12, checkpoint=ckpt,
        optimizer="momentum", optimizer_options={"momentum": 0.5})  # fmt: skip
    before = load_checkpoint(ckpt)
    p = _write_in_subprocess(ckpt, how)
    _, err = p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL, err
    reliability.add("interrupted checkpoint writes")
    assert any(n.startswith(".tmp-") for n in os.listdir(ckpt))  # the torn write is there
    after = load_checkpoint(ckpt)
    assert (after.epoch, after.path) == (before.epoch, before.path)
    np.testing.assert_array_equal(after.params, before.params)
    res = fit((X, y), client=client, learning_rate=0.3, tol=None, gtol=1e-9, max_epochs=3000,
              checkpoint=ckpt, resume=True, optimizer="momentum",
              optimizer_options={"momentum": 0.5})  # fmt: skip
    reliability.add("checkpoint resumes")
    assert res.history[12]["epoch"] == 13 and res.converged_
    np.testing.assert_allclose(np.append(res.coef_, res.intercept_), sol, atol=1e-6)
    assert not any(n.startswith(".tmp-") for n in os.listdir(ckpt))  # cleaned by a later write


def _sigkill_large_writes(tmp_path: Path, rounds: int) -> tuple[int, int]:
    """SIGKILL writes of a large checkpoint at random moments; (killed mid-write, completed)."""
    from daskgd.checkpoint import save_checkpoint

    path = str(tmp_path / "big.zarr")
    save_checkpoint(path, params=np.zeros(3), state={}, version=0, epoch=1, history=[],
                    config={"n_features": 2})  # fmt: skip
    rng = np.random.default_rng(0)
    killed = completed = 0
    for _ in range(rounds):
        last = load_checkpoint(path)
        p = _write_in_subprocess(path, "external", d=6_000_000)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "writing"
        time.sleep(float(rng.uniform(0.0, 0.6)))
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
        now = load_checkpoint(path)  # never raises: always a complete checkpoint
        if p.returncode == -signal.SIGKILL and now.epoch == last.epoch:
            killed += 1
        else:
            assert now.epoch == last.epoch + 50 and now.params.shape == (6_000_000,)
            completed += 1
    return killed, completed


def test_sigkill_during_a_large_write(tmp_path, reliability):
    killed, completed = _sigkill_large_writes(tmp_path, rounds=3)
    reliability.add("interrupted checkpoint writes", killed)
    assert killed + completed == 3


@pytest.mark.stress
def test_sigkill_during_large_writes_soak(tmp_path, reliability):
    killed, completed = _sigkill_large_writes(tmp_path, rounds=25)
    reliability.add("interrupted checkpoint writes", killed)
    assert killed >= 5, (killed, completed)
