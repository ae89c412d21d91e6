"""W&B records what we claim: config, scalars against the step, real grid pixels, names, groups, exit codes."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan.signals import TrainingInterrupted
from gan.trainer import train
from helpers.faults import signal_at_step
from helpers.runs import quick_config, run_script
from helpers.wandb_records import read_run, unwrap

WANDB_ON = ("wandb.mode=offline",)


def wandb_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def train_tracked(data_root: Path, run_dir: Path, *overrides: str, **names):
    return train(quick_config(data_root, *WANDB_ON, *overrides), run_dir, **names)


def test_run_logs_config_scalars_grid_and_names(tiny_mnist, tmp_path):
    train_tracked(tiny_mnist, tmp_path, "epochs=2", "optim.lr=0.0003", "wandb.tags=[baseline,cpu]",
                  run_name="optim.lr=0.0003", run_group="my-sweep")
    [path] = wandb_files(tmp_path)
    run = read_run(path)
    assert (run.name, run.group, run.tags, run.exit_code) == ("optim.lr=0.0003", "my-sweep", ["baseline", "cpu"], 0)
    assert unwrap(run.config["optim"])["lr"] == pytest.approx(0.0003)
    assert unwrap(run.config["model"])["g_hidden"] == [256, 512, 1024]
    assert unwrap(run.config["epochs"]) == 2

    steps = [row["_step"] for row in run.history]
    assert steps == sorted(steps) and steps[-1] == 8  # global step: 2 epochs of 4 batches
    logged = set().union(*run.history)
    assert {"d_loss", "g_loss", "d_real", "d_fake", "images_per_s", "epoch", "epoch_time_s"} <= logged
    assert [row["_step"] for row in run.history if "d_loss" in row] == [2, 4, 6, 8]  # every train.log_every=2 steps

    grids = [row for row in run.history if "samples/path" in row]
    assert [row["_step"] for row in grids] == [4, 8]  # one per epoch
    logged_grid = np.asarray(Image.open(path.parent / "files" / grids[-1]["samples/path"]).convert("RGB"))
    saved_grid = np.asarray(Image.open(tmp_path / "samples" / "epoch_002.png").convert("RGB"))
    assert np.array_equal(logged_grid, saved_grid), "W&B shows exactly the grid written to samples/"
    assert logged_grid.mean() > 20 and logged_grid.std() > 10, "the grid has real, non-black pixels"


@pytest.mark.slow
def test_multirun_jobs_get_distinct_runs_sharing_one_group(tiny_mnist, tmp_path):
    result = run_script("train.py", "-m", "optim.lr=0.0001,0.0005", "debug=default", "data.subset=null", *WANDB_ON,
                        f"hydra.sweep.dir={tmp_path}", data_root=tiny_mnist)
    assert result.returncode == 0, result.stderr
    runs = [read_run(path) for job in ("0", "1") for path in wandb_files(tmp_path / job)]
    assert len(runs) == 2 and runs[0].run_id != runs[1].run_id
    assert [unwrap(run.config["optim"])["lr"] for run in runs] == [0.0001, 0.0005]
    # Named by the overrides (sorted by key; wandb.mode is left out as it does not change the experiment).
    common = "data.subset=null,debug=default,{}"
    assert [run.name for run in runs] == [common.format("optim.lr=0.0001"), common.format("optim.lr=0.0005")]
    assert runs[0].group == runs[1].group == str(tmp_path)
    assert all(run.exit_code == 0 for run in runs)


def test_disabled_mode_writes_nothing(tiny_mnist, tmp_path):
    train(quick_config(tiny_mnist, "epochs=1"), tmp_path)
    assert not (tmp_path / "wandb").exists()
    assert not list(Path(os.environ["WANDB_DIR"]).glob("**/*.wandb"))


def test_online_without_api_key_falls_back_to_offline(tiny_mnist, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        train_tracked(tiny_mnist, tmp_path, "epochs=1", "wandb.mode=online", "wandb.init_timeout=5")
    assert "no W&B API key" in caplog.text
    [path] = wandb_files(tmp_path)
    assert read_run(path).exit_code == 0


@pytest.mark.slow
def test_resume_continues_the_same_wandb_run(tiny_mnist, tmp_path):
    train_tracked(tiny_mnist, tmp_path / "first", "epochs=1")
    train_tracked(tiny_mnist, tmp_path / "second", "epochs=2", f"resume={tmp_path / 'first' / 'checkpoints' / 'last.pt'}")
    [first], [second] = wandb_files(tmp_path / "first"), wandb_files(tmp_path / "second")
    assert read_run(first).run_id == read_run(second).run_id
    assert min(row["_step"] for row in read_run(second).history) > 4, "the resumed run logs after the checkpoint's step"


def test_interrupted_run_finishes_with_a_failing_exit_code(tiny_mnist, tmp_path, monkeypatch):
    signal_at_step(monkeypatch, at_step=2)
    with pytest.raises(TrainingInterrupted):
        train_tracked(tiny_mnist, tmp_path, "epochs=1")
    [path] = wandb_files(tmp_path)
    assert read_run(path).exit_code == 128 + signal.SIGTERM


@pytest.mark.slow
def test_failing_tracker_never_fails_training(tiny_mnist, tmp_path, monkeypatch, caplog):
    import wandb.sdk.wandb_run

    def broken_log(self, *args, **kwargs):
        raise ConnectionError("W&B is down")

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", broken_log)
    with caplog.at_level(logging.WARNING):
        final = train_tracked(tiny_mnist, tmp_path, "epochs=2")
    assert final["epoch"] == 2
    assert "tracking is off for the rest of this run" in caplog.text
