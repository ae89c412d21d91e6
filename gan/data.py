"""MNIST as one tensor on the training device.

MNIST is 47 MB as float32: keeping it on the device and indexing shuffled batches from it costs far
less per step than a DataLoader that converts images one by one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import MNIST

from gan.config import DataConfig
from gan.errors import GanError

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _missing_message(root: Path, reason: str) -> str:
    raw = (root / "MNIST" / "raw").resolve()
    return (
        f"MNIST was not found under {raw} ({reason}); put the four IDX files ({', '.join(IDX_FILES)}) "
        f"in that folder, or point data.root (or the DATA_ROOT environment variable) at a folder holding MNIST/raw/."
    )


def load_mnist(root: str | Path, download: bool, train: bool = True) -> MNIST:
    """Open torchvision's MNIST under ``root``, downloading only when allowed and needed."""
    root = Path(root)
    try:
        return MNIST(root, train=train, download=False)
    except RuntimeError as not_found:
        if not download:
            raise GanError(_missing_message(root, "data.download is false")) from not_found
    try:
        return MNIST(root, train=train, download=True)
    except Exception as err:  # any network or disk failure of the download means the same to the user
        raise GanError(_missing_message(root, f"download failed: {err}".rstrip("."))) from err


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 28, 28) -> float (N, 1, 28, 28) in [-1, 1], as ToTensor + Normalize(0.5, 0.5)."""
    return images.unsqueeze(1).float().div_(127.5).sub_(1.0)


def training_images(cfg: DataConfig, device: torch.device) -> torch.Tensor:
    """The training set (or its first ``cfg.subset`` images) on ``device``, scaled to [-1, 1]."""
    dataset = load_mnist(cfg.root, cfg.download, train=True)
    images = dataset.data if cfg.subset is None else dataset.data[: cfg.subset]
    if cfg.batch_size > len(images):
        raise GanError(
            f"data.batch_size={cfg.batch_size} is larger than the {len(images)} training images; "
            f"use a batch size of at most {len(images)}."
        )
    return to_unit_range(images).to(device)
