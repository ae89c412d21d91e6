"""Speed options (precision, torch.compile) train, stay finite, and stay close to fp32 for a few steps.

No timings here: speed is measured by `python -m benchmarks.throughput`, never by tests.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import run_quick
from gan.config import ModelConfig, OptimConfig, TrainConfig
from gan.models import build_discriminator, build_generator
from gan.training import make_optimizers, make_train_step

DEVICE = torch.device("cpu")


def losses_after_steps(steps: int, **train_options) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-step [d_loss, g_loss, D(x), D(G(z))] and the change of G's last-layer weights, from a fixed seed and batch."""
    torch.manual_seed(0)
    model = ModelConfig(d_dropout=0.0)
    generator, discriminator = build_generator(model), build_discriminator(model)
    opt_g, opt_d = make_optimizers(generator, discriminator, OptimConfig(), DEVICE)
    step = make_train_step(generator, discriminator, copy.deepcopy(generator), opt_g, opt_d, TrainConfig(**train_options), 64, DEVICE)
    real = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    initial = generator.net[-2].weight.detach().clone()
    torch.manual_seed(2)
    stats = [step(real, i) for i in range(steps)]
    return stats, generator.net[-2].weight.detach() - initial


@pytest.mark.parametrize(("options", "tolerance", "min_cosine"), [
    ({"precision": "bf16"}, 0.05, 0.9),
    ({"precision": "fp16"}, 0.02, 0.95),
    ({"compile": True}, 1e-4, 0.999),
])
def test_option_stays_close_to_fp32(options, tolerance, min_cosine):
    reference, reference_update = losses_after_steps(3)
    stats, update = losses_after_steps(3, **options)
    for ours, theirs in zip(stats, reference):
        assert torch.isfinite(ours).all()
        assert torch.allclose(ours.float(), theirs, atol=tolerance, rtol=tolerance), (ours, theirs)
    # The weights moved (no skipped steps) and in the direction fp32 moved them.
    assert update.norm() > 0.5 * reference_update.norm()
    assert torch.nn.functional.cosine_similarity(update.flatten(), reference_update.flatten(), dim=0) > min_cosine


@pytest.mark.parametrize("overrides", [
    ("train.precision=fp16",),
    ("train.compile=true",),  # with R1 (the default), only G is compiled
    ("train.compile=true", "train.r1_gamma=0"),
    ("train.precision=bf16", "train.d_updates=separate"),
])
def test_option_trains_a_run_with_finite_losses(tiny_mnist, tmp_path, overrides):
    final = run_quick(tiny_mnist, tmp_path, "epochs=1", *overrides)
    assert math.isfinite(final["d_loss"]) and math.isfinite(final["g_loss"])
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
