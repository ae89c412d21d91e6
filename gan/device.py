"""Pick the torch device a run asks for, or the best one present, and the precision its step runs in."""

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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slower than fp32."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)


def resolve_precision(name: str, device: torch.device) -> str:
    """Map ``train.precision=auto`` to what the step runs in on ``device``; any other choice is kept as asked.

    auto is bf16 on a CPU with native bf16 matmuls, where they make the step faster, and fp32 everywhere
    else: on a CPU without them bf16 is emulated and slower than fp32 (the figures are in docs/speed.md), and
    on a GPU these small models wait on kernel launches, not arithmetic (docs/gpu.md).
    """
    if name != "auto":
        return name
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
