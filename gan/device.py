"""Pick the torch device a run asks for, or the best one present."""

from __future__ import annotations

import ctypes
import ctypes.util

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


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc refuses more on 64-bit systems
_KEEP_FREED = 1 * 2**30  # freed memory the heap may hold on to before giving it back to the system


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed memory instead of returning it to the system after every step.

    A training step allocates and frees megabyte-sized tensors (gradients, activations). With glibc's
    defaults each of them is mapped fresh from the system or trimmed off the heap when freed, so every
    step touches new pages: about 2,000-2,600 page faults a step at batch 64 on the development machine.
    Serving them from the heap instead removes the faults. Returns whether the setting took (only on
    glibc, e.g. Linux; elsewhere nothing changes).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED))
