"""The entry points as a user runs them: train.py, sample.py, report.py, and their error output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from helpers.runs import config, run_script

pytestmark = pytest.mark.slow  # every test here starts Python processes


def train(data_root, run_dir, *overrides):
    result = run_script("train.py", "debug=default", f"hydra.run.dir={run_dir}", *overrides, data_root=data_root)
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture(scope="module")
def trained_run(tiny_mnist, tmp_path_factory):
    return train(tiny_mnist, tmp_path_factory.mktemp("cli") / "run")


@pytest.fixture(scope="module")
def conditional_run(tiny_mnist, tmp_path_factory):
    return train(tiny_mnist, tmp_path_factory.mktemp("cli") / "conditional", "model=conditional")


def test_train_writes_checkpoint_grid_plot_record_and_status(trained_run):
    for name in ("checkpoints/last.pt", "checkpoints/epoch_001.pt", "samples/epoch_001.png", "losses.png", "metrics.csv",
                 ".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml"):
        assert (trained_run / name).is_file(), name
    assert "epoch 1/1" in (trained_run / "train.log").read_text()
    assert Image.open(trained_run / "samples" / "epoch_001.png").size == (4 * 30 + 2, 4 * 30 + 2), "debug: a 4x4 grid"
    assert yaml.safe_load((trained_run / ".hydra" / "overrides.yaml").read_text()) == ["debug=default"]
    assert yaml.safe_load((trained_run / "status.json").read_text())["status"] == "finished"


def test_print_composed_config_shows_the_briefs_recipe():
    result = run_script("train.py", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    composed, default = yaml.safe_load(result.stdout), config()
    shown = (composed["optim"]["lr"], composed["data"]["batch_size"], composed["epochs"])
    assert shown == (default.optim.lr, default.data.batch_size, default.epochs)
    assert yaml.safe_load(run_script("train.py", "--cfg", "job", "optim.lr=0.0001").stdout)["optim"]["lr"] == 0.0001


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("optim.lr=-1",), "error: optim.lr must be positive, got -1.0."),
        (("+optim.lrr=0.1",), "error: optim.lrr is not a config key (known there: lr, lr_g, lr_d, betas)"),
        (("resume=/no/such/file.pt",), "error: no checkpoint file at /no/such/file.pt"),
        (("data.download=false", "data.root=/no/such/dir"), "error: MNIST was not found"),
        (("optim.lr=abc",), "error: optim.lr=abc is not valid: optim.lr must be a number such as 0.0002."),
        (("epochs=1.5",), "error: epochs=1.5 is not valid: epochs must be a whole number."),
        (("optim.lrr=0.1",), "error: optim.lrr is not a config key (known there: lr, lr_g, lr_d, betas)"),
        (("+optim.lr=0.1",), "error: optim.lr is already a config key, so it takes no +: write optim.lr=VALUE."),
        (("device=tpu",), "error: device=tpu is not an option of device; choose one of auto, cpu, cuda, mps."),
        (("optim.lr=[1",), "error: cannot read the command line (no viable alternative at input '[1')"),
        (("epochs=0",), "error: epochs must be 1 or more"),
        (("experiment=fast", "model=large"), "error: experiment=fast sets model=base as part of its whole recipe, so model=large would be dropped"),
        (("experiment=fast", "model=conditional"), "error: experiment=fast sets model=base as part of its whole recipe"),
    ],
)
def test_bad_input_is_one_sentence_without_traceback(tiny_mnist, tmp_path, args, message):
    result = run_script("train.py", "debug=default", f"hydra.run.dir={tmp_path}", *args, data_root=tiny_mnist)
    assert result.returncode == 1
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1, result.stderr


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
    # aligned buffers (seen in CI: 2.7e-6 apart). Another seed's samples differ by up to 0.15.
    assert np.allclose(tensor.numpy(), array, rtol=0, atol=1e-4), "same seed gives the same samples"


def test_sample_never_writes_over_a_checkpoint_and_asks_before_replacing_a_file(trained_run, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.pt"
    kept = ckpt.read_bytes()
    for extra in ((), ("overwrite=true",)):
        result = run_script("sample.py", f"checkpoint={ckpt}", "n=4", f"out={ckpt}", *extra)
        assert result.returncode == 1 and result.stderr.startswith(f"error: out={ckpt} is a checkpoint, which sample.py never writes over")
    assert ckpt.read_bytes() == kept

    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's own picture")
    refused = run_script("sample.py", f"checkpoint={ckpt}", "n=4", f"out={mine}")
    assert refused.returncode == 1 and "exists; name another file, or add overwrite=true to replace it." in refused.stderr
    assert mine.read_bytes() == b"the user's own picture"
    replaced = run_script("sample.py", f"checkpoint={ckpt}", "n=4", f"out={mine}", "overwrite=true")
    assert replaced.returncode == 0, replaced.stderr
    assert Image.open(mine).size == (2 * 30 + 2, 2 * 30 + 2)


@pytest.mark.parametrize("out", ["/proc/no-such-folder/x.png", "{tmp}/a-file/x.png"])
def test_sample_to_a_path_that_cannot_be_written_is_one_sentence(trained_run, tmp_path, out):
    (tmp_path / "a-file").write_text("not a folder")
    out = out.format(tmp=tmp_path)
    result = run_script("sample.py", f"checkpoint={trained_run / 'checkpoints' / 'last.pt'}", "n=4", f"out={out}")
    assert result.returncode == 1 and result.stderr.startswith(f"error: cannot write {out}") and "Traceback" not in result.stderr


def test_sample_draws_a_chosen_digit_from_a_conditional_checkpoint(conditional_run, trained_run, tmp_path):
    ckpt = conditional_run / "checkpoints" / "last.pt"
    for digit in ("7", "null"):
        result = run_script("sample.py", f"checkpoint={ckpt}", "n=20", f"digit={digit}", f"out={tmp_path / f'{digit}.pt'}")
        assert result.returncode == 0, result.stderr
    sevens, every_digit = torch.load(tmp_path / "7.pt"), torch.load(tmp_path / "null.pt")
    assert sevens.shape == every_digit.shape == (20, 1, 28, 28) and not torch.allclose(sevens, every_digit)
    grid = run_script("sample.py", f"checkpoint={ckpt}", "n=20", f"out={tmp_path / 'grid.png'}")
    assert Image.open(tmp_path / "grid.png").size == (10 * 30 + 2, 2 * 30 + 2), "every digit: one per column"

    unconditional = run_script("sample.py", f"checkpoint={trained_run / 'checkpoints' / 'last.pt'}", "digit=7", f"out={tmp_path / 'x.png'}")
    assert unconditional.returncode == 1
    assert unconditional.stderr.startswith("error: this generator is unconditional (trained without labels), so it cannot be asked for digit=7")
    assert grid.returncode == 0


def test_sample_without_checkpoint_names_the_missing_key():
    result = run_script("sample.py")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: checkpoint needs a value: pass checkpoint=... on the command line."


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sample.py", "checkpoint=x.pt", "digit=abc"), "error: digit=abc is not valid: digit must be a whole number or null."),
        (("sample.py", "checkpoint=x.pt", "digit=3.5"), "error: digit=3.5 is not valid: digit must be a whole number or null."),
        (("sample.py", "checkpoint=x.pt", "device=tpu"), "error: device=tpu is not an option of device; choose one of auto, cpu, cuda, mps."),
        (("export.py", "checkpoint=x.pt", "out=y", "formats=onnx"), "error: formats=onnx is not valid: formats must be a list in brackets"),
        (("report.py", "/no/such/sweep"), "error: /no/such/sweep does not exist; pass a multirun sweep directory"),
        (("report.py", "--metirc", "fid", "."), "error: unrecognized arguments: --metirc; see `python report.py --help`."),
    ],
)
def test_every_script_says_a_bad_command_line_in_one_sentence(args, message):
    result = run_script(*args)
    assert result.returncode in (1, 2)
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_report_on_a_folder_without_jobs_is_one_sentence(tmp_path):
    result = run_script("report.py", str(tmp_path))
    assert result.returncode == 1
    assert f"error: no Hydra jobs (*/.hydra/overrides.yaml) under {tmp_path}" in result.stderr and "Traceback" not in result.stderr
