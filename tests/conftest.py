"""Fixtures: a W&B sandbox for every test, and tiny MNIST files written once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.mnist_files import make_tiny_mnist


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
