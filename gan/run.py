"""A training run, built around the loop: the locked run directory, the checkpoint it resumes, the
tracker, and the status it leaves (status.json: running, finished, stopped at epoch E of N, failed).

:func:`train` is the library entry point (train.py calls it through gan/launch.py; tests and notebooks
call it directly with a config from :func:`gan.config.compose`).
"""

from __future__ import annotations

import logging
import signal
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gan.checkpoint import resume_checkpoint
from gan.collapse import first_collapse
from gan.config import Config
from gan.errors import GanError
from gan.rundir import RunState, existing_run, locked_run_directory, record_refusal, write_launch_record, write_status
from gan.signals import TrainingInterrupted
from gan.tracking import start_wandb
from gan.trainer import Trainer

log = logging.getLogger(__name__)


def check_epochs(checkpoint: dict[str, Any], cfg: Config) -> bool:
    """Whether the resumed checkpoint leaves epochs to train; a checkpoint already past ``cfg.epochs`` is refused."""
    done, mid_epoch = checkpoint["epoch"], checkpoint.get("progress") is not None
    if done > cfg.epochs or (done == cfg.epochs and mid_epoch):
        raise GanError(f"the checkpoint to resume already has {done} epochs{' and part of the next' if mid_epoch else ''}, "
                       f"more than epochs={cfg.epochs}; pass epochs=N with N > {done} to train it further, "
                       f"or start a new run with another hydra.run.dir.")
    if done == cfg.epochs:
        log.info("the checkpoint to resume already has all %d epochs: nothing to train (pass epochs=N with N > %d to train further)",
                 done, done)
        return False
    return True


def check_run_directory(run_dir: Path, resume: str | None) -> None:
    """Refuse to start a new run in a folder that holds one: its checkpoints and metrics would be replaced or mixed."""
    held = existing_run(run_dir)
    if held is None or resume == "auto":
        return
    if resume is None:
        raise GanError(f"{run_dir} already holds {held}; continue it with resume=auto, or start over in a new folder "
                       f"(another hydra.run.dir, or none for a new dated one).")
    if Path(resume).resolve().parent != (run_dir / "checkpoints").resolve():
        raise GanError(f"{run_dir} already holds {held}, and resume={resume} is another run's checkpoint; "
                       f"continue that checkpoint in a new folder (hydra.run.dir=NEW resume={resume}).")


def refuse(run_dir: Path, record: dict[str, str] | None, state: RunState) -> None:
    """Record a launch that cannot start, holding the run directory: a new folder says why (its record and
    status.json); an existing run stays as it was."""
    with locked_run_directory(run_dir):
        record_refusal(run_dir, record, state)


def train(cfg: Config, run_dir: Path, run_name: str | None = None, run_group: str | None = None,
          swept: dict[str, Any] | None = None, record: dict[str, str] | None = None, extra_hooks: tuple[Any, ...] = (),
          tags: tuple[str, ...] = ()) -> dict[str, float]:
    """Train the GAN described by ``cfg`` into ``run_dir``, tracked in W&B; returns the last epoch's record.

    ``run_name`` and ``run_group`` name the W&B run unless ``cfg.wandb`` sets them; a run with a group is
    a sweep job (its job type and a tag say so). ``swept`` (e.g. {"optim.lr": 0.0001}) is also put at the
    top level of the W&B config, where the dashboard's group-by and parallel coordinates find it.
    ``record`` (file name -> YAML text) is the launch's record, written into ``.hydra/`` once the run can start.
    ``extra_hooks`` run after each epoch's evaluation (a study's trial report); ``tags`` go to the W&B run.
    """
    try:
        with locked_run_directory(run_dir):
            try:
                check_run_directory(run_dir, cfg.resume)
                checkpoint = resume_checkpoint(cfg.resume, run_dir / "checkpoints")
                if checkpoint is not None and not check_epochs(checkpoint, cfg):
                    return checkpoint["history"][-1] if checkpoint["history"] else {}
                trainer = Trainer(cfg, run_dir, checkpoint, extra_hooks)
            except GanError as err:
                record_refusal(run_dir, record, RunState("failed", 0, cfg.epochs, str(err)))
                raise
            except KeyboardInterrupt:  # while the data loads: nothing trained, no checkpoint written
                kept = "its checkpoints are as they were" if existing_run(run_dir) else "it holds no checkpoint"
                record_refusal(run_dir, record, RunState("stopped", 0, cfg.epochs, "interrupted before training started"))
                raise TrainingInterrupted(f"interrupted before training started; nothing was trained in {run_dir}, and {kept}: "
                                          f"run the same command again to start.", signal.SIGINT) from None
            if record is not None:
                write_launch_record(run_dir, record)
            write_status(run_dir, RunState("running", trainer.epoch, cfg.epochs))
            sweep_tags = ((f"sweep:{'/'.join(Path(run_group).parts[-2:])}"[:64],) if run_group else ()) + tags
            # "resolved": what device=auto and train.precision=auto came to on this machine, to compare runs by.
            resolved = {"resolved": {"device": trainer.device.type, "precision": trainer.gan_step.precision}}
            tracker = start_wandb(cfg.wandb, run_dir, {**asdict(cfg), **resolved, **(swept or {})}, run_name, run_group,
                                  resume_id=trainer.tracker_run_id, job_type="sweep" if run_group else "train", tags=sweep_tags)
            exit_code, state = 1, RunState("failed", trainer.epoch, cfg.epochs, "an unexpected error (see train.log)")
            try:
                result = trainer.fit(tracker)
                collapse = first_collapse(trainer.history)
                stopped = trainer.stopped
                exit_code, state = 0, RunState(stopped.status if stopped else "finished", trainer.epoch, cfg.epochs,
                                               stopped.reason if stopped else collapse.describe() if collapse else None)
                return result
            except TrainingInterrupted as stopped:
                exit_code, state = stopped.exit_code, RunState("stopped", trainer.epoch, cfg.epochs, str(stopped))
                raise
            except KeyboardInterrupt:  # a second Ctrl-C
                exit_code, state = 128 + signal.SIGINT, RunState("stopped", trainer.epoch, cfg.epochs, "a second Ctrl-C")
                raise TrainingInterrupted(
                    f"stopped at once by a second Ctrl-C at step {trainer.step}; {run_dir / 'checkpoints' / 'last.pt'} "
                    f"(the end of epoch {trainer.epoch} or the last stop) is kept: continue with resume=auto in this run directory.",
                    signal.SIGINT) from None
            except GanError as err:
                state = RunState("failed", trainer.epoch, cfg.epochs, str(err))
                raise
            finally:
                tracker.finish(exit_code)
                write_status(run_dir, state)
    except TrainingInterrupted as stopped:
        stopped.forward()  # with the run directory released: e.g. submitit requeues the job and exits here
        raise
