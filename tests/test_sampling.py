"""Sampling and checkpoint loading: the promised shapes, the digits asked for, nothing overwritten unasked, one sentence per bad file."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from gan import generate_and_plot_samples, load_generator
from gan.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from gan.errors import GanError
from gan.models import MlpGenerator
from gan.sampling import generate, grid_uint8, noise, sample_labels, save_samples
from helpers.runs import run_quick


@pytest.fixture(scope="module")
def checkpoint(tiny_mnist, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    run_quick(tiny_mnist, run_dir, "epochs=1")
    return run_dir / "checkpoints" / "last.pt"


def test_generate_and_plot_samples_returns_a_figure_of_n_images():
    figure = generate_and_plot_samples(MlpGenerator(100, [32]), n=16, seed=0)
    assert isinstance(figure, Figure)
    assert sum(len(axes.images) for axes in figure.axes) == 16


def test_a_conditional_generator_draws_the_digit_it_is_asked_for_in_a_notebook():
    torch.manual_seed(0)
    generator = MlpGenerator(100, [32], num_classes=10)
    threes = generate_and_plot_samples(generator, n=4, seed=0, digit=3)
    drawn = [axes.images[0].get_array() for axes in threes.axes if axes.images]
    expected = generate(generator, noise(4, 100, seed=0), torch.full((4,), 3))
    assert all(np.allclose(image, sample[0].numpy()) for image, sample in zip(drawn, expected))
    assert torch.equal(sample_labels(generator, 12), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])), "every digit in equal shares"
    with pytest.raises(GanError, match=r"digit=12 is not a class of this generator; pick one of 0\.\.9"):
        generate_and_plot_samples(generator, digit=12)
    with pytest.raises(GanError, match="this generator is unconditional"):
        generate_and_plot_samples(MlpGenerator(100, [32]), digit=3)


def test_load_generator_picks_ema_or_raw_weights(checkpoint):
    ema, raw = load_generator(checkpoint, ema=True), load_generator(checkpoint, ema=False)
    assert not ema.training
    z = noise(8, 100, seed=0)
    a, b = generate(ema, z), generate(raw, z)
    assert a.shape == (8, 1, 28, 28) and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, b)
    assert torch.equal(a, generate(load_generator(checkpoint), z)), "same seed, same samples"


def test_grid_is_uint8_with_the_images_own_pixels():
    images = torch.linspace(-1, 1, 4 * 784).view(4, 1, 28, 28)
    grid = grid_uint8(images)
    assert grid.dtype == torch.uint8 and grid.shape == (3, 2 * 30 + 2, 2 * 30 + 2)
    expected = ((images[3, 0] + 1) / 2 * 255 + 0.5).clamp(0, 255).to(torch.uint8)  # torchvision's rounding
    assert torch.equal(grid[0, 32:60, 32:60], expected), "the fourth image, second row, second column"
    assert grid[0, 59, 59] == 255 and grid[0, 2, 2] == 0


def test_grid_tiles_images_in_rows_on_black_padding():
    images = torch.full((5, 1, 28, 28), -1.0)
    images[3] = 1.0  # the fourth image is white: second row, first column with 3 to a row
    grid = grid_uint8(images, nrow=3)
    assert grid.shape == (3, 2 * 30 + 2, 3 * 30 + 2)
    assert grid[:, 32:60, 2:30].eq(255).all() and grid[:, 2:30, 2:30].eq(0).all()
    assert grid[:, 32:60, 32:60].eq(0).all(), "the empty sixth cell stays black"


@pytest.mark.parametrize("suffix", [".png", ".pt", ".npy"])
def test_save_samples_by_extension(tmp_path, suffix):
    images = torch.rand(5, 1, 28, 28) * 2 - 1
    path = tmp_path / f"out{suffix}"
    save_samples(images, path)
    if suffix == ".png":
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), grid_uint8(images).permute(1, 2, 0).numpy())
    elif suffix == ".pt":
        assert torch.equal(torch.load(path), images)
    else:
        assert np.array_equal(np.load(path), images.numpy())


def test_save_samples_refuses_unknown_extension(tmp_path):
    with pytest.raises(GanError, match=r"\.png \(grid\), \.pt or \.npy"):
        save_samples(torch.zeros(1, 1, 28, 28), tmp_path / "out.jpg")


def test_save_samples_replaces_a_file_only_when_asked_and_a_checkpoint_never(checkpoint, tmp_path):
    images = torch.zeros(2, 1, 28, 28)
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"mine")
    with pytest.raises(GanError, match="exists; name another file, or add overwrite=true"):
        save_samples(images, mine)
    assert mine.read_bytes() == b"mine"
    save_samples(images, mine, overwrite=True)
    assert torch.equal(torch.load(mine), images)
    kept = checkpoint.read_bytes()
    with pytest.raises(GanError, match="is a checkpoint, which sample.py never writes over"):
        save_samples(images, checkpoint, overwrite=True)
    assert checkpoint.read_bytes() == kept


class ExecutesCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/gan-checkpoint-pwned",))


def test_checkpoint_that_would_execute_code_is_refused(tmp_path):
    marker = "/tmp/gan-checkpoint-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    torch.save({"kind": "mnist-gan", "format_version": 1, "payload": ExecutesCode()}, path)
    with pytest.raises(GanError, match="could run code"):
        load_checkpoint(path)
    assert not os.path.exists(marker)
    with open(path, "wb") as f:  # a plain pickle, not even a torch zip file
        pickle.dump(ExecutesCode(), f)
    with pytest.raises(GanError):
        load_checkpoint(path)
    assert not os.path.exists(marker)


def test_truncated_checkpoint_is_reported(checkpoint, tmp_path):
    path = tmp_path / "truncated.pt"
    path.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(GanError, match="truncated or corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize("seed", range(50))
def test_garbage_file_is_reported(tmp_path, seed):
    # Random bytes make the unpickler fail in many different ways; each must become one sentence that calls
    # the file what it is (not a checkpoint; or, when it starts like a pickle, a corrupt one), and never asks
    # a sample.py user to "start the run anew".
    path = tmp_path / "garbage.pt"
    path.write_bytes(random.Random(seed).randbytes(4096))
    with pytest.raises(GanError, match=r"is not a checkpoint \(its bytes are not what torch.save writes\)|is truncated or corrupt") as raised:
        load_checkpoint(path)
    assert "anew" not in str(raised.value)


def test_foreign_checkpoint_is_reported(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(GanError, match="not a checkpoint written by this repo"):
        load_checkpoint(path)


def test_newer_format_asks_for_an_update(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"kind": "mnist-gan", "format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(GanError, match="newer than .*git pull"):
        load_checkpoint(path)


def test_missing_checkpoint_is_reported(tmp_path):
    with pytest.raises(GanError, match="no checkpoint file at"):
        load_checkpoint(tmp_path / "nope.pt")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(GanError, match="No space left on device.*previous checkpoint there is untouched"):
        save_checkpoint({"epoch": 2}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
