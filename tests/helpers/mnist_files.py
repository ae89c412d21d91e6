"""Tiny MNIST IDX files, written in the canonical layout <root>/MNIST/raw/ and read by the real loader."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import torch


def write_idx_images(path: Path, images: torch.Tensor) -> None:
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">IIII", 0x803, n, rows, cols) + images.to(torch.uint8).numpy().tobytes())


def write_idx_labels(path: Path, labels: torch.Tensor) -> None:
    path.write_bytes(struct.pack(">II", 0x801, len(labels)) + labels.to(torch.uint8).numpy().tobytes())


def make_tiny_mnist(root: Path, n_train: int = 256, n_test: int = 64, seed: int = 0) -> Path:
    """Write the four IDX files, filled with random pixels and labels, under root/MNIST/raw; returns root."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = torch.Generator().manual_seed(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), generator=rng))
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", torch.randint(0, 10, (n,), generator=rng))
    return root


def real_mnist_root() -> Path | None:
    """The folder holding the real MNIST files, when DATA_ROOT points at one."""
    root = os.environ.get("DATA_ROOT")
    if root and (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        return Path(root)
    return None
