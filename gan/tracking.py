"""Weights & Biases tracking that never stops or stalls training.

Every W&B call is guarded: if the service cannot start, an online run falls back to offline; if a log
call fails, tracking stops with one warning and training goes on.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import torch

from gan.config import WandbConfig

log = logging.getLogger(__name__)


def _has_api_key() -> bool:
    """Whether W&B can authenticate without prompting: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class Tracker(Protocol):
    """Where a run's scalars, grids and checkpoints go besides the run directory."""

    run_id: str | None

    def log(self, values: dict[str, float], step: int) -> None: ...

    def log_grid(self, grid: torch.Tensor, step: int) -> None: ...

    def log_checkpoint(self, path: Path, epoch: int) -> None: ...

    def finish(self, exit_code: int) -> None: ...


class NoTracker:
    """The tracker of a run with ``wandb.mode=disabled``: records nothing."""

    run_id = None

    def log(self, values: dict[str, float], step: int) -> None:
        pass

    def log_grid(self, grid: torch.Tensor, step: int) -> None:
        pass

    def log_checkpoint(self, path: Path, epoch: int) -> None:
        pass

    def finish(self, exit_code: int) -> None:
        pass


class WandbTracker:
    """One W&B run: scalars and uint8 sample grids against the global step, checkpoints as artifacts."""

    def __init__(self, run: Any, log_checkpoints: bool) -> None:
        self.run = run
        self.log_checkpoints = log_checkpoints

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def _guarded(self, action: str, call: Any) -> None:
        if self.run is None:
            return
        try:
            call()
        except Exception as err:  # tracking must never end a training run
            log.warning("W&B %s failed (%s); tracking is off for the rest of this run", action, err)
            self.run = None

    def log(self, values: dict[str, float], step: int) -> None:
        self._guarded("log", lambda: self.run.log(values, step=step))

    def log_grid(self, grid: torch.Tensor, step: int) -> None:
        import wandb

        # uint8 HWC: W&B casts floats to uint8 without scaling, which would log [0, 1] grids as black.
        image = grid.permute(1, 2, 0).contiguous().numpy()
        self._guarded("image log", lambda: self.run.log({"samples": wandb.Image(image)}, step=step))

    def log_checkpoint(self, path: Path, epoch: int) -> None:
        if not self.log_checkpoints:
            return
        import wandb

        def upload() -> None:
            artifact = wandb.Artifact(f"checkpoint-{self.run.id}", type="model", metadata={"epoch": epoch})
            artifact.add_file(str(path), name=path.name)
            self.run.log_artifact(artifact, aliases=[f"epoch-{epoch}", "latest"])

        self._guarded("checkpoint upload", upload)

    def finish(self, exit_code: int) -> None:
        self._guarded("finish", lambda: self.run.finish(exit_code=exit_code))
        self.run = None


def start_wandb(
    cfg: WandbConfig,
    run_dir: Path,
    config: dict[str, Any],
    name: str | None = None,
    group: str | None = None,
    resume_id: str | None = None,
) -> Tracker:
    """Start (or, given ``resume_id``, continue) a W&B run writing under ``run_dir``; a no-op tracker when disabled."""
    if cfg.mode == "disabled":
        return NoTracker()
    import wandb

    mode = cfg.mode
    if mode == "online" and not _has_api_key():
        log.warning("wandb.mode=online but no W&B API key is set (WANDB_API_KEY or `wandb login`); logging offline instead")
        mode = "offline"
    kwargs = dict(
        project=cfg.project, entity=cfg.entity, group=cfg.group or group, name=cfg.name or name,
        tags=list(cfg.tags), config=config, dir=str(run_dir), id=resume_id, resume="allow" if resume_id else None,
        # A fresh run per Hydra job even when multirun jobs share this process.
        reinit="create_new",
        settings=wandb.Settings(init_timeout=cfg.init_timeout, console="off"),
    )
    for attempt in ((mode,) if mode == "offline" else (mode, "offline")):
        try:
            return WandbTracker(wandb.init(mode=attempt, **kwargs), cfg.log_checkpoints)
        except Exception as err:
            log.warning("W&B could not start in %s mode (%s)%s", attempt, str(err).splitlines()[0] if str(err) else type(err).__name__,
                        "; trying offline" if attempt == "online" else "; training without W&B")
    return NoTracker()
