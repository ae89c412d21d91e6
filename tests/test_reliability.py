"""Faults injected on purpose: signals, NaNs, bad directories. No finished checkpoint is ever lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import gan.checkpoint
import gan.training
from conftest import FAST, REPO, make_tiny_mnist, quick_config, run_quick
from gan.checkpoint import load_checkpoint
from gan.errors import GanError
from gan.training import Trainer, TrainingInterrupted
from test_training import STATE_KEYS, assert_same_tensors


def last(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def signal_at_step(monkeypatch, at_step: int, signum: int = signal.SIGTERM) -> None:
    """Make the real train step deliver a real signal to this process at the given step."""
    make = gan.training.make_train_step

    def make_signalling_step(*args, **kwargs):
        step = make(*args, **kwargs)

        def signalling_step(real, step_index):
            stats = step(real, step_index)
            if step_index + 1 == at_step:
                os.kill(os.getpid(), signum)
            return stats

        return signalling_step

    monkeypatch.setattr(gan.training, "make_train_step", make_signalling_step)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_epoch_checkpoints_and_resume_is_exact(tiny_mnist, tmp_path, monkeypatch, signum):
    run_quick(tiny_mnist, tmp_path / "straight", "epochs=2")
    signal_at_step(monkeypatch, at_step=6, signum=signum)  # epoch 2 has steps 5..8
    with pytest.raises(TrainingInterrupted, match=r"stopped by SIG(TERM|INT) at step 6 .*resume=") as stopped:
        run_quick(tiny_mnist, tmp_path / "killed", "epochs=2")
    assert stopped.value.exit_code == 128 + signum
    ckpt = last(tmp_path / "killed")
    assert (ckpt["epoch"], ckpt["step"], ckpt["progress"]["next_batch"]) == (1, 6, 2)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or signum == signal.SIGINT  # handlers restored

    monkeypatch.undo()
    run_quick(tiny_mnist, tmp_path / "killed", "epochs=2", "resume=auto")
    for key in (*STATE_KEYS, "opt_g", "opt_d", "rng", "trace"):
        assert_same_tensors(last(tmp_path / "straight")[key], last(tmp_path / "killed")[key], key)


def test_sigterm_to_a_training_process_then_resume_auto_is_exact(tmp_path):
    data = make_tiny_mnist(tmp_path / "data", n_train=8192)
    run_dir = tmp_path / "run"
    args = [sys.executable, "train.py", "epochs=2", *FAST, "train.log_every=16", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "DATA_ROOT": str(data), "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "error: stopped by SIGTERM" in stderr and "Traceback" not in stderr
    interrupted = last(run_dir)
    assert interrupted["epoch"] >= 1

    resumed = subprocess.run([*args, "resume=auto"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    run_quick(data, tmp_path / "straight", "epochs=2", "train.log_every=16")
    for key in (*STATE_KEYS, "opt_g", "opt_d"):
        assert_same_tensors(last(tmp_path / "straight")[key], last(run_dir)[key], key)


def test_resume_auto_without_checkpoint_starts_fresh(tiny_mnist, tmp_path):
    run_quick(tiny_mnist, tmp_path, "epochs=1", "resume=auto")
    assert last(tmp_path)["epoch"] == 1
    run_quick(tiny_mnist, tmp_path, "epochs=2", "resume=auto")
    assert [r["epoch"] for r in last(tmp_path)["history"]] == [1, 2]


def test_keep_last_prunes_old_epoch_checkpoints(tiny_mnist, tmp_path):
    run_quick(tiny_mnist, tmp_path, "epochs=5", "checkpoint_every=1", "keep_last=2")
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt")) == ["epoch_004.pt", "epoch_005.pt", "last.pt"]


def inject_nan_loss(monkeypatch, from_call: int) -> None:
    real_bce = gan.training.F.binary_cross_entropy_with_logits
    calls = {"n": 0}

    def nan_bce(logits, target):
        calls["n"] += 1
        loss = real_bce(logits, target)
        return loss * float("nan") if calls["n"] >= from_call else loss

    monkeypatch.setattr(gan.training.F, "binary_cross_entropy_with_logits", nan_bce)


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_mnist, tmp_path, monkeypatch):
    run_quick(tiny_mnist, tmp_path, "epochs=1")
    good = last(tmp_path)
    inject_nan_loss(monkeypatch, from_call=1)
    with pytest.raises(GanError, match=r"non-finite by step .*last good checkpoint.*is kept"):
        run_quick(tiny_mnist, tmp_path, "epochs=3", "resume=auto")
    kept = last(tmp_path)
    assert kept["epoch"] == 1
    assert_same_tensors(good["generator"], kept["generator"])
    assert all(torch.isfinite(t).all() for t in kept["generator"].values())


def test_nonfinite_skip_policy_skips_the_update_and_finishes(tiny_mnist, tmp_path, monkeypatch):
    inject_nan_loss(monkeypatch, from_call=7)  # from the third step on (3 losses a step)
    run_quick(tiny_mnist, tmp_path, "epochs=1", "train.nonfinite=skip")
    ckpt = last(tmp_path)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in ckpt["generator"].values())
    assert all(torch.isfinite(t).all() for t in ckpt["discriminator"].values())


def test_unwritable_run_directory_is_one_sentence(tiny_mnist, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(GanError, match=r"cannot write to the run directory .*hydra\.run\.dir="):
        Trainer(quick_config(tiny_mnist), blocker / "run")


def test_failed_save_keeps_the_previous_checkpoint(tiny_mnist, tmp_path, monkeypatch):
    run_quick(tiny_mnist, tmp_path, "epochs=1")
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gan.checkpoint.torch, "save", disk_full)
    with pytest.raises(GanError, match="No space left on device"):
        run_quick(tiny_mnist, tmp_path, "epochs=2", "resume=auto")
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before
    assert not list((tmp_path / "checkpoints").glob(".*.tmp")), "no half-written file is left behind"
