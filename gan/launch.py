"""What train.py does as a Hydra job: check the config, hand it to gan/run.py (which owns the run
directory: its lock, the launch's record and status.json), and turn every failure into one sentence and
an exit code.

Nothing is written into a run directory before its lock is held and its config is valid (Hydra's own
``.hydra/`` output is off: see conf/config.yaml), so a refused launch leaves an existing run as it was.
In a multirun a failed job is recorded (its status.json and train.log say why, and the sweep folder's
``failed_jobs.jsonl`` names it) and the sweep goes on to the next job; :class:`LaunchChecks` then ends the
multirun with exit code 1 and a line per failed job. A stop request (Ctrl-C, SIGTERM) ends the whole sweep.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gan.config import check_group_choices, to_config
from gan.errors import GanError, exit_with
from gan.run import refuse, train
from gan.rundir import RunState
from gan.signals import TrainingInterrupted
from gan.study import TRIAL_FILE, TrialReport, open_trial

log = logging.getLogger(__name__)
FAILED_JOBS = "failed_jobs.jsonl"


def _log_to_files(message: str) -> None:
    """Put ``message`` in the run's log files (train.log) only: the console gets it once, on stderr."""
    record = logging.LogRecord("train", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _record_files(cfg: DictConfig, hydra_cfg: DictConfig) -> dict[str, str]:
    """The launch's record, as Hydra would write it: the composed config, Hydra's own config, the overrides."""
    return {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})),
            "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.overrides.task)}


def _tracking_names(cfg: DictConfig, hydra_cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """W&B's run name (the overrides that make the run different), group (a multirun's folder) and swept values."""
    excluded = set(hydra_cfg.job.config.override_dirname.exclude_keys)
    keys = [o.split("=", 1)[0].lstrip("+~") for o in hydra_cfg.overrides.task if "=" in o]
    # A group choice (model=large) is recorded by its name; a value (optim.lr=0.0001) as composed.
    values = {k: hydra_cfg.runtime.choices.get(k) or OmegaConf.select(cfg, k) for k in keys if k not in excluded}
    return {"run_name": hydra_cfg.job.override_dirname or "defaults",
            "run_group": str(run_dir.parent) if hydra_cfg.mode == RunMode.MULTIRUN else None,
            "swept": {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in values.items()}}


def launch(cfg: DictConfig) -> float | None:
    """Run one Hydra job of train.py; returns the final FID (EMA). A trial of an Optuna study (hydra/sweeper=optuna)
    also reports its evaluations to the study and tells it how it ended."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    record = _record_files(cfg, hydra_cfg)
    trial: TrialReport | None = None
    try:
        try:
            trial = open_trial(hydra_cfg.get("sweeper"))  # first, so that a trial whose config is refused says why in the study
            config = to_config(cfg)
            check_group_choices(hydra_cfg.overrides.task, hydra_cfg.runtime.choices)
        except GanError as err:
            refuse(run_dir, record, RunState("failed", 0, cfg.get("epochs"), str(err)))
            raise
        names = _tracking_names(cfg, hydra_cfg, run_dir)
        hooks: tuple[Any, ...] = ()
        tags: tuple[str, ...] = ()
        if trial is not None:
            record[TRIAL_FILE] = _trial_record(trial)
            names["swept"]["trial"] = trial.number
            hooks, tags = (trial,), (f"trial:{trial.number}",)
        final = train(config, run_dir, record=record, extra_hooks=hooks, tags=tags, **names)
        if trial is not None:
            trial.finish(final)
        return final.get("fid")
    except KeyboardInterrupt:  # before train() took the run directory: nothing of this launch is there yet
        return _report(TrainingInterrupted(f"interrupted before training started; nothing was trained, and {run_dir} is as it was.",
                                           signal.SIGINT), hydra_cfg, run_dir)
    except GanError as err:
        if trial is not None and not isinstance(err, TrainingInterrupted):  # a stopped trial is the sweeper's to retry
            trial.finish(None, error=str(err))
        return _report(err, hydra_cfg, run_dir)


def _trial_record(trial: TrialReport) -> str:
    """.hydra/trial.json, beside the launch's config: which study and trial this job is, and the parameters the study chose."""
    return json.dumps({"study": trial.settings.study_name, "storage": trial.settings.storage,
                       "trial": trial.number, "params": trial.trial.params}, indent=2) + "\n"


def _report(err: GanError, hydra_cfg: DictConfig, run_dir: Path) -> None:
    """Say why the job ended, in train.log and on stderr, and exit with its code; in a multirun a failed job is
    recorded instead and the sweep goes on (a stop request still ends the whole sweep)."""
    _log_to_files(f"error: {err}")
    if hydra_cfg.mode != RunMode.MULTIRUN or isinstance(err, TrainingInterrupted):
        exit_with(err)
    print(f"error: job {hydra_cfg.job.num} ({' '.join(hydra_cfg.overrides.task)}): {err}", file=sys.stderr)
    with open(run_dir.parent / FAILED_JOBS, "a") as failed:
        failed.write(json.dumps({"time": time.time(), "job": hydra_cfg.job.num, "dir": str(run_dir),
                                 "overrides": list(hydra_cfg.overrides.task), "reason": str(err)}) + "\n")


def _usable_folder(path: Path, key: str) -> None:
    """Create ``path`` (a run or sweep folder) now, or exit with one sentence, before Hydra tries and fails with a traceback."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = "a file is in the way" if isinstance(err, (FileExistsError, NotADirectoryError)) else (err.strerror or str(err))
        print(f"error: cannot create the folder {path} ({reason}); pass a writable folder with {key}=PATH.", file=sys.stderr)
        sys.exit(1)


class LaunchChecks(Callback):
    """Hydra callbacks of train.py: a usable output folder before Hydra writes there, and a multirun's exit code."""

    def __init__(self) -> None:
        self.started = 0.0

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _usable_folder(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        _usable_folder(Path(config.hydra.sweep.dir), "hydra.sweep.dir")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(config.hydra.sweep.dir) / FAILED_JOBS
        failed = []
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    job = json.loads(line)
                except ValueError:
                    continue
                if job.get("time", 0) >= self.started:
                    failed.append(job)
        if failed:
            lines = [f"  job {job['job']} ({' '.join(job['overrides'])}): {job['reason']}" for job in failed]
            print(f"error: {len(failed)} job(s) of this sweep failed (the others ran; `python report.py "
                  f"{config.hydra.sweep.dir}` lists every job):\n" + "\n".join(lines), file=sys.stderr)
            sys.exit(1)
