"""Configs composed the way train.py composes them, quick training runs, and checkpoint comparisons."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gan.checkpoint import load_checkpoint
from gan.config import Config, to_config
from gan.trainer import train

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
WEIGHTS = ("generator", "discriminator", "generator_ema")
TRAINING_STATE = (*WEIGHTS, "opt_g", "opt_d", "scaler_g", "scaler_d", "rng")


def compose_config(*overrides: str, config_name: str = "config", hydra: bool = False):
    """The composed (not yet validated) config, from conf/ with these command-line overrides."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)


@functools.cache
def _composed_quick_config(*overrides: str):
    return compose_config(*overrides)  # composing takes ~0.4 s; to_config below builds fresh objects every time


# The debug preset (CPU, no W&B, no evaluation) on all of a test's data, at batch 64: the tiny data sets
# of these tests (256 images) then give 4 steps an epoch. train.py subprocesses of the tests pass the same.
QUICK_OVERRIDES = ("debug=default", "data.subset=null", "data.batch_size=64")


def quick_config(data_root: Path, *overrides: str) -> Config:
    """A validated config of QUICK_OVERRIDES on the given data root."""
    return to_config(_composed_quick_config(*QUICK_OVERRIDES, f"data.root={data_root}", *overrides))


def run_quick(data_root: Path, run_dir: Path, *overrides: str, **names: str) -> dict[str, float]:
    return train(quick_config(data_root, *overrides), run_dir, **names)


def last_checkpoint(run_dir: Path) -> dict[str, Any]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def run_script(*args: str, data_root: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run one of the repo's scripts (train.py, sample.py, report.py, ...) as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if data_root is not None:
        env["DATA_ROOT"] = str(data_root)
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def finished_run(run_dir: Path, *overrides: str, fid: float | None = None, recall: float = 0.0,
                 shares: list[float] | None = None, wandb: dict[str, Any] | None = None) -> None:
    """A run directory as train.py leaves it, holding only what report.py reads: the overrides, the
    composed config, and (when given) the final evaluation and the tracker's wandb.json."""
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(list(overrides)), run_dir / ".hydra" / "overrides.yaml")
    exclude_keys = OmegaConf.load(REPO / "conf" / "config.yaml").hydra.job.config.override_dirname.exclude_keys
    OmegaConf.save(OmegaConf.create({"hydra": {"job": {"config": {"override_dirname": {"exclude_keys": exclude_keys}}}}}),
                   run_dir / ".hydra" / "hydra.yaml")
    OmegaConf.save(compose_config(*overrides), run_dir / ".hydra" / "config.yaml")
    if fid is not None:
        shares = shares or [0.1] * 10
        scores = {"fid": fid, "recall": recall, "precision": 0.75, "classes_over_5pct": sum(s >= 0.05 for s in shares),
                  **{f"class_{digit}": share for digit, share in enumerate(shares)}}
        (run_dir / "eval.json").write_text(json.dumps({"epoch": 50, "ema": scores, "raw": scores}))
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
