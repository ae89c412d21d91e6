"""A few hundred steps on the real MNIST files (DATA_ROOT) already move the generator towards digits."""

from __future__ import annotations

import math

import pytest
import torch

from gan.evaluator import Evaluator
from gan.models import build_generator
from gan.sampling import generate, load_generator, noise
from helpers.mnist_files import real_mnist_root
from helpers.runs import quick_config, run_quick

pytestmark = [pytest.mark.slow, pytest.mark.skipif(real_mnist_root() is None, reason="needs the real MNIST files (DATA_ROOT)")]


def test_three_hundred_steps_on_real_mnist_learn(tmp_path):
    root = real_mnist_root()
    final = run_quick(root, tmp_path, "epochs=1", "data.subset=19200", "train.log_every=50")  # 300 steps of 64
    assert final["step"] == 300
    assert all(math.isfinite(final[k]) for k in ("d_loss", "g_loss"))
    assert (tmp_path / "samples" / "epoch_001.png").is_file() and (tmp_path / "losses.png").is_file()

    # Measured on CPU, seed 0: FID 1906 -> 1576 (G), pixel mean 0.0 -> -0.43 (MNIST: -0.73),
    # precision of the EMA samples 0.0 -> 1.0. At this point the MLP GAN still draws few shapes, so
    # class balance only comes later (a few epochs).
    evaluator = Evaluator(root, download=False)
    torch.manual_seed(0)
    untrained_generator = build_generator(quick_config(root).model)
    untrained = evaluator.score_generator(untrained_generator, 2000)
    trained_generator = load_generator(tmp_path / "checkpoints" / "last.pt", ema=False)
    trained = evaluator.score_generator(trained_generator, 2000)
    ema = evaluator.score_generator(load_generator(tmp_path / "checkpoints" / "last.pt", ema=True), 2000)

    assert trained["fid"] < 0.9 * untrained["fid"], (trained["fid"], untrained["fid"])
    assert untrained["precision"] < 0.05 and ema["precision"] > 0.5
    z = noise(1000, 100, seed=0)
    untrained_mean, trained_mean = generate(untrained_generator, z).mean().item(), generate(trained_generator, z).mean().item()
    real_mean = evaluator.real_images.mean().item()
    assert abs(trained_mean - real_mean) < 0.6 * abs(untrained_mean - real_mean), "backgrounds turn black, like MNIST's"
