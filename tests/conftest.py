"""Shared fixtures: tiny MNIST IDX files and a helper that composes the real Hydra config."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
sys.path.insert(0, str(REPO))

from gan.config import Config, to_config  # noqa: E402
from gan.training import train  # noqa: E402


def write_idx_images(path: Path, images: torch.Tensor) -> None:
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">IIII", 0x803, n, rows, cols) + images.to(torch.uint8).numpy().tobytes())


def write_idx_labels(path: Path, labels: torch.Tensor) -> None:
    path.write_bytes(struct.pack(">II", 0x801, len(labels)) + labels.to(torch.uint8).numpy().tobytes())


def make_tiny_mnist(root: Path, n_train: int = 256, n_test: int = 64, seed: int = 0) -> Path:
    """Write the four canonical IDX files, filled with random digits-shaped noise, under root/MNIST/raw."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = torch.Generator().manual_seed(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), generator=rng))
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", torch.randint(0, 10, (n,), generator=rng))
    return root


@pytest.fixture(autouse=True, scope="session")
def wandb_sandbox(tmp_path_factory: pytest.TempPathFactory):
    """W&B never touches the home directory, the network or the console during tests."""
    home = tmp_path_factory.mktemp("wandb-home")
    saved = dict(os.environ)
    os.environ.update(WANDB_DIR=str(home), WANDB_CACHE_DIR=str(home / "cache"), WANDB_CONFIG_DIR=str(home / "config"),
                      WANDB_DATA_DIR=str(home / "data"), WANDB_SILENT="true", WANDB_CONSOLE="off",
                      WANDB_ERROR_REPORTING="false", NETRC=str(home / "no-netrc"))
    os.environ.pop("WANDB_API_KEY", None)
    os.environ.pop("WANDB_MODE", None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_mnist(tmp_path_factory.mktemp("mnist"))


def compose_config(*overrides: str, config_name: str = "config"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


# Few, quick steps; W&B and evaluation off unless a test turns them on.
FAST = ("device=cpu", "grid_size=16", "train.log_every=2", "wandb.mode=disabled", "eval.enabled=false")


def quick_config(data_root: Path, *overrides: str) -> Config:
    """A validated config for a few-step CPU run on the given data root."""
    return to_config(compose_config(f"data.root={data_root}", *FAST, *overrides))


def run_quick(data_root: Path, run_dir: Path, *overrides: str) -> dict[str, float]:
    return train(quick_config(data_root, *overrides), run_dir)


def real_mnist_root() -> Path | None:
    root = os.environ.get("DATA_ROOT")
    if root and (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        return Path(root)
    return None
