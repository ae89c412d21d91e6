"""The entry points as a user runs them: train.py, sample.py, report.py, and their error output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.runs import run_script

pytestmark = pytest.mark.slow  # every test here starts Python processes


@pytest.fixture(scope="module")
def trained_run(tiny_mnist, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = run_script("train.py", "debug=default", f"hydra.run.dir={run_dir}", data_root=tiny_mnist)
    assert result.returncode == 0, result.stderr
    return run_dir


def test_train_writes_checkpoint_grid_plot_and_hydra_config(trained_run):
    for name in ("checkpoints/last.pt", "checkpoints/epoch_001.pt", "samples/epoch_001.png", "losses.png", "metrics.csv",
                 ".hydra/config.yaml", ".hydra/overrides.yaml"):
        assert (trained_run / name).is_file(), name
    assert "epoch 1/1" in (trained_run / "train.log").read_text()
    assert Image.open(trained_run / "samples" / "epoch_001.png").size == (4 * 30 + 2, 4 * 30 + 2), "debug: a 4x4 grid"


def test_print_composed_config():
    result = run_script("train.py", "--cfg", "job", "optim.lr=0.0001")
    assert result.returncode == 0
    assert "lr: 0.0001" in result.stdout and "r1_every: 1" in result.stdout and "d_dropout: 0.0" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("optim.lr=-1",), "error: optim.lr must be positive"),
        (("resume=/no/such/file.pt",), "error: no checkpoint file at /no/such/file.pt"),
        (("data.download=false", "data.root=/no/such/dir"), "error: MNIST was not found"),
    ],
)
def test_bad_input_is_one_sentence_without_traceback(tiny_mnist, tmp_path, args, message):
    result = run_script("train.py", "debug=default", f"hydra.run.dir={tmp_path}", *args, data_root=tiny_mnist)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_sample_writes_grid_tensor_and_array(trained_run, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.pt"
    for name in ("grid.png", "samples.pt", "samples.npy"):
        result = run_script("sample.py", f"checkpoint={ckpt}", "n=10", f"out={tmp_path / name}", "seed=3", "device=cpu")
        assert result.returncode == 0, result.stderr
        assert f"wrote 10 samples to {tmp_path / name}" in result.stdout
    assert Image.open(tmp_path / "grid.png").size == (3 * 30 + 2, 4 * 30 + 2), "10 images, 3 to a row"
    tensor = torch.load(tmp_path / "samples.pt")
    array = np.load(tmp_path / "samples.npy")
    assert tensor.shape == (10, 1, 28, 28) and array.shape == (10, 1, 28, 28)
    assert tensor.min() >= -1 and tensor.max() <= 1
    # Two processes, so not always to the bit: MKL's CPU matmuls may take another path for differently
    # aligned buffers (seen in CI on the Xeon: 2.7e-6 apart). Another seed's samples differ by up to 0.15.
    assert np.allclose(tensor.numpy(), array, rtol=0, atol=1e-4), "same seed gives the same samples"


def test_sample_without_checkpoint_fails_clearly():
    result = run_script("sample.py")
    assert result.returncode != 0
    assert "checkpoint" in result.stderr


def test_report_on_a_folder_without_jobs_is_one_sentence(tmp_path):
    result = run_script("report.py", str(tmp_path))
    assert result.returncode == 1
    assert f"error: no Hydra jobs (*/.hydra/overrides.yaml) under {tmp_path}" in result.stderr and "Traceback" not in result.stderr
