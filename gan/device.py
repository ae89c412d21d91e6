"""Pick the torch device a run asks for, or the best one present."""

from __future__ import annotations

import torch

from gan.errors import GanError


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def resolve_device(name: str) -> torch.device:
    """Map ``auto|cpu|cuda|mps`` to a device, failing clearly when the asked-for one is absent."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise GanError("device=cuda was asked for but this machine has no usable CUDA GPU; use device=auto or device=cpu.")
        return torch.device("cuda")
    if name == "mps":
        if not _mps_available():
            raise GanError("device=mps was asked for but Apple's MPS backend is not available here; use device=auto or device=cpu.")
        return torch.device("mps")
    raise GanError(f"unknown device '{name}'; use one of auto, cpu, cuda, mps.")
