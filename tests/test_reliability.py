"""Faults injected on purpose: signals, preemption, NaNs, full disks, two runs in one directory.

No finished checkpoint is ever lost, and every interrupted run resumes to the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

import gan.checkpoint
from gan.checkpoint import save_checkpoint
from gan.errors import GanError
from gan.run import train
from gan.signals import TrainingInterrupted
from helpers.faults import nan_losses_from, signal_at_step
from helpers.mnist_files import make_tiny_mnist
from helpers.runs import (
    QUICK_OVERRIDES,
    assert_same_tensors,
    assert_same_training_state,
    last_checkpoint,
    quick_config,
    run_quick,
    run_script,
    start_script,
)


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out waiting for the training process"
        time.sleep(0.05)


@contextmanager
def training_in(run_dir: Path, data: Path) -> Iterator[Any]:
    """A long train.py run in run_dir that has written its first last.pt; killed (SIGKILL, its lock left behind) on exit."""
    process = start_script("train.py", "epochs=50", *QUICK_OVERRIDES, f"hydra.run.dir={run_dir}", data_root=data)
    try:
        wait_for(lambda: (run_dir / "checkpoints" / "last.pt").exists())
        yield process
    finally:
        process.kill()
        process.wait()


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
    args = ["train.py", "epochs=2", *QUICK_OVERRIDES, "train.log_every=16", f"hydra.run.dir={run_dir}"]
    process = start_script(*args, data_root=data)
    wait_for(lambda: (run_dir / "checkpoints" / "last.pt").exists())
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "error: stopped by SIGTERM" in stderr and "Traceback" not in stderr
    assert last_checkpoint(run_dir)["epoch"] >= 1

    resumed = run_script(*args, "resume=auto", data_root=data)
    assert resumed.returncode == 0, resumed.stderr
    run_quick(data, tmp_path / "straight", "epochs=2", "train.log_every=16")
    assert_same_training_state(last_checkpoint(tmp_path / "straight"), last_checkpoint(run_dir))


@pytest.mark.slow
def test_preempted_cluster_job_is_requeued_and_resumes_exactly(tmp_path):
    """A submitit job that gets SIGUSR2 (SLURM's warning before a time limit or preemption) writes last.pt,
    is requeued by submitit (its local executor restarts a job that asks for it) and continues to the end."""
    data = make_tiny_mnist(tmp_path / "data", n_train=8192)
    sweep_dir = tmp_path / "sweep"
    process = start_script("train.py", "-m", "hydra/launcher=submitit_local", "epochs=2", *QUICK_OVERRIDES,
                           "train.log_every=16", "resume=auto", f"hydra.sweep.dir={sweep_dir}", data_root=data)
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
    with training_in(run_dir, data) as first:
        before = (run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns
        with pytest.raises(GanError, match=rf"run directory {run_dir} is in use by train\.py pid {first.pid} on .*hydra\.run\.dir"):
            run_quick(data, run_dir, "epochs=1")
        assert first.poll() is None, "the first run goes on"
    # killed without clean-up: the lock file still names the dead process
    assert f"pid {first.pid}" in (run_dir / ".lock").read_text()
    with pytest.raises(GanError, match=rf"{run_dir} already holds a run that stopped at epoch \d+ of 50; continue it with resume=auto"):
        run_quick(data, run_dir, "epochs=1", "data.subset=640")
    run_quick(data, run_dir, f"epochs={last_checkpoint(run_dir)['epoch'] + 1}", "resume=auto")
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


# -- a launch never rewrites what is there -------------------------------------------------------
def record_of(run_dir):
    return {path.relative_to(run_dir / ".hydra"): path.read_bytes() for path in sorted((run_dir / ".hydra").rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_a_refused_launch_leaves_a_finished_runs_record_and_status_as_they_were(tiny_mnist, tmp_path):
    run_dir = tmp_path / "run"
    first = run_script("train.py", *QUICK_OVERRIDES, "epochs=2", f"hydra.run.dir={run_dir}", data_root=tiny_mnist)
    assert first.returncode == 0, first.stderr
    record, status = record_of(run_dir), (run_dir / "status.json").read_bytes()
    assert b"lr: 0.0002" in record[Path("config.yaml")]

    refused = run_script("train.py", *QUICK_OVERRIDES, "optim.lr=-1", f"hydra.run.dir={run_dir}", data_root=tiny_mnist)
    assert refused.returncode == 1 and "error: optim.lr must be positive" in refused.stderr
    assert record_of(run_dir) == record and (run_dir / "status.json").read_bytes() == status
    assert "optim.lr must be positive" in (run_dir / "train.log").read_text(), "the log says why the launch was refused"

    extended = run_script("train.py", *QUICK_OVERRIDES, "epochs=3", "resume=auto", f"hydra.run.dir={run_dir}", data_root=tiny_mnist)
    assert extended.returncode == 0, extended.stderr
    after = record_of(run_dir)
    assert {k: v for k, v in after.items() if k.parts[0] != "launches"} == record, "the first launch's record stays"
    assert b"epochs=3" in after[Path("launches/002/overrides.yaml")], "each later launch's record sits beside it"
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_a_launch_into_a_directory_that_is_training_changes_nothing_there(tmp_path):
    data = make_tiny_mnist(tmp_path / "data", n_train=8192)
    run_dir = tmp_path / "run"
    with training_in(run_dir, data):
        record = record_of(run_dir)
        second = run_script("train.py", "epochs=1", "optim.lr=0.1", *QUICK_OVERRIDES, f"hydra.run.dir={run_dir}", data_root=data)
        assert second.returncode == 1 and "is in use by train.py pid" in second.stderr
        assert record_of(run_dir) == record


@pytest.mark.slow
def test_a_failed_start_leaves_its_reason_in_a_new_run_directory(tiny_mnist, tmp_path):
    result = run_script("train.py", *QUICK_OVERRIDES, "optim.lr=-1", f"hydra.run.dir={tmp_path / 'run'}", data_root=tiny_mnist)
    assert result.returncode == 1 and result.stderr.strip() == "error: optim.lr must be positive, got -1.0."
    assert "error: optim.lr must be positive, got -1.0." in (tmp_path / "run" / "train.log").read_text()
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert (status["status"], status["reason"]) == ("failed", "optim.lr must be positive, got -1.0.")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["a-file/run", "a-file", "/proc/no-such-folder/run"])
def test_an_unusable_run_directory_is_one_sentence(tiny_mnist, tmp_path, where):
    (tmp_path / "a-file").write_text("not a folder")
    run_dir = where if where.startswith("/") else tmp_path / where
    result = run_script("train.py", *QUICK_OVERRIDES, f"hydra.run.dir={run_dir}", data_root=tiny_mnist)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot create the folder {run_dir}") and "hydra.run.dir=PATH" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


# -- resume --------------------------------------------------------------------------------------
def test_resume_auto_takes_the_newest_good_checkpoint_when_last_pt_is_damaged(tiny_mnist, tmp_path, caplog):
    run_quick(tiny_mnist, tmp_path / "straight", "epochs=3", "checkpoint_every=1")
    run_quick(tiny_mnist, tmp_path, "epochs=2", "checkpoint_every=1")
    last = tmp_path / "checkpoints" / "last.pt"
    damaged = last.read_bytes()[: last.stat().st_size // 2]
    last.write_bytes(damaged)
    with caplog.at_level(logging.WARNING):
        run_quick(tiny_mnist, tmp_path, "epochs=3", "checkpoint_every=1", "resume=auto")
    assert f"{last} is damaged" in caplog.text and "epoch_002.pt, the newest readable checkpoint" in caplog.text
    assert (tmp_path / "checkpoints" / "last.pt.damaged").read_bytes() == damaged, "the damaged file is kept, not written over"
    assert_same_training_state(last_checkpoint(tmp_path / "straight"), last_checkpoint(tmp_path))


def test_resuming_a_damaged_checkpoint_by_path_names_the_newest_good_one(tiny_mnist, tmp_path):
    run_quick(tiny_mnist, tmp_path, "epochs=2", "checkpoint_every=1")
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:5000])
    good = tmp_path / "checkpoints" / "epoch_002.pt"
    with pytest.raises(GanError) as error:
        run_quick(tiny_mnist, tmp_path, "epochs=3", f"resume={last}")
    assert str(error.value) == (f"{last} is truncated or corrupt and cannot be read; the newest readable checkpoint beside it "
                                f"is {good}: resume from it with resume={good}."), "one sentence, no torch internals"


def test_resuming_a_run_that_has_more_epochs_than_asked_says_so(tiny_mnist, tmp_path):
    run_quick(tiny_mnist, tmp_path, "epochs=3")
    with pytest.raises(GanError, match=r"already has 3 epochs, more than epochs=2; pass epochs=N with N > 3"):
        run_quick(tiny_mnist, tmp_path, "epochs=2", "resume=auto")
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    assert run_quick(tiny_mnist, tmp_path, "epochs=3", "resume=auto")["epoch"] == 3, "a finished run asked for its own epochs: nothing to do"
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before


# -- a second Ctrl-C -----------------------------------------------------------------------------
def test_a_second_ctrl_c_during_the_checkpoint_write_ends_the_write_first(tiny_mnist, tmp_path, monkeypatch):
    run_quick(tiny_mnist, tmp_path, "epochs=1")
    real_save = torch.save
    signal_at_step(monkeypatch, at_step=6, signum=signal.SIGINT)  # the first Ctrl-C: stop after step 6

    def save_interrupted(state, file, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while the stop's checkpoint is written
        real_save(state, file, *args, **kwargs)

    monkeypatch.setattr(gan.checkpoint.torch, "save", save_interrupted)
    with pytest.raises(TrainingInterrupted, match="stopped at once by a second Ctrl-C at step 6") as stopped:
        run_quick(tiny_mnist, tmp_path, "epochs=2", "resume=auto")
    assert stopped.value.exit_code == 130
    monkeypatch.undo()
    assert last_checkpoint(tmp_path)["step"] == 6, "the write the second Ctrl-C landed in completed"
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


@pytest.mark.slow
def test_two_ctrl_c_stop_a_training_process_at_once_with_one_line(tmp_path):
    data = make_tiny_mnist(tmp_path / "data", n_train=8192)
    run_dir = tmp_path / "run"
    process = start_script("train.py", "epochs=50", *QUICK_OVERRIDES, f"hydra.run.dir={run_dir}", data_root=data)
    wait_for(lambda: (run_dir / "checkpoints" / "last.pt").exists())
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
    assert last_checkpoint(run_dir)["epoch"] >= 1


# -- data in the wrong place ----------------------------------------------------------------------
@pytest.mark.parametrize("too_deep", ["MNIST", "MNIST/raw"])
def test_a_data_root_one_or_two_levels_too_deep_is_understood_and_nothing_is_created(tiny_mnist, tmp_path, too_deep):
    files_before = sorted(p.relative_to(tiny_mnist) for p in tiny_mnist.rglob("*"))
    final = run_quick(tiny_mnist / too_deep, tmp_path, "epochs=1")
    assert final["step"] == 4
    assert sorted(p.relative_to(tiny_mnist) for p in tiny_mnist.rglob("*")) == files_before, "nothing created in the user's data folder"


def test_a_failed_download_leaves_no_folders_behind(tmp_path, monkeypatch):
    import torchvision.datasets.utils as download_utils

    from gan.data import load_mnist

    def offline(url, download_root, **kwargs):
        Path(download_root).mkdir(parents=True, exist_ok=True)  # as torchvision does before it downloads
        raise OSError("no network")

    monkeypatch.setattr(download_utils, "download_and_extract_archive", offline)
    (tmp_path / "data").mkdir()
    with pytest.raises(GanError, match="MNIST was not found .*download failed"):
        load_mnist(tmp_path / "data", download=True)
    assert list((tmp_path / "data").iterdir()) == []


# -- round four: no run overwritten, no choice dropped, no resume on other data ---------------------
def files_of(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_a_new_run_into_a_folder_that_holds_one_is_refused_and_writes_nothing(tiny_mnist, tmp_path):
    run_dir = tmp_path / "run"
    run_quick(tiny_mnist, run_dir, "epochs=2")
    before = files_of(run_dir)
    with pytest.raises(GanError, match=r"already holds a run that finished; continue it with resume=auto, or start over in a new folder"):
        run_quick(tiny_mnist, run_dir, "epochs=1")
    with pytest.raises(GanError, match=r"resume=.*other.pt is another run's checkpoint"):
        run_quick(tiny_mnist, run_dir, "epochs=3", f"resume={tmp_path / 'elsewhere' / 'other.pt'}")
    assert files_of(run_dir) == before, "checkpoints, metrics.csv and status.json stay byte for byte"
    run_quick(tiny_mnist, run_dir, "epochs=3", "resume=auto")
    assert last_checkpoint(run_dir)["epoch"] == 3


def test_a_folder_whose_launch_was_refused_takes_a_new_run(tiny_mnist, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(GanError, match="data.batch_size=1000 is larger than the 256 training images"):
        run_quick(tiny_mnist, run_dir, "data.batch_size=1000")
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    run_quick(tiny_mnist, run_dir, "epochs=1")
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("change", ["data.subset=128", "data.batch_size=32"])
def test_a_mid_epoch_resume_on_other_data_or_batches_is_refused(tiny_mnist, tmp_path, monkeypatch, change):
    run_dir = tmp_path / "run"
    signal_at_step(monkeypatch, at_step=6)  # epoch 2, batch 2 of 4
    with pytest.raises(TrainingInterrupted):
        run_quick(tiny_mnist, run_dir, "epochs=2")
    monkeypatch.undo()
    before = files_of(run_dir)
    with pytest.raises(GanError, match=r"stopped in the middle of epoch 2 \(batch 2\) of a run on 256 images in batches of 64, .*"
                                       r"resume it with data.subset=null data.batch_size=64"):
        run_quick(tiny_mnist, run_dir, "epochs=2", "resume=auto", change)
    assert files_of(run_dir) == before
    run_quick(tiny_mnist, run_dir, "epochs=2", "resume=auto")  # the same data resumes as before
    assert last_checkpoint(run_dir)["epoch"] == 2


def test_a_subset_larger_than_the_data_says_so(tiny_mnist, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        run_quick(tiny_mnist, tmp_path / "run", "epochs=1", "data.subset=1000")
    assert "data.subset=1000 is more than the 256 training images: training on all 256" in caplog.text


def test_ctrl_c_while_the_data_loads_says_what_is_on_disk(tiny_mnist, tmp_path, monkeypatch):
    import gan.trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gan.trainer, "training_data", interrupted)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match=r"interrupted before training started; nothing was trained .* it holds no checkpoint") as stopped:
        run_quick(tiny_mnist, run_dir, "epochs=1")
    assert stopped.value.exit_code == 130
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["status"], status["epoch"]) == ("stopped", 0)
    assert not any((run_dir / "checkpoints").iterdir())
    monkeypatch.undo()
    run_quick(tiny_mnist, run_dir, "epochs=1")  # the same command again starts the run
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"


@pytest.mark.slow
@pytest.mark.parametrize("after_s", [0.3, 1.5, 4.0])
def test_ctrl_c_at_any_moment_of_the_start_is_one_line_and_exit_130(tiny_mnist, tmp_path, after_s):
    process = start_script("train.py", *QUICK_OVERRIDES, "epochs=50", f"hydra.run.dir={tmp_path / 'run'}", data_root=tiny_mnist)
    time.sleep(after_s)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert process.returncode == 130, stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    if "before any training" not in lines[0] and "nothing was trained" in lines[0]:
        assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
