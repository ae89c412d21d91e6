"""Sweeps: the one-word preset, the parallel and cluster launchers, and the server-free summary."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import CONF, FAST, REPO
from gan.report import write_summary


def sweep(data_root, sweep_dir, *args):
    result = subprocess.run([sys.executable, "train.py", *args, "epochs=1", *FAST, f"hydra.sweep.dir={sweep_dir}"],
                            cwd=REPO, env={**os.environ, "DATA_ROOT": str(data_root)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def trained_lrs(sweep_dir, jobs):
    return [torch.load(sweep_dir / j / "checkpoints" / "last.pt", weights_only=True)["config"]["optim"]["lr"] for j in jobs]


def hydra_config(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_sweep_preset_is_a_multirun_over_learning_rates():
    cfg = hydra_config("+sweep=lr")
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweeper.params["optim.lr"] == "0.0001,0.0002,0.0005"


def test_lr_sweep_runs_three_jobs_and_the_report_summarizes_them(tiny_mnist, tmp_path):
    sweep(tiny_mnist, tmp_path, "+sweep=lr")
    assert trained_lrs(tmp_path, "012") == pytest.approx([1e-4, 2e-4, 5e-4])

    table = write_summary(tmp_path, metric="g_loss")
    assert table.splitlines()[0].startswith("| job | optim.lr |")
    assert "| 0.0001 |" in table and "| 0.0005 |" in table and "Best by g_loss" in table
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["optim.lr"]) for r in rows] == pytest.approx([1e-4, 2e-4, 5e-4])
    best = min(rows, key=lambda r: float(r["g_loss"]))
    assert f"checkpoint {best['checkpoint']}" in table and os.path.isfile(best["checkpoint"])
    assert (tmp_path / "summary.png").stat().st_size > 5000
    assert (tmp_path / "summary.md").read_text().count("\n| ") == 4  # header + 3 jobs


def test_report_command_line(tiny_mnist, tmp_path):
    sweep(tiny_mnist, tmp_path, "-m", "model=small,base")
    result = subprocess.run([sys.executable, "-m", "gan.report", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "| model |" in result.stdout and "| small |" in result.stdout


def test_report_on_a_folder_without_jobs_says_so(tmp_path):
    with pytest.raises(SystemExit, match="no Hydra jobs"):
        write_summary(tmp_path)


@pytest.mark.parametrize("launcher", [("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), ("hydra/launcher=submitit_local",)])
def test_parallel_and_cluster_launchers(tiny_mnist, tmp_path, launcher):
    sweep(tiny_mnist, tmp_path, "-m", *launcher, "optim.lr=0.0001,0.0005")
    assert trained_lrs(tmp_path, "01") == pytest.approx([1e-4, 5e-4])


def test_launcher_presets_compose():
    for launcher in ("joblib", "submitit_local", "submitit_slurm"):
        cfg = hydra_config(f"hydra/launcher={launcher}")
        assert launcher.split("_")[0] in cfg.hydra.launcher._target_.lower()
