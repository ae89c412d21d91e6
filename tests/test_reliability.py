"""Faults injected on purpose: signals, preemption, NaNs, full disks, two runs in one directory.

No finished checkpoint is ever lost, and every interrupted run resumes to the weights of an uninterrupted one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import torch

import gan.checkpoint
from gan.checkpoint import save_checkpoint
from gan.errors import GanError
from gan.signals import TrainingInterrupted
from gan.trainer import train
from helpers.faults import nan_losses_from, signal_at_step
from helpers.mnist_files import make_tiny_mnist
from helpers.runs import QUICK_OVERRIDES, REPO, assert_same_tensors, assert_same_training_state, last_checkpoint, quick_config, run_quick


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out waiting for the training process"
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow),
                                    pytest.param(signal.SIGUSR2, marks=pytest.mark.slow)])
def test_signal_mid_epoch_checkpoints_and_resume_is_exact(tiny_mnist, tmp_path, monkeypatch, signum):
    run_quick(tiny_mnist, tmp_path / "straight", "epochs=2")
    handlers_before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)}
    signal_at_step(monkeypatch, at_step=6, signum=signum)  # epoch 2 has steps 5..8
    with pytest.raises(TrainingInterrupted, match=r"stopped by SIG(TERM|INT|USR2) at step 6 .*resume=") as stopped:
        run_quick(tiny_mnist, tmp_path / "killed", "epochs=2")
    assert stopped.value.exit_code == 128 + signum
    ckpt = last_checkpoint(tmp_path / "killed")
    assert (ckpt["epoch"], ckpt["step"], ckpt["progress"]["next_batch"]) == (1, 6, 2)
    assert {sig: signal.getsignal(sig) for sig in handlers_before} == handlers_before, "the run restores every handler"

    monkeypatch.undo()
    run_quick(tiny_mnist, tmp_path / "killed", "epochs=2", "resume=auto")
    assert_same_training_state(last_checkpoint(tmp_path / "straight"), last_checkpoint(tmp_path / "killed"))
    assert_same_tensors(last_checkpoint(tmp_path / "straight")["trace"], last_checkpoint(tmp_path / "killed")["trace"])


def test_time_limit_warning_is_handed_to_the_scheduler_after_the_checkpoint(tiny_mnist, tmp_path, monkeypatch):
    """Under submitit, SIGUSR2 already has a handler that resubmits the job and exits; it runs last."""
    seen = []

    def scheduler_requeue(signum, frame):  # what submitit's handler does: requeue, then exit the job
        ckpt = last_checkpoint(tmp_path)
        lock = (tmp_path / ".lock").read_text()
        seen.append((signum, ckpt["step"], lock))
        raise SystemExit(144)

    previous = signal.signal(signal.SIGUSR2, scheduler_requeue)
    try:
        signal_at_step(monkeypatch, at_step=3, signum=signal.SIGUSR2)
        with pytest.raises(SystemExit) as exited:
            run_quick(tiny_mnist, tmp_path, "epochs=2")
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert exited.value.code == 144
    assert seen == [(signal.SIGUSR2, 3, "")], "called once, after last.pt was written and the run directory released"


@pytest.mark.slow
def test_sigterm_to_a_training_process_then_resume_auto_is_exact(tmp_path):
    data = make_tiny_mnist(tmp_path / "data", n_train=8192)
    run_dir = tmp_path / "run"
    args = [sys.executable, "train.py", "epochs=2", *QUICK_OVERRIDES, "train.log_every=16", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "DATA_ROOT": str(data), "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (run_dir / "checkpoints" / "last.pt").exists())
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "error: stopped by SIGTERM" in stderr and "Traceback" not in stderr
    assert last_checkpoint(run_dir)["epoch"] >= 1

    resumed = subprocess.run([*args, "resume=auto"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    run_quick(data, tmp_path / "straight", "epochs=2", "train.log_every=16")
    assert_same_training_state(last_checkpoint(tmp_path / "straight"), last_checkpoint(run_dir))


@pytest.mark.slow
def test_preempted_cluster_job_is_requeued_and_resumes_exactly(tmp_path):
    """A submitit job that gets SIGUSR2 (SLURM's warning before a time limit or preemption) writes last.pt,
    is requeued by submitit (its local executor restarts a job that asks for it) and continues to the end."""
    data = make_tiny_mnist(tmp_path / "data", n_train=8192)
    sweep_dir = tmp_path / "sweep"
    args = [sys.executable, "train.py", "-m", "hydra/launcher=submitit_local", "epochs=2", *QUICK_OVERRIDES,
            "train.log_every=16", "resume=auto", f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "DATA_ROOT": str(data), "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job_dir = sweep_dir / "0"
    wait_for(lambda: (job_dir / "checkpoints" / "last.pt").exists() and (job_dir / ".lock").read_text())
    holder = (job_dir / ".lock").read_text().split()
    os.kill(int(holder[holder.index("pid") + 1]), signal.SIGUSR2)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr

    log = (job_dir / "train.log").read_text()
    assert "stopped by SIGUSR2" in log or "received SIGUSR2" in log
    assert log.count("training on cpu") == 2, "the job ran twice: before and after the requeue"
    finished = last_checkpoint(job_dir)
    assert (finished["epoch"], finished["progress"]) == (2, None)
    run_quick(data, tmp_path / "straight", "epochs=2", "train.log_every=16")
    assert_same_training_state(last_checkpoint(tmp_path / "straight"), finished)


@pytest.mark.slow
def test_resume_auto_without_checkpoint_starts_fresh(tiny_mnist, tmp_path):
    run_quick(tiny_mnist, tmp_path, "epochs=1", "resume=auto")
    assert last_checkpoint(tmp_path)["epoch"] == 1
    run_quick(tiny_mnist, tmp_path, "epochs=2", "resume=auto")
    assert [r["epoch"] for r in last_checkpoint(tmp_path)["history"]] == [1, 2]


@pytest.mark.slow
def test_keep_last_prunes_old_epoch_checkpoints(tiny_mnist, tmp_path):
    run_quick(tiny_mnist, tmp_path, "epochs=5", "checkpoint_every=1", "keep_last=2")
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt")) == ["epoch_004.pt", "epoch_005.pt", "last.pt"]


def test_keep_last_counts_epochs_by_number_past_epoch_999(tmp_path):
    """As text, epoch_1000.pt sorts before epoch_998.pt: the newest file must not be the one deleted."""
    root = make_tiny_mnist(tmp_path / "data", n_train=64)
    tiny = ("model.g_hidden=[8]", "model.d_hidden=[8]", "grid_size=4")
    run_dir = tmp_path / "run"
    run_quick(root, run_dir, "epochs=1", *tiny)
    ckpt = last_checkpoint(run_dir)
    checkpoints = run_dir / "checkpoints"
    for epoch in (997, 998):  # a run that has reached epoch 998, with its kept checkpoints
        save_checkpoint({**ckpt, "epoch": epoch}, checkpoints / f"epoch_{epoch:03d}.pt")
    save_checkpoint({**ckpt, "epoch": 998}, checkpoints / "last.pt")
    (checkpoints / "epoch_001.pt").unlink()

    run_quick(root, run_dir, "epochs=1001", "checkpoint_every=1", "keep_last=2", "resume=auto", *tiny)
    assert sorted(p.name for p in checkpoints.glob("epoch_*.pt")) == ["epoch_1000.pt", "epoch_1001.pt"]
    assert last_checkpoint(run_dir)["epoch"] == 1001


@pytest.mark.slow
def test_a_second_run_in_a_busy_directory_stops_at_once_and_a_stale_lock_is_taken_over(tmp_path):
    data = make_tiny_mnist(tmp_path / "data", n_train=8192)
    run_dir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "train.py", "epochs=50", *QUICK_OVERRIDES, f"hydra.run.dir={run_dir}"], cwd=REPO,
                             env={**os.environ, "DATA_ROOT": str(data)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (run_dir / "checkpoints" / "last.pt").exists())
        before = (run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns
        with pytest.raises(GanError, match=rf"run directory {run_dir} is in use by train\.py pid {first.pid} on .*hydra\.run\.dir"):
            run_quick(data, run_dir, "epochs=1")
        assert first.poll() is None, "the first run goes on"
    finally:
        first.kill()  # SIGKILL: no clean-up, the lock file still names the dead process
        first.wait()
    assert f"pid {first.pid}" in (run_dir / ".lock").read_text()
    run_quick(data, run_dir, "epochs=1", "data.subset=640")
    assert (run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns > before


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_mnist, tmp_path, monkeypatch):
    run_quick(tiny_mnist, tmp_path, "epochs=1")
    good = last_checkpoint(tmp_path)
    nan_losses_from(monkeypatch, call=1)
    with pytest.raises(GanError, match=r"non-finite by step .*last good checkpoint.*is kept"):
        run_quick(tiny_mnist, tmp_path, "epochs=3", "resume=auto")
    kept = last_checkpoint(tmp_path)
    assert kept["epoch"] == 1
    assert_same_tensors(good["generator"], kept["generator"])


def test_nonfinite_skip_policy_skips_the_update_and_finishes(tiny_mnist, tmp_path, monkeypatch):
    nan_losses_from(monkeypatch, call=7)  # from the third step on (3 losses a step)
    run_quick(tiny_mnist, tmp_path, "epochs=1", "train.nonfinite=skip")
    ckpt = last_checkpoint(tmp_path)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(t).all() for key in ("generator", "discriminator") for t in ckpt[key].values())
    assert len(ckpt["trace"]) == 1 and ckpt["trace"][0][0] == 2, "only the two finite steps were reported"


def test_unwritable_run_directory_is_one_sentence(tiny_mnist, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(GanError, match=r"cannot write to the run directory .*hydra\.run\.dir="):
        train(quick_config(tiny_mnist), blocker / "run")


REAL_TORCH_SAVE = torch.save  # kept before the tests monkeypatch it


class FillingFile:
    """A file on a disk that fills up after ``room`` bytes, as the OS reports it: write raises ENOSPC."""

    def __init__(self, file: Any, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def disk_full_at_once(*args: Any, **kwargs: Any) -> None:
    raise OSError(28, "No space left on device")


def disk_full_midway(state: Any, file: Any, *args: Any, **kwargs: Any) -> None:
    # torch's zip writer then raises a RuntimeError ("unexpected pos") while handling the OSError.
    REAL_TORCH_SAVE(state, FillingFile(file, room=64 * 1024), *args, **kwargs)


@pytest.mark.parametrize("disk_full", [disk_full_at_once, disk_full_midway])
def test_failed_save_keeps_the_previous_checkpoint(tiny_mnist, tmp_path, monkeypatch, disk_full):
    run_quick(tiny_mnist, tmp_path, "epochs=1")
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    monkeypatch.setattr(gan.checkpoint.torch, "save", disk_full)
    with pytest.raises(GanError, match="No space left on device"):
        run_quick(tiny_mnist, tmp_path, "epochs=2", "resume=auto")
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before
    assert not list((tmp_path / "checkpoints").glob(".*.tmp")), "no half-written file is left behind"
