"""GanSteps of composed configs, for tests of the step itself (CPU or CUDA)."""

from __future__ import annotations

import copy

import torch

from gan.models import build_discriminator, build_generator
from gan.step import GanStep
from helpers.runs import config

CPU = torch.device("cpu")


def override(key: str, value: object) -> str:
    """``key=value`` as the command line writes it (None as null, lists in brackets)."""
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value).replace(" ", "")
    return f"{key}={text}"


def make_step(*overrides: str, device: torch.device = CPU, **train_options: object) -> GanStep:
    """The step of ``python train.py data.batch_size=64 train.r1_batch=null train.r1_gamma_end=null
    train.precision=fp32 OVERRIDES`` on freshly seeded models (R1 on the whole batch at a constant gamma, and
    fp32 whatever this machine's ``auto`` precision is, unless ``r1_batch``, ``r1_gamma_end`` or ``precision``
    is given); ``train_options`` are train.* values."""
    defaults = {"r1_batch": None, "r1_gamma_end": None, "precision": "fp32"}
    train = [override(f"train.{key}", value) for key, value in {**defaults, **train_options}.items()]
    cfg = config("data.batch_size=64", *train, *overrides)
    torch.manual_seed(0)
    generator, discriminator = build_generator(cfg.model).to(device), build_discriminator(cfg.model).to(device)
    return GanStep(generator, discriminator, copy.deepcopy(generator), cfg.optim, cfg.train, 64, device, steps_per_epoch=10)
