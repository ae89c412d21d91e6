"""GanSteps built directly from config objects, for tests of the step itself (CPU or CUDA)."""

from __future__ import annotations

import copy

import torch

from gan.config import ModelConfig, OptimConfig, TrainConfig
from gan.models import build_discriminator, build_generator
from gan.step import GanStep

CPU = torch.device("cpu")


def make_step(dropout: float = 0.0, model_options: dict | None = None, device: torch.device = CPU, **train_options) -> GanStep:
    """A step at batch 64 on freshly seeded models; R1 on the whole batch unless ``r1_batch`` is given."""
    torch.manual_seed(0)
    model = ModelConfig(d_dropout=dropout, **(model_options or {}))
    generator, discriminator = build_generator(model).to(device), build_discriminator(model).to(device)
    train = TrainConfig(**{"r1_batch": None, **train_options})
    return GanStep(generator, discriminator, copy.deepcopy(generator), OptimConfig(), train, 64, device)
