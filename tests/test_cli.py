"""The entry points as a user runs them: train.py, multirun, sample.py, and their error output."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import FAST, REPO


def run(*args: str, data_root=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if data_root is not None:
        env["DATA_ROOT"] = str(data_root)
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained_run(tiny_mnist, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = run("train.py", "epochs=1", *FAST, f"hydra.run.dir={run_dir}", data_root=tiny_mnist)
    assert result.returncode == 0, result.stderr
    return run_dir


def test_train_writes_checkpoint_grid_plot_and_hydra_config(trained_run):
    assert (trained_run / "checkpoints" / "last.pt").is_file()
    assert (trained_run / "samples" / "epoch_001.png").is_file()
    assert (trained_run / "losses.png").is_file()
    assert (trained_run / "metrics.csv").is_file()
    assert (trained_run / ".hydra" / "config.yaml").is_file()
    assert "epoch 1/1" in (trained_run / "train.log").read_text()


def test_print_composed_config():
    result = run("train.py", "--cfg", "job", "optim.lr=0.0001")
    assert result.returncode == 0
    assert "lr: 0.0001" in result.stdout and "g_hidden" in result.stdout


def test_multirun_gives_each_job_its_own_directory(tiny_mnist, tmp_path):
    result = run("train.py", "-m", "optim.lr=0.0001,0.0005", "epochs=1", *FAST,
                 f"hydra.sweep.dir={tmp_path}", data_root=tiny_mnist)
    assert result.returncode == 0, result.stderr
    for job, lr in (("0", 0.0001), ("1", 0.0005)):
        ckpt = torch.load(tmp_path / job / "checkpoints" / "last.pt", weights_only=True)
        assert ckpt["config"]["optim"]["lr"] == pytest.approx(lr)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("optim.lr=-1",), "error: optim.lr must be positive"),
        (("resume=/no/such/file.pt",), "error: no checkpoint file at /no/such/file.pt"),
        (("data.download=false", "data.root=/no/such/dir"), "error: MNIST was not found"),
    ],
)
def test_bad_input_is_one_sentence_without_traceback(tiny_mnist, tmp_path, args, message):
    result = run("train.py", "epochs=1", "device=cpu", f"hydra.run.dir={tmp_path}", *args, data_root=tiny_mnist)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_sample_writes_grid_tensor_and_array(trained_run, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.pt"
    for name in ("grid.png", "samples.pt", "samples.npy"):
        result = run("sample.py", f"checkpoint={ckpt}", "n=10", f"out={tmp_path / name}", "seed=3", "device=cpu")
        assert result.returncode == 0, result.stderr
    from PIL import Image

    assert Image.open(tmp_path / "grid.png").size[0] > 28 * 3
    tensor = torch.load(tmp_path / "samples.pt")
    array = np.load(tmp_path / "samples.npy")
    assert tensor.shape == (10, 1, 28, 28) and array.shape == (10, 1, 28, 28)
    assert tensor.min() >= -1 and tensor.max() <= 1
    assert np.allclose(tensor.numpy(), array), "same seed gives the same samples"


def test_sample_without_checkpoint_fails_clearly():
    result = run("sample.py")
    assert result.returncode != 0
    assert "checkpoint" in result.stderr
