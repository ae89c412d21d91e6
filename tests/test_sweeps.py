"""Sweeps: the one-word preset, the parallel and cluster launchers, and the server-free summary."""

from __future__ import annotations

import csv
import os

import pytest
import torch

from gan.errors import GanError
from gan.report import write_summary
from helpers.runs import compose_config, run_script


def sweep(data_root, sweep_dir, *args):
    result = run_script("train.py", *args, "debug=default", "data.subset=null", f"hydra.sweep.dir={sweep_dir}", data_root=data_root)
    assert result.returncode == 0, result.stderr
    return result


def trained_lrs(sweep_dir, jobs):
    return [torch.load(sweep_dir / j / "checkpoints" / "last.pt", weights_only=True)["config"]["optim"]["lr"] for j in jobs]


def hydra_config(*overrides):
    return compose_config(*overrides, hydra=True)


def test_sweep_preset_is_a_multirun_over_learning_rates():
    cfg = hydra_config("+sweep=lr")
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweeper.params["optim.lr"] == "0.0001,0.0002,0.0005"


@pytest.mark.slow
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


@pytest.mark.slow
def test_report_command_line(tiny_mnist, tmp_path):
    sweep(tiny_mnist, tmp_path, "-m", "model=small,base")
    result = run_script("report.py", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "| model |" in result.stdout and "| small |" in result.stdout


def test_report_on_a_folder_without_jobs_says_so(tmp_path):
    with pytest.raises(GanError, match="no Hydra jobs"):
        write_summary(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), ("hydra/launcher=submitit_local",)])
def test_parallel_and_cluster_launchers(tiny_mnist, tmp_path, launcher):
    sweep(tiny_mnist, tmp_path, "-m", *launcher, "optim.lr=0.0001,0.0005")
    assert trained_lrs(tmp_path, "01") == pytest.approx([1e-4, 5e-4])


def test_launcher_presets_compose():
    for launcher in ("joblib", "submitit_local", "submitit_slurm"):
        cfg = hydra_config(f"hydra/launcher={launcher}")
        assert launcher.split("_")[0] in cfg.hydra.launcher._target_.lower()
