"""W&B records what we claim: config, scalars against the step, real grid pixels, names, groups, exit codes."""

from __future__ import annotations

import json
import logging
import os
import signal
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan.checkpoint import load_checkpoint
from gan.config import model_config
from gan.device import resolve_precision
from gan.history import read_metrics_csv
from gan.models import build_generator
from gan.report import write_summary
from gan.run import train
from gan.sampling import generate, grid_uint8
from gan.signals import TrainingInterrupted
from gan.tracking import resolve_mode
from helpers.faults import signal_at_step
from helpers.runs import EVALUATED, finished_run, quick_config, run_script
from helpers.wandb_records import FULL, read_run, unwrap

# A generous start-up wait: on a loaded 2-core machine the offline W&B service can take longer than the
# default 30 s to start, and the run would then train without W&B and leave no .wandb file to read.
WANDB_ON = ("wandb.mode=offline", "wandb.init_timeout=120")


def wandb_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def train_tracked(data_root: Path, run_dir: Path, *overrides: str, **names):
    return train(quick_config(data_root, *WANDB_ON, *overrides), run_dir, **names)


def test_reading_a_run_waits_for_the_records_the_service_writes_when_it_closes_the_file(tmp_path):
    from wandb.proto import wandb_internal_pb2

    path = tmp_path / "run-x.wandb"
    path.write_bytes(b":W&B\xbe\xef\x01")  # what a finished run's file can hold until the service closes it
    exit_record = wandb_internal_pb2.Record(exit=wandb_internal_pb2.RunExitRecord(exit_code=143)).SerializeToString()

    def close_the_file() -> None:
        with path.open("ab") as file:
            file.write(struct.pack("<IHB", 0, len(exit_record), FULL) + exit_record)

    threading.Timer(0.5, close_the_file).start()
    assert read_run(path).exit_code == 143


def test_run_logs_config_scalars_grid_and_names(tiny_mnist, tmp_path):
    train_tracked(tiny_mnist, tmp_path, "epochs=2", "optim.lr=0.0003", "wandb.tags=[baseline,cpu]",
                  run_name="optim.lr=0.0003", run_group="my-sweep")
    [path] = wandb_files(tmp_path)
    run = read_run(path)
    assert (run.name, run.group, run.tags, run.exit_code) == ("optim.lr=0.0003", "my-sweep", ["baseline", "cpu", "sweep:my-sweep"], 0)
    assert unwrap(run.config["optim"])["lr"] == pytest.approx(0.0003)
    assert unwrap(run.config["model"])["g_hidden"] == [256, 512, 1024]
    assert unwrap(run.config["epochs"]) == 2
    # what device=auto and train.precision=auto came to on this machine
    assert unwrap(run.config["resolved"]) == {"device": "cpu", "precision": resolve_precision("auto", torch.device("cpu"))}

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
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    generator_ema = build_generator(model_config(ckpt["config"]["model"]))
    generator_ema.load_state_dict(ckpt["generator_ema"])
    drawn = grid_uint8(generate(generator_ema, ckpt["fixed_noise"])).permute(1, 2, 0).numpy()
    assert np.array_equal(logged_grid, drawn), "the grid is G-EMA's samples of the fixed noise, pixel for pixel (not cast to black)"


def test_run_records_what_a_reviewer_compares(tiny_mnist, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        train_tracked(tiny_mnist, tmp_path, "epochs=3", "optim.lr=0.0003", *EVALUATED, run_name="optim.lr=0.0003", run_group="sweeps/2026/lr",
                      swept={"optim.lr": 0.0003})
    [path] = wandb_files(tmp_path)
    run = read_run(path)
    history = read_metrics_csv(tmp_path / "metrics.csv")

    # Evaluation metrics are plotted against the epoch, and each evaluation row carries it.
    assert run.step_metrics["eval/*"] == "epoch"
    evaluations = [row for row in run.history if "eval/ema/fid" in row]
    assert [row["epoch"] for row in evaluations] == [1, 2, 3]
    assert [row["eval/ema/fid"] for row in evaluations] == pytest.approx([r["fid"] for r in history])
    # The digit shares of each evaluation, as the table behind a bar chart.
    bars = json.loads((path.parent / "files" / evaluations[-1]["eval/ema/digit_shares_table/path"]).read_text())
    assert bars["columns"] == ["digit", "share"]
    assert bars["data"] == [[str(d), pytest.approx(evaluations[-1][f"eval/ema/class_{d}"])] for d in range(10)]

    # The summary holds the final G-EMA metrics and the best FID with its epoch: the runs table's columns.
    final = json.loads((tmp_path / "eval.json").read_text())["ema"]
    best_fid, best_epoch = min((r["fid"], r["epoch"]) for r in history)
    assert run.summary["final/fid"] == pytest.approx(final["fid"])
    assert run.summary["final/recall"] == pytest.approx(final["recall"])
    assert run.summary["final/digit_min"] == pytest.approx(min(final[f"class_{d}"] for d in range(10)))
    assert (run.summary["best/fid"], run.summary["best/epoch"]) == (pytest.approx(best_fid), best_epoch)

    # The swept key sits at the top level of the config too; the job type and a tag name the sweep.
    assert unwrap(run.config["optim.lr"]) == 0.0003 and unwrap(run.config["optim"])["lr"] == 0.0003
    assert run.job_type == "sweep" and "sweep:2026/lr" in run.tags

    # The animation: one frame per grid, logged as a GIF; the table of classified samples from both generators.
    gif = Image.open(tmp_path / "samples" / "progress.gif")
    assert gif.n_frames == len(list((tmp_path / "samples").glob("epoch_*.png"))) == 3
    [logged] = [row for row in run.history if "progress/path" in row]
    assert (path.parent / "files" / logged["progress/path"]).read_bytes() == (tmp_path / "samples" / "progress.gif").read_bytes()
    [table_row] = [row for row in run.history if "samples_table/path" in row]
    table = json.loads((path.parent / "files" / table_row["samples_table/path"]).read_text())
    assert table["columns"] == ["generator", "image", "digit", "confidence"]
    assert [row[0] for row in table["data"]].count("ema") == [row[0] for row in table["data"]].count("raw") == 100
    assert all(row[2] in [*map(str, range(10)), "none"] and 0 < row[3] <= 1 for row in table["data"])

    # No credentials here: the run went offline and said how to upload it.
    described = json.loads((tmp_path / "wandb.json").read_text())
    assert described["mode"] == "offline" and described["sync_command"] == f"wandb sync {path.parent}"
    assert described["sync_command"] in caplog.text


def test_report_names_the_wandb_group_and_each_run(tmp_path):
    for job, where in (("0", {"mode": "online", "group": "lr-sweep", "url": "https://wandb.ai/me/mnist-gan/runs/abc"}),
                       ("1", {"mode": "offline", "group": "lr-sweep", "sync_command": "wandb sync /x/offline-run-1"})):
        finished_run(tmp_path / job, f"optim.lr={job}.001", wandb=where)
    table = write_summary(tmp_path)
    assert "W&B group: lr-sweep" in table
    assert "- job 0: https://wandb.ai/me/mnist-gan/runs/abc" in table
    assert "- job 1: offline, upload with `wandb sync /x/offline-run-1`" in table


def test_report_names_each_jobs_group_when_the_runs_come_from_several(tmp_path):
    finished_run(tmp_path / "single", wandb={"mode": "offline", "sync_command": "wandb sync /x/offline-run-0"})
    finished_run(tmp_path / "gamma-sweep" / "1", "train.r1_gamma=0.3",
                 wandb={"mode": "online", "group": "gamma-sweep", "url": "https://wandb.ai/me/mnist-gan/runs/abc"})
    table = write_summary([tmp_path / "single", tmp_path / "gamma-sweep" / "1"], out=tmp_path)
    assert "W&B group: gamma-sweep" not in table, "one job's sweep is not the group of every run listed"
    assert "- job single (group none): offline, upload with `wandb sync /x/offline-run-0`" in table
    assert "- job gamma-sweep/1 (group gamma-sweep): https://wandb.ai/me/mnist-gan/runs/abc" in table


def netrc_with(tmp_path: Path, host: str) -> str:
    path = tmp_path / "netrc"
    path.write_text(f"machine {host}\n  login user\n  password secret-key\n")
    path.chmod(0o600)
    return str(path)


NO_CREDENTIALS = "no W&B credentials (WANDB_API_KEY or `wandb login`)"


@pytest.mark.parametrize(("mode", "env", "netrc_host", "expected", "reason"), [
    ("auto", {}, None, "offline", NO_CREDENTIALS),
    ("auto", {"WANDB_API_KEY": "key"}, None, "online", "WANDB_API_KEY is set"),
    ("auto", {}, "api.wandb.ai", "online", "`wandb login` credentials were found"),
    ("auto", {"WANDB_BASE_URL": "https://wandb.example.org"}, "api.wandb.ai", "offline", NO_CREDENTIALS),  # an entry for another host
    ("auto", {"WANDB_BASE_URL": "https://wandb.example.org"}, "wandb.example.org", "online", "`wandb login` credentials were found"),
    ("auto", {"WANDB_MODE": "offline", "WANDB_API_KEY": "key"}, "api.wandb.ai", "offline", "WANDB_MODE=offline"),  # the user's wins
    ("auto", {"WANDB_MODE": "disabled"}, None, "disabled", "WANDB_MODE=disabled"),
    ("auto", {"WANDB_MODE": "online"}, None, "online", "WANDB_MODE=online"),
    ("online", {}, None, "offline", f"wandb.mode=online but {NO_CREDENTIALS}"),  # never a login prompt
    ("online", {}, "api.wandb.ai", "online", "wandb.mode=online"),
    ("offline", {"WANDB_API_KEY": "key"}, None, "offline", "wandb.mode=offline"),
    ("disabled", {"WANDB_API_KEY": "key"}, None, "disabled", "wandb.mode=disabled"),
])
def test_mode_decision(tmp_path, mode, env, netrc_host, expected, reason):
    environ = {"HOME": str(tmp_path), "NETRC": netrc_with(tmp_path, netrc_host) if netrc_host else str(tmp_path / "none"), **env}
    assert resolve_mode(mode, environ) == (expected, reason)


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
    assert [unwrap(run.config["optim.lr"]) for run in runs] == [0.0001, 0.0005], "swept keys at the config's top level"
    assert all(run.job_type == "sweep" for run in runs)
    assert all(run.exit_code == 0 for run in runs)


def test_disabled_mode_writes_nothing(tiny_mnist, tmp_path):
    train(quick_config(tiny_mnist, "epochs=1"), tmp_path)
    assert not (tmp_path / "wandb").exists()
    assert not list(Path(os.environ["WANDB_DIR"]).glob("**/*.wandb"))


def test_online_without_api_key_falls_back_to_offline(tiny_mnist, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        train_tracked(tiny_mnist, tmp_path, "epochs=1", "wandb.mode=online", "wandb.init_timeout=5")
    assert "no W&B credentials" in caplog.text
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


@pytest.mark.slow
def test_a_conditional_run_records_its_label_accuracy_and_the_digits_asked_for(tiny_mnist, tmp_path):
    train_tracked(tiny_mnist, tmp_path, "epochs=1", "model=conditional", *EVALUATED)
    [path] = wandb_files(tmp_path)
    run = read_run(path)
    final = json.loads((tmp_path / "eval.json").read_text())["ema"]
    assert run.summary["final/label_accuracy"] == pytest.approx(final["label_accuracy"])
    assert run.summary["final/intra_fid"] == pytest.approx(final["intra_fid"])
    [table_row] = [row for row in run.history if "samples_table/path" in row]
    table = json.loads((path.parent / "files" / table_row["samples_table/path"]).read_text())
    assert table["columns"] == ["generator", "image", "requested", "digit", "confidence"]
    assert [row[2] for row in table["data"][:12]] == [str(d % 10) for d in range(12)], "every digit asked for in turn"
