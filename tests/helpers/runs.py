"""Configs composed the way train.py composes them, quick training runs, scripts run as a user runs them, and checkpoint comparisons."""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from gan.checkpoint import load_checkpoint
from gan.config import CONF_DIR, Config, compose
from gan.run import train
from gan.rundir import write_launch_record
from helpers.mnist_files import real_mnist_root

REPO = Path(__file__).resolve().parents[2]
CONF = CONF_DIR
WEIGHTS = ("generator", "discriminator", "generator_ema")
TRAINING_STATE = (*WEIGHTS, "opt_g", "opt_d", "scaler_g", "scaler_d", "rng")
NEEDS_REAL_MNIST = pytest.mark.skipif(real_mnist_root() is None, reason="needs the real MNIST files (DATA_ROOT)")

# The debug preset (CPU, no W&B, no evaluation) on all of a test's data, at batch 64: the tiny data sets
# of these tests (256 images) then give 4 steps an epoch. train.py subprocesses of the tests pass the same.
QUICK_OVERRIDES = ("debug=default", "data.subset=null", "data.batch_size=64")
# Evaluation after every epoch, on few samples: the evaluator's path, quickly.
EVALUATED = ("eval.enabled=true", "eval.every=1", "eval.n_samples=64", "eval.final_n_samples=128")


def compose_config(*overrides: str, config_name: str = "config", hydra: bool = False):
    """The composed, not yet validated config (with Hydra's own node when ``hydra``), for tests of composition itself."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)


@functools.cache
def _composed(*overrides: str) -> Config:
    return compose(*overrides)  # composing takes ~0.4 s; callers get a copy they may change


def config(*overrides: str) -> Config:
    """The validated config of ``python train.py OVERRIDES``."""
    return copy.deepcopy(_composed(*overrides))


def quick_config(data_root: Path, *overrides: str) -> Config:
    """A validated config of QUICK_OVERRIDES on the given data root."""
    return config(*QUICK_OVERRIDES, f"data.root={data_root}", *overrides)


def run_quick(data_root: Path, run_dir: Path, *overrides: str, **names: Any) -> dict[str, float]:
    return train(quick_config(data_root, *overrides), run_dir, **names)


def last_checkpoint(run_dir: Path) -> dict[str, Any]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def script_env(data_root: Path | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a test starts the repo's scripts in (the W&B sandbox of conftest.py included), with ``extra`` set."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(extra or {})}
    if data_root is not None:
        env["DATA_ROOT"] = str(data_root)
    return env


def script_command(*args: str) -> list[str]:
    return [sys.executable, *args]


def run_script(*args: str, data_root: Path | None = None, timeout: int = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run one of the repo's scripts (train.py, sample.py, report.py, ...) to its end, as a user would (``env``: variables to set)."""
    return subprocess.run(script_command(*args), cwd=REPO, env=script_env(data_root, env), capture_output=True, text=True, timeout=timeout)


def start_script(*args: str, data_root: Path | None = None) -> subprocess.Popen:
    """Start one of the repo's scripts and return at once (for signals and concurrent runs)."""
    return subprocess.Popen(script_command(*args), cwd=REPO, env=script_env(data_root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished_run(run_dir: Path, *overrides: str, fid: float | None = None, recall: float = 0.0, shares: list[float] | None = None,
                 wandb: dict[str, Any] | None = None, status: str | None = "finished", epoch: int = 50) -> None:
    """A run directory as train.py leaves it, holding only what report.py reads: the overrides, the composed
    config, its status, and (when given) the final evaluation and the tracker's wandb.json. Called again on
    the same folder, it is a later launch of that run (resume=auto epochs=100): its record goes to
    ``.hydra/launches/NNN/`` and its status and evaluation replace the earlier ones."""
    hydra = compose_config(*overrides, hydra=True).hydra  # the parts of Hydra's record that report.py reads
    exclude_keys = list(hydra.job.config.override_dirname.exclude_keys)
    hydra_record = {"hydra": {"runtime": {"choices": OmegaConf.to_container(hydra.runtime.choices)},
                              "job": {"config": {"override_dirname": {"exclude_keys": exclude_keys}}}}}
    composed = compose_config(*overrides)
    write_launch_record(run_dir, {"overrides.yaml": OmegaConf.to_yaml(list(overrides)), "hydra.yaml": OmegaConf.to_yaml(hydra_record),
                                  "config.yaml": OmegaConf.to_yaml(composed)})
    if status is not None:
        (run_dir / "status.json").write_text(json.dumps({"status": status, "epoch": epoch, "epochs": composed.epochs, "reason": None}))
    if fid is not None:
        shares = shares or [0.1] * 10
        scores = {"fid": fid, "recall": recall, "precision": 0.75, "classes_over_5pct": sum(s >= 0.05 for s in shares),
                  **{f"class_{digit}": share for digit, share in enumerate(shares)}}
        (run_dir / "eval.json").write_text(json.dumps({"epoch": epoch, "ema": scores, "raw": scores}))
    if wandb is not None:
        (run_dir / "wandb.json").write_text(json.dumps(wandb))


def assert_same_tensors(a: Any, b: Any, path: str = "") -> None:
    """Equal to the bit: tensors by torch.equal, containers element by element."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"tensors differ at {path}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"keys differ at {path}: {sorted(a)} vs {sorted(b)}"
        for key in a:
            assert_same_tensors(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"lengths differ at {path}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{path}/{i}")
    else:
        assert a == b, f"values differ at {path}: {a!r} vs {b!r}"


def assert_same_training_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in TRAINING_STATE:
        assert_same_tensors(a[key], b[key], key)
