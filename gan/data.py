"""MNIST from its four IDX files, checked, and kept as tensors (images and labels) on the training device.

The files are read from ``<root>/MNIST/raw/`` (torchvision's layout; a root that points at ``MNIST/`` or
at ``MNIST/raw/`` itself is understood too) without importing torchvision, whose import is a noticeable
part of a run's start-up (docs/speed.md); torchvision is used only to download missing files. A file
is checked before it is used: its length against its own header and, for the canonical MNIST files,
its MD5 against the published one, so a damaged file is named as damaged instead of read as garbage.

MNIST is 47 MB as float32: on the device, indexing shuffled batches from one tensor costs far less
per step than a DataLoader that converts images one by one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import struct
from pathlib import Path
from typing import NamedTuple

import torch

from gan.config import DataConfig
from gan.errors import GanError

log = logging.getLogger(__name__)

# MD5 and size of the uncompressed canonical files (torchvision publishes the MD5s of the .gz archives,
# and checks those when it downloads).
CANONICAL = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47040016),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60008),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7840016),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10008),
}
IDX_FILES = tuple(CANONICAL)
CANONICAL_COUNTS = {"train": 60000, "t10k": 10000}


class MnistSplit(NamedTuple):
    images: torch.Tensor  # uint8 (N, 28, 28) as read; float (N, 1, 28, 28) in [-1, 1] from training_data
    labels: torch.Tensor  # int64 (N,)


def raw_folder(root: str | Path) -> Path:
    """Where the IDX files are: ``root/MNIST/raw`` (torchvision's layout), or ``root/raw`` or ``root`` itself
    when they are there (a root that points one or two levels too deep); else ``root/MNIST/raw``."""
    root = Path(root)
    canonical = root / "MNIST" / "raw"
    for folder in (canonical, root / "raw", root):
        if any((folder / name).is_file() for name in IDX_FILES):
            if folder != canonical:
                log.info("MNIST's IDX files are in %s itself: data.root could point at %s", folder, folder.parent.parent
                         if folder == root else root.parent)
            return folder
    return canonical


def _missing_message(raw: Path, reason: str) -> str:
    return (
        f"MNIST was not found under {raw.resolve()} ({reason}); put the four IDX files ({', '.join(IDX_FILES)}) "
        f"in that folder, or point data.root (or the DATA_ROOT environment variable) at a folder holding MNIST/raw/."
    )


def _damaged(path: Path, reason: str) -> GanError:
    return GanError(
        f"the MNIST file {path} is damaged ({reason}); delete it and run again with data.download=true to fetch "
        f"it anew, or replace it with a good copy of {path.name}."
    )


def read_idx(path: Path) -> torch.Tensor:
    """An unsigned-byte IDX file as a uint8 tensor, after checking its length and (if canonical) its MD5."""
    data = path.read_bytes()
    if len(data) < 8 or data[:2] != b"\0\0" or data[2] != 0x08 or not 1 <= data[3] <= 3:
        raise _damaged(path, "it does not start with an unsigned-byte IDX header")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims)
    if len(data) != expected:
        raise _damaged(path, f"{len(data):,} bytes where its header promises {expected:,}: truncated or corrupt")
    published = CANONICAL.get(path.name)
    if published and dims[0] == CANONICAL_COUNTS[path.name.split("-")[0]]:
        digest = hashlib.md5(data).hexdigest()
        if digest != published[0]:
            raise _damaged(path, f"MD5 {digest} instead of the published {published[0]}")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).view(*dims)


def _download(raw: Path, names: list[str]) -> None:
    """Fetch the named files (only those) with torchvision's mirrors and archive checksums; a failed download
    removes the folders it created, so nothing is left in the user's data folder."""
    from torchvision.datasets import MNIST
    from torchvision.datasets import utils as download_utils

    created = [folder for folder in (raw, *raw.parents) if not folder.exists()]
    archives = dict(MNIST.resources)
    for name in names:
        archive = f"{name}.gz"
        for mirror in MNIST.mirrors:
            try:
                download_utils.download_and_extract_archive(mirror + archive, download_root=str(raw), filename=archive, md5=archives[archive])
                break
            except Exception as err:  # any network or disk failure means the same to the user: try the next mirror
                failure = err
        else:
            for folder in created:  # deepest first; only the empty ones this download made
                (folder / archive).unlink(missing_ok=True)
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            raise GanError(_missing_message(raw, f"download failed: {failure}".rstrip("."))) from failure


def load_mnist(root: str | Path, download: bool, train: bool = True) -> MnistSplit:
    """The training or test split under ``root``, downloading missing files only when allowed."""
    raw = raw_folder(root)
    prefix = "train" if train else "t10k"
    names = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    missing = [name for name in names if not (raw / name).is_file()]
    if missing and not download:
        raise GanError(_missing_message(raw, "data.download is false"))
    if missing:
        _download(raw, missing)
    images, labels = (read_idx(raw / name) for name in names)
    if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
        raise GanError(f"the MNIST files in {raw} do not belong together ({tuple(images.shape)} images, "
                       f"{tuple(labels.shape)} labels); replace them with the four canonical IDX files.")
    return MnistSplit(images, labels.long())


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 28, 28) -> float (N, 1, 28, 28) in [-1, 1], as ToTensor + Normalize(0.5, 0.5)."""
    return images.unsqueeze(1).float().div_(127.5).sub_(1.0)


def training_data(cfg: DataConfig, device: torch.device) -> MnistSplit:
    """The training set (or its first ``cfg.subset`` images) on ``device``: images scaled to [-1, 1], and their labels."""
    images, labels = load_mnist(cfg.root, cfg.download, train=True)
    if cfg.subset is not None:
        if cfg.subset > len(images):
            log.warning("data.subset=%d is more than the %d training images: training on all %d", cfg.subset, len(images), len(images))
        images, labels = images[: cfg.subset], labels[: cfg.subset]
    if cfg.batch_size > len(images):
        raise GanError(
            f"data.batch_size={cfg.batch_size} is larger than the {len(images)} training images; "
            f"use a batch size of at most {len(images)}."
        )
    return MnistSplit(to_unit_range(images).to(device), labels.to(device))
