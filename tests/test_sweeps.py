"""Sweeps: the one-word preset, the parallel and cluster launchers, a bad job that leaves the others running, and the server-free summary."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from PIL import Image

from gan.report import write_summary
from helpers.runs import compose_config, config, finished_run, run_script


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
    assert table.splitlines()[0].startswith("| job | status | optim.lr |")
    assert "| 0.0001 |" in table and "| 0.0005 |" in table and "Best by g_loss" in table
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["optim.lr"]) for r in rows] == pytest.approx([1e-4, 2e-4, 5e-4])
    best = min(rows, key=lambda r: float(r["g_loss"]))
    assert f"checkpoint {best['checkpoint']}" in table and os.path.isfile(best["checkpoint"])
    assert Image.open(tmp_path / "summary.png").size == (500, 350), "the metric against the swept key"
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
    finished_run(tmp_path / "mbstd-s0", "model.d_mbstd_group=8", fid=8.0, recall=0.5, shares=balanced)
    finished_run(tmp_path / "mbstd-seeds" / "0", "model.d_mbstd_group=8", "seed=1", fid=9.0, recall=0.6, shares=balanced)
    finished_run(tmp_path / "mbstd-seeds" / "1", "model.d_mbstd_group=8", "seed=2", fid=10.0, recall=0.7, shares=collapsed)

    finished_run(tmp_path / "gamma-sweep" / "1", "train.r1_gamma=0.3", fid=8.0, recall=0.4, shares=balanced)
    # Resumed once: resume and data.root change no result, so they neither split the seed table nor make columns.
    finished_run(tmp_path / "mbstd-s3", "model.d_mbstd_group=8", "seed=3", "resume=auto", "data.root=/data",
                 fid=8.0, recall=0.5, shares=balanced)

    runs = [tmp_path / "default-s0", tmp_path / "mbstd-s0", tmp_path / "mbstd-seeds", tmp_path / "gamma-sweep" / "1", tmp_path / "mbstd-s3"]
    table = write_summary(runs, out=tmp_path)
    lines = table.splitlines()
    assert lines[0].startswith("| job | status | model.d_mbstd_group | seed | train.r1_gamma |"), "a key one run left alone is still a column"
    # the defaults, which runs that leave them alone report
    gamma, mbstd = f"{config().train.r1_gamma:g}", config().model.d_mbstd_group
    assert f"| default-s0 | finished | {mbstd} | 0 | {gamma} | 9 | 0.75 | 0.3 | 10 | 0.1 | 0.1 |" in table
    assert f"| mbstd-seeds/1 | finished | 8 | 2 | {gamma} | 10 | 0.75 | 0.7 | 9 | 0.02 | 0.098 |" in table
    assert f"| gamma-sweep/1 | finished | {mbstd} | 0 | 0.3 | 8 |" in table, "a job handed alone is named with its sweep"
    assert "| **mbstd-s0** (best) |" in table
    over_seeds = lines[lines.index("| model.d_mbstd_group | train.r1_gamma | seeds | fid | recall | precision | digit range | collapsed |"):]
    assert over_seeds[2] == f"| {mbstd} | {gamma} | 0 | 9 ± 0 | 0.3 ± 0 | 0.75 ± 0 | 10.0-10.0% | 0 |"
    assert over_seeds[3] == f"| 8 | {gamma} | 0,1,2,3 | 8.75 ± 0.96 | 0.575 ± 0.096 | 0.75 ± 0 | 2.0-10.0% | 1 |"
    assert "resume" not in lines[0] and "data.root" not in lines[0]
    with open(tmp_path / "summary.csv") as f:
        assert [row["job"] for row in csv.DictReader(f)] == ["default-s0", "mbstd-s0", "mbstd-seeds/0", "mbstd-seeds/1", "gamma-sweep/1", "mbstd-s3"]


def test_an_extended_run_is_reported_by_its_latest_launch(tmp_path):
    # `python train.py optim.lr=0.0001`, then `... epochs=100 resume=auto` in the same folder: a run of 100
    # epochs, the seed 0 of the brief's command beside seed 1 launched with epochs=100 from the start.
    finished_run(tmp_path / "first" / "0", "optim.lr=0.0001", fid=7.5, epoch=50)
    finished_run(tmp_path / "first" / "0", "optim.lr=0.0001", "epochs=100", "resume=auto", fid=4.0, epoch=100)
    finished_run(tmp_path / "more" / "1", "optim.lr=0.0001", "epochs=100", "seed=1", fid=5.0, epoch=100)
    table = write_summary([tmp_path / "first", tmp_path / "more"], out=tmp_path)
    lines = table.splitlines()
    assert lines[0].startswith("| job | status | seed | fid |"), "the runs differ only by seed: epochs is no column"
    assert "| **first/0** (best) | finished | 0 | 4 |" in table and "job first/0 (optim.lr=0.0001 epochs=100)" in table
    over_seeds = lines[lines.index("| seeds | fid | recall | precision | digit range | collapsed |"):]
    assert over_seeds[2] == "| 0,1 | 4.5 ± 0.71 | 0 ± 0 | 0.75 ± 0 | 10.0-10.0% | 0 |", "one recipe over two seeds"


def test_a_seed_launched_alone_joins_the_seeds_of_its_sweep(tmp_path):
    finished_run(tmp_path / "seeds" / "0", "seed=0", "+sweep=seeds", fid=8.0)
    finished_run(tmp_path / "seeds" / "1", "seed=1", "+sweep=seeds", fid=9.0)
    finished_run(tmp_path / "seed-2", "seed=2", fid=10.0)  # the third seed, run on its own later
    table = write_summary([tmp_path / "seeds", tmp_path / "seed-2"], out=tmp_path)
    assert table.splitlines()[0].startswith("| job | status | seed | fid |"), "+sweep is a launch preset, not a setting"
    assert "| 0,1,2 | 9 ± 1 |" in table


def test_report_ranks_and_averages_finished_jobs_only_and_says_how_the_others_ended(tmp_path):
    finished_run(tmp_path / "0", "seed=0", fid=9.0)
    finished_run(tmp_path / "1", "seed=1", fid=5.0, status="stopped", epoch=20)  # better so far, but not done
    finished_run(tmp_path / "2", "seed=2", fid=None, status="failed")
    (tmp_path / "2" / "status.json").write_text(json.dumps({"status": "failed", "epoch": 0, "epochs": 50, "reason": "optim.lr must be positive"}))
    finished_run(tmp_path / "3", "seed=3", fid=7.0, status="running", epoch=30)  # its process is gone: no one holds the lock
    table = write_summary(tmp_path)
    assert "| **0** (best) | finished | 0 |" in table
    assert "| 1 | stopped at epoch 20 of 50 | 1 |" in table and "| 3 | stopped at epoch 30 of 50 | 3 |" in table
    assert "| 2 | failed: optim.lr must be positive | 2 |" in table
    assert "Ranked and averaged: the 1 finished job(s) of 4 (--all includes the others)." in table
    assert "| 0 | 9 ± 0 |" in table, "the seed table averages finished jobs only"
    assert "| **1** (best) |" in write_summary(tmp_path, include_unfinished=True)


def test_report_infers_the_state_of_runs_from_before_status_files(tmp_path):
    finished_run(tmp_path / "old", "epochs=10", fid=9.0, status=None)
    (tmp_path / "old" / "metrics.csv").write_text("epoch,d_loss\n1,1.0\n2,0.9\n")
    assert "| old | stopped at epoch 2 of 10 |" in write_summary(tmp_path / "old")


@pytest.mark.parametrize(("name", "content"), [("eval.json", "{not json"), ("eval.json", ""), ("metrics.csv", "epoch,d_loss\n1,x\n")])
def test_report_survives_a_damaged_job_and_names_the_file(tmp_path, name, content):
    finished_run(tmp_path / "0", "seed=0", fid=9.0)
    finished_run(tmp_path / "1", "seed=1", fid=8.0)
    (tmp_path / "1" / name).write_text(content)
    table = write_summary(tmp_path)
    assert f"| 1 | finished (damaged: {name}) |" in table
    assert "| **0** (best) | finished |" in table, "the damaged job is not ranked; the others are"


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), [
    (("--metric", "fdi"), "--metric fdi is not a column of these runs; use one of epoch,"),
    (("--param", "nosuch"), "--param nosuch is not a key these runs set; use one of optim.lr"),
    (("--out", "/proc/no-such-folder"), "cannot write the summary into /proc/no-such-folder"),
])
def test_report_arguments_that_name_nothing_are_one_sentence(tmp_path, args, message):
    finished_run(tmp_path / "run", "optim.lr=0.0001", fid=9.0)
    (tmp_path / "run" / "metrics.csv").write_text("epoch,d_loss\n50,1.0\n")
    result = run_script("report.py", str(tmp_path / "run"), *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {message}"), result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", [("report.py",), ("-m", "gan.report")])
def test_report_runs_as_a_script_and_as_a_module(tmp_path, command):
    finished_run(tmp_path / "run", "optim.lr=0.0001", fid=9.0)
    out = tmp_path / "summaries" / "new"  # --out need not exist yet
    result = run_script(*command, str(tmp_path / "run"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "| **run** (best) | finished | 9 |" in result.stdout and "| **run** (best) | finished | 9 |" in (out / "summary.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), ("hydra/launcher=submitit_local",)])
def test_parallel_and_cluster_launchers(tiny_mnist, tmp_path, launcher):
    sweep(tiny_mnist, tmp_path, "-m", *launcher, "optim.lr=0.0001,0.0005")
    assert trained_lrs(tmp_path, "01") == pytest.approx([1e-4, 5e-4])


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [(), ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")])
def test_a_bad_job_fails_alone_and_the_sweep_exits_non_zero(tiny_mnist, tmp_path, launcher):
    # Jobs 0 and 1 fail validation, job 3 fails inside the run (a batch larger than the data); job 2 trains.
    result = run_script("train.py", "-m", *launcher, "optim.lr=-1,0.0002", "data.batch_size=64,100000", "debug=default",
                        "data.subset=null", f"hydra.sweep.dir={tmp_path}", data_root=tiny_mnist)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "error: 3 job(s) of this sweep failed" in result.stderr
    jobs = {int(line.split("job ")[1].split(" ")[0]): line for line in result.stderr.splitlines() if line.startswith("  job ")}
    assert sorted(jobs) == [0, 1, 3] and "optim.lr must be positive" in jobs[0] and "larger than the 256 training images" in jobs[3]
    assert trained_lrs(tmp_path, "2") == pytest.approx([2e-4]), "the valid job ran"
    for job in ("0", "1", "3"):
        assert json.loads((tmp_path / job / "status.json").read_text())["status"] == "failed"
        assert "error:" in (tmp_path / job / "train.log").read_text()
    table = write_summary(tmp_path)
    assert "| 0 | failed: optim.lr must be positive, got -1.0. |" in table and "| **2** (best) | finished |" in table


def test_launcher_presets_compose():
    for launcher in ("joblib", "submitit_local", "submitit_slurm"):
        cfg = hydra_config(f"hydra/launcher={launcher}")
        assert launcher.split("_")[0] in cfg.hydra.launcher._target_.lower()
