"""Weights & Biases tracking that never stops or stalls training.

``wandb.mode=auto`` (the default) goes online when this machine has W&B credentials and offline
otherwise; see :func:`resolve_mode`. Every W&B call goes through one guard: if the service cannot
start, an online run falls back to offline; if a call fails, tracking stops with one warning and
training goes on.

What a run puts in the dashboard: the step scalars against the global step; every evaluation metric
against ``epoch`` (``eval/ema/*`` for G-EMA, ``eval/raw/*`` for G) with the digit shares as a bar
chart; in the summary, the final G-EMA metrics and the best FID with its epoch (the columns of a
sweep's runs table; a conditional run adds its label accuracy and intra-class FID); the fixed-noise
grids, their animation and a table of classified samples (with the digit asked for, in a conditional run).
"""

from __future__ import annotations

import json
import logging
import netrc
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np
import torch

from gan.columns import DIGITS, SUMMARY_METRICS
from gan.config import WandbConfig

log = logging.getLogger(__name__)

DEFAULT_HOST = "https://api.wandb.ai"
WANDB_MODE_ALIASES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}
# The runs table's columns, as final/*; the last two only in conditional runs.


def has_netrc_entry(environ: Mapping[str, str]) -> bool:
    """Whether `wandb login` left an entry for the configured W&B host in the netrc file."""
    host = urlparse(environ.get("WANDB_BASE_URL", DEFAULT_HOST)).hostname or "api.wandb.ai"
    path = environ.get("NETRC") or os.path.join(environ.get("HOME", os.path.expanduser("~")), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The W&B mode a run starts in, and why, from ``wandb.mode`` and the environment (no network).

    auto: ``WANDB_MODE`` when the user set it; else online with a ``WANDB_API_KEY`` or a netrc entry
    for the host (what `wandb login` writes); else offline. online without credentials goes offline
    instead of prompting. offline and disabled are taken as they are.
    """
    environ = os.environ if environ is None else environ
    has_key = bool(environ.get("WANDB_API_KEY")) or has_netrc_entry(environ)
    if mode == "auto":
        user_mode = environ.get("WANDB_MODE", "").strip().lower()
        if user_mode in WANDB_MODE_ALIASES:
            return WANDB_MODE_ALIASES[user_mode], f"WANDB_MODE={user_mode}"
        if environ.get("WANDB_API_KEY"):
            return "online", "WANDB_API_KEY is set"
        if has_key:
            return "online", "`wandb login` credentials were found"
        return "offline", "no W&B credentials (WANDB_API_KEY or `wandb login`)"
    if mode == "online" and not has_key:
        return "offline", "wandb.mode=online but no W&B credentials (WANDB_API_KEY or `wandb login`)"
    return mode, f"wandb.mode={mode}"


class Tracker(Protocol):
    """Where a run's scalars, evaluations and media go besides the run directory."""

    run_id: str | None

    def log(self, values: dict[str, float], step: int) -> None: ...

    def log_grid(self, grid: torch.Tensor, step: int) -> None: ...

    def log_evaluation(self, results: dict[str, dict[str, float]], epoch: int, step: int, best: tuple[float, int]) -> None: ...

    def log_samples(self, rows: list[tuple[str, np.ndarray, str | None, str, float]], step: int) -> None: ...

    def log_progress(self, gif: Path, step: int) -> None: ...

    def log_checkpoint(self, path: Path, epoch: int) -> None: ...

    def finish(self, exit_code: int) -> None: ...


class WandbTracker:
    """One W&B run (or none: then every call does nothing). Each call is guarded."""

    def __init__(self, run: Any = None, log_checkpoints: bool = False) -> None:
        self.run = run
        self.log_checkpoints = log_checkpoints
        self.sync_command: str | None = None  # how to upload an offline run, said when it finishes

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def _guarded(self, action: str, call: Callable[[], Any]) -> None:
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
        def send() -> None:
            import wandb

            # uint8 HWC: W&B casts floats to uint8 without scaling, which would log [0, 1] grids as black.
            self.run.log({"samples": wandb.Image(grid.permute(1, 2, 0).contiguous().numpy())}, step=step)

        self._guarded("image log", send)

    def log_evaluation(self, results: dict[str, dict[str, float]], epoch: int, step: int, best: tuple[float, int]) -> None:
        """Metrics of each scored generator against ``epoch``, digit shares as bars; final and best in the summary."""
        def send() -> None:
            import wandb

            values: dict[str, Any] = {"epoch": epoch}
            for name, scores in results.items():
                values.update({f"eval/{name}/{key}": value for key, value in scores.items()})
                shares = wandb.Table(columns=["digit", "share"], data=[[str(d), scores[f"class_{d}"]] for d in range(DIGITS)])
                values[f"eval/{name}/digit_shares"] = wandb.plot.bar(shares, "digit", "share", title=f"digit shares, G-{name} (epoch {epoch})")
            self.run.log(values, step=step)
            ema = results["ema"]
            digit_shares = [ema[f"class_{d}"] for d in range(DIGITS)]
            self.run.summary.update({
                **{f"final/{key}": ema[key] for key in SUMMARY_METRICS if key in ema},
                "final/digit_min": min(digit_shares), "final/digit_max": max(digit_shares), "final/epoch": epoch,
                "best/fid": best[0], "best/epoch": best[1],
            })

        self._guarded("evaluation log", send)

    def log_samples(self, rows: list[tuple[str, np.ndarray, str | None, str, float]], step: int) -> None:
        """A table of (generator, image, [requested digit,] predicted digit, confidence) rows, filterable by digit."""
        def send() -> None:
            import wandb

            conditional = any(requested is not None for _, _, requested, _, _ in rows)
            table = wandb.Table(columns=["generator", "image", *(["requested"] if conditional else []), "digit", "confidence"])
            for generator, image, requested, digit, confidence in rows:
                table.add_data(generator, wandb.Image(image), *([requested] if conditional else []), digit, confidence)
            self.run.log({"samples_table": table}, step=step)

        self._guarded("samples table", send)

    def log_progress(self, gif: Path, step: int) -> None:
        def send() -> None:
            import wandb

            self.run.log({"progress": wandb.Video(str(gif), format="gif")}, step=step)

        self._guarded("progress animation", send)

    def log_checkpoint(self, path: Path, epoch: int) -> None:
        if not self.log_checkpoints:
            return

        def upload() -> None:
            import wandb

            artifact = wandb.Artifact(f"checkpoint-{self.run.id}", type="model", metadata={"epoch": epoch})
            artifact.add_file(str(path), name=path.name)
            self.run.log_artifact(artifact, aliases=[f"epoch-{epoch}", "latest"])

        self._guarded("checkpoint upload", upload)

    def finish(self, exit_code: int) -> None:
        self._guarded("finish", lambda: self.run.finish(exit_code=exit_code))
        self.run = None
        if self.sync_command:
            log.info("this W&B run is offline; upload it with: %s", self.sync_command)


def NoTracker() -> WandbTracker:  # noqa: N802 - reads as the class it stands for
    """The tracker of a run without W&B: every call does nothing."""
    return WandbTracker(None)


def _describe(run: Any, mode: str) -> dict[str, Any]:
    """What report.py shows of a run: its group, and its dashboard URL or the command that uploads it."""
    sync_dir = Path(run.dir).parent  # <run dir>/wandb/<offline-run-...>/files -> the run's folder
    return {"id": run.id, "mode": mode, "project": run.project, "group": run.group or None,
            "url": run.url if mode == "online" else None, "sync_command": f"wandb sync {sync_dir}" if mode == "offline" else None}


def start_wandb(
    cfg: WandbConfig,
    run_dir: Path,
    config: dict[str, Any],
    name: str | None = None,
    group: str | None = None,
    resume_id: str | None = None,
    job_type: str = "train",
    tags: tuple[str, ...] = (),
) -> WandbTracker:
    """Start (or, given ``resume_id``, continue) a W&B run writing under ``run_dir``; a no-op tracker when disabled.

    Writes ``run_dir/wandb.json`` (run id, mode, group, URL or sync command) for report.py.
    """
    mode, reason = resolve_mode(cfg.mode)
    if mode == "disabled":
        return NoTracker()
    if mode != cfg.mode:  # a warning when it overrules what the user asked for
        (log.warning if cfg.mode == "online" else log.info)("W&B: %s, so this run logs %s", reason, mode)
    import wandb

    kwargs = dict(
        project=cfg.project, entity=cfg.entity, group=cfg.group or group, name=cfg.name or name, job_type=job_type,
        tags=[*cfg.tags, *tags], config=config, dir=str(run_dir), id=resume_id, resume="allow" if resume_id else None,
        # A fresh run per Hydra job even when multirun jobs share this process.
        reinit="create_new",
        settings=wandb.Settings(init_timeout=cfg.init_timeout, console="off"),
    )
    run, started_mode = None, mode
    for started_mode in ((mode,) if mode == "offline" else (mode, "offline")):
        try:
            run = wandb.init(mode=started_mode, **kwargs)
            break
        except Exception as err:
            log.warning("W&B could not start in %s mode (%s)%s", started_mode, str(err).splitlines()[0] if str(err) else type(err).__name__,
                        "; trying offline" if started_mode == "online" else "; training without W&B")
    tracker = WandbTracker(run, cfg.log_checkpoints)
    description: dict[str, Any] = {}

    def describe() -> None:
        description.update(_describe(run, started_mode))
        run.define_metric("epoch")
        run.define_metric("eval/*", step_metric="epoch")

    tracker._guarded("start", describe)
    if description:
        tracker.sync_command = description["sync_command"]
        (run_dir / "wandb.json").write_text(json.dumps(description, indent=2) + "\n")
    return tracker
