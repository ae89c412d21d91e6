"""Sweeps: the one-word preset, the parallel and cluster launchers, and the server-free summary."""

from __future__ import annotations

import csv
import os

import pytest
import torch

from gan.config import TrainConfig
from gan.errors import GanError
from gan.report import write_summary
from helpers.runs import compose_config, finished_run, run_script


def sweep(data_root, sweep_dir, *args):
    result = run_script("train.py", *args, "debug=default", "data.subset=null", f"hydra.sweep.dir={sweep_dir}", data_root=data_root)
    assert result.returncode == 0, result.stderr
    return result


def trained_lrs(sweep_dir, jobs):
    return [torch.load(sweep_dir / j / "checkpoints" / "last.pt", weights_only=True)["config"]["optim"]["lr"] for j in jobs]


def hydra_config(*overrides):
    return compose_config(*overrides, hydra=True)


def test_sweep_presets_are_multiruns_over_learning_rates_and_seeds():
    cfg = hydra_config("+sweep=lr")
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweeper.params["optim.lr"] == "0.0001,0.0002,0.0005"
    cfg = hydra_config("+sweep=seeds", "model.d_mbstd_group=4")
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and cfg.model.d_mbstd_group == 4
    assert cfg.hydra.sweeper.params["seed"] == "0,1,2"


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


def test_report_gives_each_setting_its_mean_and_spread_over_seeds(tmp_path):
    balanced, collapsed = [0.1] * 10, [0.02, *[0.098] * 9]
    finished_run(tmp_path / "default-s0", fid=9.0, recall=0.3, shares=balanced)
    finished_run(tmp_path / "mbstd-s0", "model.d_mbstd_group=4", fid=8.0, recall=0.5, shares=balanced)
    finished_run(tmp_path / "mbstd-seeds" / "0", "model.d_mbstd_group=4", "seed=1", fid=9.0, recall=0.6, shares=balanced)
    finished_run(tmp_path / "mbstd-seeds" / "1", "model.d_mbstd_group=4", "seed=2", fid=10.0, recall=0.7, shares=collapsed)

    finished_run(tmp_path / "gamma-sweep" / "1", "train.r1_gamma=0.3", fid=8.0, recall=0.4, shares=balanced)
    # Resumed once: resume and data.root change no result, so they neither split the seed table nor make columns.
    finished_run(tmp_path / "mbstd-s3", "model.d_mbstd_group=4", "seed=3", "resume=auto", "data.root=/data",
                 fid=8.0, recall=0.5, shares=balanced)

    runs = [tmp_path / "default-s0", tmp_path / "mbstd-s0", tmp_path / "mbstd-seeds", tmp_path / "gamma-sweep" / "1", tmp_path / "mbstd-s3"]
    table = write_summary(runs, out=tmp_path)
    lines = table.splitlines()
    assert lines[0].startswith("| job | model.d_mbstd_group | seed | train.r1_gamma |"), "a key one run left alone is still a column"
    gamma = f"{TrainConfig().r1_gamma:g}"  # the default, which runs that leave it alone report
    assert f"| default-s0 | 0 | 0 | {gamma} | 9 | 0.75 | 0.3 | 10 | 0.1 | 0.1 |" in table
    assert f"| mbstd-seeds/1 | 4 | 2 | {gamma} | 10 | 0.75 | 0.7 | 9 | 0.02 | 0.098 |" in table
    assert "| gamma-sweep/1 | 0 | 0 | 0.3 | 8 |" in table, "a job handed alone is named with its sweep"
    assert "| **mbstd-s0** (best) |" in table
    over_seeds = lines[lines.index("| model.d_mbstd_group | train.r1_gamma | seeds | fid | recall | precision | digit range | collapsed |"):]
    assert over_seeds[2] == f"| 0 | {gamma} | 0 | 9 ± 0 | 0.3 ± 0 | 0.75 ± 0 | 10.0-10.0% | 0 |"
    assert over_seeds[3] == f"| 4 | {gamma} | 0,1,2,3 | 8.75 ± 0.96 | 0.575 ± 0.096 | 0.75 ± 0 | 2.0-10.0% | 1 |"
    assert "resume" not in lines[0] and "data.root" not in lines[0]
    with open(tmp_path / "summary.csv") as f:
        assert [row["job"] for row in csv.DictReader(f)] == ["default-s0", "mbstd-s0", "mbstd-seeds/0", "mbstd-seeds/1", "gamma-sweep/1", "mbstd-s3"]


@pytest.mark.parametrize("command", [("report.py",), ("-m", "gan.report")])
def test_report_runs_as_a_script_and_as_a_module(tmp_path, command):
    finished_run(tmp_path / "run", "optim.lr=0.0001", fid=9.0)
    out = tmp_path / "summaries" / "new"  # --out need not exist yet
    result = run_script(*command, str(tmp_path / "run"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "| **run** (best) | 9 |" in result.stdout and "| **run** (best) | 9 |" in (out / "summary.md").read_text()


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
