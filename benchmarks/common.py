"""What the benchmarks share: the config composed as train.py composes it, and a description of the machine."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from gan.config import Config, compose

REPO = Path(__file__).resolve().parents[1]


def train_config(*overrides: str) -> Config:
    """conf/config.yaml with these command-line overrides, validated: the config `python train.py OVERRIDES` runs."""
    return compose(*overrides)


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
